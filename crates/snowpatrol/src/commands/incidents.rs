//! Operator views of the pipeline's tables: models, incidents and their days (`anomalies`, with `ack`), the
//! alert outbox, and `explain-alert`.

use super::print;
use crate::output::outln;
use anyhow::Context;
use chrono::NaiveDate;
use serde_json::json;
use snowpatrol_pipeline::routing::{IncidentFacts, RouteVerdict, RoutingDecision};
use snowpatrol_pipeline::store::{
    AckReason as StoredAckReason, AlertRow, AnomalyRow, IncidentFilter, IncidentRow, IncidentStatus,
};
use snowpatrol_pipeline::{PipelineConfig, PipelineStore};
use snowpatrol_store::Database;
use std::process::ExitCode;

/// `--format` of list commands that scripts consume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    Table,
    Csv,
    Json,
}

#[derive(clap::Subcommand, Debug)]
pub enum AnomaliesCommand {
    /// Acknowledge an incident: it is never alerted again (also when it grows), and its days are marked too.
    Ack {
        /// Incident id (first column of `snowpatrol anomalies`); with --anomaly, an anomaly (day) id.
        id: i64,
        #[arg(long, value_enum)]
        reason: AckReason,
        /// ID is an anomaly id (first column of `snowpatrol anomalies --days`): acknowledge its incident.
        #[arg(long)]
        anomaly: bool,
    },
    /// Show one incident: its days, what the model expected, and the root cause of each day (top statements,
    /// users, roles, query tags, warehouse events and changes, the hourly shape, and what could not be read).
    Show {
        /// Incident id (first column of `snowpatrol anomalies`).
        id: i64,
    },
}

/// Why an operator dismissed an incident. A closed set, not free text, so the feedback can be counted later
/// (false-positive rate per model version) without cleaning up spellings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AckReason {
    /// The model was wrong: nothing unusual happened.
    #[value(name = "false_positive")]
    FalsePositive,
    /// Real extra spend, but announced beforehand (a backfill, a migration).
    #[value(name = "planned")]
    Planned,
    /// Real extra spend that is fine (month-end close, a known seasonal peak).
    #[value(name = "expected")]
    Expected,
}

impl AckReason {
    pub fn stored(self) -> StoredAckReason {
        match self {
            AckReason::FalsePositive => StoredAckReason::FalsePositive,
            AckReason::Planned => StoredAckReason::Planned,
            AckReason::Expected => StoredAckReason::Expected,
        }
    }
}

/// `--since`, `--start`, `--end`: clap shows this message with the flag name and the bad value.
pub fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|e| format!("expected a date as YYYY-MM-DD ({e})"))
}

fn credits(x: f64) -> String {
    format!("{x:.2}")
}

