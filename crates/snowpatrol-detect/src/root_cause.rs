//! Root causes of an anomalous warehouse-day: what Snowflake's own views say happened that day (which
//! statements, users, roles and query tags used the credits; what happened to the warehouse) and what the
//! hourly metering shows, turned into the sentence a person reads first.
//!
//! Pure data and text, like the rest of this crate: the Snowflake source fills a [`RootCause`] per
//! warehouse-day (one batched query per view per run), the pipeline stores it with the anomaly and adds the
//! [`HourlyShape`] from its own hourly metering, and the report, the digest, the console and the command line
//! show [`RootCause::summary`]. The findings are evidence, not a verdict: the sentence says what the views
//! show, with the numbers, and says plainly what could not be looked up.

use chrono::{DateTime, NaiveDate, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::WarehouseKey;

/// One warehouse on one UTC day: what a root-cause lookup is asked about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WarehouseDay {
    pub key: WarehouseKey,
    pub day: NaiveDate,
}

/// What the weights of an [`Attribution`] measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributionBasis {
    /// Credits from `ACCOUNT_USAGE.QUERY_ATTRIBUTION_HISTORY` (execution only, no idle time).
    Credits,
    /// Seconds of execution from `ACCOUNT_USAGE.QUERY_HISTORY`, used where the attribution view is not granted:
    /// shares of time, not credits.
    ExecutionSeconds,
}

/// Statements with one parameterized hash (the same SQL with different literals), summed over the day.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueryGroup {
    pub parameterized_hash: String,
    /// The start of one execution's text (for recognising the statement), when the view returned it.
    pub sample_text: Option<String>,
    pub user_name: Option<String>,
    pub role_name: Option<String>,
    pub query_tag: Option<String>,
    /// Credits or execution seconds, per [`Attribution::basis`].
    pub weight: f64,
    pub queries: u64,
}

/// A user, role or query tag and what its queries used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contributor {
    /// Empty for queries without a tag (or role).
    pub name: String,
    pub weight: f64,
    pub queries: u64,
}

/// Who and what used the warehouse on the day, largest first (each list at most a handful long).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    pub basis: AttributionBasis,
    /// Sum over every query of the day (not only the listed ones).
    pub total_weight: f64,
    pub queries: u64,
    pub top_queries: Vec<QueryGroup>,
    pub users: Vec<Contributor>,
    pub roles: Vec<Contributor>,
    pub query_tags: Vec<Contributor>,
}

/// Rows of `WAREHOUSE_EVENTS_HISTORY` with the same name, reason, user, size and cluster count, collapsed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WarehouseEvent {
    /// The first of the collapsed events.
    pub at: DateTime<Utc>,
    /// `EVENT_NAME`, e.g. `RESIZE_WAREHOUSE`, `WAREHOUSE_CONSISTENT`, `SPINUP_CLUSTER`, `RESUME_CLUSTER`.
    pub name: String,
    pub reason: Option<String>,
    pub user_name: Option<String>,
    pub role_name: Option<String>,
    /// The size after the event (`WAREHOUSE_CONSISTENT` only).
    pub size: Option<String>,
    pub cluster_count: Option<i64>,
    pub count: u64,
}

/// An `ALTER WAREHOUSE` statement on the warehouse, from `QUERY_HISTORY` (the events view does not record
/// auto-suspend or cluster-limit changes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WarehouseChange {
    pub at: DateTime<Utc>,
    pub user_name: Option<String>,
    pub role_name: Option<String>,
    /// The statement's text (its start).
    pub statement: String,
}

/// Where in the day the excess was: the hourly metering of the day against the usual hourly curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HourlyShape {
    /// Credits per UTC hour of the day.
    pub day: Vec<f64>,
    /// Median credits of each UTC hour over the preceding days (the usual curve).
    pub usual: Vec<f64>,
    /// How many preceding days the usual curve is the median of.
    pub history_days: u32,
}

