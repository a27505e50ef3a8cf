//! CSV exports, labels, the CSV and synthetic sources, and config parsing.

use std::io::Write;

use chrono::{NaiveDate, TimeZone, Utc};
use secrecy::ExposeSecret;
use snowpatrol_detect::synthetic::SyntheticConfig;
use snowpatrol_sources::{
    AnomalyKind, AnomalyLabel, CsvSource, MeteringRow, MeteringSource, SnowflakeAuth,
    SnowflakeConfig, SourceError, SyntheticSource, UsageView, WarehouseKey, read_labels_csv,
    read_metering_csv, write_labels_csv, write_metering_csv,
};

fn file(contents: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(contents.as_bytes()).unwrap();
    f
}

#[test]
fn reads_a_snowsight_export_with_any_header_case_and_order() {
    let f = file(
        "\u{feff}\"start_time\",Warehouse_Name,ACCOUNT_NAME,credits_used,EXTRA,credits_used_compute,Credits_Used_Cloud_Services,warehouse_id,service_type,end_time\n\
         2025-09-27 17:00:00.000 +0000,COMPUTE_WH,ACME_PROD,1.5,x,1.25,0.25,3,WAREHOUSE_METERING,2025-09-27 18:00:00.000 +0000\n\
         \n\
         2025-09-27T10:00:00-07:00,\"ETL,WH\",ACME_DEV,2,,2,0,4,WAREHOUSE_METERING_READER,2025-09-27T18:00:00Z\n",
    );
    let rows = read_metering_csv(f.path()).unwrap();
    let t = |h| Utc.with_ymd_and_hms(2025, 9, 27, h, 0, 0).unwrap();
    assert_eq!(
        rows,
        vec![
            MeteringRow {
                account_name: "ACME_PROD".into(),
                warehouse_id: 3,
                warehouse_name: "COMPUTE_WH".into(),
                service_type: "WAREHOUSE_METERING".into(),
                start_time: t(17),
                end_time: t(18),
                credits_used: 1.5,
                credits_used_compute: 1.25,
                credits_used_cloud_services: 0.25,
            },
            MeteringRow {
                account_name: "ACME_DEV".into(),
                warehouse_id: 4,
                warehouse_name: "ETL,WH".into(),
                service_type: "WAREHOUSE_METERING_READER".into(),
                start_time: t(17),
                end_time: t(18),
                credits_used: 2.0,
                credits_used_compute: 2.0,
                credits_used_cloud_services: 0.0,
            },
        ]
    );
}

#[test]
fn optional_columns_get_documented_defaults() {
    let f = file(
        "account_name,warehouse_name,start_time,credits_used,credits_used_cloud_services\n\
         A,COMPUTE_WH,2025-09-27T17:00:00Z,1.5,0.5\n\
         A,CLOUD_SERVICES_ONLY,2025-09-27T17:00:00Z,0.25,\n",
    );
    let rows = read_metering_csv(f.path()).unwrap();
    assert_eq!(rows[0].warehouse_id, 1);
    assert_eq!(rows[0].service_type, "WAREHOUSE_METERING");
    assert_eq!(
        rows[0].end_time,
        Utc.with_ymd_and_hms(2025, 9, 27, 18, 0, 0).unwrap()
    );
    assert_eq!(
        (
            rows[0].credits_used_compute,
            rows[0].credits_used_cloud_services
        ),
        (1.0, 0.5)
    );
    assert_eq!(
        rows[1].warehouse_id, 0,
        "the pseudo warehouse is recognised by name"
    );
    assert_eq!(
        (
            rows[1].credits_used_compute,
            rows[1].credits_used_cloud_services
        ),
        (0.25, 0.0)
    );
}

