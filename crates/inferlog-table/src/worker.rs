//! Periodic work that runs once per table (compaction, unpacking, scheduled monitoring,
//! retention): what each worker does in a pass is its own; when it runs, where, and what
//! happens when a pass fails is decided here, once for all of them.
//!
//! Invariants:
//! - A pass runs only while this gateway holds the endpoint's lease. A gateway that does not
//!   hold it looks again every [`LEASE_RECHECK`] (or at its next pass, if sooner) and runs a
//!   pass as soon as it holds it, so work goes on within a lease's time to live when its
//!   holder dies.
//! - After the n-th failed pass in a row the next comes `min(2^(n-1) s, 60 s)` later,
//!   whatever the worker's schedule: a frequent worker backs off, a daily one retries within
//!   a minute. The first failure of a streak is logged at WARN, the rest at DEBUG, and the
//!   recovery at INFO, so a store that is down for an hour logs three lines, not thousands.
//! - A pass in progress is never cut short by `stop`; a worker that asks for it makes one
//!   last pass after `stop` (the unpacker: the typed table then holds all that was committed).

use crate::lease::LeaseFlag;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;

/// How often a gateway that does not hold the lease looks whether it does now.
pub const LEASE_RECHECK: Duration = Duration::from_secs(5);
/// The wait after the first failed pass of a streak; doubled for each further one.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait after a failed pass.
pub const MAX_RETRY: Duration = Duration::from_secs(60);

/// Why a pass did nothing.
#[derive(Debug)]
pub enum PassError {
    /// Nothing to work on yet (no table, no baseline): said once at INFO, then quiet.
    NotReady(String),
    /// The pass failed; it is retried with backoff.
    Failed(String),
}

/// One kind of periodic work for one endpoint.
pub trait Periodic: Send + Sync + 'static {
    /// What the logs call this work (`compaction`, `unpacking`, `monitoring`, `retention`).
    fn kind(&self) -> &'static str;
    /// Whose table it works on (an endpoint, or a table name).
    fn target(&self) -> &str;
    /// How long after the start the first pass comes.
    fn first_pass_in(&self) -> Duration {
        self.next_pass_in()
    }
    /// How long after a pass that did not fail the next one comes.
    fn next_pass_in(&self) -> Duration;
    /// One pass.
    fn pass(&self) -> impl Future<Output = Result<(), PassError>> + Send;
    /// Whether `stop` is followed by one last pass.
    fn last_pass_on_stop(&self) -> bool {
        false
    }
}

/// The wait after `failures` failed passes in a row.
pub fn retry_in(failures: u32) -> Duration {
    FIRST_RETRY.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16))).min(MAX_RETRY)
}

/// Runs `work` under `lease` until `stop` turns true.
pub async fn run_periodic<W: Periodic>(work: W, lease: LeaseFlag, mut stop: watch::Receiver<bool>) {
    let (kind, target) = (work.kind(), work.target().to_string());
    let mut wait = work.first_pass_in();
    let mut failures = 0u32;
    let mut not_ready = false;
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = stop.wait_for(|stop| *stop) => true,
        };
        if stopping && !work.last_pass_on_stop() {
            return;
        }
        if !lease.is_held() {
            if stopping {
                return;
            }
            wait = LEASE_RECHECK.min(work.next_pass_in());
            continue;
        }
        wait = match work.pass().await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(work = kind, target = %target, failed_passes = failures, "works again");
                }
                failures = 0;
                not_ready = false;
                work.next_pass_in()
            }
            Err(PassError::NotReady(reason)) => {
                if !not_ready {
                    tracing::info!(work = kind, target = %target, "{kind} waits: {reason}");
                    not_ready = true;
                }
                failures = 0;
                work.next_pass_in()
            }
            Err(PassError::Failed(error)) => {
                failures = failures.saturating_add(1);
                let retry = retry_in(failures);
                if failures == 1 {
                    tracing::warn!(work = kind, target = %target, error = %error, retry_in_ms = retry.as_millis() as u64, "{kind} failed; retrying with backoff");
                } else {
                    tracing::debug!(work = kind, target = %target, error = %error, failed_passes = failures, "{kind} failed again");
                }
                retry
            }
        };
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn failed_passes_back_off_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|n| retry_in(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry_in(u32::MAX), MAX_RETRY);
    }

    struct Counting {
        passes: Arc<AtomicU32>,
        last_pass: bool,
    }

    impl Periodic for Counting {
        fn kind(&self) -> &'static str {
            "counting"
        }
        fn target(&self) -> &str {
            "t"
        }
        fn next_pass_in(&self) -> Duration {
            Duration::from_millis(10)
        }
        async fn pass(&self) -> Result<(), PassError> {
            self.passes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn last_pass_on_stop(&self) -> bool {
            self.last_pass
        }
    }

    #[tokio::test]
    async fn passes_run_only_under_the_lease_and_a_last_pass_follows_stop_when_asked() {
        let (held, flag) = LeaseFlag::manual(false);
        let passes = Arc::new(AtomicU32::new(0));
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(run_periodic(Counting { passes: passes.clone(), last_pass: true }, flag, stop));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(passes.load(Ordering::SeqCst), 0, "not held: no pass");
        held.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = passes.load(Ordering::SeqCst);
        assert!(before > 10, "held: passes every 10 ms ({before})");
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        assert!(passes.load(Ordering::SeqCst) > before, "one last pass after stop");
    }
}
