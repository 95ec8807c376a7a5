//! Where `POST /api/query` statements run: each on a thread of its own (with a
//! current-thread runtime), at most `concurrency` at once, all sharing one DataFusion memory
//! pool. A statement can compute for seconds inside one poll (a scalar function over a huge
//! value): on its own thread that holds up nobody else — not other queries, not the
//! unpackers and monitors of the background runtime. At its deadline the caller is answered
//! and the statement abandoned: it stops at its next await, and its thread keeps its slot
//! until then, so abandoned statements still count against the concurrency.

use deltalake::datafusion::execution::runtime_env::RuntimeEnv;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Semaphore};

pub struct QueryRunner {
    slots: Arc<Semaphore>,
    runtime_env: Arc<RuntimeEnv>,
}

/// Why a statement gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum Abandoned {
    #[error("the query did not finish within its timeout")]
    Timeout,
    #[error("cannot run the query: {0}")]
    Failed(String),
}

impl QueryRunner {
    pub fn new(concurrency: usize, memory_bytes: usize) -> Result<Self, inferlog_query::QueryError> {
        Ok(QueryRunner {
            slots: Arc::new(Semaphore::new(concurrency)),
            runtime_env: inferlog_query::memory_limited_runtime(memory_bytes)?,
        })
    }

    /// Runs `work` (given the shared runtime environment) on a query thread and waits for it
    /// up to `timeout`, counted from now: waiting for a free slot counts too.
    pub async fn run<W, F, T>(&self, timeout: Duration, work: W) -> Result<T, Abandoned>
    where
        W: FnOnce(Arc<RuntimeEnv>) -> F + Send + 'static,
        F: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let slot = tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| Abandoned::Timeout)?
            .map_err(|e| Abandoned::Failed(e.to_string()))?;
        let (result_tx, result_rx) = oneshot::channel();
        // Dropped when this future ends (answered, timed out, or the client went away).
        let (_cancel, cancelled) = oneshot::channel::<()>();
        let runtime_env = self.runtime_env.clone();
        std::thread::Builder::new()
            .name("inferlog-query".into())
            .spawn(move || {
                let _slot = slot;
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    // The caller sees the result channel close.
                    Err(_) => return,
                };
                runtime.block_on(async move {
                    tokio::select! {
                        output = work(runtime_env) => {
                            let _ = result_tx.send(output);
                        }
                        _ = cancelled => {}
                    }
                });
                // Dropping the runtime here stops the tasks the plan spawned.
            })
            .map_err(|e| Abandoned::Failed(format!("cannot start a query thread: {e}")))?;
        match tokio::time::timeout_at(deadline, result_rx).await {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(_)) => Err(Abandoned::Failed("the query thread ended without a result".into())),
            Err(_) => Err(Abandoned::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_statement_stuck_in_one_poll_holds_up_neither_the_caller_nor_other_statements() {
        let runner = QueryRunner::new(2, 1 << 20).unwrap();
        // Blocks its thread without ever yielding, like repeat() over a huge string, until
        // the test is over.
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let stuck = runner.run(Duration::from_millis(200), move |_| async move {
            let _ = blocked.recv();
        });
        let quick = runner.run(Duration::from_secs(30), |_| async { 42 });
        let (stuck, quick) = tokio::join!(stuck, quick);
        assert!(matches!(stuck, Err(Abandoned::Timeout)), "{stuck:?}");
        assert_eq!(quick.unwrap(), 42);
        release.send(()).unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn statements_beyond_the_concurrency_wait_within_their_timeout() {
        let runner = QueryRunner::new(1, 1 << 20).unwrap();
        let (release, released) = oneshot::channel::<()>();
        // Polled first, so it takes the only slot, and holds it until released.
        let first = runner.run(Duration::from_secs(30), |_| async move {
            let _ = released.await;
            1
        });
        let others = async {
            let refused = runner.run(Duration::from_millis(100), |_| async { 2 }).await;
            release.send(()).unwrap();
            let waited = runner.run(Duration::from_secs(30), |_| async { 3 }).await;
            (refused, waited)
        };
        let (first, (refused, waited)) = tokio::join!(first, others);
        assert_eq!(first.unwrap(), 1);
        assert!(matches!(refused, Err(Abandoned::Timeout)), "{refused:?}");
        assert_eq!(waited.unwrap(), 3);
    }
}
