"""Grouped and weighted throughput: ``fit(welford(), x, groups=g)`` against pandas and
NumPy, and against ungrouped and unweighted fits of the same rows.

Run from a checkout: ``python -m benchmarks groups``. Writes
``benchmarks/results/groups.json`` and ``groups.md``.

All cases see the same float32 rows (n × d, d = 10) with group ids drawn uniformly
from G = 1000 groups, and are timed in one process, side by side, after a warm-up, as
the median of repeats (the ratios are what to read: other processes may load the
machine, and the load average is recorded):

* jaxgauss grouped: ``jg.fit(jg.welford(), x, groups=g, n_groups=G)``, one pass of
  segment sums per block of rows.
* pandas: ``DataFrame(x).groupby(g).cov(ddof=0)`` (batch, all rows in memory).
* numpy sort + cov: a stable argsort by group, then ``np.cov(bias=True)`` per group.
* jaxgauss ungrouped: ``jg.fit(jg.welford(), x)``, the same rows as one Gaussian.
* jaxgauss weighted: ``jg.fit(jg.welford(weighted=True), x, weights=w)``, against the
  ungrouped unweighted fit.

Each run also checks the grouped result against NumPy's (largest absolute error).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

import jaxgauss as jg
from jaxgauss.bench import machine_info, time_call

RESULTS = Path(__file__).resolve().parent / "results"
D, ROWS, GROUPS, REPEATS = 10, 1_000_000, 1000, 3


def _numpy_sorted(x: np.ndarray, g: np.ndarray, n_groups: int) -> np.ndarray:
    order = np.argsort(g, kind="stable")
    xs = x[order]
    bounds = np.searchsorted(g[order], np.arange(n_groups + 1))
    return np.stack([np.cov(xs[bounds[k] : bounds[k + 1]].T, bias=True) for k in range(n_groups)])


def run(d: int = D, rows: int = ROWS, n_groups: int = GROUPS, repeats: int = REPEATS, log=print):
    """Time every case; returns a JSON-ready dict with rows/s and the ratios."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(rows, d)) + 5.0).astype(np.float32)
    g = rng.integers(0, n_groups, rows)
    w = rng.uniform(0, 2, rows).astype(np.float32)
    # one estimator object per case: fit's compilations are cached per estimator
    welford, weighted = jg.welford(), jg.welford(weighted=True)
    cases = {
        "jaxgauss grouped welford": lambda: jg.fit(welford, x, groups=g, n_groups=n_groups),
        "jaxgauss ungrouped welford": lambda: jg.fit(welford, x),
        "jaxgauss weighted welford": lambda: jg.fit(weighted, x, weights=w),
        "numpy sort + cov per group": lambda: _numpy_sorted(x, g, n_groups),
    }
    try:
        import pandas as pd

        frame = pd.DataFrame(x).assign(group=g)
        cases["pandas groupby.cov(ddof=0)"] = lambda: frame.groupby("group").cov(ddof=0)
    except ImportError:
        log("pandas is not installed (pip install -e '.[bench]'): skipped")
    results = {}
    for name, fn in cases.items():
        t = time_call(fn, repeats)
        results[name] = {"seconds": t.seconds, "rows_per_s": rows / t.seconds}
        log(f"{name:32s} {rows / t.seconds:12,.0f} rows/s")
    grouped = np.asarray(cases["jaxgauss grouped welford"]().estimate.cov, np.float64)
    reference = _numpy_sorted(x.astype(np.float64), g, n_groups)
    rate = {k: v["rows_per_s"] for k, v in results.items()}
    peers = [k for k in rate if k.startswith(("pandas", "numpy"))]
    fastest = max(peers, key=rate.get)
    ratios = {
        f"grouped / {fastest} (goal >= 2)": rate["jaxgauss grouped welford"] / rate[fastest],
        "ungrouped / grouped (goal <= 3)": rate["jaxgauss ungrouped welford"]
        / rate["jaxgauss grouped welford"],
        "unweighted / weighted (goal <= 1.5)": rate["jaxgauss ungrouped welford"]
        / rate["jaxgauss weighted welford"],
    }
    for k, v in ratios.items():
        log(f"{k}: {v:.2f}")
    return {
        "setup": {"d": d, "rows": rows, "groups": n_groups, "dtype": "float32", "repeats": repeats},
        "results": results,
        "ratios": ratios,
        "grouped_max_abs_error_vs_numpy_float64": float(np.max(np.abs(grouped - reference))),
        "load_average": os.getloadavg(),
        "machine": machine_info(["pandas"]),
    }


def write(result: dict, out: Path = RESULTS) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "groups.json", out / "groups.md"
    js.write_text(json.dumps(result, indent=2) + "\n")
    s = result["setup"]
    lines = [
        f"# Grouped fits: d = {s['d']}, n = {s['rows']:,}, {s['groups']:,} groups, {s['dtype']}",
        "",
        "| case | rows/s |",
        "| --- | ---: |",
    ]
    lines += [f"| {k} | {v['rows_per_s']:,.0f} |" for k, v in result["results"].items()]
    lines += ["", "| ratio | value |", "| --- | ---: |"]
    lines += [f"| {k} | {v:.2f} |" for k, v in result["ratios"].items()]
    m = result["machine"]
    lines += [
        "",
        f"Grouped result against NumPy (float64): max abs error "
        f"{result['grouped_max_abs_error_vs_numpy_float64']:.2g}.",
        f"Load average during the run: {', '.join(f'{x:.1f}' for x in result['load_average'])} "
        "(the machine is shared; read the ratios, measured side by side).",
        f"Machine: {json.dumps({k: v for k, v in m.items() if k != 'versions'})}; "
        f"versions: {json.dumps(m.get('versions', {}))}.",
    ]
    md.write_text("\n".join(lines) + "\n")
    return [js, md]


if __name__ == "__main__":
    for path in write(run()):
        print(f"wrote {path}")
