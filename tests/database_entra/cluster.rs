//! A private Postgres cluster made with `initdb` for one test: password authentication
//! (`scram-sha-256`) on 127.0.0.1, so a wrong password really fails, unlike the machine's
//! shared server which trusts local connections. The test's own superuser connects through
//! a Unix socket in the cluster's directory (trusted). Stopped and deleted when dropped.
//!
//! The server speaks TLS with a certificate for 127.0.0.1 from a CA of the test's own.
//!
//! `initdb` refuses to run as root: as root the cluster belongs to the `postgres` account and
//! its commands run through `runuser`. Outside CI a machine without the binaries skips the
//! test; in CI (`CI` set) that is a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A running private cluster.
pub(crate) struct PrivateCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    run_as: Option<&'static str>,
}

impl PrivateCluster {
    /// `initdb` and start a cluster on a free port; `None` (test skipped) outside CI when
    /// that is not possible here.
    pub(crate) fn start() -> Option<Self> {
        match Self::try_start() {
            Ok(cluster) => Some(cluster),
            Err(reason) if std::env::var_os("CI").is_none() => {
                eprintln!("skipping: no private Postgres cluster here ({reason})");
                None
            }
            Err(reason) => panic!("a private Postgres cluster is required in CI: {reason}"),
        }
    }

    fn try_start() -> Result<Self, String> {
        let bin = postgres_bin().ok_or("no /usr/lib/postgresql/*/bin/initdb")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let run_as = is_root().then_some("postgres");
        if let Some(user) = run_as {
            run(Command::new("chown")
                .args(["-R", &format!("{user}:")])
                .arg(dir.path()))?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let cluster = Self {
            bin,
            dir,
            port,
            run_as,
        };
        let data = cluster.data_dir();
        cluster.write_tls_files()?;
        cluster.command(
            "initdb",
            &[
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-sync",
                "-D",
                &data.display().to_string(),
            ],
        )?;
        let server_options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {socket} \
             -c password_encryption=scram-sha-256 -c fsync=off -c max_connections=60 \
             -c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key",
            socket = cluster.dir.path().display(),
            dir = cluster.dir.path().display(),
        );
        let log = cluster.dir.path().join("server.log");
        cluster.command(
            "pg_ctl",
            &[
                "-D",
                &data.display().to_string(),
                "-o",
                &server_options,
                "-l",
                &log.display().to_string(),
                "-w",
                "start",
            ],
        )?;
        Ok(cluster)
    }

    /// A test CA (`ca.pem`, what clients trust) and the server's certificate for
    /// 127.0.0.1 signed by it, readable by the server's account only.
    fn write_tls_files(&self) -> Result<(), String> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        let failed = |e: rcgen::Error| e.to_string();
        let ca_key = KeyPair::generate().map_err(failed)?;
        let mut ca = CertificateParams::new(Vec::new()).map_err(failed)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).map_err(failed)?;
        let key = KeyPair::generate().map_err(failed)?;
        let mut leaf = CertificateParams::new(Vec::new()).map_err(failed)?;
        leaf.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
        let leaf = leaf.signed_by(&key, &ca, &ca_key).map_err(failed)?;
        let dir = self.dir.path();
        for (name, pem) in [
            ("ca.pem", ca.pem()),
            ("server.crt", leaf.pem()),
            ("server.key", key.serialize_pem()),
        ] {
            std::fs::write(dir.join(name), pem).map_err(|e| e.to_string())?;
        }
        let key_file = dir.join("server.key");
        std::fs::set_permissions(
            &key_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .map_err(|e| e.to_string())?;
        if let Some(user) = self.run_as {
            run(Command::new("chown").arg(format!("{user}:")).arg(&key_file))?;
        }
        Ok(())
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs one of the cluster's programs (as `postgres` when we are root).
    fn command(&self, program: &str, args: &[&str]) -> Result<Output, String> {
        let path = self.bin.join(program);
        let mut command = match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(&path);
                command
            }
            None => Command::new(&path),
        };
        run(command.args(args))
    }

    /// The superuser over the Unix socket (trusted), on database `database`.
    pub(crate) fn admin_url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@localhost/{database}?host={}&port={}",
            self.dir.path().display(),
            self.port
        )
    }

    /// `role` on `database` over TCP, where the password is checked; no password and no
    /// `sslmode` in the URL (the service chooses), the test CA as `sslrootcert`.
    pub(crate) fn url_for(&self, role: &str, database: &str) -> String {
        format!(
            "postgres://{role}@127.0.0.1:{}/{database}?sslrootcert={}",
            self.port,
            self.dir.path().join("ca.pem").display()
        )
    }

    /// The server's log so far (authentication failures show here).
    pub(crate) fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let data = self.data_dir().display().to_string();
        let _ = self.command("pg_ctl", &["-D", &data, "-m", "immediate", "stop"]);
    }
}

/// The newest installed Postgres's `bin` directory (Debian's layout).
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            Path::new(&bin.join("initdb"))
                .exists()
                .then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn run(command: &mut Command) -> Result<Output, String> {
    let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!(
            "{command:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
