//! `[pipeline.alerts]`: which Slack channel hears about which incident.
//!
//! Routes are subscriptions, like AWS Cost Anomaly Detection's: each names a channel, the accounts and
//! warehouses it covers (glob patterns, case-insensitive, as Snowflake folds unquoted names), the smallest
//! incident worth its readers' time (excess in credits, in money when a price is set, in percent of the
//! expectation) and mute windows (planned work). An incident is announced in every channel whose route takes
//! it; one that no route takes goes to `[pipeline.slack] channel` (`unrouted = "default"`, the default) or
//! nowhere (`"drop"`). An incident below every route's minimum or muted is not announced yet, so it is
//! considered again on the next run and announced once it grows past a minimum.
//!
//! Routes can also select warehouses by their Snowflake object tags (`tags = { COST_CENTER = "data-eng*" }`):
//! predict's `root_causes` task reads the tags of the warehouses with incidents from
//! `ACCOUNT_USAGE.TAG_REFERENCES` and stores them (`warehouse_tags`), so a route follows the organisation's
//! own cost ownership instead of name patterns.
//!
//! Pure: no I/O; the report task and `snowpatrol explain-alert` ask [`AlertRouting::decide`].

use chrono::NaiveDate;
use globset::{Glob, GlobBuilder, GlobMatcher};
use serde::Deserialize;
use snowpatrol_engine::ConfigIssue;

/// `[pipeline.alerts]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertRouting {
    pub routes: Vec<AlertRoute>,
    pub unrouted: Unrouted,
    /// Per-warehouse exceptions, the first matching one applies.
    pub overrides: Vec<WarehouseOverride>,
}

/// `[[pipeline.alerts.overrides]]`: settings for some warehouses (a sandbox nobody pays attention to, a
/// production warehouse where a tighter budget is wanted).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarehouseOverride {
    #[serde(default = "everything")]
    pub accounts: Vec<String>,
    #[serde(default = "everything")]
    pub warehouses: Vec<String>,
    /// Never announce these warehouses' incidents (they are still detected, listed and reported).
    #[serde(default)]
    pub ignore: bool,
    /// The false-alarm budget their thresholds are calibrated to (the default model's
    /// `expected_false_alarms_per_year`); a change retrains them.
    #[serde(default)]
    pub expected_false_alarms_per_year: Option<f64>,
    /// Also flag falls in spend for them (an outage of a warehouse that must always run).
    #[serde(default)]
    pub flag_drops: Option<bool>,
}

/// What happens to an incident that no route matches.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Unrouted {
    /// To `[pipeline.slack] channel` (or the alert files without Slack).
    #[default]
    Default,
    /// Nowhere.
    Drop,
}

/// `[[pipeline.alerts.routes]]`: one subscription.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRoute {
    pub name: String,
    /// Slack channel id (`C…`) the bot is a member of.
    pub channel: String,
    /// Account and warehouse name patterns (`*`, `?`, `[A-Z]`, `{a,b}`); every one by default.
    #[serde(default = "everything")]
    pub accounts: Vec<String>,
    #[serde(default = "everything")]
    pub warehouses: Vec<String>,
    /// Object tags the warehouse must carry, each with a value pattern (glob): `{ COST_CENTER = "data-eng" }`.
    /// A key names a tag as `TAG`, `SCHEMA.TAG` or `DATABASE.SCHEMA.TAG` (case-insensitive; the shorter forms
    /// match a tag of that name in any schema). Empty: no tag condition.
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
    /// Smallest incident announced here: excess credits, excess money (needs `price_per_credit`), and excess
    /// in percent of what the model expected. 0 = no minimum.
    #[serde(default)]
    pub min_excess_credits: f64,
    #[serde(default)]
    pub min_excess_cost: f64,
    #[serde(default)]
    pub min_excess_percent: f64,
    /// Days on which this route stays silent (an incident starting inside one is not announced here).
    #[serde(default)]
    pub mute: Vec<MuteWindow>,
}

fn everything() -> Vec<String> {
    vec!["*".to_string()]
}

