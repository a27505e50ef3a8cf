//! Predict's `root_causes` task and the price of a credit.
//!
//! `root_causes` runs after scoring and before the report: for the anomalous days of the scored window that have
//! no root cause yet (the largest by excess first, at most `[pipeline.root_cause] max_days`), it computes the
//! hourly shape of the day from the loaded metering and, with a Snowflake source, asks Snowflake's
//! ACCOUNT_USAGE views who and what used the credits (one batched statement per view for all the days), reads
//! the warehouses' object tags for routing, and stores both, fenced by the task's lease. A view the role may
//! not read is recorded on each day as a line naming the grant; only a network error fails the task (it is
//! retried), and the report runs either way (its trigger rule is `all_done`).

use crate::jobs::store_err;
use crate::store::{IncidentFilter, NewRootCause, day_start};
use crate::{CreditPrices, Pipeline};
use chrono::{Days, NaiveDate, Timelike};
use serde::Serialize;
use snowpatrol_detect::WarehouseKey;
use snowpatrol_detect::root_cause::{DayFigures, HourlyShape, RootCause, WarehouseDay};
use snowpatrol_engine::{TaskContext, TaskError, TaskOutput};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tracing::{info, warn};

/// What the `root_causes` task did (its output data).
#[derive(Debug, Default, Serialize)]
struct RootCauseOutput {
    /// Anomalous days in the window without a root cause before this run.
    missing: usize,
    /// Days looked up (at most `max_days`).
    looked_up: usize,
    /// Days whose Snowflake lookup found attribution (queries) data.
    with_queries: usize,
    /// Warehouses whose tags were read.
    tagged_warehouses: usize,
    /// Distinct reasons something could not be looked up (grants), for the run's output.
    unavailable: Vec<String>,
}

pub(crate) async fn root_causes(
    p: Arc<Pipeline>,
    ctx: TaskContext,
) -> Result<TaskOutput, TaskError> {
    let (since, end) = crate::jobs::scored_window(&p).await?;
    let anomalies = p
        .store
        .list_anomalies(&IncidentFilter::unacknowledged_since(since))
        .await
        .map_err(store_err("reading anomalies"))?;
    let known: BTreeSet<(String, String, NaiveDate)> = p
        .store
        .root_causes(None, since, end)
        .await
        .map_err(store_err("reading root causes"))?
        .into_iter()
        .map(|r| (r.account_name, r.warehouse_name, r.usage_date))
        .collect();
    let mut wanted: Vec<(WarehouseDay, DayFigures)> = anomalies
        .iter()
        .filter(|a| {
            !known.contains(&(
                a.account_name.clone(),
                a.warehouse_name.clone(),
                a.usage_date,
            ))
        })
        .map(|a| {
            (
                WarehouseDay {
                    key: WarehouseKey::new(&a.account_name, &a.warehouse_name),
                    day: a.usage_date,
                },
                DayFigures {
                    actual_credits: a.actual_credits,
                    excess_credits: a.excess_credits,
                },
            )
        })
        .collect();
    let mut out = RootCauseOutput {
        missing: wanted.len(),
        ..Default::default()
    };
    wanted.sort_by(|a, b| b.1.excess_credits.total_cmp(&a.1.excess_credits));
    wanted.truncate(p.config.root_cause.max_days);
    out.looked_up = wanted.len();
    if wanted.is_empty() {
        return Ok(TaskOutput::empty().with_data_of(&out));
    }
    let days: Vec<WarehouseDay> = wanted.iter().map(|(d, _)| d.clone()).collect();
    let mut causes = snowflake_findings(&p, &days, &ctx, &mut out).await?;
    for (d, shape) in hourly_shapes(&p, &days).await? {
        causes.entry(d).or_default().hours = Some(shape);
    }
    let rows: Vec<NewRootCause> = wanted
        .iter()
        .map(|(d, figures)| {
            let cause = causes.remove(d).unwrap_or_default();
            if cause.attribution.is_some() {
                out.with_queries += 1;
            }
            for u in &cause.unavailable {
                if !out.unavailable.contains(u) {
                    out.unavailable.push(u.clone());
                }
            }
            NewRootCause {
                day: d.clone(),
                summary: cause.summary(*figures, d.day),
                cause,
            }
        })
        .collect();
    p.store
        .save_root_causes(&rows, Some(ctx.run_id), Some(&ctx.fence))
        .await
        .map_err(store_err("saving root causes"))?;
    info!(
        looked_up = out.looked_up,
        with_queries = out.with_queries,
        "root causes recorded"
    );
    Ok(TaskOutput::empty().with_data_of(&out))
}

