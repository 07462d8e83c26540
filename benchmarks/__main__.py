"""``python -m benchmarks [all | speed | files | efficiency | groups] [options]``, from a checkout.

speed writes ``<out>/<backend>.json`` and ``.md`` (``--name`` overrides the name);
files (file input: CSV and Parquet against pandas) writes ``<out>/files.json`` and
``.md``; efficiency writes ``<out>/efficiency.json``, ``.md`` and ``.png``; groups
writes ``<out>/groups.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax

from benchmarks import efficiency, files, groups, speed
from jaxgauss import bench

RESULTS = Path(__file__).resolve().parent / "results"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="jaxgauss against peers (speed) and the statistical efficiency of its "
        "estimators; results go to --out as JSON, Markdown and PNG.",
    )
    parser.add_argument(
        "what",
        nargs="?",
        default="all",
        choices=["all", "speed", "files", "efficiency", "groups"],
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="results folder (default: %(default)s)"
    )
    speed_args = parser.add_argument_group("speed")
    speed_args.add_argument("--dims", type=int, nargs="+", default=list(bench.DEFAULT_DIMS))
    speed_args.add_argument(
        "--rows", type=int, default=bench.DEFAULT_ROWS, help="rows of the cheapest cases at d <= 10"
    )
    speed_args.add_argument("--repeats", type=int, default=bench.DEFAULT_REPEATS)
    speed_args.add_argument("--name", help="results name (default: the JAX backend, e.g. cpu)")
    file_args = parser.add_argument_group("files")
    file_args.add_argument(
        "--file-rows", type=int, default=files.ROWS, help="rows of the CSV/Parquet files"
    )
    eff_args = parser.add_argument_group("efficiency")
    eff_args.add_argument("--dim", type=int, default=efficiency.DIM)
    eff_args.add_argument("--seeds", type=int, default=efficiency.SEEDS)
    eff_args.add_argument("--max-rows", type=int, default=efficiency.MAX_ROWS)
    eff_args.add_argument(
        "--conditions", type=float, nargs="+", default=list(efficiency.CONDITIONS)
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    start = time.perf_counter()
    if args.what in ("all", "speed"):
        result = speed.run(args.dims, args.rows, args.repeats, log=lambda s: print(s, flush=True))
        for path in speed.write(result, args.out, args.name or jax.default_backend()):
            print(f"wrote {path}")
    if args.what in ("all", "files"):
        result = files.run(args.file_rows, repeats=min(args.repeats, 3))
        for path in files.write(result, args.out):
            print(f"wrote {path}")
    if args.what in ("all", "efficiency"):
        result = efficiency.run(
            args.dim, args.seeds, args.max_rows, args.conditions, log=lambda s: print(s, flush=True)
        )
        for path in efficiency.write(result, args.out):
            print(f"wrote {path}")
    if args.what in ("all", "groups"):
        for path in groups.write(groups.run(log=lambda s: print(s, flush=True)), args.out):
            print(f"wrote {path}")
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
