//! The service as a child process: spawning it, waiting for readiness, and reading its RSS and
//! CPU from /proc.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::process::{Child, Command};

use crate::package::Packaged;

/// Clock ticks per second of /proc/<pid>/stat (`getconf CLK_TCK`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// Under `cargo run`, builds the `obo-vault` binary of the same profile first, so the service
/// measured is the source checked out (cargo sets `CARGO` for the programs it runs). Run
/// directly, the binary must have been built by `cargo build [--release] --bin obo-vault`.
pub(crate) fn build_service() -> anyhow::Result<()> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(());
    };
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let mut command = std::process::Command::new(cargo);
    command.args([
        "build",
        "--quiet",
        "--bin",
        "obo-vault",
        "--manifest-path",
        manifest,
    ]);
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    let status = command.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --bin obo-vault failed ({status})");
    }
    Ok(())
}

/// The `obo-vault` binary next to this executable (same profile).
pub(crate) fn service_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating obo-bench")?;
    let dir = exe.parent().context("obo-bench has no directory")?;
    let binary = dir.join("obo-vault");
    if !binary.exists() {
        bail!(
            "{} is missing: build it first with `cargo build --bin obo-vault` \
             (add --release for a release run)",
            binary.display()
        );
    }
    Ok(binary)
}

/// Whether the binaries are a release build.
pub(crate) fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

fn command(env: &[(String, String)], args: &[&str]) -> anyhow::Result<Command> {
    wrapped_command(&[], env, args)
}

/// The service binary with `args`, run by `wrapper` (a program and its arguments, such as
/// `valgrind --tool=callgrind`) when it is not empty.
fn wrapped_command(
    wrapper: &[String],
    env: &[(String, String)],
    args: &[&str],
) -> anyhow::Result<Command> {
    let binary = service_binary()?;
    let mut command = match wrapper.split_first() {
        Some((program, wrapper_args)) => {
            let mut command = Command::new(program);
            command.args(wrapper_args).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    command
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    Ok(command)
}

/// A running `obo-vault serve`.
pub(crate) struct Service {
    child: Child,
    pub(crate) pid: u32,
    pub(crate) url: String,
    /// Spawn to first successful `GET /`.
    pub(crate) ready_after: Duration,
}

impl Service {
    /// Spawns the service on a free port and waits until `GET /` answers.
    pub(crate) async fn start(
        env: &[(String, String)],
        client: &reqwest::Client,
    ) -> anyhow::Result<Self> {
        Self::start_command(command(env, &["serve"])?, client).await
    }

    /// Spawns the service under `wrapper` (see [`wrapped_command`]) and waits until `GET /`
    /// answers. Its `pid` is the wrapper's, which valgrind shares with the program it runs.
    pub(crate) async fn start_wrapped(
        wrapper: &[String],
        env: &[(String, String)],
        client: &reqwest::Client,
    ) -> anyhow::Result<Self> {
        Self::start_command(wrapped_command(wrapper, env, &["serve"])?, client).await
    }

    /// Spawns the packaged service as the Functions host does (host.json's executable and
    /// arguments, the app root as working directory) and waits until `GET /` answers.
    pub(crate) async fn start_packaged(
        package: &Packaged,
        env: &[(String, String)],
        client: &reqwest::Client,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(&package.executable);
        command
            .args(&package.arguments)
            .current_dir(package.root())
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("FUNCTIONS_APP_ROOT_PATH", package.root())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        Self::start_command(command, client).await
    }

    async fn start_command(mut command: Command, client: &reqwest::Client) -> anyhow::Result<Self> {
        let port = free_port()?;
        command.env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string());
        let url = format!("http://127.0.0.1:{port}");
        let spawned = Instant::now();
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning obo-vault serve")?;
        let pid = child.id().context("the service exited at once")?;
        let probe = format!("{url}/");
        loop {
            if let Ok(response) = client
                .get(&probe)
                .timeout(Duration::from_secs(1))
                .send()
                .await
            {
                if response.status().is_success() {
                    break;
                }
            }
            if let Some(status) = child.try_wait()? {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    use tokio::io::AsyncReadExt as _;
                    let _ = pipe.read_to_string(&mut stderr).await;
                }
                bail!("obo-vault serve exited with {status}: {stderr}");
            }
            if spawned.elapsed() > Duration::from_secs(60) {
                bail!("obo-vault serve was not ready after 60 s");
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        let ready_after = spawned.elapsed();
        // Nothing reads stderr from now on; do not let a full pipe block the service.
        drop(child.stderr.take());
        Ok(Self {
            child,
            pid,
            url,
            ready_after,
        })
    }

    /// Service CPU time so far (user + system), in seconds.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid).unwrap_or(0.0)
    }

    /// Peak RSS so far, in KiB.
    pub(crate) fn peak_rss_kib(&self) -> u64 {
        peak_rss_kib(self.pid).unwrap_or(0)
    }

    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }
}

/// The result of one `obo-vault refresh --json` child run.
pub(crate) struct CliRun {
    pub(crate) summary: serde_json::Value,
    pub(crate) wall: Duration,
    pub(crate) peak_rss_kib: u64,
    pub(crate) cpu_seconds: f64,
}

/// Runs `obo-vault <args> --json` to completion, sampling its RSS and CPU.
pub(crate) async fn run_cli(env: &[(String, String)], args: &[&str]) -> anyhow::Result<CliRun> {
    let started = Instant::now();
    let mut child = command(env, args)?
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning obo-vault {}", args.join(" ")))?;
    let pid = child.id().context("the command exited at once")?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let output = tokio::spawn(async move {
        use tokio::io::AsyncReadExt as _;
        let mut out = String::new();
        let mut err = String::new();
        let _ = tokio::join!(
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err)
        );
        (out, err)
    });
    let (mut peak, mut cpu) = (0u64, 0f64);
    let status = loop {
        // VmHWM only grows, so the last sample before exit is the peak (to within 10 ms).
        if let Some(value) = peak_rss_kib(pid) {
            peak = peak.max(value);
        }
        if let Some(value) = cpu_seconds(pid) {
            cpu = cpu.max(value);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let wall = started.elapsed();
    let (out, err) = output.await?;
    if !status.success() {
        bail!("obo-vault {} failed ({status}): {err}", args.join(" "));
    }
    let line = out.lines().last().unwrap_or_default();
    let summary = serde_json::from_str(line)
        .with_context(|| format!("obo-vault {} printed {out:?}", args.join(" ")))?;
    Ok(CliRun {
        summary,
        wall,
        peak_rss_kib: peak,
        cpu_seconds: cpu,
    })
}

/// A port on 127.0.0.1 where nothing listens (once the probe listener is dropped).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// VmHWM of a process, KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// utime + stime of a process, seconds.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let [user, system] = user_system_seconds(pid)?;
    Some(user + system)
}

/// utime and stime of a process (every thread's, those that ended included), seconds.
pub(crate) fn user_system_seconds(pid: u32) -> Option<[f64; 2]> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields count from after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the man page are at 11 and 12 here (field 3 is index 0).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some([utime / TICKS_PER_SECOND, stime / TICKS_PER_SECOND])
}

/// The machine, for the report.
pub(crate) fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let memory_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|l| l.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    serde_json::json!({
        "nproc": cpus,
        "cpu": cpu,
        "memory_gib": (memory_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "profile": profile(),
    })
}