/// `{ from = "2025-12-24", to = "2026-01-02", reason = "year-end freeze" }`, both days included.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MuteWindow {
    pub from: NaiveDate,
    pub to: NaiveDate,
    #[serde(default)]
    pub reason: Option<String>,
}

/// What routing needs to know of an incident.
#[derive(Clone, Debug)]
pub struct IncidentFacts {
    pub account_name: String,
    pub warehouse_name: String,
    pub first_day: NaiveDate,
    pub excess_credits: f64,
    /// What the model expected on the incident's days (None: unknown, the percent minimum is not applied).
    pub expected_credits: Option<f64>,
    /// The excess in money at the account's price (None: no price known; the route's money minimum then uses
    /// the configured `price_per_credit`, if any).
    pub excess_cost: Option<f64>,
    /// The warehouse's object tags (`DATABASE.SCHEMA.TAG` -> value), as last looked up.
    pub tags: std::collections::BTreeMap<String, String>,
}

/// One route's verdict on one incident.
#[derive(Clone, Debug, PartialEq)]
pub enum RouteVerdict {
    Announced,
    NotCovered(String),
    BelowMinimum(String),
    Muted(String),
}

/// Where an incident goes, and why not elsewhere.
#[derive(Clone, Debug, PartialEq)]
pub struct RoutingDecision {
    /// Channels it is announced in (route name, channel); the default channel appears as route `default`.
    pub channels: Vec<(String, String)>,
    /// Every configured route's verdict, in order.
    pub verdicts: Vec<(String, RouteVerdict)>,
    /// An override says never to announce this warehouse's incidents.
    pub ignored: bool,
}

impl RoutingDecision {
    /// The incident is held back on purpose (below a minimum or muted), not merely unmatched.
    pub fn held_back(&self) -> bool {
        self.channels.is_empty()
            && self
                .verdicts
                .iter()
                .any(|(_, v)| matches!(v, RouteVerdict::BelowMinimum(_) | RouteVerdict::Muted(_)))
    }
}

fn glob(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    GlobBuilder::new(pattern)
        .case_insensitive(true)
        .literal_separator(false)
        .build()
        .map(|g: Glob| g.compile_matcher())
}

/// What is wrong with a list of account or warehouse patterns (routes and overrides alike).
fn pattern_problems(patterns: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    if patterns.is_empty() {
        out.push("must name at least one pattern (\"*\" for all)".to_string());
    }
    for p in patterns {
        if let Err(e) = glob(p) {
            out.push(format!("{p:?} is not a glob pattern: {e}"));
        }
    }
    out
}

/// The value of the tag a route names (`TAG`, `SCHEMA.TAG` or `DATABASE.SCHEMA.TAG`, case-insensitive) among
/// a warehouse's tags, which are keyed by their full name.
fn tag_value<'t>(
    tags: &'t std::collections::BTreeMap<String, String>,
    wanted: &str,
) -> Option<&'t str> {
    let wanted = wanted.to_ascii_uppercase();
    tags.iter().find_map(|(name, value)| {
        let name = name.to_ascii_uppercase();
        (name == wanted || name.ends_with(&format!(".{wanted}"))).then_some(value.as_str())
    })
}

fn matches(patterns: &[String], name: &str) -> bool {
    patterns
        .iter()
        .filter_map(|p| glob(p).ok())
        .any(|m| m.is_match(name))
}

impl AlertRouting {
    /// The first override covering the warehouse, if any.
    pub fn override_for(&self, account: &str, warehouse: &str) -> Option<&WarehouseOverride> {
        self.overrides
            .iter()
            .find(|o| matches(&o.accounts, account) && matches(&o.warehouses, warehouse))
    }

    /// The detection rule for one warehouse: `base` with its override's budget and drop flag.
    pub fn rule_for(
        &self,
        account: &str,
        warehouse: &str,
        base: &snowpatrol_detect::model::DefaultRuleConfig,
    ) -> snowpatrol_detect::model::DefaultRuleConfig {
        let mut rule = base.clone();
        if let Some(o) = self.override_for(account, warehouse) {
            if let Some(b) = o.expected_false_alarms_per_year {
                rule.expected_false_alarms_per_year = b;
            }
            if let Some(f) = o.flag_drops {
                rule.flag_drops = f;
            }
        }
        rule
    }

