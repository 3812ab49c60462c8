//! Precise waits for injected latency.
//!
//! tokio's timer has millisecond ticks, parks with a millisecond epoll timeout and is only
//! looked at between task polls, so on these shared cores a 20 ms sleep in the Entra emulator
//! ended 1–3 ms late at modest load and up to 15 ms late when the runtime was busy: "Entra
//! latency 20 ms" meant 22–26 ms. One OS thread keeps the deadlines and wakes each waiter at
//! its instant (the kernel's timers are precise to tens of microseconds); the woken task then
//! only waits for a free worker.

use std::{
    cmp::{Ordering, Reverse},
    collections::BinaryHeap,
    sync::{
        mpsc::{self, RecvTimeoutError},
        OnceLock,
    },
    thread,
    time::Instant,
};

use tokio::sync::oneshot;

/// One waiter: woken at `at`.
struct Wake {
    at: Instant,
    waiter: oneshot::Sender<()>,
}

impl PartialEq for Wake {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Wake {}

impl PartialOrd for Wake {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Wake {
    fn cmp(&self, other: &Self) -> Ordering {
        self.at.cmp(&other.at)
    }
}

/// The pacer thread's inbox; `None` when the thread could not be started.
static PACER: OnceLock<Option<mpsc::Sender<Wake>>> = OnceLock::new();

/// Waits until `at`, woken by the pacer thread (or by tokio's timer if there is none).
pub(crate) async fn sleep_until(at: Instant) {
    if at <= Instant::now() {
        return;
    }
    let (waiter, woken) = oneshot::channel();
    let sent = PACER
        .get_or_init(start)
        .as_ref()
        .is_some_and(|pacer| pacer.send(Wake { at, waiter }).is_ok());
    if sent && woken.await.is_ok() {
        return;
    }
    tokio::time::sleep_until(at.into()).await;
}

fn start() -> Option<mpsc::Sender<Wake>> {
    let (inbox, requests) = mpsc::channel();
    thread::Builder::new()
        .name("emulator-pacer".into())
        .spawn(move || run(&requests))
        .ok()
        .map(|_| inbox)
}

/// Wakes every due waiter, then sleeps until the earliest deadline or the next request.
fn run(requests: &mpsc::Receiver<Wake>) {
    let mut due: BinaryHeap<Reverse<Wake>> = BinaryHeap::new();
    loop {
        let now = Instant::now();
        while due.peek().is_some_and(|Reverse(first)| first.at <= now) {
            if let Some(Reverse(wake)) = due.pop() {
                // A waiter that went away (its request was dropped) needs no wake.
                let _ = wake.waiter.send(());
            }
        }
        let next = match due.peek() {
            Some(Reverse(first)) => requests.recv_timeout(first.at.saturating_duration_since(now)),
            None => requests.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(wake) => due.push(Reverse(wake)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn waiters_wake_at_their_own_instant_never_before() {
        let start = Instant::now();
        let offsets = [30u64, 5, 20, 5, 0, 10];
        let waits = offsets.map(|ms| {
            tokio::spawn(async move {
                let at = start + Duration::from_millis(ms);
                sleep_until(at).await;
                (at, Instant::now())
            })
        });
        for (ms, wait) in offsets.iter().zip(waits) {
            let (at, woke) = wait.await.expect("the waiter finished");
            assert!(woke >= at, "the {ms} ms waiter woke early");
            // Even on a loaded machine, nowhere near a second late.
            assert!(
                woke - at < Duration::from_secs(1),
                "the {ms} ms waiter woke {:?} late",
                woke - at
            );
        }
    }

    #[tokio::test]
    async fn a_past_instant_returns_at_once() {
        let past = Instant::now();
        tokio::time::sleep(Duration::from_millis(2)).await;
        sleep_until(past).await;
    }
}
