//! The predict run's `report` task: the Markdown report and charts of the incidents nobody acknowledged, and
//! one digest per channel for the incidents no alert announced yet.
//!
//! In steps, each its own function: read the scored window ([`Window`]), decide where every unannounced incident
//! goes ([`Routing`]), build the report's sections, render and write the files, record the report, and queue
//! the digests. Rendering charts and writing files is CPU and file work, so it runs on the task's CPU pool
//! ([`TaskContext::run_cpu`]), never on the runtime's threads.

use crate::Pipeline;
use crate::jobs::{history_points, scored_window, store_err};
use crate::root_causes::Prices;
use crate::routing::{IncidentFacts, RouteVerdict, RoutingDecision};
use crate::store::{
    AnomalyRow, DigestReply, IncidentFilter, IncidentRow, IncidentStatus, QueuedDigest,
    RootCauseRow,
};
use chrono::{NaiveDate, Utc};
use futures::StreamExt;
use serde::Serialize;
use snowpatrol_alert::{
    AnomalyDay, Digest, DigestIncident, HeldBack, HourlyPanel, Report, SlackMessage,
    WarehouseSection,
};
use snowpatrol_detect::WarehouseKey;
use snowpatrol_engine::{TaskContext, TaskError, TaskOutput};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::info;

/// Size of the charts in the report and in Slack, in pixels.
const CHART_SIZE: (u32, u32) = (900, 420);

pub(crate) async fn report(p: Arc<Pipeline>, ctx: TaskContext) -> Result<TaskOutput, TaskError> {
    let started = std::time::Instant::now();
    let (since, end) = scored_window(&p).await?;
    let window = Window::read(&p, since, end).await?;
    let prices = Prices::read(&p, end).await?;
    let tags = p
        .store
        .warehouse_tags()
        .await
        .map_err(store_err("reading warehouse tags"))?;
    let routing = Routing::decide(&p, &window, &tags);
    let acknowledged = acknowledged_incidents(&p, since).await?;
    let t_read = started.elapsed();
    let sections = sections(&p, &ctx, &window, &prices).await?;
    let t_sections = started.elapsed();
    let report = Report {
        run_id: ctx.run_id.to_string(),
        generated_at: Utc::now(),
        price_per_credit: p.config.price_per_credit,
        currency: prices.currency.clone(),
        sections,
        acknowledged_incidents: acknowledged,
        held_back: routing.held_back_notes(&window.incidents),
    };
    let total: usize = report.sections.iter().map(|s| s.anomalies.len()).sum();
    let path = save_report(&p, &ctx, &report, total).await?;
    let t_files = started.elapsed();
    let plan = DigestPlan {
        run_id: ctx.run_id,
        price_per_credit: p.config.price_per_credit,
        currency: prices.currency.clone(),
        default_channel: p.default_channel(),
        feedback: p.slack().is_some() && p.slack_signing_secret().is_some(),
        report_path: path.display().to_string(),
        acknowledged,
    };
    let QueuedDigests {
        new_alerts,
        announced,
        already_alerted,
        held_back,
    } = queue_digests(&p, &ctx, plan, &routing, &window, report).await?;
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    let output = ReportOutput {
        timings_ms: ReportTimings {
            read: ms(t_read),
            sections: ms(t_sections - t_read),
            files: ms(t_files - t_sections),
            digests: ms(started.elapsed() - t_files),
        },
        report: path.display().to_string(),
        anomalies: total,
        new_alerts,
        announced_incidents: announced,
        already_alerted,
        acknowledged,
        held_back,
    };
    info!(report = %output.report, anomalies = total, new_alerts, announced, already_alerted, acknowledged, held_back, "report written");
    Ok(TaskOutput::empty().with_data_of(&output))
}

/// How many acknowledged incidents reach into the scored window (end on `since` or later).
async fn acknowledged_incidents(p: &Pipeline, since: NaiveDate) -> Result<usize, TaskError> {
    Ok(p.store
        .list_incidents(&IncidentFilter {
            since: Some(since),
            statuses: vec![IncidentStatus::Acknowledged],
            ..Default::default()
        })
        .await
        .map_err(store_err("reading incidents"))?
        .len())
}

