//! The operator commands of the service binary (same settings as the service):
//! `serve` (default), `status`, `refresh [--reseal-only]`, `keys rotate --tenant|--all`,
//! `migrate`, and offboarding (`users delete`, `tenants purge`). Human-readable output,
//! `--json` for scripts.

mod offboarding;
mod status;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::app::App;
use crate::config::{Env, LogFormat, Settings};
use crate::domain::TenantId;
use crate::usecase::refresh_all::{self, RunOptions};

/// obo-vault: Entra refresh tokens in custody, for workloads acting on behalf of offline users.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Functions custom handler (the default).
    Serve,
    /// Rows by status and key version, oldest refresh, which key versions are still used, and
    /// which of those Key Vault refuses (disabled, deleted).
    Status(Output),
    /// Run the timer's work now.
    Refresh {
        /// Only re-seal rows on old key versions; never call Entra.
        #[arg(long)]
        reseal_only: bool,
        #[command(flatten)]
        output: Output,
    },
    /// Key Vault key management.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Run the database migrations and exit.
    Migrate,
    /// Offboarding one user.
    Users {
        #[command(subcommand)]
        command: offboarding::UsersCommand,
    },
    /// Offboarding a whole tenant.
    Tenants {
        #[command(subcommand)]
        command: offboarding::TenantsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Add a new key version (32 random bytes); the next refresh run re-seals every row.
    Rotate {
        /// The tenant whose key to rotate.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        tenant: Option<String>,
        /// Every key that rows use.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Args, Debug)]
struct Output {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl Cli {
    /// Runs the chosen command.
    pub async fn run(self) -> anyhow::Result<()> {
        let settings = Settings::from_env(&Env::from_process())?;
        let command = self.command.unwrap_or(Command::Serve);
        let format = match command {
            Command::Serve => settings.log_format,
            // Operator commands keep stdout for their answer; logs go to stderr.
            _ => LogFormat::Text,
        };
        if matches!(command, Command::Serve) {
            crate::telemetry::init(format, std::io::stdout);
        } else {
            crate::telemetry::init(format, std::io::stderr);
        }
        match command {
            Command::Serve => serve(settings).await,
            Command::Migrate => {
                crate::store::open_as(&settings.database_url, &settings.database_auth, false)
                    .await?;
                println!("migrations applied");
                Ok(())
            }
            Command::Status(output) => {
                status::print(&*App::build(settings).await?, output.json).await
            }
            Command::Refresh {
                reseal_only,
                output,
            } => refresh(App::build(settings).await?, reseal_only, output).await,
            Command::Keys {
                command:
                    KeysCommand::Rotate {
                        tenant,
                        all,
                        output,
                    },
            } => rotate(App::build(settings).await?, tenant, all, output).await,
            Command::Users {
                command:
                    offboarding::UsersCommand::Delete {
                        tenant,
                        user,
                        output,
                    },
            } => offboarding::delete_user(settings, &tenant, &user, &output).await,
            Command::Tenants {
                command: offboarding::TenantsCommand::Purge(args),
            } => offboarding::purge_tenant(settings, &args).await,
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let port = settings.port;
    // A managed identity that gives no database token stops the process here, like bad
    // settings; an unreachable database does not (SPEC §2).
    crate::database_auth::check(&settings.database_auth).await?;
    let prepared = App::prepare(settings)?;
    let telemetry = prepared.telemetry();
    let application = crate::startup::Application::bind_starting(port).await?;
    tracing::info!(
        port = application.port(),
        "obo-vault listening; opening the database"
    );
    tokio::spawn(crate::startup::open_when_database_ready(
        prepared,
        application.gate(),
    ));
    let served = application
        .run_until(crate::startup::shutdown_signal())
        .await;
    if let Some(telemetry) = telemetry {
        // The last batch of spans and metrics leaves before the process does (bounded by the
        // export timeout); it blocks, so off the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    }
    served
}

async fn refresh(app: Arc<App>, reseal_only: bool, output: Output) -> anyhow::Result<()> {
    let bar = if output.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new_spinner()
    };
    bar.enable_steady_tick(Duration::from_millis(200));
    let options = RunOptions {
        reseal_only,
        time_budget: app.refresh.time_budget,
        concurrency: app.refresh.concurrency,
    };
    // Spawned onto the runtime's workers, where the timer runs under `serve` too: the run's
    // many small wake-ups (a row's HTTP answer, a commit) then stay on the worker threads
    // instead of hopping to the main thread.
    let run = tokio::spawn({
        let (app, bar) = (app.clone(), bar.clone());
        async move {
            let progress = |summary: &refresh_all::Summary| {
                if !bar.is_hidden() {
                    bar.set_message(format!(
                        "examined {} refreshed {} resealed {} failed {}",
                        summary.examined, summary.refreshed, summary.resealed, summary.failed
                    ));
                }
            };
            refresh_all::run(&app.deps, options, &progress).await
        }
    });
    let summary = run.await.context("the refresh run panicked")??;
    bar.finish_and_clear();
    if output.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!("{}", summary.line());
    }
    Ok(())
}

async fn rotate(
    app: Arc<App>,
    tenant: Option<String>,
    all: bool,
    output: Output,
) -> anyhow::Result<()> {
    let names = if all {
        app.store.key_names().await?
    } else {
        let raw = tenant.context("--tenant or --all is required")?;
        let tenant = TenantId::parse(&raw).context("--tenant must be a tenant GUID")?;
        vec![app.key_settings.key_name(&tenant)]
    };
    let mut rotated = Vec::new();
    for name in names {
        let key = app.keys.rotate(&name).await?;
        if !output.json {
            println!("{} → new version {}", key.name, key.version);
        }
        rotated.push(Rotated {
            key_name: key.name,
            key_version: key.version,
        });
    }
    if output.json {
        println!("{}", serde_json::json!({ "rotated": rotated }));
    }
    Ok(())
}

/// A key version `keys rotate` created.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Rotated {
    key_name: String,
    key_version: String,
}