/// Everything found about one anomalous warehouse-day.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RootCause {
    pub attribution: Option<Attribution>,
    #[serde(default)]
    pub events: Vec<WarehouseEvent>,
    #[serde(default)]
    pub changes: Vec<WarehouseChange>,
    pub hours: Option<HourlyShape>,
    /// What could not be looked up and why (a missing grant with its fix, a view that failed), one line each.
    #[serde(default)]
    pub unavailable: Vec<String>,
}

/// The day's figures a summary is measured against.
#[derive(Clone, Copy, Debug)]
pub struct DayFigures {
    pub actual_credits: f64,
    pub excess_credits: f64,
}

impl HourlyShape {
    /// The usual curve as the per-hour median of `history` (days of 24 hourly values, any order).
    pub fn new(day: [f64; 24], history: &[[f64; 24]]) -> Self {
        let usual = (0..24)
            .map(|h| {
                let mut v: Vec<f64> = history.iter().map(|d| d[h]).collect();
                v.sort_by(f64::total_cmp);
                match v.len() {
                    0 => 0.0,
                    n if n % 2 == 1 => v[n / 2],
                    n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
                }
            })
            .collect();
        Self {
            day: day.to_vec(),
            usual,
            history_days: history.len() as u32,
        }
    }

    /// The shortest run of hours holding at least 80 % of the day's excess over the usual curve, with that
    /// share; None when the day is not above the curve at all.
    pub fn excess_window(&self) -> Option<(u32, u32, f64)> {
        let over: Vec<f64> = self
            .day
            .iter()
            .zip(&self.usual)
            .map(|(d, u)| (d - u).max(0.0))
            .collect();
        let total: f64 = over.iter().sum();
        if total <= 1e-9 {
            return None;
        }
        let mut best: Option<(u32, u32, f64)> = None;
        for start in 0..over.len() {
            let mut sum = 0.0;
            for (end, value) in over.iter().enumerate().skip(start) {
                sum += value;
                if sum >= 0.8 * total {
                    let len = end - start;
                    if best.is_none_or(|(s, e, _)| len < (e - s) as usize) {
                        best = Some((start as u32, end as u32, sum / total));
                    }
                    break;
                }
            }
        }
        best
    }
}

impl Attribution {
    fn unit(&self) -> &'static str {
        match self.basis {
            AttributionBasis::Credits => "credits",
            AttributionBasis::ExecutionSeconds => "s of execution",
        }
    }
}

impl WarehouseChange {
    /// What the statement changed, in words ("auto-suspend turned off"), or None when it is not a change a
    /// cost reader cares about.
    pub fn describe(&self) -> Option<String> {
        let upper = self.statement.to_ascii_uppercase();
        let setting = |name: &str| -> Option<String> {
            let at = upper.find(name)? + name.len();
            let rest = upper[at..].trim_start().strip_prefix('=')?.trim_start();
            let value: String = rest
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != ',' && *c != ';')
                .collect();
            Some(value.trim_matches('\'').to_string())
        };
        let mut parts = Vec::new();
        if let Some(v) = setting("AUTO_SUSPEND") {
            parts.push(match v.as_str() {
                "0" | "NULL" => "auto-suspend turned off".to_string(),
                s => format!("auto-suspend set to {s} s"),
            });
        }
        if let Some(v) = setting("WAREHOUSE_SIZE") {
            parts.push(format!("size set to {v}"));
        }
        if let Some(v) = setting("MAX_CLUSTER_COUNT") {
            parts.push(format!("max clusters set to {v}"));
        }
        if let Some(v) = setting("MIN_CLUSTER_COUNT") {
            parts.push(format!("min clusters set to {v}"));
        }
        if upper.contains("UNSET") && upper.contains("AUTO_SUSPEND") && parts.is_empty() {
            parts.push("auto-suspend unset".to_string());
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// "by ALICE (SYSADMIN)", "by ALICE", or nothing.
fn by(user: Option<&str>, role: Option<&str>) -> String {
    match (
        user.filter(|u| !u.is_empty()),
        role.filter(|r| !r.is_empty()),
    ) {
        (Some(u), Some(r)) => format!(" by {u} ({r})"),
        (Some(u), None) => format!(" by {u}"),
        (None, Some(r)) => format!(" by role {r}"),
        (None, None) => String::new(),
    }
}

fn hhmm(t: DateTime<Utc>) -> String {
    format!("{:02}:{:02}", t.hour(), t.minute())
}

fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        (100.0 * part / whole).clamp(0.0, 100.0)
    } else {
        0.0
    }
}