/// Writes the report's files (on the task's CPU pool) into the run's directory and records the report with
/// its `total` anomalous days; returns the Markdown's path.
async fn save_report(
    p: &Pipeline,
    ctx: &TaskContext,
    report: &Report,
    total: usize,
) -> Result<PathBuf, TaskError> {
    let dir = p
        .data_dir
        .join("reports")
        .join(format!("run-{}", ctx.run_id));
    let (markdown, path) = {
        let report = report.clone();
        ctx.run_cpu(move || write_report_files(&dir, &report))
            .await??
    };
    p.store
        .save_report(
            ctx.run_id,
            &markdown,
            &path.display().to_string(),
            total as i32,
            Some(&ctx.fence),
        )
        .await
        .map_err(store_err("saving report"))?;
    snowpatrol_store::failpoint("predict.report.after_save").map_err(store_err("failpoint"))?;
    Ok(path)
}

/// What [`queue_digests`] did, for the report task's output.
struct QueuedDigests {
    /// Digests queued by this try (0: none to send, or an earlier try queued them).
    new_alerts: usize,
    /// Incidents the digests announce.
    announced: usize,
    /// Incidents of the window an earlier alert announced.
    already_alerted: usize,
    /// Incidents held back (below a minimum, muted) or ignored.
    held_back: usize,
}

/// Builds one digest per channel for the window's incidents no alert announced yet (on the task's CPU pool)
/// and queues them in the alert outbox.
async fn queue_digests(
    p: &Pipeline,
    ctx: &TaskContext,
    plan: DigestPlan,
    routing: &Routing,
    window: &Window,
    report: Report,
) -> Result<QueuedDigests, TaskError> {
    let new: Vec<IncidentRow> = window
        .incidents
        .iter()
        .filter(|i| i.alert_id.is_none())
        .cloned()
        .collect();
    let already_alerted = window.incidents.len() - new.len();
    let by_channel = routing.by_channel(&new, window, &report);
    let announced = by_channel
        .values()
        .flatten()
        .map(|i| i.incident_id)
        .collect::<BTreeSet<_>>()
        .len();
    let held_back = report.held_back.len();
    let queued = ctx
        .run_cpu(move || plan.digests(by_channel, &report, already_alerted, held_back))
        .await??;
    // Each incident records the alert that announced it in the same transaction as the digest, so reruns,
    // retrains and grown incidents are never repeated. Only queued here: the outbox sender delivers, so the
    // run never waits for Slack.
    let new_alerts = if queued.is_empty() {
        0
    } else {
        p.enqueue_digests(ctx.run_id, &queued, &ctx.fence)
            .await
            .map_err(|e| TaskError::retryable(format!("alert outbox: {e}")))?
    };
    Ok(QueuedDigests {
        new_alerts,
        announced,
        already_alerted,
        held_back,
    })
}

/// What the report task did (its output data).
#[derive(Debug, Serialize)]
struct ReportOutput {
    report: String,
    anomalies: usize,
    new_alerts: usize,
    announced_incidents: usize,
    already_alerted: usize,
    acknowledged: usize,
    held_back: usize,
    timings_ms: ReportTimings,
}

/// Where the report task's time went: reading the window, the sections' histories, rendering and writing the
/// files, building and queueing the digests.
#[derive(Debug, Serialize)]
struct ReportTimings {
    read: u64,
    sections: u64,
    files: u64,
    digests: u64,
}

/// The scored window: the incidents nobody acknowledged (open, or resolved meanwhile) and their days in it, one
/// row per day whatever model version scored it.
struct Window {
    incidents: Vec<IncidentRow>,
    /// The days of `incidents`, by warehouse.
    days: BTreeMap<WarehouseKey, Vec<AnomalyRow>>,
    /// Incident id -> its days in the window, per warehouse.
    incidents_by_key: BTreeMap<WarehouseKey, BTreeMap<i64, BTreeSet<NaiveDate>>>,
    /// Incident id -> (expected credits summed over its days in the window, how many days).
    expected: BTreeMap<i64, (f64, i32)>,
    /// Root causes of the window's days, by warehouse and day.
    causes: BTreeMap<WarehouseKey, BTreeMap<NaiveDate, RootCauseRow>>,
}

