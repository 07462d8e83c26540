"""File input: ``fit`` on a CSV or Parquet file against pandas' chunked ``read_csv``.

The same float32 rows are written once as CSV (a header line, then ``%.8g``: 108 MB
for 10⁶ × 10) and as Parquet, then timed in one process. The CSV ratio is the
issue's measure: ``fit(welford(), path)`` (reading, converting and estimating, through
Arrow where the ``jaxgauss[arrow]`` extra is installed) against pandas'
``for c in read_csv(path, chunksize=65536): pass``, which only reads. A copy of the
file with its first cell quoted is read by Arrow's streaming reader (the byte ranges
refuse quotes), as every CSV file was before the byte ranges: the same ratio for it.
These are timed in alternation, round after round, and a ratio is the median of the
rounds' ratios, so a change of the machine's load between them moves both. The other rows
(``fit`` through the pure-Python reader, of Parquet, of the rows in memory) are
medians of ``jaxgauss.bench.time_call``. The load average (``os.getloadavg``) is
recorded before and after: on a shared machine other work takes cores from both.
Targets: CSV ``fit`` ≥ 1× pandas' rows/s, Parquet ``fit`` ≥ 0.5× the in-memory ``fit``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from jaxgauss import bench, fit, streams, welford

ROWS, DIM, CHUNK, ROUNDS = 1_000_000, 10, 65_536, 7
PANDAS = "pandas read_csv(chunksize=65536)"
CSV = "fit, CSV (Arrow where installed)"
STREAMING = "fit, CSV with a quote (Arrow's streaming reader)"


def _write(rows: np.ndarray, folder: Path) -> tuple[Path, Path | None]:
    csv = folder / "rows.csv"
    header = ",".join(f"x{j}" for j in range(rows.shape[1]))
    np.savetxt(csv, rows, delimiter=",", fmt="%.8g", header=header, comments="")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return csv, None
    parquet = folder / "rows.parquet"
    pq.write_table(pa.table({f"x{j}": rows[:, j] for j in range(rows.shape[1])}), parquet)
    return csv, parquet


def _pandas(csv: Path) -> Callable[[], None] | None:
    try:
        import pandas as pd
    except ImportError:
        return None

    def run():
        for _ in pd.read_csv(csv, chunksize=CHUNK):
            pass

    return run


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def csv_ratios(peer: Callable, cases: dict[str, Callable], rounds: int = ROUNDS) -> dict:
    """Seconds of the ``peer`` and of each case, timed in alternation (after one
    warm-up call of each), round after round, the order turned every round: the
    peer's median, and per case its median and the median of the rounds' ratios
    peer/case (rows/s of the case ÷ rows/s of the peer)."""
    calls = {"peer": peer, **cases}
    for call in calls.values():
        call()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(rounds):
        for name in list(calls)[:: 1 if r % 2 == 0 else -1]:
            seconds[name].append(_seconds(calls[name]))
    peer_s = seconds.pop("peer")
    out = {"peer_s": statistics.median(peer_s)}
    for name, times in seconds.items():
        ratios = [p / t for p, t in zip(peer_s, times)]
        out[name] = {
            "seconds": statistics.median(times),
            "ratio": statistics.median(ratios),
            "ratios": ratios,
        }
    return out


def _quoted_copy(csv: Path) -> Path:
    """The CSV file with its first data cell quoted: Arrow's streaming reader reads
    it (the byte ranges refuse quotes), as it read every CSV file before."""
    quoted = csv.with_name("quoted.csv")
    with open(csv, "rb") as src, open(quoted, "wb") as dst:
        dst.write(src.readline())
        first = src.readline().split(b",", 1)
        dst.write(b'"' + first[0] + b'",' + first[1])
        shutil.copyfileobj(src, dst, 1 << 24)
    return quoted


def run(
    rows: int = ROWS, d: int = DIM, repeats: int = 3, log: Callable[[str], None] = print
) -> dict:
    """Time each way of reading the same rows; a JSON-ready dict with the targets."""
    data = np.asarray(bench.make_data(d, rows))
    est = welford()
    arrow = _has_pyarrow()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        csv, parquet = _write(data, Path(tmp))
        peer, alternated = _pandas(csv), {CSV: lambda: fit(est, str(csv)).estimate}
        if arrow:
            quoted = _quoted_copy(csv)
            alternated[STREAMING] = lambda: fit(est, str(quoted)).estimate
        ratios = None
        if peer is not None:
            ratios = csv_ratios(peer, alternated, max(repeats, ROUNDS))
            log(f"CSV ratio (fit ÷ pandas, rows/s): {ratios[CSV]['ratio']:.2f}×")
        cases = {
            "fit, rows in memory": lambda: fit(est, data).estimate,
            "fit, CSV, Python reader": lambda: (
                fit(est, streams.read_csv_chunks(str(csv), engine="python")).estimate
            ),
            "fit, Parquet": (lambda: fit(est, str(parquet)).estimate) if parquet else None,
        }
        results = {PANDAS: None, CSV: None, STREAMING: None}
        if ratios is not None:
            results[PANDAS] = rows / ratios["peer_s"]
            results.update({name: rows / ratios[name]["seconds"] for name in alternated})
        for name, call in cases.items():
            results[name] = None if call is None else rows / bench.time_call(call, repeats).seconds
        for name, rate in results.items():
            log(f"{name:<50} " + ("skipped (not installed)" if rate is None else f"{rate:10.3g}"))
    targets = [
        _target(CSV, PANDAS, 1.0, None if ratios is None else ratios[CSV]["ratio"]),
        _target("fit, Parquet", "fit, rows in memory", 0.5, _ratio(results, "fit, Parquet")),
    ]
    return {
        "machine": bench.machine_info(["pyarrow", "pandas"]),
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "settings": {"rows": rows, "d": d, "repeats": repeats, "dtype": "float32"},
        "arrow": arrow,
        "csv_ratios": ratios,
        "rows_per_s": results,
        "targets": targets,
    }


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def _ratio(rates: dict, case: str) -> float | None:
    ours, theirs = rates.get(case), rates.get("fit, rows in memory")
    return None if ours is None or theirs is None else ours / theirs


def _target(case: str, peer: str, at_least: float, ratio: float | None) -> dict:
    result = "not measured" if ratio is None else ("pass" if ratio >= at_least else "miss")
    return {"case": case, "peer": peer, "at_least": at_least, "ratio": ratio, "result": result}


def markdown(result: dict) -> str:
    m, s, v = result["machine"], result["settings"], result["machine"]["versions"]
    load = result["load_average"]
    fmt = ", ".join
    lines = [
        "# File input: `fit` on CSV and Parquet files",
        "",
        f"`python -m benchmarks files --file-rows {s['rows']}` on {m['cpu']} ({m['cpu_count']} CPUs), "
        f"JAX backend {m['backend']}; jax {v['jax']}, numpy {v['numpy']}, pyarrow {v['pyarrow']}, "
        f"pandas {v['pandas']}. {s['rows']:,} × {s['d']} float32 rows written as CSV (a header "
        "line, then `%.8g`) and Parquet, timed in one process. `fit` is `fit(welford(), path)` "
        "(reading, converting and estimating, float32); the pandas peer only reads "
        "(`for c in pd.read_csv(path, chunksize=65536): pass`). A copy with its first cell "
        "quoted goes through Arrow's streaming reader (as every CSV file did before the "
        "byte ranges). The CSV fits and pandas are timed in alternation after a warm-up; "
        "a ratio is the median of the rounds' ratios. The "
        f"other rows: median of {s['repeats']} calls after a warm-up.",
        "",
        f"Load average (1, 5, 15 min) before: {fmt(f'{x:.2f}' for x in load['before'])}; "
        f"after: {fmt(f'{x:.2f}' for x in load['after'])} (a shared machine: other work "
        "takes cores from both sides, and most from the side that uses more threads).",
        "",
        "| how | rows/s |",
        "| --- | ---: |",
    ]
    for name, rate in result["rows_per_s"].items():
        lines.append(f"| {name} | {'skipped' if rate is None else f'{rate:.3g}'} |")
    for name, got in (result["csv_ratios"] or {}).items():
        if name != "peer_s":
            rounds = fmt(f"{r:.2f}" for r in got["ratios"])
            lines += [
                "",
                f"{name} ÷ pandas, rows/s, each round: {rounds}; median {got['ratio']:.2f}×.",
            ]
    lines += ["", "| target | at least | measured | result |", "| --- | ---: | ---: | --- |"]
    for t in result["targets"]:
        ratio = "—" if t["ratio"] is None else f"{t['ratio']:.2f}×"
        lines.append(
            f"| {t['case']} vs {t['peer']} | {t['at_least']:g}× | {ratio} | {t['result']} |"
        )
    return "\n".join(lines) + "\n"


def write(result: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "files.json", out / "files.md"]
    paths[0].write_text(json.dumps(result, indent=2) + "\n")
    paths[1].write_text(markdown(result))
    return paths
