//! Drift: has the last week stopped looking like the history before it? Decides which warehouses retrain.

use crate::daily::DailySeries;
use crate::error::DetectError;
use crate::ks::ks_2samp;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DriftConfig {
    /// Recent days compared with the history before them (the original: 7).
    pub window_days: usize,
    /// Drift when the KS p-value is at most this (the original: 0.05).
    pub alpha: f64,
    /// Below this many days in total, the model is too young to judge: retrain (the original: 30).
    pub min_history_days: usize,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            window_days: 7,
            alpha: 0.05,
            min_history_days: 30,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum DriftDecision {
    Drift { pvalue: f64, statistic: f64 },
    NoDrift { pvalue: f64, statistic: f64 },
    InsufficientHistory { days: usize },
}

impl DriftDecision {
    /// Drift and a short history both retrain, as in the original's README.
    pub fn should_retrain(&self) -> bool {
        !matches!(self, DriftDecision::NoDrift { .. })
    }
}

/// Two-sample KS test of the last `window_days` daily credits against all days before them.
pub fn check_drift(series: &DailySeries, cfg: &DriftConfig) -> Result<DriftDecision, DetectError> {
    if cfg.window_days == 0 {
        return Err(DetectError::InvalidParameter(
            "drift window_days must be >= 1".into(),
        ));
    }
    if !(0.0..=1.0).contains(&cfg.alpha) {
        return Err(DetectError::InvalidParameter(format!(
            "drift alpha must be in [0, 1], got {}",
            cfg.alpha
        )));
    }
    let n = series.len();
    if n < cfg.min_history_days.max(cfg.window_days + 1) {
        return Ok(DriftDecision::InsufficientHistory { days: n });
    }
    let split = n - cfg.window_days;
    let r = ks_2samp(&series.credits[split..], &series.credits[..split])?;
    Ok(if r.pvalue <= cfg.alpha {
        DriftDecision::Drift {
            pvalue: r.pvalue,
            statistic: r.statistic,
        }
    } else {
        DriftDecision::NoDrift {
            pvalue: r.pvalue,
            statistic: r.statistic,
        }
    })
}
