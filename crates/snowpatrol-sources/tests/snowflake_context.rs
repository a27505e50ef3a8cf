//! Root causes, warehouse tags and credit prices read through the real connector from the fakesnow peer, with
//! the ACCOUNT_USAGE and ORGANIZATION_USAGE views created and filled with matching rows.

use chrono::NaiveDate;
use snowpatrol_detect::root_cause::{AttributionBasis, DayFigures, WarehouseDay};
use snowpatrol_sources::testing::{CONTEXT_VIEWS, FakeSnowflake};
use snowpatrol_sources::{ContextSource, SnowflakeAuth, SnowflakeSource, WarehouseKey};

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 9, d).unwrap()
}

fn wd(account: &str, warehouse: &str, d: u32) -> WarehouseDay {
    WarehouseDay {
        key: WarehouseKey::new(account, warehouse),
        day: day(d),
    }
}

fn source(peer: &FakeSnowflake) -> SnowflakeSource {
    let mut cfg = peer.config(SnowflakeAuth::Password {
        password: snowpatrol_sources::testing::PASSWORD.to_string().into(),
    });
    cfg.account_name = Some("ACME_PROD".into());
    SnowflakeSource::new(cfg).unwrap()
}

/// ETL_WH on Sept 27: a dbt backfill (two statements, 35 credits) and an analyst's query, resized to X-Large
/// at 02:14 and auto-suspend turned off the evening before; BI_WH on the same day only has the analyst; rows
/// on other days and warehouses must not leak in.
const ROWS: &[&str] = &[
    "INSERT INTO SNOWFLAKE.ACCOUNT_USAGE.QUERY_ATTRIBUTION_HISTORY (QUERY_ID, WAREHOUSE_NAME, QUERY_PARAMETERIZED_HASH, \
     QUERY_TAG, USER_NAME, START_TIME, END_TIME, CREDITS_ATTRIBUTED_COMPUTE) VALUES \
     ('q1', 'ETL_WH', 'h-orders', 'dbt:orders_backfill', 'DBT_PROD', '2025-09-27 02:30:00+00:00', '2025-09-27 04:00:00+00:00', 20.0), \
     ('q2', 'ETL_WH', 'h-orders', 'dbt:orders_backfill', 'DBT_PROD', '2025-09-27 05:00:00+00:00', '2025-09-27 07:00:00+00:00', 10.0), \
     ('q3', 'ETL_WH', 'h-items', 'dbt:orders_backfill', 'DBT_PROD', '2025-09-27 08:00:00+00:00', '2025-09-27 09:00:00+00:00', 5.0), \
     ('q4', 'ETL_WH', 'h-adhoc', NULL, 'ALICE', '2025-09-27 12:00:00+00:00', '2025-09-27 12:01:00+00:00', 1.0), \
     ('q5', 'ETL_WH', 'h-orders', 'dbt:orders', 'DBT_PROD', '2025-09-26 02:00:00+00:00', '2025-09-26 02:10:00+00:00', 3.0), \
     ('q6', 'BI_WH', 'h-adhoc', NULL, 'ALICE', '2025-09-27 12:00:00+00:00', '2025-09-27 12:05:00+00:00', 2.0)",
    "INSERT INTO SNOWFLAKE.ACCOUNT_USAGE.QUERY_HISTORY (QUERY_ID, QUERY_TEXT, QUERY_TYPE, WAREHOUSE_NAME, USER_NAME, \
     ROLE_NAME, QUERY_TAG, QUERY_PARAMETERIZED_HASH, EXECUTION_STATUS, START_TIME, EXECUTION_TIME) VALUES \
     ('q1', 'insert into orders select * from raw.orders', 'INSERT', 'ETL_WH', 'DBT_PROD', 'TRANSFORMER', 'dbt:orders_backfill', 'h-orders', 'SUCCESS', '2025-09-27 02:30:00+00:00', 5400000), \
     ('q2', 'insert into orders select * from raw.orders', 'INSERT', 'ETL_WH', 'DBT_PROD', 'TRANSFORMER', 'dbt:orders_backfill', 'h-orders', 'SUCCESS', '2025-09-27 05:00:00+00:00', 7200000), \
     ('q3', 'insert into items select 1', 'INSERT', 'ETL_WH', 'DBT_PROD', 'TRANSFORMER', 'dbt:orders_backfill', 'h-items', 'SUCCESS', '2025-09-27 08:00:00+00:00', 3600000), \
     ('q4', 'select count(*) from orders', 'SELECT', 'ETL_WH', 'ALICE', 'ANALYST', NULL, 'h-adhoc', 'SUCCESS', '2025-09-27 12:00:00+00:00', 60000), \
     ('a1', 'alter warehouse etl_wh set auto_suspend = 0', 'ALTER_WAREHOUSE', NULL, 'BOB', 'SYSADMIN', NULL, NULL, 'SUCCESS', '2025-09-26 20:05:00+00:00', 10), \
     ('a2', 'ALTER WAREHOUSE BI_WH SET COMMENT = ''x''', 'ALTER_WAREHOUSE', NULL, 'BOB', 'SYSADMIN', NULL, NULL, 'SUCCESS', '2025-09-27 09:00:00+00:00', 10), \
     ('a3', 'alter warehouse etl_wh set auto_suspend = 60', 'ALTER_WAREHOUSE', NULL, 'BOB', 'SYSADMIN', NULL, NULL, 'FAILED_WITH_ERROR', '2025-09-27 09:00:00+00:00', 10)",
    "INSERT INTO SNOWFLAKE.ACCOUNT_USAGE.WAREHOUSE_EVENTS_HISTORY (TIMESTAMP, WAREHOUSE_ID, WAREHOUSE_NAME, CLUSTER_NUMBER, \
     EVENT_NAME, EVENT_REASON, EVENT_STATE, USER_NAME, ROLE_NAME, QUERY_ID, SIZE, CLUSTER_COUNT) VALUES \
     ('2025-09-27 02:14:00+00:00', 9, 'ETL_WH', NULL, 'RESIZE_WAREHOUSE', 'WAREHOUSE_RESIZE', 'STARTED', 'BOB', 'SYSADMIN', 'r1', NULL, NULL), \
     ('2025-09-27 02:14:30+00:00', 9, 'ETL_WH', NULL, 'WAREHOUSE_CONSISTENT', 'WAREHOUSE_RESIZE', 'COMPLETED', 'BOB', 'SYSADMIN', 'r1', 'X-Large', 1), \
     ('2025-09-27 02:30:00+00:00', 9, 'ETL_WH', 1, 'RESUME_CLUSTER', 'WAREHOUSE_AUTORESUME', 'COMPLETED', NULL, NULL, NULL, NULL, NULL), \
     ('2025-09-27 05:00:00+00:00', 9, 'ETL_WH', 1, 'RESUME_CLUSTER', 'WAREHOUSE_AUTORESUME', 'COMPLETED', NULL, NULL, NULL, NULL, NULL), \
     ('2025-09-28 01:00:00+00:00', 9, 'ETL_WH', NULL, 'SUSPEND_WAREHOUSE', 'WAREHOUSE_SUSPEND', 'COMPLETED', 'BOB', 'SYSADMIN', NULL, NULL, NULL)",
    "INSERT INTO SNOWFLAKE.ACCOUNT_USAGE.TAG_REFERENCES (TAG_DATABASE, TAG_SCHEMA, TAG_NAME, TAG_VALUE, OBJECT_NAME, DOMAIN) VALUES \
     ('GOVERNANCE', 'TAGS', 'COST_CENTER', 'data-eng', 'ETL_WH', 'WAREHOUSE'), \
     ('GOVERNANCE', 'TAGS', 'OWNER', 'platform', 'ETL_WH', 'WAREHOUSE'), \
     ('GOVERNANCE', 'TAGS', 'COST_CENTER', 'finance', 'BI_WH', 'WAREHOUSE'), \
     ('GOVERNANCE', 'TAGS', 'COST_CENTER', 'x', 'ORDERS', 'TABLE')",
    "INSERT INTO SNOWFLAKE.ORGANIZATION_USAGE.USAGE_IN_CURRENCY_DAILY (ORGANIZATION_NAME, ACCOUNT_NAME, USAGE_DATE, \
     USAGE_TYPE, CURRENCY, USAGE, USAGE_IN_CURRENCY) VALUES \
     ('ACME', 'ACME_PROD', '2025-09-26', 'compute', 'EUR', 100, 270), \
     ('ACME', 'ACME_PROD', '2025-09-27', 'compute', 'EUR', 200, 560), \
     ('ACME', 'ACME_PROD', '2025-09-27', 'storage', 'EUR', 1, 23), \
     ('ACME', 'ACME_DEV', '2025-09-27', 'compute', 'EUR', 10, 30), \
     ('ACME', 'ACME_DEV', '2025-10-01', 'compute', 'EUR', 10, 30)",
];

