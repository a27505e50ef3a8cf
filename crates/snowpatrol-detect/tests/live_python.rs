//! Differential test against live scipy/statsmodels on cases drawn fresh from a seeded generator, beyond the
//! committed fixtures. Needs the interpreter in `SNOWPATROL_TEST_PYTHON` (scripts/test.sh sets it to
//! `.venv/bin/python`); fails, never skips, without it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use snowpatrol_detect::decompose::{Decomposition, seasonal_decompose, stl};
use snowpatrol_detect::ks::ks_2samp;
use std::process::Command;

fn python() -> String {
    std::env::var("SNOWPATROL_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "SNOWPATROL_TEST_PYTHON is not set: point it at a Python with scipy and statsmodels \
             (e.g. .venv/bin/python, as scripts/test.sh does)"
        )
    })
}

fn sample(rng: &mut ChaCha8Rng, n: usize, shift: f64) -> Vec<f64> {
    match rng.random_range(0..3) {
        // Ties: small integers.
        0 => (0..n)
            .map(|_| f64::from(rng.random_range(0..6)) + shift.round())
            .collect(),
        // Credits-like, rounded to 3 decimals (as metering is).
        1 => (0..n)
            .map(|_| ((rng.random::<f64>() * 40.0 + shift) * 1000.0).round() / 1000.0)
            .collect(),
        _ => (0..n).map(|_| rng.random::<f64>() + shift * 0.05).collect(),
    }
}

/// Checks the three components of `d` (trend, seasonal, residual) against Python's `answer`, point by point
/// within `tolerance` relative to the series' largest magnitude; `case` names the case in a failure. Returns
/// the worst relative error, for the summary line.
fn component_error(
    y: &[f64],
    d: &Decomposition,
    answer: &Value,
    tolerance: f64,
    case: &str,
) -> f64 {
    let scale = y.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let mut worst: f64 = 0.0;
    for (ours, theirs) in [&d.trend, &d.seasonal, &d.resid]
        .into_iter()
        .zip(answer.as_array().unwrap())
    {
        for (o, t) in ours.iter().zip(theirs.as_array().unwrap()) {
            let err = (o - t.as_f64().unwrap()).abs() / scale;
            worst = worst.max(err);
            assert!(err <= tolerance, "{case}: {o} vs {t}");
        }
    }
    worst
}

#[test]
fn random_cases_agree_with_live_python() {
    let py = python();
    let mut rng = ChaCha8Rng::seed_from_u64(20_251_127);
    let mut ks_cases = Vec::new();
    for k in 0..150 {
        let n1 = if k % 10 == 0 {
            7
        } else {
            rng.random_range(1..900)
        };
        let n2 = if k % 7 == 0 {
            n1
        } else {
            rng.random_range(1..900)
        };
        let shift = if rng.random::<f64>() < 0.5 {
            0.0
        } else {
            rng.random::<f64>() * 4.0
        };
        ks_cases.push((sample(&mut rng, n1, 0.0), sample(&mut rng, n2, shift)));
    }
    ks_cases.push((sample(&mut rng, 720, 0.0), sample(&mut rng, 168, 0.0)));
    let mut dec_cases = Vec::new();
    for _ in 0..40 {
        let period = rng.random_range(2..13);
        let n = rng.random_range(2 * period..2 * period + 400);
        let y: Vec<f64> = (0..n)
            .map(|i| {
                let base = 20.0 + 0.05 * i as f64 + 5.0 * ((i % period) as f64);
                if rng.random::<f64>() < 0.1 {
                    0.0
                } else {
                    ((base + 3.0 * rng.random::<f64>()) * 1000.0).round() / 1000.0
                }
            })
            .collect();
        dec_cases.push((y, period));
    }
    let stl_cases: Vec<Vec<f64>> = (0..10)
        .map(|_| {
            let n = rng.random_range(14..400);
            (0..n)
                .map(|i| 10.0 + ((i % 7) as f64) * 2.0 + rng.random::<f64>() * 5.0)
                .collect()
        })
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let (cases_path, answers_path) = (
        dir.path().join("cases.json"),
        dir.path().join("answers.json"),
    );
    let cases = json!({
        "ks": ks_cases.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>(),
        "decompose": dec_cases.iter().map(|(y, p)| json!({"y": y, "period": p})).collect::<Vec<_>>(),
        "stl": stl_cases,
    });
    std::fs::write(&cases_path, serde_json::to_vec(&cases).unwrap()).unwrap();
    let script = format!(
        "{}/../../scripts/detect/live_reference.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new(&py)
        .arg(&script)
        .arg(&cases_path)
        .arg(&answers_path)
        .output()
        .unwrap_or_else(|e| panic!("run {py}: {e}"));
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Value = serde_json::from_slice(&std::fs::read(&answers_path).unwrap()).unwrap();

    let mut worst_p: f64 = 0.0;
    for ((a, b), ans) in ks_cases.iter().zip(answers["ks"].as_array().unwrap()) {
        let (d, p) = (ans[0].as_f64().unwrap(), ans[1].as_f64().unwrap());
        let r = ks_2samp(a, b).unwrap();
        assert!(
            (r.statistic - d).abs() <= 1e-12,
            "n={}/{}: D {} vs {d}",
            a.len(),
            b.len(),
            r.statistic
        );
        let rel = (r.pvalue - p).abs() / p.max(1e-300);
        worst_p = worst_p.max(rel);
        assert!(
            rel <= 1e-8,
            "n={}/{}: p {:e} vs scipy {p:e}",
            a.len(),
            b.len(),
            r.pvalue
        );
    }
    let mut worst_dec: f64 = 0.0;
    for ((y, period), ans) in dec_cases
        .iter()
        .zip(answers["decompose"].as_array().unwrap())
    {
        let d = seasonal_decompose(y, *period).unwrap();
        let case = format!("n={} period={period}", y.len());
        worst_dec = worst_dec.max(component_error(y, &d, ans, 1e-12, &case));
    }
    let mut worst_stl: f64 = 0.0;
    for (y, ans) in stl_cases.iter().zip(answers["stl"].as_array().unwrap()) {
        let d = stl(y, 7).unwrap();
        let case = format!("stl n={}", y.len());
        worst_stl = worst_stl.max(component_error(y, &d, ans, 1e-9, &case));
    }
    eprintln!(
        "live python: {} KS cases (worst relative p error {worst_p:e}), {} decompositions (worst {worst_dec:e}), {} STL (worst {worst_stl:e})",
        ks_cases.len(),
        dec_cases.len(),
        stl_cases.len()
    );
}
