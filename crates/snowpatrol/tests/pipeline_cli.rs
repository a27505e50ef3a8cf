//! The pipeline's operator commands through the real `snowpatrol` binary: `synth` → `backtest` (both models,
//! with and without labels), bad input, `run prep/train/predict` on an embedded SQLite data directory followed
//! by `models`, `anomalies` (incidents and `--days`, table, CSV, JSON, filters, ack) and `alerts`, and the shipped
//! `config/snowpatrol.toml`.
//!
//! The shipped-config test makes an encrypted Snowflake key with Python's `cryptography` (from the interpreter
//! in `SNOWPATROL_TEST_PYTHON`); it fails, not skips, when that variable is unset.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_snowpatrol");

const FLAGGED_COLUMNS: [&str; 10] = [
    "account_name",
    "warehouse_name",
    "usage_date",
    "credits_used",
    "expected_credits",
    "excess_credits",
    "score",
    "threshold",
    "is_anomaly",
    "explanation",
];

/// A child process that sees none of the developer's Snowpatrol settings, only what the test gives it.
fn snowpatrol(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).current_dir(dir);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SNOWPATROL") {
            c.env_remove(&k);
        }
    }
    c.env_remove("RUST_LOG");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn failed(out: &Output, what: &str) -> String {
    assert!(
        !out.status.success(),
        "{what} should have failed:\nstdout: {}",
        text(&out.stdout)
    );
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{what} panicked: {err}");
    err
}

/// The `config/snowpatrol.toml` the project ships.
fn shipped_config() -> PathBuf {
    [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "..",
        "config",
        "snowpatrol.toml",
    ]
    .iter()
    .collect()
}

fn json_of(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Header and records of a CSV file or text.
fn read_csv(data: &[u8]) -> (Vec<String>, Vec<csv::StringRecord>) {
    let mut r = csv::Reader::from_reader(data);
    let header = r.headers().unwrap().iter().map(str::to_string).collect();
    let rows = r.records().collect::<Result<Vec<_>, _>>().unwrap();
    (header, rows)
}

#[test]
fn synth_then_backtest_both_models_with_and_without_labels() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let synth = |out: &str| {
        let mut c = snowpatrol(d, &["synth", "--output", out]);
        c.args(SYNTH_ARGS);
        c
    };
    const SYNTH_ARGS: [&str; 8] = [
        "--warehouses",
        "12",
        "--days",
        "365",
        "--seed",
        "1",
        "--end",
        "2025-06-30",
    ];
    let s = json_of(&ok(synth("data").arg("--json").output().unwrap(), "synth"));
    assert_eq!(s["first_day"], "2024-07-01", "{s}");
    assert!(s["rows"].as_u64().unwrap() > 10_000, "{s}");
    assert!(s["label_count"].as_u64().unwrap() > 0, "{s}");
    let metering = std::fs::read(d.join("data/metering.csv")).unwrap();
    let (_, labels) = read_csv(&std::fs::read(d.join("data/labels.csv")).unwrap());
    assert_eq!(labels.len() as u64, s["label_count"].as_u64().unwrap());
    // Same seed and end: byte-identical files (a user can share a seed instead of a file).
    ok(synth("again").output().unwrap(), "synth again");
    assert!(metering == std::fs::read(d.join("again/metering.csv")).unwrap());

    let start = "2025-01-01";
    // `backtest` of the synthetic data from `start`, with `extra` arguments.
    let backtest = |extra: &[&str]| {
        let mut args = vec!["backtest", "--input", "data/metering.csv", "--start", start];
        args.extend_from_slice(extra);
        snowpatrol(d, &args).output().unwrap()
    };
    let mut precision = BTreeMap::new();
    for model in ["default", "baseline"] {
        let flagged = format!("flagged_{model}.csv");
        let out = backtest(&[
            "--labels",
            "data/labels.csv",
            "--output",
            &flagged,
            "--model",
            model,
            "--json",
        ]);
        let r = json_of(&ok(out, &format!("backtest --model {model}")));
        assert_eq!(r["model"], model);
        assert_eq!(r["warehouses"], 12, "{r}");
        let scored = r["scored"].as_u64().unwrap() as usize;
        let flagged_n = r["flagged"].as_u64().unwrap() as usize;
        let m = &r["metrics"];
        for k in [
            "day_precision",
            "day_recall",
            "day_f1",
            "incident_recall",
            "incident_precision",
        ] {
            let v = m[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {r}"));
            assert!((0.0..=1.0).contains(&v), "{k} = {v}");
        }
        assert!(
            m["false_alarms_per_100_warehouse_months"]
                .as_f64()
                .is_some(),
            "{r}"
        );
        precision.insert(model, m["day_precision"].as_f64().unwrap());

        let (header, rows) = read_csv(&std::fs::read(d.join(&flagged)).unwrap());
        assert_eq!(header, FLAGGED_COLUMNS);
        assert_eq!(rows.len(), scored, "one row per scored warehouse-day");
        // 12 warehouses, 2025-01-01 ..= 2025-06-30, each old enough to be scored from the first day.
        assert_eq!(scored, 12 * 181);
        let mut anomalies = 0;
        let mut keys = BTreeSet::new();
        for row in &rows {
            let date = &row[2];
            assert!(date >= start && date <= "2025-06-30", "{row:?}");
            for i in 3..8 {
                row[i]
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("column {} not a number: {row:?}", header[i]));
            }
            let actual: f64 = row[3].parse().unwrap();
            let expected: f64 = row[4].parse().unwrap();
            let excess: f64 = row[5].parse().unwrap();
            assert!((actual - expected - excess).abs() < 1e-6, "{row:?}");
            match &row[8] {
                "true" => anomalies += 1,
                "false" => {}
                other => panic!("is_anomaly {other:?}"),
            }
            keys.insert((row[0].to_string(), row[1].to_string(), date.to_string()));
        }
        assert_eq!(keys.len(), rows.len(), "a warehouse-day appears once");
        assert_eq!(anomalies, flagged_n);
        assert!(flagged_n > 0, "{model} flagged nothing");
    }
    // The default model is far more precise than the original's rule on labelled data.
    assert!(
        precision["default"] > 2.0 * precision["baseline"],
        "precision {precision:?}"
    );

    // People get the numbers in plain text; without labels, counts only.
    let out = backtest(&["--labels", "data/labels.csv", "--output", "t.csv"]);
    let t = ok(out, "backtest (text)");
    for word in [
        "day level: precision",
        "incident level: recall",
        "per 100 warehouse-months",
        "F1",
        "scored 2172 warehouse-days",
    ] {
        assert!(t.contains(word), "{word} missing from:\n{t}");
    }
    let out = backtest(&["--output", "nolabels.csv", "--json"]);
    let r = json_of(&ok(out, "backtest without labels"));
    assert!(r["metrics"].is_null(), "{r}");
    assert_eq!(r["scored"], 2172);
    assert!(
        std::fs::read(d.join("nolabels.csv")).unwrap() == std::fs::read(d.join("t.csv")).unwrap(),
        "labels change the metrics, not the flagged days"
    );
}

