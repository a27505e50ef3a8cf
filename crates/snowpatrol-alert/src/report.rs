//! The Markdown report of one predict run.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use chrono::{Duration, NaiveDate};

use crate::format::{credits, markdown, money, plural, score};
use crate::{AnomalyDay, REPORT_TITLE, Report, WarehouseSection, chart_file_name};

/// Days of context shown before and after each anomalous day in the per-warehouse table.
/// Three days either side shows the weekday pattern the anomaly broke without drowning it;
/// the chart carries the full month.
pub const CONTEXT_DAYS: i64 = 3;

/// Renders the run's report.
///
/// The report links each warehouse's chart by [`chart_file_name`], so the pipeline must save the
/// charts in the same directory as the Markdown file. Sections without anomalies are skipped; a
/// run without any anomaly still gets a short report saying so, so that "no report" always
/// means "did not run".
pub fn render_markdown(report: &Report) -> String {
    let mut out = String::new();
    // `write!` into a String cannot fail; the results are ignored on purpose throughout.
    let _ = writeln!(out, "# {REPORT_TITLE}\n");
    let _ = writeln!(
        out,
        "- Run: `{}`\n- Generated: {}",
        report.run_id.replace('`', "'"),
        report.generated_at.format("%Y-%m-%d %H:%M UTC")
    );
    let currency = report.currency.as_deref();
    if let Some(price) = report.price_per_credit {
        let _ = writeln!(out, "- Price per credit: {}", money(price, currency));
    }

    let sections: Vec<&WarehouseSection> = report.anomalous_sections().collect();
    if sections.is_empty() {
        render_no_anomalies(&mut out, report);
        return out;
    }

    let total_excess: f64 = sections.iter().map(|s| s.total_excess_credits()).sum();
    let _ = write!(
        out,
        "- Anomalous days: {} in {} warehouse{}\n- Total excess credits: {}",
        report.anomaly_count(),
        sections.len(),
        if sections.len() == 1 { "" } else { "s" },
        credits(total_excess)
    );
    let total_cost: Option<f64> = sections
        .iter()
        .map(|s| {
            s.price_per_credit
                .or(report.price_per_credit)
                .map(|p| s.total_excess_credits() * p)
        })
        .sum();
    if let Some(cost) = total_cost {
        let _ = write!(out, " (cost {})", money(cost, currency));
    }
    out.push('\n');

    for section in sections {
        render_section(
            &mut out,
            section,
            section.price_per_credit.or(report.price_per_credit),
        );
    }
    render_not_alerted(&mut out, report);
    out
}

/// The body of a report without anomalous sections: what was held back or acknowledged, or that every
/// scored day was normal.
fn render_no_anomalies(out: &mut String, report: &Report) {
    if !report.held_back.is_empty() {
        render_not_alerted(out, report);
    } else if report.acknowledged_incidents > 0 {
        // Saying "everything was normal" here would be untrue: people already looked at these.
        let n = report.acknowledged_incidents;
        let (was, is, them) = if n == 1 {
            ("was", "is", "it")
        } else {
            ("were", "are", "them")
        };
        let _ = writeln!(
            out,
            "\nNo unacknowledged anomalies. {} of the scored days {was} acknowledged and {is} not repeated here (`snowpatrol anomalies` lists {them}).",
            plural(n, "incident", "incidents"),
        );
    } else {
        let _ = writeln!(
            out,
            "\nNo anomalous activity found: every scored warehouse-day was within its expected range."
        );
    }
}

/// What this run did not alert, and why: acknowledged incidents, and those a route held back.
fn render_not_alerted(out: &mut String, report: &Report) {
    if report.acknowledged_incidents == 0 && report.held_back.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n## Not alerted\n");
    if report.acknowledged_incidents > 0 {
        let _ = writeln!(
            out,
            "- {} of the scored days: not repeated (and not listed above).",
            plural(
                report.acknowledged_incidents,
                "acknowledged incident",
                "acknowledged incidents"
            ),
        );
    }
    for h in &report.held_back {
        let _ = writeln!(
            out,
            "- {} from {}, {} excess credits: held back ({}); considered again on the next run.",
            markdown(&h.warehouse),
            h.first_day,
            credits(h.excess_credits),
            markdown(&h.reasons.join("; "))
        );
    }
}

