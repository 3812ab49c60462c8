//! Sending pending events to `OBOVAULT_EVENTS_URL`: a background task under `serve` (woken
//! right after this process writes an event, and polling for events other instances or the
//! operator's commands wrote), and a bounded pass at the end of every timer run, which also
//! retries events still in back-off (Consumption instances go idle; the timer always comes
//! back). Requests run on their own task and connection pool: they never slow setup, do-work
//! or the timer's rows.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use rand::Rng as _;
use tokio::task::JoinHandle;
use url::Url;

use super::outbox::{EventClaim, EventStore, PendingEvent};
use super::settings::EventSettings;
use super::signer::Signer;
use crate::store::StoreError;

/// Timeout of one request to the receiver (connect included).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a claim holds: a batch is sent concurrently, so one send with its timeout plus
/// the outbox writes; an event is never sent by two instances at once, and a crashed sender's
/// events move on soon.
const LEASE: Duration = Duration::from_secs(30);

/// Events claimed at once, all sent concurrently.
const BATCH: i64 = 8;
const CONCURRENCY: usize = 8;

/// How often `serve` looks for events it was not woken for (other instances, CLI commands,
/// retries coming due).
const POLL: Duration = Duration::from_secs(2);

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// Events not delivered within this are dropped with an alert line (SPEC §6).
pub const RETENTION: Duration = Duration::from_secs(3 * 24 * 3600);

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct FlushReport {
    /// Events the receiver answered with a 2xx.
    pub delivered: u64,
    /// Attempts that failed (the event stays pending).
    pub failed: u64,
    /// Events dropped after [`RETENTION`].
    pub dropped: u64,
}

impl FlushReport {
    /// The one-line summary the timer returns in its `Logs`.
    pub fn line(&self) -> String {
        format!(
            "grant-events: delivered={} failed={} dropped={}",
            self.delivered, self.failed, self.dropped
        )
    }
}

/// The signed HTTPS client of the receiver: everything delivery needs but the database.
pub struct Sender {
    http: reqwest::Client,
    url: Url,
    signer: Signer,
}

impl Sender {
    /// From the settings; the client trusts `OBOVAULT_EXTRA_CA_CERTS`, is https only and
    /// follows no redirect.
    pub fn new(
        settings: &EventSettings,
        extra_ca_certs: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            http: crate::outbound::client(extra_ca_certs, SEND_TIMEOUT)?,
            url: settings.url.clone(),
            signer: Signer::new(&settings.secret)?,
        })
    }
}

/// Sends pending events of one database, signed.
pub struct Delivery {
    store: Arc<dyn EventStore>,
    sender: Sender,
    /// Unique per process: the outbox lease owner.
    owner: String,
}

