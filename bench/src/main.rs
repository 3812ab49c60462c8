//! `obo-bench`: what users of obo-vault pay for, measured next to the floor in the same run.
//!
//! The emulators run in this process; the service runs as a child process (the `obo-vault`
//! binary next to this executable), so its RSS and CPU are its own. Results: a table on stdout,
//! a JSON report (`bench/report.json` for a full run), and the figures `docs/PERFORMANCE.md`
//! quotes. `--quick` runs small sizes (CI keeps the command working; targets are reported,
//! never enforced). Any error (a failed request, a failed row) fails the command.

mod load;
mod package;
mod proc;
mod report;
mod scenarios;
mod soak;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Benchmarks of obo-vault against its emulators.
#[derive(Debug, Parser)]
#[command(about)]
pub(crate) struct Args {
    /// Small sizes and short runs (CI): finishes in about a minute, targets are not enforced.
    #[arg(long)]
    quick: bool,
    /// Postgres server; a fresh database is created per run and dropped after.
    #[arg(
        long,
        env = "BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres: String,
    /// Where to write the JSON report [default: bench/report.json for a full run of every
    /// section, else target/obo-bench/report.json].
    #[arg(long)]
    report: Option<PathBuf>,
    /// Run only these sections (comma-separated): do-work, cold, setup, startup, refresh,
    /// reseal, telemetry; and, only when named, telemetry-instructions (the service under
    /// valgrind for a few minutes) and telemetry-paired (a service with each exporter
    /// and one without, loaded at the same time, about two minutes; with `--pin` on one CPU).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Seconds per do-work load point [default: 4, quick: 0.5].
    #[arg(long)]
    seconds: Option<f64>,
    /// Largest refresh-tokens size [default: 100000, quick: 400].
    #[arg(long)]
    rows: Option<usize>,
    /// Entra emulator latency during refresh-tokens, in milliseconds.
    #[arg(long, default_value_t = 20)]
    entra_latency_ms: u64,
    /// `OBOVAULT_REFRESH_CONCURRENCY` values of the refresh-tokens runs, comma-separated
    /// [default: 16,64; quick: 16].
    #[arg(long, value_delimiter = ',')]
    refresh_concurrency: Vec<usize>,
    /// `OBOVAULT_REFRESH_TIME_BUDGET` of the refresh-tokens runs, in seconds. A run may then
    /// stop before every row is done; the report sets what it did against the capacity model
    /// (docs/PERFORMANCE.md, "Capacity") [default: unbounded, every row must be refreshed].
    #[arg(long, value_name = "SECONDS")]
    refresh_time_budget: Option<u64>,
    /// The telemetry section only: run the service on the last CPU and the bench, with its
    /// stand-ins, on the others (`taskset`, util-linux), so the variants' CPU per call is not
    /// also a measure of which threads shared a core. Needs two CPUs or more.
    #[arg(long)]
    pin: bool,
    /// Instead of the benchmarks: a soak of this many minutes (mixed traffic with injected
    /// faults; answers by kind and memory over time). Not for CI.
    #[arg(long, value_name = "MINUTES")]
    soak: Option<f64>,
}

/// Sizes of one run.
#[derive(Clone, Debug)]
pub(crate) struct Sizes {
    pub(crate) quick: bool,
    pub(crate) point: Duration,
    pub(crate) concurrency: Vec<usize>,
    pub(crate) warm_users: usize,
    pub(crate) cold_calls: usize,
    pub(crate) setup_calls: usize,
    pub(crate) startup_reps: usize,
    pub(crate) refresh_rows: Vec<usize>,
    pub(crate) refresh_concurrency: Vec<usize>,
    pub(crate) reseal_rows: usize,
    pub(crate) entra_latency: Duration,
}

impl Sizes {
    fn from_args(args: &Args) -> Self {
        let quick = args.quick;
        let big = args.rows.unwrap_or(if quick { 400 } else { 100_000 });
        let small = (big / 10).max(100);
        Self {
            quick,
            point: Duration::from_secs_f64(args.seconds.unwrap_or(if quick { 0.5 } else { 4.0 })),
            concurrency: vec![1, 8, 32, 128],
            warm_users: 64,
            cold_calls: if quick { 100 } else { 1000 },
            setup_calls: if quick { 50 } else { 1000 },
            startup_reps: if quick { 1 } else { 5 },
            refresh_rows: vec![small, big],
            refresh_concurrency: match (&args.refresh_concurrency[..], quick) {
                ([], true) => vec![16],
                ([], false) => vec![16, 64],
                (chosen, _) => chosen.to_vec(),
            },
            reseal_rows: big,
            entra_latency: Duration::from_millis(args.entra_latency_ms),
        }
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("obo-bench: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = match args.soak {
        Some(minutes) => tempfile::tempdir()
            .map_err(anyhow::Error::from)
            .and_then(|dir| {
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("soak.db").display());
                runtime.block_on(soak::run(minutes, url))
            }),
        None => runtime.block_on(scenarios::run(args)),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("obo-bench: error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

impl Args {
    pub(crate) fn sizes(&self) -> Sizes {
        Sizes::from_args(self)
    }

    pub(crate) fn wants(&self, section: &str) -> bool {
        self.only.is_empty() || self.names(section)
    }

    /// Whether `--only` names `section` (the sections a default run leaves out).
    pub(crate) fn names(&self, section: &str) -> bool {
        self.only.iter().any(|s| s == section)
    }

    pub(crate) fn report_path(&self) -> PathBuf {
        if let Some(path) = &self.report {
            return path.clone();
        }
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        if !self.quick
            && self.only.is_empty()
            && self.rows.is_none()
            && self.seconds.is_none()
            && self.entra_latency_ms == 20
            && self.refresh_concurrency.is_empty()
            && self.refresh_time_budget.is_none()
        {
            root.join("report.json")
        } else {
            root.join("../target/obo-bench/report.json")
        }
    }

    pub(crate) fn postgres(&self) -> &str {
        &self.postgres
    }

    /// The refresh-tokens runs' time budget, if one was asked for.
    pub(crate) fn refresh_time_budget(&self) -> Option<std::time::Duration> {
        self.refresh_time_budget.map(Duration::from_secs)
    }
}
