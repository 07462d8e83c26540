"""File input: ``fit`` on a CSV or Parquet file against pandas' chunked ``read_csv``.

The same float32 rows are written once as CSV (``%.8g``, 111 MB for 10⁶ × 10) and as
Parquet, then timed side by side in one process with ``jaxgauss.bench.time_call``:
``fit(welford(), path)`` through Arrow (the ``jaxgauss[arrow]`` extra) and through the
pure-Python reader, pandas' ``read_csv(chunksize=65536)`` turning each chunk into a
NumPy array (reading only: the peer does not estimate anything), and ``fit`` of the
same rows already in memory. Targets: CSV ``fit`` ≥ 2× pandas' rows/s, Parquet ``fit``
≥ 0.5× the in-memory ``fit``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jaxgauss import bench, fit, streams, welford

ROWS, DIM, CHUNK = 1_000_000, 10, 65_536


def _write(rows: np.ndarray, folder: Path) -> tuple[Path, Path | None]:
    csv = folder / "rows.csv"
    np.savetxt(csv, rows, delimiter=",", fmt="%.8g")
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
        for chunk in pd.read_csv(csv, header=None, chunksize=CHUNK, dtype=np.float64):
            chunk.to_numpy()

    return run


def run(
    rows: int = ROWS, d: int = DIM, repeats: int = 3, log: Callable[[str], None] = print
) -> dict:
    """Time each way of reading the same rows; a JSON-ready dict with the targets."""
    data = np.asarray(bench.make_data(d, rows))
    est = welford()
    with tempfile.TemporaryDirectory() as tmp:
        csv, parquet = _write(data, Path(tmp))
        arrow = streams._arrow.pyarrow() is not None

        def fit_path(path, engine="auto"):
            if engine == "python":
                return lambda: (
                    fit(est, streams.read_csv_chunks(str(path), engine="python")).estimate
                )
            return lambda: fit(est, str(path)).estimate

        cases = {
            "fit, rows in memory": lambda: fit(est, data).estimate,
            "pandas read_csv(chunksize=65536)": _pandas(csv),
            "fit, CSV through Arrow": fit_path(csv) if arrow else None,
            "fit, CSV, Python reader": fit_path(csv, "python"),
            "fit, Parquet": fit_path(parquet) if parquet else None,
        }
        results = {}
        for name, call in cases.items():
            if call is None:
                results[name] = None
                log(f"{name:<36} skipped (not installed)")
                continue
            results[name] = rows / bench.time_call(call, repeats).seconds
            log(f"{name:<36} {results[name]:10.3g} rows/s")
    r = results
    targets = [
        _target("fit, CSV through Arrow", "pandas read_csv(chunksize=65536)", 2.0, r),
        _target("fit, Parquet", "fit, rows in memory", 0.5, r),
    ]
    return {
        "machine": bench.machine_info(["pyarrow", "pandas"]),
        "settings": {"rows": rows, "d": d, "repeats": repeats, "dtype": "float32"},
        "rows_per_s": results,
        "targets": targets,
    }


def _target(case: str, peer: str, at_least: float, rates: dict) -> dict:
    ours, theirs = rates.get(case), rates.get(peer)
    ratio = None if ours is None or theirs is None else ours / theirs
    result = "not measured" if ratio is None else ("pass" if ratio >= at_least else "miss")
    return {"case": case, "peer": peer, "at_least": at_least, "ratio": ratio, "result": result}


def markdown(result: dict) -> str:
    m, s, v = result["machine"], result["settings"], result["machine"]["versions"]
    lines = [
        "# File input: `fit` on CSV and Parquet files",
        "",
        f"`python -m benchmarks files --file-rows {s['rows']}` on {m['cpu']} ({m['cpu_count']} CPUs), "
        f"JAX backend {m['backend']}; jax {v['jax']}, numpy {v['numpy']}, pyarrow {v['pyarrow']}, "
        f"pandas {v['pandas']}. {s['rows']:,} × {s['d']} float32 rows written as CSV (`%.8g`) "
        f"and Parquet; median of {s['repeats']} calls after a warm-up, side by side in one "
        "process. `fit` is `fit(welford(), path)` (reading, converting and estimating); the "
        "pandas peer only reads (each chunk to a NumPy array).",
        "",
        "| how | rows/s |",
        "| --- | ---: |",
    ]
    for name, rate in result["rows_per_s"].items():
        lines.append(f"| {name} | {'skipped' if rate is None else f'{rate:.3g}'} |")
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
