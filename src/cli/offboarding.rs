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
use serde_json::{json, Value};

use crate::app::App;
use crate::config::Settings;
use crate::domain::{TenantId, UserId, UserKey};
use crate::events::outbox::{OutboxReport, Purged};
use crate::keys::{KeyVaultKeys, Shredded};

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
        print_events(&events);
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
    let events = send_events(&app, purged.events).await;
    let mut report = json!({
        "tenantId": tenant.as_str(),
        "deletedRows": purged.users,
        "events": events,
    });
    if !args.output.json {
        println!(
            "deleted {} stored grant(s) of tenant {tenant}, with their access history",
            purged.users
        );
        print_events(&events);
    }
    let Some(key_vault) = key_vault else {
        if args.output.json {
            println!("{report}");
        } else {
            println!("key {key_name} kept (add --delete-key to delete and purge it)");
        }
        return Ok(());
    };
    let shredded = key_vault.delete_and_purge(&key_name).await;
    let key = match &shredded {
        Ok(Shredded::Purged) => json!({ "name": key_name, "deleted": true, "purged": true }),
        Ok(Shredded::PurgeProtected {
            scheduled_purge_date,
        }) => json!({
            "name": key_name,
            "deleted": true,
            "purged": false,
            "purgeProtection": true,
            "scheduledPurgeDate": scheduled_purge_date,
        }),
        Ok(Shredded::NotFound) => json!({ "name": key_name, "deleted": false, "found": false }),
        Err(error) => json!({ "name": key_name, "deleted": false, "error": error.to_string() }),
    };
    report["key"] = key;
    if args.output.json {
        println!("{report}");
    } else {
        match &shredded {
            Ok(Shredded::Purged) => {
                println!("key {key_name} deleted and purged from Key Vault: no copy of the tenant's rows can be opened again");
            }
            Ok(Shredded::PurgeProtected {
                scheduled_purge_date,
            }) => {
                let date = scheduled_purge_date.map_or_else(
                    || "the end of its retention period".to_owned(),
                    |d| d.to_rfc3339(),
                );
                println!(
                    "key {key_name} deleted; the vault's purge protection forbids purging it, \
                     so it stays recoverable in Key Vault until Key Vault purges it on {date}"
                );
            }
            Ok(Shredded::NotFound) => {
                println!(
                    "key {key_name} not found in Key Vault (live or deleted): nothing to delete"
                );
            }
            Err(_) => {}
        }
    }
    shredded.map(|_| ()).with_context(|| {
        format!("the rows are deleted, but key {key_name} was not: run the command again")
    })
}

/// Sends what the command wrote (and anything else pending) within [`FLUSH_BUDGET`].
async fn send_events(app: &Arc<App>, written: u64) -> Value {
    let Some(delivery) = &app.events else {
        return json!({ "written": 0, "configured": false });
    };
    let flushed = delivery.flush(false, FLUSH_BUDGET).await;
    let pending = app.store.events().report().await.map(|r| r.pending).ok();
    match flushed {
        Ok(report) => json!({
            "written": written,
            "delivered": report.delivered,
            "pending": pending,
        }),
        Err(error) => json!({
            "written": written,
            "pending": pending,
            "error": error.to_string(),
        }),
    }
}

fn print_events(events: &Value) {
    if events["configured"] == false {
        println!("grant events: not configured (OBOVAULT_EVENTS_URL is unset)");
        return;
    }
    println!(
        "grant events: {} written, {} delivered, {} pending (a running service sends the rest)",
        events["written"],
        events["delivered"].as_u64().unwrap_or(0),
        events["pending"]
            .as_i64()
            .map_or("?".to_owned(), |n| n.to_string())
    );
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
