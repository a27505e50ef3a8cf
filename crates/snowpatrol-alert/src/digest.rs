//! The Slack digest of one predict run: every incident the run found that nobody was told about yet, in one
//! message, ranked by excess.
//!
//! One message per run instead of one per incident, because a bad day touches many warehouses at once (a
//! shared upstream backfill, a release): 100 posts in a minute bury the channel and hit Slack's rate limit,
//! while the reader wants to know *how much* went wrong and *where first*.

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::SlackMessage;
use crate::feedback::{feedback_menu, incident_block_id};

use crate::format::{credits, plural, slack as esc, truncate};
use crate::slack::{
    MAX_BLOCKS, MAX_FALLBACK_CHARS, MAX_SECTION_CHARS, code, context, header, section,
};
use slack_morphism::blocks::{
    SlackBlock, SlackBlockId, SlackBlockMarkDownText, SlackBlockText, SlackSectionBlock,
};

/// Incidents listed one per line in the message; the rest are counted ("and 12 more"). A reader acts on the
/// first few; the report has them all.
pub const DIGEST_TOP_INCIDENTS: usize = 15;
/// Incidents whose chart is posted as a reply in the digest's thread (the largest by excess); one upload
/// each, so bounded to keep a bad day from becoming a burst of uploads.
pub const DIGEST_CHART_REPLIES: usize = 5;
/// Characters of the "why" line of each incident.
const WHY_CHARS: usize = 220;

/// One incident as the digest announces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigestIncident {
    pub incident_id: i64,
    pub account_name: String,
    pub warehouse_name: String,
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    /// Anomalous days in the incident.
    pub days: u32,
    pub excess_credits: f64,
    /// What the model expected on those days, for the excess in percent (None when unknown).
    pub expected_credits: Option<f64>,
    /// The detector's explanation of the incident's largest day.
    pub why: String,
    /// The excess in money at the account's price, when known (else the digest's `price_per_credit` applies).
    #[serde(default)]
    pub excess_cost: Option<f64>,
    /// The root cause of the incident's largest day (its summary sentence), when looked up.
    #[serde(default)]
    pub root_cause: Option<String>,
}

impl DigestIncident {
    fn display_key(&self) -> String {
        format!("{}.{}", self.account_name, self.warehouse_name)
    }
}

/// What one predict run has to tell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    pub run_id: String,
    pub generated_at: DateTime<Utc>,
    pub price_per_credit: Option<f64>,
    /// ISO code shown beside money, when known.
    #[serde(default)]
    pub currency: Option<String>,
    /// Incidents not announced before; the message ranks them by excess itself.
    pub incidents: Vec<DigestIncident>,
    /// Incidents of the scored window that were not repeated, and why (shown so silence is never a mystery).
    pub already_announced: usize,
    pub acknowledged: usize,
    /// Incidents held back by the routes' minimums or mute windows (considered again on the next run).
    #[serde(default)]
    pub held_back: usize,
    /// Where the full report was written, if anywhere.
    pub report_path: Option<String>,
    /// Offer the feedback menu on each listed incident (needs Slack interactivity pointed at the daemon and a
    /// signing secret, see `crate::feedback`).
    #[serde(default)]
    pub feedback: bool,
}

/// `ISO date` of a day an explanation starts with ("2025-06-28: 50.29 credits ..."), removed where the date
/// is shown beside it already.
pub(crate) fn without_date_prefix(explanation: &str, date: Option<NaiveDate>) -> &str {
    let t = explanation.trim();
    match t.split_once(": ") {
        Some((head, rest))
            if NaiveDate::parse_from_str(head, "%Y-%m-%d")
                .is_ok_and(|d| date.is_none_or(|x| x == d)) =>
        {
            rest
        }
        _ => t,
    }
}

fn days_text(i: &DigestIncident) -> String {
    if i.first_day == i.last_day {
        format!("{}", i.first_day)
    } else {
        format!("{} – {} ({} days)", i.first_day, i.last_day, i.days)
    }
}

/// Characters of the root-cause line of each listed incident.
const CAUSE_CHARS: usize = 400;

/// An incident's excess in money: at its account's price, else at the digest's.
fn cost_of(i: &DigestIncident, d: &Digest) -> Option<f64> {
    i.excess_cost
        .or_else(|| d.price_per_credit.map(|p| p * i.excess_credits.max(0.0)))
}

