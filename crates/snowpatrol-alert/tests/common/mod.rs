//! Report fixtures shared by the integration tests.
#![allow(dead_code)]

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use snowpatrol_alert::{AnomalyDay, DailyPoint, Report, WarehouseSection};

pub fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// 30 days ending `last`, weekday 100 credits / weekend 20, expected = the same pattern, with
/// each anomaly's actual credits replacing that day's value.
pub fn history(last: NaiveDate, anomalies: &[AnomalyDay]) -> Vec<DailyPoint> {
    (0..30)
        .rev()
        .map(|back| {
            let d = last - Duration::days(back);
            let base = if chrono::Datelike::weekday(&d).number_from_monday() >= 6 {
                20.0
            } else {
                100.0
            };
            let credits = anomalies
                .iter()
                .find(|a| a.date == d)
                .map_or(base + (back % 3) as f64, |a| a.actual_credits);
            DailyPoint {
                date: d,
                credits,
                expected: Some(base),
                normal_low: Some(base * 0.7),
                normal_high: Some(base * 1.5),
            }
        })
        .collect()
}

pub fn anomaly(d: &str, actual: f64, expected: f64) -> AnomalyDay {
    AnomalyDay {
        date: date(d),
        actual_credits: actual,
        expected_credits: expected,
        excess_credits: actual - expected,
        score: -0.1234,
        threshold: -0.05,
        explanation: "peak hourly burn 4x usual: likely resize".into(),
    }
}

pub fn section(account: &str, warehouse: &str, anomalies: Vec<AnomalyDay>) -> WarehouseSection {
    let last = anomalies
        .iter()
        .map(|a| a.date)
        .max()
        .map_or(date("2025-03-12"), |d| d + Duration::days(2));
    WarehouseSection {
        root_causes: Default::default(),
        price_per_credit: None,
        hourly: None,
        account_name: account.into(),
        warehouse_name: warehouse.into(),
        model_version: 7,
        history: history(last, &anomalies),
        anomalies,
    }
}

pub fn report(price: Option<f64>, sections: Vec<WarehouseSection>) -> Report {
    Report {
        currency: None,
        run_id: "run-2025-03-11-predict".into(),
        generated_at: Utc.with_ymd_and_hms(2025, 3, 11, 6, 30, 0).unwrap(),
        price_per_credit: price,
        acknowledged_incidents: 0,
        held_back: Vec::new(),
        sections,
    }
}

/// The usual fixture: one anomalous warehouse, plus one scored warehouse without anomalies.
pub fn one_anomaly_report(price: Option<f64>) -> Report {
    report(
        price,
        vec![
            section(
                "ACME_PROD",
                "COMPUTE_WH",
                vec![anomaly("2025-03-10", 1234.5678, 100.0)],
            ),
            section("ACME_PROD", "BI_WH", vec![]),
        ],
    )
}
