//! Pure anomaly detection for Snowflake warehouse credit usage.
//!
//! This crate does no I/O and has no async: it takes metering rows or daily series in memory and returns
//! numbers, so every result is reproducible and testable against the Python reference implementations
//! (`scripts/detect/make_reference.py`).

pub mod backtest;
pub mod calendar;
pub mod daily;
pub mod decompose;
pub mod default_model;
pub mod drift;
pub mod error;
pub mod iforest;
pub mod ks;
pub mod metering;
pub mod model;
pub mod root_cause;
pub mod synthetic;
pub mod synthetic_billing;

pub use error::DetectError;
pub use metering::{AnomalyKind, AnomalyLabel, MeteringRow, WarehouseKey};
