//! The incident chart: a warehouse's daily credits around an incident, the model's expected spend (dashed)
//! and the range it considered normal (a band), the anomalous days marked. Plain SVG written here because the
//! shape is fixed and small (four layers, three axis labels): a plotting library would add weight to the
//! binary for no gain, and SVG needs no JavaScript. The legend sits below the plot so it never hides a day.

use chrono::NaiveDate;
use maud::{Markup, html};
use std::collections::BTreeMap;

/// One day of the chart: detect's [`ExpectedDay`], the same the report's charts draw.
pub use snowpatrol_detect::model::ExpectedDay as ChartDay;

const W: f64 = 900.0;
const H: f64 = 300.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 12.0;
const PLOT_BOTTOM: f64 = 240.0;

fn path(points: &[(f64, f64)]) -> String {
    points
        .iter()
        .enumerate()
        .map(|(i, (x, y))| format!("{}{x:.1},{y:.1}", if i == 0 { "M" } else { " L" }))
        .collect()
}

/// The SVG; `anomalies` maps each flagged day to its expected credits (for the tooltip).
pub fn usage_chart(days: &[ChartDay], anomalies: &BTreeMap<NaiveDate, f64>) -> Markup {
    if days.is_empty() {
        return html! { p.muted { "No daily usage loaded for this warehouse yet." } };
    }
    // A model may state no upper bound for a day (an infinite `normal_high`) or a band far above anything the
    // warehouse spent; neither may flatten the chart, so model values are kept finite and within 3x the
    // highest day.
    let highest = days
        .iter()
        .map(|d| d.credits)
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let cap = |v: Option<f64>| {
        v.filter(|v| v.is_finite())
            .map(|v| v.clamp(0.0, highest.max(1e-9) * 3.0))
    };
    let days: Vec<ChartDay> = days
        .iter()
        .map(|d| ChartDay {
            date: d.date,
            credits: if d.credits.is_finite() {
                d.credits
            } else {
                0.0
            },
            expected: cap(d.expected),
            normal_low: cap(d.normal_low),
            normal_high: cap(d.normal_high),
        })
        .collect();
    let days = &days[..];
    let top_value = days
        .iter()
        .map(|d| {
            d.credits
                .max(d.normal_high.unwrap_or(0.0))
                .max(d.expected.unwrap_or(0.0))
        })
        .fold(0.0_f64, f64::max)
        .max(1e-9)
        * 1.1;
    let step = (W - LEFT - RIGHT) / (days.len().max(2) - 1) as f64;
    let x = |i: usize| LEFT + step * i as f64;
    let y = |v: f64| PLOT_BOTTOM - (v / top_value) * (PLOT_BOTTOM - TOP);
    let actual: Vec<(f64, f64)> = days
        .iter()
        .enumerate()
        .map(|(i, d)| (x(i), y(d.credits)))
        .collect();
    let expected: Vec<(f64, f64)> = days
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.expected.map(|e| (x(i), y(e))))
        .collect();
    let band_top: Vec<(f64, f64)> = days
        .iter()
        .enumerate()
        .filter_map(|(i, d)| Some((x(i), y(d.normal_high?))))
        .collect();
    let mut band_bottom: Vec<(f64, f64)> = days
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            d.normal_high
                .map(|_| (x(i), y(d.normal_low.unwrap_or(0.0))))
        })
        .collect();
    band_bottom.reverse();
    let band = if band_top.len() >= 2 {
        Some(format!(
            "{} L{} Z",
            path(&band_top),
            &path(&band_bottom)[1..]
        ))
    } else {
        None
    };
    let labels = [0, days.len() / 2, days.len() - 1];
    html! {
        // Every SVG element is closed (`{}`): inside HTML an SVG `<line>` is not a void element, and an unclosed
        // one swallows everything after it.
        svg.chart xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (W) " " (H) } width="100%"
            role="img" aria-label="Daily credits with the expected range; anomalous days in red" {
            @for frac in [0.0, 0.5, 1.0] {
                @let v = top_value / 1.1 * frac;
                line x1=(LEFT) x2=(W - RIGHT) y1=(format!("{:.1}", y(v))) y2=(format!("{:.1}", y(v))) stroke="#e4e7ec" {}
                text x=(LEFT - 6.0) y=(format!("{:.1}", y(v) + 4.0)) text-anchor="end" font-size="11" fill="#667085" {
                    (format!("{v:.1}"))
                }
            }
            @if let Some(b) = &band { path d=(b) fill="#2f6feb" fill-opacity="0.12" stroke="none" {} }
            @if expected.len() >= 2 {
                path d=(path(&expected)) fill="none" stroke="#667085" stroke-dasharray="5 4" stroke-width="1.5" {}
            }
            path.actual d=(path(&actual)) fill="none" stroke="#101828" stroke-width="2" {}
            @for (i, d) in days.iter().enumerate() {
                @if let Some(e) = anomalies.get(&d.date) {
                    circle.anomaly cx=(format!("{:.1}", x(i))) cy=(format!("{:.1}", y(d.credits))) r="5" fill="#cf222e" {
                        title { (d.date) ": " (format!("{:.2}", d.credits)) " credits vs " (format!("{e:.2}")) " expected" }
                    }
                } @else {
                    circle cx=(format!("{:.1}", x(i))) cy=(format!("{:.1}", y(d.credits))) r="2.5" fill="#101828" {
                        title { (d.date) ": " (format!("{:.2}", d.credits)) " credits" }
                    }
                }
            }
            @for (n, i) in labels.into_iter().enumerate() {
                // The first and last labels are anchored inwards so neither is cut off at the edge.
                text x=(format!("{:.1}", x(i))) y=(PLOT_BOTTOM + 16.0) text-anchor=(["start", "middle", "end"][n])
                    font-size="11" fill="#667085" {
                    (days[i].date.format("%Y-%m-%d"))
                }
            }
            g font-size="12" fill="#1d2433" {
                line x1=(LEFT) x2=(LEFT + 24.0) y1="282" y2="282" stroke="#101828" stroke-width="2" {}
                text x=(LEFT + 30.0) y="286" { "credits per day" }
                line x1=(LEFT + 150.0) x2=(LEFT + 174.0) y1="282" y2="282" stroke="#667085" stroke-dasharray="5 4" {}
                text x=(LEFT + 180.0) y="286" { "expected" }
                rect x=(LEFT + 260.0) y="276" width="24" height="12" fill="#2f6feb" fill-opacity="0.12" {}
                text x=(LEFT + 290.0) y="286" { "normal range" }
                circle cx=(LEFT + 400.0) cy="282" r="5" fill="#cf222e" {}
                text x=(LEFT + 410.0) y="286" { "anomalous day" }
            }
        }
    }
}

