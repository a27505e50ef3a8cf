//! `snowpatrol demo`: the whole chain on an embedded SQLite database and synthetic data, wired exactly as the
//! daemon is ([`App::build`] and [`App::serve`]): prep runs, emits the features event that triggers train, whose
//! models event triggers predict.

use crate::app::App;
use crate::output::outln;
use crate::settings::{LoadedConfig, Settings};
use anyhow::Context;
use chrono::NaiveDate;
use serde_json::json;
use snowpatrol_engine::{CancellationToken, RunState};
use snowpatrol_pipeline::SourceConfig;
use snowpatrol_pipeline::store::AnomalyRow;
use snowpatrol_store::{Database, RunFilter, RunRecord};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Synthetic warehouses and days of history the demo generates.
const WAREHOUSES: usize = 12;
const DAYS: usize = 365;
/// How long the chain may take before the demo gives up.
const CHAIN_TIMEOUT: Duration = Duration::from_secs(300);

pub(crate) async fn demo(json: bool) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let dir =
        std::env::temp_dir().join(format!("snowpatrol-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let db = Database::open_sqlite_file(&dir.join("snowpatrol.db"))
        .await
        .context("opening the embedded database")?;
    snowpatrol_pipeline::migrate(&db)
        .await
        .context("migrating the embedded database")?;
    let end = NaiveDate::from_ymd_opt(2025, 6, 30).unwrap_or_default();
    let app = Arc::new(App::build(&demo_config(&dir, end), db.clone(), true, None).await?);
    // Registered before `run_chain` triggers prep; the daemon it serves registers them again, idempotently.
    app.register_jobs().await?;
    if !json {
        outln!(
            "Snowpatrol demo: embedded SQLite at {}, {WAREHOUSES} synthetic warehouses over {DAYS} days\n",
            dir.display()
        );
    }
    let predict = run_chain(&app, &db).await?;
    let story = Story::read(&app, &db, &dir, predict, end).await?;
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&story.summary(started.elapsed()))?
        );
    } else {
        outln!("{}", story.text(started.elapsed()));
    }
    Ok(if story.predict.state == RunState::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_RUN_FAILED)
    })
}

/// The default configuration with a seeded synthetic source, everything under `dir` and a short poll interval.
fn demo_config(dir: &Path, end: NaiveDate) -> LoadedConfig {
    let mut settings = Settings::default();
    settings.server.data_dir = Some(dir.to_path_buf());
    settings.scheduler.poll_interval = Duration::from_millis(500);
    settings.pipeline.source = SourceConfig::Synthetic {
        seed: 42,
        warehouses: WAREHOUSES,
        days: DAYS,
        end: Some(end),
    };
    LoadedConfig {
        settings,
        source: None,
        secrets: Vec::new(),
        deferred: Vec::new(),
    }
}

/// Serves the app, triggers prep and waits until predict (which the datasets trigger) finishes; then stops
/// serving and delivers what the outbox still holds.
async fn run_chain(app: &Arc<App>, db: &Database) -> anyhow::Result<RunRecord> {
    let stop = CancellationToken::new();
    let serving = {
        let (app, stop) = (app.clone(), stop.clone());
        tokio::spawn(async move { app.serve(stop).await })
    };
    app.engine.trigger("prep", &[], "demo").await?;
    let outcome = wait_for_predict(db).await;
    stop.cancel();
    serving.await.context("the demo's daemon task")??;
    let predict = outcome?;
    // What the sender had not done yet (queued in the last moments), bounded.
    app.pipeline
        .drain_outbox(Duration::from_secs(30))
        .await
        .context("delivering the demo's alerts")?;
    Ok(predict)
}

