//! Offboarding (SPEC §7): `users delete --tenant T --user U` for one user's erasure request,
//! `tenants purge --tenant T --yes [--delete-key]` for a customer tenant leaving.
//!
//! Rows go first, each deletion with its `grant.disconnected` (`by: operator`) event in the
//! same transaction; then, with `--delete-key`, the tenant's Key Vault secret is deleted and
//! purged (crypto-shredding: every copy of the tenant's rows, backups included, stays sealed
//! for good). Pending events are sent before the command exits, as far as the receiver takes
//! them within a few seconds; what it does not take, a running service sends.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::json;

use crate::app::App;
use crate::config::Settings;
use crate::domain::{TenantId, UserId, UserKey};
use crate::events::outbox::{OutboxReport, Purged};
use crate::keys::{KeyError, KeyVaultKeys, Shredded};

/// How long a command waits for the receiver before leaving events to the service.
const FLUSH_BUDGET: Duration = Duration::from_secs(15);

/// `users …`.
#[derive(Debug, Subcommand)]
pub(super) enum UsersCommand {
    /// Delete one user's stored grant and access history (an erasure request).
    Delete {
        /// The user's tenant id.
        #[arg(long)]
        tenant: String,
        /// The user's object id.
        #[arg(long)]
        user: String,
        #[command(flatten)]
        output: super::Output,
    },
}

/// `tenants …`.
#[derive(Debug, Subcommand)]
pub(super) enum TenantsCommand {
    /// Delete every stored grant of a tenant, then optionally its key.
    Purge(PurgeArgs),
}

/// `tenants purge`.
#[derive(Args, Debug)]
pub(super) struct PurgeArgs {
    /// The tenant id.
    #[arg(long)]
    tenant: String,
    /// Confirms that every row of the tenant is to be deleted.
    #[arg(long)]
    yes: bool,
    /// Also delete and purge the tenant's Key Vault secret, so that no copy of its rows (a
    /// database backup) can ever be opened again.
    #[arg(long)]
    delete_key: bool,
    #[command(flatten)]
    output: super::Output,
}

/// `users delete`.
pub(super) async fn delete_user(
    settings: Settings,
    tenant: &str,
    user: &str,
    output: &super::Output,
) -> anyhow::Result<()> {
    let key = UserKey {
        tenant_id: TenantId::parse(tenant).context("--tenant must be a tenant GUID")?,
        user_id: UserId::parse(user).context("--user must be a user object id (a GUID)")?,
    };
    let app = App::build(settings).await?;
    let deleted = app
        .store
        .events()
        .delete_user(&key)
        .await
        .context("deleting the user's row failed; nothing was deleted")?;
    let events = send_events(&app, u64::from(deleted)).await;
    if output.json {
        println!(
            "{}",
            json!({
                "tenantId": key.tenant_id.as_str(),
                "userId": key.user_id.as_str(),
                "deletedRows": u64::from(deleted),
                "events": events,
            })
        );
    } else if deleted {
        println!(
            "deleted the grant and access history of user {} in tenant {}",
            key.user_id, key.tenant_id
        );
        events.print();
    } else {
        println!(
            "no stored grant for user {} in tenant {}: nothing to delete",
            key.user_id, key.tenant_id
        );
    }
    Ok(())
}

/// `tenants purge`.
pub(super) async fn purge_tenant(settings: Settings, args: &PurgeArgs) -> anyhow::Result<()> {
    let tenant = TenantId::parse(&args.tenant).context("--tenant must be a tenant GUID")?;
    if !args.yes {
        anyhow::bail!(
            "tenants purge deletes every stored grant of tenant {tenant}: add --yes to confirm"
        );
    }
    let key_name = settings.keys.key_name(&tenant);
    // Built before the app takes the settings; Key Vault is only called after the rows are gone.
    let key_vault = if args.delete_key {
        let http =
            crate::outbound::client(settings.extra_ca_certs.as_deref(), Duration::from_secs(30))?;
        Some(KeyVaultKeys::new(&settings.keys, http)?)
    } else {
        None
    };
    let app = App::build(settings).await?;
    let purged: Purged = app
        .store
        .events()
        .purge_tenant(&tenant)
        .await
        .context("deleting the tenant's rows failed; nothing was deleted")?;
    let mut report = PurgeReport {
        tenant_id: tenant.to_string(),
        deleted_rows: purged.users,
        events: send_events(&app, purged.events).await,
        key: None,
    };
    if !args.output.json {
        println!(
            "deleted {} stored grant(s) of tenant {tenant}, with their access history",
            purged.users
        );
        report.events.print();
    }
    let shredded = match key_vault {
        Some(key_vault) => Some(key_vault.delete_and_purge(&key_name).await),
        None => None,
    };
    report.key = shredded
        .as_ref()
        .map(|shredded| KeyShred::of(&key_name, shredded));
    if args.output.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        if let Some(line) = KeyShred::line(report.key.as_ref(), &key_name) {
            println!("{line}");
        }
    }
    match shredded {
        Some(Err(error)) => Err(anyhow::Error::new(error).context(format!(
            "the rows are deleted, but key {key_name} was not: run the command again"
        ))),
        _ => Ok(()),
    }
}

