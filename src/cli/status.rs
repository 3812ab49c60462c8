//! `status`: rows by status and key version, which key versions are still needed and which of
//! those Key Vault refuses, and the grant-event outbox. Built as typed results, rendered as
//! text or JSON.

use serde::Serialize;

use crate::app::App;
use crate::events::outbox::OutboxReport;
use crate::store::StatusReport;

/// One key version in use and what it means for its rows.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct KeyVersionView {
    key_name: String,
    key_version: String,
    rows: i64,
    /// The key's latest version (rows on any other wait for a re-seal).
    latest: bool,
    still_needed: bool,
    /// `false` when Key Vault refuses the version: its rows cannot be opened.
    available: bool,
    unavailable_reason: Option<String>,
}

impl KeyVersionView {
    /// What the text output says after the version.
    fn note(&self) -> &'static str {
        if !self.available {
            " (UNAVAILABLE in Key Vault: its rows cannot be opened until an operator re-enables or restores this version)"
        } else if self.latest {
            " (latest)"
        } else {
            " (old: re-seal pending)"
        }
    }
}

/// Everything `status` reports.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    report: StatusReport,
    keys: Vec<KeyVersionView>,
    outbox: OutboxReport,
    events_configured: bool,
}

/// Prints the status as text, or as JSON with `json`.
pub(super) async fn print(app: &App, json: bool) -> anyhow::Result<()> {
    let report = app.store.status_report().await?;
    let keys = key_versions(app, &report).await;
    let status = Status {
        keys,
        outbox: app.store.events().report().await?,
        events_configured: app.events.is_some(),
        report,
    };
    if json {
        println!("{}", serde_json::to_string(&status)?);
    } else {
        print_text(&status);
    }
    Ok(())
}

/// For each key, the latest version tells which older versions rows still need; each version
/// in use is read once, so one Key Vault refuses (disabled, deleted, forbidden) shows with its
/// rows, which cannot be opened until an operator restores it.
async fn key_versions(app: &App, report: &StatusReport) -> Vec<KeyVersionView> {
    let mut views = Vec::new();
    let mut names: Vec<&String> = report.by_key_version.iter().map(|k| &k.key_name).collect();
    names.dedup();
    for name in names {
        let latest = app.keys.fresh_latest(name).await.map(|k| k.version).ok();
        for version in report.by_key_version.iter().filter(|k| &k.key_name == name) {
            let refused = match app.keys.version(name, &version.key_version).await {
                Err(error) if error.is_refusal() => Some(error.to_string()),
                _ => None,
            };
            views.push(KeyVersionView {
                key_name: name.clone(),
                key_version: version.key_version.clone(),
                rows: version.rows,
                latest: latest.as_deref() == Some(version.key_version.as_str()),
                still_needed: version.rows > 0,
                available: refused.is_none(),
                unavailable_reason: refused,
            });
        }
    }
    views
}

fn print_text(status: &Status) {
    let report = &status.report;
    println!("rows by status:");
    for (state, rows) in &report.by_status {
        println!("  {state:<16} {rows}");
    }
    println!("rows by key version:");
    for key in &status.keys {
        println!(
            "  {} {} {}{}",
            key.key_name,
            key.key_version,
            key.rows,
            key.note()
        );
    }
    match report.oldest_refreshed_at {
        Some(at) => println!("oldest refresh: {at}"),
        None => println!("oldest refresh: -"),
    }
    println!(
        "leased now: {}  backing off: {}",
        report.leased, report.backing_off
    );
    println!("a key version not listed here is used by no row and can be disabled in Key Vault");
    super::offboarding::print_outbox(&status.outbox, status.events_configured);
}