/// The finished predict run; an error when any run failed first or the chain takes longer than
/// [`CHAIN_TIMEOUT`].
async fn wait_for_predict(db: &Database) -> anyhow::Result<RunRecord> {
    let deadline = Instant::now() + CHAIN_TIMEOUT;
    loop {
        let newest = db
            .list_runs(&RunFilter {
                job_name: Some("predict".into()),
                limit: 1,
                ..Default::default()
            })
            .await?;
        if let Some(r) = newest.into_iter().find(|r| r.state.is_terminal()) {
            return Ok(r);
        }
        let failed = db
            .list_runs(&RunFilter {
                state: Some(RunState::Failed),
                limit: 5,
                ..Default::default()
            })
            .await?;
        if !failed.is_empty() || Instant::now() > deadline {
            anyhow::bail!(
                "the demo chain did not complete: {:?}",
                failed
                    .iter()
                    .map(|r| (&r.job_name, &r.error))
                    .collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the demo tells once the chain finished.
struct Story {
    dir: PathBuf,
    predict: RunRecord,
    markdown: String,
    report_path: String,
    anomalies: Vec<AnomalyRow>,
    /// Labelled cost incidents starting in the window (the synthetic source knows its truth).
    labelled: Option<usize>,
    /// Oldest first, with the events each consumed.
    runs: Vec<(RunRecord, Vec<String>)>,
    alerts: usize,
}

impl Story {
    async fn read(
        app: &App,
        db: &Database,
        dir: &Path,
        predict: RunRecord,
        end: NaiveDate,
    ) -> anyhow::Result<Self> {
        let store = &app.pipeline.store;
        let (markdown, report_path) = store
            .report_markdown(predict.run_id)
            .await?
            .unwrap_or_default();
        let since = end - chrono::Days::new(7);
        let anomalies = store.anomalies_since(since, None).await?;
        let labelled = app.pipeline.labels().map(|labels| {
            labels
                .iter()
                .filter(|l| l.kind.is_cost_increase() && l.date >= since)
                .map(|l| (l.key.to_string(), l.date))
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        });
        let mut history = db
            .list_runs(&RunFilter {
                limit: 50,
                ..Default::default()
            })
            .await?;
        history.reverse();
        let mut runs = Vec::with_capacity(history.len());
        for r in history {
            let consumed = db
                .consumed_events(r.run_id)
                .await?
                .iter()
                .map(|e| {
                    let from = e.source_run_id.unwrap_or(0);
                    format!("#{} {} from run {from}", e.event_id, e.dataset_uri)
                })
                .collect();
            runs.push((r, consumed));
        }
        let alerts = store.list_alerts(false, 100).await?.len();
        Ok(Self {
            dir: dir.to_path_buf(),
            predict,
            markdown,
            report_path,
            anomalies,
            labelled,
            runs,
            alerts,
        })
    }

    fn text(&self, took: Duration) -> String {
        let mut out = format!("{}\n\nReport: {}\n", self.markdown, self.report_path);
        out.push_str(&format!(
            "\nAnomalies in the last 8 days ({}):\n",
            self.anomalies.len()
        ));
        for a in &self.anomalies {
            out.push_str(&format!(
                "  {}.{} {}  actual {:.1}  expected {:.1}  excess {:.1}  (model v{}, run {})\n",
                a.account_name,
                a.warehouse_name,
                a.usage_date,
                a.actual_credits,
                a.expected_credits,
                a.excess_credits,
                a.model_version,
                a.run_id
            ));
        }
        if let Some(n) = self.labelled {
            out.push_str(&format!(
                "  labelled cost incidents starting in that window: {n}\n"
            ));
        }
        out.push_str("\nRun history (oldest first):\n");
        for (r, consumed) in &self.runs {
            let took = r
                .finished_at
                .zip(r.started_at)
                .map(|(f, s)| (f - s).num_milliseconds())
                .unwrap_or(0);
            out.push_str(&format!(
                "  run {:>3} {:<8} {:<8} {:<7} {:>6} ms  consumed: {}\n",
                r.run_id,
                r.job_name,
                r.trigger_kind.as_str(),
                r.state.as_str(),
                took,
                if consumed.is_empty() {
                    "-".into()
                } else {
                    consumed.join(", ")
                }
            ));
        }
        out.push_str(&format!(
            "\nAlerts (no Slack token set, so written to files): {} under {}\n",
            self.alerts,
            self.dir.join("alerts").display()
        ));
        out.push_str(&format!(
            "\nDone in {:.1} s. Everything above is in {}.",
            took.as_secs_f64(),
            self.dir.display()
        ));
        out
    }

    /// `--json`: one document instead of the story.
    fn summary(&self, took: Duration) -> serde_json::Value {
        json!({
            "data_dir": self.dir.display().to_string(),
            "report": self.report_path,
            "predict_run_id": self.predict.run_id,
            "predict_state": self.predict.state,
            "anomalies": self.anomalies.iter().map(|a| json!({
                "account_name": a.account_name,
                "warehouse_name": a.warehouse_name,
                "usage_date": a.usage_date,
                "actual_credits": a.actual_credits,
                "expected_credits": a.expected_credits,
                "excess_credits": a.excess_credits,
                "model_version": a.model_version,
                "run_id": a.run_id,
            })).collect::<Vec<_>>(),
            "runs": self.runs.iter().map(|(r, _)| json!({
                "run_id": r.run_id,
                "job_name": r.job_name,
                "trigger_kind": r.trigger_kind,
                "state": r.state,
            })).collect::<Vec<_>>(),
            "alerts": self.alerts,
            "seconds": took.as_secs_f64(),
        })
    }
}