/// What Snowflake's views say about `days`, and the warehouses' tags (stored right away); empty without a
/// Snowflake source or with `[pipeline.root_cause] snowflake = false`.
async fn snowflake_findings(
    p: &Pipeline,
    days: &[WarehouseDay],
    ctx: &TaskContext,
    out: &mut RootCauseOutput,
) -> Result<BTreeMap<WarehouseDay, RootCause>, TaskError> {
    let Some(context) = p.context.as_ref().filter(|_| p.config.root_cause.snowflake) else {
        return Ok(BTreeMap::new());
    };
    let lookup_err = |what: &'static str| {
        move |e: snowpatrol_sources::SourceError| {
            if e.is_transient() {
                TaskError::retryable(format!("{what}: {e}"))
            } else {
                TaskError::permanent(format!("{what}: {e}"))
            }
        }
    };
    let causes = match context.root_causes(days).await {
        Ok(c) => c,
        Err(e) if !e.is_transient() => {
            // A query Snowflake refused for another reason than grants: say so on every day, keep the rest.
            warn!(error = %e, "root-cause lookup failed; the days keep their hourly shape only");
            days.iter()
                .map(|d| {
                    (
                        d.clone(),
                        RootCause {
                            unavailable: vec![format!("root cause lookup failed: {e}")],
                            ..Default::default()
                        },
                    )
                })
                .collect()
        }
        Err(e) => return Err(lookup_err("root-cause lookup")(e)),
    };
    let warehouses: Vec<WarehouseKey> = days
        .iter()
        .map(|d| d.key.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    match context.warehouse_tags(&warehouses).await {
        Ok(tags) => {
            out.tagged_warehouses = tags.len();
            p.store
                .replace_warehouse_tags(&warehouses, &tags, Some(&ctx.fence))
                .await
                .map_err(store_err("saving warehouse tags"))?;
        }
        Err(e) if e.is_transient() => return Err(lookup_err("warehouse tags")(e)),
        Err(e) => {
            warn!(error = %e, "warehouse tags not read; routes by tag keep the tags stored before")
        }
    }
    Ok(causes)
}

/// Each day's hourly credits against the median of the same hours over the `usual_days` before it, read in one
/// query for all `days`; a day without hourly metering (a daily-only source) has no shape.
async fn hourly_shapes(
    p: &Pipeline,
    days: &[WarehouseDay],
) -> Result<BTreeMap<WarehouseDay, HourlyShape>, TaskError> {
    let usual_days = u64::from(p.config.root_cause.usual_days.max(1));
    let (Some(first), Some(last)) = (
        days.iter().map(|d| d.day).min(),
        days.iter().map(|d| d.day).max(),
    ) else {
        return Ok(BTreeMap::new());
    };
    let keys: Vec<WarehouseKey> = days
        .iter()
        .map(|d| d.key.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let rows = p
        .store
        .hourly_credits_of(
            &keys,
            day_start(first - Days::new(usual_days)),
            day_start(last + Days::new(1)),
        )
        .await
        .map_err(store_err("reading hourly metering"))?;
    let mut by_key: BTreeMap<WarehouseKey, BTreeMap<NaiveDate, [f64; 24]>> = BTreeMap::new();
    for (key, t, credits) in rows {
        by_key
            .entry(key)
            .or_default()
            .entry(t.date_naive())
            .or_insert([0.0; 24])[t.hour() as usize] += credits;
    }
    let mut out = BTreeMap::new();
    for d in days {
        let Some(hours) = by_key.get(&d.key) else {
            continue;
        };
        let Some(day) = hours.get(&d.day) else {
            continue;
        };
        // Every day of the usual window counts, an idle one as zeros.
        let history: Vec<[f64; 24]> = (1..=usual_days)
            .map(|back| {
                hours
                    .get(&(d.day - Days::new(back)))
                    .copied()
                    .unwrap_or([0.0; 24])
            })
            .collect();
        out.insert(d.clone(), HourlyShape::new(*day, &history));
    }
    Ok(out)
}

/// The price of a credit per account: Snowflake's effective rate of the account's newest day with one (with
/// `credit_prices = "snowflake"`), else `price_per_credit`; and the currency to show beside money.
#[derive(Clone, Debug, Default)]
pub(crate) struct Prices {
    by_account: BTreeMap<String, f64>,
    fallback: Option<f64>,
    pub(crate) currency: Option<String>,
}

impl Prices {
    pub(crate) async fn read(p: &Pipeline, day: NaiveDate) -> Result<Self, TaskError> {
        let mut prices = Prices {
            by_account: BTreeMap::new(),
            fallback: p.config.price_per_credit,
            currency: p.config.currency.clone(),
        };
        if p.config.credit_prices == CreditPrices::Snowflake {
            for r in p
                .store
                .latest_credit_rates(day)
                .await
                .map_err(store_err("reading credit rates"))?
            {
                if let Some(price) = r.price_per_credit() {
                    prices.currency = Some(r.currency.clone());
                    prices.by_account.insert(r.account_name, price);
                }
            }
        }
        Ok(prices)
    }

    /// The price of a credit in `account`, if known.
    pub(crate) fn price(&self, account: &str) -> Option<f64> {
        self.by_account.get(account).copied().or(self.fallback)
    }
}