/// The hourly panel: credits per hour over the incident's days and the day on each side, bars of the incident's
/// days in red. An hour bills at most size x clusters, so a resize or a scale-out shows as taller bars and a
/// warehouse left running as bars through the night.
pub fn hourly_chart(
    hours: &[(chrono::DateTime<chrono::Utc>, f64)],
    incident: (NaiveDate, NaiveDate),
) -> Markup {
    if hours.is_empty() {
        return html! { p.muted { "No hourly metering loaded for these days." } };
    }
    // The axis runs over whole UTC days, so an hour without metering (the warehouse was suspended) is a gap.
    let midnight = |t: chrono::DateTime<chrono::Utc>| {
        t.date_naive()
            .and_hms_opt(0, 0, 0)
            .map_or(t, |m| m.and_utc())
    };
    let first = midnight(hours[0].0);
    let end = midnight(hours[hours.len() - 1].0) + chrono::Duration::days(1);
    let span_hours = (end - first).num_hours().max(1) as f64;
    let top = hours
        .iter()
        .map(|h| h.1)
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max)
        .max(1e-9)
        * 1.1;
    let width = (W - LEFT - RIGHT) / span_hours;
    let x = |t: chrono::DateTime<chrono::Utc>| LEFT + (t - first).num_hours() as f64 * width;
    let y = |v: f64| PLOT_BOTTOM - (v.max(0.0) / top) * (PLOT_BOTTOM - TOP);
    let days: Vec<NaiveDate> = {
        let mut d: Vec<NaiveDate> = hours.iter().map(|h| h.0.date_naive()).collect();
        d.dedup();
        d
    };
    html! {
        // Every element closed (`{}`), as in the daily chart.
        svg.chart.hourly xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (W) " " (H - 40.0) } width="100%"
            role="img" aria-label="Credits per hour; the incident's days in red" {
            @for frac in [0.0, 0.5, 1.0] {
                @let v = top / 1.1 * frac;
                line x1=(LEFT) x2=(W - RIGHT) y1=(format!("{:.1}", y(v))) y2=(format!("{:.1}", y(v))) stroke="#e4e7ec" {}
                text x=(LEFT - 6.0) y=(format!("{:.1}", y(v) + 4.0)) text-anchor="end" font-size="11" fill="#667085" {
                    (format!("{v:.2}"))
                }
            }
            @for (t, v) in hours {
                @let inside = (incident.0..=incident.1).contains(&t.date_naive());
                rect.bar x=(format!("{:.1}", x(*t) + 0.5)) y=(format!("{:.1}", y(*v)))
                    width=(format!("{:.1}", (width - 1.0).max(0.5))) height=(format!("{:.1}", PLOT_BOTTOM - y(*v)))
                    fill=(if inside { "#cf222e" } else { "#101828" }) fill-opacity=(if inside { "0.85" } else { "0.55" }) {
                    title { (t.format("%Y-%m-%d %H:00 UTC")) ": " (format!("{v:.3}")) " credits" }
                }
            }
            @for d in &days {
                @let at = x(d.and_hms_opt(0, 0, 0).map_or(first, |n| n.and_utc()));
                line x1=(format!("{at:.1}")) x2=(format!("{at:.1}")) y1=(TOP) y2=(PLOT_BOTTOM) stroke="#d0d5dd" stroke-dasharray="2 3" {}
                text x=(format!("{:.1}", at + 4.0)) y=(PLOT_BOTTOM + 16.0) font-size="11" fill="#667085" { (d.format("%Y-%m-%d")) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(n: u64) -> Vec<ChartDay> {
        (0..n)
            .map(|i| ChartDay {
                date: NaiveDate::from_ymd_opt(2025, 1, 1).unwrap() + chrono::Days::new(i),
                credits: if i == n - 2 {
                    40.0
                } else {
                    10.0 + (i % 7) as f64
                },
                expected: Some(12.0),
                normal_low: Some(8.0),
                // A model may leave a day unbounded above: the chart must stay drawn.
                normal_high: Some(if i == 3 { f64::INFINITY } else { 18.0 }),
            })
            .collect()
    }

    /// Every coordinate is a finite number inside the view box, the band closes, the flagged day is red, and
    /// the axis dates carry their year.
    #[test]
    fn chart_coordinates_are_inside_the_view_box() {
        let d = days(40);
        let flagged = BTreeMap::from([(d[38].date, 12.0)]);
        let svg = usage_chart(&d, &flagged).into_string();
        assert!(svg.starts_with("<svg class=\"chart\""), "{svg}");
        assert_eq!(svg.matches("class=\"anomaly\"").count(), 1);
        assert!(
            svg.contains("2025-01-01") && svg.contains("2025-02-09"),
            "dates with years"
        );
        let numbers: Vec<f64> = svg
            .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
            .filter(|s| s.contains('.') && s.len() > 1)
            .filter_map(|s| s.parse().ok())
            .collect();
        assert!(
            numbers
                .iter()
                .all(|v| v.is_finite() && *v >= -1.0 && *v <= W),
            "{svg}"
        );
        let band = svg.split("fill-opacity=\"0.12\"").next().unwrap();
        assert!(band.contains(" Z\""), "the band is a closed path: {svg}");
        for element in ["line", "rect", "circle"] {
            assert_eq!(
                svg.matches(&format!("<{element} ")).count(),
                svg.matches(&format!("</{element}>")).count(),
                "every <{element}> is closed: {svg}"
            );
        }
        assert!(
            usage_chart(&[], &BTreeMap::new())
                .into_string()
                .contains("No daily usage")
        );
    }
}
