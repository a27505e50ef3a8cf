//! Lineage from a prediction back to its data: an anomalous day → the predict run that scored it → the model
//! version it used → the training run that registered that version and the dataset events it consumed → the
//! prep runs that loaded the hourly rows the model was trained on and the day was scored from, with each prep
//! run's source window.
//!
//! Everything is read from what the runs already record (runs, consumed events, task outputs, the
//! `loaded_by_run_id` of every hourly row), so lineage needs no bookkeeping of its own and cannot drift from
//! what happened. Shared by `snowpatrol lineage anomaly ID` and the API.

use crate::jobs::ExtractOutput;
use crate::store::{AnomalyRow, HourlyLoad, ModelRow, PipelineStore, day_start};
use chrono::Days;
use serde::Serialize;
use snowpatrol_store::{Database, EventRecord, RunRecord, StoreError};
use std::collections::BTreeSet;

/// The chain from one anomalous day back to its data.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AnomalyLineage {
    pub anomaly: AnomalyRow,
    /// The predict run that scored the day last, and the dataset events that triggered it.
    pub predict_run: Option<RunRecord>,
    pub predict_consumed: Vec<EventRecord>,
    /// The model version that scored it.
    pub model: Option<ModelRow>,
    /// The run that trained that version, and the events that triggered it (features from a prep run).
    pub training_run: Option<RunRecord>,
    pub training_consumed: Vec<EventRecord>,
    /// The hourly rows of the model's training window, by the prep run that loaded them.
    pub training_data: Vec<HourlyLoad>,
    /// The hourly rows of the scored day, by the prep run that loaded them.
    pub scored_data: Vec<HourlyLoad>,
    /// Every prep run named above, with the window its extract task loaded.
    pub prep_runs: Vec<PrepRun>,
}

/// A prep run and what its `extract` task loaded.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PrepRun {
    pub run: RunRecord,
    /// None when the run's extract output is missing or from another release: `from`, `to` (days, both
    /// included), `hourly_rows`, `warehouse_days`, `credit_rates`, `timings_ms`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub extract: Option<ExtractOutput>,
}

/// The lineage of anomaly `anomaly_id`, or None when there is no such anomaly.
pub async fn anomaly_lineage(
    db: &Database,
    store: &PipelineStore,
    anomaly_id: i64,
) -> Result<Option<AnomalyLineage>, StoreError> {
    let Some(anomaly) = store.anomaly(anomaly_id).await? else {
        return Ok(None);
    };
    let key = snowpatrol_detect::WarehouseKey::new(&anomaly.account_name, &anomaly.warehouse_name);
    let predict_run = db.get_run(anomaly.run_id).await?;
    let predict_consumed = match &predict_run {
        Some(r) => db.consumed_events(r.run_id).await?,
        None => Vec::new(),
    };
    let model = store
        .list_models(Some(&key.to_string()))
        .await?
        .into_iter()
        .find(|m| {
            m.account_name == key.account_name
                && m.warehouse_name == key.warehouse_name
                && m.version == anomaly.model_version
        });
    let training_run = match model.as_ref().and_then(|m| m.training_run_id) {
        Some(id) => db.get_run(id).await?,
        None => None,
    };
    let training_consumed = match &training_run {
        Some(r) => db.consumed_events(r.run_id).await?,
        None => Vec::new(),
    };
    let training_data = match &model {
        Some(m) => {
            store
                .hourly_loads(
                    &key,
                    day_start(m.training_start),
                    day_start(m.training_end + Days::new(1)),
                )
                .await?
        }
        None => Vec::new(),
    };
    let scored_data = store
        .hourly_loads(
            &key,
            day_start(anomaly.usage_date),
            day_start(anomaly.usage_date + Days::new(1)),
        )
        .await?;
    let prep_ids: BTreeSet<i64> = training_data
        .iter()
        .chain(&scored_data)
        .filter_map(|l| l.run_id)
        .chain(training_consumed.iter().filter_map(|e| e.source_run_id))
        .collect();
    let mut prep_runs = Vec::new();
    for id in prep_ids {
        let Some(run) = db.get_run(id).await? else {
            continue;
        };
        let extract = db
            .task_instances_of(id, "extract")
            .await?
            .into_iter()
            .filter_map(|t| t.output)
            .find_map(|o| serde_json::from_value::<ExtractOutput>(o.get("data")?.clone()).ok());
        prep_runs.push(PrepRun { run, extract });
    }
    Ok(Some(AnomalyLineage {
        anomaly,
        predict_run,
        predict_consumed,
        model,
        training_run,
        training_consumed,
        training_data,
        scored_data,
        prep_runs,
    }))
}

