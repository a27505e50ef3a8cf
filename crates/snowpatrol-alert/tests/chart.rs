mod common;

use std::collections::HashSet;
use std::time::Instant;

use common::*;
use snowpatrol_alert::{AlertError, WarehouseSection, render_chart_png};

const PNG_SIGNATURE: [u8; 8] = [137, 80, 78, 71, 13, 10, 26, 10];

struct Decoded {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

fn decode(bytes: &[u8]) -> Decoded {
    assert_eq!(&bytes[..8], &PNG_SIGNATURE, "not a PNG");
    let decoder = png::Decoder::new(bytes);
    let mut reader = decoder.read_info().expect("PNG header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    Decoded {
        width: info.width,
        height: info.height,
        rgb: buf,
    }
}

fn pixels(d: &Decoded) -> impl Iterator<Item = (u32, u32, [u8; 3])> + '_ {
    d.rgb.chunks_exact(3).enumerate().map(move |(i, p)| {
        let i = i as u32;
        (i % d.width, i / d.width, [p[0], p[1], p[2]])
    })
}

fn near(p: [u8; 3], c: [u8; 3]) -> bool {
    p.iter()
        .zip(c)
        .all(|(a, b)| (i16::from(*a) - i16::from(b)).abs() <= 12)
}

const RED: [u8; 3] = [214, 39, 40];
const BLUE: [u8; 3] = [31, 119, 180];

fn render(section: &WarehouseSection) -> Decoded {
    let started = Instant::now();
    let bytes = render_chart_png(section, 900, 420).expect("chart renders");
    println!("rendered {} bytes in {:?}", bytes.len(), started.elapsed());
    assert!(
        bytes.len() > 5_000,
        "suspiciously small PNG: {}",
        bytes.len()
    );
    decode(&bytes)
}

#[test]
fn chart_is_a_png_of_the_requested_size_with_lines_markers_and_text() {
    let report = one_anomaly_report(None);
    let d = render(&report.sections[0]);
    assert_eq!((d.width, d.height), (900, 420));

    let colours: HashSet<[u8; 3]> = pixels(&d).map(|(_, _, p)| p).collect();
    assert!(
        colours.len() > 30,
        "only {} colours: a blank chart?",
        colours.len()
    );
    let red = pixels(&d).filter(|&(_, _, p)| near(p, RED)).count();
    let blue = pixels(&d).filter(|&(_, _, p)| near(p, BLUE)).count();
    assert!(red > 100, "anomaly marker missing: {red} red pixels");
    assert!(blue > 500, "actual line missing: {blue} blue pixels");
    // The caption is dark text in the top band: proves the bundled font rendered glyphs.
    let caption_ink = pixels(&d)
        .filter(|&(_, y, p)| y < 36 && p.iter().all(|&c| c < 100))
        .count();
    assert!(
        caption_ink > 200,
        "no caption text: {caption_ink} dark pixels"
    );
    // The anomaly (1234 credits, the maximum) is drawn near the top of the plot area, the
    // ordinary days far below it.
    let red_top = pixels(&d)
        .filter(|&(_, _, p)| near(p, RED))
        .map(|(_, y, _)| y)
        .min()
        .unwrap();
    assert!(
        red_top < 120,
        "anomaly marker at y={red_top}, expected near the top"
    );
}

#[test]
fn no_anomalies_means_no_red_markers() {
    let d = render(&section("ACME", "QUIET_WH", vec![]));
    let red = pixels(&d).filter(|&(_, _, p)| near(p, RED)).count();
    assert_eq!(red, 0);
    let blue = pixels(&d).filter(|&(_, _, p)| near(p, BLUE)).count();
    assert!(blue > 500);
}

#[test]
fn empty_section_and_odd_values_still_render() {
    let mut empty = section("ACME", "NEW_WH", vec![]);
    empty.history.clear();
    let d = render(&empty);
    assert_eq!((d.width, d.height), (900, 420));
    let ink = pixels(&d).filter(|&(_, _, p)| p != [255, 255, 255]).count();
    assert!(ink > 100, "the no-data message should be drawn");

    let mut odd = section(
        "ACME",
        "ODD_WH",
        vec![anomaly("2025-03-10", f64::NAN, 100.0)],
    );
    odd.history[0].credits = f64::INFINITY;
    odd.history[1].expected = None;
    odd.history[2].expected = Some(-30.0);
    render(&odd);
}

#[test]
fn absurd_sizes_are_rejected() {
    let s = section("ACME", "WH", vec![]);
    assert!(matches!(
        render_chart_png(&s, 10, 400),
        Err(AlertError::InvalidChartSize { .. })
    ));
    assert!(matches!(
        render_chart_png(&s, 800, 100_000),
        Err(AlertError::InvalidChartSize { .. })
    ));
    let err = render_chart_png(&s, 0, 0).unwrap_err().to_string();
    assert!(err.contains("between 200 and 4000"), "{err}");
}

const BAND: [u8; 3] = [214, 226, 240];

/// 120 days of history (weekday 100, weekend 20) ending `last`, with the anomalies' values in place.
fn long_history(
    last: chrono::NaiveDate,
    anomalies: &[snowpatrol_alert::AnomalyDay],
) -> Vec<snowpatrol_alert::DailyPoint> {
    (0..120)
        .rev()
        .map(|back| {
            let d = last - chrono::Duration::days(back);
            let base = if chrono::Datelike::weekday(&d).number_from_monday() >= 6 {
                20.0
            } else {
                100.0
            };
            snowpatrol_alert::DailyPoint {
                date: d,
                credits: anomalies
                    .iter()
                    .find(|a| a.date == d)
                    .map_or(base, |a| a.actual_credits),
                expected: Some(base),
                normal_low: Some(base * 0.7),
                normal_high: Some(base * 1.5),
            }
        })
        .collect()
}