#[tokio::test]
async fn root_causes_tags_and_prices_come_from_the_views_in_one_statement_each() {
    let peer = FakeSnowflake::start(&[]);
    peer.execute(CONTEXT_VIEWS).await;
    peer.execute(ROWS).await;
    let src = source(&peer);

    let wanted = [
        wd("ACME_PROD", "ETL_WH", 27),
        wd("ACME_PROD", "BI_WH", 27),
        wd("ACME_DEV", "ETL_WH", 27),
    ];
    let causes = src.root_causes(&wanted).await.unwrap();
    assert_eq!(
        src.context_statements(),
        3,
        "one statement per view, whatever the number of days"
    );
    assert_eq!(causes.len(), 3);

    let etl = &causes[&wanted[0]];
    assert!(etl.unavailable.is_empty(), "{:?}", etl.unavailable);
    let a = etl.attribution.as_ref().unwrap();
    assert_eq!(a.basis, AttributionBasis::Credits);
    assert_eq!(a.queries, 4, "the day's queries only, not Sept 26's");
    assert!((a.total_weight - 36.0).abs() < 1e-9);
    let top: Vec<(&str, f64, u64)> = a
        .top_queries
        .iter()
        .map(|q| (q.parameterized_hash.as_str(), q.weight, q.queries))
        .collect();
    assert_eq!(
        top,
        vec![
            ("h-orders", 30.0, 2),
            ("h-items", 5.0, 1),
            ("h-adhoc", 1.0, 1)
        ]
    );
    assert_eq!(a.top_queries[0].role_name.as_deref(), Some("TRANSFORMER"));
    assert_eq!(
        a.top_queries[0].sample_text.as_deref(),
        Some("insert into orders select * from raw.orders")
    );
    assert_eq!(a.users[0].name, "DBT_PROD");
    assert!((a.users[0].weight - 35.0).abs() < 1e-9);
    assert_eq!(a.roles[0].name, "TRANSFORMER");
    assert_eq!(a.query_tags[0].name, "dbt:orders_backfill");
    let events: Vec<(&str, u64)> = etl
        .events
        .iter()
        .map(|e| (e.name.as_str(), e.count))
        .collect();
    assert_eq!(
        events,
        vec![("WAREHOUSE_CONSISTENT", 1), ("RESUME_CLUSTER", 2)],
        "STARTED halves and other days left out"
    );
    assert_eq!(
        etl.changes.len(),
        1,
        "the failed ALTER is left out: {:?}",
        etl.changes
    );
    let summary = etl.summary(
        DayFigures {
            actual_credits: 48.0,
            excess_credits: 40.0,
        },
        day(27),
    );
    assert_eq!(
        summary,
        "88 % of the excess (35.0 of 40.0 credits) came from 2 statements run 3 times by DBT_PROD (query tag \
         `dbt:orders_backfill`); auto-suspend turned off at 20:05 UTC the day before by BOB (SYSADMIN); the \
         warehouse was resized to X-Large at 02:14 UTC by BOB (SYSADMIN)."
    );

    let bi = &causes[&wanted[1]];
    assert_eq!(bi.attribution.as_ref().unwrap().queries, 1);
    assert!(bi.events.is_empty() && bi.changes.len() == 1);
    assert_eq!(
        bi.changes[0].describe(),
        None,
        "a comment change says nothing about cost"
    );

    let other = &causes[&wanted[2]];
    assert!(other.attribution.is_none());
    assert!(
        other.unavailable[0].contains("ACME_DEV needs a connection of its own"),
        "{:?}",
        other.unavailable
    );

    let tags = src
        .warehouse_tags(&[
            WarehouseKey::new("ACME_PROD", "ETL_WH"),
            WarehouseKey::new("ACME_PROD", "BI_WH"),
            WarehouseKey::new("ACME_DEV", "ETL_WH"),
        ])
        .await
        .unwrap();
    assert_eq!(tags.len(), 2);
    let etl_tags = &tags[&WarehouseKey::new("ACME_PROD", "ETL_WH")];
    assert_eq!(etl_tags["GOVERNANCE.TAGS.COST_CENTER"], "data-eng");
    assert_eq!(etl_tags["GOVERNANCE.TAGS.OWNER"], "platform");

    let rates = src.credit_rates(day(26), day(28)).await.unwrap();
    let got: Vec<(&str, NaiveDate, &str, f64)> = rates
        .iter()
        .map(|r| {
            (
                r.account_name.as_str(),
                r.day,
                r.currency.as_str(),
                r.price_per_credit(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("ACME_DEV", day(27), "EUR", 3.0),
            ("ACME_PROD", day(26), "EUR", 2.7),
            ("ACME_PROD", day(27), "EUR", 2.8),
        ],
        "compute only, storage left out, the window respected"
    );
}

#[tokio::test]
async fn a_view_the_role_cannot_read_is_named_with_its_grant_and_the_rest_still_found() {
    let peer = FakeSnowflake::start(&[]);
    // Only QUERY_HISTORY and the events view exist: QUERY_ATTRIBUTION_HISTORY is "not authorized".
    let views: Vec<&str> = CONTEXT_VIEWS
        .iter()
        .copied()
        .filter(|s| {
            !s.contains("QUERY_ATTRIBUTION_HISTORY") && !s.contains("USAGE_IN_CURRENCY_DAILY")
        })
        .collect();
    peer.execute(&views).await;
    peer.execute(&ROWS[1..3]).await;
    let src = source(&peer);
    let wanted = [wd("ACME_PROD", "ETL_WH", 27)];
    let causes = src.root_causes(&wanted).await.unwrap();
    let etl = &causes[&wanted[0]];
    let a = etl
        .attribution
        .as_ref()
        .expect("execution time from QUERY_HISTORY");
    assert_eq!(a.basis, AttributionBasis::ExecutionSeconds);
    assert_eq!(a.top_queries[0].parameterized_hash, "h-orders");
    assert!((a.top_queries[0].weight - 12_600.0).abs() < 1e-6);
    assert_eq!(etl.unavailable.len(), 1, "{:?}", etl.unavailable);
    assert!(
        etl.unavailable[0]
            .contains("GRANT DATABASE ROLE SNOWFLAKE.USAGE_VIEWER TO ROLE COST_READER"),
        "{:?}",
        etl.unavailable
    );
    assert_eq!(etl.events.len(), 2);
    let summary = etl.summary(
        DayFigures {
            actual_credits: 48.0,
            excess_credits: 40.0,
        },
        day(27),
    );
    assert!(
        summary.starts_with(
            "2 statements run 3 times by DBT_PROD (query tag `dbt:orders_backfill`) took 100 % of"
        ),
        "{summary}"
    );

    let err = src
        .credit_rates(day(26), day(28))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("ORGANIZATION_BILLING_VIEWER"), "{err}");
}

/// A bad day: 300 anomalous warehouse-days cost the same three statements as one, and each day gets its own
/// findings (issue #9: at most one Snowflake query per view per run).
#[tokio::test]
async fn three_hundred_days_are_three_statements() {
    let peer = FakeSnowflake::start(&[]);
    peer.execute(CONTEXT_VIEWS).await;
    let mut values = Vec::new();
    for w in 0..300 {
        for q in 0..3 {
            values.push(format!(
                "('q{w}-{q}', 'WH_{w:03}', 'h{q}', 'tag{q}', 'U{}', '2025-09-27 0{q}:00:00+00:00', \
                 '2025-09-27 0{q}:30:00+00:00', {}.0)",
                w % 7,
                q + 1 + w
            ));
        }
    }
    let insert = format!(
        "INSERT INTO SNOWFLAKE.ACCOUNT_USAGE.QUERY_ATTRIBUTION_HISTORY (QUERY_ID, WAREHOUSE_NAME, \
         QUERY_PARAMETERIZED_HASH, QUERY_TAG, USER_NAME, START_TIME, END_TIME, CREDITS_ATTRIBUTED_COMPUTE) VALUES {}",
        values.join(", ")
    );
    peer.execute(&[insert.as_str()]).await;
    let src = source(&peer);
    let wanted: Vec<WarehouseDay> = (0..300)
        .map(|w| wd("ACME_PROD", &format!("WH_{w:03}"), 27))
        .collect();
    let started = std::time::Instant::now();
    let causes = src.root_causes(&wanted).await.unwrap();
    println!(
        "300 warehouse-days looked up in {:?} (fakesnow)",
        started.elapsed()
    );
    assert_eq!(src.context_statements(), 3);
    assert_eq!(causes.len(), 300);
    for (w, d) in wanted.iter().enumerate() {
        let a = causes[d].attribution.as_ref().unwrap();
        assert_eq!(a.queries, 3, "{d:?}");
        let expected = (1 + w + 2 + w + 3 + w) as f64;
        assert!(
            (a.total_weight - expected).abs() < 1e-9,
            "{d:?}: {}",
            a.total_weight
        );
        assert_eq!(
            a.top_queries[0].parameterized_hash, "h2",
            "the largest first"
        );
        assert_eq!(a.users[0].name, format!("U{}", w % 7));
    }
}
