//! Writes a sample report, its charts and the Slack message JSON to a directory, to eyeball
//! the output: `cargo run -p snowpatrol-alert --example render_sample -- /tmp/out`.

use chrono::{Duration, NaiveDate, Utc};
use snowpatrol_alert::{
    AnomalyDay, DailyPoint, Report, WarehouseSection, chart_file_name, render_chart_png,
    render_markdown, report_message,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "snowpatrol-sample".into());
    std::fs::create_dir_all(&dir)?;
    let last = NaiveDate::from_ymd_opt(2025, 3, 12).ok_or("bad date")?;
    let history: Vec<DailyPoint> = (0..30)
        .rev()
        .map(|back| {
            let d = last - Duration::days(back);
            let weekend = chrono::Datelike::weekday(&d).number_from_monday() >= 6;
            let expected = if weekend {
                22.0
            } else {
                96.0 + back as f64 * -0.4
            };
            let credits = if back == 2 {
                410.0
            } else {
                expected * (1.0 + ((back * 7) % 5) as f64 / 40.0)
            };
            DailyPoint {
                date: d,
                credits,
                expected: Some(expected),
                normal_low: Some(expected * 0.6),
                normal_high: Some(expected * 1.6),
            }
        })
        .collect();
    let section = WarehouseSection {
        root_causes: Default::default(),
        price_per_credit: None,
        hourly: None,
        account_name: "ACME_PROD".into(),
        warehouse_name: "COMPUTE_WH".into(),
        model_version: 3,
        anomalies: vec![AnomalyDay {
            date: last - Duration::days(2),
            actual_credits: 410.0,
            expected_credits: 96.8,
            excess_credits: 313.2,
            score: -0.1432,
            threshold: -0.0611,
            explanation: "peak hourly burn 4x usual; 24 active hours (left running?)".into(),
        }],
        history,
    };
    let report = Report {
        currency: None,
        run_id: "predict-2025-03-13T06:00Z".into(),
        generated_at: Utc::now(),
        price_per_credit: Some(3.0),
        acknowledged_incidents: 0,
        held_back: Vec::new(),
        sections: vec![section],
    };
    std::fs::write(format!("{dir}/report.md"), render_markdown(&report))?;
    for s in &report.sections {
        std::fs::write(
            format!("{dir}/{}", chart_file_name(s)),
            render_chart_png(s, 1000, 450)?,
        )?;
    }
    let msg = report_message(&report);
    std::fs::write(
        format!("{dir}/slack.json"),
        serde_json::to_string_pretty(
            &serde_json::json!({"text": msg.text, "blocks": msg.blocks_json()}),
        )?,
    )?;
    println!("wrote {dir}");
    Ok(())
}
