//! `obo-vault serve` as a child process: the real binary, started as the Functions host starts
//! it, with the harness's emulators and database. For the tests that need a process of their
//! own: a SIGKILL, a faked clock, a database that is late, settings only read from the
//! environment (the managed-identity endpoint).

use std::ffi::OsStr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::TestApp;

/// No settings beyond the stack's.
pub(crate) const NO_SETTINGS: [(&str, &str); 0] = [];

/// A running `obo-vault serve`; killed when dropped, its output printed if the test failed.
pub(crate) struct ServiceProcess {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub(crate) address: String,
    log: tempfile::NamedTempFile,
}

impl ServiceProcess {
    /// Starts the service with the stack's settings, the harness's database and `settings` on
    /// top (later values win), and waits until `GET /` answers 2xx.
    pub(crate) async fn start<K, V>(
        app: &TestApp,
        settings: impl IntoIterator<Item = (K, V)>,
    ) -> Self
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut service = Self::spawn(app, settings, |_| {});
        service.wait_ready(app, Duration::from_secs(60)).await;
        service
    }

    /// Spawns the service without waiting for it; `configure` may add to the command (a
    /// preloaded library, say).
    pub(crate) fn spawn<K, V>(
        app: &TestApp,
        settings: impl IntoIterator<Item = (K, V)>,
        configure: impl FnOnce(&mut Command),
    ) -> Self
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_obo-vault"));
        command
            .arg("serve")
            .env_clear()
            .envs(app.stack.service_env())
            .env("OBOVAULT_DOWNSTREAM_ALLOWED_PATHS", "/me,/echo,/status")
            .env("DATABASE_URL", &app.database.url)
            .env("OBOVAULT_LOG_FORMAT", "text")
            .env("RUST_LOG", "obo_vault=info,warn")
            .envs(settings)
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap());
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        configure(&mut command);
        Self {
            child: command.spawn().expect("obo-vault starts"),
            address: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// Waits until `GET /` answers 2xx; fails the test if the process exits or `within` ends.
    pub(crate) async fn wait_ready(&mut self, app: &TestApp, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            self.assert_running();
            let ready = app
                .client
                .get(format!("{}/", self.address))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "obo-vault did not answer:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Fails the test, with the process's output, if it exited.
    pub(crate) fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("obo-vault exited with {status}:\n{}", self.output());
        }
    }

    /// Waits up to `within` for the process to exit by itself; its status, or `None`.
    pub(crate) async fn wait_for_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// SIGKILL: no graceful shutdown, no drain. Returns when the process is gone.
    pub(crate) fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// What the process wrote to stdout and stderr so far.
    pub(crate) fn output(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() || std::env::var_os("TEST_LOG").is_some() {
            eprintln!("--- obo-vault output ---\n{}", self.output());
        }
    }
}
