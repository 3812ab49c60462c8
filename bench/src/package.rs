//! The deployable package, for the start-up figure: `scripts/package` run on the service binary
//! of this build, unzipped into a temporary app root, and started from there as the Functions
//! host starts it (host.json's executable path and arguments, the app root as working
//! directory). So the figure is the packaged (stripped) binary's, as a cold start on Flex
//! Consumption runs it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

/// An unpacked package.
pub(crate) struct Packaged {
    /// The app root (holds host.json); removed when dropped.
    root: tempfile::TempDir,
    /// The handler, as host.json names it, under the app root.
    pub(crate) executable: PathBuf,
    /// host.json's `arguments`.
    pub(crate) arguments: Vec<String>,
    pub(crate) zip_bytes: u64,
    pub(crate) binary_bytes: u64,
}

impl Packaged {
    /// Packages `binary` with `scripts/package --binary` and unzips the result.
    pub(crate) fn build(binary: &Path) -> anyhow::Result<Self> {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = tempfile::Builder::new()
            .prefix("obo-bench-package-")
            .tempdir()?;
        run(Command::new(repo.join("scripts/package"))
            .arg("--binary")
            .arg(binary)
            .arg("--out")
            .arg(out.path()))?;
        let zip = out.path().join("obo-vault.zip");
        let root = tempfile::Builder::new()
            .prefix("obo-bench-app-")
            .tempdir()?;
        run(Command::new("unzip")
            .arg("-q")
            .arg(&zip)
            .arg("-d")
            .arg(root.path()))?;
        let host: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.path().join("host.json"))?)
                .context("the package's host.json")?;
        let description = &host["customHandler"]["description"];
        let executable = description["defaultExecutablePath"]
            .as_str()
            .context("host.json names no defaultExecutablePath")?;
        let arguments = description["arguments"]
            .as_array()
            .map(|args| {
                args.iter()
                    .filter_map(|a| a.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let executable = root.path().join(executable);
        Ok(Self {
            zip_bytes: std::fs::metadata(&zip)?.len(),
            binary_bytes: std::fs::metadata(&executable)?.len(),
            executable,
            arguments,
            root,
        })
    }

    /// The app root: the working directory the host gives the handler.
    pub(crate) fn root(&self) -> &Path {
        self.root.path()
    }
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