/// ", cost EUR 12.00" for a known amount, nothing otherwise.
fn money_text(cost: Option<f64>, d: &Digest) -> String {
    cost.map_or(String::new(), |c| {
        format!(", cost {}", crate::format::money(c, d.currency.as_deref()))
    })
}

/// The money of several incidents, when every one has a price.
fn total_cost(incidents: &[&DigestIncident], d: &Digest) -> Option<f64> {
    incidents.iter().map(|i| cost_of(i, d)).sum()
}

/// Excess credits counted towards the totals: an incident below its expectation adds nothing.
fn counted_excess(incidents: &[&DigestIncident]) -> f64 {
    incidents.iter().map(|i| i.excess_credits.max(0.0)).sum()
}

/// The digest as one Slack message within Slack's limits: a header with the totals, the top incidents by
/// excess (one line each, with why), "and N more", and a context line with the run and what was not
/// repeated. Returns None when there is nothing new to announce.
pub fn digest_message(d: &Digest) -> Option<SlackMessage> {
    if d.incidents.is_empty() {
        return None;
    }
    let mut ranked: Vec<&DigestIncident> = d.incidents.iter().collect();
    ranked.sort_by(|a, b| {
        b.excess_credits
            .total_cmp(&a.excess_credits)
            .then_with(|| a.display_key().cmp(&b.display_key()))
            .then(a.first_day.cmp(&b.first_day))
    });
    let n = ranked.len();
    let total = counted_excess(&ranked);
    let title = format!(
        "Snowflake spend: {} · +{} credits{}",
        plural(n, "new cost incident", "new cost incidents"),
        credits(total),
        money_text(total_cost(&ranked, d), d)
    );
    let mut blocks = vec![header(&title), section(summary_text(&ranked, total, d))];

    // One section per listed incident (its own block id, so feedback can update it in place); the "why" is
    // bounded, so a section stays far below MAX_SECTION_CHARS.
    let shown = n.min(DIGEST_TOP_INCIDENTS);
    for i in &ranked[..shown] {
        blocks.push(incident_section(i, d));
        if blocks.len() >= MAX_BLOCKS - 3 {
            break;
        }
    }
    if shown < n {
        blocks.push(section(more_text(&ranked[shown..], d)));
    }
    blocks.push(context(context_text(d)));

    Some(SlackMessage {
        text: truncate(
            &fallback_text(&title, &ranked, &d.run_id),
            MAX_FALLBACK_CHARS,
        ),
        blocks,
    })
}

/// The summary under the header: how many incidents in how many warehouses, the total excess, and which
/// warehouse has the largest share of it.
fn summary_text(ranked: &[&DigestIncident], total: f64, d: &Digest) -> String {
    let warehouses = {
        let mut k: Vec<String> = ranked.iter().map(|i| i.display_key()).collect();
        k.sort();
        k.dedup();
        k.len()
    };
    let mut summary = format!(
        "*{}* in {} · excess *{} credits*{}",
        plural(ranked.len(), "new incident", "new incidents"),
        plural(warehouses, "warehouse", "warehouses"),
        credits(total),
        money_text(total_cost(ranked, d), d)
    );
    if let Some(top) = ranked.first() {
        let share = if total > 0.0 {
            100.0 * top.excess_credits.max(0.0) / total
        } else {
            0.0
        };
        let _ = write!(
            summary,
            "\nLargest: *{}* ({:.0}% of the excess)",
            esc(&top.display_key()),
            share
        );
    }
    summary
}

/// One listed incident's section: warehouse, days, excess (and percent, and cost), and the shortened why;
/// with the feedback menu when the digest offers it.
fn incident_section(i: &DigestIncident, d: &Digest) -> SlackBlock {
    let pct = i
        .expected_credits
        .filter(|e| *e > 0.0)
        .map(|e| format!(", +{:.0}%", 100.0 * i.excess_credits / e))
        .unwrap_or_default();
    let why = truncate(
        without_date_prefix(&i.why, (i.first_day == i.last_day).then_some(i.first_day)),
        WHY_CHARS,
    );
    let mut line = format!(
        "• *{}* · {} · *+{} credits*{}{}\n      _{}_",
        truncate(&esc(&i.display_key()), 600),
        days_text(i),
        credits(i.excess_credits),
        pct,
        money_text(cost_of(i, d), d),
        esc(&why)
    );
    if let Some(cause) = i.root_cause.as_deref().filter(|c| !c.is_empty()) {
        let _ = write!(
            line,
            "\n      Root cause: {}",
            esc(&truncate(cause, CAUSE_CHARS))
        );
    }
    let mut block = SlackSectionBlock::new()
        .with_block_id(SlackBlockId::new(incident_block_id(i.incident_id)))
        .with_text(SlackBlockText::MarkDown(SlackBlockMarkDownText::new(
            truncate(&line, MAX_SECTION_CHARS),
        )));
    if d.feedback {
        block = block.with_accessory(feedback_menu(i.incident_id).into());
    }
    block.into()
}

