"""The engine's ratios (issue 24): ``fit(welford(), …)`` against a baseline timed beside it.

Run from a checkout: ``python -m benchmarks.engine`` (``--quick`` for tiny sizes, a
smoke test; ``--out`` and ``--name`` choose where the results go). Writes
``benchmarks/results/engine.json`` and ``engine.md``.

Every case pairs a jaxgauss call with a baseline on the same rows, in one process,
float32 with x64 disabled. Both are warmed up (the first call compiles), then timed in
interleaved rounds (baseline, ours; ours, baseline; …; 5 rounds, 7 where they fit in
the case's time budget) with ``time.perf_counter`` and ``jax.block_until_ready``; a
call shorter than ``MIN_SAMPLE_S`` is repeated within each sample so the clock can see
it. The medians give rows/s of each and the ratio:

1. ``fit(welford(), x)`` of a NumPy array against NumPy's ``np.cov(x, rowvar=False)``,
   float32 and float64 input (x64 stays disabled: fit shifts float64 rows on the host,
   then works in float32), d = 10 (10⁶ rows) and d = 100 (2·10⁵ rows). Targets ≥ 2×
   (float32 input), ≥ 1.5× (float64 input).
2. ``fit(welford(), xd)`` of a device array against a jitted ``a.T @ a`` of it. Target
   ≥ 0.5×.
3. A warm ``fit`` of 1 000 NumPy rows (d = 10) against one jitted ``a.T @ a`` of the
   same NumPy rows (the transfer included in both). Target: fit's time ≤ 10× the bare
   call's; the multiple is reported.
4. The grouped fit ``fit(welford(weighted=True), x, groups=g, n_groups=1000)`` against
   pandas' ``DataFrame(x).groupby(g).cov(ddof=0)``, d = 10, 10⁶ rows, random group
   ids. Target ≥ 2×. The unweighted ``welford()`` with groups is timed too, for
   information.
5. ``fit(welford(), path)`` of a 10⁶ × 10 CSV file against pandas' chunked
   ``read_csv(path, chunksize=65536)`` that only reads. Target ≥ 1×.

The machine is usually shared: read the ratios (measured side by side) and the load
averages recorded before and after, not the absolute rows/s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxgauss as jg
from jaxgauss.bench import machine_info

RESULTS = Path(__file__).resolve().parent / "results"
MIN_SAMPLE_S = 0.02  # a timed sample repeats a shorter call until it lasts about this long


class Size(NamedTuple):
    """The sizes of a run: the full one, or ``--quick``'s smoke test."""

    rows_d10: int
    rows_d100: int
    small_rows: int
    grouped_rows: int
    n_groups: int
    csv_rows: int
    min_rounds: int
    max_rounds: int
    case_budget_s: float


FULL = Size(1_000_000, 200_000, 1000, 1_000_000, 1000, 1_000_000, 5, 7, 25.0)
QUICK = Size(4096, 2048, 1000, 4096, 16, 4096, 2, 2, 1.0)


class Case(NamedTuple):
    """One pair: ``ours`` against ``baseline`` on ``rows`` rows.

    ``kind`` "speedup": ratio = ours' rows/s / the baseline's, pass if ≥ ``target``;
    "multiple": ratio = ours' time / the baseline's, pass if ≤ ``target``.
    """

    id: str
    group: int
    ours_label: str
    baseline_label: str
    ours: Callable[[], Any] | None
    baseline: Callable[[], Any] | None
    rows: int
    d: int
    dtype: str
    target: float
    kind: str = "speedup"


# Idle time before each timed sample of a pair with a NumPy or pandas baseline, not
# counted: OpenBLAS's threads keep spinning for ~0.1 s after a call (its
# THREAD_TIMEOUT), so a fit timed right after np.cov on these 2 cores ran 2x slower
# (d = 100: 90-110 ms against 46 ms alone). Pairs of two XLA programs run back to
# back (after an idle spell XLA's blocked scan ran ~2x slower, its Gram not).
SETTLE_S = 0.25