impl Window {
    async fn read(p: &Pipeline, since: NaiveDate, end: NaiveDate) -> Result<Self, TaskError> {
        let filter = IncidentFilter::unacknowledged_since(since);
        let incidents = p
            .store
            .list_incidents(&filter)
            .await
            .map_err(store_err("reading incidents"))?;
        let rows = p
            .store
            .list_anomalies(&filter)
            .await
            .map_err(store_err("reading anomalies"))?;
        let listed: BTreeSet<i64> = incidents.iter().map(|i| i.incident_id).collect();
        let mut causes: BTreeMap<WarehouseKey, BTreeMap<NaiveDate, RootCauseRow>> = BTreeMap::new();
        for c in p
            .store
            .root_causes(None, since, end)
            .await
            .map_err(store_err("reading root causes"))?
        {
            causes
                .entry(WarehouseKey::new(&c.account_name, &c.warehouse_name))
                .or_default()
                .insert(c.usage_date, c);
        }
        let mut window = Window {
            incidents,
            days: BTreeMap::new(),
            incidents_by_key: BTreeMap::new(),
            expected: BTreeMap::new(),
            causes,
        };
        for r in rows.into_iter().filter(|r| listed.contains(&r.incident_id)) {
            let e = window.expected.entry(r.incident_id).or_default();
            e.0 += r.expected_credits;
            e.1 += 1;
            let key = WarehouseKey::new(&r.account_name, &r.warehouse_name);
            window
                .incidents_by_key
                .entry(key.clone())
                .or_default()
                .entry(r.incident_id)
                .or_default()
                .insert(r.usage_date);
            window.days.entry(key).or_default().push(r);
        }
        Ok(window)
    }

    /// What the model expected on an incident's days, when all of them are in the scored window (else no
    /// percent is shown or applied).
    fn expected_credits(&self, i: &IncidentRow) -> Option<f64> {
        let (e, n) = self
            .expected
            .get(&i.incident_id)
            .copied()
            .unwrap_or_default();
        (n == i.days && e > 0.0).then_some(e)
    }
}

/// One section per warehouse with incidents in the window: its days and recent history for the chart.
async fn sections(
    p: &Pipeline,
    ctx: &TaskContext,
    window: &Window,
    prices: &Prices,
) -> Result<Vec<WarehouseSection>, TaskError> {
    // Each section reads its warehouse's history and scores it with the stored model: a few at a time, so 300
    // warehouses do not wait on 300 sequential round trips.
    let history_days = p.config.predict.history_days;
    let keys: Vec<WarehouseKey> = window.days.keys().cloned().collect();
    let histories: Vec<Vec<snowpatrol_alert::DailyPoint>> = futures::stream::iter(
        keys.into_iter()
            .map(|key| async move { history_points(p, ctx, &key, history_days).await }),
    )
    .buffered(8)
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<Result<_, _>>()?;
    let mut sections = Vec::with_capacity(window.days.len());
    for ((key, list), history) in window.days.iter().zip(histories) {
        let version = list.iter().map(|a| a.model_version).max().unwrap_or(0);
        let causes = window.causes.get(key);
        let largest = list
            .iter()
            .max_by(|a, b| a.excess_credits.total_cmp(&b.excess_credits));
        let hourly = largest.and_then(|a| {
            let shape = causes?.get(&a.usage_date)?.detail.hours.clone()?;
            Some(HourlyPanel {
                date: a.usage_date,
                shape,
            })
        });
        sections.push(WarehouseSection {
            account_name: key.account_name.clone(),
            warehouse_name: key.warehouse_name.clone(),
            model_version: version as i64,
            anomalies: list.iter().map(AnomalyRow::day).collect(),
            history,
            root_causes: causes
                .map(|c| c.iter().map(|(d, r)| (*d, r.summary.clone())).collect())
                .unwrap_or_default(),
            hourly,
            price_per_credit: prices
                .price(&key.account_name)
                .filter(|price| Some(*price) != p.config.price_per_credit),
        });
    }
    Ok(sections)
}

/// Where each incident no alert announced yet goes ([pipeline.alerts]), decided once: the report says what is
/// held back and why, the digests go where the decisions say.
struct Routing {
    decisions: BTreeMap<i64, RoutingDecision>,
}

impl Routing {
    fn decide(
        p: &Pipeline,
        window: &Window,
        tags: &BTreeMap<WarehouseKey, BTreeMap<String, String>>,
    ) -> Self {
        let default_channel = p.default_channel();
        let mut routing = Routing {
            decisions: BTreeMap::new(),
        };
        for i in window.incidents.iter().filter(|i| i.alert_id.is_none()) {
            let facts = IncidentFacts {
                account_name: i.account_name.clone(),
                warehouse_name: i.warehouse_name.clone(),
                first_day: i.start_day,
                excess_credits: i.excess_credits,
                expected_credits: window.expected_credits(i),
                excess_cost: i.excess_cost,
                tags: tags.get(&i.key()).cloned().unwrap_or_default(),
            };
            let d = p
                .config
                .alerts
                .decide(&facts, p.config.price_per_credit, &default_channel);
            routing.decisions.insert(i.incident_id, d);
        }
        routing
    }

