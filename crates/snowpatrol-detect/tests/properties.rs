//! Property tests: invariants that must hold for any input, not just the reference vectors.
#![allow(clippy::needless_range_loop)] // index loops over parallel component vectors read clearer here

use ndarray::Array2;
use proptest::prelude::*;
use snowpatrol_detect::DetectError;
use snowpatrol_detect::decompose::{seasonal_decompose, stl};
use snowpatrol_detect::iforest::{IsolationForest, IsolationForestParams};
use snowpatrol_detect::ks::ks_2samp;

fn credits() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), 0.0..1000.0f64, -5.0..5.0f64]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn classical_decomposition_recomposes(y in prop::collection::vec(credits(), 14..200), period in 2usize..8) {
        prop_assume!(y.len() >= 2 * period);
        let d = seasonal_decompose(&y, period).unwrap();
        let scale = y.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for i in 0..y.len() {
            let back = d.trend[i] + d.seasonal[i] + d.resid[i];
            prop_assert!((back - y[i]).abs() <= 1e-9 * scale, "day {i}: {back} vs {}", y[i]);
        }
        // The seasonal component is periodic and centred.
        let s: f64 = d.seasonal[..period].iter().sum();
        prop_assert!(s.abs() <= 1e-9 * scale);
    }

    #[test]
    fn stl_recomposes(y in prop::collection::vec(credits(), 14..120)) {
        let d = stl(&y, 7).unwrap();
        let scale = y.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for i in 0..y.len() {
            prop_assert!((d.trend[i] + d.seasonal[i] + d.resid[i] - y[i]).abs() <= 1e-9 * scale);
        }
    }

    #[test]
    fn short_series_are_refused_not_panicking(y in prop::collection::vec(credits(), 0..14)) {
        let short = matches!(seasonal_decompose(&y, 7), Err(DetectError::TooShort { .. }));
        prop_assert!(short);
        let short_stl = matches!(stl(&y, 7), Err(DetectError::TooShort { .. }));
        prop_assert!(short_stl);
    }

    #[test]
    fn non_finite_input_is_refused(mut y in prop::collection::vec(credits(), 14..60), at in 0usize..14,
                                   bad in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)]) {
        y[at] = bad;
        let nonfinite = matches!(seasonal_decompose(&y, 7), Err(DetectError::NonFinite { .. }));
        prop_assert!(nonfinite);
        let nonfinite_stl = matches!(stl(&y, 7), Err(DetectError::NonFinite { .. }));
        prop_assert!(nonfinite_stl);
        let nonfinite_ks = matches!(ks_2samp(&y, &[1.0, 2.0]), Err(DetectError::NonFinite { .. }));
        prop_assert!(nonfinite_ks);
        let x = Array2::from_shape_vec((y.len(), 1), y.clone()).unwrap();
        let nonfinite_if = matches!(IsolationForest::fit(x.view(), &IsolationForestParams::default()), Err(DetectError::NonFinite { .. }));
        prop_assert!(nonfinite_if);
    }

    #[test]
    fn ks_pvalue_is_a_probability_and_symmetric(a in prop::collection::vec(prop_oneof![0.0..10.0f64, (0i32..5).prop_map(f64::from)], 1..80),
                                                 b in prop::collection::vec(prop_oneof![0.0..10.0f64, (0i32..5).prop_map(f64::from)], 1..80)) {
        let r = ks_2samp(&a, &b).unwrap();
        let s = ks_2samp(&b, &a).unwrap();
        prop_assert!((0.0..=1.0).contains(&r.pvalue), "p = {}", r.pvalue);
        prop_assert!((0.0..=1.0).contains(&r.statistic));
        prop_assert_eq!(r.statistic, s.statistic);
        prop_assert!((r.pvalue - s.pvalue).abs() <= 1e-12);
        // A sample against itself never rejects.
        let same = ks_2samp(&a, &a).unwrap();
        prop_assert_eq!(same.statistic, 0.0);
        prop_assert_eq!(same.pvalue, 1.0);
    }

    #[test]
    fn isolation_forest_is_deterministic_and_finite(y in prop::collection::vec(credits(), 1..300), seed in any::<u64>()) {
        let x = Array2::from_shape_vec((y.len(), 1), y.clone()).unwrap();
        let p = IsolationForestParams { n_estimators: 20, ..IsolationForestParams::default() }.with_seed(seed);
        let a = IsolationForest::fit(x.view(), &p).unwrap();
        let b = IsolationForest::fit(x.view(), &p).unwrap();
        prop_assert_eq!(&a, &b);
        let sa = a.decision_function(x.view()).unwrap();
        let sb = b.decision_function(x.view()).unwrap();
        prop_assert_eq!(&sa, &sb);
        prop_assert!(sa.iter().all(|v| v.is_finite() && *v >= -0.5 && *v <= 0.5));
    }
}

#[test]
fn isolation_forest_scores_constant_and_zero_series() {
    for v in [0.0, 3.5] {
        let x = Array2::from_elem((200, 1), v);
        let f =
            IsolationForest::fit(x.view(), &IsolationForestParams::default().with_seed(1)).unwrap();
        let s = f.score_samples(x.view()).unwrap();
        // Every point lands in the root leaf: path length c(256 capped at n) over c(n) = 1, score -0.5.
        assert!(s.iter().all(|v| (*v + 0.5).abs() < 1e-12), "{s:?}");
    }
}

#[test]
fn isolation_forest_same_result_on_one_thread_and_many() {
    let y: Vec<f64> = (0..500).map(|i| ((i * 7919) % 101) as f64 / 10.0).collect();
    let x = Array2::from_shape_vec((500, 1), y).unwrap();
    let p = IsolationForestParams::default().with_seed(9);
    let many = IsolationForest::fit(x.view(), &p).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let one = pool.install(|| IsolationForest::fit(x.view(), &p).unwrap());
    assert_eq!(many, one);
    assert_eq!(
        many.score_samples(x.view()).unwrap(),
        pool.install(|| one.score_samples(x.view()).unwrap())
    );
}
