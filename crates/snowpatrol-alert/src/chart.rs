//! One PNG chart per anomalous warehouse: recent daily credits, the model's expectation and the
//! anomalous days marked.
//!
//! Rendering uses plotters' bitmap backend with a bundled DejaVu Sans registered through
//! `ab_glyph`, so it needs no system font libraries (fontconfig/freetype) and draws the same
//! pixels on every machine and in minimal containers.

use std::sync::OnceLock;

use chrono::{Duration, NaiveDate};
use plotters::coord::types::{RangedCoordf64, RangedCoordi32};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::{AlertError, DailyPoint, WarehouseSection};

/// DejaVu Sans (Bitstream Vera licence, see `assets/LICENSE-DejaVu.txt`).
static FONT_TTF: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

const MIN_SIDE: u32 = 200;
const MAX_SIDE: u32 = 4000;

const ACTUAL: RGBColor = RGBColor(31, 119, 180);
const EXPECTED: RGBColor = RGBColor(120, 120, 120);
const ANOMALY: RGBColor = RGBColor(214, 39, 40);

/// Registers the bundled font as plotters' `sans-serif` once per process.
///
/// plotters' ab_glyph backend resolves fonts by family name from a global table, and its mesh
/// and legend use `sans-serif`, so registering under that name covers every text it draws.
fn ensure_font() -> Result<(), AlertError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        let normal = register_font("sans-serif", FontStyle::Normal, FONT_TTF).is_ok();
        // Bold captions fall back to Normal inside plotters when Bold is missing; registering
        // the same face keeps that explicit.
        let bold = register_font("sans-serif", FontStyle::Bold, FONT_TTF).is_ok();
        normal && bold
    });
    if ok {
        Ok(())
    } else {
        Err(AlertError::FontUnavailable)
    }
}

/// Renders `section` as a PNG of `width` x `height` pixels (each side 200..=4000).
///
/// The x axis spans the history and the anomalies; days without data are simply absent from the
/// actual line. An empty section yields a valid chart that says it has no data, so the report
/// never links a missing file.
pub fn render_chart_png(
    section: &WarehouseSection,
    width: u32,
    height: u32,
) -> Result<Vec<u8>, AlertError> {
    if !(MIN_SIDE..=MAX_SIDE).contains(&width) || !(MIN_SIDE..=MAX_SIDE).contains(&height) {
        return Err(AlertError::InvalidChartSize {
            width,
            height,
            min: MIN_SIDE,
            max: MAX_SIDE,
        });
    }
    ensure_font()?;

    let key = section.display_key();
    let chart_err = |message: String| AlertError::Chart {
        warehouse: key.clone(),
        message,
    };

    // Bounded by MAX_SIDE, so this cannot overflow usize.
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        draw(&root, section, &key).map_err(chart_err)?;
        root.present().map_err(|e| chart_err(e.to_string()))?;
    }
    encode_png(&rgb, width, height)
}

fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, AlertError> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(rgb)?;
        writer.finish()?;
    }
    Ok(out)
}

/// Finite (x, y) values only: NaN or infinite credits would make plotters compute a NaN range.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Days shown before the first anomaly and after the last one: a month of context shows the weekly pattern the
/// anomaly broke, a week after shows whether it went on.
const DAYS_BEFORE: i64 = 28;
const DAYS_AFTER: i64 = 7;
/// Height of the band above the plot holding the title and the legend (never over the data).
const HEADER_PX: u32 = 58;

const BAND: RGBColor = RGBColor(214, 226, 240);

/// The bitmap, or one part of it.
type Area<'b> = DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>;
/// The plot below the header: x counts days from the first day shown, y is credits.
type Plot<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordi32, RangedCoordf64>>;

fn draw(root: &Area<'_>, section: &WarehouseSection, key: &str) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let title = format!("{key} — daily credits (model v{})", section.model_version);

    let history = windowed_history(section);
    let Some(days) = DayAxis::spanning(&history, section) else {
        return draw_no_data(root, &title);
    };
    let credits = CreditAxis::spanning(&history, section);

    // Title and legend live in a header band above the plot, so no legend ever hides a day.
    let (header, plot) = root.split_vertically(HEADER_PX);
    draw_header(&header, &title, &history, !section.anomalies.is_empty())?;
    // With a root cause's hourly shape: the lower third shows that day's hours against the usual curve.
    let plot = match &section.hourly {
        Some(panel) if panel.shape.day.len() == 24 && panel.shape.usual.len() == 24 => {
            let height = plot.dim_in_pixel().1;
            let (daily, hourly) = plot.split_vertically(height * 62 / 100);
            draw_hourly(&hourly, panel)?;
            daily
        }
        _ => plot,
    };

    let mut chart = plot_with_mesh(&plot, days, credits)?;
    draw_normal_band(&mut chart, &history, days, credits)?;
    draw_expected(&mut chart, &history, days)?;
    draw_actual(&mut chart, &history, days)?;
    draw_anomalies(&mut chart, section, days)
}

