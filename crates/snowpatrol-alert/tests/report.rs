mod common;

use common::*;
use snowpatrol_alert::{chart_file_name, render_markdown};

#[test]
fn report_has_title_run_and_one_section_per_anomalous_warehouse() {
    let md = render_markdown(&one_anomaly_report(None));
    println!("{md}");
    assert!(
        md.starts_with("# Anomalous activity in Snowflake usage\n"),
        "{md}"
    );
    assert!(md.contains("- Run: `run-2025-03-11-predict`\n"), "{md}");
    assert!(md.contains("- Generated: 2025-03-11 06:30 UTC\n"), "{md}");
    assert!(md.contains("- Anomalous days: 1 in 1 warehouse\n"), "{md}");
    assert!(md.contains("- Total excess credits: 1,134.57\n"), "{md}");
    assert!(md.contains("\n## ACME\\_PROD.COMPUTE\\_WH\n"), "{md}");
    assert!(md.contains("Model version 7."), "{md}");
    // The warehouse without anomalies gets no section.
    assert!(!md.contains("BI\\_WH"), "{md}");
    assert_eq!(md.matches("\n## ").count(), 1, "{md}");

    assert!(
        md.contains(
            "| Date | Actual credits | Expected credits | Excess credits | Score | Threshold |\n"
        ),
        "{md}"
    );
    assert!(
        md.contains("| 2025-03-10 | 1,234.57 | 100.00 | 1,134.57 | -0.1234 | -0.0500 |\n"),
        "{md}"
    );
    assert!(
        !md.contains("cost"),
        "no cost anywhere without a price: {md}"
    );
    assert!(!md.contains("Price per credit"), "{md}");
    assert!(
        md.contains("- 2025-03-10: peak hourly burn 4x usual: likely resize\n"),
        "{md}"
    );

    let chart = chart_file_name(&one_anomaly_report(None).sections[0]);
    assert!(
        md.contains(&format!(
            "![Daily credits of ACME\\_PROD.COMPUTE\\_WH]({chart})"
        )),
        "{md}"
    );
}

#[test]
fn cost_column_appears_only_with_a_price() {
    let md = render_markdown(&one_anomaly_report(Some(3.0)));
    assert!(md.contains("- Price per credit: 3.00\n"), "{md}");
    assert!(
        md.contains("| Date | Actual credits | Expected credits | Excess credits | Excess cost | Score | Threshold |\n"),
        "{md}"
    );
    // 1134.5678 * 3 = 3403.7034
    assert!(
        md.contains(
            "| 2025-03-10 | 1,234.57 | 100.00 | 1,134.57 | 3,403.70 | -0.1234 | -0.0500 |\n"
        ),
        "{md}"
    );
    assert!(
        md.contains("- Total excess credits: 1,134.57 (cost 3,403.70)\n"),
        "{md}"
    );
    // Header separator has as many cells as the header.
    let header_line = md
        .lines()
        .find(|l| l.starts_with("| Date | Actual"))
        .unwrap();
    let sep_line = md
        .lines()
        .skip_while(|l| !l.starts_with("| Date | Actual"))
        .nth(1)
        .unwrap();
    assert_eq!(
        header_line.matches('|').count(),
        sep_line.matches('|').count()
    );
}

#[test]
fn surrounding_days_table_shows_three_days_either_side() {
    let md = render_markdown(&one_anomaly_report(None));
    let table: Vec<&str> = md
        .lines()
        .skip_while(|l| !l.starts_with("### Daily credits around the anomaly"))
        .skip(4)
        .take_while(|l| l.starts_with('|'))
        .collect();
    let dates: Vec<&str> = table
        .iter()
        .map(|l| l.split('|').nth(1).unwrap().trim())
        .collect();
    // History ends 2025-03-12, so only two days after the anomaly exist.
    assert_eq!(
        dates,
        [
            "2025-03-07",
            "2025-03-08",
            "2025-03-09",
            "2025-03-10",
            "2025-03-11",
            "2025-03-12"
        ],
        "{md}"
    );
    assert_eq!(
        table[3], "| 2025-03-10 | Mon | 1,234.57 | 100.00 | **anomaly** |",
        "{md}"
    );
    assert_eq!(table[1], "| 2025-03-08 | Sat | 21.00 | 20.00 |  |", "{md}");
}

#[test]
fn far_apart_anomalies_get_a_gap_row_and_plural_heading() {
    let r = report(
        None,
        vec![section(
            "ACME",
            "ETL|WH*",
            vec![
                anomaly("2025-02-20", 500.0, 100.0),
                anomaly("2025-03-10", 400.0, 100.0),
            ],
        )],
    );
    let md = render_markdown(&r);
    assert!(md.contains("## ACME.ETL\\|WH\\*\n"), "{md}");
    assert!(
        md.contains("### Daily credits around the anomalies"),
        "{md}"
    );
    assert_eq!(md.matches("| … | | | | |").count(), 1, "{md}");
    assert!(md.contains("- Anomalous days: 2 in 1 warehouse\n"), "{md}");
    assert!(md.contains("- Total excess credits: 700.00\n"), "{md}");
    // Anomaly table is in date order.
    let first = md.find("| 2025-02-20 | 500.00").unwrap();
    let second = md.find("| 2025-03-10 | 400.00").unwrap();
    assert!(first < second);
}

#[test]
fn empty_run_says_so() {
    let md = render_markdown(&report(Some(2.5), vec![section("ACME", "WH", vec![])]));
    assert!(
        md.starts_with("# Anomalous activity in Snowflake usage\n"),
        "{md}"
    );
    assert!(md.contains("No anomalous activity found"), "{md}");
    assert!(md.contains("run-2025-03-11-predict"), "{md}");
    assert!(!md.contains("## "), "{md}");
    assert!(!md.contains('|'), "{md}");
}
