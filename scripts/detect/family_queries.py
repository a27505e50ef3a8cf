#!/usr/bin/env python3
"""Third synthetic family of Snowflake warehouse metering: simulated from individual QUERIES.

    python3 scripts/detect/family_queries.py --seed N --out DIR [--warehouses 40] [--days 430] [--end 2025-11-30]

(per-warehouse progress on stderr; --quiet for the summary only; FQ_DEBUG=1 also prints every incident
with its labelled days, diff and threshold, FQ_DEBUG=2 the expected effects too.)
Writes DIR/metering.csv (WAREHOUSE_METERING_HISTORY-shaped, one row per account, warehouse and hour with
usage) and DIR/labels.csv (account_name,warehouse_name,usage_date,kind). Standard library and numpy only;
the output is a pure function of the arguments (numpy Generators seeded from one SeedSequence).

PRINCIPLES
Nothing here draws a daily credit figure. Spend emerges from what bills in Snowflake:
  * Queries arrive from a population of sources: people (BI users, analysts, data scientists) with a home
    time zone, a holiday calendar, vacations, a join and a leave date; schedulers (COPY every k minutes,
    nightly dbt-like DAGs whose tasks start when their parents finish, BI extract refreshes, ML jobs);
    and customer traffic (a 24x7 app warehouse, Poisson per hour around a customer time-zone mix).
    Run times are heavy tailed (lognormal, per-user heaviness) and grow with data volume.
  * A query's run time depends on the warehouse size in force when it starts: work / credits^alpha
    (alpha < 1: bigger warehouses do not scale perfectly), capped by STATEMENT_TIMEOUT_IN_SECONDS
    (default 172800 s = 2 days, shorter on some warehouses).
  * The warehouse runs from a query's start until AUTO_SUSPEND seconds after the last running query ends
    (union of [start, end + auto_suspend]); every resume bills at least 60 s, then per second, at
    1/2/4/8/16/32 credits per hour per cluster for XS..2XL. Some warehouses never suspend.
  * Multi-cluster warehouses (Standard policy) start cluster k while more than (k-1)*MAX_CONCURRENCY
    queries run, keep it for a cool-down of 2-3 minutes after the need ends, each start billed >= 60 s.
  * Cloud services credits: a small per-query amount (more for COPY file listing and compilation heavy
    ELT), billed in the hour the query starts, also for result-cache hits that never wake the warehouse.
    The hourly view is unadjusted (the daily 10 % adjustment is not applied).
  No processor sharing: concurrent queries on one cluster run as if alone, so work that is added is
  serialised where it is generated (a backfill runs its chunks in a few streams, close and onboarding
  models run after the nightly DAG, a failed DAG's catch-up lengthens the next night's tasks).

NON-ANOMALOUS VARIATION (never labelled, except where said)
  organic growth of users and data, user churn, individual vacations (summer-heavy in Europe), public
  holidays per home country (US, UK, DE, IN, SG), the December lull, DST shifts of local schedules,
  Sunday full refreshes and weekly ML retraining, Monday effects of weekend data, late upstream data,
  warehouses created (a migration with a parallel run, a new team) or decommissioned during the series.
  `expected` labels: month-end / quarter-end / year-end financial close workload (finance warehouses,
  some ELT and BI warehouses), and the first days of an announced onboarding of a new team or pipeline
  set (a permanent step up: its first <= 3 material days are labelled `expected`; afterwards it is the
  new normal and unlabelled).

INCIDENTS (a few per warehouse per year, kinds chosen by what can raise that warehouse's bill: an
always-on single-cluster warehouse cannot cost more unless it is resized)
  runaway   auto-suspend disabled until someone notices (up to ~3 days), a runaway query that runs until
            it is cancelled or hits the statement timeout, a notebook loop keeping a warehouse awake
  resize    a resize left in place (permanent), or a temporary resize of one to two days
  spike     accidental cross join / huge one-off query, a backfill, a retry storm of a broken pipeline,
            the catch-up run after a pipeline failure or source outage
  scale_out a concurrency storm (BI refresh loop, misbehaving API client) that starts extra clusters
  drop      outages: source or scheduler down, BI tool down, a nightly DAG failing at a task (its
            descendants, and any DAG on another warehouse chained after it, do not run); FinOps
            right-sizing (downsize, shorter auto-suspend) is also labelled drop.

LABELLING RULE (counterfactual)
Each warehouse is simulated in nested worlds that share every random draw:
  W0 normal operation; W1 = W0 + announced onboardings; W2 = W1 + financial close workloads;
  W3 = W2 + permanent changes (resize left in place, FinOps); W4 = W3 + transient incidents, which is
  the metering written out.
An effect of layer L is judged on diff = daily(W_L) - daily(W_{L-1}) within its window of days
(the UTC days the effect spans, plus one for spill-over). usual(d) = mean of daily(W_{L-1}) over the
28 days before d (over the first 28 days of a warehouse younger than a week);
material(d) <=> |diff(d)| >= max(0.25 * usual(d), 3 credits).
  * transient incidents: every material day of the window is labelled with the incident's kind when
    spend rose (the catch-up run after a failure or outage is `spike`) and `drop` when it fell;
  * resizes: the first day (the UTC day the resize is made) is always labelled `resize`, later days of
    the window when material (2 more days for a resize left in place, the whole episode for a
    temporary one). People resize on working days, just before the work they want to speed up;
  * FinOps changes (`drop`) and onboardings (`expected`): the first <= 3 material days within 14 days;
  * close runs: every material day of each close window is labelled `expected`.
One label per warehouse-day; on collisions an increase kind wins over drop, drop over expected.
An incident whose effect is nowhere material stays in the data unlabelled (as in real life, small).
Creation and decommissioning are unlabelled (planned; visible as the first / last metered day).

SIMPLIFICATIONS
  no processor sharing (see above); a nightly DAG's task start times are computed at its nominal
  size (a resize changes each task's run time, not when its successors start); resizes take effect
  on an hour boundary; the 1-minute minimum billed on an upsize is ignored.
"""
import argparse
import datetime as dt
import os
import sys
import time

import numpy as np

HOUR = 3600.0
DAY = 86400.0
SIZE_NAMES = ["XS", "S", "M", "L", "XL", "2XL"]
SIZE_CREDITS = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
DEFAULT_TIMEOUT = 172800.0
FLOOR = 3.0          # credits: smallest material change
REL = 0.25           # fraction of the usual day that is material
INCREASE = ("spike", "runaway", "resize", "scale_out")
# layers of the nested counterfactual worlds (a world includes every layer <= its number)
L_BASE, L_ONBOARD, L_CLOSE, L_PERM, L_INC = 0, 1, 2, 3, 4

# ----------------------------------------------------------------------------------------------------
# calendars and time zones

TZ_REGION = {
    "Europe/London": ("UK", 0.0, "EU"), "Europe/Berlin": ("DE", 1.0, "EU"),
    "America/New_York": ("US", -5.0, "US"), "America/Chicago": ("US", -6.0, "US"),
    "America/Los_Angeles": ("US", -8.0, "US"), "Asia/Kolkata": ("IN", 5.5, None),
    "Asia/Singapore": ("SG", 8.0, None),
}


def nth_weekday(y, m, wd, n):
    if n > 0:
        d = dt.date(y, m, 1)
        d += dt.timedelta((wd - d.weekday()) % 7)
        return d + dt.timedelta(7 * (n - 1))
    last = dt.date(y + (m == 12), m % 12 + 1, 1) - dt.timedelta(1)
    return last - dt.timedelta((last.weekday() - wd) % 7)


