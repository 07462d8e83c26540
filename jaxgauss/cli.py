"""The ``jaxgauss`` command (also ``python -m jaxgauss``): demo, fit, sweep, bench."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from jaxgauss.demo import run_demo

    run_demo(out=args.out, steps=args.steps, seed=args.seed)
    return 0


def _fit(args: argparse.Namespace) -> int:
    raise NotImplementedError("jaxgauss fit is not available yet")


def _sweep(args: argparse.Namespace) -> int:
    raise NotImplementedError("jaxgauss sweep is not available yet")


def _bench(args: argparse.Namespace) -> int:
    raise NotImplementedError("jaxgauss bench is not available yet")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxgauss",
        description="Online estimation of a Gaussian's mean and covariance in JAX.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="why gradient ascent on a Gaussian likelihood fails, and what fixes it",
        description="Runs the classic question's setup (1-D N(0, 1), constant step 0.002) and "
        "a 5-D correlated variant with every estimator, prints a table against the batch "
        "MLE, explains the failure and writes a PNG of error against step.",
    )
    demo.add_argument("--out", default="jaxgauss-demo", help="output folder (default: %(default)s)")
    demo.add_argument("--steps", type=int, default=100_000, help="stream length (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    demo.set_defaults(func=_demo)

    fit = sub.add_parser("fit", help="fit a Gaussian to the rows of a .npy or .csv file")
    fit.set_defaults(func=_fit)

    sweep = sub.add_parser("sweep", help="learning rates x seeds in one compiled call")
    sweep.set_defaults(func=_sweep)

    bench = sub.add_parser("bench", help="jaxgauss's throughput on the current backend")
    bench.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status. Bad input gives a one-line error and 2."""
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, IsADirectoryError, PermissionError) as err:
        print(f"jaxgauss {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
