//! Seasonal decomposition: the original's classical moving-average decomposition, ported line by line from
//! statsmodels so residuals (and therefore baseline scores) can be trusted against the Python peer, and STL.

use crate::error::{DetectError, check_finite};
use serde::{Deserialize, Serialize};

/// Additive decomposition: `y = trend + seasonal + resid` element-wise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decomposition {
    pub trend: Vec<f64>,
    pub seasonal: Vec<f64>,
    pub resid: Vec<f64>,
}

fn check_input(y: &[f64], period: usize, what: &'static str) -> Result<(), DetectError> {
    if period < 2 {
        return Err(DetectError::InvalidParameter(format!(
            "{what}: period must be >= 2, got {period}"
        )));
    }
    check_finite(what, y)?;
    if y.len() < 2 * period {
        return Err(DetectError::TooShort {
            what,
            needed: 2 * period,
            got: y.len(),
        });
    }
    Ok(())
}

/// `statsmodels.tsa.seasonal.seasonal_decompose(y, model="additive", period=period,
/// extrapolate_trend="freq")`.
///
/// Hand-written (no crate implements this exact variant) and kept deliberately literal: a centred moving average
/// (weights `1/p`, or `[.5, 1, ..., 1, .5]/p` for even `p`), the undefined trend ends replaced by least-squares
/// lines through the `p` nearest defined points (statsmodels' quirk included: the back fit stops one point short
/// of the last defined value), seasonal = per-phase mean of the detrended series, centred to mean zero.
pub fn seasonal_decompose(y: &[f64], period: usize) -> Result<Decomposition, DetectError> {
    check_input(y, period, "seasonal_decompose")?;
    let n = y.len();
    let filt: Vec<f64> = if period.is_multiple_of(2) {
        let mut f = vec![1.0 / period as f64; period + 1];
        f[0] = 0.5 / period as f64;
        f[period] = 0.5 / period as f64;
        f
    } else {
        vec![1.0 / period as f64; period]
    };
    let l = filt.len();
    let trim_head = l.div_ceil(2) - 1;
    let mut trend = vec![f64::NAN; n];
    for i in 0..=(n - l) {
        let mut acc = 0.0;
        for (k, w) in filt.iter().rev().enumerate() {
            acc += y[i + k] * w;
        }
        trend[trim_head + i] = acc;
    }
    let front = trim_head;
    let back = trim_head + (n - l);
    extrapolate_trend(&mut trend, front, back, period);

    let detrended: Vec<f64> = y.iter().zip(&trend).map(|(a, b)| a - b).collect();
    let mut averages = vec![0.0; period];
    for (phase, avg) in averages.iter_mut().enumerate() {
        let (sum, cnt) = detrended
            .iter()
            .skip(phase)
            .step_by(period)
            .fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
        *avg = sum / cnt as f64;
    }
    let mean = averages.iter().sum::<f64>() / period as f64;
    for a in &mut averages {
        *a -= mean;
    }
    let seasonal: Vec<f64> = (0..n).map(|i| averages[i % period]).collect();
    let resid: Vec<f64> = detrended
        .iter()
        .zip(&seasonal)
        .map(|(d, s)| d - s)
        .collect();
    Ok(Decomposition {
        trend,
        seasonal,
        resid,
    })
}

/// statsmodels `_extrapolate_trend(trend, npoints=period)`.
fn extrapolate_trend(trend: &mut [f64], front: usize, back: usize, npoints: usize) {
    let n = trend.len();
    let front_last = (front + npoints).min(back);
    let back_first = back.saturating_sub(npoints).max(front);
    let (k, c) = lstsq_line(front, &trend[front..front_last]);
    for (i, t) in trend.iter_mut().enumerate().take(front) {
        *t = k * i as f64 + c;
    }
    let (k, c) = lstsq_line(back_first, &trend[back_first..back]);
    for (i, t) in trend.iter_mut().enumerate().take(n).skip(back + 1) {
        *t = k * i as f64 + c;
    }
}

/// Least-squares `y = k*x + c` for `x = x0, x0+1, ...`, as `numpy.linalg.lstsq` answers it (including the
/// minimum-norm answer for one point, which only happens for period 2 at the minimum length).
fn lstsq_line(x0: usize, ys: &[f64]) -> (f64, f64) {
    match ys.len() {
        0 => (0.0, 0.0),
        1 => {
            let x = x0 as f64;
            let d = x * x + 1.0;
            (ys[0] * x / d, ys[0] / d)
        }
        m => {
            let xm = x0 as f64 + (m as f64 - 1.0) / 2.0;
            let ym = ys.iter().sum::<f64>() / m as f64;
            let (mut sxy, mut sxx) = (0.0, 0.0);
            for (j, y) in ys.iter().enumerate() {
                let dx = (x0 + j) as f64 - xm;
                sxy += dx * (y - ym);
                sxx += dx * dx;
            }
            let k = sxy / sxx;
            (k, ym - k * xm)
        }
    }
}

/// The statsmodels `STL(y, period=period)` defaults, spelled out because `stlrs`' own defaults differ
/// (seasonal degree 0, jumps of len/10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StlSettings {
    pub seasonal: usize,
    pub trend: usize,
    pub low_pass: usize,
    pub seasonal_deg: i32,
    pub trend_deg: i32,
    pub low_pass_deg: i32,
    pub inner_iter: usize,
    pub outer_iter: usize,
    pub robust: bool,
}

impl StlSettings {
    /// statsmodels: `seasonal=7`, trend = next odd of `ceil(1.5 p / (1 - 1.5/seasonal))`, low_pass = next odd
    /// of `p + 1`, all degrees 1, all jumps 1, 5 inner and 0 outer iterations (not robust).
    pub fn statsmodels_defaults(period: usize) -> Self {
        let seasonal = 7usize;
        let mut trend = (1.5 * period as f64 / (1.0 - 1.5 / seasonal as f64)).ceil() as usize;
        trend += usize::from(trend.is_multiple_of(2));
        let mut low_pass = period + 1;
        low_pass += usize::from(low_pass.is_multiple_of(2));
        Self {
            seasonal,
            trend,
            low_pass,
            seasonal_deg: 1,
            trend_deg: 1,
            low_pass_deg: 1,
            inner_iter: 5,
            outer_iter: 0,
            robust: false,
        }
    }
}

/// STL with statsmodels' defaults (see [`StlSettings::statsmodels_defaults`]).
pub fn stl(y: &[f64], period: usize) -> Result<Decomposition, DetectError> {
    stl_with(y, period, &StlSettings::statsmodels_defaults(period))
}

pub fn stl_with(y: &[f64], period: usize, s: &StlSettings) -> Result<Decomposition, DetectError> {
    check_input(y, period, "stl")?;
    let res = stlrs::params()
        .seasonal_length(s.seasonal)
        .trend_length(s.trend)
        .low_pass_length(s.low_pass)
        .seasonal_degree(s.seasonal_deg)
        .trend_degree(s.trend_deg)
        .low_pass_degree(s.low_pass_deg)
        .seasonal_jump(1)
        .trend_jump(1)
        .low_pass_jump(1)
        .inner_loops(s.inner_iter)
        .outer_loops(s.outer_iter)
        .robust(s.robust)
        .fit(y, period)
        .map_err(|e| DetectError::Stl(e.to_string()))?;
    Ok(Decomposition {
        trend: res.trend().to_vec(),
        seasonal: res.seasonal().to_vec(),
        resid: res.remainder().to_vec(),
    })
}