impl RootCause {
    /// True when nothing was found and nothing is known to be missing.
    pub fn is_empty(&self) -> bool {
        self.attribution.is_none()
            && self.events.is_empty()
            && self.changes.is_empty()
            && self.hours.is_none()
            && self.unavailable.is_empty()
    }

    /// Every finding, one per line, for `snowpatrol anomalies show` and the console's incident page.
    pub fn detail_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(a) = &self.attribution {
            let unit = a.unit();
            lines.push(format!(
                "Attributed to queries: {:.1} {unit} in {} quer{}",
                a.total_weight,
                a.queries,
                if a.queries == 1 { "y" } else { "ies" }
            ));
            for q in &a.top_queries {
                let mut line = format!(
                    "  statement {}: {:.1} {unit}, {} run{}",
                    q.parameterized_hash,
                    q.weight,
                    q.queries,
                    if q.queries == 1 { "" } else { "s" }
                );
                line.push_str(&by(q.user_name.as_deref(), q.role_name.as_deref()));
                if let Some(tag) = q.query_tag.as_deref().filter(|t| !t.is_empty()) {
                    line.push_str(&format!(", query tag `{tag}`"));
                }
                if let Some(text) = &q.sample_text {
                    let short: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
                    let short: String = short.chars().take(120).collect();
                    line.push_str(&format!(": {short}"));
                }
                lines.push(line);
            }
            for (title, list) in [
                ("Users", &a.users),
                ("Roles", &a.roles),
                ("Query tags", &a.query_tags),
            ] {
                if list.is_empty() {
                    continue;
                }
                let items: Vec<String> = list
                    .iter()
                    .map(|c| {
                        let name = if c.name.is_empty() {
                            "(none)"
                        } else {
                            c.name.as_str()
                        };
                        format!("{name} {:.1}", c.weight)
                    })
                    .collect();
                lines.push(format!("{title}: {}", items.join(", ")));
            }
        }
        for e in &self.events {
            let mut line = format!("Event {} {}", hhmm(e.at), e.name);
            if let Some(r) = &e.reason {
                line.push_str(&format!(" ({r})"));
            }
            if let Some(size) = &e.size {
                line.push_str(&format!(", size {size}"));
            }
            if let Some(n) = e.cluster_count {
                line.push_str(&format!(", {n} cluster{}", if n == 1 { "" } else { "s" }));
            }
            line.push_str(&by(e.user_name.as_deref(), e.role_name.as_deref()));
            if e.count > 1 {
                line.push_str(&format!(" (x{})", e.count));
            }
            lines.push(line);
        }
        for c in &self.changes {
            lines.push(format!(
                "Change {} {}{}: {}",
                c.at.format("%Y-%m-%d"),
                hhmm(c.at),
                by(c.user_name.as_deref(), c.role_name.as_deref()),
                c.statement.split_whitespace().collect::<Vec<_>>().join(" ")
            ));
        }
        if let Some(h) = &self.hours {
            let day: f64 = h.day.iter().sum();
            let usual: f64 = h.usual.iter().sum();
            let mut line = format!(
                "Hourly: {day:.1} credits against a usual {usual:.1} (median of the {} days before)",
                h.history_days
            );
            if let Some((start, end, share)) = h.excess_window() {
                line.push_str(&format!(
                    "; {:.0} % of the excess between {start:02}:00 and {:02}:00 UTC",
                    100.0 * share,
                    end + 1
                ));
            }
            lines.push(line);
        }
        for u in &self.unavailable {
            lines.push(format!("Not available: {u}"));
        }
        lines
    }

    /// The sentences a person reads first: where the money went, what changed on the warehouse, when in the day.
    /// Every clause states its numbers; an empty string when nothing was found.
    pub fn summary(&self, figures: DayFigures, day: NaiveDate) -> String {
        let mut clauses = Vec::new();
        if let Some(a) = &self.attribution {
            clauses.extend(attribution_clauses(a, figures));
        }
        clauses.extend(self.change_clauses(day));
        if let Some((start, end, share)) = self.hours.as_ref().and_then(HourlyShape::excess_window)
        {
            clauses.push(format!(
                "{:.0} % of the excess over the usual hourly curve fell between {start:02}:00 and {:02}:00 UTC",
                100.0 * share,
                end + 1
            ));
        }
        let mut text = clauses.join("; ");
        if !text.is_empty() {
            text.push('.');
        }
        text
    }

    /// Resizes, extra clusters and `ALTER WAREHOUSE` changes, in time order, each with who and when.
    fn change_clauses(&self, day: NaiveDate) -> Vec<String> {
        let when = |t: DateTime<Utc>| {
            if t.date_naive() < day {
                format!("at {} UTC the day before", hhmm(t))
            } else {
                format!("at {} UTC", hhmm(t))
            }
        };
        let mut timed: Vec<(DateTime<Utc>, String)> = Vec::new();
        for e in &self.events {
            let who = by(e.user_name.as_deref(), e.role_name.as_deref());
            match e.name.as_str() {
                "WAREHOUSE_CONSISTENT" if e.reason.as_deref() == Some("WAREHOUSE_RESIZE") => {
                    if let Some(size) = &e.size {
                        timed.push((
                            e.at,
                            format!("the warehouse was resized to {size} {}{who}", when(e.at)),
                        ));
                    }
                }
                "RESIZE_WAREHOUSE" if e.size.is_some() => timed.push((
                    e.at,
                    format!(
                        "the warehouse was resized to {} {}{who}",
                        e.size.as_deref().unwrap_or_default(),
                        when(e.at)
                    ),
                )),
                "SPINUP_CLUSTER" => timed.push((
                    e.at,
                    format!(
                        "{} extra cluster start{} (the first {})",
                        e.count,
                        if e.count == 1 { "" } else { "s" },
                        when(e.at)
                    ),
                )),
                "CREATE_WAREHOUSE" => timed.push((
                    e.at,
                    format!("the warehouse was created {}{who}", when(e.at)),
                )),
                _ => {}
            }
        }
        for c in &self.changes {
            if let Some(what) = c.describe() {
                let who = by(c.user_name.as_deref(), c.role_name.as_deref());
                timed.push((c.at, format!("{what} {}{who}", when(c.at))));
            }
        }
        timed.sort_by_key(|(t, _)| *t);
        timed.into_iter().map(|(_, s)| s).collect()
    }
}