pub async fn models(
    db: &Database,
    warehouse: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let store = PipelineStore::new(db.clone());
    let rows = store
        .list_models(warehouse.map(str::trim))
        .await
        .context("listing model versions")?;
    if let (true, Some(w)) = (rows.is_empty(), warehouse) {
        anyhow::bail!(
            "no model versions for warehouse `{w}` (give WAREHOUSE or ACCOUNT.WAREHOUSE as listed by `snowpatrol models`)"
        );
    }
    print(json, &rows, || {
        if rows.is_empty() {
            return "no models yet: the train job registers one version per warehouse (`snowpatrol run train`)"
                .into();
        }
        crate::output::table(
            &[
                "account",
                "warehouse",
                "version",
                "kind",
                "aliases",
                "threshold",
                "training window",
                "run",
                "created",
            ],
            rows.iter()
                .map(|m| {
                    vec![
                        m.account_name.clone(),
                        m.warehouse_name.clone(),
                        m.version.to_string(),
                        m.model_kind.clone(),
                        m.aliases.clone(),
                        format!("{:.4}", m.threshold),
                        format!("{} .. {}", m.training_start, m.training_end),
                        m.training_run_id.map(|r| r.to_string()).unwrap_or_default(),
                        crate::output::time(Some(m.created_at)),
                    ]
                })
                .collect(),
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Columns of `anomalies --days --format csv`, stable for scripts (new columns are appended).
pub const ANOMALY_CSV_COLUMNS: [&str; 18] = [
    "anomaly_id",
    "account_name",
    "warehouse_name",
    "usage_date",
    "actual_credits",
    "expected_credits",
    "excess_credits",
    "score",
    "threshold",
    "model_version",
    "run_id",
    "incident_start",
    "detected_at",
    "acknowledged_at",
    "ack_reason",
    "explanation",
    "scored_at",
    "incident_id",
];

/// Columns of `anomalies --format csv` (incidents), stable for scripts.
pub const INCIDENT_CSV_COLUMNS: [&str; 16] = [
    "incident_id",
    "account_name",
    "warehouse_name",
    "start_day",
    "end_day",
    "days",
    "excess_credits",
    "excess_cost",
    "peak_score",
    "status",
    "ack_reason",
    "acknowledged_at",
    "acknowledged_by",
    "resolved_at",
    "created_at",
    "updated_at",
];

/// `snowpatrol anomalies`: a listing, or `ack`.
#[derive(clap::Args, Debug)]
pub struct AnomaliesArgs {
    #[command(subcommand)]
    pub command: Option<AnomaliesCommand>,
    #[command(flatten)]
    pub view: AnomaliesView,
}

/// What `snowpatrol anomalies` lists.
#[derive(clap::Args, Clone, Debug)]
pub struct AnomaliesView {
    /// Incidents ending (days) on or after this day (YYYY-MM-DD); default: 30 days ago.
    #[arg(long, value_name = "DATE", value_parser = parse_date)]
    pub since: Option<NaiveDate>,
    /// Only this warehouse: WAREHOUSE (every account) or ACCOUNT.WAREHOUSE.
    #[arg(long, value_name = "W")]
    pub warehouse: Option<String>,
    /// Only open incidents (neither acknowledged nor resolved); with --days, the days of open incidents.
    #[arg(long)]
    pub open: bool,
    /// One row per anomalous day instead of one per incident.
    #[arg(long)]
    pub days: bool,
    /// Output format (`--json` also selects json).
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
}

fn rfc3339(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.to_rfc3339()).unwrap_or_default()
}

/// `snowpatrol anomalies`: incidents (or their days) filtered by `view`, or `ack`.
pub async fn anomalies(
    db: &Database,
    command: Option<AnomaliesCommand>,
    view: AnomaliesView,
    acknowledged_by: &str,
    json: bool,
    configured_currency: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let store = PipelineStore::new(db.clone());
    // The contract currency of Snowflake's newest credit rate, else `[pipeline] currency`.
    let rated = store
        .latest_credit_rates(chrono::Utc::now().date_naive())
        .await
        .context("reading credit rates")?
        .into_iter()
        .next()
        .map(|r| r.currency);
    let currency = rated.as_deref().or(configured_currency);
    if let Some(AnomaliesCommand::Ack {
        id,
        reason,
        anomaly,
    }) = command
    {
        return ack(&store, id, reason, anomaly, acknowledged_by, json).await;
    }
    if let Some(AnomaliesCommand::Show { id }) = command {
        return show_incident(&store, id, json).await;
    }
    // A warehouse nobody meters is a typo, not "no incidents": the same rule as `runs --job` and `models`.
    if let Some(w) = view.warehouse.as_deref().map(str::trim) {
        require_metered_warehouse(&store, w).await?;
    }
    list_anomalies(&store, &view, json, currency).await?;
    Ok(ExitCode::SUCCESS)
}

/// `snowpatrol anomalies show ID`: the incident, its days and their root causes.
async fn show_incident(store: &PipelineStore, id: i64, json: bool) -> anyhow::Result<ExitCode> {
    let incident = store
        .incident(id)
        .await
        .context("reading the incident")?
        .with_context(|| {
            format!("no incident with id {id} (see the first column of `snowpatrol anomalies`)")
        })?;
    let days: Vec<_> = store
        .anomalies_since(incident.start_day, Some(&incident.key()))
        .await
        .context("reading the incident's days")?
        .into_iter()
        .filter(|a| a.incident_id == id)
        .collect();
    let causes = store
        .root_causes(Some(&incident.key()), incident.start_day, incident.end_day)
        .await
        .context("reading root causes")?;
    let out = json!({ "incident": incident, "days": days, "root_causes": causes });
    print(json, &out, || {
        let mut text = format!(
            "incident {id}: {}.{}, {} – {} ({} day(s)), +{:.2} credits{}, {}\n",
            incident.account_name,
            incident.warehouse_name,
            incident.start_day,
            incident.end_day,
            incident.days,
            incident.excess_credits,
            incident
                .excess_cost
                .map(|c| format!(" (cost {c:.2})"))
                .unwrap_or_default(),
            incident.status.as_str()
        );
        for d in &days {
            text.push_str(&format!(
                "\n{}: {:.2} credits, expected {:.2}, excess {:.2}\n  why: {}\n",
                d.usage_date, d.actual_credits, d.expected_credits, d.excess_credits, d.explanation
            ));
            match causes.iter().find(|c| c.usage_date == d.usage_date) {
                Some(c) => {
                    if !c.summary.is_empty() {
                        text.push_str(&format!("  root cause: {}\n", c.summary));
                    }
                    for line in c.detail.detail_lines() {
                        text.push_str(&format!("    {line}\n"));
                    }
                }
                None => text.push_str(
                    "  root cause: not looked up yet (predict's root_causes task does it)\n",
                ),
            }
        }
        text.trim_end().to_string()
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `snowpatrol anomalies ack ID`: acknowledges incident `id` (with `anomaly`, the incident of anomaly `id`)
/// and prints the incident.
async fn ack(
    store: &PipelineStore,
    id: i64,
    reason: AckReason,
    anomaly: bool,
    acknowledged_by: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let incident_id = acknowledge(store, id, reason, anomaly, acknowledged_by).await?;
    let incident = store
        .incident(incident_id)
        .await
        .context("reading the incident")?
        .with_context(|| format!("incident {incident_id} vanished"))?;
    tracing::info!(
        incident_id,
        reason = reason.stored().as_str(),
        "incident acknowledged"
    );
    let mut out = json!({
        "incident_id": incident_id, "acknowledged": true, "reason": reason.stored().as_str(),
        "incident": incident,
    });
    if anomaly {
        out["anomaly_id"] = json!(id);
    }
    print(json, &out, || {
        format!(
            "incident {incident_id} ({}.{}, {} .. {}, {} day(s)) acknowledged ({}); it will not be alerted again",
            incident.account_name,
            incident.warehouse_name,
            incident.start_day,
            incident.end_day,
            incident.days,
            reason.stored().as_str()
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Records the acknowledgement of incident `id`, or with `anomaly` of the incident of anomaly `id`; returns
/// the incident's id. An id that names nothing is an error that says where ids are listed.
async fn acknowledge(
    store: &PipelineStore,
    id: i64,
    reason: AckReason,
    anomaly: bool,
    acknowledged_by: &str,
) -> anyhow::Result<i64> {
    if anomaly {
        return store
            .ack_anomaly(id, reason.stored(), Some(acknowledged_by))
            .await
            .with_context(|| format!("acknowledging the incident of anomaly {id}"))?
            .with_context(|| {
                format!(
                    "no anomaly with id {id} (see the first column of `snowpatrol anomalies --days`)"
                )
            });
    }
    let found = store
        .ack_incident(id, reason.stored(), Some(acknowledged_by))
        .await
        .with_context(|| format!("acknowledging incident {id}"))?;
    if !found {
        anyhow::bail!(
            "no incident with id {id} (see the first column of `snowpatrol anomalies`; \
             an anomaly (day) id needs --anomaly)"
        );
    }
    Ok(id)
}

/// Fails unless warehouse `w` (WAREHOUSE or ACCOUNT.WAREHOUSE) is in the metering data.
async fn require_metered_warehouse(store: &PipelineStore, w: &str) -> anyhow::Result<()> {
    let known = store
        .warehouses(false)
        .await
        .context("listing warehouses")?;
    let matches = |k: &snowpatrol_detect::WarehouseKey| k.warehouse_name == w || k.to_string() == w;
    if !known.iter().any(matches) {
        anyhow::bail!(
            "no warehouse `{w}` in the metering data ({} warehouses; give WAREHOUSE or ACCOUNT.WAREHOUSE as \
             listed by `snowpatrol models`)",
            known.len()
        );
    }
    Ok(())
}

/// The listing of `snowpatrol anomalies`: the incidents, or with `--days` the anomalous days, `view` selects.
async fn list_anomalies(
    store: &PipelineStore,
    view: &AnomaliesView,
    json: bool,
    currency: Option<&str>,
) -> anyhow::Result<()> {
    let since = view
        .since
        .unwrap_or_else(|| chrono::Utc::now().date_naive() - chrono::Days::new(30));
    let filter = IncidentFilter {
        since: Some(since),
        warehouse: view.warehouse.as_deref().map(|w| w.trim().to_string()),
        statuses: if view.open {
            vec![IncidentStatus::Open]
        } else {
            vec![]
        },
        ..Default::default()
    };
    let format = if json { ListFormat::Json } else { view.format };
    let what = format!(
        "{}{} on or after {since}{}",
        if view.open { "open " } else { "" },
        if view.days {
            "anomalous days"
        } else {
            "incidents"
        },
        view.warehouse
            .as_deref()
            .map(|w| format!(" for warehouse `{w}`"))
            .unwrap_or_default()
    );
    if view.days {
        let rows = store
            .list_anomalies(&filter)
            .await
            .context("listing anomalies")?;
        print_list(&rows, format, &what)
    } else {
        let rows = store
            .list_incidents(&filter)
            .await
            .context("listing incidents")?;
        print_list(&rows, format, &what)?;
        // The cost column's currency, for people (CSV and JSON carry the numbers only).
        if format == ListFormat::Table
            && rows.iter().any(|r| r.excess_cost.is_some())
            && let Some(c) = currency
        {
            outln!("cost in {c}");
        }
        Ok(())
    }
}

/// A row `anomalies` lists: its CSV record (columns fixed for scripts) and its table row (for people).
trait Listed: serde::Serialize {
    const CSV_COLUMNS: &'static [&'static str];
    const TABLE_COLUMNS: &'static [&'static str];
    fn csv_record(&self) -> Vec<String>;
    fn table_row(&self) -> Vec<String>;
}

impl Listed for IncidentRow {
    const CSV_COLUMNS: &'static [&'static str] = &INCIDENT_CSV_COLUMNS;
    const TABLE_COLUMNS: &'static [&'static str] = &[
        "id",
        "account",
        "warehouse",
        "start",
        "end",
        "days",
        "excess credits",
        "cost",
        "status",
        "reason",
    ];
    fn csv_record(&self) -> Vec<String> {
        vec![
            self.incident_id.to_string(),
            self.account_name.clone(),
            self.warehouse_name.clone(),
            self.start_day.to_string(),
            self.end_day.to_string(),
            self.days.to_string(),
            self.excess_credits.to_string(),
            self.excess_cost.map(|c| c.to_string()).unwrap_or_default(),
            self.peak_score.to_string(),
            self.status.to_string(),
            self.ack_reason.map(|r| r.to_string()).unwrap_or_default(),
            rfc3339(self.acknowledged_at),
            self.acknowledged_by.clone().unwrap_or_default(),
            rfc3339(self.resolved_at),
            self.created_at.to_rfc3339(),
            self.updated_at.to_rfc3339(),
        ]
    }
    fn table_row(&self) -> Vec<String> {
        vec![
            self.incident_id.to_string(),
            self.account_name.clone(),
            self.warehouse_name.clone(),
            self.start_day.to_string(),
            self.end_day.to_string(),
            self.days.to_string(),
            credits(self.excess_credits),
            self.excess_cost.map(credits).unwrap_or_default(),
            self.status.to_string(),
            self.ack_reason.map(|r| r.to_string()).unwrap_or_default(),
        ]
    }
}

impl Listed for AnomalyRow {
    const CSV_COLUMNS: &'static [&'static str] = &ANOMALY_CSV_COLUMNS;
    const TABLE_COLUMNS: &'static [&'static str] = &[
        "id",
        "account",
        "warehouse",
        "date",
        "actual",
        "expected",
        "excess",
        "score",
        "threshold",
        "model",
        "run",
        "incident",
        "ack",
    ];
    fn csv_record(&self) -> Vec<String> {
        vec![
            self.anomaly_id.to_string(),
            self.account_name.clone(),
            self.warehouse_name.clone(),
            self.usage_date.to_string(),
            self.actual_credits.to_string(),
            self.expected_credits.to_string(),
            self.excess_credits.to_string(),
            self.score.to_string(),
            self.threshold.to_string(),
            self.model_version.to_string(),
            self.run_id.to_string(),
            self.incident_start.to_string(),
            self.detected_at.to_rfc3339(),
            rfc3339(self.acknowledged_at),
            self.ack_reason.map(|r| r.to_string()).unwrap_or_default(),
            self.explanation.clone(),
            self.scored_at.to_rfc3339(),
            self.incident_id.to_string(),
        ]
    }
    fn table_row(&self) -> Vec<String> {
        vec![
            self.anomaly_id.to_string(),
            self.account_name.clone(),
            self.warehouse_name.clone(),
            self.usage_date.to_string(),
            credits(self.actual_credits),
            credits(self.expected_credits),
            credits(self.excess_credits),
            format!("{:.3}", self.score),
            format!("{:.3}", self.threshold),
            format!("v{}", self.model_version),
            self.run_id.to_string(),
            self.incident_id.to_string(),
            self.ack_reason.map(|r| r.to_string()).unwrap_or_default(),
        ]
    }
}

/// Prints `rows` as JSON, CSV (for scripts) or a table (`no {what}` when there are none).
fn print_list<T: Listed>(rows: &[T], format: ListFormat, what: &str) -> anyhow::Result<()> {
    match format {
        ListFormat::Json => outln!("{}", crate::output::json(&rows)?),
        ListFormat::Csv => {
            let mut w = csv::Writer::from_writer(std::io::stdout().lock());
            w.write_record(T::CSV_COLUMNS)
                .map_err(crate::output::csv_error)?;
            for r in rows {
                w.write_record(r.csv_record())
                    .map_err(crate::output::csv_error)?;
            }
            w.flush().map_err(crate::output::stdout_error)?;
        }
        ListFormat::Table if rows.is_empty() => outln!("no {what}"),
        ListFormat::Table => outln!(
            "{}",
            crate::output::table(T::TABLE_COLUMNS, rows.iter().map(T::table_row).collect())
        ),
    }
    Ok(())
}

pub async fn alerts(
    db: &Database,
    pending: bool,
    limit: i64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if limit < 1 {
        anyhow::bail!("--limit must be at least 1, got {limit}");
    }
    let store = PipelineStore::new(db.clone());
    let rows = store
        .list_alerts(pending, limit)
        .await
        .context("listing the alert outbox")?;
    print(json, &rows, || {
        if rows.is_empty() {
            return if pending {
                "no alert is waiting to be delivered".into()
            } else {
                "the alert outbox is empty".into()
            };
        }
        crate::output::table(
            &[
                "id",
                "kind",
                "dedupe key",
                "channel",
                "state",
                "attempts",
                "next attempt",
                "last error",
                "sent",
            ],
            rows.iter()
                .map(|a| {
                    vec![
                        a.alert_id.to_string(),
                        a.kind.to_string(),
                        crate::output::short(Some(&a.dedupe_key), 50),
                        a.channel.clone(),
                        a.state.to_string(),
                        a.attempts.to_string(),
                        crate::output::time(a.next_attempt_at),
                        crate::output::short(a.last_error.as_deref(), 60),
                        crate::output::time(a.sent_at),
                    ]
                })
                .collect(),
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `snowpatrol explain-alert ID`: which channels an incident is (or would be) announced in, by which route, and
/// every route's verdict, from the configured `[pipeline.alerts]`; and which alert announced it, if one did.
pub async fn explain_alert(
    db: &Database,
    config: &PipelineConfig,
    incident_id: i64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let store = PipelineStore::new(db.clone());
    let incident = store
        .incident(incident_id)
        .await
        .context("reading the incident")?
        .with_context(|| {
            format!(
                "no incident with id {incident_id} (see the first column of `snowpatrol anomalies`)"
            )
        })?;
    let decision = route_incident(&store, config, &incident).await?;
    let announced = announcing_alert(&store, incident.alert_id).await?;
    let explanation = AlertExplanation {
        incident_id,
        incident: &incident,
        announced: announced.as_ref(),
        decision: &decision,
    };
    print(json, &explanation.json(), || explanation.text())?;
    Ok(ExitCode::SUCCESS)
}

/// Where the configured `[pipeline.alerts]` send `incident` now, judged with what the model expected on the
/// incident's days.
async fn route_incident(
    store: &PipelineStore,
    config: &PipelineConfig,
    incident: &IncidentRow,
) -> anyhow::Result<RoutingDecision> {
    let expected: f64 = store
        .anomalies_since(incident.start_day, Some(&incident.key()))
        .await
        .context("reading the incident's days")?
        .into_iter()
        .filter(|a| a.incident_id == incident.incident_id)
        .map(|a| a.expected_credits)
        .sum();
    let default_channel = config
        .slack
        .as_ref()
        .map_or("file".to_string(), |s| s.channel.clone());
    let tags = store
        .warehouse_tags()
        .await
        .context("reading warehouse tags")?
        .remove(&incident.key())
        .unwrap_or_default();
    Ok(config.alerts.decide(
        &IncidentFacts {
            account_name: incident.account_name.clone(),
            warehouse_name: incident.warehouse_name.clone(),
            first_day: incident.start_day,
            excess_credits: incident.excess_credits,
            expected_credits: (expected > 0.0).then_some(expected),
            excess_cost: incident.excess_cost,
            tags,
        },
        config.price_per_credit,
        &default_channel,
    ))
}

/// The outbox row of the alert that announced an incident (its `alert_id`), if one did.
async fn announcing_alert(
    store: &PipelineStore,
    alert_id: Option<i64>,
) -> anyhow::Result<Option<AlertRow>> {
    let Some(id) = alert_id else {
        return Ok(None);
    };
    Ok(store
        .list_alerts(false, i64::MAX)
        .await
        .context("reading the alert outbox")?
        .into_iter()
        .find(|a| a.alert_id == id))
}

/// A route's verdict as its JSON name and the reason it gives (empty for `announced`).
fn route_verdict(v: &RouteVerdict) -> (&'static str, String) {
    match v {
        RouteVerdict::Announced => ("announced", String::new()),
        RouteVerdict::NotCovered(w) => ("not_covered", w.clone()),
        RouteVerdict::BelowMinimum(w) => ("below_minimum", w.clone()),
        RouteVerdict::Muted(w) => ("muted", w.clone()),
    }
}

/// What `explain-alert` prints about one incident.
struct AlertExplanation<'a> {
    incident_id: i64,
    incident: &'a IncidentRow,
    /// The alert that announced it, if one did.
    announced: Option<&'a AlertRow>,
    /// Where the routes send it now.
    decision: &'a RoutingDecision,
}

impl AlertExplanation<'_> {
    fn json(&self) -> serde_json::Value {
        let (incident, decision) = (self.incident, self.decision);
        json!({
            "incident_id": self.incident_id,
            "warehouse": format!("{}.{}", incident.account_name, incident.warehouse_name),
            "status": incident.status.as_str(),
            "announced_by": self.announced.map(|a| json!({
                "alert_id": a.alert_id, "dedupe_key": a.dedupe_key, "channel": a.channel, "state": a.state.as_str(),
            })),
            "channels": decision.channels.iter().map(|(r, c)| json!({ "route": r, "channel": c })).collect::<Vec<_>>(),
            "routes": decision.verdicts.iter().map(|(r, v)| {
                let (k, why) = route_verdict(v);
                json!({ "route": r, "verdict": k, "why": why })
            }).collect::<Vec<_>>(),
            "held_back": decision.held_back(),
            "ignored": decision.ignored,
        })
    }

    fn text(&self) -> String {
        let incident = self.incident;
        let mut out = format!(
            "incident {}: {}.{}, {} – {}, +{:.2} credits, {}\n",
            self.incident_id,
            incident.account_name,
            incident.warehouse_name,
            incident.start_day,
            incident.end_day,
            incident.excess_credits,
            incident.status.as_str()
        );
        match self.announced {
            Some(a) => out.push_str(&format!(
                "announced by alert {} ({}) in {}, {}\n",
                a.alert_id, a.dedupe_key, a.channel, a.state
            )),
            None if incident.status == IncidentStatus::Acknowledged => {
                out.push_str("not announced: acknowledged before any alert\n")
            }
            None => out.push_str("not announced yet\n"),
        }
        self.push_routes(&mut out);
        out.trim_end().to_string()
    }

    /// The text's `routes now:` lines (where the incident goes now) and every route's verdict.
    fn push_routes(&self, out: &mut String) {
        let decision = self.decision;
        if decision.ignored {
            out.push_str(
                "routes now: no channel (ignored by a [[pipeline.alerts.overrides]] entry)\n",
            );
        } else if decision.channels.is_empty() {
            out.push_str("routes now: no channel");
            out.push_str(if decision.held_back() {
                " (held back by a minimum or a mute window; considered again on every predict run)\n"
            } else {
                " (no route covers it and [pipeline.alerts] unrouted = \"drop\")\n"
            });
        } else {
            for (route, channel) in &decision.channels {
                out.push_str(&format!("routes now: {channel} (route {route})\n"));
            }
        }
        if decision.verdicts.is_empty() && !decision.ignored {
            out.push_str("no [[pipeline.alerts.routes]] configured: everything goes to the default channel\n");
        }
        for (route, v) in &decision.verdicts {
            let (k, why) = route_verdict(v);
            out.push_str(&format!(
                "  route {route}: {}{}\n",
                k.replace('_', " "),
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {why}")
                }
            ));
        }
    }
}
