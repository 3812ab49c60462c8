//! The deployable package, as `scripts/package` builds it and the Functions host reads it: the
//! zip holds host.json, each function folder's function.json and the handler binary at the path
//! host.json names, nothing else; the binary is executable inside the archive (Flex
//! Consumption runs the package from a read-only mount), carries no debug info and points at
//! the `obo-vault.debug` written next to the zip; unpacked and started the way the host starts
//! it (host.json's path and arguments, the app root as working directory, a port in
//! `FUNCTIONS_CUSTOMHANDLER_PORT`), it answers `GET /` and a timer invocation.
//!
//! The binary packaged is the one cargo built for the tests (`--binary`), so this test costs a
//! strip and a zip, not a release build; the release package's size is in docs/DEPLOYMENT.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use emulators::{Stack, StackOptions};
use serde_json::Value;

/// How long the host waits for `GET /` to answer (its default `InitializationTimeout`, and the
/// Flex Consumption plan's fixed app initialization time-out).
const HOST_START_TIMEOUT: Duration = Duration::from_secs(30);

/// The package's size limit: Flex Consumption downloads it on every cold start.
const MAX_ZIP_BYTES: u64 = 25_000_000;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(command: &mut Command) -> Output {
    let output = command.output().expect("the command runs");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The command's output (lossy: `readelf --string-dump` prints the debug link's CRC bytes too).
