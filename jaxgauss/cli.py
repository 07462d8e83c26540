"""The ``jaxgauss`` command (also ``python -m jaxgauss``): demo, fit, sweep, bench."""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from jaxgauss.estimators import METHODS
from jaxgauss.parameterizations import PARAMETERIZATIONS

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from jaxgauss.demo import run_demo

    run_demo(out=args.out, steps=args.steps, seed=args.seed)
    return 0


def _fit_estimator(args: argparse.Namespace):
    from jaxgauss.estimators import exponential, make_method, natural_gradient, welford

    if args.method in EM_METHODS:
        return _em_estimator(args)
    if args.method == "welford":
        return welford()
    if args.method == "natural":
        return natural_gradient(args.lr)
    if args.method == "exponential":
        if args.half_life is None:
            raise ValueError("--method exponential needs --half-life ROWS")
        return exponential(args.half_life)
    if args.lr is None:
        raise ValueError(
            f"--method {args.method} needs --lr (jaxgauss sweep finds a good one), "
            "or use --method welford for the exact MLE"
        )
    return make_method(args.method, args.parameterization)(args.lr)


# Online-EM methods: fit only (their estimates are not one Gaussian).
EM_METHODS = ("student-t", "mixture")


def _em_estimator(args: argparse.Namespace):
    import jax

    from jaxgauss.estimators import gaussian_mixture, student_t

    if args.method == "student-t":
        if args.dof is None or not args.dof > 0:
            raise ValueError("--method student-t needs --dof NU > 0 (degrees of freedom)")
        return student_t(args.dof, args.lr)
    if args.components is None or args.components < 1:
        raise ValueError("--method mixture needs --components K >= 1")
    return gaussian_mixture(args.components, args.lr, key=jax.random.key(args.seed))


def _estimate_json(est) -> dict:
    """The estimate's fields as JSON lists (a Gaussian's mean and cov; a StudentT's
    mean, scale and dof; a Mixture's weights, means and covs)."""
    return {name: np.asarray(value).tolist() for name, value in est._asdict().items()}


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
    if args.method in EM_METHODS:
        return _report_em(args, res)
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
        "cov": cov.tolist(),
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.out}")
    if args.checkpoint:
        print(f"wrote {checkpoint.save(args.checkpoint, res.state, name=args.method)}")
    return 0


def _report_em(args: argparse.Namespace, res) -> int:
    import json

    from jaxgauss import checkpoint

    fields = _estimate_json(res.estimate)
    print(f"method {args.method}, n = {res.n_rows} rows ({res.n_skipped} skipped)")
    if int(res.diverged_at) >= 0:
        print(
            f"diverged at row {int(res.diverged_at)}: the estimate is the last valid one before it"
        )
    with np.printoptions(precision=6, linewidth=120):
        for name, value in fields.items():
            print(f"{name}:\n{np.asarray(value)}")
    result = {
        "method": args.method,
        "file": args.file,
        "n": res.n_rows,
        "n_skipped": res.n_skipped,
        "diverged_at": int(res.diverged_at),
        **fields,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.out}")
    if args.checkpoint:
        print(f"wrote {checkpoint.save(args.checkpoint, res.state, name=args.method)}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import jax
    import numpy as np

    from jaxgauss._sweep import sweep
    from jaxgauss.estimators import make_method
    from jaxgauss.streams import random_truth

    if not 0 < args.lr_min <= args.lr_max:
        raise ValueError(f"need 0 < --lr-min <= --lr-max, got {args.lr_min} and {args.lr_max}")
    if args.num_lr < 1:
        raise ValueError(f"--num-lr must be >= 1, got {args.num_lr}")
    if args.steps < 1 or args.batch_size < 1 or args.steps % args.batch_size:
        raise ValueError(
            f"--steps ({args.steps}) must be a positive multiple of --batch-size ({args.batch_size})"
        )
    makers = {m: make_method(m, args.parameterization) for m in dict.fromkeys(args.method)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lrs = np.geomspace(args.lr_min, args.lr_max, args.num_lr)
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
            lrs,
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
            best = (name, float(lrs[k]), median)
    if best is None:
        print("\nbest: none (every learning rate diverged on some seed)")
    else:
        print(
            f"\nbest: {best[0]} with learning rate {best[1]:.4g} (median efficiency {best[2]:.4g})"
        )

    names = list(results)
    np.savez(
        out / "sweep.npz",
        methods=np.array(names),
        learning_rates=lrs,
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
        choices=list(METHODS) + list(EM_METHODS),
        help="estimator (default: %(default)s, the exact maximum-likelihood estimate)",
    )
    fit.add_argument(
        "--lr",
        type=float,
        help="learning rate of gradient methods; for natural, a constant step (default 1/t)",
    )
    fit.add_argument("--half-life", type=float, help="half-life in rows, for --method exponential")
    fit.add_argument("--dof", type=float, help="degrees of freedom, for --method student-t")
    fit.add_argument("--components", type=int, help="number of components, for --method mixture")
    fit.add_argument(
        "--seed", type=int, default=0, help="k-means++ seed, for --method mixture (default: 0)"
    )
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
    fit.add_argument("--out", help="write the result as JSON (keys mean, cov, n, method, ...)")
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
        help="one or more of welford, natural, exponential, sgd, adam, averaged-sgd, "
        "fisher-sgd (default: %(default)s)",
    )
    sweep.add_argument(
        "--parameterization",
        default="cholesky",
        help="covariance, cholesky, precision or diagonal, for gradient methods "
        "(default: %(default)s)",
    )
    sweep.add_argument(
        "--lr-min", type=float, default=1e-4, help="smallest learning rate (default: %(default)s)"
    )
    sweep.add_argument(
        "--lr-max", type=float, default=1e-1, help="largest learning rate (default: %(default)s)"
    )
    sweep.add_argument(
        "--num-lr", type=int, default=10, help="log-spaced learning rates (default: %(default)s)"
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
