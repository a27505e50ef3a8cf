#!/usr/bin/env python3
"""Regenerates the reference vectors the Rust tests of snowpatrol-detect compare against.

Run: .venv/bin/python scripts/detect/make_reference.py
Writes crates/snowpatrol-detect/tests/fixtures/{decompose,stl,ks,iforest}.json.
Inputs are generated here from fixed seeds and stored in the fixtures, so the Rust side needs no Python.
"""
import json
import os
import warnings

import numpy as np
import scipy
import sklearn
import statsmodels
from scipy.stats import ks_2samp, spearmanr
from sklearn.ensemble import IsolationForest
from statsmodels.tsa.seasonal import STL, seasonal_decompose

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "snowpatrol-detect", "tests", "fixtures")
VERSIONS = {"numpy": np.__version__, "scipy": scipy.__version__, "statsmodels": statsmodels.__version__,
            "scikit-learn": sklearn.__version__}


def credit_series(rng, n, kind):
    t = np.arange(n)
    weekly = np.array([1.0, 1.1, 1.05, 1.0, 0.9, 0.2, 0.1])
    if kind == "office":
        y = 40 * weekly[t % 7] * np.exp(0.001 * t) * np.exp(0.15 * rng.standard_normal(n))
    elif kind == "sparse":
        y = np.where(rng.random(n) < 0.4, rng.gamma(2.0, 3.0, n), 0.0)
    elif kind == "spiky":
        y = 10 + 3 * np.sin(2 * np.pi * t / 7) + rng.standard_normal(n)
        y[rng.choice(n, max(1, n // 50), replace=False)] += 40
    elif kind == "zeros":
        y = np.zeros(n)
    else:  # "linear": exact trend, exercises the extrapolation
        y = 5 + 0.25 * t + np.tile([0, 1, 2, 3, 2, 1, 0], n // 7 + 1)[:n]
    return np.round(y, 6)


def decompose_cases():
    rng = np.random.default_rng(7)
    cases = []
    for n, kind, period in [(14, "office", 7), (15, "linear", 7), (21, "spiky", 7), (60, "sparse", 7),
                            (100, "office", 7), (365, "spiky", 7), (730, "office", 7), (28, "zeros", 7),
                            (48, "office", 12), (10, "linear", 4), (9, "spiky", 3)]:
        y = credit_series(rng, n, kind)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            r = seasonal_decompose(y, model="additive", period=period, extrapolate_trend="freq")
        cases.append({"name": f"{kind}_{n}_p{period}", "period": period, "y": y.tolist(),
                      "trend": r.trend.tolist(), "seasonal": r.seasonal.tolist(), "resid": r.resid.tolist()})
    return cases


def stl_cases():
    rng = np.random.default_rng(11)
    cases = []
    for n, kind in [(14, "office"), (60, "spiky"), (365, "office"), (730, "office"), (100, "sparse")]:
        y = credit_series(rng, n, kind)
        r = STL(y, period=7).fit()
        cases.append({"name": f"{kind}_{n}", "period": 7, "y": y.tolist(), "trend": r.trend.tolist(),
                      "seasonal": r.seasonal.tolist(), "resid": r.resid.tolist()})
    return cases


def ks_cases():
    rng = np.random.default_rng(3)
    cases = []

    def add(name, a, b):
        r = ks_2samp(a, b)
        cases.append({"name": name, "a": list(map(float, a)), "b": list(map(float, b)),
                      "statistic": float(r.statistic), "pvalue": float(r.pvalue)})

    # Drift shapes: last 7 days against the history before them.
    for n in [23, 100, 358, 723]:
        hist = np.round(rng.gamma(4, 10, n), 3)
        add(f"drift_7_vs_{n}", np.round(rng.gamma(4, 10, 7), 3), hist)
        add(f"drift_shift_7_vs_{n}", np.round(rng.gamma(4, 10, 7) * 2.5, 3), hist)
    add("720_vs_168", np.round(rng.normal(0, 1, 720), 4), np.round(rng.normal(0.1, 1.1, 168), 4))
    add("720_vs_168_same", np.round(rng.normal(0, 1, 720), 4), np.round(rng.normal(0, 1, 168), 4))
    add("equal_n_50", rng.normal(0, 1, 50), rng.normal(0.5, 1, 50))
    add("equal_n_200_close", rng.normal(0, 1, 200), rng.normal(0.05, 1, 200))
    add("ties_small_ints", rng.integers(0, 5, 30), rng.integers(0, 6, 40))
    add("ties_zeros", np.r_[np.zeros(20), rng.integers(1, 4, 10)], np.r_[np.zeros(5), rng.integers(1, 4, 60)])
    add("ties_equal_n", rng.integers(0, 3, 25), rng.integers(0, 3, 25))
    add("identical", [1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    add("disjoint", [1.0, 2.0, 3.0, 4.0], [10.0, 11.0, 12.0])
    add("single_vs_many", [5.0], rng.normal(0, 1, 30))
    add("coprime_997_1009", rng.normal(0, 1, 997), rng.normal(0.1, 1, 1009))
    add("large_exact_3000_5000", np.round(rng.normal(0, 1, 3000), 3), np.round(rng.normal(0.03, 1, 5000), 3))
    # Asymptotic branch (max(n1, n2) > 10000): integers keep the fixture small.
    add("asymp_12000_vs_300", rng.integers(0, 1000, 12000), rng.integers(0, 1000, 300) + 40)
    add("asymp_12000_vs_100_far", rng.integers(0, 1000, 12000), rng.integers(0, 1000, 100) + 300)
    add("asymp_11000_vs_9000", rng.integers(0, 100000, 11000), rng.integers(0, 100000, 9000) + 1500)
    add("asymp_11000_vs_60_close", rng.integers(0, 1000, 11000), rng.integers(0, 1000, 60))
    return cases


def iforest_cases():
    rng = np.random.default_rng(5)
    cases = []
    # 1-D residual-like data with clear outliers (as the baseline sees it), and a 2-D blob.
    r = rng.normal(0, 1, 365)
    out_idx = [30, 100, 200, 300, 350]
    r[out_idx] = [9.0, -8.0, 12.0, 7.5, -10.0]
    small = rng.normal(0, 1, 40)
    small[[5, 20]] = [8.0, -7.0]
    blob = rng.normal(0, 1, (300, 2))
    blob[[0, 1, 2]] = [[6, 6], [-7, 5], [8, -6]]
    for name, x, outliers in [("resid_365", r.reshape(-1, 1), out_idx), ("small_40", small.reshape(-1, 1), [5, 20]),
                              ("blob_2d", blob, [0, 1, 2])]:
        seeds = []
        all_scores = []
        for seed in range(40):
            f = IsolationForest(random_state=seed).fit(x)
            all_scores.append(f.score_samples(x))
            if seed < 5:
                seeds.append({"seed": seed, "score_samples": f.score_samples(x).tolist(),
                              "decision_function": f.decision_function(x).tolist(), "offset": float(f.offset_)})
        # One forest is a noisy estimate of the expected score; sklearn against itself (seed-to-seed) only reaches
        # ~0.93 rank correlation on 1-D data. The mean over 20 seeds estimates the expected score, which is what
        # an independent implementation must agree with.
        mean20 = np.mean(all_scores[:20], axis=0)
        self_rho = float(np.mean([spearmanr(all_scores[20 + i], mean20)[0] for i in range(20)]))
        mean_vs_mean = float(spearmanr(mean20, np.mean(all_scores[20:], axis=0))[0])
        cases.append({"name": name, "x": x.tolist(), "outliers": outliers, "sklearn": seeds,
                      "sklearn_mean20_score_samples": mean20.tolist(),
                      "sklearn_single_vs_mean20_rho": self_rho, "sklearn_mean20_vs_mean20_rho": mean_vs_mean})
    return cases


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, fn in [("decompose", decompose_cases), ("stl", stl_cases), ("ks", ks_cases),
                     ("iforest", iforest_cases)]:
        path = os.path.join(OUT, f"{name}.json")
        with open(path, "w") as fh:
            json.dump({"generator": "scripts/detect/make_reference.py", "versions": VERSIONS, "cases": fn()}, fh)
        print(f"wrote {os.path.normpath(path)} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
