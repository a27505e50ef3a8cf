//! What a task is to the engine: async code with a context, returning an output (and, for fan-out sources,
//! the keys to map over).

use crate::params::Params;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
pub use snowpatrol_store::TaskOutput;
use snowpatrol_store::{Database, RunId, TaskFence, TaskInstanceRecord, TriggerKind};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[async_trait]
pub trait Task: Send + Sync + 'static {
    async fn run(&self, ctx: TaskContext) -> Result<TaskOutput, TaskError>;
}

/// A failed try. `retryable: false` fails the task at once even when tries remain (e.g. bad input data).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct TaskError {
    pub message: String,
    pub retryable: bool,
    /// The work could not be attempted at all because the database was unreachable: the try is retried with
    /// backoff and does not count against the task's retries (see `TaskOutcome::Postponed`).
    pub dependency_unavailable: bool,
}

impl TaskError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
            dependency_unavailable: false,
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
            dependency_unavailable: false,
        }
    }
    /// The database (or another dependency every try needs) was unreachable; see
    /// [`TaskError::dependency_unavailable`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
            dependency_unavailable: true,
        }
    }
    /// A store error: [`TaskError::unavailable`] when it is a connection-level failure a reconnect cures,
    /// retryable otherwise.
    pub fn from_store(what: &str, e: &snowpatrol_store::StoreError) -> Self {
        let message = format!("{what}: {e}");
        if e.is_transient() {
            Self::unavailable(message)
        } else {
            Self::retryable(message)
        }
    }
}

/// Everything a task knows about the try it is running.
#[derive(Clone)]
pub struct TaskContext {
    pub run_id: RunId,
    pub task_instance_id: i64,
    pub job_name: String,
    pub task_name: String,
    /// The fan-out key of a mapped task instance.
    pub map_key: Option<String>,
    pub try_number: i32,
    pub max_tries: i32,
    pub params: Params,
    pub logical_time: DateTime<Utc>,
    pub trigger_kind: TriggerKind,
    /// Cancelled on timeout, lost lease or shutdown past the grace period; long CPU work should poll it.
    pub cancel: CancellationToken,
    /// This try's identity: pass it to every write the task makes (see [`TaskFence`]), so a try that lost its
    /// lease cannot commit anything.
    pub fence: TaskFence,
    pub(crate) db: Database,
    pub(crate) cpu_pool: Arc<rayon::ThreadPool>,
}

impl TaskContext {
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// Instances (with outputs) of an upstream task of this run, e.g. for a report over all mapped results.
    pub async fn upstream(&self, task: &str) -> Result<Vec<TaskInstanceRecord>, TaskError> {
        self.db
            .task_instances_of(self.run_id, task)
            .await
            .map_err(|e| TaskError::from_store(&format!("reading upstream task {task}"), &e))
    }

    /// Runs CPU-bound work on the engine's rayon pool and awaits it, so tokio's threads never block.
    pub async fn run_cpu<F, R>(&self, f: F) -> Result<R, TaskError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let span = tracing::Span::current();
        self.cpu_pool.spawn(move || {
            let _g = span.enter();
            let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        });
        match rx.await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(panic)) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(TaskError::permanent(format!("task panicked: {msg}")))
            }
            Err(_) => Err(TaskError::retryable("CPU pool dropped the work")),
        }
    }
}

type BoxFut = Pin<Box<dyn Future<Output = Result<TaskOutput, TaskError>> + Send>>;

/// A task from a closure, for small jobs and tests.
pub struct FnTask<F>(pub F);

#[async_trait]
impl<F> Task for FnTask<F>
where
    F: Fn(TaskContext) -> BoxFut + Send + Sync + 'static,
{
    async fn run(&self, ctx: TaskContext) -> Result<TaskOutput, TaskError> {
        (self.0)(ctx).await
    }
}

/// Wraps an async closure as a task.
pub fn task_fn<F, Fut>(f: F) -> Arc<dyn Task>
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<TaskOutput, TaskError>> + Send + 'static,
{
    Arc::new(FnTask(move |ctx| Box::pin(f(ctx)) as BoxFut))
}