#[test]
fn bad_backtest_input_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("bad.csv"),
        "ACCOUNT_NAME,WAREHOUSE_ID,WAREHOUSE_NAME,SERVICE_TYPE,START_TIME,END_TIME,CREDITS_USED,CREDITS_USED_COMPUTE,CREDITS_USED_CLOUD_SERVICES\n\
         ACME,1,WH,WAREHOUSE_METERING,2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,1.5,1.4,0.1\n\
         ACME,1,WH,WAREHOUSE_METERING,2025-01-01T01:00:00Z,2025-01-01T02:00:00Z,lots,1.4,0.1\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["backtest", "--output", "out.csv"];
        args.extend_from_slice(extra);
        snowpatrol(d, &args).output().unwrap()
    };
    let err = failed(
        &run(&["--input", "bad.csv", "--start", "2025-01-01"]),
        "malformed CSV",
    );
    assert!(
        err.contains("bad.csv") && err.contains("line 3"),
        "file and line expected: {err}"
    );
    assert!(!d.join("out.csv").exists(), "no output on failure");

    // A labels file with an unknown kind (line 3), for the refusal that names its line too.
    ok(
        snowpatrol(
            d,
            &[
                "synth",
                "--output",
                "s",
                "--warehouses",
                "2",
                "--days",
                "60",
                "--end",
                "2025-06-30",
            ],
        )
        .output()
        .unwrap(),
        "synth",
    );
    std::fs::write(
        d.join("labels.csv"),
        "account_name,warehouse_name,usage_date,kind\nACME,WH,2025-06-01,spike\nACME,WH,2025-06-02,meteor\n",
    )
    .unwrap();
    // (arguments, what is wrong, what the refusal must say)
    let refusals: [(&[&str], &str, &[&str]); 5] = [
        (
            &["--input", "bad.csv", "--start", "2025-02-30"],
            "bad date",
            &["--start", "YYYY-MM-DD"],
        ),
        (
            &[
                "--input",
                "bad.csv",
                "--start",
                "2025-01-01",
                "--model",
                "forest",
            ],
            "unknown model",
            &["forest", "default or baseline"],
        ),
        (
            &["--input", "missing.csv", "--start", "2025-01-01"],
            "missing file",
            &["missing.csv"],
        ),
        (
            &[
                "--input",
                "s/metering.csv",
                "--labels",
                "labels.csv",
                "--start",
                "2025-06-01",
            ],
            "bad labels",
            &["labels.csv", "line 3"],
        ),
        (
            &["--input", "s/metering.csv", "--start", "2026-01-01"],
            "start after the data",
            &["after the last day"],
        ),
    ];
    for (args, what, says) in refusals {
        let err = failed(&run(args), what);
        for s in says {
            assert!(err.contains(s), "{what}: {s:?} expected: {err}");
        }
    }
}

