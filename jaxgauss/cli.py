"""The ``jaxgauss`` command (also ``python -m jaxgauss``): demo, fit, sweep, bench."""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from jaxgauss.estimators.registry import METHODS, get_method
from jaxgauss.parameterizations import PARAMETERIZATIONS

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from jaxgauss.demo import run_demo

    run_demo(out=args.out, steps=args.steps, seed=args.seed)
    return 0


def _hyperparameters(args: argparse.Namespace) -> dict:
    """The hyperparameters given on the command line, by name (None: not given)."""
    return {h.name: getattr(args, h.name) for m in METHODS.values() for h in m.hyperparameters}


def _fit_estimator(args: argparse.Namespace):
    return get_method(args.method)(args.parameterization, **_hyperparameters(args))


def _add_hyperparameter_options(parser: argparse.ArgumentParser) -> None:
    """One option per hyperparameter named in the registry, its help saying which
    methods take it and what it means for each."""
    group = parser.add_argument_group("method hyperparameters (generated from the registry)")
    records: dict[str, list] = {}
    for method in METHODS.values():
        for h in method.hyperparameters:
            records.setdefault(h.name, []).append((method.name, h))
    for name, uses in records.items():
        first = uses[0][1]
        meaning = "; ".join(
            f"{', '.join(m for m, x in uses if x.help == h.help)}: {h.help}"
            for h in {x.help: x for _, x in uses}.values()
        )
        group.add_argument(
            first.flag,
            *sorted({a for _, h in uses for a in h.aliases}),
            dest=name,
            type=int if first.integer else float,
            default=None,
            help=meaning,
        )


def _data_dim(path: str) -> int:
    from jaxgauss.streams import read_chunks

    chunks, _, _ = read_chunks(path, chunk_rows=1)
    first = next(iter(chunks), None)
    if first is None or np.ndim(first) != 2:
        raise ValueError(f"{path} holds no rows of shape (n, d)")
    return first.shape[1]


def _fit(args: argparse.Namespace) -> int:
    import json

    import jax

    if args.float64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from jaxgauss import checkpoint
    from jaxgauss._fit import DataError, fit
    from jaxgauss.gaussian import Gaussian

    if not os.path.exists(args.file):
        raise FileNotFoundError(f"no such file: {args.file}")
    est = _fit_estimator(args)
    state = None
    if args.resume:
        d = _data_dim(args.file)
        dtype = jnp.zeros(()).dtype
        like = est.init(Gaussian.standard(d, dtype))
        state = checkpoint.load(args.resume, like, name=args.method)
    try:
        res = fit(
            est,
            args.file,
            state=state,
            batch_size=args.batch_size,
            chunk_rows=args.chunk,
            nan_policy=args.nan_policy,
            progress=not args.quiet,
        )
    except DataError as err:
        raise ValueError(
            f"{args.file}: row {err.row} is not finite (NaN or inf); "
            "pass --nan-policy skip to drop such rows"
        ) from None
    mean, cov = np.asarray(res.estimate.mean), np.asarray(res.estimate.cov)
    diverged = int(res.diverged_at)
    with np.printoptions(precision=6, suppress=False, linewidth=120):
        print(
            f"method {args.method}, n = {res.n_rows} rows ({res.n_skipped} skipped), dtype {mean.dtype}"
        )
        if diverged >= 0:
            print(f"diverged at row {diverged}: the estimate is the last valid one before it")
        print(f"mean:\n{mean}\ncov:\n{cov}")
    result = {
        "method": args.method,
        "file": args.file,
        "n": res.n_rows,
        "n_skipped": res.n_skipped,
        "diverged_at": diverged,
        "dtype": str(mean.dtype),
        "mean": mean.tolist(),
    }
    if args.out:
        result.update(_cov_for_json(cov, args.out))
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.out}")
    if args.checkpoint:
        print(f"wrote {checkpoint.save(args.checkpoint, res.state, name=args.method)}")
    return 0


# Above this many entries a covariance goes to a .npy file beside the JSON, not into
# it: JSON text takes ~25 bytes an entry (a 20 000² matrix would be ~10 GB of text).
_JSON_MAX_ENTRIES = 250_000


def _cov_for_json(cov: np.ndarray, out: str) -> dict:
    """The JSON's covariance: the list itself, or for a large matrix the name of a
    ``.npy`` file written beside the JSON (key ``cov_file``)."""
    if cov.size <= _JSON_MAX_ENTRIES:
        return {"cov": cov.tolist()}
    path = os.path.splitext(out)[0] + ".cov.npy"
    np.save(path, cov)
    print(f"wrote {path} (the {cov.shape[0]} x {cov.shape[1]} covariance)")
    return {"cov_file": os.path.basename(path)}