fn render_section(out: &mut String, section: &WarehouseSection, price: Option<f64>) {
    let _ = writeln!(
        out,
        "\n## {}\n\nModel version {}.\n",
        markdown(&section.display_key()),
        section.model_version
    );

    let mut anomalies: Vec<&AnomalyDay> = section.anomalies.iter().collect();
    anomalies.sort_by_key(|a| a.date);

    out.push_str("| Date | Actual credits | Expected credits | Excess credits |");
    if price.is_some() {
        out.push_str(" Excess cost |");
    }
    out.push_str(
        " Score | Threshold |\n|:-----|---------------:|-----------------:|---------------:|",
    );
    if price.is_some() {
        out.push_str("------------:|");
    }
    out.push_str("------:|----------:|\n");
    for a in &anomalies {
        let _ = write!(
            out,
            "| {} | {} | {} | {} |",
            a.date,
            credits(a.actual_credits),
            credits(a.expected_credits),
            credits(a.excess_credits)
        );
        if let Some(p) = price {
            let _ = write!(out, " {} |", credits(a.excess_credits * p));
        }
        let _ = writeln!(out, " {} | {} |", score(a.score), score(a.threshold));
    }

    let explained: Vec<&&AnomalyDay> = anomalies
        .iter()
        .filter(|a| !a.explanation.trim().is_empty() || section.root_causes.contains_key(&a.date))
        .collect();
    if !explained.is_empty() {
        out.push('\n');
        for a in explained {
            let why = crate::digest::without_date_prefix(&a.explanation, Some(a.date));
            let _ = writeln!(out, "- {}: {}", a.date, markdown(why));
            if let Some(cause) = section.root_causes.get(&a.date).filter(|c| !c.is_empty()) {
                let _ = writeln!(out, "  - Root cause: {}", markdown(cause));
            }
        }
    }

    let _ = writeln!(
        out,
        "\n![Daily credits of {}]({})",
        markdown(&section.display_key()),
        chart_file_name(section)
    );

    render_context_table(out, section, &anomalies);
}

/// The "surrounding days" table: history within [`CONTEXT_DAYS`] of any anomaly, with a `…` row
/// where days are skipped, so two anomalies a fortnight apart do not produce a 20-row table.
fn render_context_table(out: &mut String, section: &WarehouseSection, anomalies: &[&AnomalyDay]) {
    let anomaly_dates: BTreeSet<NaiveDate> = anomalies.iter().map(|a| a.date).collect();
    let near_anomaly = |d: NaiveDate| {
        anomaly_dates
            .iter()
            .any(|a| (d - *a).num_days().abs() <= CONTEXT_DAYS)
    };
    let mut rows: Vec<_> = section
        .history
        .iter()
        .filter(|p| near_anomaly(p.date))
        .collect();
    rows.sort_by_key(|p| p.date);
    rows.dedup_by_key(|p| p.date);
    if rows.is_empty() {
        return;
    }

    out.push_str("\n### Daily credits around the anomal");
    out.push_str(if anomaly_dates.len() == 1 {
        "y\n\n"
    } else {
        "ies\n\n"
    });
    out.push_str(
        "| Date | Day | Credits | Expected | |\n|:-----|:----|--------:|---------:|:--|\n",
    );
    let mut previous: Option<NaiveDate> = None;
    for p in rows {
        if let Some(prev) = previous
            && p.date - prev > Duration::days(1)
        {
            out.push_str("| … | | | | |\n");
        }
        previous = Some(p.date);
        let marker = if anomaly_dates.contains(&p.date) {
            "**anomaly**"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            p.date,
            p.date.format("%a"),
            credits(p.credits),
            p.expected.map_or_else(|| "–".to_string(), credits),
            marker
        );
    }
}
