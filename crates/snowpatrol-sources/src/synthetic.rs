//! In-memory sources: a CSV export on disk and the detect crate's synthetic generator.

use std::path::PathBuf;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use snowpatrol_detect::synthetic::{SyntheticConfig, SyntheticData, generate};
use snowpatrol_detect::{AnomalyLabel, MeteringRow};

use crate::{MeteringSource, SourceError, in_window, read_metering_csv};

/// A [`MeteringSource`] over a CSV export of `WAREHOUSE_METERING_HISTORY`.
///
/// The file is re-read on every fetch, so an operator can drop in a fresh export between runs without
/// restarting the daemon.
#[derive(Clone, Debug)]
pub struct CsvSource {
    path: PathBuf,
}

impl CsvSource {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Every row of the file. Parsing millions of rows is blocking CPU and file work: keep it off the async
    /// workers.
    async fn read_all(&self) -> Result<Vec<MeteringRow>, SourceError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || read_metering_csv(&path))
            .await
            .map_err(|e| SourceError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(e.to_string()),
            })?
    }
}

#[async_trait]
impl MeteringSource for CsvSource {
    async fn fetch(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MeteringRow>, SourceError> {
        let rows = self.read_all().await?;
        let total = rows.len();
        let rows: Vec<MeteringRow> = rows
            .into_iter()
            .filter(|r| in_window(r, from, to))
            .collect();
        tracing::debug!(path = %self.path.display(), total, kept = rows.len(), %from, %to, "read metering CSV");
        Ok(rows)
    }

    fn describe(&self) -> String {
        format!("csv {}", self.path.display())
    }

    /// An export ends where it was taken, not "yesterday": prep's window follows the file, so an older export
    /// loads and validates instead of failing on every day after it.
    async fn last_complete_day(&self) -> Result<Option<chrono::NaiveDate>, SourceError> {
        Ok(crate::last_complete_day_of(&self.read_all().await?))
    }
}

/// A [`MeteringSource`] over seeded synthetic warehouses with labelled anomalies.
///
/// Generated once at construction (the generator is deterministic for a config), so every fetch of the same
/// window returns the same rows, and the labels are available for scoring.
#[derive(Clone, Debug)]
pub struct SyntheticSource {
    config: SyntheticConfig,
    data: SyntheticData,
}

impl SyntheticSource {
    pub fn new(config: SyntheticConfig) -> Self {
        let data = generate(&config);
        Self { config, data }
    }

    /// Every generated row, pseudo warehouses included (as the raw view would hold them).
    pub fn rows(&self) -> &[MeteringRow] {
        &self.data.rows
    }

    /// The injected anomalies, for backtests.
    pub fn labels(&self) -> &[AnomalyLabel] {
        &self.data.labels
    }

    pub fn config(&self) -> &SyntheticConfig {
        &self.config
    }
}

#[async_trait]
impl MeteringSource for SyntheticSource {
    async fn fetch(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MeteringRow>, SourceError> {
        Ok(self
            .data
            .rows
            .iter()
            .filter(|r| in_window(r, from, to))
            .cloned()
            .collect())
    }

    fn describe(&self) -> String {
        format!(
            "synthetic seed={} accounts={} warehouses={} days={} end={}",
            self.config.seed,
            self.config.accounts,
            self.config.warehouses,
            self.config.days,
            self.config.end
        )
    }
}