#[test]
fn an_anomaly_on_the_first_day_shown_is_not_hidden_by_the_legend() {
    // The anomaly is the highest point and the first day of the window (no history before it): exactly where
    // a legend in the plot's upper left used to sit.
    let a = anomaly("2025-03-03", 900.0, 100.0);
    let mut s = section("ACME", "EARLY_WH", vec![a.clone()]);
    s.history = long_history(
        a.date + chrono::Duration::days(30),
        std::slice::from_ref(&a),
    );
    s.history.retain(|p| p.date >= a.date);
    let d = render(&s);
    let red_left: Vec<(u32, u32)> = pixels(&d)
        .filter(|&(x, _, p)| x < 200 && near(p, RED))
        .map(|(x, y, _)| (x, y))
        .collect();
    // The day's marker (a filled circle of radius 7, about 150 pixels) is drawn whole at the top of the
    // plot: the topmost red pixel below the header starts it. A legend over it (as the chart once had in its
    // upper left) would wash it out, leaving at most the legend's own smaller mark.
    let plot_red: Vec<(u32, u32)> = red_left.iter().copied().filter(|&(_, y)| y >= 58).collect();
    let &(tx, ty) = plot_red
        .iter()
        .min_by_key(|&&(_, y)| y)
        .expect("red in the plot");
    let marker = plot_red
        .iter()
        .filter(|&&(x, y)| x.abs_diff(tx) <= 8 && y >= ty && y <= ty + 15)
        .count();
    assert!(
        marker >= 120,
        "the marker is drawn whole: {marker} red pixels around ({tx}, {ty})"
    );
    assert!(ty < 120, "marker at the top of the plot: y={ty}");
}

#[test]
fn the_window_surrounds_the_anomaly_and_the_normal_range_is_a_band() {
    // 120 days of history, the anomaly 40 days before the end: the chart shows 28 days before it and 7
    // after, so the marker sits at about 28/35 of the plot's width, not 80/120.
    let last = date("2025-06-30");
    let a = anomaly("2025-05-21", 900.0, 100.0);
    let s = WarehouseSection {
        root_causes: Default::default(),
        price_per_credit: None,
        hourly: None,
        account_name: "ACME".into(),
        warehouse_name: "WINDOW_WH".into(),
        model_version: 2,
        history: long_history(last, std::slice::from_ref(&a)),
        anomalies: vec![a],
    };
    let d = render(&s);
    let xs: Vec<u32> = pixels(&d)
        .filter(|&(_, _, p)| near(p, RED))
        .map(|(x, _, _)| x)
        .collect();
    let centre = f64::from(xs.iter().sum::<u32>()) / xs.len() as f64;
    // Plot area: about x = 76 (after the y labels) to 856 (before the right margin).
    let share = (centre - 76.0) / (856.0 - 76.0);
    assert!(
        (0.72..=0.88).contains(&share),
        "marker at {share:.2} of the width"
    );
    let band = pixels(&d).filter(|&(_, _, p)| p == BAND).count();
    assert!(
        band > 5_000,
        "the normal range is drawn as a band: {band} pixels"
    );

    // Without a normal range from the model, no band.
    let mut plain = s.clone();
    for p in &mut plain.history {
        p.normal_low = None;
        p.normal_high = None;
    }
    let d = render(&plain);
    assert_eq!(pixels(&d).filter(|&(_, _, p)| p == BAND).count(), 0);
}

/// With a root cause's hourly shape the chart gets a lower panel: the day's hours as bars, red where they are
/// above the usual curve (here 02:00-10:00), blue elsewhere, and the daily plot moves up into the top part.
#[test]
fn hourly_panel_marks_the_hours_above_the_usual_curve() {
    let mut s = section("ACME", "QUIET_WH", vec![]);
    let mut day = [1.0; 24];
    day[2..10].fill(6.0);
    s.hourly = Some(snowpatrol_alert::HourlyPanel {
        date: chrono::NaiveDate::from_ymd_opt(2025, 3, 10).unwrap(),
        shape: snowpatrol_detect::root_cause::HourlyShape::new(day, &[[1.0; 24]; 7]),
    });
    let d = render(&s);
    // No anomaly in the daily plot, so every red pixel belongs to the hourly bars, all in the lower third.
    let red: Vec<(u32, u32)> = pixels(&d)
        .filter(|&(_, _, p)| near(p, [224, 93, 94]) || near(p, RED))
        .map(|(x, y, _)| (x, y))
        .collect();
    assert!(
        red.len() > 1_000,
        "hourly bars above the usual: {} red pixels",
        red.len()
    );
    let top = red.iter().map(|&(_, y)| y).min().unwrap();
    assert!(
        top > 420 * 55 / 100,
        "the hourly panel is the lower part: red from y={top}"
    );
    // Eight red bars of 24 span about a third of the plot's width, on its left side.
    let (left, right) = (
        red.iter().map(|&(x, _)| x).min().unwrap(),
        red.iter().map(|&(x, _)| x).max().unwrap(),
    );
    assert!(
        right - left > 180 && right < 500,
        "red bars from x={left} to x={right}"
    );
}