fn stdout(command: &mut Command) -> String {
    String::from_utf8_lossy(&run(command).stdout).into_owned()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The function folders as the host discovers them: top-level folders with a function.json.
fn function_folders() -> BTreeSet<String> {
    std::fs::read_dir(repo())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|dir| dir.join("function.json").is_file())
        .map(|dir| dir.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Runs `scripts/package` on the test binary into `out`; returns the zip's path.
fn package(out: &Path) -> PathBuf {
    let printed = stdout(
        Command::new(repo().join("scripts/package"))
            .arg("--binary")
            .arg(env!("CARGO_BIN_EXE_obo-vault"))
            .arg("--out")
            .arg(out),
    );
    let zip = out.join("obo-vault.zip");
    // The debug build's package is the larger one (10.0 MB against the release build's 9.3 MB,
    // docs/DEPLOYMENT.md), so this bounds the release package without a release build here.
    let size = std::fs::metadata(&zip).unwrap().len();
    assert!(size < MAX_ZIP_BYTES, "the package is {size} bytes");
    assert!(
        printed.contains(&format!("{} ", zip.display())) && printed.contains(" bytes"),
        "the script prints the zip's path and size: {printed}"
    );
    zip
}

/// Unzips `zip` into a new directory.
fn unpack(zip: &Path) -> tempfile::TempDir {
    let app = tempfile::tempdir().unwrap();
    run(Command::new("unzip")
        .arg("-q")
        .arg(zip)
        .arg("-d")
        .arg(app.path()));
    app
}

/// The handler's path inside the app, as host.json names it.
fn executable_path(host: &Value) -> String {
    host["customHandler"]["description"]["defaultExecutablePath"]
        .as_str()
        .expect("host.json names the handler")
        .to_owned()
}

/// Exactly host.json, each function.json (as in the repository) and the executable handler;
/// `app` is the zip unpacked.
fn check_layout(zip: &Path, app: &Path, exe: &str) {
    let entries: BTreeSet<String> = stdout(Command::new("unzip").arg("-Z1").arg(zip))
        .lines()
        .map(str::to_owned)
        .collect();
    let folders = function_folders();
    for expected in ["setup", "do-work", "refresh-tokens"] {
        assert!(
            folders.contains(expected),
            "{expected}/function.json exists"
        );
    }
    let mut expected: BTreeSet<String> = folders
        .iter()
        .map(|name| format!("{name}/function.json"))
        .collect();
    expected.insert("host.json".into());
    expected.insert(exe.to_owned());
    assert_eq!(entries, expected);

    // `zipinfo` lists the Unix mode stored with each entry.
    let listing = stdout(Command::new("unzip").arg("-Z").arg(zip));
    let binary_line = listing
        .lines()
        .find(|line| line.ends_with(&format!(" {exe}")))
        .unwrap_or_else(|| panic!("{exe} in {listing}"));
    assert!(
        binary_line.starts_with("-rwxr-xr-x"),
        "the handler is executable in the archive: {binary_line}"
    );

    for file in entries.iter().filter(|name| name.ends_with(".json")) {
        assert_eq!(
            std::fs::read(app.join(file)).unwrap(),
            std::fs::read(repo().join(file)).unwrap(),
            "{file} is packaged as it is in the repository"
        );
    }
}

/// No debug section in the packaged binary; its debug link and build-id lead to `debug`.
fn check_debug_info(binary: &Path, debug: &Path) {
    let sections = stdout(Command::new("readelf").args(["-S", "-W"]).arg(binary));
    // `.debug_gdb_scripts` is loaded data of the program (gdb's pretty-printer hint), not debug
    // info; every other `.debug_*` section is debug info and must be gone.
    let debug_info: Vec<&str> = sections
        .split_whitespace()
        .filter(|word| word.starts_with(".debug_") && *word != ".debug_gdb_scripts")
        .collect();
    assert!(
        debug_info.is_empty(),
        "debug info is packaged: {debug_info:?}"
    );
    assert!(sections.contains(".gnu_debuglink"), "{sections}");
    let link = stdout(
        Command::new("readelf")
            .arg("--string-dump=.gnu_debuglink")
            .arg(binary),
    );
    assert!(link.contains("obo-vault.debug"), "{link}");

    let debug_sections = stdout(Command::new("readelf").args(["-S", "-W"]).arg(debug));
    assert!(
        debug_sections.contains(".debug_info") || debug_sections.contains(".debug_line"),
        "the debug info went to {}: {debug_sections}",
        debug.display()
    );
    let build_id = |path: &Path| {
        stdout(Command::new("readelf").arg("-n").arg(path))
            .lines()
            .find_map(|line| line.trim().strip_prefix("Build ID: ").map(str::to_owned))
    };
    let id = build_id(binary);
    assert!(id.is_some(), "the packaged binary carries a GNU build-id");
    assert_eq!(id, build_id(debug), "the debug file is this binary's");
}

/// The handler started as the host starts it; killed when dropped.
struct Handler(Child);

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the unpacked app as the host does and checks `GET /` and a timer invocation.
async fn check_start(app: &Path) {
    let host = read_json(&app.join("host.json"));
    let description = &host["customHandler"]["description"];
    let arguments: Vec<String> = description["arguments"]
        .as_array()
        .map(|args| {
            args.iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    let working_directory = description["workingDirectory"]
        .as_str()
        .map_or_else(|| app.to_owned(), |dir| app.join(dir));

    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new(app.join(executable_path(&host)))
        .args(&arguments)
        .current_dir(&working_directory)
        .env_clear()
        .envs(stack.service_env())
        .env(
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", data.path().join("app.db").display()),
        )
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("FUNCTIONS_APP_ROOT_PATH", app)
        .env("OBOVAULT_LOG_FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .spawn()
        .expect("the packaged binary starts");
    let handler = Handler(child);

    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let ready = loop {
        if let Ok(response) = client.get(format!("{url}/")).send().await {
            if response.status().is_success() {
                break response.text().await.unwrap();
            }
        }
        assert!(
            started.elapsed() < HOST_START_TIMEOUT,
            "not ready within {HOST_START_TIMEOUT:?}: {}",
            std::fs::read_to_string(log.path()).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(ready, "obo-vault ready");

    // A timer invocation, as the host sends it (JSON envelope, function folder name as path).
    let timer = client
        .post(format!("{url}/refresh-tokens"))
        .json(&serde_json::json!({"Data": {"timer": {"IsPastDue": false}}, "Metadata": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(timer.status(), 200);
    let body: Value = timer.json().await.unwrap();
    let logs = body["Logs"].to_string();
    assert!(logs.contains("refresh-tokens: examined=0"), "{body}");
    drop(handler);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_package_holds_what_the_host_needs_and_its_binary_starts() {
    let out = tempfile::tempdir().unwrap();
    let zip = package(out.path());
    let exe = executable_path(&read_json(&repo().join("host.json")));
    let app = unpack(&zip);
    check_layout(&zip, app.path(), &exe);
    check_debug_info(&app.path().join(&exe), &out.path().join("obo-vault.debug"));
    check_start(app.path()).await;
}
