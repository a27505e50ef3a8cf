//! Pure anomaly detection for Snowflake warehouse credit usage.
//!
//! This crate does no I/O and has no async: it takes metering rows or daily series in memory and returns
//! numbers, so every result is reproducible and testable against the Python reference implementations.

pub mod metering;

pub use metering::{AnomalyKind, AnomalyLabel, MeteringRow, WarehouseKey};
