#!/usr/bin/env python3
"""Answers random cases posed by the Rust test `tests/live_python.rs` with the real Python libraries.

Usage: python live_reference.py cases.json answers.json
cases: {"ks": [[a, b], ...], "decompose": [{"y": [...], "period": p}, ...], "stl": [[...], ...]}
"""
import json
import sys
import warnings

import numpy as np
from scipy.stats import ks_2samp
from statsmodels.tsa.seasonal import STL, seasonal_decompose


def main():
    with open(sys.argv[1]) as fh:
        cases = json.load(fh)
    out = {"ks": [], "decompose": [], "stl": []}
    for a, b in cases["ks"]:
        r = ks_2samp(np.asarray(a), np.asarray(b))
        out["ks"].append([float(r.statistic), float(r.pvalue)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for c in cases["decompose"]:
            r = seasonal_decompose(np.asarray(c["y"]), model="additive", period=c["period"], extrapolate_trend="freq")
            out["decompose"].append([r.trend.tolist(), r.seasonal.tolist(), r.resid.tolist()])
    for y in cases["stl"]:
        r = STL(np.asarray(y), period=7).fit()
        out["stl"].append([r.trend.tolist(), r.seasonal.tolist(), r.resid.tolist()])
    with open(sys.argv[2], "w") as fh:
        json.dump(out, fh)


if __name__ == "__main__":
    main()