#[test]
fn malformed_rows_fail_the_whole_file_with_their_line_number() {
    let header = "ACCOUNT_NAME,WAREHOUSE_NAME,START_TIME,CREDITS_USED\n";
    let good = "A,W,2025-09-27T17:00:00Z,1\n";
    for (bad, line, needle) in [
        (
            "A,W,2025-09-27 25:00:00,1\n",
            4,
            "START_TIME \"2025-09-27 25:00:00\" is not a timestamp",
        ),
        (
            "A,W,2025-09-27T17:00:00Z,lots\n",
            4,
            "CREDITS_USED \"lots\" is not a number",
        ),
        ("A,W,2025-09-27T17:00:00Z,NaN\n", 4, "is not a number"),
        (",W,2025-09-27T17:00:00Z,1\n", 4, "ACCOUNT_NAME is empty"),
        ("A,W\n", 4, "START_TIME is missing"),
    ] {
        let f = file(&format!("{header}{good}{good}{bad}{good}"));
        let err = read_metering_csv(f.path()).unwrap_err();
        match &err {
            SourceError::Csv {
                line: l,
                message,
                path,
            } => {
                assert_eq!(*l, line, "{err}");
                assert!(message.contains(needle), "{err}");
                assert_eq!(path, f.path());
            }
            other => panic!("expected a CSV error, got {other:?}"),
        }
        assert!(err.to_string().contains(&format!("line {line}:")), "{err}");
    }

    let err = read_metering_csv(file("account,warehouse_name,start_time,credits_used\n").path())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("line 1: missing required column ACCOUNT_NAME"),
        "{err}"
    );
    let err = read_metering_csv(file("").path()).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    let err = read_metering_csv(std::path::Path::new("/nonexistent/metering.csv")).unwrap_err();
    assert!(
        matches!(err, SourceError::Io { .. })
            && err.to_string().contains("/nonexistent/metering.csv"),
        "{err}"
    );
}

fn synthetic() -> SyntheticSource {
    SyntheticSource::new(SyntheticConfig {
        seed: 7,
        accounts: 2,
        warehouses: 5,
        days: 120,
        end: NaiveDate::from_ymd_opt(2025, 6, 30).unwrap(),
        ..SyntheticConfig::default()
    })
}

#[test]
fn metering_csv_round_trips_exactly() {
    let src = synthetic();
    assert!(src.rows().len() > 1000);
    let mut buf = Vec::new();
    write_metering_csv(src.rows(), &mut buf).unwrap();
    let f = file(std::str::from_utf8(&buf).unwrap());
    assert_eq!(read_metering_csv(f.path()).unwrap(), src.rows());
}

#[test]
fn labels_round_trip_and_reject_unknown_kinds() {
    let src = synthetic();
    assert!(
        !src.labels().is_empty(),
        "the generator should inject anomalies in 120 days x 5 warehouses"
    );
    let mut buf = Vec::new();
    write_labels_csv(src.labels(), &mut buf).unwrap();
    let f = file(std::str::from_utf8(&buf).unwrap());
    assert_eq!(read_labels_csv(f.path()).unwrap(), src.labels());

    let f = file(
        "KIND,Usage_Date,account_name,warehouse_name\nSpike,2025-06-01,A,W\nmeltdown,2025-06-02,A,W\n",
    );
    let err = read_labels_csv(f.path()).unwrap_err();
    assert!(
        err.to_string()
            .contains("line 3: unknown anomaly kind \"meltdown\""),
        "{err}"
    );
    let f = file("KIND,Usage_Date,account_name,warehouse_name\nSpike,2025-06-01,A,W\n");
    assert_eq!(
        read_labels_csv(f.path()).unwrap(),
        vec![AnomalyLabel {
            key: WarehouseKey::new("A", "W"),
            date: NaiveDate::from_ymd_opt(2025, 6, 1).unwrap(),
            kind: AnomalyKind::Spike
        }]
    );
}

#[tokio::test]
async fn csv_and_synthetic_sources_filter_window_and_pseudo_warehouses_alike() {
    let src = synthetic();
    assert!(
        src.rows().iter().any(|r| r.warehouse_id <= 0),
        "fixture should include the pseudo warehouse"
    );
    let mut buf = Vec::new();
    write_metering_csv(src.rows(), &mut buf).unwrap();
    let f = file(std::str::from_utf8(&buf).unwrap());
    let csv = CsvSource::new(f.path());

    let from = Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap();
    let to = Utc.with_ymd_and_hms(2025, 6, 8, 0, 0, 0).unwrap();
    let want: Vec<MeteringRow> = src
        .rows()
        .iter()
        .filter(|r| r.warehouse_id > 0 && r.start_time >= from && r.start_time < to)
        .cloned()
        .collect();
    assert!(!want.is_empty());
    assert_eq!(src.fetch(from, to).await.unwrap(), want);
    assert_eq!(csv.fetch(from, to).await.unwrap(), want);
    assert!(csv.describe().starts_with("csv "));
    assert!(src.describe().contains("seed=7"));
}

