//! Two-sample Kolmogorov-Smirnov test, numerically the same as `scipy.stats.ks_2samp(a, b)` (two-sided,
//! `method="auto"`).
//!
//! Hand-written because statrs' exact method refuses `m*n > 10_000` (the drift check compares 7 days with up to
//! two years: 7 x 723 already exceeds it) and no crate ports scipy's exact lattice-path recursion. The code follows
//! scipy 1.17 (`_stats_py.py`, `_ksstats.py`) step by step so the p-values agree to ~1e-12:
//! exact when `max(m, n) <= 10_000`, otherwise the distribution of the one-sample statistic with
//! `n = round(m n / (m + n))` (scipy's `kstwo.sf`), itself computed by Simard & L'Ecuyer's selection of
//! Durbin's matrix, Pelz-Good and the exact Smirnov sum.

use crate::error::{DetectError, check_finite};
use serde::{Deserialize, Serialize};

/// scipy switches from the exact to the asymptotic method above this sample size.
pub const MAX_EXACT_N: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct KsResult {
    pub statistic: f64,
    pub pvalue: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KsMethod {
    Exact,
    Asymptotic,
}

/// `scipy.stats.ks_2samp(a, b)`: two-sided, exact for small samples as scipy decides.
pub fn ks_2samp(a: &[f64], b: &[f64]) -> Result<KsResult, DetectError> {
    ks_2samp_method(a, b).map(|(r, _)| r)
}

/// As [`ks_2samp`], also saying which method produced the p-value.
pub fn ks_2samp_method(a: &[f64], b: &[f64]) -> Result<(KsResult, KsMethod), DetectError> {
    if a.is_empty() || b.is_empty() {
        return Err(DetectError::Empty("ks_2samp needs two non-empty samples"));
    }
    check_finite("ks_2samp first sample", a)?;
    check_finite("ks_2samp second sample", b)?;
    let mut x = a.to_vec();
    let mut y = b.to_vec();
    x.sort_by(f64::total_cmp);
    y.sort_by(f64::total_cmp);
    let (n1, n2) = (x.len(), y.len());
    let d = two_sided_statistic(&x, &y);

    if n1.max(n2) <= MAX_EXACT_N
        && let Some((d_exact, p)) = exact_two_sided(n1, n2, d)
    {
        return Ok((
            KsResult {
                statistic: d_exact,
                pvalue: p.clamp(0.0, 1.0),
            },
            KsMethod::Exact,
        ));
    }
    let (m, n) = (n1.max(n2) as f64, n1.min(n2) as f64);
    let en = (m * n / (m + n)).round_ties_even();
    let p = kolmogn_sf(en as u64, d).clamp(0.0, 1.0);
    Ok((
        KsResult {
            statistic: d,
            pvalue: p,
        },
        KsMethod::Asymptotic,
    ))
}

/// The two-sided statistic of two sorted samples: the largest distance between their ECDFs.
fn two_sided_statistic(x: &[f64], y: &[f64]) -> f64 {
    let (n1, n2) = (x.len(), y.len());
    // Walk the merged sample; evaluating both ECDFs only after every copy of a value is consumed is exactly
    // scipy's `searchsorted(side="right")`, which is what makes ties right.
    let (mut i, mut j) = (0usize, 0usize);
    let (mut best_max, mut best_min) = ((0usize, 0usize, 0i128), (0usize, 0usize, 0i128));
    while i < n1 || j < n2 {
        let v = match (x.get(i), y.get(j)) {
            (Some(p), Some(q)) => p.min(*q),
            (Some(p), None) => *p,
            (None, Some(q)) => *q,
            (None, None) => break,
        };
        while i < n1 && x[i] == v {
            i += 1;
        }
        while j < n2 && y[j] == v {
            j += 1;
        }
        let diff = i as i128 * n2 as i128 - j as i128 * n1 as i128;
        if diff > best_max.2 {
            best_max = (i, j, diff);
        }
        if diff < best_min.2 {
            best_min = (i, j, diff);
        }
    }
    let ecdf_diff =
        |(c1, c2, _): (usize, usize, i128)| c1 as f64 / n1 as f64 - c2 as f64 / n2 as f64;
    let max_s = ecdf_diff(best_max);
    let min_s = (-ecdf_diff(best_min)).clamp(0.0, 1.0);
    if min_s > max_s { min_s } else { max_s }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// scipy `_attempt_exact_2kssamp` (two-sided). `None` when the recursion leaves [0, 1] (scipy then falls back).
fn exact_two_sided(n1: usize, n2: usize, d: f64) -> Option<(f64, f64)> {
    let g = gcd(n1, n2);
    let lcm = (n1 / g) as f64 * n2 as f64;
    let h = (d * lcm).round_ties_even();
    let d = h / lcm;
    if h == 0.0 {
        return Some((d, 1.0));
    }
    let h = h as usize;
    let p = if n1 == n2 {
        prob_outside_square(n1, h)
    } else {
        outer_prob_inside_method(n1, n2, g, h)
    };
    (p.is_finite() && (0.0..=1.0).contains(&p)).then_some((d, p))
}

/// scipy `_compute_prob_outside_square`: Pr(D_{n,n} >= h/n) by a Horner-like alternating sum.
fn prob_outside_square(n: usize, h: usize) -> f64 {
    let mut p = 0.0;
    let mut k = (n / h) as i64;
    let (n, h) = (n as f64, h as f64);
    while k >= 0 {
        let kf = k as f64;
        let mut p1 = 1.0;
        for j in 0..h as usize {
            let j = j as f64;
            p1 = (n - kf * h - j) * p1 / (n + kf * h + j + 1.0);
        }
        p = p1 * (1.0 - p);
        k -= 1;
    }
    2.0 * p
}

/// scipy `_compute_outer_prob_inside_method`: probability that a random lattice path from (0,0) to (m,n) leaves
/// the band |x/m - y/n| < h/lcm, one sliding column at a time.
fn outer_prob_inside_method(m: usize, n: usize, g: usize, h: usize) -> f64 {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (mg, ng) = ((m / g) as i64, (n / g) as i64);
    let (n_i, h_i) = (n as i64, h as i64);
    let mut minj: i64 = 0;
    let mut maxj: i64 = ((h_i + mg - 1) / mg).min(n_i + 1);
    let mut curlen = maxj - minj;
    let len_a = (2 * maxj + 2).min(n_i + 1) as usize;
    let mut a = vec![1.0f64; len_a.max(1)];
    for v in a.iter_mut().take(maxj as usize) {
        *v = 0.0;
    }
    for i in 1..=(m as i64) {
        let (lastminj, lastlen) = (minj, curlen);
        minj = (floor_div(ng * i - h_i, mg) + 1).max(0).min(n_i);
        maxj = ceil_div(ng * i + h_i, mg).min(n_i + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        let fi = i as f64;
        for jj in 0..(maxj - minj) {
            let j = (jj + minj) as f64;
            val = (a[(jj + minj - lastminj) as usize] * fi + val * j) / (fi + j);
            a[jj as usize] = val;
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            for v in a
                .iter_mut()
                .skip(curlen as usize)
                .take((lastlen - curlen) as usize)
            {
                *v = 1.0;
            }
        }
    }
    a[(maxj - minj - 1) as usize]
}

fn floor_div(a: i64, b: i64) -> i64 {
    a.div_euclid(b)
}

fn ceil_div(a: i64, b: i64) -> i64 {
    -((-a).div_euclid(b))
}

/// scipy `kstwo.sf(x, n)` = `_kolmogn(n, x, cdf=False)` (Simard & L'Ecuyer's algorithm selection).
pub fn kolmogn_sf(n: u64, x: f64) -> f64 {
    if n == 0 || x.is_nan() {
        return f64::NAN;
    }
    if x >= 1.0 {
        return 0.0;
    }
    if x <= 0.0 {
        return 1.0;
    }
    let nf = n as f64;
    let t = nf * x;
    if t <= 1.0 {
        if t <= 0.5 {
            return 1.0;
        }
        let prob = if n <= 140 {
            (1..=n).fold(1.0, |acc, i| {
                acc * (i as f64 * (1.0 / nf) * (2.0 * t - 1.0))
            })
        } else {
            (log_nfactorial_div_n_pow_n(nf) + nf * (2.0 * t - 1.0).ln()).exp()
        };
        return (1.0 - prob).clamp(0.0, 1.0);
    }
    if t >= nf - 1.0 {
        return (2.0 * (1.0 - x).powf(nf)).clamp(0.0, 1.0);
    }
    if x >= 0.5 {
        return (2.0 * smirnov_sf(n, x)).clamp(0.0, 1.0);
    }
    let nxsquared = t * x;
    if n <= 140 {
        // scipy uses Pomeranz for 0.754693 < n x^2 <= 4; Durbin's matrix is exact too and gives the same value.
        if nxsquared <= 4.0 {
            return (1.0 - kolmogn_dmtw_cdf(n, x)).clamp(0.0, 1.0);
        }
        return (2.0 * smirnov_sf(n, x)).clamp(0.0, 1.0);
    }
    if nxsquared >= 370.0 {
        return 0.0;
    }
    if nxsquared >= 2.2 {
        return (2.0 * smirnov_sf(n, x)).clamp(0.0, 1.0);
    }
    let cdf = if nxsquared >= 18.0 {
        1.0
    } else if n <= 100_000 && nf * x.powf(1.5) <= 1.4 {
        kolmogn_dmtw_cdf(n, x)
    } else {
        kolmogn_pelz_good_cdf(nf, x)
    };
    (1.0 - cdf).clamp(0.0, 1.0)
}

/// Constants copied digit for digit from scipy's `_STIRLING_COEFFS` so the code can be checked against it.
#[allow(clippy::excessive_precision)]
fn log_nfactorial_div_n_pow_n(n: f64) -> f64 {
    const C: [f64; 8] = [
        -2.955065359477124183e-2,
        6.4102564102564102564e-3,
        -1.9175269175269175269e-3,
        8.4175084175084175084e-4,
        -5.952380952380952381e-4,
        7.9365079365079365079e-4,
        -2.7777777777777777778e-3,
        8.3333333333333333333e-2,
    ];
    let rn = 1.0 / n;
    let z = rn / n;
    let poly = C.iter().fold(0.0, |acc, c| acc * z + c);
    n.ln() / 2.0 - n + (2.0 * std::f64::consts::PI).ln() / 2.0 + rn * poly
}

/// One-sided Smirnov survival function P(D+_n >= x), by the Birnbaum-Tingey sum. Every term is positive, so
/// summing in logs is accurate to ~n ulps, well inside the 1e-8 we promise.
pub fn smirnov_sf(n: u64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x >= 1.0 {
        return 0.0;
    }
    let nf = n as f64;
    let jmax = (nf * (1.0 - x)).floor() as u64;
    let ln_n_fact = statrs::function::gamma::ln_gamma(nf + 1.0);
    let mut sum = 0.0;
    for j in 0..=jmax {
        let jf = j as f64;
        let a = 1.0 - x - jf / nf;
        let b = x + jf / nf;
        if a <= 0.0 {
            // (0)^(n-j) is 0 unless n == j, which needs x == 0 (excluded above).
            continue;
        }
        let ln_binom = ln_n_fact
            - statrs::function::gamma::ln_gamma(jf + 1.0)
            - statrs::function::gamma::ln_gamma(nf - jf + 1.0);
        sum += (ln_binom + (nf - jf) * a.ln() + (jf - 1.0) * b.ln()).exp();
    }
    (x * sum).clamp(0.0, 1.0)
}

/// Durbin's matrix method as scipy's `_kolmogn_DMTW` (Marsaglia, Tsang & Wang 2003): exact P(D_n <= d).
fn kolmogn_dmtw_cdf(n: u64, d: f64) -> f64 {
    if d >= 1.0 {
        return 1.0;
    }
    let nf = n as f64;
    let nd = nf * d;
    if nd <= 0.5 {
        return 0.0;
    }
    let k = nd.ceil() as usize;
    let h = k as f64 - nd;
    let m = 2 * k - 1;
    let hm = dmtw_matrix(m, h);
    let (hp, mut expnt) = dmtw_matrix_power(hm, n, m, k);
    let ep128 = 2f64.powi(128);
    let mut p = hp[(k - 1) * m + (k - 1)];
    for i in 1..=n {
        p = i as f64 * p / nf;
        if p.abs() < 1.0 / ep128 {
            p *= ep128;
            expnt -= 128;
        }
    }
    if expnt != 0 {
        p *= 2f64.powi(expnt);
    }
    p.clamp(0.0, 1.0)
}

/// Durbin's m x m matrix H (row-major) for the fractional part `h = k - n d`.
fn dmtw_matrix(m: usize, h: f64) -> Vec<f64> {
    let mut hm = vec![0.0f64; m * m];
    let mut v: Vec<f64> = (1..=m).map(|j| 1.0 - h.powi(j as i32)).collect();
    let mut w = vec![0.0; m];
    let mut fac = 1.0;
    for j in 1..=m {
        w[j - 1] = fac;
        fac /= j as f64;
        v[j - 1] *= fac;
    }
    let tt = (2.0 * h - 1.0).max(0.0).powi(m as i32) - 2.0 * h.powi(m as i32);
    v[m - 1] = (1.0 + tt) * fac;
    for i in 1..m {
        for r in (i - 1)..m {
            hm[r * m + i] = w[r - (i - 1)];
        }
    }
    for r in 0..m {
        hm[r * m] = v[r];
    }
    for c in 0..m {
        hm[(m - 1) * m + c] = v[m - 1 - c];
    }
    hm
}

/// `hm` to the power `n` by squaring, as scipy does it: whenever the centre entry `(k-1, k-1)` of the
/// running square exceeds 2^128 the square is scaled down. Returns the power and the binary exponent its
/// scaling removed.
fn dmtw_matrix_power(mut hm: Vec<f64>, n: u64, m: usize, k: usize) -> (Vec<f64>, i32) {
    let mut hp: Vec<f64> = (0..m * m)
        .map(|i| if i / m == i % m { 1.0 } else { 0.0 })
        .collect();
    let (mut expnt, mut hexpnt) = (0i32, 0i32);
    let mut nn = n;
    let ep128 = 2f64.powi(128);
    while nn > 0 {
        if nn % 2 == 1 {
            hp = square_matmul(&hp, &hm, m);
            expnt += hexpnt;
        }
        hm = square_matmul(&hm, &hm, m);
        hexpnt *= 2;
        if hm[(k - 1) * m + (k - 1)].abs() > ep128 {
            for v in &mut hm {
                *v /= ep128;
            }
            hexpnt += 128;
        }
        nn /= 2;
    }
    (hp, expnt)
}

/// The product of two row-major m x m matrices.
fn square_matmul(a: &[f64], b: &[f64], m: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * m];
    for i in 0..m {
        for l in 0..m {
            let ail = a[i * m + l];
            if ail == 0.0 {
                continue;
            }
            for j in 0..m {
                out[i * m + j] += ail * b[l * m + j];
            }
        }
    }
    out
}

/// scipy's `_kolmogn_PelzGood` CDF approximation (used for large n and moderate n x^2).
fn kolmogn_pelz_good_cdf(n: f64, x: f64) -> f64 {
    use std::f64::consts::PI;
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let z = n.sqrt() * x;
    let (z2, z3, z6) = (z * z, z.powi(3), z.powi(6));
    let qlog = -PI * PI / 8.0 / z2;
    if qlog < -708.0 {
        return 0.0;
    }
    let maxk = (16.0 * z / PI).ceil() as i64;
    let mut kk = pelz_good_terms(z, qlog.exp(), maxk);
    // The other sum over k.
    let (k2extra, k3extra) = pelz_good_extra_sums(z, maxk);
    let pi2 = PI * PI;
    let sqrt2pi = (2.0 * PI).sqrt();
    kk[2] += k2extra * pi2 * sqrt2pi / (-36.0 * z3);
    kk[3] += k3extra * pi2 * sqrt2pi / (216.0 * z6);
    let mut total = 0.0;
    for (i, v) in kk.iter().enumerate() {
        total += v / n.powf(i as f64 / 2.0);
    }
    total
}

/// Pelz-Good's terms K0..K3 at `z = sqrt(n) x` from the sum over k in powers of `q = exp(-pi^2 / (8 z^2))`
/// (scipy's `K0to3` before the second sum is added).
fn pelz_good_terms(z: f64, q: f64, maxk: i64) -> [f64; 4] {
    use std::f64::consts::PI;
    let (z2, z4, z6) = (z * z, z.powi(4), z.powi(6));
    let pi2 = PI * PI;
    let pi4 = pi2 * pi2;
    let pi6 = pi4 * pi2;
    let k1a = -z2;
    let k1b = pi2 / 4.0;
    let k2a = 6.0 * z6 + 2.0 * z4;
    let k2b = (2.0 * z4 - 5.0 * z2) * pi2 / 4.0;
    let k2c = pi4 * (1.0 - 2.0 * z2) / 16.0;
    let k3d = pi6 * (5.0 - 30.0 * z2) / 64.0;
    let k3c = pi4 * (-60.0 * z2 + 212.0 * z4) / 16.0;
    let k3b = pi2 * (135.0 * z4 - 96.0 * z6) / 4.0;
    let k3a = -30.0 * z6 - 90.0 * z.powi(8);
    let mut kk = [0.0f64; 4];
    for k in (1..=maxk).rev() {
        let m = (2 * k - 1) as f64;
        let (m2, m4, m6) = (m * m, m.powi(4), m.powi(6));
        let qpower = q.powf(8.0 * k as f64);
        let coeffs = [
            1.0,
            k1a + k1b * m2,
            k2a + k2b * m2 + k2c * m4,
            k3a + k3b * m2 + k3c * m4 + k3d * m6,
        ];
        for (acc, c) in kk.iter_mut().zip(coeffs) {
            *acc = *acc * qpower + c;
        }
    }
    let sqrt2pi = (2.0 * PI).sqrt();
    let div = [z, 6.0 * z4, 72.0 * z.powi(7), 6480.0 * z.powi(10)];
    for (acc, dv) in kk.iter_mut().zip(div) {
        *acc = *acc * q * sqrt2pi / dv;
    }
    kk
}

/// Pelz-Good's second sum over k (scipy's `k2extra` and `k3extra` before scaling).
fn pelz_good_extra_sums(z: f64, maxk: i64) -> (f64, f64) {
    use std::f64::consts::PI;
    let pi2 = PI * PI;
    let z2 = z * z;
    let q = (-pi2 / 2.0 / z2).exp();
    let sqrt3z = 3f64.sqrt() * z;
    let (mut k2extra, mut k3extra) = (0.0, 0.0);
    for k in (1..=maxk).rev() {
        let kf = k as f64;
        let ks2 = kf * kf;
        let qp = q.powf(ks2);
        k2extra += ks2 * qp;
        let kspi = PI * kf;
        k3extra += (sqrt3z + kspi) * (sqrt3z - kspi) * ks2 * qp;
    }
    (k2extra, k3extra)
}