struct DataDir {
    dir: tempfile::TempDir,
    /// PostgreSQL URL; `None` = the embedded SQLite file under the data directory.
    db_url: Option<String>,
}

impl DataDir {
    fn new(config: &str, db_url: Option<String>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("snowpatrol.toml"), config).unwrap();
        Self { dir, db_url }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = snowpatrol(self.dir.path(), args);
        c.env("SNOWPATROL_CONFIG", self.dir.path().join("snowpatrol.toml"))
            .env("SNOWPATROL_DATA_DIR", self.dir.path().join("data"));
        if let Some(url) = &self.db_url {
            c.env("SNOWPATROL_DATABASE_URL", url);
        }
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        ok(self.cmd(args).output().unwrap(), &format!("{args:?}"))
    }

    /// Runs a command that must be refused (`what` it is); returns its error output.
    fn failed(&self, args: &[&str], what: &str) -> String {
        failed(&self.cmd(args).output().unwrap(), what)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        json_of(&self.ok(&all))
    }
}

const SYNTHETIC_CONFIG: &str = r#"
[pipeline.source]
kind = "synthetic"
seed = 7
warehouses = 6
days = 120
end = "2025-06-30"

[pipeline.predict]
score_days = 45

[logging]
level = "warn"
"#;

#[test]
fn pipeline_commands_on_sqlite() {
    let env = DataDir::new(SYNTHETIC_CONFIG, None);
    // Read commands need a database to read (they no longer create an empty one).
    env.ok(&["migrate"]);
    pipeline_flow(&env);
}

/// The same flow on PostgreSQL (`snowpatrol_store::testing`, `SNOWPATROL_TEST_DATABASE_URL`): the store's two
/// backends share statements, but types (timestamptz, jsonb) come back through different drivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_commands_on_postgres() {
    let url = snowpatrol_pipeline::testing::fresh_postgres_url().await;
    tokio::task::spawn_blocking(move || {
        let env = DataDir::new(SYNTHETIC_CONFIG, Some(url));
        // A shared database is migrated deliberately, never by a read-only command.
        env.ok(&["migrate"]);
        pipeline_flow(&env);
    })
    .await
    .unwrap();
}