    /// Every problem with the routes, by key path (`pipeline.alerts.routes[2].channel`).
    pub fn problems(&self, price_per_credit: Option<f64>) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        for (i, o) in self.overrides.iter().enumerate() {
            o.push_problems(i, &mut out);
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let issue = |key: &str, message: String| ConfigIssue {
                path: format!("pipeline.alerts.routes[{i}].{key}"),
                message,
            };
            if r.name.trim().is_empty() {
                out.push(issue("name", "must not be empty".into()));
            } else if !names.insert(r.name.clone()) {
                out.push(issue("name", format!("{:?} names two routes", r.name)));
            }
            r.push_problems(i, price_per_credit, &mut out);
        }
        out
    }

    /// Where `incident` is announced, with every route's verdict. `default_channel` is `[pipeline.slack]
    /// channel` (or `file` without Slack).
    pub fn decide(
        &self,
        incident: &IncidentFacts,
        price_per_credit: Option<f64>,
        default_channel: &str,
    ) -> RoutingDecision {
        if self
            .override_for(&incident.account_name, &incident.warehouse_name)
            .is_some_and(|o| o.ignore)
        {
            return RoutingDecision {
                channels: Vec::new(),
                verdicts: Vec::new(),
                ignored: true,
            };
        }
        let mut channels: Vec<(String, String)> = Vec::new();
        let mut verdicts = Vec::new();
        for r in &self.routes {
            let v = self.verdict(r, incident, price_per_credit);
            if v == RouteVerdict::Announced && !channels.iter().any(|(_, c)| *c == r.channel) {
                channels.push((r.name.clone(), r.channel.clone()));
            }
            verdicts.push((r.name.clone(), v));
        }
        let covered = verdicts
            .iter()
            .any(|(_, v)| !matches!(v, RouteVerdict::NotCovered(_)));
        if !covered && self.unrouted == Unrouted::Default {
            channels.push(("default".to_string(), default_channel.to_string()));
        }
        RoutingDecision {
            channels,
            verdicts,
            ignored: false,
        }
    }

    fn verdict(
        &self,
        r: &AlertRoute,
        i: &IncidentFacts,
        price_per_credit: Option<f64>,
    ) -> RouteVerdict {
        r.not_covering(i)
            .or_else(|| r.below_minimum(i, price_per_credit))
            .or_else(|| r.muting(i))
            .unwrap_or(RouteVerdict::Announced)
    }
}

impl WarehouseOverride {
    /// This override's problems (it is `overrides[i]`) into `out`.
    fn push_problems(&self, i: usize, out: &mut Vec<ConfigIssue>) {
        let issue = |key: &str, message: String| ConfigIssue {
            path: format!("pipeline.alerts.overrides[{i}].{key}"),
            message,
        };
        for (key, patterns) in [
            ("accounts", &self.accounts),
            ("warehouses", &self.warehouses),
        ] {
            for message in pattern_problems(patterns) {
                out.push(issue(key, message));
            }
        }
        if let Some(b) = self.expected_false_alarms_per_year
            && !(b.is_finite() && b > 0.0)
        {
            out.push(issue(
                "expected_false_alarms_per_year",
                format!("must be a number > 0, got {b}"),
            ));
        }
    }
}