    /// The report's notes on incidents held back (below a minimum, muted) or ignored by an override.
    fn held_back_notes(&self, incidents: &[IncidentRow]) -> Vec<HeldBack> {
        incidents
            .iter()
            .filter_map(|i| {
                let d = self
                    .decisions
                    .get(&i.incident_id)
                    .filter(|d| d.held_back() || d.ignored)?;
                let ignored = d
                    .ignored
                    .then(|| "ignored by a [[pipeline.alerts.overrides]] entry".to_string());
                let verdicts = d.verdicts.iter().filter_map(|(route, v)| match v {
                    RouteVerdict::BelowMinimum(w) | RouteVerdict::Muted(w) => {
                        Some(format!("route {route}: {w}"))
                    }
                    _ => None,
                });
                Some(HeldBack {
                    warehouse: format!("{}.{}", i.account_name, i.warehouse_name),
                    first_day: i.start_day,
                    excess_credits: i.excess_credits,
                    reasons: ignored.into_iter().chain(verdicts).collect(),
                })
            })
            .collect()
    }

    /// The new incidents each channel announces, with one line of why (the explanation of the largest day).
    /// Held back incidents stay unannounced and are considered again next run.
    fn by_channel(
        &self,
        new: &[IncidentRow],
        window: &Window,
        report: &Report,
    ) -> BTreeMap<String, Vec<DigestIncident>> {
        let days = days_by_incident(&window.incidents_by_key, report);
        let mut by_channel: BTreeMap<String, Vec<DigestIncident>> = BTreeMap::new();
        for i in new {
            let Some(decision) = self.decisions.get(&i.incident_id) else {
                continue;
            };
            let largest = days.get(&i.incident_id).and_then(|d| {
                d.iter()
                    .max_by(|a, b| a.excess_credits.total_cmp(&b.excess_credits))
            });
            let incident = DigestIncident {
                incident_id: i.incident_id,
                account_name: i.account_name.clone(),
                warehouse_name: i.warehouse_name.clone(),
                first_day: i.start_day,
                last_day: i.end_day,
                days: i.days.max(0) as u32,
                excess_credits: i.excess_credits,
                expected_credits: window.expected_credits(i),
                why: largest.map(|a| a.explanation.clone()).unwrap_or_default(),
                excess_cost: i.excess_cost,
                root_cause: largest.and_then(|a| {
                    window
                        .causes
                        .get(&i.key())
                        .and_then(|c| c.get(&a.date))
                        .map(|c| c.summary.clone())
                        .filter(|c| !c.is_empty())
                }),
            };
            for (_, channel) in &decision.channels {
                by_channel
                    .entry(channel.clone())
                    .or_default()
                    .push(incident.clone());
            }
        }
        by_channel
    }
}

/// Each incident's days in the report's sections.
fn days_by_incident<'r>(
    incidents_by_key: &BTreeMap<WarehouseKey, BTreeMap<i64, BTreeSet<NaiveDate>>>,
    report: &'r Report,
) -> BTreeMap<i64, Vec<&'r AnomalyDay>> {
    let mut m: BTreeMap<i64, Vec<&AnomalyDay>> = BTreeMap::new();
    for s in &report.sections {
        let key = WarehouseKey::new(&s.account_name, &s.warehouse_name);
        let Some(ids) = incidents_by_key.get(&key) else {
            continue;
        };
        for (id, days) in ids {
            m.entry(*id)
                .or_default()
                .extend(s.anomalies.iter().filter(|a| days.contains(&a.date)));
        }
    }
    m
}

