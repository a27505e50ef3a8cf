//! Anomalies and incidents as facts about (account, warehouse, day), on PostgreSQL and SQLite: the 0003 upgrade
//! of a database written by the previous release (same day scored by two model versions, acknowledged rows,
//! alerts under the old dedupe key), and the store's incident maintenance (re-score in place, extend, bridge and
//! merge, acknowledge, resolve and reopen, cost).

#[macro_use]
mod backends;
mod previous_release;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use snowpatrol_detect::WarehouseKey;
use snowpatrol_detect::model::AnomalyDay;
use snowpatrol_pipeline::PipelineStore;
use snowpatrol_pipeline::store::{
    AckReason, AlertKind, AnomalyRow, IncidentFilter, IncidentRow, IncidentStatus, NewAnomaly,
    NewModel,
};
use snowpatrol_store::{Database, Pool, StoreError};
use std::collections::BTreeSet;

// Every test gets an EMPTY database (no migration applied) and migrates it as far as it needs.
both_backends!(
    upgrade_from_0002_merges_days_and_backfills_incidents,
    one_row_per_day_and_incidents_maintained_across_rescores,
    acknowledgements_resolution_and_cost,
    upgrade_to_0006_links_announced_incidents_and_digests_announce_once,
);

/// Runs one statement with binds on whichever backend `db` is.
macro_rules! exec {
    ($db:expr, $sql:expr $(, $arg:expr)* $(,)?) => {
        match $db.pool() {
            Pool::Postgres(p) => { sqlx::query($sql)$(.bind($arg))*.execute(p).await.unwrap(); }
            Pool::Sqlite(p) => { sqlx::query($sql)$(.bind($arg))*.execute(p).await.unwrap(); }
        }
    };
}

fn day(m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, m, d).unwrap()
}

fn at(m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, m, d, h, 0, 0).unwrap()
}

async fn model(store: &PipelineStore, key: &WarehouseKey) -> (i64, i32) {
    store
        .register_model(
            &NewModel {
                key: key.clone(),
                model_kind: "default".into(),
                params: serde_json::json!({}),
                threshold: 3.0,
                training_start: day(1, 1),
                training_end: day(5, 1),
                metrics: serde_json::json!({}),
                drift: serde_json::json!({}),
                model: serde_json::json!({}),
                training_run_id: None,
            },
            None,
        )
        .await
        .map(|r| (r.model_id, r.version))
        .unwrap()
}

fn all() -> IncidentFilter {
    IncidentFilter::default()
}

async fn incidents(store: &PipelineStore) -> Vec<IncidentRow> {
    store.list_incidents(&all()).await.unwrap()
}

async fn days(store: &PipelineStore) -> Vec<AnomalyRow> {
    store.list_anomalies(&all()).await.unwrap()
}

