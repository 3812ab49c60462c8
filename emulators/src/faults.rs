//! Fault injection shared by the three emulators.
//!
//! Each emulator owns one [`Faults`]: a queue of injected [`Fault`]s consumed one request at a
//! time, plus a constant latency for every request it covers. The queue only decides *what*
//! happens; each emulator renders the answer in its own service's error shape.
//!
//! The latency is what a client of the emulated service sees: its answer leaves that long after
//! the request arrived, the service's own work (Entra's signing) done within it, as a remote
//! service's work is part of its latency. Only work that outlasts the latency makes an answer
//! later; an injected [`FaultKind::Delay`] comes on top.

use std::{
    collections::VecDeque,
    future::Future,
    time::{Duration, Instant},
};

use axum::{http::StatusCode, response::Response};
use parking_lot::Mutex;

use crate::server::drop_connection;

/// How long [`FaultKind::Hang`] keeps a request open: far longer than any sane client timeout.
const HANG_FOR: Duration = Duration::from_secs(3600);

/// What an injected fault does to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer with this HTTP status and the emulated service's error body (Entra: `503` is
    /// `temporarily_unavailable`, other 5xx `server_error`). A code outside 100..=599 becomes 500.
    Status(u16),
    /// Answer `429 Too Many Requests` with `Retry-After: {retry_after_secs}`.
    TooManyRequests {
        /// Value of the `Retry-After` header, in seconds.
        retry_after_secs: u64,
    },
    /// Never answer: the request is held open for an hour, so the client's timeout must fire.
    Hang,
    /// Answer normally, but only after this delay.
    Delay(Duration),
    /// Entra only: answer `401 invalid_client` (AADSTS7000215) as if the client secret were
    /// wrong. The Key Vault and downstream emulators ignore it (the request proceeds normally).
    InvalidClient,
    /// Close the connection without an answer. Over HTTP/1.1 the client sees the connection
    /// closed before a response; over HTTP/2 it sees the stream reset. (The TCP connection was
    /// already accepted, so this is not a connect error.)
    Unreachable,
}

/// A fault applied to the next `times` requests an emulator's fault point sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// What happens to each affected request.
    pub kind: FaultKind,
    /// How many requests in a row are affected; `0` is a no-op.
    pub times: u32,
}

impl Fault {
    /// A fault for the next `times` requests.
    pub fn new(kind: FaultKind, times: u32) -> Self {
        Self { kind, times }
    }

    /// A fault for the next request only.
    pub fn once(kind: FaultKind) -> Self {
        Self::new(kind, 1)
    }

    /// A fault for (practically) every following request, until `clear_faults`.
    pub fn always(kind: FaultKind) -> Self {
        Self::new(kind, u32::MAX)
    }
}

/// The decision for one request, after an injected delay was already waited out.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// No fault: handle the request normally.
    Proceed,
    /// Answer with this status (and `Retry-After` when set) in the service's error shape.
    Respond {
        status: StatusCode,
        retry_after_secs: Option<u64>,
    },
    /// Answer as if client authentication failed (Entra only).
    InvalidClient,
    /// Answer nothing and drop the connection; the response carries the marker for that.
    Drop(Response),
}

/// Injected faults and latency of one emulator.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    inner: Mutex<FaultsInner>,
}

#[derive(Debug, Default)]
struct FaultsInner {
    /// Faults in injection order; the front one is consumed first.
    queue: VecDeque<Fault>,
    latency: Duration,
}

impl Faults {
    /// Queues a fault behind those already injected.
    pub(crate) fn inject(&self, fault: Fault) {
        if fault.times > 0 {
            self.inner.lock().queue.push_back(fault);
        }
    }

    /// Forgets every queued fault (latency stays).
    pub(crate) fn clear(&self) {
        self.inner.lock().queue.clear();
    }

    /// Sets the latency of every request.
    pub(crate) fn set_latency(&self, latency: Duration) {
        self.inner.lock().latency = latency;
    }

    /// Answers one request: consumes the next fault, lets `respond` build the answer from it
    /// (normally, or in the service's error shape) and lets the answer leave no earlier than the
    /// latency after the request arrived.
    pub(crate) async fn answer<F>(&self, respond: impl FnOnce(Outcome) -> F) -> Response
    where
        F: Future<Output = Response>,
    {
        let latency = self.latency();
        let outcome = decide(self.take()).await;
        // Counted from here, after `decide` waited out an injected delay (before the work, as
        // it always was), so the delay comes on top of the latency.
        let answer_at = Instant::now() + latency;
        let response = respond(outcome).await;
        crate::pacer::sleep_until(answer_at).await;
        response
    }

