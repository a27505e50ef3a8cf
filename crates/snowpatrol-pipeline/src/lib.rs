//! The Snowpatrol product: `prep` → `train` → `predict` jobs on the engine, chained by dataset events.

pub mod config;

pub use config::{PipelineConfig, PredictSettings, PrepConfig, SlackSettings, SourceConfig, TrainSettings};

use snowpatrol_engine::{FailureHook, JobRegistry, TaskFailure};
use snowpatrol_store::Database;
use std::path::PathBuf;
use std::sync::Arc;

pub const FEATURES_DATASET: &str = "snowpatrol://features/daily";
pub const MODELS_DATASET: &str = "snowpatrol://models/latest";

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] snowpatrol_store::StoreError),
}

/// Shared state of the pipeline's tasks.
pub struct Pipeline {
    pub db: Database,
    pub config: PipelineConfig,
    pub data_dir: PathBuf,
}

impl Pipeline {
    pub fn new(db: Database, config: PipelineConfig, data_dir: PathBuf) -> Result<Arc<Self>, PipelineError> {
        Ok(Arc::new(Self { db, config, data_dir }))
    }

    /// The jobs `prep`, `train` and `predict`.
    pub fn registry(self: &Arc<Self>) -> JobRegistry {
        JobRegistry::new()
    }

    pub fn failure_hook(self: &Arc<Self>) -> Arc<dyn FailureHook> {
        Arc::new(NoHook)
    }
}

struct NoHook;
#[async_trait::async_trait]
impl FailureHook for NoHook {
    async fn on_task_failed(&self, _f: TaskFailure) {}
}
