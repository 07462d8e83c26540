"""``jaxgauss sweep``: each method over a log-spaced grid of its swept hyperparameter
x seeds on synthetic streams from one random truth, in one compiled call per method;
the median efficiencies on stdout, sweep.npz and heatmap.png in the --out folder."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from jaxgauss import _cli_distributed, _cli_paths
from jaxgauss._cli_options import add_hyperparameter_options, given_hyperparameters
from jaxgauss.methods import METHODS, get_method, make_method

__all__ = ["add_command", "run"]


# Hyperparameters whose flag the sweep keeps for its streams (--seed seeds them).
STREAM_OPTIONS = ("seed",)


def add_command(sub) -> None:
    """The ``sweep`` command's parser, under the command's subparsers ``sub``."""
    sweep = sub.add_parser(
        "sweep",
        help="learning rates x seeds in one compiled call",
        description="Runs each method over log-spaced learning rates x seeds on synthetic "
        "streams from a random Gaussian (every configuration sees the same streams), prints "
        "the median efficiency KL(truth||estimate) / KL(truth||batch MLE) per learning rate "
        "and the best configuration, and writes sweep.npz and heatmap.png to --out.",
    )
    sweep.add_argument(
        "--method",
        nargs="+",
        default=["sgd"],
        help=f"one or more of {', '.join(METHODS)}, varying the same hyperparameter "
        "(default: %(default)s)",
    )
    sweep.add_argument(
        "--parameterization",
        default="cholesky",
        help="covariance, cholesky, precision or diagonal, for gradient methods "
        "(default: %(default)s)",
    )
    _add_grid_options(sweep)
    _add_stream_options(sweep)
    sweep.add_argument(
        "--out", default="jaxgauss-sweep", help="output folder (default: %(default)s)"
    )
    _cli_distributed.add_options(sweep)
    add_hyperparameter_options(sweep, skip=STREAM_OPTIONS)  # --dof for student-t, …
    sweep.set_defaults(func=run)


def _add_grid_options(sweep: argparse.ArgumentParser) -> None:
    sweep.add_argument(
        "--grid-min",
        "--lr-min",
        type=float,
        help="smallest value of the swept hyperparameter (default: the method's range: "
        + "; ".join(
            f"{m.name} {m.swept} {m.swept_hyperparameter().grid[0]:g}..{m.swept_hyperparameter().grid[1]:g}"
            for m in METHODS.values()
        )
        + ")",
    )
    sweep.add_argument(
        "--grid-max", "--lr-max", type=float, help="largest value of the swept hyperparameter"
    )
    sweep.add_argument(
        "--num-grid",
        "--num-lr",
        type=int,
        default=10,
        help="log-spaced values of the swept hyperparameter (default: %(default)s)",
    )


def _add_stream_options(sweep: argparse.ArgumentParser) -> None:
    sweep.add_argument(
        "--seeds", type=int, default=16, help="streams per learning rate (default: %(default)s)"
    )
    sweep.add_argument("--dim", type=int, default=2, help="dimension d (default: %(default)s)")
    sweep.add_argument(
        "--condition",
        type=float,
        default=10.0,
        help="condition number of the true covariance (default: %(default)s)",
    )
    sweep.add_argument(
        "--steps", type=int, default=10_000, help="data rows per stream (default: %(default)s)"
    )
    sweep.add_argument(
        "--batch-size", type=int, default=1, help="rows per update (default: %(default)s)"
    )
    sweep.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed of the truth and streams (default: %(default)s)",
    )


def _sweep_methods(names: list[str]) -> list:
    """The registry records of the methods to sweep, each once; they must vary the
    same hyperparameter."""
    methods = [get_method(m) for m in dict.fromkeys(names)]
    swept = {m.swept for m in methods}
    if len(swept) > 1:
        raise ValueError(
            "the methods of one sweep must vary the same hyperparameter; these vary "
            + ", ".join(f"{m.name}: {m.swept}" for m in methods)
            + " (sweep them in separate calls)"
        )
    return methods


def _sweep_grid(args: argparse.Namespace, methods: list) -> np.ndarray:
    """The swept hyperparameter's log-spaced values, once the command's settings are
    checked (--out too, as a folder)."""
    low, high = methods[0].swept_hyperparameter().grid
    low = low if args.grid_min is None else args.grid_min
    high = high if args.grid_max is None else args.grid_max
    if not 0 < low <= high:
        raise ValueError(f"need 0 < --grid-min <= --grid-max, got {low} and {high}")
    if args.num_grid < 1:
        raise ValueError(f"--num-grid must be >= 1, got {args.num_grid}")
    if args.steps < 1 or args.batch_size < 1 or args.steps % args.batch_size:
        raise ValueError(
            f"--steps ({args.steps}) must be a positive multiple of --batch-size ({args.batch_size})"
        )
    _cli_paths.check_folder(args.out)
    grid = np.geomspace(low, high, args.num_grid)
    for m in methods:
        m.swept_hyperparameter().check(low, m.name)
        m.swept_hyperparameter().check(high, m.name)
    return grid


def _run_sweeps(args: argparse.Namespace, makers: dict, grid: np.ndarray, truth, key):
    """Each method's sweep, its table printed when it ends: ``(results, best)``, the
    results by method and the best (method, value, median efficiency) of them all, or
    None when every value diverged on some seed."""
    from jaxgauss._sweep import sweep

    # Up to 20 equal chunks, so the progress bar moves and one program serves them all.
    updates = args.steps // args.batch_size
    parts = next(c for c in range(20, 0, -1) if updates % c == 0)
    results, best = {}, None
    for name, make in makers.items():
        print(f"{name}:", file=sys.stderr)
        res = sweep(
            make,
            grid,
            truth=truth,
            n_steps=args.steps,
            seeds=args.seeds,
            key=key,
            batch_size=args.batch_size,
            chunk_steps=args.steps // parts,
            progress=True,
        )
        results[name] = res
        print(
            f"\n{name} ({args.parameterization}): efficiency = KL(truth||estimate) / KL(truth||MLE)"
        )
        print(res.summary())
        try:
            k = res.best_index()
        except ValueError:
            continue
        median = float(res.stats()[0][k])
        if best is None or median < best[2]:
            best = (name, float(grid[k]), median)
    return results, best


def _write_sweep(args: argparse.Namespace, results: dict, grid: np.ndarray, swept: str, truth):
    """sweep.npz (every method's final KL, divergence rows and efficiencies, the truth
    and the settings) and, with matplotlib, heatmap.png in the --out folder."""
    import json
    from pathlib import Path

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(results)
    np.savez(
        out / "sweep.npz",
        methods=np.array(names),
        grid=grid,
        hyperparameter=np.array(swept),
        final_kl=np.stack([np.asarray(results[n].final_kl) for n in names]),
        diverged_at=np.stack([np.asarray(results[n].diverged_at) for n in names]),
        efficiency=np.stack([np.asarray(results[n].efficiency) for n in names]),
        mle_kl=np.asarray(results[names[0]].mle_kl),
        truth_mean=np.asarray(truth.mean),
        truth_cov=np.asarray(truth.cov),
        settings=json.dumps({k: v for k, v in vars(args).items() if k != "func"}),
    )
    print(f"wrote {out / 'sweep.npz'}")
    try:
        from jaxgauss.plot import plot_sweep_heatmap

        print(f"wrote {plot_sweep_heatmap(results, str(out / 'heatmap.png'))}")
    except ImportError as err:
        print(f"no heatmap: {err}")


def _fixed(args: argparse.Namespace, method) -> dict:
    """The hyperparameters given on the command line that a method's sweep holds
    fixed; the swept one is set by the grid options, not by its own flag."""
    given = given_hyperparameters(args)
    given = {k: v for k, v in given.items() if v is not None and k not in STREAM_OPTIONS}
    if method.swept in given:
        flag = method.swept_hyperparameter().flag
        raise ValueError(
            f"{flag} is what the sweep of {method.name} varies: set its range with "
            "--grid-min and --grid-max"
        )
    return given


def _check_gaussian_estimate(name: str, estimator, d: int) -> None:
    """The command scores estimates by KL(truth || estimate), which needs a Gaussian:
    a Student-t or a mixture is refused, pointing to ``jg.sweep``'s ``score``."""
    import jax
    import jax.numpy as jnp

    from jaxgauss.gaussian import Gaussian

    g0 = Gaussian.standard(d, jnp.float32)
    kind = jax.eval_shape(lambda: estimator.estimate(estimator.init(g0)))
    if not isinstance(kind, Gaussian):
        raise ValueError(
            f"method {name} estimates a {type(kind).__name__}, not a Gaussian, and the sweep "
            "command scores by KL(truth || estimate): sweep it from Python with "
            "jaxgauss.sweep(..., score=...) (e.g. a held-out log-likelihood)"
        )


def run(args: argparse.Namespace) -> int:
    """``jaxgauss sweep``: its exit status."""
    import jax

    from jaxgauss.streams import random_truth

    methods = _sweep_methods(args.method)
    grid = _sweep_grid(args, methods)
    _cli_distributed.initialize(args)
    makers = {
        m.name: make_method(m.name, args.parameterization, **_fixed(args, m)) for m in methods
    }
    for name, make in makers.items():
        _check_gaussian_estimate(name, make(grid[0]), args.dim)
    swept = methods[0].swept.replace("_", " ")
    key_truth, key_stream = jax.random.split(jax.random.key(args.seed))
    truth = random_truth(key_truth, args.dim, args.condition)
    results, best = _run_sweeps(args, makers, grid, truth, key_stream)
    if best is None:
        print(f"\nbest: none (every {swept} diverged on some seed)")
    else:
        print(f"\nbest: {best[0]} with {swept} {best[1]:.4g} (median efficiency {best[2]:.4g})")
    if jax.process_index() > 0:
        return 0  # every process holds the same results; process 0 writes them
    _write_sweep(args, results, grid, swept, truth)
    return 0