/// What `tenants purge` did.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PurgeReport {
    tenant_id: String,
    deleted_rows: u64,
    events: EventsSent,
    /// With `--delete-key`: what became of the tenant's key.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<KeyShred>,
}

/// What became of a tenant's Key Vault secret.
#[derive(Debug, Serialize)]
#[serde(untagged, rename_all_fields = "camelCase")]
enum KeyShred {
    /// Deleted and purged: no copy of the tenant's rows can be opened again.
    Purged {
        name: String,
        deleted: bool,
        purged: bool,
    },
    /// Deleted; the vault's purge protection keeps it recoverable until Key Vault purges it.
    PurgeProtected {
        name: String,
        deleted: bool,
        purged: bool,
        purge_protection: bool,
        scheduled_purge_date: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Neither live nor deleted in Key Vault.
    NotFound {
        name: String,
        deleted: bool,
        found: bool,
    },
    /// Key Vault failed; the command fails too.
    Failed {
        name: String,
        deleted: bool,
        error: String,
    },
}

impl KeyShred {
    fn of(name: &str, shredded: &Result<Shredded, KeyError>) -> Self {
        let name = name.to_owned();
        match shredded {
            Ok(Shredded::Purged) => Self::Purged {
                name,
                deleted: true,
                purged: true,
            },
            Ok(Shredded::PurgeProtected {
                scheduled_purge_date,
            }) => Self::PurgeProtected {
                name,
                deleted: true,
                purged: false,
                purge_protection: true,
                scheduled_purge_date: *scheduled_purge_date,
            },
            Ok(Shredded::NotFound) => Self::NotFound {
                name,
                deleted: false,
                found: false,
            },
            Err(error) => Self::Failed {
                name,
                deleted: false,
                error: error.to_string(),
            },
        }
    }

    /// The text output's line about the key `name` (`shred` is `None` when it was kept); a
    /// failure has none: the command's error says it.
    fn line(shred: Option<&Self>, name: &str) -> Option<String> {
        let line = match shred {
            None => format!("key {name} kept (add --delete-key to delete and purge it)"),
            Some(Self::Purged { .. }) => format!("key {name} deleted and purged from Key Vault: no copy of the tenant's rows can be opened again"),
            Some(Self::PurgeProtected {
                scheduled_purge_date,
                ..
            }) => {
                let date = scheduled_purge_date.map_or_else(
                    || "the end of its retention period".to_owned(),
                    |d| d.to_rfc3339(),
                );
                format!(
                    "key {name} deleted; the vault's purge protection forbids purging it, \
                     so it stays recoverable in Key Vault until Key Vault purges it on {date}"
                )
            }
            Some(Self::NotFound { .. }) => {
                format!("key {name} not found in Key Vault (live or deleted): nothing to delete")
            }
            Some(Self::Failed { .. }) => return None,
        };
        Some(line)
    }
}

/// What became of the grant events a command wrote.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum EventsSent {
    /// `OBOVAULT_EVENTS_URL` is unset: none are written.
    NotConfigured { written: u64, configured: bool },
    /// Sent within [`FLUSH_BUDGET`], as far as the receiver took them.
    Flushed {
        written: u64,
        delivered: u64,
        pending: Option<i64>,
    },
    /// The delivery pass failed; a running service sends them.
    Failed {
        written: u64,
        pending: Option<i64>,
        error: String,
    },
}

impl EventsSent {
    fn print(&self) {
        let (written, delivered, pending) = match self {
            Self::NotConfigured { .. } => {
                println!("grant events: not configured (OBOVAULT_EVENTS_URL is unset)");
                return;
            }
            Self::Flushed {
                written,
                delivered,
                pending,
            } => (written, *delivered, pending),
            Self::Failed {
                written, pending, ..
            } => (written, 0, pending),
        };
        let pending = pending.map_or("?".to_owned(), |n| n.to_string());
        println!(
            "grant events: {written} written, {delivered} delivered, {pending} pending (a running service sends the rest)"
        );
    }
}

/// Sends what the command wrote (and anything else pending) within [`FLUSH_BUDGET`].
async fn send_events(app: &Arc<App>, written: u64) -> EventsSent {
    let Some(delivery) = &app.events else {
        return EventsSent::NotConfigured {
            written: 0,
            configured: false,
        };
    };
    let flushed = delivery.flush(false, FLUSH_BUDGET).await;
    let pending = app.store.events().report().await.map(|r| r.pending).ok();
    match flushed {
        Ok(report) => EventsSent::Flushed {
            written,
            delivered: report.delivered,
            pending,
        },
        Err(error) => EventsSent::Failed {
            written,
            pending,
            error: error.to_string(),
        },
    }
}

/// The outbox part of `status`.
pub(super) fn print_outbox(outbox: &OutboxReport, configured: bool) {
    let state = if configured {
        ""
    } else {
        " (OBOVAULT_EVENTS_URL unset: none are written)"
    };
    let oldest = outbox
        .oldest
        .map_or_else(|| "-".to_owned(), |at| at.to_rfc3339());
    println!(
        "grant events pending: {}{state}  oldest: {oldest}  failing: {} ({} failed attempts, last: {})",
        outbox.pending,
        outbox.failing,
        outbox.failed_attempts,
        outbox.last_error.as_deref().unwrap_or("-")
    );
}