def _once(fn: Callable[[], Any], inner: int, settle: float = 0.0) -> float:
    time.sleep(settle)
    start = time.perf_counter()
    for _ in range(inner):
        jax.block_until_ready(fn())
    return (time.perf_counter() - start) / inner


def time_pair(
    ours: Callable[[], Any], baseline: Callable[[], Any], size: Size, settle: float = 0.0
) -> tuple[float, float, int, tuple[int, int]]:
    """Seconds per call (medians) of ``ours`` and ``baseline``, timed in interleaved
    rounds after a warm-up; also the number of rounds and of calls per sample of each."""
    jax.block_until_ready(ours())  # warm-up: compiles
    jax.block_until_ready(baseline())
    first = [_once(ours, 1), _once(baseline, 1)]
    inner = [max(1, math.ceil(MIN_SAMPLE_S / max(t, 1e-7))) for t in first]
    per_round = sum(n * t for n, t in zip(inner, first))
    fits = per_round * size.max_rounds <= size.case_budget_s
    rounds = size.max_rounds if fits else size.min_rounds
    ours_s, base_s = [], []
    for r in range(rounds):  # alternate which goes first
        if r % 2:
            ours_s.append(_once(ours, inner[0], settle))
            base_s.append(_once(baseline, inner[1], settle))
        else:
            base_s.append(_once(baseline, inner[1], settle))
            ours_s.append(_once(ours, inner[0], settle))
    return statistics.median(ours_s), statistics.median(base_s), rounds, (inner[0], inner[1])


def _write_csv(x: np.ndarray, path: Path) -> None:
    """``x`` as CSV with a header line (so ``pd.read_csv`` reads it as written)."""
    names = [f"x{j}" for j in range(x.shape[1])]
    try:
        import pyarrow as pa
        import pyarrow.csv as pcsv

        pcsv.write_csv(pa.table({n: x[:, j] for j, n in enumerate(names)}), path)
    except ImportError:
        np.savetxt(path, x, delimiter=",", fmt="%.8g", header=",".join(names), comments="")


def _pandas():
    try:
        import pandas as pd
    except ImportError:
        return None
    return pd


def _cases(size: Size, folder: Path) -> list[Case]:
    rng = np.random.default_rng(0)
    pd = _pandas()
    est, weighted = jg.welford(), jg.welford(weighted=True)
    gram = jax.jit(lambda a: a.T @ a)
    cases = []

    for d, rows in ((10, size.rows_d10), (100, size.rows_d100)):
        x32 = (rng.normal(size=(rows, d)) + 5.0).astype(np.float32)
        x64 = x32.astype(np.float64)
        for x, target in ((x32, 2.0), (x64, 1.5)):
            dt = x.dtype.name
            cases.append(
                Case(
                    f"1 fit(numpy {dt}) vs np.cov, d={d}",
                    1,
                    "fit(welford(), x)",
                    "np.cov(x, rowvar=False)",
                    lambda x=x: jg.fit(est, x).estimate,
                    lambda x=x: np.cov(x, rowvar=False),
                    rows,
                    d,
                    dt,
                    target,
                )
            )
        xd = jax.block_until_ready(jnp.asarray(x32))
        cases.append(
            Case(
                f"2 fit(device array) vs jit a.T @ a, d={d}",
                2,
                "fit(welford(), xd)",
                "jit(a.T @ a)(xd)",
                lambda xd=xd: jg.fit(est, xd).estimate,
                lambda xd=xd: gram(xd),
                rows,
                d,
                "float32",
                0.5,
            )
        )

    small = (rng.normal(size=(size.small_rows, 10)) + 5.0).astype(np.float32)
    cases.append(
        Case(
            f"3 warm fit of {size.small_rows} rows vs one jit a.T @ a",
            3,
            "fit(welford(), a)",
            "jit(a.T @ a)(a), NumPy a",
            lambda: jg.fit(est, small).estimate,
            lambda: gram(small),
            size.small_rows,
            10,
            "float32",
            10.0,
            "multiple",
        )
    )

    xg = (rng.normal(size=(size.grouped_rows, 10)) + 5.0).astype(np.float32)
    g = rng.integers(0, size.n_groups, size.grouped_rows)
    frame = pd.DataFrame(xg) if pd is not None else None
    pandas_grouped = (lambda: frame.groupby(g).cov(ddof=0)) if pd is not None else None
    n = size.n_groups
    for label, e, target in (("welford(weighted=True)", weighted, 2.0), ("welford()", est, 0.0)):
        cases.append(
            Case(
                f"4 grouped fit({label}) vs pandas groupby.cov"
                + ("" if target else " (information)"),
                4,
                f"fit({label}, x, groups=g, n_groups={n})",
                "DataFrame(x).groupby(g).cov(ddof=0)",
                lambda e=e: jg.fit(e, xg, groups=g, n_groups=n).estimate,
                pandas_grouped,
                size.grouped_rows,
                10,
                "float32",
                target,
            )
        )

    csv = folder / "rows.csv"
    _write_csv((rng.normal(size=(size.csv_rows, 10)) + 5.0).astype(np.float32), csv)

    def read_only():
        for _ in pd.read_csv(csv, chunksize=65536):
            pass

    cases.append(
        Case(
            "5 fit(CSV path) vs pandas chunked read_csv",
            5,
            "fit(welford(), path)",
            "for c in pd.read_csv(path, chunksize=65536): pass",
            lambda: jg.fit(est, str(csv)).estimate,
            read_only if pd is not None else None,
            size.csv_rows,
            10,
            "float32 (CSV text)",
            1.0,
        )
    )
    return cases