/// A 0002 database as the previous release left it after a retrain: the same days scored by v1 and v2
/// (the view then doubled the incident), an acknowledgement on the older row only, and two alerts for one
/// incident. After `migrate()`: no day lost, one row per day, acknowledgements kept, incidents backfilled,
/// the view reads incidents, the old alerts are re-keyed so nothing is alerted again.
async fn upgrade_from_0002_merges_days_and_backfills_incidents(db: Database) {
    previous_release::migrate_to(&db, 2).await;
    let store = PipelineStore::new(db.clone());
    let wh = WarehouseKey::new("ACME", "ETL_WH");
    let other = WarehouseKey::new("ACME", "BI_WH");
    let (wh_v1, _) = model(&store, &wh).await;
    let (wh_v2, v2) = model(&store, &wh).await;
    assert_eq!(v2, 2);
    let (bi_v1, _) = model(&store, &other).await;
    let (bi_v2, _) = model(&store, &other).await;

    // (id, key, day, model_id, version, run, excess, score, detected_at, acknowledged_at, reason)
    type Old<'a> = (
        i64,
        &'a WarehouseKey,
        NaiveDate,
        i64,
        i32,
        i64,
        f64,
        f64,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        Option<&'a str>,
    );
    let old: Vec<Old> = vec![
        // ETL_WH June 1-3, scored by v1 (run 10) and again by v2 (run 20); June 1 acked (planned) on v1's row.
        (
            1,
            &wh,
            day(6, 1),
            wh_v1,
            1,
            10,
            8.0,
            5.0,
            at(6, 2, 6),
            Some(at(6, 3, 9)),
            Some("planned"),
        ),
        (
            2,
            &wh,
            day(6, 2),
            wh_v1,
            1,
            10,
            8.0,
            6.0,
            at(6, 3, 6),
            None,
            None,
        ),
        (
            3,
            &wh,
            day(6, 1),
            wh_v2,
            2,
            20,
            9.0,
            7.0,
            at(6, 4, 6),
            None,
            None,
        ),
        (
            4,
            &wh,
            day(6, 2),
            wh_v2,
            2,
            20,
            7.0,
            6.5,
            at(6, 4, 6),
            None,
            None,
        ),
        (
            5,
            &wh,
            day(6, 3),
            wh_v2,
            2,
            20,
            2.0,
            4.0,
            at(6, 4, 6),
            None,
            None,
        ),
        // ETL_WH June 10: one version, not acknowledged: an open incident of its own.
        (
            6,
            &wh,
            day(6, 10),
            wh_v2,
            2,
            21,
            3.0,
            4.0,
            at(6, 11, 6),
            None,
            None,
        ),
        // BI_WH June 10: both rows acknowledged, the newer version's row earlier: its reason wins.
        (
            7,
            &other,
            day(6, 10),
            bi_v1,
            1,
            10,
            3.0,
            4.0,
            at(6, 11, 6),
            Some(at(6, 12, 0)),
            Some("false_positive"),
        ),
        (
            8,
            &other,
            day(6, 10),
            bi_v2,
            2,
            21,
            4.0,
            4.5,
            at(6, 12, 6),
            Some(at(6, 11, 12)),
            Some("expected"),
        ),
    ];
    for (id, key, d, model_id, version, run, excess, score, detected, acked, reason) in &old {
        let start = if **key == wh && *d <= day(6, 3) {
            day(6, 1)
        } else {
            *d
        };
        exec!(
            db,
            "INSERT INTO anomalies (anomaly_id, account_name, warehouse_name, usage_date, model_id, model_version, run_id, \
             actual_credits, expected_credits, excess_credits, score, threshold, explanation, incident_start, detected_at, \
             acknowledged_at, ack_reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 3.0, 'old', $12, $13, $14, $15)",
            *id,
            key.account_name.clone(),
            key.warehouse_name.clone(),
            *d,
            *model_id,
            *version,
            *run,
            10.0 + excess,
            10.0,
            *excess,
            *score,
            start,
            *detected,
            *acked,
            reason.map(str::to_string),
        );
    }
    let msg = serde_json::json!({ "text": "old" });
    for key in [
        "incident:ACME.ETL_WH:2025-06-01",
        "incident:ACME.ETL_WH:2025-06-02",
        "incident:ACME.ETL_WH:2025-06-10",
        "failure:3:score_warehouse:ACME.ETL_WH",
    ] {
        let kind = if key.starts_with("failure") {
            AlertKind::TaskFailure
        } else {
            AlertKind::Anomaly
        };
        store
            .insert_alert(key, kind, None, "file", &msg, None)
            .await
            .unwrap()
            .unwrap();
    }

    snowpatrol_pipeline::migrate(&db)
        .await
        .expect("0003 upgrades the database in place");
    assert!(snowpatrol_pipeline::schema_ready(&db).await.unwrap());

    // One row per day, each day kept; the newest version's scores; first detection; earliest acknowledgement.
    let rows = days(&store).await;
    let got: Vec<(String, NaiveDate, i64, i32, i64)> = rows
        .iter()
        .map(|a| {
            (
                a.warehouse_name.clone(),
                a.usage_date,
                a.anomaly_id,
                a.model_version,
                a.run_id,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("BI_WH".into(), day(6, 10), 8, 2, 21),
            ("ETL_WH".into(), day(6, 1), 3, 2, 20),
            ("ETL_WH".into(), day(6, 2), 4, 2, 20),
            ("ETL_WH".into(), day(6, 3), 5, 2, 20),
            ("ETL_WH".into(), day(6, 10), 6, 2, 21),
        ]
    );
    let by_day = |w: &str, d: NaiveDate| by(&rows, w, d);
    let june1 = by_day("ETL_WH", day(6, 1));
    assert_eq!(june1.excess_credits, 9.0, "v2's scores");
    assert_eq!(june1.detected_at, at(6, 2, 6), "first detection (v1)");
    assert_eq!(june1.scored_at, at(6, 4, 6), "last re-score (v2)");
    assert_eq!(
        (june1.acknowledged_at, june1.ack_reason.map(|r| r.as_str())),
        (Some(at(6, 3, 9)), Some("planned")),
        "the acknowledgement made on v1's row survives the merge"
    );
    let bi = by_day("BI_WH", day(6, 10));
    assert_eq!(
        (bi.acknowledged_at, bi.ack_reason.map(|r| r.as_str())),
        (Some(at(6, 11, 12)), Some("expected")),
        "earliest acknowledgement of the merged rows"
    );

    // Incidents: consecutive days of a warehouse; acknowledged when any day was.
    let inc = incidents(&store).await;
    type Shape<'a> = (
        &'a str,
        NaiveDate,
        NaiveDate,
        i32,
        f64,
        IncidentStatus,
        Option<AckReason>,
    );
    let shape: Vec<Shape> = inc
        .iter()
        .map(|i| {
            (
                i.warehouse_name.as_str(),
                i.start_day,
                i.end_day,
                i.days,
                i.excess_credits,
                i.status,
                i.ack_reason,
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (
                "BI_WH",
                day(6, 10),
                day(6, 10),
                1,
                4.0,
                IncidentStatus::Acknowledged,
                Some(AckReason::Expected)
            ),
            (
                "ETL_WH",
                day(6, 1),
                day(6, 3),
                3,
                18.0,
                IncidentStatus::Acknowledged,
                Some(AckReason::Planned)
            ),
            (
                "ETL_WH",
                day(6, 10),
                day(6, 10),
                1,
                3.0,
                IncidentStatus::Open,
                None
            ),
        ]
    );
    let (etl1, etl2) = (&inc[1], &inc[2]);
    assert_eq!(etl1.peak_score, 7.0);
    assert_eq!(etl1.acknowledged_at, Some(at(6, 3, 9)));
    assert_eq!(etl1.excess_cost, None, "no price known to SQL");
    for a in &rows {
        let i = inc.iter().find(|i| i.incident_id == a.incident_id).unwrap();
        assert_eq!(a.incident_start, i.start_day);
        assert_eq!(
            (a.warehouse_name.as_str(), a.account_name.as_str()),
            (i.warehouse_name.as_str(), i.account_name.as_str())
        );
    }
    // The days of an acknowledged incident carry its acknowledgement (old tooling filters on them).
    for d in [2, 3] {
        let a = by_day("ETL_WH", day(6, d));
        assert_eq!(
            (a.acknowledged_at, a.ack_reason.map(|r| r.as_str())),
            (Some(at(6, 3, 9)), Some("planned"))
        );
    }
    assert!(by_day("ETL_WH", day(6, 10)).acknowledged_at.is_none());

    // The view: same leading columns as before, one row per open incident.
    let view: Vec<(String, String, NaiveDate, NaiveDate, i64, f64)> = match db.pool() {
        Pool::Postgres(p) => sqlx::query_as("SELECT account_name, warehouse_name, incident_start, last_day, days, excess_credits FROM open_incidents")
            .fetch_all(p).await.unwrap(),
        Pool::Sqlite(p) => sqlx::query_as("SELECT account_name, warehouse_name, incident_start, last_day, days, excess_credits FROM open_incidents")
            .fetch_all(p).await.unwrap(),
    };
    assert_eq!(
        view,
        vec![(
            "ACME".into(),
            "ETL_WH".into(),
            day(6, 10),
            day(6, 10),
            1,
            3.0
        )]
    );

    // Alerts: the first alert of each incident now carries the incident's key; the repeat stays history.
    let keys: BTreeSet<String> = store
        .list_alerts(false, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.dedupe_key)
        .collect();
    let want: BTreeSet<String> = [
        format!("incident:{}", etl1.incident_id),
        format!("incident:{}", etl2.incident_id),
        "incident:ACME.ETL_WH:2025-06-02".to_string(),
        "failure:3:score_warehouse:ACME.ETL_WH".to_string(),
    ]
    .into();
    assert_eq!(keys, want);

    // The upgraded database is maintained like a new one: June 4 extends the acknowledged incident.
    let r = store
        .upsert_anomalies(
            &[new_day(&wh, day(6, 4), wh_v2, 2, 30, 1.0, 4.0)],
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!((r.new_days, r.extended_incidents), (1, 1));
    let inc = incidents(&store).await;
    assert_eq!(
        (inc[1].end_day, inc[1].days, inc[1].status),
        (day(6, 4), 4, IncidentStatus::Acknowledged)
    );
    assert_eq!(
        by(&days(&store).await, "ETL_WH", day(6, 4))
            .ack_reason
            .map(|r| r.as_str()),
        Some("planned")
    );
}

fn new_day(
    key: &WarehouseKey,
    d: NaiveDate,
    model_id: i64,
    version: i32,
    run_id: i64,
    excess: f64,
    score: f64,
) -> NewAnomaly {
    NewAnomaly {
        key: key.clone(),
        model_id,
        model_version: version,
        run_id,
        day: AnomalyDay {
            date: d,
            actual_credits: 10.0 + excess,
            expected_credits: 10.0,
            excess_credits: excess,
            score,
            threshold: 3.0,
            explanation: format!("v{version}"),
        },
    }
}

fn by<'a>(rows: &'a [AnomalyRow], w: &str, d: NaiveDate) -> &'a AnomalyRow {
    rows.iter()
        .find(|a| a.warehouse_name == w && a.usage_date == d)
        .unwrap_or_else(|| panic!("no row for {w} {d}: {rows:?}"))
}