/// The history days the chart shows, by date.
///
/// The window surrounds the anomalies (the history may reach further either way); without anomalies it
/// is the whole history.
fn windowed_history(section: &WarehouseSection) -> Vec<&DailyPoint> {
    let window = {
        let first_a = section.anomalies.iter().map(|a| a.date).min();
        let last_a = section.anomalies.iter().map(|a| a.date).max();
        move |d: NaiveDate| match (first_a, last_a) {
            (Some(f), Some(l)) => {
                d >= f - Duration::days(DAYS_BEFORE) && d <= l + Duration::days(DAYS_AFTER)
            }
            _ => true,
        }
    };
    let mut history: Vec<_> = section.history.iter().filter(|p| window(p.date)).collect();
    history.sort_by_key(|p| p.date);
    history
}

/// The chart of a section with no day to draw: the title and a sentence saying so.
fn draw_no_data(root: &Area<'_>, title: &str) -> Result<(), String> {
    let font = ("sans-serif", 18).into_font().color(&BLACK);
    root.draw_text(title, &font, (10, 10))
        .map_err(|e| e.to_string())?;
    root.draw_text("No daily data for this warehouse.", &font, (10, 40))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The x axis: the days from the first to the last shown (history or anomaly), as day numbers.
#[derive(Clone, Copy)]
struct DayAxis {
    first: NaiveDate,
    last: NaiveDate,
}

impl DayAxis {
    /// None when there is no day at all to show.
    fn spanning(history: &[&DailyPoint], section: &WarehouseSection) -> Option<Self> {
        let dates = history
            .iter()
            .map(|p| p.date)
            .chain(section.anomalies.iter().map(|a| a.date));
        let (Some(first), Some(last)) = (dates.clone().min(), dates.max()) else {
            return None;
        };
        Some(Self { first, last })
    }

    fn x(self, d: NaiveDate) -> i32 {
        (d - self.first).num_days() as i32
    }

    /// The x of the last day.
    fn span(self) -> i32 {
        self.x(self.last)
    }
}

/// The y axis: from 0 (or below the lowest negative value) to a little above the highest value.
#[derive(Clone, Copy)]
struct CreditAxis {
    bottom: f64,
    top: f64,
}

impl CreditAxis {
    fn spanning(history: &[&DailyPoint], section: &WarehouseSection) -> Self {
        let mut values: Vec<f64> = Vec::new();
        for p in history {
            values.extend(finite(p.credits));
            values.extend(p.expected.and_then(finite));
            values.extend(p.normal_high.and_then(finite));
        }
        for a in &section.anomalies {
            values.extend(finite(a.actual_credits));
            values.extend(finite(a.expected_credits));
        }
        let max = values.iter().copied().fold(0.0_f64, f64::max);
        let min = values.iter().copied().fold(0.0_f64, f64::min);
        Self {
            top: if max > 0.0 { max * 1.08 } else { 1.0 },
            bottom: if min < 0.0 { min * 1.08 } else { 0.0 },
        }
    }
}

/// The plot's coordinates, with the grid, the dated x labels and the y description drawn.
fn plot_with_mesh<'a, 'b>(
    area: &'a Area<'b>,
    days: DayAxis,
    credits: CreditAxis,
) -> Result<Plot<'a, 'b>, String> {
    let span = days.span();
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .margin_top(4)
        .margin_right(44)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(-1..span + 1, credits.bottom..credits.top)
        .map_err(|e| e.to_string())?;

    let label_days = usize::try_from(span + 3).unwrap_or(1).clamp(2, 7);
    chart
        .configure_mesh()
        .x_labels(label_days)
        .x_label_formatter(&|x| {
            // With the year: a chart read in January about December must not be ambiguous.
            (days.first + Duration::days(i64::from(*x)))
                .format("%Y-%m-%d")
                .to_string()
        })
        .y_desc("credits")
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(chart)
}

/// Runs of consecutive days (x, low, high) on which `value` has an answer; a day without one ends a run.
///
/// The normal range is drawn as a band, and the expectation as a line, per run: a gap in the model's
/// opinion should not be bridged by a shape that looks like a prediction.
fn consecutive_runs(
    history: &[&DailyPoint],
    days: DayAxis,
    value: &dyn Fn(&DailyPoint) -> Option<(f64, f64)>,
) -> Vec<Vec<(i32, f64, f64)>> {
    let mut runs: Vec<Vec<(i32, f64, f64)>> = Vec::new();
    let mut last_x: Option<i32> = None;
    for p in history {
        match value(p) {
            Some((lo, hi)) => {
                let x = days.x(p.date);
                match (runs.last_mut(), last_x) {
                    (Some(run), Some(lx)) if x == lx + 1 => run.push((x, lo, hi)),
                    _ => runs.push(vec![(x, lo, hi)]),
                }
                last_x = Some(x);
            }
            None => last_x = None,
        }
    }
    runs
}

/// The range the model considered normal, as a band clipped to the plot.
fn draw_normal_band(
    chart: &mut Plot<'_, '_>,
    history: &[&DailyPoint],
    days: DayAxis,
    credits: CreditAxis,
) -> Result<(), String> {
    let band_runs = consecutive_runs(history, days, &|p| {
        let (lo, hi) = (
            p.normal_low.and_then(finite)?,
            p.normal_high.and_then(finite)?,
        );
        Some((lo.max(credits.bottom), hi.min(credits.top)))
    });
    for run in band_runs {
        let mut shape: Vec<(i32, f64)> = run.iter().map(|&(x, _, hi)| (x, hi)).collect();
        shape.extend(run.iter().rev().map(|&(x, lo, _)| (x, lo)));
        if run.len() == 1 {
            // One day: a short bar so it shows at all.
            let (x, lo, hi) = run[0];
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x, lo), (x, hi)],
                    BAND.stroke_width(6),
                )))
                .map_err(|e| e.to_string())?;
            continue;
        }
        chart
            .draw_series(std::iter::once(Polygon::new(shape, BAND.filled())))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The model's expectation, as one line per run of days it has one.