def _target_text(case: Case) -> str | None:
    if not case.target:
        return None
    return f"{'<=' if case.kind == 'multiple' else '>='} {case.target:g}"


def _judge(case: Case, ratio: float | None) -> str:
    if ratio is None:
        return "not measured"
    if not case.target:
        return "information"
    ok = ratio <= case.target if case.kind == "multiple" else ratio >= case.target
    return "pass" if ok else "miss"


def run(size: Size = FULL, log: Callable[[str], None] = print, note: str = "") -> dict:
    """Time every pair; a JSON-ready dict with rows/s, ratios, targets and the machine.

    A pair whose call raises is recorded as an error (the others still run)."""
    start = time.perf_counter()
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="jaxgauss-engine-") as tmp:
        for case in _cases(size, Path(tmp)):
            ours_s = base_s = ratio = error = None
            rounds, inner = 0, (0, 0)
            if case.ours is not None and case.baseline is not None:
                try:
                    settle = 0.0 if case.group in (2, 3) else SETTLE_S  # XLA against XLA
                    ours_s, base_s, rounds, inner = time_pair(
                        case.ours, case.baseline, size, settle
                    )
                    ratio = ours_s / base_s if case.kind == "multiple" else base_s / ours_s
                except Exception as err:  # recorded; the other cases still run
                    error = f"{type(err).__name__}: {err}"
            row = {
                "case": case.id,
                "group": case.group,
                "ours": case.ours_label,
                "baseline": case.baseline_label,
                "rows": case.rows,
                "d": case.d,
                "input_dtype": case.dtype,
                "rounds": rounds,
                "calls_per_sample": {"ours": inner[0], "baseline": inner[1]},
                "ours_seconds": ours_s,
                "baseline_seconds": base_s,
                "ours_rows_per_s": None if ours_s is None else case.rows / ours_s,
                "baseline_rows_per_s": None if base_s is None else case.rows / base_s,
                "ratio_kind": (
                    "fit time / baseline time"
                    if case.kind == "multiple"
                    else "fit rows/s / baseline rows/s"
                ),
                "ratio": ratio,
                "target": _target_text(case),
                "result": f"error ({error})" if error else _judge(case, ratio),
            }
            results.append(row)
            shown = "—" if ratio is None else f"{ratio:.2f}"
            log(f"{case.id:<52} ratio {shown:>6}  {row['result']}")
    return {
        "settings": {
            **size._asdict(),
            "quick": size == QUICK,
            "x64": bool(jax.config.jax_enable_x64),
            "min_sample_s": MIN_SAMPLE_S,
        },
        "note": note,
        "jaxgauss_path": str(Path(jg.__file__).resolve().parent),
        "machine": machine_info(["pandas", "pyarrow", "threadpoolctl"]),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "seconds": time.perf_counter() - start,
        "cases": results,
        "ratios": {r["case"]: r["ratio"] for r in results},
    }