impl AlertRoute {
    /// This route's problems (it is `routes[i]`) other than its name into `out`.
    fn push_problems(&self, i: usize, price_per_credit: Option<f64>, out: &mut Vec<ConfigIssue>) {
        let issue = |key: &str, message: String| ConfigIssue {
            path: format!("pipeline.alerts.routes[{i}].{key}"),
            message,
        };
        if self.channel.trim().is_empty() {
            out.push(issue("channel", "must be a Slack channel id (C…)".into()));
        }
        for (key, patterns) in [
            ("accounts", &self.accounts),
            ("warehouses", &self.warehouses),
        ] {
            for message in pattern_problems(patterns) {
                out.push(issue(key, message));
            }
        }
        for (key, v) in [
            ("min_excess_credits", self.min_excess_credits),
            ("min_excess_cost", self.min_excess_cost),
            ("min_excess_percent", self.min_excess_percent),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                out.push(issue(key, format!("must be a number >= 0, got {v}")));
            }
        }
        if self.min_excess_cost > 0.0 && price_per_credit.is_none() {
            out.push(issue(
                "min_excess_cost",
                "needs [pipeline] price_per_credit or credit_prices = \"snowflake\" (money is credits x price)"
                    .into(),
            ));
        }
        for (tag, pattern) in &self.tags {
            if tag.trim().is_empty() || tag.split('.').count() > 3 {
                out.push(issue(
                    "tags",
                    format!("{tag:?} is not a tag name (TAG, SCHEMA.TAG or DATABASE.SCHEMA.TAG)"),
                ));
            }
            if let Err(e) = glob(pattern) {
                out.push(issue(
                    "tags",
                    format!("{pattern:?} (tag {tag}) is not a glob pattern: {e}"),
                ));
            }
        }
        for (j, w) in self.mute.iter().enumerate() {
            if w.to < w.from {
                out.push(issue(
                    &format!("mute[{j}].to"),
                    format!("{} is before from = {}", w.to, w.from),
                ));
            }
        }
    }

    /// The verdict when the route does not cover the incident's account or warehouse.
    fn not_covering(&self, i: &IncidentFacts) -> Option<RouteVerdict> {
        if !matches(&self.accounts, &i.account_name) {
            return Some(RouteVerdict::NotCovered(format!(
                "account {} matches none of {:?}",
                i.account_name, self.accounts
            )));
        }
        if !matches(&self.warehouses, &i.warehouse_name) {
            return Some(RouteVerdict::NotCovered(format!(
                "warehouse {} matches none of {:?}",
                i.warehouse_name, self.warehouses
            )));
        }
        for (tag, pattern) in &self.tags {
            let value = tag_value(&i.tags, tag);
            if !value.is_some_and(|v| matches(std::slice::from_ref(pattern), v)) {
                return Some(RouteVerdict::NotCovered(match value {
                    Some(v) => format!("tag {tag} is {v:?}, not {pattern:?}"),
                    None => format!("the warehouse has no tag {tag}"),
                }));
            }
        }
        None
    }

    /// The verdict when the incident is smaller than one of the route's minimums.
    fn below_minimum(
        &self,
        i: &IncidentFacts,
        price_per_credit: Option<f64>,
    ) -> Option<RouteVerdict> {
        if i.excess_credits < self.min_excess_credits {
            return Some(RouteVerdict::BelowMinimum(format!(
                "excess {:.2} credits < min_excess_credits {}",
                i.excess_credits, self.min_excess_credits
            )));
        }
        if self.min_excess_cost > 0.0
            && let Some(cost) = i
                .excess_cost
                .or_else(|| price_per_credit.map(|p| i.excess_credits * p))
            && cost < self.min_excess_cost
        {
            return Some(RouteVerdict::BelowMinimum(format!(
                "excess cost {cost:.2} < min_excess_cost {}",
                self.min_excess_cost
            )));
        }
        if self.min_excess_percent > 0.0
            && let Some(e) = i.expected_credits.filter(|e| *e > 0.0)
            && 100.0 * i.excess_credits / e < self.min_excess_percent
        {
            return Some(RouteVerdict::BelowMinimum(format!(
                "excess {:.0}% of the expectation < min_excess_percent {}",
                100.0 * i.excess_credits / e,
                self.min_excess_percent
            )));
        }
        None
    }

    /// The verdict when the incident starts inside one of the route's mute windows.
    fn muting(&self, i: &IncidentFacts) -> Option<RouteVerdict> {
        let w = self
            .mute
            .iter()
            .find(|w| w.from <= i.first_day && i.first_day <= w.to)?;
        Some(RouteVerdict::Muted(format!(
            "starts {} inside the mute window {} – {}{}",
            i.first_day,
            w.from,
            w.to,
            w.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(toml_text: &str) -> AlertRouting {
        toml::from_str(toml_text).expect("parses")
    }

    fn incident(account: &str, warehouse: &str, excess: f64) -> IncidentFacts {
        IncidentFacts {
            account_name: account.into(),
            warehouse_name: warehouse.into(),
            first_day: NaiveDate::from_ymd_opt(2025, 12, 28).unwrap(),
            excess_credits: excess,
            expected_credits: Some(100.0),
            excess_cost: None,
            tags: Default::default(),
        }
    }

    #[test]
    fn routes_select_warehouses_by_object_tags_and_money_at_the_accounts_price() {
        let r = route(
            r#"
            [[routes]]
            name = "data-eng"
            channel = "CDATA"
            tags = { cost_center = "data-eng*", "TAGS.OWNER" = "platform" }
            min_excess_cost = 100
        "#,
        );
        assert!(
            r.problems(Some(1.0)).is_empty(),
            "{:?}",
            r.problems(Some(1.0))
        );
        let mut i = incident("ACME_PROD", "ETL_WH", 50.0);
        let d = r.decide(&i, Some(3.0), "CDEFAULT");
        assert!(
            matches!(&d.verdicts[0].1, RouteVerdict::NotCovered(w) if w.contains("the warehouse has no tag")),
            "{d:?}"
        );
        i.tags
            .insert("GOVERNANCE.TAGS.COST_CENTER".into(), "data-eng-core".into());
        i.tags
            .insert("GOVERNANCE.TAGS.OWNER".into(), "platform".into());
        // 50 credits at the configured 3.0 = 150 >= 100: announced.
        let d = r.decide(&i, Some(3.0), "CDEFAULT");
        assert_eq!(
            d.channels,
            vec![("data-eng".into(), "CDATA".into())],
            "{d:?}"
        );
        // The account's own price (from Snowflake) wins over the configured one: 50 x 1.5 = 75 < 100.
        i.excess_cost = Some(75.0);
        let d = r.decide(&i, Some(3.0), "CDEFAULT");
        assert!(
            matches!(&d.verdicts[0].1, RouteVerdict::BelowMinimum(w) if w.contains("75.00")),
            "{d:?}"
        );
        i.tags
            .insert("GOVERNANCE.TAGS.COST_CENTER".into(), "finance".into());
        let d = r.decide(&i, Some(3.0), "CDEFAULT");
        assert!(
            matches!(&d.verdicts[0].1, RouteVerdict::NotCovered(w) if w.contains("\"finance\"")),
            "{d:?}"
        );
        let bad =
            route("[[routes]]\nname = \"x\"\nchannel = \"C\"\ntags = { \"A.B.C.D\" = \"[\" }\n");
        assert_eq!(bad.problems(None).len(), 2, "{:?}", bad.problems(None));
    }

    const ROUTES: &str = r#"
        [[routes]]
        name = "platform"
        channel = "CPLATFORM"
        warehouses = ["etl_*", "LOAD_*"]
        min_excess_credits = 10

        [[routes]]
        name = "finance"
        channel = "CFINANCE"
        accounts = ["ACME_PROD"]
        min_excess_cost = 300
        min_excess_percent = 50
        mute = [{ from = "2025-12-24", to = "2026-01-02", reason = "year-end freeze" }]
    "#;

    #[test]
    fn routes_match_by_glob_minimum_and_mute_window_and_say_why_not() {
        let r = route(ROUTES);
        assert!(r.problems(Some(3.0)).is_empty());
        // Case-insensitive globs; the finance route is muted for the year-end freeze.
        let d = r.decide(
            &incident("ACME_PROD", "ETL_WH", 120.0),
            Some(3.0),
            "CDEFAULT",
        );
        assert_eq!(d.channels, vec![("platform".into(), "CPLATFORM".into())]);
        assert!(
            matches!(&d.verdicts[1].1, RouteVerdict::Muted(w) if w.contains("year-end freeze"))
        );
        // Below the platform minimum, not covered by finance's account: held back, not sent to the default.
        let d = r.decide(&incident("ACME_DEV", "ETL_WH", 5.0), Some(3.0), "CDEFAULT");
        assert!(d.channels.is_empty() && d.held_back(), "{d:?}");
        // Covered by no route at all: the default channel.
        let d = r.decide(&incident("ACME_DEV", "BI_WH", 500.0), Some(3.0), "CDEFAULT");
        assert_eq!(d.channels, vec![("default".into(), "CDEFAULT".into())]);
        assert!(matches!(&d.verdicts[0].1, RouteVerdict::NotCovered(w) if w.contains("BI_WH")));
        let mut dropped = r.clone();
        dropped.unrouted = Unrouted::Drop;
        assert!(
            dropped
                .decide(&incident("ACME_DEV", "BI_WH", 500.0), Some(3.0), "CDEFAULT")
                .channels
                .is_empty()
        );
        // Money and percent minimums.
        let mut later = incident("ACME_PROD", "BI_WH", 90.0);
        later.first_day = NaiveDate::from_ymd_opt(2026, 2, 1).unwrap();
        let d = r.decide(&later, Some(3.0), "CDEFAULT");
        assert!(
            matches!(&d.verdicts[1].1, RouteVerdict::BelowMinimum(w) if w.contains("cost 270.00")),
            "{d:?}"
        );
        later.excess_credits = 120.0;
        assert_eq!(
            r.decide(&later, Some(3.0), "CDEFAULT").channels,
            vec![("finance".into(), "CFINANCE".into())]
        );
        later.expected_credits = Some(1000.0);
        let d = r.decide(&later, Some(3.0), "CDEFAULT");
        assert!(
            matches!(&d.verdicts[1].1, RouteVerdict::BelowMinimum(w) if w.contains("12%")),
            "{d:?}"
        );
    }

    #[test]
    fn overrides_ignore_warehouses_and_tune_their_rule() {
        let r = route(
            r#"
            [[overrides]]
            warehouses = ["SANDBOX_*"]
            ignore = true

            [[overrides]]
            accounts = ["ACME_PROD"]
            warehouses = ["APP_*"]
            expected_false_alarms_per_year = 0.25
            flag_drops = true
        "#,
        );
        assert!(r.problems(None).is_empty());
        let d = r.decide(&incident("ACME", "SANDBOX_WH", 500.0), None, "CDEFAULT");
        assert!(
            d.ignored && d.channels.is_empty() && !d.held_back(),
            "{d:?}"
        );
        let base = snowpatrol_detect::model::DefaultRuleConfig::default();
        let app = r.rule_for("acme_prod", "APP_WH", &base);
        assert_eq!(
            (app.expected_false_alarms_per_year, app.flag_drops),
            (0.25, true)
        );
        assert_eq!(
            r.rule_for("ACME_DEV", "APP_WH", &base),
            base,
            "other accounts keep the default"
        );
        let bad = route("[[overrides]]\nwarehouses = []\nexpected_false_alarms_per_year = 0\n");
        let paths: Vec<String> = bad.problems(None).into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            [
                "pipeline.alerts.overrides[0].warehouses",
                "pipeline.alerts.overrides[0].expected_false_alarms_per_year",
            ]
        );
    }

    #[test]
    fn bad_routes_are_all_reported_by_key_path() {
        let r = route(
            r#"
            [[routes]]
            name = "a"
            channel = ""
            warehouses = ["ETL_[", "*"]
            min_excess_credits = -1
            min_excess_cost = 5
            mute = [{ from = "2025-12-24", to = "2025-12-01" }]

            [[routes]]
            name = "a"
            channel = "C1"
            accounts = []
        "#,
        );
        let paths: Vec<String> = r.problems(None).into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            [
                "pipeline.alerts.routes[0].channel",
                "pipeline.alerts.routes[0].warehouses",
                "pipeline.alerts.routes[0].min_excess_credits",
                "pipeline.alerts.routes[0].min_excess_cost",
                "pipeline.alerts.routes[0].mute[0].to",
                "pipeline.alerts.routes[1].name",
                "pipeline.alerts.routes[1].accounts",
            ]
        );
    }
}
