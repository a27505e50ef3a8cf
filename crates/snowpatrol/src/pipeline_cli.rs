//! Product commands on top of the engine CLI: the zero-setup demo.

use anyhow::Context;
use serde_json::json;
use snowpatrol_engine::{
    CancellationToken, Engine, JobConfig, RunState, SchedulerSettings, resolve_jobs,
};
use snowpatrol_pipeline::{
    FEATURES_DATASET, MODELS_DATASET, Pipeline, PipelineConfig, SourceConfig,
};
use snowpatrol_store::{Database, RunFilter};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs the whole chain on an embedded SQLite database and synthetic data: the real daemon runs prep, which
/// emits the features event that triggers train, whose models event triggers predict.
pub async fn demo() -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let dir =
        std::env::temp_dir().join(format!("snowpatrol-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let db = Database::open_sqlite_file(&dir.join("snowpatrol.db"))
        .await
        .context("opening the embedded database")?;
    db.migrate()
        .await
        .context("migrating the embedded database")?;
    let end = chrono::NaiveDate::from_ymd_opt(2025, 6, 30).unwrap_or_default();
    let config = PipelineConfig {
        source: SourceConfig::Synthetic {
            seed: 42,
            warehouses: 12,
            days: 365,
            end: Some(end),
        },
        ..Default::default()
    };
    let pipeline =
        Pipeline::new(db.clone(), config, dir.clone()).context("building the pipeline")?;
    let jobs_cfg: BTreeMap<String, JobConfig> =
        toml::from_str(&format!("[train]\ndatasets = [\"{FEATURES_DATASET}\"]\n[predict]\ndatasets = [\"{MODELS_DATASET}\"]\n"))
            .context("demo schedule")?;
    let settings = SchedulerSettings {
        poll_interval: Duration::from_millis(500),
        ..Default::default()
    };
    let jobs = resolve_jobs(&pipeline.registry(), &jobs_cfg, &settings)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let engine = Arc::new(
        Engine::new(db.clone(), jobs, settings)?.with_failure_hook(pipeline.failure_hook()),
    );
    engine.register_jobs().await?;
    println!(
        "Snowpatrol demo: embedded SQLite at {}, 12 synthetic warehouses over 365 days\n",
        dir.display()
    );
    let stop = CancellationToken::new();
    let daemon = {
        let (e, s) = (engine.clone(), stop.clone());
        tokio::spawn(async move { e.run_daemon(s).await })
    };
    engine.trigger("prep", &[], "demo").await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let predict = loop {
        let runs = db
            .list_runs(&RunFilter {
                job_name: Some("predict".into()),
                state: None,
                limit: 1,
            })
            .await?;
        if let Some(r) = runs.first().filter(|r| r.state.is_terminal()) {
            break r.clone();
        }
        let failed = db
            .list_runs(&RunFilter {
                job_name: None,
                state: Some(RunState::Failed),
                limit: 5,
            })
            .await?;
        if !failed.is_empty() || Instant::now() > deadline {
            stop.cancel();
            let _ = daemon.await;
            anyhow::bail!(
                "the demo chain did not complete: {:?}",
                failed
                    .iter()
                    .map(|r| (&r.job_name, &r.error))
                    .collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop.cancel();
    daemon.await.context("daemon task")??;

    let (markdown, path) = pipeline
        .store
        .report_markdown(predict.run_id)
        .await?
        .unwrap_or_default();
    println!("{markdown}\n");
    println!("Report: {path}");
    let since = end - chrono::Days::new(7);
    let anomalies = pipeline.store.anomalies_since(since, None).await?;
    println!("\nAnomalies in the last 8 days ({}):", anomalies.len());
    for a in &anomalies {
        println!(
            "  {}.{} {}  actual {:.1}  expected {:.1}  excess {:.1}  (model v{}, run {})",
            a.account_name,
            a.warehouse_name,
            a.usage_date,
            a.actual_credits,
            a.expected_credits,
            a.excess_credits,
            a.model_version,
            a.run_id
        );
    }
    if let Some(labels) = pipeline.labels() {
        let truth: std::collections::BTreeSet<_> = labels
            .iter()
            .filter(|l| l.kind.is_cost_increase() && l.date >= since)
            .map(|l| (l.key.to_string(), l.date))
            .collect();
        println!(
            "  labelled cost incidents starting in that window: {}",
            truth.len()
        );
    }
    println!("\nRun history (oldest first):");
    let mut runs = db
        .list_runs(&RunFilter {
            job_name: None,
            state: None,
            limit: 50,
        })
        .await?;
    runs.reverse();
    for r in &runs {
        let consumed = db.consumed_events(r.run_id).await?;
        let events: Vec<String> = consumed
            .iter()
            .map(|e| {
                format!(
                    "#{} {} from run {}",
                    e.event_id,
                    e.dataset_uri,
                    e.source_run_id.unwrap_or(0)
                )
            })
            .collect();
        let took = r
            .finished_at
            .zip(r.started_at)
            .map(|(f, s)| (f - s).num_milliseconds())
            .unwrap_or(0);
        println!(
            "  run {:>3} {:<8} {:<8} {:<7} {:>6} ms  consumed: {}",
            r.run_id,
            r.job_name,
            r.trigger_kind.as_str(),
            r.state.as_str(),
            took,
            if events.is_empty() {
                "-".into()
            } else {
                events.join(", ")
            }
        );
    }
    let alerts = pipeline.store.list_alerts(false, 100).await?;
    println!(
        "\nAlerts (no Slack token set, so written to files): {} under {}",
        alerts.len(),
        dir.join("alerts").display()
    );
    println!(
        "\nDone in {:.1} s. Everything above is in {}.",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    let _ = json!({});
    Ok(if predict.state == RunState::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_RUN_FAILED)
    })
}