    fn latency(&self) -> Duration {
        self.inner.lock().latency
    }

    /// Consumes one use of the front fault, if any.
    fn take(&self) -> Option<FaultKind> {
        let mut inner = self.inner.lock();
        let front = inner.queue.front_mut()?;
        let kind = front.kind;
        front.times -= 1;
        if front.times == 0 {
            inner.queue.pop_front();
        }
        Some(kind)
    }
}

/// Turns a consumed fault into an [`Outcome`], waiting out a delay or a hang.
async fn decide(kind: Option<FaultKind>) -> Outcome {
    match kind {
        None => Outcome::Proceed,
        Some(FaultKind::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            Outcome::Proceed
        }
        Some(FaultKind::Hang) => {
            tokio::time::sleep(HANG_FOR).await;
            Outcome::Drop(drop_connection())
        }
        Some(FaultKind::Status(code)) => Outcome::Respond {
            status: status_or_500(code),
            retry_after_secs: None,
        },
        Some(FaultKind::TooManyRequests { retry_after_secs }) => Outcome::Respond {
            status: StatusCode::TOO_MANY_REQUESTS,
            retry_after_secs: Some(retry_after_secs),
        },
        Some(FaultKind::InvalidClient) => Outcome::InvalidClient,
        Some(FaultKind::Unreachable) => Outcome::Drop(drop_connection()),
    }
}

/// The status for an injected code; a code HTTP cannot carry as a final answer becomes 500.
fn status_or_500(code: u16) -> StatusCode {
    match StatusCode::from_u16(code) {
        Ok(status) if code >= 200 => status,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse as _;

    use super::*;

    #[tokio::test]
    async fn faults_are_consumed_in_order() {
        let faults = Faults::default();
        faults.inject(Fault::new(FaultKind::Status(503), 2));
        faults.inject(Fault::once(FaultKind::TooManyRequests {
            retry_after_secs: 7,
        }));
        faults.inject(Fault::new(FaultKind::Hang, 0));
        for _ in 0..2 {
            assert!(matches!(
                decide(faults.take()).await,
                Outcome::Respond { status, retry_after_secs: None } if status == StatusCode::SERVICE_UNAVAILABLE
            ));
        }
        assert!(matches!(
            decide(faults.take()).await,
            Outcome::Respond {
                retry_after_secs: Some(7),
                ..
            }
        ));
        assert!(matches!(decide(faults.take()).await, Outcome::Proceed));
    }

    /// Answers after `work` of pretend processing, timing the whole answer.
    async fn timed_answer(faults: &Faults, work: Duration) -> Duration {
        let started = Instant::now();
        faults
            .answer(|_| async move {
                tokio::time::sleep(work).await;
                StatusCode::OK.into_response()
            })
            .await;
        started.elapsed()
    }

    #[tokio::test]
    async fn the_work_is_done_within_the_latency() {
        let faults = Faults::default();
        faults.set_latency(Duration::from_millis(150));
        let took = timed_answer(&faults, Duration::from_millis(100)).await;
        // Latency plus work would be 250 ms.
        assert!(
            took >= Duration::from_millis(150),
            "answered after {took:?}"
        );
        assert!(took < Duration::from_millis(240), "answered after {took:?}");
    }

    #[tokio::test]
    async fn work_longer_than_the_latency_makes_the_answer_later() {
        let faults = Faults::default();
        faults.set_latency(Duration::from_millis(100));
        let took = timed_answer(&faults, Duration::from_millis(150)).await;
        // Not latency plus work (250 ms): only the part of the work past the latency counts.
        assert!(
            took >= Duration::from_millis(150),
            "answered after {took:?}"
        );
        assert!(took < Duration::from_millis(240), "answered after {took:?}");
    }

    #[tokio::test]
    async fn an_injected_delay_comes_on_top_of_the_latency() {
        let faults = Faults::default();
        faults.set_latency(Duration::from_millis(100));
        faults.inject(Fault::once(FaultKind::Delay(Duration::from_millis(100))));
        let took = timed_answer(&faults, Duration::ZERO).await;
        assert!(
            took >= Duration::from_millis(200),
            "answered after {took:?}"
        );
    }

    #[test]
    fn odd_status_codes_become_500() {
        assert_eq!(status_or_500(42), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status_or_500(101), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status_or_500(1000), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status_or_500(502), StatusCode::BAD_GATEWAY);
    }
}
