//! The one error type of the crate.

use thiserror::Error;

/// Everything that can go wrong in detection. Each variant says what the caller can do about it.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum DetectError {
    /// Decomposition needs two full periods, training needs `min_days`; the original skipped such warehouses.
    #[error(
        "series too short: {what} needs at least {needed} days, got {got}; wait for more data or skip this warehouse"
    )]
    TooShort {
        what: &'static str,
        needed: usize,
        got: usize,
    },
    /// NaN or infinity would silently poison every downstream number, so it is refused at the door.
    #[error(
        "non-finite value {value} at index {index} in {what}; fix the source data (missing hours must be absent, not NaN)"
    )]
    NonFinite {
        what: &'static str,
        index: usize,
        value: f64,
    },
    #[error("empty input: {0}")]
    Empty(&'static str),
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// The daily predict job asked to score days the series does not hold.
    #[error("cannot score {requested} days of a {available}-day series")]
    ScoreWindow { requested: usize, available: usize },
    #[error("STL failed: {0}")]
    Stl(String),
    #[error("linfa: {0}")]
    Linfa(String),
}

impl From<linfa::Error> for DetectError {
    fn from(e: linfa::Error) -> Self {
        DetectError::Linfa(e.to_string())
    }
}

/// Refuses NaN/inf with the position of the first offender, so the caller can find the bad row.
pub(crate) fn check_finite(what: &'static str, values: &[f64]) -> Result<(), DetectError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(DetectError::NonFinite {
            what,
            index,
            value: values[index],
        }),
        None => Ok(()),
    }
}
