//! The gateway's background work, owned in one place: every task `serve` starts besides
//! serving requests (committers, unpackers, compactors, scheduled monitors and retention,
//! leases, the fleet heartbeat, the control state follower, the metrics upkeep, the audit
//! writer).
//!
//! Invariants:
//! - Every task belongs to a [`Stage`]. [`Supervisor::stop`] stops the stages in the order of
//!   [`Stage::ORDER`]: a stage's tasks are told to stop only once every task of the stages
//!   before it has finished, or overrun its stage's time and been cancelled (logged by name). So upkeep stops
//!   before the last commits, the last unpacking pass sees the last commit, a lease is given
//!   up only after the work it guards has stopped, and the audit writer ends after
//!   everything that audits.
//! - Periodic once-per-table work runs through [`inferlog_table::worker::run_periodic`]: only
//!   under the endpoint's lease, with one backoff and logging policy for failed passes.
//! - The log writers are not tasks: they are threads that end when the last capture handle
//!   goes, which `serve` waits for before calling [`Supervisor::stop`].

use crate::api::BackgroundRuntime;
use inferlog_table::lease::LeaseFlag;
use inferlog_table::worker::Periodic;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// When a task stops, relative to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Compaction, scheduled monitoring and retention: a run in progress finishes.
    Upkeep,
    /// The committers: what the log writers wrote is committed before they end.
    Commit,
    /// The unpackers: a last pass over the last commit.
    Unpack,
    /// Leases (given up so another gateway takes over at once), the heartbeat, the control
    /// state follower and the metrics upkeep.
    Fleet,
    /// The audit writer: it ends once every sender (the API, retention) is gone.
    Audit,
}

impl Stage {
    pub const ORDER: [Stage; 5] = [Stage::Upkeep, Stage::Commit, Stage::Unpack, Stage::Fleet, Stage::Audit];

    /// How long the stage's tasks may take to stop before the next stage is stopped anyway.
    fn stop_within(self) -> Duration {
        match self {
            Stage::Upkeep => Duration::from_secs(30),
            // The committer retries its last commit a few times with backoff, then leaves the
            // records in the log for the next start.
            Stage::Commit => Duration::from_secs(120),
            Stage::Unpack => Duration::from_secs(60),
            Stage::Fleet | Stage::Audit => Duration::from_secs(10),
        }
    }

    fn index(self) -> usize {
        Stage::ORDER.iter().position(|s| *s == self).expect("every stage is in ORDER")
    }
}

/// Where a task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    /// The committers' runtime, below the proxy's priority.
    Commit,
    /// The background runtime, whose thread serving never waits on.
    Background,
}

struct StageTasks {
    stop: watch::Sender<bool>,
    tasks: Vec<(String, JoinHandle<()>)>,
}

/// Owns the background tasks and stops them in order.
pub struct Supervisor {
    background: Arc<BackgroundRuntime>,
    commit: BackgroundRuntime,
    stages: Vec<StageTasks>,
}

impl Supervisor {
    pub fn new(background: Arc<BackgroundRuntime>) -> std::io::Result<Supervisor> {
        let stages = Stage::ORDER.iter().map(|_| StageTasks { stop: watch::channel(false).0, tasks: Vec::new() }).collect();
        Ok(Supervisor { background, commit: BackgroundRuntime::for_commits()?, stages })
    }

    /// Turns true when `stage` is told to stop.
    pub fn stop_signal(&self, stage: Stage) -> watch::Receiver<bool> {
        self.stages[stage.index()].stop.subscribe()
    }

    /// Starts `task`, named `name` in the logs, as part of `stage`.
    pub fn spawn(&mut self, stage: Stage, on: On, name: impl Into<String>, task: impl Future<Output = ()> + Send + 'static) {
        let handle = match on {
            On::Commit => self.commit.handle().spawn(task),
            On::Background => self.background.handle().spawn(task),
        };
        self.stages[stage.index()].tasks.push((name.into(), handle));
    }

    /// Starts periodic once-per-table `work` in `stage`, running passes while `lease` is held.
    pub fn spawn_periodic<W: Periodic>(&mut self, stage: Stage, work: W, lease: LeaseFlag) {
        let name = format!("{} of {}", work.kind(), work.target());
        let stop = self.stop_signal(stage);
        self.spawn(stage, On::Background, name, inferlog_table::worker::run_periodic(work, lease, stop));
    }

    /// Stops every stage in [`Stage::ORDER`], each after the one before has finished.
    pub async fn stop(self) {
        for (stage, tasks) in Stage::ORDER.iter().zip(self.stages) {
            let _ = tasks.stop.send(true);
            let deadline = tokio::time::Instant::now() + stage.stop_within();
            for (name, mut task) in tasks.tasks {
                match tokio::time::timeout_at(deadline, &mut task).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(task = %name, error = %e, "a background task ended abnormally"),
                    Err(_) => {
                        // Cancelled at its next await, so that no later stage (the leases above
                        // all) goes on while it still runs.
                        task.abort();
                        let _ = task.await;
                        tracing::warn!(task = %name, stage = ?stage, within_s = stage.stop_within().as_secs(), "a background task did not stop in time and was cancelled");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stages_stop_in_order_each_after_the_one_before_has_finished() {
        let background = Arc::new(BackgroundRuntime::new().unwrap());
        let mut supervisor = Supervisor::new(background.clone()).unwrap();
        let stopped = Arc::new(Mutex::new(Vec::new()));
        // Declared in reverse, each taking a while to stop: the order is the stages', not the spawns'.
        for stage in Stage::ORDER.iter().rev().copied() {
            let mut stop = supervisor.stop_signal(stage);
            let stopped = stopped.clone();
            supervisor.spawn(stage, On::Background, format!("{stage:?}"), async move {
                let _ = stop.wait_for(|s| *s).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                stopped.lock().unwrap().push(stage);
            });
        }
        supervisor.stop().await;
        assert_eq!(*stopped.lock().unwrap(), Stage::ORDER);
        drop(background);
    }
}
