//! Metering sources: where Snowpatrol gets `WAREHOUSE_METERING_HISTORY` rows from.
//!
//! Three interchangeable implementations of [`MeteringSource`], so the pipeline does not care where rows come
//! from: [`SnowflakeSource`] (production), [`CsvSource`] (an export, for operators without a Snowflake role
//! for Snowpatrol, and for replaying incidents) and [`SyntheticSource`] (seeded, labelled data for the demo,
//! tests and backtests). All return hourly rows, not daily sums: the detector uses per-day hourly features
//! (active hours, peak hourly burn) that a daily sum erases.

mod context;
mod csv_export;
mod error;
mod snowflake;
mod synthetic;
#[cfg(feature = "testing")]
pub mod testing;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use context::{ContextSource, CreditRate, WarehouseTags, altered_warehouse};
pub use csv_export::{
    LABEL_COLUMNS, METERING_COLUMNS, parse_metering_csv, parse_timestamp, read_labels_csv,
    read_metering_csv, write_atomically, write_labels_csv, write_metering_csv,
};
pub use error::SourceError;
pub use snowflake::{
    SnowflakeAuth, SnowflakeConfig, SnowflakeSource, UsageView, load_private_key,
    public_key_fingerprint,
};
pub use snowpatrol_detect::{AnomalyKind, AnomalyLabel, MeteringRow, WarehouseKey};
pub use synthetic::{CsvSource, SyntheticSource};

/// A place metering rows come from.
#[async_trait]
pub trait MeteringSource: Send + Sync {
    /// Hourly rows with START_TIME in [from, to), pseudo warehouses (WAREHOUSE_ID <= 0) excluded.
    async fn fetch(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MeteringRow>, SourceError>;
    /// One line for logs; never contains secrets.
    fn describe(&self) -> String;
    /// The last UTC day the source holds completely, when the source itself knows it (a CSV export ends where
    /// it was taken); `None` for a live source, whose data is complete up to yesterday by the clock.
    async fn last_complete_day(&self) -> Result<Option<chrono::NaiveDate>, SourceError> {
        Ok(None)
    }
}

/// The last day of an export: the day of its latest START_TIME. Not "the last day whose last hour is in the
/// file": small accounts are often idle at night, so that rule would drop the export's last day. An export taken
/// during a day includes that day's first hours; prep loads them, and the re-read window replaces them from the
/// next export.
pub fn last_complete_day_of(rows: &[MeteringRow]) -> Option<chrono::NaiveDate> {
    rows.iter()
        .map(|r| r.start_time)
        .max()
        .map(|t| t.date_naive())
}

/// The window and pseudo-warehouse filter every in-memory source applies, so all sources agree on
/// what `fetch` returns (the Snowflake source does the same in SQL).
pub(crate) fn in_window(row: &MeteringRow, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
    row.warehouse_id > 0 && row.start_time >= from && row.start_time < to
}
