//! Migration lines: each owner of tables migrates its own.
//!
//! The engine's tables (jobs, runs, task instances, dataset events, leases) are migrated by [`ENGINE`], from
//! `crates/snowpatrol-store/migrations`, and recorded in sqlx's default table `_sqlx_migrations`. A product crate
//! that keeps tables of its own on the same database (the pipeline does) declares a [`MigrationLine`] with its
//! own directory and its own record table and runs it with [`Database::migrate_line`] after the engine's: the
//! engine never sees those tables, and each line's versions are numbered independently. This is river's idea of
//! migration lines and atuin's of per-crate migrations.
//!
//! # The handover from the combined line
//!
//! Releases up to 0.1 migrated every table from one directory, recorded in `_sqlx_migrations` as versions 1 to 8
//! (the *combined line*). On the first start of a split release, [`Database::migrate`] hands that history over
//! in one transaction, before sqlx looks at it:
//! 1. every row of `_sqlx_migrations` is copied to [`COMBINED_LINE_TABLE`] (kept, for audit and for the other
//!    lines to adopt from);
//! 2. the rows of versions the engine line does not have are deleted, and the engine's own versions get the
//!    checksums of its files (the combined files did the engine's part and more).
//!
//! Every other line, run after the engine's, then finds its record table empty and [`COMBINED_LINE_TABLE`]
//! present, and records as applied each of its versions the combined line had applied (same version numbers:
//! the split kept them). Versions above 8 belong to one line only and never go through a handover. Both steps
//! are idempotent and serialized (PostgreSQL locks the record table; SQLite writes under `BEGIN IMMEDIATE`), so
//! replicas starting together hand over once.

use crate::{Database, Pool, StoreError};
use sqlx::migrate::Migrator;

/// Where the combined line's history is kept after the handover (a copy of its `_sqlx_migrations` rows).
pub const COMBINED_LINE_TABLE: &str = "snowpatrol_combined_migrations";

/// The last version of the combined line: versions up to here may be adopted from [`COMBINED_LINE_TABLE`].
pub const COMBINED_LINE_LAST: i64 = 8;

/// One owner's migrations for both backends and the table that records which are applied.
#[derive(Clone, Copy, Debug)]
pub struct MigrationLine {
    /// Who owns the tables, named in errors and logs ("engine", "pipeline").
    pub owner: &'static str,
    /// The table recording applied versions (sqlx's schema).
    pub table: &'static str,
    /// The line's PostgreSQL migrations (`sqlx::migrate!`).
    pub postgres: fn() -> Migrator,
    /// The line's SQLite migrations.
    pub sqlite: fn() -> Migrator,
}

/// The engine's migration line.
pub const ENGINE: MigrationLine = MigrationLine {
    owner: "engine",
    table: "_sqlx_migrations",
    postgres: || sqlx::migrate!("./migrations/postgres"),
    sqlite: || sqlx::migrate!("./migrations/sqlite"),
};

impl MigrationLine {
    /// This line's migrator for `pool`'s backend, recording into [`MigrationLine::table`].
    fn migrator(&self, pool: &Pool) -> Migrator {
        let mut m = match pool {
            Pool::Postgres(_) => (self.postgres)(),
            Pool::Sqlite(_) => (self.sqlite)(),
        };
        m.dangerous_set_table_name(self.table);
        m
    }

    /// (version, checksum) of each migration of this line on `pool`'s backend.
    fn versions(&self, pool: &Pool) -> Vec<(i64, Vec<u8>)> {
        self.migrator(pool)
            .iter()
            .map(|m| (m.version, m.checksum.to_vec()))
            .collect()
    }
}

impl Database {
    /// Applies the engine's migrations (idempotent), handing over a combined-line history first (see the module
    /// documentation). Product lines run after this with [`Database::migrate_line`].
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let versions = ENGINE.versions(&self.pool);
        let handed_over = match &self.pool {
            Pool::Postgres(p) => crate::backend::pg::hand_over_combined_line(p, &versions).await?,
            Pool::Sqlite(p) => crate::backend::lite::hand_over_combined_line(p, &versions).await?,
        };
        if handed_over {
            tracing::info!(
                table = COMBINED_LINE_TABLE,
                "handed the combined migration history over to the engine line"
            );
        }
        self.run_line(&ENGINE).await
    }

    /// Applies a product's migration line (idempotent). Run it after [`Database::migrate`]; on a database the
    /// combined line migrated, it first records the versions that line had applied.
    pub async fn migrate_line(&self, line: &MigrationLine) -> Result<(), StoreError> {
        let versions = line.versions(&self.pool);
        let adopted = match &self.pool {
            Pool::Postgres(p) => {
                crate::backend::pg::adopt_combined_line(p, line.table, &versions).await?
            }
            Pool::Sqlite(p) => {
                crate::backend::lite::adopt_combined_line(p, line.table, &versions).await?
            }
        };
        if adopted > 0 {
            tracing::info!(
                owner = line.owner,
                versions = adopted,
                "adopted migrations applied by the combined line"
            );
        }
        self.run_line(line).await
    }

    async fn run_line(&self, line: &MigrationLine) -> Result<(), StoreError> {
        let migrator = line.migrator(&self.pool);
        let result = match &self.pool {
            Pool::Postgres(p) => migrator.run(p).await,
            Pool::Sqlite(p) => migrator.run(p).await,
        };
        result.map_err(|source| StoreError::MigrateLine {
            owner: line.owner,
            source,
        })
    }

    /// True when the database answers and every engine migration this binary knows is applied.
    pub async fn is_ready(&self) -> Result<bool, StoreError> {
        self.line_applied(&ENGINE).await
    }

    /// True when every migration of `line` this binary knows is applied (part of the readiness probe).
    pub async fn line_applied(&self, line: &MigrationLine) -> Result<bool, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT version FROM {} WHERE success", line.table));
        let applied = match &self.pool {
            Pool::Postgres(p) => sqlx::query_scalar::<_, i64>(sql).fetch_all(p).await,
            Pool::Sqlite(p) => sqlx::query_scalar::<_, i64>(sql).fetch_all(p).await,
        };
        // No record table yet means nothing is applied, not an error.
        let applied = match applied {
            Err(e) if crate::is_undefined_table(&e) => vec![],
            other => other?,
        };
        Ok(line
            .versions(&self.pool)
            .iter()
            .all(|(v, _)| applied.contains(v)))
    }
}
