#!/usr/bin/env python3
"""Times the original's per-warehouse job in Python (statsmodels + scikit-learn), for the speed comparison.

Usage:
  cargo run --release -p snowpatrol-detect --example job_throughput -- 10000 3 /tmp/peer.csv
  .venv/bin/python scripts/detect/bench_python_peer.py /tmp/peer.csv [repeats]

Per warehouse, as the original does: seasonal_decompose(additive, period 7, extrapolate_trend="freq"),
IsolationForest() fitted on the residuals, threshold = mean - 3 std of decision_function on the training data,
then decision_function of the last 8 days. Sequential, one warehouse after another (the original ran them in a
loop inside one task). Prints the median per-warehouse time and the extrapolation to 10,000 warehouses.
"""
import csv
import statistics
import sys
import time
import warnings
from collections import defaultdict

import numpy as np
from sklearn.ensemble import IsolationForest
from statsmodels.tsa.seasonal import seasonal_decompose

warnings.simplefilter("ignore", FutureWarning)


def job(y):
    dec = seasonal_decompose(y, model="additive", period=7, extrapolate_trend="freq")
    resid = dec.resid.reshape(-1, 1)
    model = IsolationForest().fit(resid)
    scores = model.decision_function(resid)
    threshold = scores.mean() - 3 * scores.std()
    last = model.decision_function(resid[-8:])
    return int((last <= threshold).sum())


def main():
    path = sys.argv[1]
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    series = defaultdict(list)
    with open(path) as fh:
        for row in csv.DictReader(fh):
            series[row["warehouse"]].append(float(row["credits"]))
    ys = [np.asarray(v) for v in series.values()]
    per_wh = []
    for _ in range(repeats):
        for y in ys:
            t = time.perf_counter()
            job(y)
            per_wh.append(time.perf_counter() - t)
    med = statistics.median(per_wh)
    print(f"python peer: {len(ys)} warehouses x {len(ys[0])} days x {repeats} repeats; "
          f"median {med * 1000:.1f} ms per warehouse (mean {statistics.mean(per_wh) * 1000:.1f} ms); "
          f"extrapolated to 10,000 warehouses: {med * 10000:.0f} s sequential")


if __name__ == "__main__":
    main()