/// Renders the Markdown report and one chart per section into `dir`; returns the Markdown and its path.
fn write_report_files(dir: &Path, report: &Report) -> Result<(String, PathBuf), TaskError> {
    let write_err = |path: &Path, e: std::io::Error| {
        TaskError::retryable(format!("cannot write {}: {e}", path.display()))
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| TaskError::retryable(format!("cannot create {}: {e}", dir.display())))?;
    // Charts are drawn in parallel on the task's CPU pool (this runs inside it), then written.
    use rayon::prelude::*;
    let charts: Vec<(PathBuf, Vec<u8>)> = report
        .sections
        .par_iter()
        .map(|s| {
            snowpatrol_alert::render_chart_png(s, CHART_SIZE.0, CHART_SIZE.1)
                .map(|png| (dir.join(snowpatrol_alert::chart_file_name(s)), png))
                .map_err(|e| TaskError::permanent(format!("chart: {e}")))
        })
        .collect::<Result<_, _>>()?;
    for (path, png) in charts {
        std::fs::write(&path, png).map_err(|e| write_err(&path, e))?;
    }
    let markdown = snowpatrol_alert::render_markdown(report);
    let path = dir.join("report.md");
    std::fs::write(&path, &markdown).map_err(|e| write_err(&path, e))?;
    Ok((markdown, path))
}

/// What every digest of a run shares.
struct DigestPlan {
    run_id: i64,
    price_per_credit: Option<f64>,
    currency: Option<String>,
    default_channel: String,
    /// Acknowledgement buttons (Slack with a signing secret to verify the clicks).
    feedback: bool,
    report_path: String,
    acknowledged: usize,
}

impl DigestPlan {
    /// One digest per channel, with the charts of its largest incidents as thread replies.
    fn digests(
        &self,
        by_channel: BTreeMap<String, Vec<DigestIncident>>,
        report: &Report,
        already_announced: usize,
        held_back: usize,
    ) -> Result<Vec<QueuedDigest>, TaskError> {
        let mut queued = Vec::new();
        for (channel, incidents) in by_channel {
            let digest = Digest {
                run_id: self.run_id.to_string(),
                generated_at: report.generated_at,
                price_per_credit: self.price_per_credit,
                currency: self.currency.clone(),
                incidents,
                already_announced,
                acknowledged: self.acknowledged,
                held_back,
                report_path: Some(self.report_path.clone()),
                feedback: self.feedback,
            };
            let Some(msg) = snowpatrol_alert::digest_message(&digest) else {
                continue;
            };
            let key = if channel == self.default_channel {
                format!("digest:{}", self.run_id)
            } else {
                format!("digest:{}:{channel}", self.run_id)
            };
            let replies = self.chart_replies(&digest, report, &key)?;
            queued.push(QueuedDigest {
                dedupe_key: key,
                channel,
                message: serde_json::to_value(&msg)
                    .map_err(|e| TaskError::permanent(format!("digest: {e}")))?,
                incident_ids: digest.incidents.iter().map(|i| i.incident_id).collect(),
                replies,
            });
        }
        Ok(queued)
    }

    /// The largest incidents' charts, each with its full reason, for the digest's thread. A chart that cannot
    /// be drawn costs its reply, never the digest.
    fn chart_replies(
        &self,
        digest: &Digest,
        report: &Report,
        key: &str,
    ) -> Result<Vec<DigestReply>, TaskError> {
        let mut replies = Vec::new();
        for i in snowpatrol_alert::chart_reply_incidents(digest) {
            let Some(section) = report
                .sections
                .iter()
                .find(|s| s.account_name == i.account_name && s.warehouse_name == i.warehouse_name)
            else {
                continue;
            };
            let one = WarehouseSection {
                anomalies: section
                    .anomalies
                    .iter()
                    .filter(|a| a.date >= i.first_day && a.date <= i.last_day)
                    .cloned()
                    .collect(),
                hourly: section
                    .hourly
                    .clone()
                    .filter(|h| h.date >= i.first_day && h.date <= i.last_day),
                ..section.clone()
            };
            let png = match snowpatrol_alert::render_chart_png(&one, CHART_SIZE.0, CHART_SIZE.1) {
                Ok(png) => png,
                Err(e) => {
                    tracing::warn!(incident_id = i.incident_id, error = %e, "chart not drawn; no reply for it");
                    continue;
                }
            };
            let text = snowpatrol_alert::reply_text(i, digest);
            replies.push(DigestReply {
                dedupe_key: format!("{key}:chart:{}", i.incident_id),
                message: serde_json::to_value(SlackMessage {
                    text,
                    blocks: Vec::new(),
                })
                .map_err(|e| TaskError::permanent(format!("reply: {e}")))?,
                attachment: Some((snowpatrol_alert::chart_file_name(&one), png)),
            });
        }
        Ok(replies)
    }
}