def _rate(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


def markdown(result: dict) -> str:
    s, m, load = result["settings"], result["machine"], result["load_average"]
    v = m["versions"]
    lo, hi = min(r["rounds"] for r in result["cases"]), max(r["rounds"] for r in result["cases"])
    rounds = f"{lo}" if lo == hi else f"{lo}–{hi}"
    lines = [
        "# Engine ratios (issue 24): `fit(welford(), …)` against a baseline beside it",
        "",
        f"`python -m benchmarks.engine{' --quick' if s['quick'] else ''}` on {m['cpu']} "
        f"({m['cpu_count']} CPUs), {m['platform']}; JAX backend {m['backend']}, x64 "
        f"{'enabled' if s['x64'] else 'disabled'}; jax {v['jax']}, jaxlib {v['jaxlib']}, "
        f"numpy {v['numpy']} ({m['blas']}), pandas {v['pandas']}, pyarrow {v['pyarrow']}. "
        f"Each pair warmed up, then timed in {rounds} interleaved rounds (per case: "
        "`rounds` in the JSON); medians. A ratio is fit's rows/s over the baseline's, except case 3 (fit's "
        f"time as a multiple of the bare call's). Whole run {result['seconds']:.0f} s.",
        "",
        f"Load average before {', '.join(f'{x:.1f}' for x in load['before'])}; after "
        f"{', '.join(f'{x:.1f}' for x in load['after'])} (a shared machine: read the ratios).",
        *(["", f"Note: {result['note']}"] if result["note"] else []),
        "",
        "| case | rows × d | fit rows/s | baseline | baseline rows/s | ratio | target | result |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for r in result["cases"]:
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}×"
        lines.append(
            f"| {r['case']} | {r['rows']:,} × {r['d']} | {_rate(r['ours_rows_per_s'])} | "
            f"`{r['baseline']}` | {_rate(r['baseline_rows_per_s'])} | {ratio} | "
            f"{r['target'] or '—'} | {r['result']} |"
        )
    return "\n".join(lines) + "\n"


def write(
    result: dict, out: Path = RESULTS, name: str = "engine", render: Callable = markdown
) -> list[Path]:
    """The results as ``name``.json and ``name``.md (its table, by ``render``) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / f"{name}.json", out / f"{name}.md"
    js.write_text(json.dumps(result, indent=2) + "\n")
    md.write_text(render(result))
    return [js, md]


def arguments(module: str, doc: str) -> argparse.ArgumentParser:
    """The options every side-by-side benchmark takes (``python -m benchmarks.<module>``,
    described by the first line of its docstring ``doc``; results named ``module``)."""
    parser = argparse.ArgumentParser(
        prog=f"python -m benchmarks.{module}", description=doc.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="default: %(default)s")
    parser.add_argument("--name", default=module, help="file stem (default: %(default)s)")
    parser.add_argument("--note", default="", help="a line recorded with the results")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = arguments("engine", __doc__).parse_args(argv)
    jax.config.update("jax_enable_x64", False)
    size = QUICK if args.quick else FULL
    result = run(size, log=lambda s: print(s, flush=True), note=args.note)
    for path in write(result, args.out, args.name):
        print(f"wrote {path}")
    return 1 if any(c["result"].startswith("error") for c in result["cases"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