/// "82 % of the excess (41.0 of 50.0 credits) came from 3 statements run 12 times by DBT_PROD (query tag
/// `dbt:orders`)", plus idle time when most of the day's credits were not used by any query.
fn attribution_clauses(a: &Attribution, figures: DayFigures) -> Vec<String> {
    let mut clauses = Vec::new();
    if a.top_queries.is_empty() {
        clauses.push("no query ran on the warehouse that day".to_string());
    } else {
        clauses.push(top_query_clause(a, figures));
    }
    if a.basis == AttributionBasis::Credits && figures.actual_credits > 0.0 {
        let idle = (figures.actual_credits - a.total_weight).max(0.0);
        let share = percent(idle, figures.actual_credits);
        if share >= 40.0 {
            clauses.push(format!(
                "{share:.0} % of the day's credits ({idle:.1}) were not used by any query (idle time: check \
                 auto-suspend)"
            ));
        }
    }
    clauses
}

fn top_query_clause<'a>(a: &'a Attribution, figures: DayFigures) -> String {
    // The fewest statements (at most 3) that cover the excess (with time: 80 % of the day's execution), leaving
    // out the small ones (under a tenth of it) that would only lengthen the sentence.
    let target = match a.basis {
        AttributionBasis::Credits => figures.excess_credits,
        AttributionBasis::ExecutionSeconds => 0.8 * a.total_weight,
    };
    let mut taken = 0.0;
    let mut groups: Vec<&QueryGroup> = Vec::new();
    for q in a.top_queries.iter().take(3) {
        if !groups.is_empty() && q.weight < 0.1 * target {
            break;
        }
        groups.push(q);
        taken += q.weight;
        if taken >= target {
            break;
        }
    }
    let runs: u64 = groups.iter().map(|q| q.queries).sum();
    let distinct = |values: Vec<&'a str>| {
        let mut out: Vec<&'a str> = Vec::new();
        for v in values {
            if !v.is_empty() && !out.contains(&v) {
                out.push(v);
            }
        }
        out
    };
    let users = distinct(
        groups
            .iter()
            .filter_map(|q| q.user_name.as_deref())
            .collect(),
    );
    let tags = distinct(
        groups
            .iter()
            .filter_map(|q| q.query_tag.as_deref())
            .collect(),
    );
    let statements = if groups.len() == 1 {
        "1 statement".to_string()
    } else {
        format!("{} statements", groups.len())
    };
    let who = match users.as_slice() {
        [] => String::new(),
        [one] => format!(" by {one}"),
        many => format!(" by {}", many.join(", ")),
    };
    let tag = match tags.as_slice() {
        [] => String::new(),
        [one] => format!(" (query tag `{one}`)"),
        many => format!(
            " (query tags {})",
            many.iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let runs = format!("run {runs} time{}", if runs == 1 { "" } else { "s" });
    match a.basis {
        AttributionBasis::Credits
            if figures.excess_credits > 0.0 && taken < figures.excess_credits =>
        {
            format!(
                "{:.0} % of the excess ({taken:.1} of {:.1} credits) came from {statements} {runs}{who}{tag}",
                percent(taken, figures.excess_credits),
                figures.excess_credits
            )
        }
        AttributionBasis::Credits => format!(
            "{statements} {runs}{who}{tag} used {taken:.1} credits, more than the {:.1} excess",
            figures.excess_credits
        ),
        AttributionBasis::ExecutionSeconds => format!(
            "{statements} {runs}{who}{tag} took {:.0} % of the day's execution time ({taken:.0} {}; \
             QUERY_ATTRIBUTION_HISTORY was not readable, so this is time, not credits)",
            percent(taken, a.total_weight),
            a.unit()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 9, d, h, m, 0).unwrap()
    }

    fn group(hash: &str, user: &str, tag: &str, credits: f64, n: u64) -> QueryGroup {
        QueryGroup {
            parameterized_hash: hash.into(),
            sample_text: None,
            user_name: Some(user.into()),
            role_name: None,
            query_tag: Some(tag.into()),
            weight: credits,
            queries: n,
        }
    }

    #[test]
    fn summary_names_the_statements_the_events_and_the_hours() {
        let mut day = [0.5; 24];
        day[2..11].fill(5.0);
        let cause = RootCause {
            attribution: Some(Attribution {
                basis: AttributionBasis::Credits,
                total_weight: 45.0,
                queries: 40,
                top_queries: vec![
                    group("h1", "DBT_PROD", "dbt:orders_backfill", 25.0, 8),
                    group("h2", "DBT_PROD", "dbt:orders_backfill", 10.0, 3),
                    group("h3", "DBT_PROD", "dbt:orders_backfill", 6.0, 1),
                    group("h4", "ALICE", "", 1.0, 10),
                ],
                users: vec![],
                roles: vec![],
                query_tags: vec![],
            }),
            events: vec![WarehouseEvent {
                at: at(27, 2, 14),
                name: "WAREHOUSE_CONSISTENT".into(),
                reason: Some("WAREHOUSE_RESIZE".into()),
                user_name: Some("ALICE".into()),
                role_name: Some("SYSADMIN".into()),
                size: Some("X-Large".into()),
                cluster_count: Some(1),
                count: 1,
            }],
            changes: vec![WarehouseChange {
                at: at(27, 2, 20),
                user_name: Some("ALICE".into()),
                role_name: Some("SYSADMIN".into()),
                statement: "alter warehouse ETL_WH set auto_suspend = 0".into(),
            }],
            hours: Some(HourlyShape::new(day, &[[0.5; 24]; 7])),
            unavailable: vec![],
        };
        let figures = DayFigures {
            actual_credits: 57.0,
            excess_credits: 50.0,
        };
        let text = cause.summary(figures, NaiveDate::from_ymd_opt(2025, 9, 27).unwrap());
        assert_eq!(
            text,
            "82 % of the excess (41.0 of 50.0 credits) came from 3 statements run 12 times by DBT_PROD (query tag \
             `dbt:orders_backfill`); the warehouse was resized to X-Large at 02:14 UTC by ALICE (SYSADMIN); \
             auto-suspend turned off at 02:20 UTC by ALICE (SYSADMIN); 89 % of the excess over the usual hourly \
             curve fell between 02:00 and 10:00 UTC."
        );
    }

    #[test]
    fn idle_time_and_the_day_before_are_said() {
        let cause = RootCause {
            attribution: Some(Attribution {
                basis: AttributionBasis::Credits,
                total_weight: 4.0,
                queries: 3,
                top_queries: vec![group("h1", "ALICE", "", 80.0, 3)],
                users: vec![],
                roles: vec![],
                query_tags: vec![],
            }),
            changes: vec![WarehouseChange {
                at: at(26, 20, 5),
                user_name: None,
                role_name: None,
                statement: "ALTER WAREHOUSE IF EXISTS X SET AUTO_SUSPEND=NULL".into(),
            }],
            ..Default::default()
        };
        let text = cause.summary(
            DayFigures {
                actual_credits: 24.0,
                excess_credits: 20.0,
            },
            NaiveDate::from_ymd_opt(2025, 9, 27).unwrap(),
        );
        assert!(
            text.contains(
                "1 statement run 3 times by ALICE used 80.0 credits, more than the 20.0 excess"
            ),
            "{text}"
        );
        assert!(
            text.contains("83 % of the day's credits (20.0) were not used by any query"),
            "{text}"
        );
        assert!(
            text.contains("auto-suspend turned off at 20:05 UTC the day before"),
            "{text}"
        );
    }

    #[test]
    fn describes_only_changes_that_matter_for_cost() {
        let c = |s: &str| WarehouseChange {
            at: at(27, 0, 0),
            user_name: None,
            role_name: None,
            statement: s.into(),
        };
        assert_eq!(
            c("ALTER WAREHOUSE W SET WAREHOUSE_SIZE = 'XLARGE', MAX_CLUSTER_COUNT = 4")
                .describe()
                .as_deref(),
            Some("size set to XLARGE, max clusters set to 4")
        );
        assert_eq!(
            c("alter warehouse w set auto_suspend = 600")
                .describe()
                .as_deref(),
            Some("auto-suspend set to 600 s")
        );
        assert_eq!(c("ALTER WAREHOUSE W SET COMMENT = 'x'").describe(), None);
    }

    #[test]
    fn excess_window_is_the_shortest_run_holding_most_of_the_excess() {
        let mut day = [1.0; 24];
        day[5] = 11.0;
        day[6] = 11.0;
        let shape = HourlyShape::new(day, &[[1.0; 24], [1.0; 24], [3.0; 24]]);
        assert_eq!(shape.usual[0], 1.0);
        assert_eq!(shape.excess_window(), Some((5, 6, 1.0)));
        assert_eq!(
            HourlyShape::new([1.0; 24], &[[1.0; 24]]).excess_window(),
            None
        );
    }
}