/// The "…and N more" line for the incidents not listed, with where the report has them all.
fn more_text(rest: &[&DigestIncident], d: &Digest) -> String {
    let rest_excess = counted_excess(rest);
    let mut more = format!(
        "…and {} more {}, +{} credits{} together.",
        rest.len(),
        if rest.len() == 1 {
            "incident"
        } else {
            "incidents"
        },
        credits(rest_excess),
        money_text(total_cost(rest, d), d)
    );
    if let Some(path) = &d.report_path {
        let _ = write!(more, " The report has them all: {}", code(path));
    }
    more
}

/// The context line: the run, what was not repeated and why, and the commands that list and acknowledge.
fn context_text(d: &Digest) -> String {
    let mut ctx = format!(
        "Run {} · generated {}",
        code(&d.run_id),
        d.generated_at.format("%Y-%m-%d %H:%M UTC")
    );
    if d.already_announced > 0 {
        let _ = write!(
            ctx,
            " · {} announced before, not repeated",
            plural(d.already_announced, "incident", "incidents")
        );
    }
    if d.acknowledged > 0 {
        let _ = write!(
            ctx,
            " · {} acknowledged, not repeated",
            plural(d.acknowledged, "incident", "incidents")
        );
    }
    if d.held_back > 0 {
        let _ = write!(
            ctx,
            " · {} held back by a route's minimum, a mute window or an override (`snowpatrol explain-alert ID` says why)",
            plural(d.held_back, "incident", "incidents")
        );
    }
    let _ = write!(
        ctx,
        " · `snowpatrol anomalies --open` lists them; `snowpatrol anomalies ack ID` acknowledges one"
    );
    ctx
}

/// The plain-text fallback: the title and the three largest incidents.
fn fallback_text(title: &str, ranked: &[&DigestIncident], run_id: &str) -> String {
    let mut text = format!("{title}.");
    for i in ranked.iter().take(3) {
        let _ = write!(
            text,
            " {} {} +{} credits;",
            i.display_key(),
            days_text(i),
            credits(i.excess_credits)
        );
    }
    if ranked.len() > 3 {
        let _ = write!(text, " and {} more", ranked.len() - 3);
    }
    let _ = write!(text, " (run {run_id}).");
    text
}

/// The comment of an incident's chart in the digest's thread: which incident, how much, and the detector's
/// full reason (the digest line shows a shortened one).
pub fn reply_text(i: &DigestIncident, d: &Digest) -> String {
    let why = without_date_prefix(&i.why, (i.first_day == i.last_day).then_some(i.first_day));
    let mut text = format!(
        "*{}* · {} · +{} credits{}\n{}",
        esc(&i.display_key()),
        days_text(i),
        credits(i.excess_credits),
        money_text(cost_of(i, d), d),
        esc(why)
    );
    if let Some(cause) = i.root_cause.as_deref().filter(|c| !c.is_empty()) {
        let _ = write!(text, "\n*Root cause:* {}", esc(cause));
    }
    truncate(&text, MAX_SECTION_CHARS)
}

/// The incidents that get a chart reply: the largest [`DIGEST_CHART_REPLIES`] by excess, in that order.
pub fn chart_reply_incidents(d: &Digest) -> Vec<&DigestIncident> {
    let mut ranked: Vec<&DigestIncident> = d.incidents.iter().collect();
    ranked.sort_by(|a, b| {
        b.excess_credits
            .total_cmp(&a.excess_credits)
            .then(a.incident_id.cmp(&b.incident_id))
    });
    ranked.truncate(DIGEST_CHART_REPLIES);
    ranked
}