def easter(y):
    a, b, c = y % 19, y // 100, y % 100
    d, e = b // 4, b % 4
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    l = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l) // 451
    return dt.date(y, (h + l - 7 * m + 114) // 31, ((h + l - 7 * m + 114) % 31) + 1)


def utc_offset(tz, day):
    """UTC offset in hours at local noon of `day`."""
    region, base, dst = TZ_REGION[tz]
    y = day.year
    if dst == "EU" and nth_weekday(y, 3, 6, -1) <= day < nth_weekday(y, 10, 6, -1):
        return base + 1
    if dst == "US" and nth_weekday(y, 3, 6, 2) <= day < nth_weekday(y, 11, 6, 1):
        return base + 1
    return base


VARIABLE = {  # lunar / Hindu calendar holidays, by region
    "SG": ["2023-01-22", "2023-01-23", "2024-02-10", "2024-02-11", "2025-01-29", "2025-01-30",
           "2026-02-17", "2026-02-18", "2023-11-12", "2024-10-31", "2025-10-20", "2026-11-08"],
    "IN": ["2023-03-08", "2024-03-25", "2025-03-14", "2026-03-04", "2023-11-12", "2024-10-31",
           "2025-10-20", "2026-11-08"],
}


def holidays(region, years):
    """date -> activity factor (0.06 public holiday, 0.4 half day / bridge day)."""
    out = {}

    def add(d, f=0.06, observe=None):
        if observe and d.weekday() >= 5:
            d = d + dt.timedelta(7 - d.weekday()) if observe == "monday" or d.weekday() == 6 \
                else d - dt.timedelta(1)
        out[d] = min(out.get(d, 1.0), f)

    for y in years:
        e = easter(y)
        if region == "US":
            add(dt.date(y, 1, 1), observe="us")
            add(nth_weekday(y, 1, 0, 3)); add(nth_weekday(y, 2, 0, 3)); add(nth_weekday(y, 5, 0, -1))
            add(dt.date(y, 6, 19), observe="us"); add(dt.date(y, 7, 4), observe="us")
            add(nth_weekday(y, 9, 0, 1))
            tg = nth_weekday(y, 11, 3, 4)
            add(tg); add(tg + dt.timedelta(1), 0.3)
            add(dt.date(y, 12, 24), 0.4); add(dt.date(y, 12, 25), observe="us"); add(dt.date(y, 12, 31), 0.5)
        elif region == "UK":
            add(dt.date(y, 1, 1), observe="monday")
            add(e - dt.timedelta(2)); add(e + dt.timedelta(1))
            add(nth_weekday(y, 5, 0, 1)); add(nth_weekday(y, 5, 0, -1)); add(nth_weekday(y, 8, 0, -1))
            add(dt.date(y, 12, 24), 0.4); add(dt.date(y, 12, 25), observe="monday")
            d26 = dt.date(y, 12, 26)
            add(d26 + dt.timedelta(2) if d26.weekday() >= 5 else d26)
            add(dt.date(y, 12, 31), 0.5)
        elif region == "DE":
            for d in (dt.date(y, 1, 1), e - dt.timedelta(2), e + dt.timedelta(1), dt.date(y, 5, 1),
                      e + dt.timedelta(39), e + dt.timedelta(50), dt.date(y, 10, 3), dt.date(y, 12, 25),
                      dt.date(y, 12, 26)):
                add(d)
            add(dt.date(y, 12, 24), 0.3); add(dt.date(y, 12, 31), 0.3)
        elif region == "IN":
            for d in (dt.date(y, 1, 26), dt.date(y, 8, 15), dt.date(y, 10, 2), dt.date(y, 12, 25)):
                add(d)
        elif region == "SG":
            for d in (dt.date(y, 1, 1), e - dt.timedelta(2), dt.date(y, 5, 1), dt.date(y, 8, 9),
                      dt.date(y, 12, 25)):
                add(d, observe="monday")
    for s in VARIABLE.get(region, []):
        d = dt.date.fromisoformat(s)
        if d.year in years:
            add(d)
    return out


class Ctx:
    def __init__(self, seed, days, end):
        self.seed, self.D = seed, days
        self.end = end
        self.start = end - dt.timedelta(days - 1)
        self.dates = [self.start + dt.timedelta(i) for i in range(days)]
        self.wd = np.array([d.weekday() for d in self.dates])
        self.month = np.array([d.month for d in self.dates])
        self.dom = np.array([d.day for d in self.dates])
        self.H = days * 24
        self.T = days * DAY
        years = range(self.start.year - 1, end.year + 2)
        self.hol = {r: holidays(r, years) for r in ("US", "UK", "DE", "IN", "SG")}
        self._off = {tz: np.array([utc_offset(tz, d) for d in self.dates]) for tz in TZ_REGION}
        self.act = {r: self._activity(r) for r in self.hol}
        self.bizday = {r: self._bizdays(r) for r in self.hol}

    def off(self, tz):
        return self._off[tz]

    def region(self, tz):
        return TZ_REGION[tz][0]

    def _activity(self, region):
        """Share of a team that works on each day (weekends, holidays, December lull, EU summer)."""
        f = np.where(self.wd < 5, 1.0, np.where(self.wd == 5, 0.05, 0.03))
        idx = {d: i for i, d in enumerate(self.dates)}
        for d, v in self.hol[region].items():
            if d in idx:
                f[idx[d]] = min(f[idx[d]], v)
        md = self.month * 100 + self.dom
        lull = np.ones(self.D)
        lull[(md >= 1218) & (md <= 1223)] = 0.8
        lull[(md >= 1224) | (md <= 101)] = 0.4
        lull[(md >= 102) & (md <= 105)] = 0.8
        if region in ("UK", "DE"):
            lull[(md >= 715) & (md <= 825)] *= 0.85
        elif region == "US":
            lull[(md >= 701) & (md <= 831)] *= 0.93
        return f * lull

    def _bizdays(self, region):
        hol = self.hol[region]
        return np.array([d.weekday() < 5 and hol.get(d, 1.0) > 0.5 for d in self.dates])

    def utc(self, d, local_sec, tz):
        """Seconds since series start of local time `local_sec` on local day index `d`."""
        d = np.asarray(d)
        return d * DAY + local_sec - self._off[tz][np.clip(d, 0, self.D - 1)] * HOUR

    def close_windows(self, region, pre=1):
        """Financial close windows: the last business day of a month and the first k business days of
        the next (k = 2 monthly, 4 after a quarter, 6 after the year). Returns [(kind, [day idx])]."""
        bd = self.bizday[region]
        out = []
        for i in range(1, self.D):
            if self.month[i] != self.month[i - 1]:
                k = 6 if self.month[i] == 1 else (4 if self.month[i] in (4, 7, 10) else 2)
                before = [j for j in range(i - 1, max(-1, i - 8), -1) if bd[j]][:pre]
                after = [j for j in range(i, min(self.D, i + 15)) if bd[j]][:k]
                if after and len(after) == k:
                    kind = "year" if k == 6 else ("quarter" if k == 4 else "month")
                    out.append((kind, sorted(before) + after))
        return out


# ----------------------------------------------------------------------------------------------------
# warehouses and queries

class WH:
    def __init__(self, **kw):
        self.__dict__.update(kw)
        self.size_events = []     # (layer, h0, h1, delta steps)
        self.A_events = []        # (layer, h0, auto_suspend seconds)
        self.forced = []          # (layer, t0, t1) running regardless of queries
        self.effects = []         # label effects
        self.parts = []
        self.nsrc = 0
        self.blocked = set()      # days where no new incident may start
        self.incidents = []

    def src(self):
        self.nsrc += 1
        return self.nsrc

    def add(self, t, work, alpha=0.8, ovh=0.1, cs=0.0, cache=False, add=0, rm=99, src=0, grp=-1):
        t = np.asarray(t, dtype=float).ravel()
        n = t.size
        if n == 0:
            return

        def b(x, dtype):
            return np.broadcast_to(np.asarray(x, dtype=dtype), (n,)).copy()
        f4 = np.float32
        self.parts.append(dict(t=t, work=b(work, f4), alpha=b(alpha, f4), ovh=b(ovh, f4), cs=b(cs, f4),
                               cache=b(cache, bool), add=b(add, np.int8), rm=b(rm, np.int8),
                               src=b(src, np.int16), grp=b(grp, np.int32)))

    def build(self, ctx):
        parts = self.parts
        if getattr(self, "Q", None) is not None:
            parts = [self.Q] + parts
        if not parts:
            self.Q = {k: np.zeros(0) for k in ("t", "work", "alpha", "ovh", "cs")}
            self.Q.update(cache=np.zeros(0, bool), add=np.zeros(0, np.int8), rm=np.zeros(0, np.int8),
                          src=np.zeros(0, np.int16), grp=np.zeros(0, np.int32))
        else:
            t = np.concatenate([p["t"] for p in parts])
            lo, hi = self.c0 * DAY, min(self.c1 * DAY, ctx.T)
            keep = np.flatnonzero((t >= lo) & (t < hi))
            keep = keep[np.argsort(t[keep], kind="stable")]      # time order, once
            keys = list(parts[0])
            self.Q = None
            Q = {}
            for k in keys:
                Q[k] = np.concatenate([p[k] for p in parts])[keep]
                for p in parts:
                    p[k] = None
            self.Q = Q
        self.parts = []

    def layers(self):
        ls = {0}
        Q = self.Q
        ls.update(np.unique(Q["add"]).tolist())
        ls.update(np.unique(Q["rm"][Q["rm"] < 90]).tolist())
        ls.update(e[0] for e in self.size_events)
        ls.update(e[0] for e in self.A_events)
        ls.update(e[0] for e in self.forced)
        return sorted(ls)

    def size_idx(self, world, H):
        idx = np.full(H, self.size0, dtype=int)
        for layer, h0, h1, delta in sorted(self.size_events):
            if layer <= world:
                idx[h0:h1] += delta
        return np.clip(idx, 0, 5)

    def size_at(self, world, h, H):
        return int(self.size_idx(world, H)[min(max(h, 0), H - 1)])

    def A_h(self, world, H):
        a = np.full(H, np.inf if self.A0 is None else float(self.A0))
        for layer, h0, A in sorted(self.A_events):
            if layer <= world:
                a[h0:] = A
        return a


def union(s, e):
    """Union of intervals [s, e) with s sorted: merged starts and ends."""
    if s.size == 0:
        return s, e
    ce = np.maximum.accumulate(e)
    brk = np.flatnonzero(s[1:] > ce[:-1]) + 1
    st = np.concatenate(([0], brk))
    en = np.concatenate((brk - 1, [s.size - 1]))
    return s[st], ce[en]


def hourly_seconds(starts, ends, weights, H):
    """Cluster-seconds per hour of a set of (possibly overlapping) weighted running intervals."""
    if starts.size == 0:
        return np.zeros(H)
    t = np.concatenate((starts, ends))
    w = np.concatenate((weights, -weights))
    o = np.argsort(t, kind="stable")
    t, w = t[o], w[o]
    lvl = np.cumsum(w)
    F = np.zeros(t.size)
    F[1:] = np.cumsum(lvl[:-1] * np.diff(t))
    Fe = np.interp(np.arange(H + 1) * HOUR, t, F)
    return np.round(np.diff(Fe), 3)


def simulate(ctx, wh, world):
    """Hourly compute and cloud-services credits of `wh` in `world`."""
    H = ctx.H
    Q = wh.Q
    sel = (Q["add"] <= world) & (Q["rm"] > world)
    t = Q["t"][sel]
    hr = np.minimum((t // HOUR).astype(np.int64), H - 1)
    cs_h = np.bincount(hr, weights=Q["cs"][sel], minlength=H)
    m = np.flatnonzero(sel & ~Q["cache"])          # already in time order
    s, hs = Q["t"][m], np.minimum((Q["t"][m] // HOUR).astype(np.int64), H - 1)
    work, alpha, ovh = Q["work"][m], Q["alpha"][m], Q["ovh"][m]
    sidx = wh.size_idx(world, H)
    rate_h = SIZE_CREDITS[sidx]
    f = rate_h[hs]
    dur = np.minimum(ovh + work / f ** alpha, wh.timeout)
    e = s + dur
    lo, hi = wh.c0 * DAY, min(wh.c1 * DAY, ctx.T)
    A_h = wh.A_h(world, H)
    a = A_h[np.minimum((e // HOUR).astype(np.int64), H - 1)]
    seg_s, seg_e = union(s, e + a)
    forced = [(t0, t1) for layer, t0, t1 in wh.forced if layer <= world]
    if wh.A0 is None:
        forced.append((lo, hi))
    if forced:
        fs = np.array([x[0] for x in forced])
        fe = np.array([x[1] for x in forced])
        allst = np.concatenate((seg_s, fs))
        allen = np.concatenate((seg_e, fe))
        o2 = np.argsort(allst, kind="stable")
        seg_s, seg_e = union(allst[o2], allen[o2])
    seg_e = np.maximum(seg_e, seg_s + 60.0)          # 60 s minimum per resume
    seg_s, seg_e = np.clip(seg_s, lo, hi), np.clip(seg_e, lo, hi)
    keep = seg_e > seg_s
    starts, ends = [seg_s[keep]], [seg_e[keep]]
    weights = [np.full(int(keep.sum()), float(wh.minc))]
    if wh.maxc > wh.minc and s.size:
        # concurrency level: merge the sorted starts with the sorted ends (two runs: cheap stable sort)
        tt = np.concatenate((s, np.sort(e)))
        o3 = np.argsort(tt, kind="stable")
        tt = tt[o3]
        lvl = np.cumsum(np.where(o3 < s.size, np.int32(1), np.int32(-1)), dtype=np.int32)
        del o3
        for k in range(wh.minc + 1, wh.maxc + 1):
            mk = lvl > wh.C * (k - 1)                 # cluster k is needed
            if not mk.any():
                break
            dm = np.diff(mk.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
            st = tt[np.flatnonzero(dm[:-1] == 1)]
            en = tt[np.minimum(np.flatnonzero(dm == -1), tt.size - 1)]
            st, en = union(st, en + wh.cooldown)
            en = np.maximum(en, st + 60.0)
            st, en = np.clip(st, lo, hi), np.clip(en, lo, hi)
            starts.append(st)
            ends.append(en)
            weights.append(np.ones(st.size))
    secs = hourly_seconds(np.concatenate(starts), np.concatenate(ends), np.concatenate(weights), H)
    comp = secs * rate_h / HOUR
    return comp, cs_h


# ----------------------------------------------------------------------------------------------------
# helpers for workload generation

def lognorm(rng, median, sigma, n):
    return median * np.exp(sigma * rng.standard_normal(n))


def ar1(rng, n, phi, sigma):
    x = np.zeros(n)
    eps = rng.standard_normal(n) * sigma
    for i in range(1, n):
        x[i] = phi * x[i - 1] + eps[i]
    return x


def growth(ctx, rate, c0=0, rng=None):
    """Multiplicative organic growth per day, with a mid-series change of pace."""
    d = np.arange(ctx.D) - c0
    if rng is None:
        return np.exp(rate * d / 365.0)
    knee = rng.integers(ctx.D // 4, 3 * ctx.D // 4)
    r2 = rate * rng.uniform(0.3, 1.7)
    g = np.where(np.arange(ctx.D) < knee, rate * d, rate * (knee - c0) + r2 * (np.arange(ctx.D) - knee))
    return np.exp(g / 365.0)


def seg_offsets(gaps, counts):
    """Cumulative sums of `gaps` restarting in each group (first of each group at 0)."""
    cs = np.cumsum(gaps)
    first = np.cumsum(counts) - counts
    return cs - np.repeat(cs[first], counts)


def cs_of(rng, fixed, work_nominal_s, f0, n):
    return fixed * np.exp(0.35 * rng.standard_normal(n)) + 0.012 * work_nominal_s * f0 / HOUR


def ramp(ctx, c0, c1, days_in=21, days_out=0):
    """Usage ramp of a warehouse created at c0 (pilot weeks) / tapering before decommissioning at c1."""
    d = np.arange(ctx.D)
    r = np.clip((d - c0 + 1) / days_in, 0.15, 1.0) if c0 > 0 else np.ones(ctx.D)
    if days_out and c1 < ctx.D:
        r = r * np.clip((c1 - d) / days_out, 0.25, 1.0)
    return r


def make_users(ctx, rng, n0, tzs, c0, c1, growth_yr, churn_yr, p_range=(0.5, 0.95), onboard=None):
    """A population of people: home time zone, join/leave day, working probability, heaviness."""
    users = []
    tz_names = [t for t, _ in tzs]
    tz_w = np.array([w for _, w in tzs], float)
    tz_w /= tz_w.sum()

    def new_user(join):
        leave = ctx.D + 1
        if churn_yr > 0:
            leave = join + int(rng.exponential(365.0 / churn_yr)) + 30
        users.append(dict(tz=tz_names[rng.choice(len(tz_names), p=tz_w)], join=join, leave=leave,
                          p=rng.uniform(*p_range), heavy=float(np.exp(0.55 * rng.standard_normal())),
                          add=0))
    for _ in range(n0):
        new_user(int(c0 - rng.integers(0, 400)) if c0 == 0 else int(c0 + rng.integers(0, 25)))
    # joiners: growth plus replacement of leavers, as a Poisson process over the series
    rate = n0 * (growth_yr + churn_yr) / 365.0
    d = c0
    while True:
        d += rng.exponential(1.0 / max(rate, 1e-6))
        if d >= min(c1, ctx.D):
            break
        new_user(int(d))
    if onboard is not None:
        od, k = onboard
        for _ in range(k):
            new_user(int(od + rng.integers(0, 10)))
            users[-1]["add"] = 1
            users[-1]["leave"] = ctx.D + 1
    return users


def vacation_mask(ctx, rng, region):
    """Days a person is on vacation: a summer block, a winter block, one random block a year."""
    m = np.zeros(ctx.D, bool)
    for y in range(ctx.start.year, ctx.end.year + 1):
        blocks = []
        if region in ("UK", "DE"):
            blocks.append((dt.date(y, 7, 1) + dt.timedelta(int(rng.integers(0, 50))), int(rng.integers(9, 20))))
        elif region == "US":
            blocks.append((dt.date(y, 6, 1) + dt.timedelta(int(rng.integers(0, 85))), int(rng.integers(4, 10))))
        else:
            blocks.append((dt.date(y, 4, 1) + dt.timedelta(int(rng.integers(0, 150))), int(rng.integers(5, 12))))
        if rng.random() < 0.7:
            blocks.append((dt.date(y, 12, 18) + dt.timedelta(int(rng.integers(0, 10))), int(rng.integers(4, 13))))
        blocks.append((dt.date(y, 1, 8) + dt.timedelta(int(rng.integers(0, 320))), int(rng.integers(3, 9))))
        for b0, n in blocks:
            i0 = (b0 - ctx.start).days
            m[max(0, i0):max(0, min(ctx.D, i0 + n))] = True
    return m


def active_pairs(ctx, rng, users, weekend_p=0.04, day_mult=None):
    """(user index, local day) for every day a user works on the warehouse."""
    U = len(users)
    act = np.zeros((U, ctx.D), bool)
    d = np.arange(ctx.D)
    for i, u in enumerate(users):
        reg = ctx.region(u["tz"])
        p = ctx.act[reg].copy()
        p = np.where(ctx.wd >= 5, np.minimum(p, weekend_p * 1.0), p)
        p *= u["p"] * (d >= u["join"]) * (d < u["leave"]) * ~vacation_mask(ctx, rng, reg)
        if day_mult is not None:
            p = p * day_mult
        act[i] = rng.random(ctx.D) < np.clip(p, 0, 1)
    ui, di = np.nonzero(act)
    return ui, di


def gen_sessions(ctx, rng, wh, users, ui, di, P, f0, src, add_of_user=None, extra_add=None):
    """Interactive sessions -> interactions -> queries (dashboard tiles fire together)."""
    if ui.size == 0:
        return
    heavy = np.array([u["heavy"] for u in users])
    nsess = 1 + rng.poisson(max(P["sess"] - 1, 0.0) * np.sqrt(heavy[ui]))
    su, sd = np.repeat(ui, nsess), np.repeat(di, nsess)
    S = su.size
    comp = rng.choice(3, size=S, p=P["mix"])
    hrs = np.clip(rng.normal(np.array([9.6, 14.2, 20.0])[comp], np.array([1.1, 1.5, 1.6])[comp]), 6.5, 23.5)
    tz_of = np.array([users[i]["tz"] for i in range(len(users))])
    t_sess = np.zeros(S)
    for tz in np.unique(tz_of[su]):
        k = tz_of[su] == tz
        t_sess[k] = ctx.utc(sd[k], hrs[k] * HOUR, tz)
    daymult = P.get("daymult")
    im = P["inter"] * heavy[su] * (daymult[sd] if daymult is not None else 1.0)
    nint = 1 + rng.poisson(np.maximum(im - 1, 0))
    I = int(nint.sum())
    gaps = rng.exponential(P["think"], I)
    t_int = np.repeat(t_sess, nint) + seg_offsets(gaps, nint)
    iu, idd = np.repeat(su, nint), np.repeat(sd, nint)
    ntile = 1 + rng.poisson(max(P["tiles"] - 1, 0.0), I)
    N = int(ntile.sum())
    tq = np.repeat(t_int, ntile) + rng.uniform(0, 2.0, N)
    qu, qd = np.repeat(iu, ntile), np.repeat(idd, ntile)
    gdata = P["gdata"][qd] if "gdata" in P else 1.0
    dur = np.minimum(lognorm(rng, P["dur"], P["sigma"], N) * heavy[qu] ** 0.5 * gdata, P["cap"])
    cache = rng.random(N) < P["cache"]
    add = np.zeros(N, np.int8)
    if add_of_user is not None:
        add = add_of_user[qu]
    if extra_add is not None:
        add = np.maximum(add, extra_add[qd])
    wh.add(tq, dur * f0 ** P["alpha"], alpha=P["alpha"], ovh=0.05, cs=cs_of(rng, P["csq"], dur, f0, N),
           cache=cache, add=add, src=src)


# ----------------------------------------------------------------------------------------------------
# archetypes

class Dag:
    """A nightly DAG (dbt-like): tasks start when all their parents have finished."""

    def __init__(self, rng, n, med_s, full_frac):
        self.n = n
        self.preds = []
        roots = max(1, n // 6)
        for i in range(n):
            if i < roots:
                self.preds.append([])
            else:
                k = min(i, 1 + rng.poisson(0.8))
                lo = max(0, i - 12)
                self.preds.append(sorted(set(rng.integers(lo, i, k).tolist())))
        self.base = lognorm(rng, med_s, 0.9, n)
        self.beta = rng.uniform(0.3, 1.0, n)          # elasticity to the day's data volume
        self.full = np.where(rng.random(n) < full_frac, rng.uniform(3, 9, n), 1.0)
        self.sig = rng.uniform(0.08, 0.25, n)
        self.gap = rng.uniform(2, 25, n)               # orchestrator latency between tasks

    def descendants(self, k):
        out = {k}
        for i in range(k + 1, self.n):
            if any(p in out for p in self.preds[i]):
                out.add(i)
        return out

    def durations(self, rng, vol, full_day):
        D = vol.size
        z = rng.standard_normal((D, self.n)) * self.sig
        slow = np.where(rng.random((D, self.n)) < 0.01, rng.uniform(1.5, 3.0, (D, self.n)), 1.0)
        dur = self.base * vol[:, None] ** self.beta * np.exp(z) * slow
        dur = np.where(full_day[:, None], dur * self.full, dur)
        return dur

    def schedule(self, root, dur, skip):
        D = root.size
        st = np.zeros((D, self.n))
        en = np.zeros((D, self.n))
        for i in range(self.n):
            s0 = root if not self.preds[i] else np.max(en[:, self.preds[i]], axis=1)
            st[:, i] = s0 + self.gap[i]
            en[:, i] = st[:, i] + np.where(skip[:, i], 0.0, dur[:, i])
        return st, en


def gen_loader(ctx, rng, wh):
    f0 = SIZE_CREDITS[wh.size0]
    src = wh.src()
    wh.main_src = src
    g = growth(ctx, rng.uniform(0.05, 0.5), wh.c0, rng) * wh.ramp
    tz = wh.source_tz
    hrs = np.arange(ctx.H)
    day = hrs // 24
    off = ctx.off(tz)[day]
    lh = (hrs % 24 + off) % 24
    amp = rng.uniform(0.3, 0.85)
    diurnal = (1 - amp) + amp * np.exp(-0.5 * ((lh - 13.5) / 4.0) ** 2) / 1.0
    wkend = rng.uniform(0.35, 1.1)
    reg = ctx.region(tz)
    wf = np.where(ctx.wd >= 5, wkend, 1.0) * np.where(ctx.act[reg] < 0.5, np.maximum(0.5, wkend), 1.0)
    vol_h = diurnal * (g * wf * np.exp(ar1(rng, ctx.D, 0.7, 0.08)))[day] * np.exp(0.25 * rng.standard_normal(ctx.H))
    wh.vol_h = vol_h
    if wh.mode == "schedule":
        per = wh.period
        t = np.arange(0, ctx.T, per) + rng.uniform(0, 8, int(np.ceil(ctx.T / per)))[: int(np.ceil(ctx.T / per))]
        h = np.minimum((t // HOUR).astype(int), ctx.H - 1)
        dur = wh.copy_ovh + wh.copy_med * vol_h[h] * np.exp(0.3 * rng.standard_normal(t.size))
    else:
        lam = wh.arr_rate * vol_h
        cnt = rng.poisson(lam)
        t = np.repeat(hrs * HOUR, cnt) + rng.random(int(cnt.sum())) * HOUR
        dur = wh.copy_ovh + lognorm(rng, wh.copy_med, 0.7, t.size)
    dur = np.minimum(dur, 3 * HOUR)
    wh.add(t, dur * f0 ** 0.7, alpha=0.7, ovh=0.3, cs=cs_of(rng, wh.csq, dur, f0, t.size), src=src)


def gen_elt(ctx, rng, wh, upstream=None):
    f0 = SIZE_CREDITS[wh.size0]
    D = ctx.D
    dag = Dag(rng, wh.ntasks, wh.task_med, rng.uniform(0.05, 0.25))
    wh.dag = dag
    src = wh.src()
    wh.dag_src = src
    reg = ctx.region(wh.tz)
    wkend = rng.uniform(0.4, 1.2)
    prev = np.roll(np.arange(D), 1)
    biz = np.where(ctx.wd[prev] >= 5, wkend, 1.0) * np.where(ctx.act[reg][prev] < 0.5, 0.7, 1.0)
    vol = growth(ctx, rng.uniform(0.05, 0.45), wh.c0, rng) * biz * np.exp(ar1(rng, D, 0.6, 0.07)) * wh.ramp
    full_day = ctx.wd == wh.full_wd
    dur = dag.durations(rng, vol, full_day)
    if upstream is not None:
        root = upstream.dag_end + rng.uniform(30, 300, D)
    else:
        delay = rng.exponential(180, D) + np.where(rng.random(D) < 0.04, rng.uniform(1800, 3 * 3600, D), 0)
        root = ctx.utc(np.arange(D), wh.sched_h * HOUR, wh.tz) + delay
    skip = np.zeros((D, dag.n), bool)
    st, en = dag.schedule(root, dur, skip)
    wh.dag_root, wh.dag_dur, wh.dag_st = root, dur, st
    wh.dag_end = en.max(axis=1)
    days = np.repeat(np.arange(D), dag.n)
    wh.add(st.ravel(), (dur * f0 ** 0.85).ravel(), alpha=0.85, ovh=0.5,
           cs=cs_of(rng, wh.csq, dur.ravel(), f0, dur.size), src=src, grp=days)
    # intraday incremental runs
    if wh.intraday:
        src2 = wh.src()
        every = wh.intraday
        days = np.flatnonzero(ctx.wd < 5) if wh.intraday_weekdays else np.arange(D)
        hh = np.arange(6, 21, every) * HOUR
        runs = ctx.utc(np.repeat(days, hh.size), np.tile(hh, days.size), wh.tz)
        runs = runs + rng.uniform(0, 120, runs.size)
        k = wh.intraday_tasks
        rd = np.minimum((runs // DAY).astype(int), D - 1)
        dd = lognorm(rng, wh.task_med * 0.25, 0.5, runs.size * k).reshape(-1, k) * vol[rd][:, None] ** 0.5
        starts = runs[:, None] + np.concatenate([np.zeros((runs.size, 1)), np.cumsum(dd[:, :-1] + 5, axis=1)], 1)
        wh.add(starts.ravel(), (dd * f0 ** 0.85).ravel(), alpha=0.85, ovh=0.5,
               cs=cs_of(rng, wh.csq, dd.ravel(), f0, dd.size), src=src2)
    last_end = wh.dag_end.copy()       # work added after the DAG is serialised after it
    # announced onboarding of a new pipeline set (expected): more tasks after the DAG from day od
    if wh.onboard is not None:
        od = wh.onboard
        src4 = wh.src()
        n = int(rng.integers(4, 12))
        share = rng.uniform(0.35, 0.9)
        base = lognorm(rng, 1.0, 0.6, n)
        base = base / base.sum() * share * np.median(dur.sum(axis=1))
        for d in range(od, D):
            w = base * vol[d] ** 0.6 * np.exp(0.15 * rng.standard_normal(n))
            tt = wh.dag_end[d] + 60 + np.concatenate(([0], np.cumsum(w[:-1] + 15)))
            wh.add(tt, w * f0 ** 0.85, alpha=0.85, ovh=0.5, cs=cs_of(rng, wh.csq, w, f0, n), add=1, src=src4)
            last_end[d] = tt[-1] + w[-1]
        wh.onboard_windows.append(("onboard", od, od + 14))
    # month-end / quarter-end close models (expected)
    if wh.close:
        src3 = wh.src()
        tot = np.median(dur.sum(axis=1))
        for kind, days_ in ctx.close_windows(reg, pre=0):
            mult = {"month": 1.0, "quarter": 1.8, "year": 2.6}[kind]
            for j, d in enumerate(days_[:2 if kind == "month" else 3]):
                n = int(rng.integers(3, 8))
                work = lognorm(rng, wh.close_frac * tot * mult / n, 0.4, n)
                t0 = last_end[d] + rng.uniform(60, 600)
                tt = t0 + np.concatenate(([0], np.cumsum(work[:-1] + 20)))
                wh.add(tt, work * f0 ** 0.85, alpha=0.85, ovh=0.5, cs=cs_of(rng, wh.csq, work, f0, n),
                       add=L_CLOSE, src=src3)
            wh.expect_windows.append(("close", days_[0], days_[0] + 4))


def gen_bi(ctx, rng, wh):
    f0 = SIZE_CREDITS[wh.size0]
    onboard = None
    if wh.onboard is not None:
        onboard = (wh.onboard, max(4, int(wh.nusers * rng.uniform(0.35, 0.8))))
        wh.onboard_windows.append(("onboard", wh.onboard, wh.onboard + 14))
    users = make_users(ctx, rng, wh.nusers, wh.user_tzs, wh.c0, wh.c1, rng.uniform(-0.1, 0.4),
                       rng.uniform(0.08, 0.25), onboard=onboard)
    ui, di = active_pairs(ctx, rng, users, weekend_p=0.03, day_mult=wh.ramp)
    gdata = growth(ctx, rng.uniform(0.05, 0.35), 0) ** 0.5
    daymult = np.exp(0.15 * rng.standard_normal(ctx.D))
    P = dict(sess=rng.uniform(1.3, 2.6), mix=[0.5, 0.42, 0.08], inter=rng.uniform(4, 12), think=rng.uniform(25, 90),
             tiles=rng.uniform(3, 9), dur=wh.qmed, sigma=rng.uniform(0.9, 1.3), cap=1200.0, alpha=0.7,
             cache=rng.uniform(0.15, 0.45), csq=rng.uniform(1e-4, 3e-4), gdata=gdata, daymult=daymult)
    src = wh.src()
    wh.main_src = src
    add_u = np.array([u["add"] for u in users], np.int8)
    gen_sessions(ctx, rng, wh, users, ui, di, P, f0, src, add_of_user=add_u)
    # finance users at close (expected): heavier dashboards
    if wh.close:
        reg = ctx.region(wh.tz)
        mult = np.zeros(ctx.D)
        for kind, days_ in ctx.close_windows(reg):
            mult[days_] = {"month": 1.0, "quarter": 1.6, "year": 2.0}[kind]
            wh.expect_windows.append(("close", days_[0], days_[-1] + 2))
        fin = make_users(ctx, rng, int(rng.integers(5, 15)), [(wh.tz, 1.0)], wh.c0, wh.c1, 0.0, 0.0, (0.85, 1.0))
        fui, fdi = active_pairs(ctx, rng, fin, weekend_p=0.3, day_mult=np.minimum(mult, 1.0))
        P2 = dict(P, sess=2.5, inter=P["inter"] * 1.5, dur=wh.qmed * 3, cache=0.05,
                  daymult=np.maximum(mult, 1e-3))
        gen_sessions(ctx, rng, wh, fin, fui, fdi, P2, f0, wh.src(), extra_add=np.full(ctx.D, L_CLOSE, np.int8))
    # scheduled dashboard refreshes (run on holidays too: schedulers do not know them)
    if wh.refresh:
        per, h0, h1, nq, weekdays = wh.refresh
        days = np.flatnonzero(ctx.wd < 5) if weekdays else np.arange(ctx.D)
        mins = np.arange(h0 * 60, h1 * 60, per) * 60.0
        t = ctx.utc(np.repeat(days, mins.size), np.tile(mins, days.size), wh.tz)
        t = np.repeat(t, nq) + rng.uniform(0, 90, t.size * nq)
        dur = lognorm(rng, wh.qmed * 1.5, 0.8, t.size) * gdata[np.minimum((t // DAY).astype(int), ctx.D - 1)]
        wh.add(t, dur * f0 ** 0.7, alpha=0.7, ovh=0.05, cs=cs_of(rng, P["csq"], dur, f0, t.size),
               cache=rng.random(t.size) < 0.1, src=wh.src())
    if wh.extract:
        h, nq = wh.extract
        d = np.arange(ctx.D)
        t0 = ctx.utc(d, h * HOUR, wh.tz)
        t = np.repeat(t0, nq) + np.tile(np.arange(nq) * 45.0, ctx.D) + rng.uniform(0, 30, ctx.D * nq)
        dur = lognorm(rng, wh.qmed * 12, 0.9, t.size) * gdata[np.repeat(d, nq)]
        wh.add(t, dur * f0 ** 0.8, alpha=0.8, ovh=0.1, cs=cs_of(rng, P["csq"], dur, f0, t.size), src=wh.src())


def gen_adhoc(ctx, rng, wh):
    f0 = SIZE_CREDITS[wh.size0]
    users = make_users(ctx, rng, wh.nusers, wh.user_tzs, wh.c0, wh.c1, rng.uniform(-0.1, 0.5),
                       rng.uniform(0.1, 0.35), p_range=wh.p_range)
    ui, di = active_pairs(ctx, rng, users, weekend_p=0.05, day_mult=wh.ramp)
    gdata = growth(ctx, rng.uniform(0.05, 0.3), 0) ** 0.5
    P = dict(sess=rng.uniform(1.0, 1.8), mix=[0.45, 0.45, 0.10], inter=rng.uniform(8, 40),
             think=rng.uniform(60, 300), tiles=1.2, dur=wh.qmed, sigma=rng.uniform(1.2, 1.7),
             cap=wh.qcap, alpha=0.85, cache=0.05, csq=rng.uniform(2e-4, 6e-4), gdata=gdata)
    src = wh.src()
    wh.main_src = src
    gen_sessions(ctx, rng, wh, users, ui, di, P, f0, src)
    if wh.ci:          # dev warehouse: CI test suites on working days
        t, n = [], []
        for d in range(ctx.D):
            if ctx.act[ctx.region(wh.tz)][d] < 0.5:
                continue
            k = rng.poisson(wh.ci * wh.ramp[d])
            for _ in range(k):
                t.append(ctx.utc(d, rng.uniform(8.5, 19) * HOUR, wh.tz))
                n.append(int(rng.integers(40, 250)))
        if t:
            n = np.array(n)
            tq = np.repeat(np.array(t), n) + seg_offsets(rng.exponential(3.0, n.sum()), n)
            dur = lognorm(rng, 0.6, 1.0, tq.size)
            wh.add(tq, dur * f0 ** 0.5, alpha=0.5, ovh=0.05, cs=cs_of(rng, 2e-4, dur, f0, tq.size), src=wh.src())


def gen_app(ctx, rng, wh):
    f0 = SIZE_CREDITS[wh.size0]
    H = ctx.H
    hrs = np.arange(H)
    day = hrs // 24
    prof = np.zeros(H)
    for tz, w in wh.cust_tzs:
        off = ctx.off(tz)[day]
        lt = hrs % 24 + off
        ld = np.clip(day + np.floor(lt / 24).astype(int), 0, ctx.D - 1)
        lh = lt % 24
        diurnal = 0.12 + 0.88 * np.exp(-0.5 * ((lh - 13.0) / 3.6) ** 2) + 0.25 * np.exp(-0.5 * ((lh - 20.5) / 1.5) ** 2)
        wk = np.where(ctx.wd[ld] >= 5, wh.weekend, 1.0)
        reg = ctx.region(tz)
        hol = np.where((ctx.act[reg][ld] < 0.5) & (ctx.wd[ld] < 5), 0.7, 1.0)
        prof += w * diurnal * wk * hol
    prof /= np.percentile(prof, 99)
    g = growth(ctx, rng.uniform(0.1, 0.6), wh.c0, rng) * wh.ramp
    lam = wh.peak * prof * (g * np.exp(ar1(rng, ctx.D, 0.5, 0.05)))[day] * np.exp(0.08 * rng.standard_normal(H))
    cnt = rng.poisson(lam)
    t = np.repeat(hrs * HOUR, cnt) + rng.random(int(cnt.sum())) * HOUR
    dur = np.minimum(lognorm(rng, wh.qmed, 1.05, t.size), 900)
    src = wh.src()
    wh.main_src = src
    wh.add(t, dur * f0 ** 0.75, alpha=0.75, ovh=0.05, cs=cs_of(rng, 6e-5, dur, f0, t.size),
           cache=rng.random(t.size) < 0.1, src=src)


def gen_finance(ctx, rng, wh):
    f0 = SIZE_CREDITS[wh.size0]
    reg = ctx.region(wh.tz)
    users = make_users(ctx, rng, wh.nusers, [(wh.tz, 1.0)], wh.c0, wh.c1, 0.05, 0.1, (0.3, 0.7))
    ui, di = active_pairs(ctx, rng, users, weekend_p=0.01)
    P = dict(sess=1.2, mix=[0.5, 0.45, 0.05], inter=rng.uniform(3, 8), think=120.0, tiles=2.0,
             dur=wh.qmed, sigma=1.1, cap=1800.0, alpha=0.8, cache=0.2, csq=3e-4)
    gen_sessions(ctx, rng, wh, users, ui, di, P, f0, wh.src())
    mult = np.zeros(ctx.D)
    wins = ctx.close_windows(reg)
    for kind, days_ in wins:
        mult[days_] = {"month": 1.0, "quarter": 1.5, "year": 2.2}[kind]
        wh.expect_windows.append(("close", days_[0], days_[-1] + 2))
    # close: the whole team in, heavier reconciliation queries, plus batch reconciliation jobs
    ui2, di2 = active_pairs(ctx, rng, [dict(u, p=0.95) for u in users], weekend_p=0.4,
                            day_mult=np.minimum(mult, 1.0))
    P2 = dict(P, sess=2.5, inter=P["inter"] * 2.0, dur=wh.qmed * 3, cache=0.05, daymult=np.maximum(mult, 1e-3))
    gen_sessions(ctx, rng, wh, users, ui2, di2, P2, f0, wh.src(), extra_add=np.full(ctx.D, L_CLOSE, np.int8))
    src = wh.src()
    for kind, days_ in wins:
        m = {"month": 1.0, "quarter": 1.6, "year": 2.5}[kind]
        for d in days_:
            n = int(rng.integers(6, 20))
            w = lognorm(rng, wh.batch_med * m, 0.7, n)
            tt = ctx.utc(d, rng.uniform(5.5, 7.0) * HOUR, wh.tz) + np.concatenate(([0], np.cumsum(w[:-1] + 10)))
            wh.add(tt, w * f0 ** 0.85, alpha=0.85, ovh=0.5, cs=cs_of(rng, 1e-3, w, f0, n), add=L_CLOSE, src=src)


def gen_ml(ctx, rng, wh):
    f0 = SIZE_CREDITS[wh.size0]
    D = ctx.D
    g = growth(ctx, rng.uniform(0.1, 0.5), wh.c0, rng) * wh.ramp
    src = wh.src()
    wh.main_src = src
    n = int(rng.integers(3, 7))
    base = lognorm(rng, wh.task_med, 0.6, n)
    d = np.arange(D)
    root = ctx.utc(d, wh.sched_h * HOUR, wh.tz) + rng.exponential(120, D)
    dur = base[None, :] * g[:, None] ** 0.7 * np.exp(0.15 * rng.standard_normal((D, n)))
    st = root[:, None] + np.concatenate([np.zeros((D, 1)), np.cumsum(dur[:, :-1] + 30, axis=1)], 1)
    wh.add(st.ravel(), (dur * f0 ** 0.85).ravel(), alpha=0.85, ovh=1.0, cs=cs_of(rng, 5e-4, dur.ravel(), f0, dur.size),
           src=src, grp=np.repeat(d, n))
    # weekly retraining (heavy, recurring, normal)
    src2 = wh.src()
    wd = wh.train_wd
    for day in np.flatnonzero(ctx.wd == wd):
        k = int(rng.integers(4, 10))
        w = lognorm(rng, wh.train_h * HOUR / k, 0.3, k) * g[day] ** 0.8
        tt = ctx.utc(day, 1.5 * HOUR, wh.tz) + np.concatenate(([0], np.cumsum(w[:-1] + 30)))
        wh.add(tt, w * f0 ** 0.9, alpha=0.9, ovh=1.0, cs=cs_of(rng, 1e-3, w, f0, k), src=src2)


# ----------------------------------------------------------------------------------------------------
# the world: accounts and warehouses

ORGS = ["NORTHWIND", "ACMECO", "GLOBEX", "INITECH", "UMBRELLA", "STARK", "WAYNE", "TYRELL", "HOOLI", "VANDELAY"]
NAMES = {
    "loader": ["LOAD_WH", "INGEST_WH", "FIVETRAN_WH", "KAFKA_LOADER_WH", "COPY_WH", "AIRBYTE_WH", "CDC_WH",
               "EVENTS_LOAD_WH", "SFTP_LOAD_WH"],
    "elt": ["TRANSFORM_WH", "DBT_WH", "ELT_WH", "DBT_PROD_WH", "STAGING_WH", "MARTS_WH", "INTRADAY_ELT_WH",
            "FINANCE_ELT_WH", "MARKETING_DBT_WH"],
    "bi": ["BI_WH", "TABLEAU_WH", "LOOKER_WH", "POWERBI_WH", "REPORTING_WH", "SALES_BI_WH", "MARKETING_BI_WH",
           "EXEC_DASH_WH", "OPS_BI_WH"],
    "adhoc": ["ADHOC_WH", "ANALYST_WH", "SANDBOX_WH", "QA_WH", "RESEARCH_WH", "PRODUCT_ANALYTICS_WH"],
    "dev": ["DEV_WH", "CI_WH", "DBT_DEV_WH", "ENG_DEV_WH"],
    "ds": ["DS_WH", "NOTEBOOK_WH", "ML_DEV_WH", "DATA_SCIENCE_WH", "FEATURE_LAB_WH"],
    "app": ["APP_WH", "API_WH", "EMBEDDED_ANALYTICS_WH", "CUSTOMER_PORTAL_WH"],
    "finance": ["FINANCE_WH", "FPA_WH", "CLOSE_WH", "CONTROLLING_WH"],
    "ml": ["ML_BATCH_WH", "SCORING_WH", "FEATURE_STORE_WH", "RECS_BATCH_WH"],
}
SHARES = [("loader", 0.16), ("elt", 0.18), ("bi", 0.21), ("adhoc", 0.11), ("dev", 0.08), ("ds", 0.08),
          ("app", 0.05), ("finance", 0.06), ("ml", 0.06)]
EU_TZ = ["Europe/London", "Europe/Berlin"]
US_TZ = ["America/New_York", "America/Chicago", "America/Los_Angeles"]


def pick_size(rng, probs):
    return int(rng.choice(6, p=np.array(probs) / sum(probs)))


def make_world(ctx, rng, n):
    org = ORGS[rng.integers(len(ORGS))]
    n_acc = 3 if rng.random() < 0.55 else 2
    accounts = [(f"{org}_EU", "EU"), (f"{org}_US", "US"), (f"{org}_LABS", "LABS")][:n_acc]
    raw = np.array([s for _, s in SHARES]) * n
    cnt = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - cnt))[: n - cnt.sum()]:
        cnt[i] += 1
    used = {a: set() for a, _ in accounts}
    whs = []
    next_id = int(rng.integers(3, 40))

    def account_for(arch):
        labs = n_acc == 3
        if arch in ("adhoc", "dev", "ds") and labs and rng.random() < 0.6:
            return accounts[2]
        if arch == "ml" and labs and rng.random() < 0.5:
            return accounts[2]
        if arch == "app":
            return accounts[1] if rng.random() < 0.6 else accounts[0]
        return accounts[int(rng.random() < 0.5)]

    def name_for(acc, arch):
        pool = [x for x in NAMES[arch] if x not in used[acc]]
        nm = pool[rng.integers(len(pool))] if pool else f"{NAMES[arch][0][:-3]}_{len(used[acc])}_WH"
        used[acc].add(nm)
        return nm

    def team_tz(region):
        if region == "EU":
            return EU_TZ[rng.integers(2)]
        if region == "US":
            return US_TZ[rng.integers(3)] if rng.random() < 0.5 else "America/New_York"
        return ["Europe/London", "America/New_York", "Asia/Kolkata", "Europe/Berlin"][rng.integers(4)]

    for (arch, _), k in zip(SHARES, cnt):
        for _ in range(k):
            acc, region = account_for(arch)
            next_id += int(rng.integers(1, 9))
            tz = team_tz(region)
            w = WH(account=acc, region=region, name=name_for(acc, arch), wid=next_id, arch=arch, tz=tz,
                   c0=0, c1=ctx.D, minc=1, maxc=1, C=8, cooldown=float(rng.uniform(120, 180)),
                   timeout=DEFAULT_TIMEOUT, onboard=None, close=False, expect_windows=[], onboard_windows=[],
                   ramp=np.ones(ctx.D), upstream=None)
            configure(ctx, rng, w)
            whs.append(w)
    lifecycle(ctx, rng, whs, used, accounts)
    # chains: an ELT DAG that starts when another ELT DAG of the same account finishes
    elts = [w for w in whs if w.arch == "elt"]
    for a, _ in accounts:
        ae = [w for w in elts if w.account == a and w.c0 == 0 and w.c1 == ctx.D]
        if len(ae) >= 2 and rng.random() < 0.8:
            ae[1].upstream = ae[0]
            ae[1].tz = ae[0].tz
    # announced onboardings: 1-2 per seed on BI or ELT warehouses
    cands = [w for w in whs if w.arch in ("bi", "elt") and w.c0 == 0 and w.c1 == ctx.D]
    for w in rng.permutation(len(cands))[: min(len(cands), int(rng.integers(1, 3)) + (n >= 30))]:
        cands[w].onboard = int(rng.integers(int(ctx.D * 0.3), int(ctx.D * 0.85)))
    return whs


def configure(ctx, rng, w):
    a = w.arch
    r = rng.random
    if a == "loader":
        w.size0 = pick_size(rng, [6, 3, 1, 0, 0, 0])
        w.A0 = int(rng.choice([60, 60, 60, 120, 300]))
        w.mode = "schedule" if r() < 0.7 else "arrival"
        w.period = float(rng.choice([60, 120, 300, 300, 600, 900, 1800, 3600]))
        w.copy_med = float(min(600, w.period * rng.uniform(0.05, 0.45)))
        w.copy_ovh = float(rng.uniform(1, 5))
        w.arr_rate = float(rng.uniform(8, 80))
        if w.mode == "arrival":
            w.copy_med = float(rng.uniform(8, 60))
        w.csq = float(rng.uniform(3e-4, 1.2e-3))
        w.source_tz = (EU_TZ + US_TZ)[rng.integers(5)]
        w.inc_rate = rng.uniform(1.8, 3.0)
    elif a == "elt":
        w.size0 = pick_size(rng, [0, 1, 3.5, 3.5, 2, 0.3])
        w.A0 = int(rng.choice([60, 60, 120, 300, 600]))
        w.ntasks = int(rng.integers(12, 60))
        w.task_med = float(rng.uniform(60, 600))
        w.sched_h = float(rng.uniform(0.5, 5.0))
        w.full_wd = int(rng.choice([6, 6, 6, 5]))
        w.intraday = int(rng.choice([1, 2, 3])) if r() < 0.5 else 0
        w.intraday_weekdays = r() < 0.6
        w.intraday_tasks = int(rng.integers(2, 7))
        w.close = r() < 0.2
        w.close_frac = float(rng.uniform(0.1, 0.6))
        w.csq = float(rng.uniform(1e-3, 4e-3))
        if r() < 0.15:
            w.maxc = int(rng.integers(2, 4))
        w.inc_rate = rng.uniform(3.0, 5.0)
    elif a == "bi":
        w.size0 = pick_size(rng, [0, 2.5, 4.5, 2.5, 0.5, 0])
        w.A0 = int(rng.choice([60, 120, 300, 300, 600, 600]))
        big = r() < 0.4
        w.nusers = int(rng.integers(40, 150) if big else rng.integers(8, 45))
        if big or r() < 0.3:
            w.maxc = int(rng.integers(2, 5))
        w.qmed = float(rng.uniform(1.0, 4.0))
        if w.region == "EU":
            w.user_tzs = [(w.tz, 0.7), (EU_TZ[0] if w.tz != EU_TZ[0] else EU_TZ[1], 0.2),
                          ("Asia/Kolkata", 0.05), ("America/New_York", 0.05)]
        else:
            w.user_tzs = [("America/New_York", 0.45), ("America/Chicago", 0.25), ("America/Los_Angeles", 0.25),
                          ("Europe/London", 0.05)]
        w.refresh = None
        if r() < 0.6:
            w.refresh = (int(rng.choice([15, 30, 60])), 6, 20, int(rng.integers(3, 25)), r() < 0.6)
        w.extract = (float(rng.uniform(4.5, 7.0)), int(rng.integers(8, 50))) if r() < 0.5 else None
        w.close = r() < 0.15
        w.inc_rate = rng.uniform(2.5, 3.5)
    elif a in ("adhoc", "dev", "ds"):
        w.size0 = pick_size(rng, {"adhoc": [2, 3, 3, 1, 0, 0], "dev": [5, 3, 1, 0, 0, 0],
                                  "ds": [0, 1, 3, 3, 1, 0]}[a])
        w.A0 = int(rng.choice([60, 60, 300, 600, 600]))
        w.nusers = int(rng.integers(2, 14))
        w.p_range = {"adhoc": (0.1, 0.5), "dev": (0.15, 0.6), "ds": (0.05, 0.35)}[a]
        w.qmed = float({"adhoc": rng.uniform(3, 15), "dev": rng.uniform(1, 6), "ds": rng.uniform(8, 40)}[a])
        w.qcap = {"adhoc": 3600.0, "dev": 1800.0, "ds": 7200.0}[a]
        w.ci = float(rng.uniform(0.5, 4)) if a == "dev" and r() < 0.6 else 0.0
        if w.region == "LABS":
            w.user_tzs = [(w.tz, 0.6), ("Europe/London", 0.15), ("America/New_York", 0.15), ("Asia/Kolkata", 0.1)]
        else:
            w.user_tzs = [(w.tz, 0.85), ((EU_TZ if w.region == "EU" else US_TZ)[rng.integers(2)], 0.15)]
        if r() < 0.3:
            w.timeout = float(rng.choice([3600, 7200, 14400]))
        w.inc_rate = rng.uniform(2.0, 3.5)
    elif a == "app":
        w.size0 = pick_size(rng, [0, 1, 2, 2, 0.3, 0])
        w.A0 = None if r() < 0.5 else int(rng.choice([300, 600]))
        w.C = int(rng.choice([4, 4, 8]))
        w.maxc = int(rng.integers(3, 6))
        w.qmed = float(rng.uniform(10, 25))
        mean_d = w.qmed * np.exp(1.05 ** 2 / 2)
        w.peak = float(w.C * rng.uniform(0.6, 1.1) / mean_d * HOUR)
        w.weekend = float(rng.uniform(0.45, 0.8))
        us = [("America/New_York", 0.35), ("America/Chicago", 0.2), ("America/Los_Angeles", 0.2),
              ("Europe/London", 0.15), ("Europe/Berlin", 0.1)]
        eu = [("Europe/London", 0.3), ("Europe/Berlin", 0.35), ("America/New_York", 0.2), ("Asia/Singapore", 0.15)]
        w.cust_tzs = us if w.region == "US" else eu
        w.inc_rate = rng.uniform(2.5, 3.5)
    elif a == "finance":
        w.size0 = pick_size(rng, [0, 2, 2, 1, 0, 0])
        w.A0 = int(rng.choice([60, 300, 600]))
        w.nusers = int(rng.integers(4, 14))
        w.qmed = float(rng.uniform(3, 12))
        w.batch_med = float(rng.uniform(120, 900))
        w.inc_rate = rng.uniform(2.0, 3.0)
    elif a == "ml":
        w.size0 = pick_size(rng, [0, 0, 2, 3, 1.5, 0.3])
        w.A0 = int(rng.choice([60, 60, 300]))
        w.task_med = float(rng.uniform(120, 900))
        w.sched_h = float(rng.uniform(2, 6))
        w.train_wd = int(rng.choice([5, 6]))
        w.train_h = float(rng.uniform(1.0, 4.0))
        w.inc_rate = rng.uniform(2.5, 3.5)


def lifecycle(ctx, rng, whs, used, accounts):
    """A loader migration (new warehouse, parallel run, old one decommissioned), a warehouse created for a
    new team, and a project warehouse decommissioned."""
    D = ctx.D
    loaders = [w for w in whs if w.arch == "loader"]
    if len(loaders) >= 3 and D >= 200:
        old, new = loaders[0], loaders[1]
        x = int(rng.integers(int(D * 0.35), int(D * 0.8)))
        overlap = int(rng.integers(7, 21))
        for attr in ("mode", "period", "copy_med", "copy_ovh", "arr_rate", "source_tz", "csq", "account", "region"):
            setattr(new, attr, getattr(old, attr))
        used[new.account].discard(new.name)
        new.name = old.name.replace("_WH", "_V2_WH")
        used[new.account].add(new.name)
        new.size0 = min(5, old.size0 + int(rng.random() < 0.4))
        old.c1 = x
        new.c0 = x - overlap
        new.ramp = ramp(ctx, new.c0, D, days_in=3)
        old.ramp = ramp(ctx, 0, x, days_out=overlap)
    late = [w for w in whs if w.arch in ("bi", "ds", "adhoc", "ml") and w.c0 == 0 and w.c1 == D]
    if late and D >= 200:
        w = late[rng.integers(len(late))]
        w.c0 = int(rng.integers(60, int(D * 0.75)))
        w.ramp = ramp(ctx, w.c0, D, days_in=int(rng.integers(10, 40)))
    ends = [w for w in whs if w.arch in ("dev", "adhoc", "ds", "bi") and w.c0 == 0 and w.c1 == D]
    if ends and D >= 200:
        w = ends[rng.integers(len(ends))]
        w.c1 = int(rng.integers(int(D * 0.4), D - 30))
        w.ramp = ramp(ctx, 0, w.c1, days_out=int(rng.integers(10, 40)))


# ----------------------------------------------------------------------------------------------------
# incidents

def work_hour(ctx, rng, wh, d, lo=9.0, hi=17.5):
    return float(ctx.utc(d, rng.uniform(lo, hi) * HOUR, wh.tz))


def usual(daily, d, c0):
    lo = max(c0, d - 28)
    if d - lo >= 7:
        return float(daily[lo:d].mean())
    return float(daily[c0:c0 + 28].mean())


def notice_time(ctx, rng, wh, t0, max_h=72.0):
    """When a person notices: a working-day morning after t0 (sometimes the one after), <= max_h."""
    d = int(t0 // DAY)
    cands = []
    reg = ctx.region(wh.tz)
    for dd in range(d + 1, min(ctx.D, d + 5)):
        if ctx.bizday[reg][dd]:
            cands.append(ctx.utc(dd, rng.uniform(8.5, 11.5) * HOUR, wh.tz))
    if not cands:
        return t0 + max_h * HOUR * rng.uniform(0.4, 1.0)
    k = 0 if rng.random() < 0.6 or len(cands) == 1 else 1
    return float(min(cands[k], t0 + max_h * HOUR))


def incident_kinds(wh, util):
    a = wh.arch
    w = {"loader": dict(resize_temp=2, resize_perm=1, outage=3, backfill=2, retry_storm=1, runaway=1, finops=0.5),
         "elt": dict(dag_failure=3, retry_storm=2, cross_join=2, backfill=2, resize_temp=2, resize_perm=1,
                     runaway=1, scale_out=1, finops=0.5),
         "bi": dict(resize_perm=2, resize_temp=2, scale_out=3, runaway=2, cross_join=2, outage=1, retry_storm=1,
                    finops=0.5),
         "adhoc": dict(runaway=4, cross_join=3, backfill=2, resize_temp=2, resize_perm=1),
         "dev": dict(runaway=3, cross_join=2, retry_storm=2, resize_temp=2, resize_perm=1),
         "ds": dict(runaway=5, cross_join=3, backfill=2, resize_temp=2, resize_perm=1),
         "app": dict(scale_out=5, resize_temp=2, resize_perm=1, outage=1, finops=0.5),
         "finance": dict(cross_join=2, runaway=2, resize_temp=1, backfill=1, retry_storm=1),
         "ml": dict(backfill=3, runaway=2, retry_storm=2, resize_temp=1, resize_perm=1, outage=1)}[a]
    w = dict(w)
    if util > 0.75:                  # already running most hours: only more capacity can cost more
        for k in ("runaway", "cross_join", "backfill", "retry_storm"):
            w.pop(k, None)
    if wh.maxc <= wh.minc:
        w.pop("scale_out", None)
    if wh.size0 >= 5:
        w.pop("resize_perm", None); w.pop("resize_temp", None)
    if wh.A0 is None:
        w.pop("outage", None)
    if wh.size0 == 0 and (wh.A0 or 0) <= 120:
        w.pop("finops", None)
    return w


HUMAN = ("runaway", "resize_perm", "resize_temp", "cross_join", "backfill", "finops")


def resize_hour(ctx, rng, wh, d):
    """When a resize is made: just before the day's pipeline work for scheduled warehouses (often by
    the pipeline's own pre-hook), in the morning of the owner's working day for interactive ones."""
    hs = np.arange(d * 24, d * 24 + 24)
    act = hs[wh.base_comp[hs] > 0]
    if wh.arch in ("elt", "ml", "finance") and act.size:
        return int(max(d * 24, act[0] - rng.integers(0, 2)))
    h = int(work_hour(ctx, rng, wh, d, 7.5, 11.0) // HOUR)
    return int(min(max(h, d * 24), d * 24 + 23))


def plan_incidents(ctx, rng, wh, base_daily, util):
    D = ctx.D
    lo = max(35, wh.c0 + 28)
    hi = min(D - 1, wh.c1 - 3)
    if hi - lo < 20:
        return
    kinds = incident_kinds(wh, util)
    if not kinds:
        return
    n = rng.poisson(wh.inc_rate * (hi - lo) / 365.0)
    names = list(kinds)
    p = np.array([kinds[k] for k in names], float)
    p /= p.sum()
    perm_done = False
    taken = set(wh.blocked)
    for _ in range(n):
        kind = names[rng.choice(len(names), p=p)]
        if kind in ("resize_perm", "finops"):
            if perm_done:
                continue
            perm_done = True
        reg = ctx.region(wh.tz)
        for _try in range(60):
            d = int(rng.integers(lo, hi))
            if kind in HUMAN:                     # people act on their working days
                while d < hi and not ctx.bizday[reg][d]:
                    d += 1
            if kind in ("resize_perm", "resize_temp"):
                # resized because there is work to speed up, and enough of it to matter
                ud = usual(base_daily, d, wh.c0)
                if base_daily[d] < 0.6 * ud or base_daily[d] * 0.7 < 1.5 * max(FLOOR, REL * ud):
                    continue
            if d < hi and not any(x in taken for x in range(d - 6, d + 7)):
                break
        else:
            continue
        ne = len(wh.effects)
        ndays = apply_incident(ctx, rng, wh, kind, d, base_daily)
        for e in wh.effects[ne:]:
            e["name"] = kind
        for x in range(d, d + ndays):
            taken.add(x)
        wh.incidents.append((kind, ctx.dates[d].isoformat()))


def apply_incident(ctx, rng, wh, kind, d, base_daily):
    """Adds the incident's queries/config to layer 2 (permanent) or 3 (transient). Returns days used."""
    H = ctx.H
    u = max(usual(base_daily, d, wh.c0), 4.0)
    def_size = wh.size_at(L_PERM, d * 24 + 12, H)
    r = SIZE_CREDITS[def_size]
    eff = wh.effects
    if kind == "runaway":
        variant = rng.choice(["autosuspend", "query", "loop"],
                             p=[0.3, 0.3, 0.4] if wh.arch in ("ds", "adhoc", "dev") else [0.5, 0.5, 0.0])
        if variant == "query" and wh.timeout < 6 * HOUR:
            variant = "autosuspend"
        t0 = work_hour(ctx, rng, wh, d, 11, 19)
        t1 = notice_time(ctx, rng, wh, t0)
        if variant == "autosuspend":
            wh.forced.append((L_INC, t0, t1))
        elif variant == "query":
            dur = min(t1 - t0, wh.timeout) if rng.random() < 0.6 else wh.timeout
            t1 = t0 + dur
            wh.add([t0], [dur * r ** 0.9], alpha=0.9, ovh=0.0, cs=1e-3, add=L_INC, src=99)
        else:
            per = float(min(rng.uniform(20, 120), 0.8 * (wh.A0 or 600)))
            t = np.arange(t0, t1, per)
            wh.add(t, 0.3 * r ** 0.3, alpha=0.3, ovh=0.05, cs=3e-5, add=L_INC, src=99)
        eff.append(dict(layer=L_INC, d0=d, d1=int(t1 // DAY) + 2, up="runaway", down="drop", mode="material"))
        return int(t1 // DAY) - d + 1
    if kind == "resize_perm":
        h0 = resize_hour(ctx, rng, wh, d)
        delta = 1 if rng.random() < 0.85 or def_size >= 4 or wh.util > 0.5 else 2
        wh.size_events.append((L_PERM, h0, H, delta))
        eff.append(dict(layer=L_PERM, d0=d, d1=d + 3, up="resize", down=None, mode="first"))
        return 3
    if kind == "finops":
        h0 = int(work_hour(ctx, rng, wh, d) // HOUR)
        if wh.size0 > 0 and (rng.random() < 0.6 or (wh.A0 or 0) <= 120):
            wh.size_events.append((L_PERM, h0, H, -1))
        else:
            wh.A_events.append((L_PERM, h0, 60.0))
        eff.append(dict(layer=L_PERM, d0=d, d1=d + 14, up=None, down="drop", mode="first3"))
        return 3
    if kind == "resize_temp":
        hours = rng.uniform(18, 50)
        h0 = resize_hour(ctx, rng, wh, d)
        h1 = min(H, h0 + int(hours))
        delta = 1 if rng.random() < 0.6 or def_size >= 4 else 2
        wh.size_events.append((L_INC, h0, h1, delta))
        eff.append(dict(layer=L_INC, d0=d, d1=h1 // 24 + 1, up="resize", down="drop", mode="first"))
        return h1 // 24 - d + 1
    if kind == "cross_join":
        t0 = work_hour(ctx, rng, wh, d, 9, 18)
        hours = float(np.clip(rng.uniform(0.6, 2.5) * u / r, 0.75, 30))
        dur = hours * HOUR
        wh.add([t0], [dur * r ** 0.9], alpha=0.9, ovh=0.0, cs=2e-3, add=L_INC, src=99)
        t1 = t0 + min(dur, wh.timeout)
        eff.append(dict(layer=L_INC, d0=d, d1=int(t1 // DAY) + 2, up="spike", down="drop", mode="material"))
        return int(t1 // DAY) - d + 1
    if kind == "backfill":
        t0 = work_hour(ctx, rng, wh, d, 9, 20)
        hours = float(np.clip(rng.uniform(0.7, 3.0) * u / r, 2, 40))
        streams = int(rng.integers(1, 4))
        qs = []
        for s_ in range(streams):
            t = t0 + rng.uniform(0, 120)
            while t < t0 + hours * HOUR:
                c = float(lognorm(rng, 900, 0.6, 1)[0])
                qs.append((t, c))
                t += c + rng.uniform(2, 20)
        qs = np.array(qs)
        wh.add(qs[:, 0], qs[:, 1] * r ** 0.85, alpha=0.85, ovh=0.5, cs=cs_of(rng, 2e-3, qs[:, 1], r, len(qs)),
               add=L_INC, src=99)
        t1 = qs[:, 0].max() + HOUR
        eff.append(dict(layer=L_INC, d0=d, d1=int(t1 // DAY) + 2, up="spike", down="drop", mode="material"))
        return int(t1 // DAY) - d + 1
    if kind == "retry_storm":
        t0 = float(ctx.utc(d, rng.uniform(0.5, 20) * HOUR, wh.tz))
        hours = float(np.clip(rng.uniform(0.6, 2.5) * u / r, 3, 36))
        per = rng.uniform(2, 15) * 60
        t = np.arange(t0, t0 + hours * HOUR, per)
        att = per * rng.uniform(0.3, 0.95) * np.exp(0.1 * rng.standard_normal(t.size))
        wh.add(t, att * r ** 0.85, alpha=0.85, ovh=0.5, cs=cs_of(rng, 1.5e-3, att, r, t.size), add=L_INC, src=99)
        t1 = t0 + hours * HOUR
        eff.append(dict(layer=L_INC, d0=d, d1=int(t1 // DAY) + 2, up="spike", down="drop", mode="material"))
        return int(t1 // DAY) - d + 1
    if kind == "scale_out":
        t0 = work_hour(ctx, rng, wh, d, 8, 16) if wh.arch != "app" else float(d * DAY + rng.uniform(0, DAY))
        hours = rng.uniform(2, 14)
        med = 12.0
        mean_d = med * np.exp(0.8 ** 2 / 2)
        conc = wh.C * wh.maxc * rng.uniform(1.0, 1.6)
        rate = conc / mean_d
        n = rng.poisson(rate * hours * HOUR)
        t = t0 + np.sort(rng.random(n)) * hours * HOUR
        dur = lognorm(rng, med, 0.8, n)
        wh.add(t, dur * r ** 0.7, alpha=0.7, ovh=0.05, cs=cs_of(rng, 5e-5, dur, r, n), add=L_INC, src=99)
        t1 = t0 + hours * HOUR
        eff.append(dict(layer=L_INC, d0=d, d1=int(t1 // DAY) + 2, up="scale_out", down="drop", mode="material"))
        return int(t1 // DAY) - d + 1
    if kind == "outage":
        t0 = float(d * DAY + rng.uniform(0, DAY))
        hours = rng.uniform(6, 40)
        t1 = t0 + hours * HOUR
        Q = wh.Q
        m = (Q["t"] >= t0) & (Q["t"] < t1) & (Q["add"] == 0) & (Q["src"] != 99)
        Q["rm"][m] = np.minimum(Q["rm"][m], L_INC)
        if wh.arch == "loader":
            # the backlog of files arrives after recovery: loaded in a few parallel COPYs
            f0 = SIZE_CREDITS[wh.size0]
            missed = float((Q["work"][m] / f0 ** 0.7).sum())
            k = int(rng.integers(2, 8))
            c = np.full(k, missed / k * rng.uniform(0.5, 0.9))
            wh.add(t1 + rng.uniform(0, 600, k), c * r ** 0.7, alpha=0.7, ovh=1.0,
                   cs=cs_of(rng, 2e-3, c, r, k), add=L_INC, src=99)
        eff.append(dict(layer=L_INC, d0=d, d1=int(t1 // DAY) + 2, up="spike", down="drop", mode="material"))
        return int(t1 // DAY) - d + 2
    if kind == "dag_failure":
        return dag_failure(ctx, rng, wh, d)
    raise ValueError(kind)


def dag_failure(ctx, rng, wh, d, k=None, downstream=False):
    """Nightly DAG fails at task k on day d: k's attempts fail part-way, descendants do not run; the
    next night's run processes two days of data in the incremental tasks (catch-up)."""
    dag = wh.dag
    f0 = SIZE_CREDITS[wh.size0]
    D = ctx.D
    if d + 1 >= D:
        return 1
    if k is None:
        share = np.array([sum(dag.base[j] for j in dag.descendants(i)) for i in range(dag.n)]) / dag.base.sum()
        ok = np.flatnonzero(share >= 0.5)
        k = int(rng.choice(ok)) if ok.size else 0
    desc = sorted(dag.descendants(k))
    Q = wh.Q
    m = (Q["src"] == wh.dag_src) & ((Q["grp"] == d) | (Q["grp"] == d + 1)) & (Q["add"] == 0)
    Q["rm"][m] = np.minimum(Q["rm"][m], L_INC)
    skip = np.zeros((2, dag.n), bool)
    dur = wh.dag_dur[d:d + 2].copy()
    if downstream:
        skip[0, :] = True
    else:
        skip[0, desc] = True
    mult = 1.0 + dag.beta[desc] * np.where(dag.full[desc] > 1, 0.3, 0.9)
    dur[1, desc] *= mult
    st, en = dag.schedule(wh.dag_root[d:d + 2], dur, skip)
    for row in range(2):
        keep = ~skip[row]
        w = dur[row, keep]
        wh.add(st[row, keep], w * f0 ** 0.85, alpha=0.85, ovh=0.5, cs=cs_of(rng, wh.csq, w, f0, w.size),
               add=L_INC, src=98, grp=d + row)
    if not downstream:
        # the failing task's attempts (orchestrator retries twice), each failing part-way
        tries = st[0, k] + np.array([0.0, 300.0, 900.0]) + np.array([0, 1, 2]) * dur[0, k] * 0.5
        w = dur[0, k] * rng.uniform(0.1, 0.6, 3)
        wh.add(tries, w * f0 ** 0.85, alpha=0.85, ovh=0.5, cs=cs_of(rng, wh.csq, w, f0, 3), add=L_INC, src=98)
        for dn in wh.downstream:
            dn.pending_failures.append(d)
    wh.effects.append(dict(layer=L_INC, d0=d, d1=d + 3, up="spike", down="drop", mode="material"))
    return 3


# ----------------------------------------------------------------------------------------------------
# labels

def label_effects(ctx, wh, dailies, labels):
    def world(L):
        return dailies[max(x for x in dailies if x <= L)]
    for e in wh.effects:
        L = e["layer"]
        obs, cf = world(L), world(L - 1)
        d0, d1 = max(e["d0"], wh.c0), min(e["d1"], wh.c1, ctx.D)
        got = 0
        for d in range(d0, d1):
            diff = obs[d] - cf[d]
            thr = max(REL * usual(cf, d, wh.c0), FLOOR)
            kind = None
            if e["up"] and diff >= thr:
                kind = e["up"]
            elif e["down"] and -diff >= thr:
                kind = e["down"]
            if e["mode"] == "first" and d == d0:
                kind = e["up"]
            if kind is None:
                continue
            if e["mode"] == "first3" and got >= 3:
                break
            got += 1
            e.setdefault("labelled", []).append((d, kind, round(float(diff), 1), round(float(thr), 1)))
            key = (wh.account, wh.name, d)
            old = labels.get(key)
            def rank(k):
                return 2 if k in INCREASE else (1 if k == "drop" else 0)
            if old is None or rank(kind) > rank(old):
                labels[key] = kind


# ----------------------------------------------------------------------------------------------------

def run(seed, n_wh, days, end, out, verbose=True):
    t_start = time.time()
    ctx = Ctx(seed, days, end)
    ss = np.random.SeedSequence(seed)
    s_world, s_wh = ss.spawn(2)
    rng = np.random.default_rng(s_world)
    whs = make_world(ctx, rng, n_wh)
    for w in whs:
        w.downstream = [x for x in whs if x.upstream is w]
        w.pending_failures = []
    # upstream DAGs first
    order = sorted(range(len(whs)), key=lambda i: whs[i].upstream is not None)
    seeds = s_wh.spawn(len(whs))
    labels = {}
    hourly = []
    summary = []
    for i in order:
        wh = whs[i]
        r_base, r_exp, r_inc = [np.random.default_rng(s) for s in seeds[i].spawn(3)]
        gen = {"loader": gen_loader, "bi": gen_bi, "adhoc": gen_adhoc, "dev": gen_adhoc, "ds": gen_adhoc,
               "app": gen_app, "finance": gen_finance, "ml": gen_ml}
        if wh.arch == "elt":
            gen_elt(ctx, r_base, wh, wh.upstream)
        else:
            gen[wh.arch](ctx, r_base, wh)
        wh.build(ctx)
        dailies, hours = {}, {}
        for L in wh.layers():
            comp, cs = simulate(ctx, wh, L)
            hours[L] = (comp, cs)
            dailies[L] = (comp + cs).reshape(-1, 24).sum(axis=1)
        base = dailies[max(dailies)]
        comp1 = hours[max(hours)][0]
        sidx = wh.size_idx(1, ctx.H)
        live = np.arange(ctx.H)
        live = (live >= wh.c0 * 24) & (live < wh.c1 * 24)
        util = float(np.mean(comp1[live] >= 0.97 * SIZE_CREDITS[sidx][live] * wh.minc))
        # expected effects (layer 1)
        for kind, a, b in wh.expect_windows:
            wh.effects.append(dict(layer=L_CLOSE, d0=a, d1=b, up="expected", down=None, mode="material"))
        for kind, a, b in wh.onboard_windows:
            wh.effects.append(dict(layer=L_ONBOARD, d0=a, d1=b, up="expected", down=None, mode="first3"))
        # failures propagated from the upstream DAG
        for d in wh.pending_failures:
            ne = len(wh.effects)
            dag_failure(ctx, r_inc, wh, d, k=0, downstream=True)
            for e in wh.effects[ne:]:
                e["name"] = "upstream_failure"
            wh.blocked.update(range(d - 3, d + 4))
            wh.incidents.append(("upstream_failure", ctx.dates[d].isoformat()))
        wh.base_comp, wh.util = comp1, util
        plan_incidents(ctx, r_inc, wh, base, util)
        wh.build(ctx)
        for L in wh.layers():
            if L >= L_PERM:
                comp, cs = simulate(ctx, wh, L)
                hours[L] = (comp, cs)
                dailies[L] = (comp + cs).reshape(-1, 24).sum(axis=1)
        label_effects(ctx, wh, dailies, labels)
        comp, cs = hours[max(hours)]
        hourly.append((wh, comp, cs))
        summary.append(dict(wh=wh, total=float((comp + cs).sum()), cs=float(cs.sum()), util=util,
                            nq=int(wh.Q["t"].size), worlds=sorted(dailies)))
        wh.Q = None
        if verbose:
            sm = summary[-1]
            print(f"  {wh.account:16s} {wh.name:24s} {wh.arch:8s} {SIZE_NAMES[wh.size0]:3s} A={wh.A0} "
                  f"mc={wh.minc}-{wh.maxc} total={sm['total']:9.1f} cs%={100 * sm['cs'] / max(sm['total'], 1e-9):4.1f} "
                  f"util={util:.2f} inc={len(wh.incidents)} {time.time()-t_start:5.1f}s", file=sys.stderr)
        if os.environ.get("FQ_DEBUG"):
            for e in wh.effects:
                if e["layer"] >= 2 or os.environ.get("FQ_DEBUG") == "2":
                    print(f"    effect L{e['layer']} {e.get('name', e['up'])} {ctx.dates[e['d0']]} "
                          f"-> {e.get('labelled', [])}", file=sys.stderr)
    write(ctx, out, hourly, labels)
    return ctx, whs, labels, summary


def fmt9(nano):
    q, r = divmod(int(nano), 1_000_000_000)
    return f"{q}.{r:09d}"


def write(ctx, out, hourly, labels):
    os.makedirs(out, exist_ok=True)
    t0 = dt.datetime.combine(ctx.start, dt.time())
    stamps = [(t0 + dt.timedelta(hours=h)).strftime("%Y-%m-%d %H:%M:%S.000 +0000") for h in range(ctx.H + 1)]
    lines = ["ACCOUNT_NAME,WAREHOUSE_ID,WAREHOUSE_NAME,SERVICE_TYPE,START_TIME,END_TIME,CREDITS_USED,"
             "CREDITS_USED_COMPUTE,CREDITS_USED_CLOUD_SERVICES"]
    for wh, comp, cs in sorted(hourly, key=lambda x: (x[0].account, x[0].wid)):
        cn = np.rint(comp * 1e9).astype(np.int64)
        sn = np.rint(cs * 1e9).astype(np.int64)
        pre = f"{wh.account},{wh.wid},{wh.name},WAREHOUSE_METERING,"
        for h in np.flatnonzero((cn > 0) | (sn > 0)):
            lines.append(f"{pre}{stamps[h]},{stamps[h + 1]},{fmt9(cn[h] + sn[h])},{fmt9(cn[h])},{fmt9(sn[h])}")
    with open(os.path.join(out, "metering.csv"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "labels.csv"), "w") as f:
        f.write("account_name,warehouse_name,usage_date,kind\n")
        for (acc, name, d), kind in sorted(labels.items()):
            f.write(f"{acc},{name},{ctx.dates[d].isoformat()},{kind}\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--warehouses", type=int, default=40)
    ap.add_argument("--days", type=int, default=430)
    ap.add_argument("--end", default="2025-11-30")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    t = time.time()
    ctx, whs, labels, summary = run(a.seed, a.warehouses, a.days, dt.date.fromisoformat(a.end), a.out,
                                    verbose=not a.quiet)
    counts = {}
    for k in labels.values():
        counts[k] = counts.get(k, 0) + 1
    by = {}
    for x in summary:
        k = x["wh"].arch
        n, c = by.get(k, (0, 0.0))
        by[k] = (n + 1, c + x["total"])
    order = sorted(by.items(), key=lambda kv: -kv[1][1])
    print("credits by type: " + ", ".join(f"{k}({n})={c:.0f}" for k, (n, c) in order), file=sys.stderr)
    print(f"seed {a.seed}: {len(whs)} warehouses, {sum(s['total'] for s in summary):.0f} credits, labels "
          + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) + f" ({time.time() - t:.1f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
