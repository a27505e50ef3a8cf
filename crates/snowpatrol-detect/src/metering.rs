//! The input vocabulary shared by sources, detection and the pipeline.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies a warehouse across a Snowflake organisation.
///
/// Keyed on account AND warehouse because names like `COMPUTE_WH` exist in every account; the original keyed
/// on the name alone and merged unrelated warehouses.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WarehouseKey {
    pub account_name: String,
    pub warehouse_name: String,
}

impl WarehouseKey {
    pub fn new(account_name: impl Into<String>, warehouse_name: impl Into<String>) -> Self {
        Self {
            account_name: account_name.into(),
            warehouse_name: warehouse_name.into(),
        }
    }

    /// Parses the `ACCOUNT.WAREHOUSE` form produced by `Display` (the map key of fanned-out task instances).
    /// Splits at the first dot: Snowflake account names cannot contain dots, warehouse names (quoted) can.
    pub fn parse(s: &str) -> Option<Self> {
        let (account, warehouse) = s.split_once('.')?;
        if account.is_empty() || warehouse.is_empty() {
            return None;
        }
        Some(Self::new(account, warehouse))
    }
}

impl fmt::Display for WarehouseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.account_name, self.warehouse_name)
    }
}

/// One row of `WAREHOUSE_METERING_HISTORY`: one warehouse, one hour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeteringRow {
    pub account_name: String,
    /// Snowflake's id; `<= 0` marks pseudo warehouses such as `CLOUD_SERVICES_ONLY`, which are dropped.
    pub warehouse_id: i64,
    pub warehouse_name: String,
    /// `SERVICE_TYPE` in the organisation view (e.g. `WAREHOUSE_METERING`); empty when the view lacks it.
    pub service_type: String,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    pub credits_used: f64,
    pub credits_used_compute: f64,
    pub credits_used_cloud_services: f64,
}

impl MeteringRow {
    pub fn key(&self) -> WarehouseKey {
        WarehouseKey::new(&self.account_name, &self.warehouse_name)
    }
}

/// What a labelled (synthetic or hand-annotated) anomalous day is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// A one-day burst of extra spend.
    Spike,
    /// A warehouse left running: many more active hours than usual.
    Runaway,
    /// A size change that raises the hourly burn from that day on.
    Resize,
    /// Spend falls; not a cost increase, so the default model does not alert on it.
    Drop,
    /// More clusters than usual (a multi-cluster storm): the hourly burn rises above its usual cap.
    ScaleOut,
    /// A recurring, known pattern (e.g. the month-end close run): labelled so that flagging it counts as a
    /// false alarm.
    Expected,
}

impl AnomalyKind {
    /// Cost increases are what Snowpatrol alerts on by default.
    pub fn is_cost_increase(self) -> bool {
        !matches!(self, AnomalyKind::Drop | AnomalyKind::Expected)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::Spike => "spike",
            AnomalyKind::Runaway => "runaway",
            AnomalyKind::Resize => "resize",
            AnomalyKind::Drop => "drop",
            AnomalyKind::ScaleOut => "scale_out",
            AnomalyKind::Expected => "expected",
        }
    }
}

impl std::str::FromStr for AnomalyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "spike" => Ok(Self::Spike),
            "runaway" => Ok(Self::Runaway),
            "resize" => Ok(Self::Resize),
            "drop" => Ok(Self::Drop),
            "scale_out" | "scaleout" => Ok(Self::ScaleOut),
            "expected" => Ok(Self::Expected),
            other => Err(format!(
                "unknown anomaly kind {other:?} (expected spike, runaway, resize, scale_out, drop or expected)"
            )),
        }
    }
}

/// A labelled anomalous day, for backtests.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AnomalyLabel {
    pub key: WarehouseKey,
    pub date: NaiveDate,
    pub kind: AnomalyKind,
}
