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