fn pipeline_flow(env: &DataDir) {
    assert!(
        env.ok(&["models"]).contains("no models yet"),
        "empty registry"
    );
    let mut run_ids = BTreeMap::new();
    for job in ["prep", "train", "predict"] {
        let r = env.json(&["run", job]);
        assert_eq!(r["run"]["state"], "success", "{job}: {r}");
        run_ids.insert(job, r["run"]["run_id"].as_i64().unwrap());
    }

    // One version per warehouse, made by the train run, aliased latest.
    let models = env.json(&["models"]);
    let models = models.as_array().unwrap();
    let keys: BTreeSet<(String, String)> = models
        .iter()
        .map(|m| {
            (
                m["account_name"].as_str().unwrap().to_string(),
                m["warehouse_name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(models.len(), 6, "{models:?}");
    assert_eq!(keys.len(), 6);
    for m in models {
        assert_eq!(m["version"], 1);
        assert_eq!(m["model_kind"], "default");
        assert_eq!(m["aliases"], "latest");
        assert_eq!(m["training_run_id"], run_ids["train"]);
        assert!(m["training_start"].as_str().unwrap() < m["training_end"].as_str().unwrap());
    }
    // COMPUTE_WH exists in both accounts: the bare name matches both, ACCOUNT.WAREHOUSE one.
    let compute: Vec<_> = models
        .iter()
        .filter(|m| m["warehouse_name"] == "COMPUTE_WH")
        .collect();
    let bare = env.json(&["models", "--warehouse", "COMPUTE_WH"]);
    assert_eq!(bare.as_array().unwrap().len(), compute.len());
    let account = compute[0]["account_name"].as_str().unwrap();
    let qualified = env.json(&["models", "--warehouse", &format!("{account}.COMPUTE_WH")]);
    assert_eq!(qualified.as_array().unwrap().len(), 1);
    assert_eq!(qualified[0]["account_name"], account);
    let table = env.ok(&["models"]);
    assert!(
        table.contains("latest") && table.contains("COMPUTE_WH"),
        "{table}"
    );
    let err = env.failed(
        &["models", "--warehouse", "NO_SUCH_WH"],
        "unknown warehouse",
    );
    assert!(err.contains("NO_SUCH_WH"), "{err}");

    // The synthetic data ends 2025-06-30, more than 30 days ago: the default window shows none of it.
    let recent = env.json(&["anomalies"]);
    assert_eq!(recent.as_array().unwrap().len(), 0, "{recent}");
    assert!(
        env.ok(&["anomalies"]).contains("no incidents on or after"),
        "empty table says what it looked for"
    );

    // --days: one row per anomalous day, linked to the predict run and model version.
    let all = env.json(&["anomalies", "--days", "--since", "2025-01-01"]);
    let all = all.as_array().unwrap();
    assert!(!all.is_empty(), "the synthetic data has anomalies");
    for a in all {
        assert_eq!(a["run_id"], run_ids["predict"]);
        assert_eq!(a["model_version"], 1);
        assert!(a["acknowledged_at"].is_null());
        assert!(a["usage_date"].as_str().unwrap() >= "2025-05-17", "{a}");
        assert!(a["incident_id"].is_i64(), "{a}");
    }
    let days_of = |w: &str| -> BTreeSet<(String, String)> {
        all.iter()
            .filter(|a| a["warehouse_name"] == w || w.is_empty())
            .map(|a| {
                (
                    a["warehouse_name"].as_str().unwrap().to_string(),
                    a["usage_date"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(days_of("").len(), all.len(), "one row per warehouse-day");
    let csv_text = env.ok(&[
        "anomalies",
        "--days",
        "--since",
        "2025-01-01",
        "--format",
        "csv",
    ]);
    let (header, rows) = read_csv(csv_text.as_bytes());
    assert_eq!(
        header[..4],
        ["anomaly_id", "account_name", "warehouse_name", "usage_date"]
    );
    assert_eq!(header.last().unwrap(), "incident_id");
    assert_eq!(rows.len(), all.len());
    for (row, a) in rows.iter().zip(all) {
        assert_eq!(
            row[0].parse::<i64>().unwrap(),
            a["anomaly_id"].as_i64().unwrap()
        );
        let excess: f64 = row[6].parse().unwrap();
        assert!((excess - a["excess_credits"].as_f64().unwrap()).abs() < 1e-9);
    }
    let table = env.ok(&["anomalies", "--days", "--since", "2025-01-01"]);
    assert!(
        table.contains("incident") && table.contains("v1"),
        "{table}"
    );

    // Default view: incidents, their totals from their days.
    let incidents = env.json(&["anomalies", "--since", "2025-01-01"]);
    let incidents = incidents.as_array().unwrap();
    assert!(!incidents.is_empty());
    let mut day_total = 0;
    for i in incidents {
        let id = i["incident_id"].as_i64().unwrap();
        let mine: Vec<&Value> = all
            .iter()
            .filter(|a| a["incident_id"].as_i64() == Some(id))
            .collect();
        assert_eq!(i["days"].as_u64().unwrap() as usize, mine.len(), "{i}");
        let excess: f64 = mine
            .iter()
            .map(|a| a["excess_credits"].as_f64().unwrap())
            .sum();
        assert!(
            (excess - i["excess_credits"].as_f64().unwrap()).abs() < 1e-6,
            "{i}"
        );
        assert!(
            mine.iter().all(|a| a["incident_start"] == i["start_day"]
                && a["warehouse_name"] == i["warehouse_name"]),
            "{i}"
        );
        assert!(
            ["open", "resolved"].contains(&i["status"].as_str().unwrap()),
            "{i}"
        );
        assert!(i["ack_reason"].is_null());
        day_total += mine.len();
    }
    assert_eq!(
        day_total,
        all.len(),
        "every day belongs to one listed incident"
    );
    let table = env.ok(&["anomalies", "--since", "2025-01-01"]);
    for column in [
        "id",
        "start",
        "end",
        "days",
        "excess credits",
        "cost",
        "status",
        "reason",
    ] {
        assert!(table.contains(column), "{column} missing: {table}");
    }
    let csv_text = env.ok(&["anomalies", "--since", "2025-01-01", "--format", "csv"]);
    let (header, rows) = read_csv(csv_text.as_bytes());
    assert_eq!(
        header[..6],
        [
            "incident_id",
            "account_name",
            "warehouse_name",
            "start_day",
            "end_day",
            "days"
        ]
    );
    assert_eq!(rows.len(), incidents.len());
    // `anomalies show`: each day of an incident with its root cause (with the synthetic source, the hourly
    // shape from the loaded metering; the Snowflake views are covered by the fakesnow tests).
    let mut with_hours = 0;
    for i in incidents {
        let id = i["incident_id"].to_string();
        let shown = env.json(&["anomalies", "show", &id]);
        assert_eq!(shown["incident"]["incident_id"], i["incident_id"]);
        let days = shown["days"].as_array().unwrap();
        assert_eq!(days.len() as u64, i["days"].as_u64().unwrap(), "{shown}");
        let causes = shown["root_causes"].as_array().unwrap();
        assert_eq!(
            causes.len(),
            days.len(),
            "every scored day looked up: {shown}"
        );
        for c in causes {
            assert_eq!(
                c["detail"]["hours"]["day"].as_array().map(Vec::len),
                Some(24),
                "{c}"
            );
            assert_eq!(c["run_id"], run_ids["predict"]);
        }
        with_hours += causes
            .iter()
            .filter(|c| {
                c["summary"]
                    .as_str()
                    .unwrap()
                    .contains("over the usual hourly curve fell between")
            })
            .count();
        let text = env.ok(&["anomalies", "show", &id]);
        assert!(
            text.contains("root cause:") && text.contains("Hourly: "),
            "{text}"
        );
    }
    assert!(with_hours > 0, "the spikes' hours are located");
    let err = env.failed(&["anomalies", "show", "987654"], "unknown incident");
    assert!(err.contains("no incident with id 987654"), "{err}");

    // Lineage of a prediction back to its data: the predict run, the model version and its training run, and the
    // prep run that loaded the hourly rows the model trained on and the day was scored from.
    let day = &all[0];
    let chain = env.json(&["lineage", "anomaly", &day["anomaly_id"].to_string()]);
    assert_eq!(chain["anomaly"]["anomaly_id"], day["anomaly_id"]);
    assert_eq!(
        chain["predict_run"]["run_id"], run_ids["predict"],
        "{chain}"
    );
    assert_eq!(chain["model"]["version"], day["model_version"]);
    assert_eq!(chain["training_run"]["run_id"], run_ids["train"], "{chain}");
    for part in ["training_data", "scored_data"] {
        let loads = chain[part].as_array().unwrap();
        assert!(!loads.is_empty(), "{part}: {chain}");
        assert!(
            loads
                .iter()
                .all(|l| l["run_id"] == run_ids["prep"] && l["hourly_rows"].as_i64().unwrap() > 0),
            "{part} loaded by the prep run: {chain}"
        );
    }
    let prep = &chain["prep_runs"][0];
    assert_eq!(prep["run"]["run_id"], run_ids["prep"]);
    assert_eq!(prep["extract"]["to"], "2025-06-30", "{prep}");
    let printed = env.ok(&["lineage", "anomaly", &day["anomaly_id"].to_string()]);
    assert!(
        printed.contains(&format!("<- scored by predict run {}", run_ids["predict"]))
            && printed.contains(&format!("by train run {}", run_ids["train"]))
            && printed.contains(&format!("prep run {}", run_ids["prep"])),
        "{printed}"
    );
    let by_incident = env.json(&["lineage", "incident", &day["incident_id"].to_string()]);
    assert!(!by_incident.as_array().unwrap().is_empty(), "{by_incident}");
    let out = env.cmd(&["lineage", "anomaly"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a missing id is a usage error");
    assert!(text(&out.stderr).contains("RUN_ID, `anomaly ID` or `incident ID`"));
    env.failed(&["lineage", "anomaly", "987654"], "unknown anomaly");

    // --warehouse (bare name or ACCOUNT.NAME) and --open filter.
    let first = &incidents[0];
    let (account, warehouse) = (
        first["account_name"].as_str().unwrap(),
        first["warehouse_name"].as_str().unwrap(),
    );
    let qualified = format!("{account}.{warehouse}");
    let only = env.json(&[
        "anomalies",
        "--since",
        "2025-01-01",
        "--warehouse",
        &qualified,
    ]);
    let only = only.as_array().unwrap();
    assert!(!only.is_empty());
    assert!(
        only.iter()
            .all(|i| i["account_name"] == account && i["warehouse_name"] == warehouse)
    );
    let bare = env.json(&[
        "anomalies",
        "--since",
        "2025-01-01",
        "--warehouse",
        warehouse,
    ]);
    assert!(bare.as_array().unwrap().len() >= only.len());
    // A warehouse nobody meters is an error naming it (as `models --warehouse` and `runs --job` do), not an
    // empty list that reads like "no incidents".
    let none = env
        .cmd(&[
            "anomalies",
            "--since",
            "2025-01-01",
            "--warehouse",
            "NO_SUCH_WH",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&none.stderr);
    assert_eq!(none.status.code(), Some(1), "{err}");
    assert!(err.contains("no warehouse `NO_SUCH_WH`"), "{err}");
    let open_ids = |v: &Value| -> BTreeSet<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .filter(|i| i["status"] == "open")
            .map(|i| i["incident_id"].as_i64().unwrap())
            .collect()
    };
    let open = env.json(&["anomalies", "--since", "2025-01-01", "--open"]);
    let open_listed: BTreeSet<i64> = open
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["incident_id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        open_listed,
        open_ids(&env.json(&["anomalies", "--since", "2025-01-01"]))
    );

    // Feedback on an incident: it and all its days, nothing else.
    let target = open_listed
        .iter()
        .next()
        .copied()
        .unwrap_or_else(|| first["incident_id"].as_i64().unwrap());
    let acked = env.json(&[
        "anomalies",
        "ack",
        &target.to_string(),
        "--reason",
        "planned",
    ]);
    assert_eq!(acked["acknowledged"], true);
    assert_eq!(acked["incident_id"], target);
    assert_eq!(acked["incident"]["status"], "acknowledged");
    assert!(
        acked["incident"]["acknowledged_by"]
            .as_str()
            .unwrap()
            .starts_with("cli:")
    );
    let after = env.json(&["anomalies", "--since", "2025-01-01"]);
    for i in after.as_array().unwrap() {
        if i["incident_id"] == target {
            assert_eq!(
                (i["status"].as_str(), i["ack_reason"].as_str()),
                (Some("acknowledged"), Some("planned"))
            );
            assert!(i["acknowledged_at"].is_string());
        } else {
            assert!(i["ack_reason"].is_null(), "{i}");
        }
    }
    let open_after = env.json(&["anomalies", "--since", "2025-01-01", "--open"]);
    assert!(
        open_after
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["incident_id"] != target),
        "an acknowledged incident is not open"
    );
    let days_after = env.json(&["anomalies", "--days", "--since", "2025-01-01"]);
    for a in days_after.as_array().unwrap() {
        if a["incident_id"] == target {
            assert_eq!(a["ack_reason"], "planned", "{a}");
        } else {
            assert!(a["ack_reason"].is_null(), "{a}");
        }
    }
    // Old tooling: an anomaly (day) id acknowledges its incident.
    let other_day = days_after
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["incident_id"] != target)
        .cloned();
    if let Some(d) = other_day {
        let id = d["anomaly_id"].as_i64().unwrap().to_string();
        let r = env.json(&["anomalies", "ack", &id, "--reason", "expected", "--anomaly"]);
        assert_eq!(r["incident_id"], d["incident_id"]);
        assert_eq!(r["anomaly_id"], d["anomaly_id"]);
    }
    let out = env
        .cmd(&["anomalies", "ack", &target.to_string(), "--reason", "bored"])
        .output()
        .unwrap();
    let err = failed(&out, "unknown reason");
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("false_positive") && err.contains("planned") && err.contains("expected"),
        "the refusal names the allowed values: {err}"
    );
    let err = env.failed(
        &["anomalies", "ack", "987654", "--reason", "expected"],
        "unknown id",
    );
    assert!(err.contains("no incident with id 987654"), "{err}");
    let err = env.failed(
        &[
            "anomalies",
            "ack",
            "987654",
            "--reason",
            "expected",
            "--anomaly",
        ],
        "unknown anomaly id",
    );
    assert!(err.contains("no anomaly with id 987654"), "{err}");
    let err = env.failed(&["anomalies", "--since", "yesterday"], "bad --since");
    assert!(err.contains("--since"), "{err}");

    // No Slack configured: the predict run's one digest, announcing every incident, written to a file.
    let alerts = env.json(&["alerts"]);
    let alerts = alerts.as_array().unwrap();
    assert!(incidents.len() > 1, "the demo data has several incidents");
    // One digest (not one alert per incident) and, in its thread, the charts of the largest incidents (at
    // most 5), written next to it as PNG files.
    let digests: Vec<&Value> = alerts.iter().filter(|a| a["thread_of"].is_null()).collect();
    assert_eq!(digests.len(), 1, "one digest: {alerts:?}");
    let a = digests[0];
    let replies: Vec<&Value> = alerts
        .iter()
        .filter(|r| !r["thread_of"].is_null())
        .collect();
    assert_eq!(replies.len(), incidents.len().min(5), "{alerts:?}");
    for r in &replies {
        assert_eq!(r["thread_of"], a["alert_id"]);
        assert_eq!(r["state"], "written");
        let name = r["attachment_name"].as_str().unwrap();
        let png = env
            .dir
            .path()
            .join("data/alerts")
            .join(format!("alert-{}-{name}", r["alert_id"]));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(bytes.starts_with(&[0x89, b'P', b'N', b'G']));
    }
    assert_eq!(a["kind"], "anomaly");
    assert_eq!(a["state"], "written");
    assert!(a["sent_at"].is_string());
    assert_eq!(a["dedupe_key"], format!("digest:{}", a["run_id"]));
    for i in incidents {
        assert_eq!(i["alert_id"], a["alert_id"], "announced by the digest: {i}");
    }
    // explain-alert: announced by that digest; without routes everything goes to the default channel.
    let first = incidents[0]["incident_id"].as_i64().unwrap().to_string();
    let why = env.json(&["explain-alert", &first]);
    assert_eq!(why["announced_by"]["alert_id"], a["alert_id"], "{why}");
    assert_eq!(
        why["channels"],
        serde_json::json!([{ "route": "default", "channel": "file" }]),
        "{why}"
    );
    let text = env.ok(&["explain-alert", &first]);
    assert!(
        text.contains("announced by alert")
            && text.contains("no [[pipeline.alerts.routes]] configured"),
        "{text}"
    );
    let err = env.failed(&["explain-alert", "987654"], "unknown incident");
    assert!(err.contains("no incident with id 987654"), "{err}");
    assert_eq!(
        env.json(&["alerts", "--pending"]).as_array().unwrap().len(),
        0
    );
    assert!(env.ok(&["alerts"]).contains("written"));
}

/// The shipped file must parse and pass `config check` once its placeholders point at real things: the key
/// path is overridden to an encrypted test key, the passphrase and Slack token come from the environment.
#[test]
fn shipped_config_passes_config_check_with_a_real_key() {
    let python = std::env::var("SNOWPATROL_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "SNOWPATROL_TEST_PYTHON is not set: point it at a Python with `cryptography` (scripts/test.sh sets \
             .venv/bin/python)"
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = d.join("snowflake_key.p8");
    // Numeric on purpose: environment overrides must not turn a secret into an integer.
    let passphrase = "20261127";
    let script = format!(
        "from cryptography.hazmat.primitives.asymmetric import rsa\n\
         from cryptography.hazmat.primitives import serialization as s\n\
         k = rsa.generate_private_key(public_exponent=65537, key_size=2048)\n\
         open({key:?}, 'wb').write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, \
         s.BestAvailableEncryption(b{passphrase:?})))\n",
        key = key.display().to_string()
    );
    let out = Command::new(&python)
        .args(["-c", &script])
        .output()
        .unwrap();
    ok(out, "generating a test key with Python");

    let shipped = shipped_config();
    let check = |passphrase: Option<&str>| {
        let mut c = snowpatrol(
            d,
            &[
                "--config",
                shipped.to_str().unwrap(),
                "config",
                "check",
                "--json",
            ],
        );
        c.env("SNOWPATROL_DATA_DIR", d.join("data"))
            .env("SNOWPATROL__PIPELINE__SOURCE__AUTH__PRIVATE_KEY_PATH", &key)
            .env("SNOWPATROL_SLACK_TOKEN", "xoxb-test-token");
        if let Some(p) = passphrase {
            c.env("SNOWPATROL__PIPELINE__SOURCE__AUTH__PASSPHRASE", p);
        }
        c.output().unwrap()
    };
    let r = json_of(&ok(
        check(Some(passphrase)),
        "config check of the shipped file",
    ));
    assert_eq!(r["ok"], true);
    let jobs: BTreeMap<String, String> = r["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["job"].as_str().unwrap().to_string(),
                j["schedule"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(jobs["prep"].contains("0 6 * * *"), "{jobs:?}");
    assert!(
        jobs["train"].contains("snowpatrol://features/daily"),
        "{jobs:?}"
    );
    assert!(
        jobs["predict"].contains("snowpatrol://models/latest"),
        "{jobs:?}"
    );

    let err = failed(&check(None), "encrypted key without a passphrase");
    assert!(err.contains("passphrase"), "{err}");
    let wrong = "not-the-passphrase-42";
    let err = failed(&check(Some(wrong)), "wrong passphrase");
    assert!(err.contains("cannot decrypt"), "{err}");
    assert!(!err.contains(wrong), "the passphrase leaked: {err}");
}

/// Inspecting and queueing jobs needs no Snowflake key or Slack token; only running them does.
#[test]
fn inspecting_jobs_needs_no_credentials_running_them_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let shipped = shipped_config();
    let cmd = |args: &[&str]| {
        let mut full = vec!["--config", shipped.to_str().unwrap()];
        full.extend_from_slice(args);
        let mut c = snowpatrol(d, &full);
        c.env("SNOWPATROL_DATA_DIR", d.join("data"));
        c.output().unwrap()
    };
    ok(cmd(&["migrate"]), "migrate");
    let explained = ok(
        cmd(&["explain", "prep", "--json"]),
        "explain prep without credentials",
    );
    assert_eq!(
        json_of(&explained)["schedule"],
        serde_json::json!("cron `0 6 * * *` (UTC)")
    );
    ok(cmd(&["jobs"]), "jobs without credentials");
    ok(
        cmd(&["trigger", "train", "--param", "force_retrain=true"]),
        "trigger without credentials",
    );
    let out = cmd(&["run", "prep"]);
    let err = failed(&out, "run prep without the Snowflake key");
    assert!(
        err.contains("private key") || err.contains("private_key_path"),
        "{err}"
    );
}

/// `snowpatrol run predict` with no daemon behind it and a Slack that accepts connections and never answers:
/// the run succeeds, the command waits for its alerts at most `drain_timeout` (plus the attempt in flight),
/// says so, and leaves them `pending` for the daemon.
#[test]
fn run_with_a_hanging_slack_exits_after_the_drain_timeout_leaving_alerts_pending() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        // Keep every connection open and never answer.
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let config = format!(
        "{SYNTHETIC_CONFIG}\n[pipeline.slack]\nchannel = \"C0123\"\ntoken_env = \"SNOWPATROL_CLI_TEST_SLACK_TOKEN\"\n\
         api_url = \"http://{addr}/api/\"\nrequest_timeout = \"1s\"\ninitial_backoff = \"30s\"\ndrain_timeout = \"3s\"\n"
    );
    let env = DataDir::new(&config, None);
    let run = |job: &str| {
        let started = std::time::Instant::now();
        let out = env
            .cmd(&["run", job, "--json"])
            .env("SNOWPATROL_CLI_TEST_SLACK_TOKEN", "xoxb-cli-test")
            .output()
            .unwrap();
        (out, started.elapsed())
    };
    for job in ["prep", "train"] {
        let (out, _) = run(job);
        ok(out, job);
    }
    let (out, took) = run("predict");
    let stderr = text(&out.stderr);
    let r = json_of(&ok(out, "predict"));
    assert_eq!(r["run"]["state"], "success", "{r}");
    assert!(
        stderr.contains("alerts not delivered before exiting"),
        "says what it left: {stderr}"
    );
    // Before the outbox this waited max_attempts x 30 s per alert; now the drain bound (3 s) plus the
    // attempt in flight (1 s) and the run itself. Generous for a loaded machine.
    assert!(took < std::time::Duration::from_secs(60), "{took:?}");
    println!(
        "run predict with a hanging Slack exited after {:.1} s",
        took.as_secs_f64()
    );
    let pending = env.json(&["alerts", "--pending"]);
    let pending = pending.as_array().unwrap();
    assert!(!pending.is_empty(), "the run queued alerts");
    for a in pending {
        assert_eq!(a["state"], "pending", "{a}");
        assert!(a["attempts"].as_i64().unwrap() <= 1, "{a}");
    }
    assert!(
        pending.iter().any(|a| a["outcome_unknown"] == true),
        "the hung post is marked for a history look-up: {pending:?}"
    );
}

/// A CSV export ends where it was taken: prep's window follows the file's last complete day, so an export
/// from last year loads and the chain runs (it used to fail validation on every day after the export).
#[test]
fn an_old_csv_export_is_loaded_up_to_its_own_last_day() {
    let env = DataDir::new(
        r#"
[pipeline.source]
kind = "csv"
path = "export/metering.csv"

[pipeline.prep]
backfill_days = 90

[logging]
level = "warn"
"#,
        None,
    );
    let synth = snowpatrol(
        env.dir.path(),
        &[
            "synth",
            "--output",
            "export",
            "--warehouses",
            "4",
            "--days",
            "120",
            "--seed",
            "3",
            "--end",
            "2025-03-31",
        ],
    )
    .output()
    .unwrap();
    ok(synth, "synth");
    let r = env.json(&["run", "prep"]);
    assert_eq!(r["run"]["state"], "success", "{r}");
    let extract = env.json(&["tasks", &r["run"]["run_id"].to_string()]);
    let data = extract
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_name"] == "extract")
        .map(|t| t["output"]["data"].clone())
        .unwrap();
    assert_eq!(
        data["to"], "2025-03-31",
        "the window ends on the export's last day: {data}"
    );
    assert_eq!(data["from"], "2025-01-01", "90 days back from it: {data}");
}