def _sweep(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import jax
    import numpy as np

    from jaxgauss._sweep import sweep
    from jaxgauss.estimators import make_method
    from jaxgauss.streams import random_truth

    methods = [get_method(m) for m in dict.fromkeys(args.method)]
    swept = {m.swept for m in methods}
    if len(swept) > 1:
        raise ValueError(
            "the methods of one sweep must vary the same hyperparameter; these vary "
            + ", ".join(f"{m.name}: {m.swept}" for m in methods)
            + " (sweep them in separate calls)"
        )
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
    grid = np.geomspace(low, high, args.num_grid)
    for m in methods:
        m.swept_hyperparameter().check(low, m.name)
        m.swept_hyperparameter().check(high, m.name)
    makers = {m.name: make_method(m.name, args.parameterization) for m in methods}
    swept = swept.pop().replace("_", " ")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    key_truth, key_stream = jax.random.split(jax.random.key(args.seed))
    truth = random_truth(key_truth, args.dim, args.condition)
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
            key=key_stream,
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
    if best is None:
        print(f"\nbest: none (every {swept} diverged on some seed)")
    else:
        print(f"\nbest: {best[0]} with {swept} {best[1]:.4g} (median efficiency {best[2]:.4g})")

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
    return 0


def _bench(args: argparse.Namespace) -> int:
    import json

    from jaxgauss import bench

    for name in ("rows", "repeats"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if min(args.dims) < 1:
        raise ValueError(f"--dims must be >= 1, got {args.dims}")

    def progress(r: dict) -> None:
        print(f"  d={r['d']:<4} {r['name']:<34} {r['rows_per_s']:10.3g} rows/s", file=sys.stderr)

    result = bench.run(args.dims, args.rows, args.repeats, progress=progress)
    m = result["machine"]
    print(
        f"jaxgauss bench: jaxgauss.fit on {m['device_kind']} (backend {m['backend']}), float32, "
        f"median of {args.repeats} calls after a warm-up\n"
    )
    print(bench.format_table(result["results"]))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.out}")
    return 0


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
    demo.add_argument(
        "--steps", type=int, default=100_000, help="stream length (default: %(default)s)"
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    demo.set_defaults(func=_demo)

    fit = sub.add_parser(
        "fit",
        help="fit a Gaussian to the rows of a .npy or .csv file",
        description="Streams the rows of FILE (a .npy file is memory-mapped, so it may be "
        "larger than memory; a .csv file may have a header line) through an estimator in "
        "chunks and prints n, the mean and the covariance.",
    )
    fit.add_argument("file", metavar="FILE", help="a .npy or .csv file of shape (n, d)")
    fit.add_argument(
        "--method",
        default="welford",
        choices=list(METHODS),
        help="estimator (default: %(default)s, the exact maximum-likelihood estimate): "
        + "; ".join(f"{m.name}: {m.summary}" for m in METHODS.values()),
    )
    _add_hyperparameter_options(fit)
    fit.add_argument(
        "--parameterization",
        default="cholesky",
        choices=list(PARAMETERIZATIONS),
        help="for gradient methods (default: %(default)s)",
    )
    fit.add_argument(
        "--batch-size", type=int, default=1, help="rows per update (default: %(default)s)"
    )
    fit.add_argument("--chunk", type=int, default=None, help="rows read per chunk (default: 65536)")
    fit.add_argument(
        "--nan-policy",
        choices=["raise", "skip"],
        default="raise",
        help="rows with NaN or inf: stop with an error naming the row, or skip and count them (default: %(default)s)",
    )
    fit.add_argument("--float64", action="store_true", help="compute in float64 (default: float32)")
    fit.add_argument(
        "--out",
        help="write the result as JSON (keys mean, cov, n, method, ...); a covariance of "
        "more than 250 000 entries goes to a .npy file beside it (key cov_file)",
    )
    fit.add_argument("--checkpoint", help="save the final estimator state to this .npz")
    fit.add_argument("--resume", help="continue from a state saved with --checkpoint")
    fit.add_argument("--quiet", action="store_true", help="no progress line")
    fit.set_defaults(func=_fit)

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
    sweep.add_argument(
        "--out", default="jaxgauss-sweep", help="output folder (default: %(default)s)"
    )
    sweep.set_defaults(func=_sweep)

    bench = sub.add_parser(
        "bench",
        help="jaxgauss's throughput on the current backend",
        description="Times jaxgauss.fit of each estimator (welford, natural_gradient, "
        "exponential, gradient ascent; batch sizes 1, 64 and 1024; blocked and row by row) "
        "on float32 rows on the current JAX backend, after a warm-up, as the median of "
        "repeats, and prints rows per second. Costlier cases and larger d are timed on "
        "fewer rows. From a checkout, python -m benchmarks adds peers side by side.",
    )
    bench.add_argument(
        "--dims", type=int, nargs="+", default=[1, 10, 100], help="dimensions (default: 1 10 100)"
    )
    bench.add_argument(
        "--rows",
        type=int,
        default=2**20,
        help="rows for the cheapest cases at d <= 10 (default: %(default)s)",
    )
    bench.add_argument(
        "--repeats", type=int, default=5, help="timed calls per case (default: %(default)s)"
    )
    bench.add_argument("--out", help="also write the results and the machine as JSON")
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