impl Delivery {
    /// Delivery of the events in `store`.
    pub fn new(sender: Sender, store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            sender,
            owner: format!("obo-vault-events-{}", uuid::Uuid::new_v4()),
        }
    }

    /// The background task of `serve`: a pass whenever this process wrote an event or
    /// [`POLL`] passed. Runs until the runtime stops; a lease left behind simply runs out.
    pub fn spawn(self: &Arc<Self>) -> JoinHandle<()> {
        let delivery = self.clone();
        tokio::spawn(async move {
            let wake = delivery.store.wake();
            loop {
                if let Err(error) = delivery.flush(false, LEASE / 2).await {
                    tracing::warn!(error = %error, "grant events: delivery pass failed; retrying");
                }
                match &wake {
                    Some(wake) => {
                        tokio::select! {
                            () = wake.notified() => {}
                            () = tokio::time::sleep(POLL) => {}
                        }
                    }
                    None => tokio::time::sleep(POLL).await,
                }
            }
        })
    }

    /// One pass: drops expired events, then sends batch after batch until nothing is due or
    /// `budget` is spent (no new batch is claimed after it). `retry_backing_off` (the
    /// timer's pass) also sends events still in back-off, each at most once per pass.
    pub async fn flush(
        &self,
        retry_backing_off: bool,
        budget: Duration,
    ) -> Result<FlushReport, StoreError> {
        let deadline = tokio::time::Instant::now() + budget;
        let mut report = FlushReport::default();
        for event in self.store.drop_expired(RETENTION).await? {
            tracing::error!(
                alert = true,
                event.id = %event.id,
                event.kind = %event.event_type,
                attempts = event.attempts,
                last_error = event.last_error.as_deref().unwrap_or("-"),
                "grant event dropped: not delivered within 3 days"
            );
            report.dropped += 1;
        }
        let retry_attempted_before = if retry_backing_off {
            Some(self.store.clock().await?)
        } else {
            None
        };
        let claim = EventClaim {
            owner: self.owner.clone(),
            lease: LEASE,
            limit: BATCH,
            retry_attempted_before,
        };
        while tokio::time::Instant::now() < deadline {
            let events = self.store.claim(&claim).await?;
            if events.is_empty() {
                break;
            }
            let outcomes: Vec<Result<bool, StoreError>> = futures::stream::iter(events)
                .map(|event| self.attempt(event))
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            for outcome in outcomes {
                if outcome? {
                    report.delivered += 1;
                } else {
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }

    /// Sends one claimed event and records the outcome; `true` when delivered.
    async fn attempt(&self, event: PendingEvent) -> Result<bool, StoreError> {
        match self.send(&event).await {
            Ok(()) => {
                self.store.delivered(&event.id, &self.owner).await?;
                tracing::info!(event.id = %event.id, event.kind = %event.event_type, "grant event delivered");
                Ok(true)
            }
            Err(error) => {
                let retry_in = backoff(event.attempts + 1);
                tracing::warn!(
                    event.id = %event.id,
                    event.kind = %event.event_type,
                    attempt = event.attempts + 1,
                    error = %error,
                    retry_in_s = retry_in.as_secs(),
                    "grant event not delivered; will retry"
                );
                self.store
                    .failed(&event.id, &self.owner, &error, retry_in)
                    .await?;
                Ok(false)
            }
        }
    }

    /// One signed POST; the error is a short code for the outbox and logs (never the body).
    async fn send(&self, event: &PendingEvent) -> Result<(), String> {
        let timestamp = chrono::Utc::now().timestamp();
        let signature = self.sender.signer.sign(&event.id, timestamp, &event.body);
        let response = self
            .sender
            .http
            .post(self.sender.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(event.body.clone())
            .send()
            .await
            .map_err(|error| {
                if error.is_timeout() {
                    "timeout".to_owned()
                } else if error.is_connect() {
                    "connect".to_owned()
                } else {
                    "request".to_owned()
                }
            })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            // A redirect is a failure too: the client follows none, so an event never goes to
            // a place the operator did not configure.
            Err(format!("http {}", status.as_u16()))
        }
    }
}

/// How long the timer's pass may send, after the run's own work (the Consumption plan's
/// 5-minute limit is shared with `OBOVAULT_REFRESH_TIME_BUDGET`).
const TIMER_BUDGET: Duration = Duration::from_secs(20);

/// The timer's pass, retrying events in back-off too; its summary line for the timer's
/// `Logs`, or nothing when events are off. A failed pass is logged and never fails the run.
pub async fn timer_flush(app: &crate::app::App) -> Option<String> {
    let delivery = app.events.as_ref()?;
    match delivery.flush(true, TIMER_BUDGET).await {
        Ok(report) => Some(report.line()),
        Err(error) => {
            tracing::error!(error = %error, "grant events: the timer's delivery pass failed");
            Some(format!("grant-events: failed: {error}"))
        }
    }
}

/// After the `failures`-th failure: 1 s, 2 s, 4 s … up to [`MAX_BACKOFF`], plus up to 20 %
/// jitter so a receiver coming back is not hit by every instance at once.
fn backoff(failures: i32) -> Duration {
    let exponent = u32::try_from(failures.saturating_sub(1))
        .unwrap_or(0)
        .min(16);
    let base = Duration::from_secs(1u64 << exponent).min(MAX_BACKOFF);
    let jitter = rand::thread_rng().gen_range(0.0..0.2);
    base.mul_f64(1.0 + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert!(backoff(1) >= Duration::from_secs(1) && backoff(1) < Duration::from_millis(1200));
        assert!(backoff(3) >= Duration::from_secs(4) && backoff(3) < Duration::from_millis(4800));
        assert!(backoff(40) >= MAX_BACKOFF && backoff(40) <= MAX_BACKOFF.mul_f64(1.2));
    }
}