impl AnomalyLineage {
    /// The chain for people, one step per line.
    pub fn text(&self) -> String {
        let a = &self.anomaly;
        let mut out = format!(
            "anomaly {}: {}.{} on {}, {:.2} credits against {:.2} expected (+{:.2}), incident {}\n",
            a.anomaly_id,
            a.account_name,
            a.warehouse_name,
            a.usage_date,
            a.actual_credits,
            a.expected_credits,
            a.excess_credits,
            a.incident_id
        );
        match &self.predict_run {
            Some(r) => out.push_str(&format!(
                "<- scored by predict run {} ({}, {}) with model version {}{}\n",
                r.run_id,
                r.trigger_kind,
                r.state,
                a.model_version,
                events_text(&self.predict_consumed)
            )),
            None => out.push_str(&format!(
                "<- scored by predict run {} (no longer in the history) with model version {}\n",
                a.run_id, a.model_version
            )),
        }
        match &self.model {
            Some(m) => out.push_str(&format!(
                "<- model {}.{} v{} ({}) trained on {} .. {}{}\n",
                m.account_name,
                m.warehouse_name,
                m.version,
                m.model_kind,
                m.training_start,
                m.training_end,
                m.training_run_id
                    .map(|r| format!(" by train run {r}"))
                    .unwrap_or_else(|| " outside a run".into())
            )),
            None => out.push_str("<- model version no longer in the registry\n"),
        }
        if let Some(r) = &self.training_run {
            out.push_str(&format!(
                "<- train run {} ({}, {}){}\n",
                r.run_id,
                r.trigger_kind,
                r.state,
                events_text(&self.training_consumed)
            ));
        }
        out.push_str(&format!(
            "<- training data: {}\n<- scored day's data: {}\n",
            loads_text(&self.training_data),
            loads_text(&self.scored_data)
        ));
        for p in &self.prep_runs {
            out.push_str(&format!(
                "   prep run {} ({}, {})",
                p.run.run_id, p.run.trigger_kind, p.run.state
            ));
            match &p.extract {
                Some(e) => out.push_str(&format!(
                    ": loaded {} .. {}, {} hourly rows, {} warehouse-days\n",
                    e.from, e.to, e.hourly_rows, e.warehouse_days
                )),
                None => out.push('\n'),
            }
        }
        out.trim_end().to_string()
    }
}

fn events_text(events: &[EventRecord]) -> String {
    if events.is_empty() {
        return ", not triggered by datasets".into();
    }
    let items: Vec<String> = events
        .iter()
        .map(|e| match e.source_run_id {
            Some(r) => format!("#{} {} from run {r}", e.event_id, e.dataset_uri),
            None => format!("#{} {} by {}", e.event_id, e.dataset_uri, e.created_by),
        })
        .collect();
    format!(", consumed {}", items.join(", "))
}

fn loads_text(loads: &[HourlyLoad]) -> String {
    if loads.is_empty() {
        return "no hourly rows (loaded before hourly rows were kept, or removed by retention)"
            .into();
    }
    let total: i64 = loads.iter().map(|l| l.hourly_rows).sum();
    let parts: Vec<String> = loads
        .iter()
        .map(|l| {
            format!(
                "{} rows {} .. {} by {}",
                l.hourly_rows,
                l.first_hour.format("%Y-%m-%d %H:%M"),
                l.last_hour.format("%Y-%m-%d %H:%M"),
                l.run_id
                    .map(|r| format!("prep run {r}"))
                    .unwrap_or_else(|| "no run".into())
            )
        })
        .collect();
    format!("{total} hourly rows ({})", parts.join("; "))
}
