//! Databases as the previous release left them, for upgrade tests.
//!
//! Releases up to 0.1 migrated every table from one directory, recorded in `_sqlx_migrations` as versions 1 to 8
//! (the combined line). Six of its files live on unchanged, byte for byte, in the engine's and the pipeline's
//! lines. The two the split divided, 0005 and 0008, are rebuilt here from their halves: the same statements,
//! recorded with the checksums of the files as they shipped, so the `_sqlx_migrations` rows are exactly those
//! of a database the previous release migrated.

use snowpatrol_store::{Database, Pool};
use sqlx::SqlStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use std::borrow::Cow;

/// One version of the combined line: (version, description, SQL, SHA-384 of the shipped file when the SQL here
/// is rebuilt from the split halves).
type Step = (i64, &'static str, &'static str, Option<&'static str>);

const POSTGRES: [Step; 8] = [
    (
        1,
        "engine",
        include_str!("../../../snowpatrol-store/migrations/postgres/0001_engine.sql"),
        None,
    ),
    (
        2,
        "pipeline",
        include_str!("../../migrations/postgres/0002_pipeline.sql"),
        None,
    ),
    (
        3,
        "incidents",
        include_str!("../../migrations/postgres/0003_incidents.sql"),
        None,
    ),
    (
        4,
        "alert delivery",
        include_str!("../../migrations/postgres/0004_alert_delivery.sql"),
        None,
    ),
    (
        5,
        "load ledger and fencing",
        concat!(
            include_str!("../../migrations/postgres/0005_load_ledger_and_fencing.sql"),
            include_str!(
                "../../../snowpatrol-store/migrations/postgres/0005_leader_lease_comment.sql"
            ),
        ),
        Some(
            "80031483f8e982ea0501b6de1c35321bff1a8483a6ef1461833adf683e838ff150b5bdff761913273ad9dd4ca06e7b3b",
        ),
    ),
    (
        6,
        "incident digest",
        include_str!("../../migrations/postgres/0006_incident_digest.sql"),
        None,
    ),
    (
        7,
        "alert threads",
        include_str!("../../migrations/postgres/0007_alert_threads.sql"),
        None,
    ),
    (
        8,
        "cheap scrapes and retention",
        concat!(
            include_str!(
                "../../../snowpatrol-store/migrations/postgres/0008_cheap_scrapes_and_retention.sql"
            ),
            include_str!("../../migrations/postgres/0008_cheap_scrapes_and_retention.sql"),
        ),
        Some(
            "ae59b7bffb0ee9f9820256c7ae3675f8fd1e8bc10e0a37fd3b23643fc57f81e7cf8160b0968a2301608640a72c7bdfad",
        ),
    ),
];

const SQLITE: [Step; 8] = [
    (
        1,
        "engine",
        include_str!("../../../snowpatrol-store/migrations/sqlite/0001_engine.sql"),
        None,
    ),
    (
        2,
        "pipeline",
        include_str!("../../migrations/sqlite/0002_pipeline.sql"),
        None,
    ),
    (
        3,
        "incidents",
        include_str!("../../migrations/sqlite/0003_incidents.sql"),
        None,
    ),
    (
        4,
        "alert delivery",
        include_str!("../../migrations/sqlite/0004_alert_delivery.sql"),
        None,
    ),
    (
        5,
        "load ledger and fencing",
        include_str!("../../migrations/sqlite/0005_load_ledger_and_fencing.sql"),
        Some(
            "5d38a6850070ad7362d44834dff45fd36d09e09ce35859ffb28d2ed65a59c1be00f3a3625f8fe5d10cf8c23dabfa85cb",
        ),
    ),
    (
        6,
        "incident digest",
        include_str!("../../migrations/sqlite/0006_incident_digest.sql"),
        None,
    ),
    (
        7,
        "alert threads",
        include_str!("../../migrations/sqlite/0007_alert_threads.sql"),
        None,
    ),
    (
        8,
        "cheap scrapes and retention",
        concat!(
            include_str!(
                "../../../snowpatrol-store/migrations/sqlite/0008_cheap_scrapes_and_retention.sql"
            ),
            include_str!("../../migrations/sqlite/0008_cheap_scrapes_and_retention.sql"),
        ),
        Some(
            "5fcdc8db081dd84485a16f60a7216dc6e8662c9b723672fcce3f4732747f4c8bf8f5433d835a4015e2530aa832d8fff0",
        ),
    ),
];

fn combined_line(steps: &[Step]) -> Migrator {
    Migrator::with_migrations(
        steps
            .iter()
            .map(|(version, description, sql, shipped)| {
                let mut m = Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    SqlStr::from_static(sql),
                    false,
                );
                if let Some(hex) = shipped {
                    m.checksum = Cow::Owned(hex::decode(hex).expect("a SHA-384 in hex"));
                }
                m
            })
            .collect(),
    )
}

/// Applies the previous release's migrations up to and including `version`: builds a database at an older
/// schema, so an upgrade test can fill it the way that release did and then run `snowpatrol_pipeline::migrate`.
pub async fn migrate_to(db: &Database, version: i64) {
    match db.pool() {
        Pool::Postgres(p) => combined_line(&POSTGRES)
            .run_to(version, p)
            .await
            .expect("migrate postgres to version"),
        Pool::Sqlite(p) => combined_line(&SQLITE)
            .run_to(version, p)
            .await
            .expect("migrate sqlite to version"),
    }
}