fn draw_expected(
    chart: &mut Plot<'_, '_>,
    history: &[&DailyPoint],
    days: DayAxis,
) -> Result<(), String> {
    for run in consecutive_runs(history, days, &|p| {
        p.expected.and_then(finite).map(|e| (e, e))
    }) {
        let line: Vec<(i32, f64)> = run.iter().map(|&(x, e, _)| (x, e)).collect();
        chart
            .draw_series(LineSeries::new(line, EXPECTED.stroke_width(2)))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The actual daily credits, as a line with a dot per day.
fn draw_actual(
    chart: &mut Plot<'_, '_>,
    history: &[&DailyPoint],
    days: DayAxis,
) -> Result<(), String> {
    let actual: Vec<(i32, f64)> = history
        .iter()
        .filter_map(|p| finite(p.credits).map(|c| (days.x(p.date), c)))
        .collect();
    if !actual.is_empty() {
        chart
            .draw_series(LineSeries::new(actual.clone(), ACTUAL.stroke_width(2)))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(
                actual
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, ACTUAL.filled())),
            )
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Each anomalous day, as a large dot on its actual credits above a bar down to the expectation.
fn draw_anomalies(
    chart: &mut Plot<'_, '_>,
    section: &WarehouseSection,
    days: DayAxis,
) -> Result<(), String> {
    let anomalies: Vec<(i32, f64, f64)> = section
        .anomalies
        .iter()
        .filter_map(|a| {
            let actual = finite(a.actual_credits)?;
            let expected = finite(a.expected_credits).unwrap_or(actual);
            Some((days.x(a.date), actual, expected))
        })
        .collect();
    if !anomalies.is_empty() {
        // The vertical bar from expected to actual is the excess the report talks about.
        chart
            .draw_series(anomalies.iter().map(|&(x, actual, expected)| {
                PathElement::new(vec![(x, expected), (x, actual)], ANOMALY.stroke_width(2))
            }))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(
                anomalies
                    .iter()
                    .map(|&(x, actual, _)| Circle::new((x, actual), 7, ANOMALY.filled())),
            )
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

const USUAL: RGBColor = RGBColor(90, 90, 90);

/// The hourly panel: the day's credits per UTC hour as bars (red where above the usual curve), the usual curve
/// (median of the same hour over the days before) as a line.
fn draw_hourly(area: &Area<'_>, panel: &crate::HourlyPanel) -> Result<(), String> {
    let shape = &panel.shape;
    let top = shape
        .day
        .iter()
        .chain(&shape.usual)
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let top = if top > 0.0 { top * 1.1 } else { 1.0 };
    let caption = format!(
        "{} — credits per hour (UTC) against the usual (median of {} days before)",
        panel.date, shape.history_days
    );
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .margin_right(44)
        .caption(caption, ("sans-serif", 14))
        .x_label_area_size(28)
        .y_label_area_size(64)
        .build_cartesian_2d(0..24, 0.0..top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_labels(9)
        .x_label_formatter(&|h| format!("{h:02}:00"))
        .y_desc("credits/h")
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(shape.day.iter().enumerate().filter_map(|(h, v)| {
            let v = finite(*v)?;
            let color = if v > shape.usual[h] * 1.05 {
                ANOMALY
            } else {
                ACTUAL
            };
            let h = h as i32;
            Some(Rectangle::new(
                [(h, 0.0), (h + 1, v)],
                color.mix(0.75).filled(),
            ))
        }))
        .map_err(|e| e.to_string())?;
    let usual: Vec<(i32, f64)> = shape
        .usual
        .iter()
        .enumerate()
        .flat_map(|(h, v)| {
            let v = finite(*v).unwrap_or(0.0);
            [(h as i32, v), (h as i32 + 1, v)]
        })
        .collect();
    chart
        .draw_series(LineSeries::new(usual, USUAL.stroke_width(2)))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The title, and a one-line legend of what is drawn, in the band above the plot.
fn draw_header(
    area: &Area<'_>,
    title: &str,
    history: &[&DailyPoint],
    anomalies: bool,
) -> Result<(), String> {
    let e = |e: plotters::drawing::DrawingAreaErrorKind<_>| e.to_string();
    area.draw_text(
        title,
        &("sans-serif", 20).into_font().color(&BLACK),
        (12, 6),
    )
    .map_err(e)?;
    let font = ("sans-serif", 14).into_font().color(&RGBColor(60, 60, 60));
    let (mut x, y) = (14, 38);
    let mut item =
        |label: &str, mark: &dyn Fn(i32, i32) -> Result<(), String>| -> Result<(), String> {
            mark(x, y)?;
            area.draw_text(label, &font, (x + 26, y - 8)).map_err(e)?;
            x += 26 + 7 * label.chars().count() as i32 + 22;
            Ok(())
        };
    item("actual", &|x, y| {
        area.draw(&PathElement::new(
            vec![(x, y), (x + 20, y)],
            ACTUAL.stroke_width(2),
        ))
        .map_err(e)
    })?;
    if history.iter().any(|p| p.expected.is_some()) {
        item("expected", &|x, y| {
            area.draw(&PathElement::new(
                vec![(x, y), (x + 20, y)],
                EXPECTED.stroke_width(2),
            ))
            .map_err(e)
        })?;
    }
    if history.iter().any(|p| p.normal_high.is_some()) {
        item("normal range (alert above)", &|x, y| {
            area.draw(&Rectangle::new(
                [(x, y - 6), (x + 20, y + 6)],
                BAND.filled(),
            ))
            .map_err(e)
        })?;
    }
    if anomalies {
        item("anomaly", &|x, y| {
            area.draw(&Circle::new((x + 10, y), 5, ANOMALY.filled()))
                .map_err(e)
        })?;
    }
    Ok(())
}

/// A file name for the section's chart that is safe on every filesystem and unique per
/// (account, warehouse).
///
/// Snowflake quoted identifiers may hold `/`, spaces or non-ASCII, and case-insensitive
/// filesystems merge `Wh` and `WH`; so the readable part is lowercased ASCII and a hash of the
/// exact names keeps distinct warehouses apart (`A.B_C` and `A_B.C` sanitize alike).
pub fn chart_file_name(section: &WarehouseSection) -> String {
    let clean = |s: &str| -> String {
        let mapped: String = s
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(60)
            .collect();
        if mapped.is_empty() {
            "_".to_string()
        } else {
            mapped
        }
    };
    let hash =
        fnv1a32(format!("{}\u{0}{}", section.account_name, section.warehouse_name).as_bytes());
    format!(
        "chart-{}.{}-{hash:08x}.png",
        clean(&section.account_name),
        clean(&section.warehouse_name)
    )
}

/// FNV-1a, hand-written because file names must stay stable across Rust releases (std's
/// `DefaultHasher` makes no such promise) and eight lines do not justify a dependency.
fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(account: &str, warehouse: &str) -> WarehouseSection {
        WarehouseSection {
            root_causes: Default::default(),
            price_per_credit: None,
            hourly: None,
            account_name: account.into(),
            warehouse_name: warehouse.into(),
            model_version: 1,
            anomalies: vec![],
            history: vec![],
        }
    }

    #[test]
    fn file_names_are_safe_and_distinct() {
        let a = chart_file_name(&section("ACME_PROD", "COMPUTE_WH"));
        assert!(a.starts_with("chart-acme_prod.compute_wh-"), "{a}");
        assert!(a.ends_with(".png"));
        let weird = chart_file_name(&section("acme", "../../etc/passwd wh é|x"));
        assert!(
            weird
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{weird}"
        );
        assert!(!weird.contains(".."), "{weird}");
        // Same sanitized text, different names: the hash must separate them.
        assert_ne!(
            chart_file_name(&section("A.B", "C")),
            chart_file_name(&section("A", "B.C"))
        );
        assert_ne!(
            chart_file_name(&section("acme", "wh")),
            chart_file_name(&section("ACME", "WH"))
        );
        // Stable across runs and releases: pinned value.
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
    }
}
