//! Built-in example jobs, registered only with `[examples] enabled = true`.
//!
//! They exist so that data-aware scheduling can be tried (and the binary tested end to end) without Snowflake
//! or a trained model: `example_extract` produces a dataset, `example_report` is scheduled on it, and
//! `example_fanout` shows a list task fanning out into one mapped task instance per key.

use serde_json::json;
use snowpatrol_engine::{
    DatasetSpec, JobConfig, JobDefinition, JobRegistry, ParamSpec, ParamType, TaskDefinition,
    TaskError, TaskOutput, task_fn,
};
use std::collections::BTreeMap;

pub const EXTRACTED_DATASET: &str = "snowpatrol://examples/extracted";

/// Registers the example jobs (see the module documentation).
pub fn register(registry: &mut JobRegistry) {
    registry.register(example_extract());
    registry.register(example_report());
    registry.register(example_fanout());
}

/// `example_extract`: one task that pretends to extract rows and announces [`EXTRACTED_DATASET`].
fn example_extract() -> JobDefinition {
    JobDefinition::new(
        "example_extract",
        "Example: pretends to extract rows and announces the dataset it wrote.",
    )
    .param(ParamSpec::new(
        "rows",
        ParamType::Int,
        json!(100),
        "rows to pretend to extract",
    ))
    .task(
        TaskDefinition::new(
            "extract",
            task_fn(|ctx| async move {
                let rows = ctx.params.int("rows").unwrap_or(100);
                tracing::info!(rows, "example extract done");
                Ok(TaskOutput::with_extra(json!({ "rows": rows })))
            }),
        )
        .outlet(EXTRACTED_DATASET),
    )
}

/// `example_report`: one task, scheduled on [`EXTRACTED_DATASET`] by [`default_configs`].
fn example_report() -> JobDefinition {
    JobDefinition::new(
        "example_report",
        "Example: runs whenever example_extract's dataset is updated.",
    )
    .task(TaskDefinition::new(
        "report",
        task_fn(|ctx| async move {
            tracing::info!(run_id = ctx.run_id, "example report written");
            Ok(TaskOutput::empty().with_data(json!({ "report": "ok" })))
        }),
    ))
}

/// `example_fanout`: `list_keys` lists keys and `process` runs once per key (mapped over them).
fn example_fanout() -> JobDefinition {
    JobDefinition::new(
        "example_fanout",
        "Example: one task lists keys, a mapped task runs once per key.",
    )
    .param(ParamSpec::new(
        "keys",
        ParamType::Int,
        json!(5),
        "number of keys to fan out over",
    ))
    .param(ParamSpec::new(
        "fail",
        ParamType::Bool,
        json!(false),
        "make every mapped instance fail",
    ))
    .task(TaskDefinition::new(
        "list_keys",
        task_fn(|ctx| async move {
            let n = ctx.params.int("keys").unwrap_or(5);
            if !(0..=10_000).contains(&n) {
                return Err(TaskError::permanent(format!(
                    "keys must be between 0 and 10000, got {n}"
                )));
            }
            Ok(TaskOutput::with_map_keys(
                (0..n).map(|i| format!("key-{i}")).collect(),
            ))
        }),
    ))
    .task(
        TaskDefinition::new(
            "process",
            task_fn(|ctx| async move {
                let key = ctx.map_key.clone().unwrap_or_default();
                if ctx.params.bool("fail").unwrap_or(false) {
                    // Permanent: an example failure should end the run at once, not wait for retries.
                    return Err(TaskError::permanent(format!(
                        "{key}: failing as asked (fail=true)"
                    )));
                }
                let len = ctx.run_cpu(move || key.len()).await?;
                Ok(TaskOutput::empty().with_data(json!({ "key_length": len })))
            }),
        )
        .map_over("list_keys"),
    )
}

/// Schedules the examples get when the file does not configure them: `example_report` on the extract dataset.
pub fn default_configs(jobs: &mut BTreeMap<String, JobConfig>) {
    jobs.entry("example_report".into())
        .or_insert_with(|| JobConfig {
            datasets: Some(DatasetSpec::AllOf(vec![EXTRACTED_DATASET.into()])),
            timezone: "UTC".into(),
            max_active_runs: 1,
            ..Default::default()
        });
}