#[test]
fn snowflake_config_parses_from_toml_and_redacts_secrets() {
    let cfg: SnowflakeConfig = toml::from_str(
        r#"
        account = "acme-org"
        user = "SNOWPATROL"
        role = "COST_READER"
        warehouse = "SNOWPATROL_WH"
        view = "account_usage"
        account_name = "ACME_PROD"
        query_timeout = "90s"
        [auth]
        method = "key_pair"
        private_key_path = "/etc/snowpatrol/key.p8"
        passphrase = "very-secret-passphrase"
        "#,
    )
    .unwrap();
    assert_eq!(cfg.view, UsageView::AccountUsage);
    assert_eq!(cfg.query_timeout, std::time::Duration::from_secs(90));
    match &cfg.auth {
        SnowflakeAuth::KeyPair {
            private_key_path,
            passphrase,
        } => {
            assert_eq!(
                private_key_path,
                std::path::Path::new("/etc/snowpatrol/key.p8")
            );
            assert_eq!(
                passphrase.as_ref().unwrap().expose_secret(),
                "very-secret-passphrase"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{cfg:?}").contains("very-secret"), "{cfg:?}");

    for (auth, secret) in [
        (
            "method = \"password\"\npassword = \"pw-123456\"",
            "pw-123456",
        ),
        ("method = \"oauth\"\ntoken = \"tok-abcdef\"", "tok-abcdef"),
    ] {
        let cfg: SnowflakeConfig =
            toml::from_str(&format!("account = \"a\"\nuser = \"u\"\n[auth]\n{auth}\n")).unwrap();
        assert_eq!(cfg.view, UsageView::OrganizationUsage);
        assert_eq!(cfg.query_timeout, std::time::Duration::from_secs(300));
        assert!(!format!("{cfg:?}").contains(secret), "{cfg:?}");
    }
    let err = toml::from_str::<SnowflakeConfig>("account = \"a\"\nuser = \"u\"\nwarehose = \"typo\"\n[auth]\nmethod = \"oauth\"\ntoken = \"t\"\n")
        .unwrap_err();
    assert!(err.to_string().contains("warehose"), "{err}");
}

/// Large exports parse in parallel chunks: the same rows in the same order as the sequential parser, and a
/// bad row deep in the file is reported with its true line number.
#[test]
fn large_exports_parse_in_parallel_with_true_line_numbers() {
    let data = snowpatrol_detect::synthetic::generate(&SyntheticConfig {
        warehouses: 100,
        days: 150,
        seed: 9,
        ..SyntheticConfig::default()
    });
    let mut bytes = Vec::new();
    snowpatrol_sources::write_metering_csv(&data.rows, &mut bytes).unwrap();
    assert!(
        bytes.len() > 4 << 20,
        "big enough for the parallel path: {} bytes",
        bytes.len()
    );
    let good = file(std::str::from_utf8(&bytes).unwrap());
    let parallel = snowpatrol_sources::read_metering_csv(good.path()).unwrap();
    let sequential = snowpatrol_sources::parse_metering_csv(&bytes[..], good.path()).unwrap();
    assert_eq!(parallel.len(), data.rows.len());
    assert!(
        parallel == sequential,
        "parallel and sequential parses differ"
    );

    let text = String::from_utf8(bytes).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let bad_line = 51_234; // 1-based, header is line 1
    let broken = lines[bad_line - 1].replacen(',', ",not-a-number-", 1);
    let corrupted = {
        let mut fields: Vec<String> = broken.split(',').map(str::to_string).collect();
        let last = fields.len() - 1;
        fields[last] = "abc".into();
        fields.join(",")
    };
    lines[bad_line - 1] = &corrupted;
    let bad = file(&(lines.join("\n") + "\n"));
    let err = snowpatrol_sources::read_metering_csv(bad.path())
        .unwrap_err()
        .to_string();
    let seq = snowpatrol_sources::parse_metering_csv(
        std::fs::File::open(bad.path()).unwrap(),
        bad.path(),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(err, seq, "same error from both parsers");
    assert!(err.contains(&format!("line {bad_line}")), "{err}");
}