/// Re-scoring a day (a rerun or a retrained model) updates its one row; incidents grow, bridge and merge.
async fn one_row_per_day_and_incidents_maintained_across_rescores(db: Database) {
    snowpatrol_pipeline::migrate(&db).await.unwrap();
    let store = PipelineStore::new(db.clone());
    let wh = WarehouseKey::new("ACME", "ETL_WH");
    let (m1, _) = model(&store, &wh).await;
    let (m2, _) = model(&store, &wh).await;

    let r = store
        .upsert_anomalies(
            &[
                new_day(&wh, day(6, 2), m1, 1, 10, 5.0, 5.0),
                new_day(&wh, day(6, 1), m1, 1, 10, 4.0, 4.0),
            ],
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (r.new_days, r.rescored_days, r.new_incidents),
        (2, 0, 1),
        "{r:?}"
    );
    let first = incidents(&store).await;
    assert_eq!(first.len(), 1);
    let id = first[0].incident_id;
    let detected = by(&days(&store).await, "ETL_WH", day(6, 1)).detected_at;

    // A retrained model scores the same days again: same rows, newest scores, same incident.
    let r = store
        .upsert_anomalies(
            &[
                new_day(&wh, day(6, 1), m2, 2, 11, 6.0, 6.0),
                new_day(&wh, day(6, 2), m2, 2, 11, 5.0, 7.0),
            ],
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!((r.new_days, r.rescored_days, r.new_incidents), (0, 2, 0));
    let rows = days(&store).await;
    assert_eq!(rows.len(), 2, "one row per day: {rows:?}");
    let june1 = by(&rows, "ETL_WH", day(6, 1));
    assert_eq!(
        (june1.model_version, june1.run_id, june1.excess_credits),
        (2, 11, 6.0)
    );
    assert_eq!(
        june1.detected_at, detected,
        "detected_at is the first detection"
    );
    assert!(june1.scored_at >= detected);
    let inc = incidents(&store).await;
    assert_eq!(
        (
            inc.len(),
            inc[0].incident_id,
            inc[0].days,
            inc[0].excess_credits,
            inc[0].peak_score
        ),
        (1, id, 2, 11.0, 7.0)
    );

    // June 4 is not adjacent: a second incident. June 3 bridges them: one incident again, the earlier id.
    let r = store
        .upsert_anomalies(&[new_day(&wh, day(6, 4), m2, 2, 12, 1.0, 4.0)], None, None)
        .await
        .unwrap();
    assert_eq!(r.new_incidents, 1);
    assert_eq!(incidents(&store).await.len(), 2);
    let r = store
        .upsert_anomalies(&[new_day(&wh, day(6, 3), m2, 2, 12, 2.0, 4.0)], None, None)
        .await
        .unwrap();
    assert_eq!((r.extended_incidents, r.merged_incidents), (1, 1));
    let inc = incidents(&store).await;
    assert_eq!(inc.len(), 1, "{inc:?}");
    assert_eq!(
        (
            inc[0].incident_id,
            inc[0].start_day,
            inc[0].end_day,
            inc[0].days,
            inc[0].excess_credits
        ),
        (id, day(6, 1), day(6, 4), 4, 14.0)
    );
    assert!(days(&store).await.iter().all(|a| a.incident_id == id));

    // A day just before the start extends it backwards: same id, start moves, days follow.
    store
        .upsert_anomalies(&[new_day(&wh, day(5, 31), m2, 2, 13, 1.0, 4.0)], None, None)
        .await
        .unwrap();
    let inc = incidents(&store).await;
    assert_eq!(
        (inc.len(), inc[0].incident_id, inc[0].start_day, inc[0].days),
        (1, id, day(5, 31), 5)
    );
    assert!(
        days(&store)
            .await
            .iter()
            .all(|a| a.incident_start == day(5, 31))
    );

    // Several new days in one batch, out of order, chain into one incident.
    let other = WarehouseKey::new("ACME", "BI_WH");
    let (b1, _) = model(&store, &other).await;
    store
        .upsert_anomalies(
            &[
                new_day(&other, day(6, 7), b1, 1, 14, 1.0, 4.0),
                new_day(&other, day(6, 5), b1, 1, 14, 1.0, 4.0),
                new_day(&other, day(6, 6), b1, 1, 14, 1.0, 4.0),
            ],
            None,
            None,
        )
        .await
        .unwrap();
    let bi: Vec<IncidentRow> = store
        .list_incidents(&IncidentFilter {
            warehouse: Some("ACME.BI_WH".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        bi.iter()
            .map(|i| (i.start_day, i.end_day, i.days))
            .collect::<Vec<_>>(),
        vec![(day(6, 5), day(6, 7), 3)]
    );
    // Filters: by bare warehouse name, by day.
    assert_eq!(
        store
            .list_anomalies(&IncidentFilter {
                warehouse: Some("BI_WH".into()),
                since: Some(day(6, 6)),
                ..Default::default()
            })
            .await
            .unwrap()
            .len(),
        2
    );
}

/// Acknowledgement is per incident and survives re-scores and growth; resolution and reopening; cost.
async fn acknowledgements_resolution_and_cost(db: Database) {
    snowpatrol_pipeline::migrate(&db).await.unwrap();
    let store = PipelineStore::new(db.clone());
    let wh = WarehouseKey::new("ACME", "ETL_WH");
    let (m1, _) = model(&store, &wh).await;
    let price = Some(3.0);
    store
        .upsert_anomalies(
            &[
                new_day(&wh, day(6, 1), m1, 1, 10, 4.0, 4.0),
                new_day(&wh, day(6, 2), m1, 1, 10, 2.0, 4.0),
            ],
            price,
            None,
        )
        .await
        .unwrap();
    let id = incidents(&store).await[0].incident_id;
    assert_eq!(incidents(&store).await[0].excess_cost, Some(18.0));

    // Acknowledged through a day's id (old tooling): the incident and all its days.
    let day_id = by(&days(&store).await, "ETL_WH", day(6, 2)).anomaly_id;
    assert_eq!(
        store
            .ack_anomaly(day_id, AckReason::Planned, Some("cli:ops@host"))
            .await
            .unwrap(),
        Some(id)
    );
    assert_eq!(
        store
            .ack_anomaly(987_654, AckReason::Planned, None)
            .await
            .unwrap(),
        None
    );
    let inc = store.incident(id).await.unwrap().unwrap();
    assert_eq!(
        (inc.status, inc.ack_reason, inc.acknowledged_by.as_deref()),
        (
            IncidentStatus::Acknowledged,
            Some(AckReason::Planned),
            Some("cli:ops@host")
        )
    );
    assert!(
        days(&store)
            .await
            .iter()
            .all(|a| a.ack_reason.map(|r| r.as_str()) == Some("planned"))
    );
    // A re-score and a new adjacent day keep it acknowledged; the new day carries the acknowledgement.
    let (m2, _) = model(&store, &wh).await;
    store
        .upsert_anomalies(
            &[
                new_day(&wh, day(6, 2), m2, 2, 11, 2.5, 4.0),
                new_day(&wh, day(6, 3), m2, 2, 11, 1.0, 4.0),
            ],
            price,
            None,
        )
        .await
        .unwrap();
    let inc = store.incident(id).await.unwrap().unwrap();
    assert_eq!(
        (inc.status, inc.days, inc.excess_cost),
        (IncidentStatus::Acknowledged, 3, Some(22.5))
    );
    assert!(
        days(&store)
            .await
            .iter()
            .all(|a| a.ack_reason.map(|r| r.as_str()) == Some("planned"))
    );
    // Open filter leaves it out.
    let open = IncidentFilter {
        statuses: vec![IncidentStatus::Open],
        ..Default::default()
    };
    assert!(store.list_incidents(&open).await.unwrap().is_empty());
    // Acking again overwrites the reason; an unknown incident is reported.
    assert!(
        store
            .ack_incident(id, AckReason::FalsePositive, None)
            .await
            .unwrap()
    );
    assert_eq!(
        store.incident(id).await.unwrap().unwrap().ack_reason,
        Some(AckReason::FalsePositive)
    );
    assert!(
        !store
            .ack_incident(987_654, AckReason::Expected, None)
            .await
            .unwrap()
    );
    // Resolution never touches acknowledged incidents.
    assert_eq!(
        store
            .resolve_incidents(&wh, day(6, 30), None)
            .await
            .unwrap(),
        0
    );

    // Another warehouse: open, resolved once a later day is scored, reopened when it grows at its end.
    let bi = WarehouseKey::new("ACME", "BI_WH");
    let (b1, _) = model(&store, &bi).await;
    store
        .upsert_anomalies(&[new_day(&bi, day(6, 10), b1, 1, 12, 1.0, 4.0)], None, None)
        .await
        .unwrap();
    let bi_filter = IncidentFilter {
        warehouse: Some("ACME.BI_WH".into()),
        ..Default::default()
    };
    let bi_inc = store.list_incidents(&bi_filter).await.unwrap();
    assert_eq!(bi_inc[0].excess_cost, None, "no price, no cost");
    assert_eq!(
        store
            .resolve_incidents(&bi, day(6, 10), None)
            .await
            .unwrap(),
        0,
        "still its last day"
    );
    assert_eq!(
        store
            .resolve_incidents(&bi, day(6, 11), None)
            .await
            .unwrap(),
        1
    );
    let r = store.list_incidents(&bi_filter).await.unwrap()[0].clone();
    assert_eq!(r.status, IncidentStatus::Resolved);
    assert!(r.resolved_at.is_some());
    store
        .upsert_anomalies(&[new_day(&bi, day(6, 11), b1, 1, 13, 1.0, 4.0)], None, None)
        .await
        .unwrap();
    let r = store.list_incidents(&bi_filter).await.unwrap()[0].clone();
    assert_eq!(
        (r.incident_id, r.status, r.resolved_at, r.days),
        (bi_inc[0].incident_id, IncidentStatus::Open, None, 2)
    );
    // A resolved incident acknowledged later is acknowledged (and keeps its resolution time).
    store
        .resolve_incidents(&bi, day(6, 12), None)
        .await
        .unwrap();
    store
        .ack_incident(r.incident_id, AckReason::Expected, None)
        .await
        .unwrap();
    let r = store.incident(r.incident_id).await.unwrap().unwrap();
    assert_eq!(r.status, IncidentStatus::Acknowledged);
    assert!(r.resolved_at.is_some());

    // Bridging an acknowledged and an open incident: merged, acknowledged (the earlier acknowledgement).
    let dw = WarehouseKey::new("ACME", "DEV_WH");
    let (d1, _) = model(&store, &dw).await;
    store
        .upsert_anomalies(
            &[
                new_day(&dw, day(6, 1), d1, 1, 14, 1.0, 4.0),
                new_day(&dw, day(6, 3), d1, 1, 14, 1.0, 4.0),
            ],
            None,
            None,
        )
        .await
        .unwrap();
    let dev_filter = IncidentFilter {
        warehouse: Some("DEV_WH".into()),
        ..Default::default()
    };
    let dev = store.list_incidents(&dev_filter).await.unwrap();
    assert_eq!(dev.len(), 2);
    store
        .ack_incident(dev[1].incident_id, AckReason::Expected, Some("me"))
        .await
        .unwrap();
    store
        .upsert_anomalies(&[new_day(&dw, day(6, 2), d1, 1, 15, 1.0, 4.0)], None, None)
        .await
        .unwrap();
    let dev = store.list_incidents(&dev_filter).await.unwrap();
    assert_eq!(dev.len(), 1);
    assert_eq!(
        (
            dev[0].days,
            dev[0].status,
            dev[0].ack_reason,
            dev[0].acknowledged_by.as_deref()
        ),
        (
            3,
            IncidentStatus::Acknowledged,
            Some(AckReason::Expected),
            Some("me")
        )
    );
    assert!(
        store
            .list_anomalies(&dev_filter)
            .await
            .unwrap()
            .iter()
            .all(|a| a.ack_reason.map(|r| r.as_str()) == Some("expected"))
    );
}

/// A 0005 database as the previous release left it: three incidents, two of them announced by their own alert
/// (`incident:<id>`), plus a failure alert. After `migrate()` the two point at their alerts and only the third
/// is news. A digest announces incidents once: it refuses (writing nothing) when one of its incidents was
/// announced meanwhile, links them all otherwise, and a retried try of the same run queues nothing twice.
async fn upgrade_to_0006_links_announced_incidents_and_digests_announce_once(db: Database) {
    previous_release::migrate_to(&db, 5).await;
    for (id, wh, d) in [
        (1_i64, "ETL_WH", 1_u32),
        (2, "ETL_WH", 10),
        (3, "BI_WH", 12),
    ] {
        exec!(
            db,
            "INSERT INTO incidents (incident_id, account_name, warehouse_name, start_day, end_day, days, excess_credits, \
             peak_score, status, created_at, updated_at) VALUES ($1, 'ACME', $2, $3, $3, 1, 12.5, 4.0, 'open', $4, $4)",
            id,
            wh,
            day(6, d),
            at(6, d, 6),
        );
    }
    for (key, kind) in [
        ("incident:1", "anomaly"),
        ("incident:2", "anomaly"),
        ("failure:3:score_warehouse:ACME.ETL_WH", "task_failure"),
    ] {
        exec!(
            db,
            "INSERT INTO alerts (dedupe_key, kind, channel, message, state, attempts, created_at) \
             VALUES ($1, $2, 'file', '{}', 'written', 1, $3)",
            key,
            kind,
            at(6, 12, 7),
        );
    }

    snowpatrol_pipeline::migrate(&db).await.unwrap();

    let store = PipelineStore::new(db.clone());
    let alerts = store.list_alerts(false, 100).await.unwrap();
    let alert_of = |key: &str| {
        alerts
            .iter()
            .find(|a| a.dedupe_key == key)
            .map(|a| a.alert_id)
    };
    let rows = incidents(&store).await;
    let linked: Vec<(i64, Option<i64>)> =
        rows.iter().map(|i| (i.incident_id, i.alert_id)).collect();
    assert_eq!(
        linked,
        vec![
            (3, None),
            (1, alert_of("incident:1")),
            (2, alert_of("incident:2")),
        ],
        "ordered by warehouse: BI_WH first"
    );

    // A digest naming an incident announced before is refused whole.
    let err = store
        .enqueue_digests(
            AlertKind::Anomaly,
            Some(40),
            &[digest("digest:40", &[2, 3], "digest:40:chart:3")],
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert_eq!(
        store.list_alerts(false, 100).await.unwrap().len(),
        3,
        "nothing queued"
    );
    assert_eq!(
        store.incident(3).await.unwrap().unwrap().alert_id,
        None,
        "nothing linked"
    );

    // The news alone, with a chart reply: queued and linked in one go; the same run's retried try queues
    // nothing more.
    let id = store
        .enqueue_digests(
            AlertKind::Anomaly,
            Some(41),
            &[digest("digest:41", &[3], "digest:41:chart:3")],
            None,
        )
        .await
        .unwrap()[0];
    assert_eq!(store.incident(3).await.unwrap().unwrap().alert_id, Some(id));
    assert_eq!(
        store
            .enqueue_digests(
                AlertKind::Anomaly,
                Some(41),
                &[digest("digest:41", &[3], "digest:41:chart:3")],
                None
            )
            .await
            .unwrap(),
        Vec::<i64>::new()
    );
    assert_eq!(store.list_alerts(false, 100).await.unwrap().len(), 5);

    // The reply waits for its digest: a claim takes the digest only; once the digest is written the reply is
    // claimable, knows its parent, and its file reads back byte for byte.
    let expires = Utc::now() + chrono::Duration::seconds(60);
    let first = store.claim_alerts("s1", expires, 10).await.unwrap();
    assert_eq!(
        first
            .iter()
            .map(|a| a.dedupe_key.as_str())
            .collect::<Vec<_>>(),
        ["digest:41"]
    );
    // Nothing is due now (the waiting reply is not): the next wake-up is the digest's claim expiry.
    let due = store
        .next_alert_due()
        .await
        .unwrap()
        .expect("the digest's claim");
    assert!(due > Utc::now() + chrono::Duration::seconds(30), "{due}");
    let written = snowpatrol_pipeline::store::AlertAttempt {
        state: snowpatrol_pipeline::store::AlertState::Written,
        counted: 1,
        error: None,
        slack_ts: Some("1700000000.000200".into()),
        next_attempt_at: None,
        outcome_unknown: false,
    };
    assert!(
        store
            .finish_alert_attempt(id, "s1", &written)
            .await
            .unwrap()
    );
    let second = store.claim_alerts("s1", expires, 10).await.unwrap();
    assert_eq!(second.len(), 1, "{second:?}");
    let r = &second[0];
    assert_eq!(r.dedupe_key, "digest:41:chart:3");
    assert_eq!(
        (r.thread_of, r.parent_ts.as_deref()),
        (Some(id), Some("1700000000.000200"))
    );
    assert_eq!(
        r.parent_state,
        Some(snowpatrol_pipeline::store::AlertState::Written)
    );
    assert_eq!(r.attachment_name.as_deref(), Some("chart.png"));
    assert_eq!(
        store.alert_attachment(r.alert_id).await.unwrap(),
        Some((
            "chart.png".to_string(),
            vec![0x89, b'P', b'N', b'G', 0, 255]
        ))
    );
}

fn reply(key: &str) -> snowpatrol_pipeline::store::DigestReply {
    snowpatrol_pipeline::store::DigestReply {
        dedupe_key: key.to_string(),
        message: serde_json::json!({ "text": "chart", "blocks": [] }),
        attachment: Some((
            "chart.png".to_string(),
            vec![0x89, b'P', b'N', b'G', 0, 255],
        )),
    }
}

fn digest(key: &str, ids: &[i64], reply_key: &str) -> snowpatrol_pipeline::store::QueuedDigest {
    snowpatrol_pipeline::store::QueuedDigest {
        dedupe_key: key.to_string(),
        channel: "file".to_string(),
        message: serde_json::json!({ "text": "digest" }),
        incident_ids: ids.to_vec(),
        replies: vec![reply(reply_key)],
    }
}
