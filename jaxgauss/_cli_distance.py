"""``jaxgauss distance A B``: a distance between the Gaussians of two data files (each
fitted by ``welford``, as ``jaxgauss fit`` reads it) or checkpoints (``fit
--checkpoint``), printed, or with ``--json`` as {"metric", "distance", ...}.

Both are compared in one frame: a ``welford`` state keeps its mean relative to its
first row, and the second state is moved into the first one's frame before the means
are subtracted, so float32 features with a large mean (10⁴) lose nothing to the
rounding of two means near 10⁴ (every metric here is invariant to a common shift)."""

from __future__ import annotations

import argparse
import json

from jaxgauss import _cli_paths

__all__ = ["METRICS", "add_command", "run"]

METRICS = ("frechet", "bhattacharyya", "hellinger", "kl")


def add_command(sub) -> None:
    """The ``distance`` command's parser, under the command's subparsers ``sub``."""
    distance = sub.add_parser(
        "distance",
        help="a distance between the Gaussians of two files or checkpoints",
        description="Fits a Gaussian to each of A and B with welford (any file fit reads: "
        ".npy, .csv, .parquet, ...), or loads it from a checkpoint (.npz, from fit "
        "--checkpoint), and prints the distance between them: frechet is FID's squared "
        "2-Wasserstein distance, hellinger is in [0, 1], kl is KL(A || B).",
    )
    distance.add_argument("a", metavar="A", help="a data file or a checkpoint (.npz)")
    distance.add_argument("b", metavar="B", help="a data file or a checkpoint (.npz)")
    distance.add_argument(
        "--metric", choices=METRICS, default="frechet", help="(default: %(default)s)"
    )
    distance.add_argument(
        "--json", action="store_true", help='print {"metric": ..., "distance": ...} as JSON'
    )
    distance.add_argument(
        "--float64",
        action="store_true",
        help="compute in float64 where the data are float64 (a CSV file's are; a float32 .npy "
        "stays float32)",
    )
    distance.set_defaults(func=run)


def _is_checkpoint(path: str) -> bool:
    return path.lower().endswith(".npz")


def _load_checkpoint(path: str):
    """The state and estimator a ``fit --checkpoint`` file records."""
    import jax
    import numpy as np

    from jaxgauss import checkpoint
    from jaxgauss.gaussian import Gaussian
    from jaxgauss.methods import get_method

    meta = checkpoint.info(path)
    config = dict(meta["config"] or {})
    if "method" not in config or not isinstance(config.get("d"), int):
        raise ValueError(f"{path} records no estimator settings (save it with fit --checkpoint)")
    dtype = np.dtype(config.get("dtype", "float32"))
    if dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    hyper = {
        k: v for k, v in config.items() if k not in ("method", "parameterization", "dtype", "d")
    }
    est = get_method(config["method"]).build(config.get("parameterization", "cholesky"), **hyper)
    like = est.init(Gaussian.standard(config["d"], dtype))
    return checkpoint.load(path, like, name=meta["name"]), est


def _fitted(path: str):
    """(state, estimator) of ``path``: a checkpoint, or a welford fit of a data file."""
    from jaxgauss._fit import fit
    from jaxgauss.estimators.moments import welford

    if _is_checkpoint(path):
        return _load_checkpoint(path)
    est = welford()
    return fit(est, path, progress=False).state, est


def _in_one_frame(a, est_a, b, est_b):
    """The two Gaussians; moment states' means both relative to a's origin."""
    from jaxgauss.estimators.moments import MomentsState, WelfordState
    from jaxgauss.gaussian import Gaussian

    ga, gb = est_a.estimate(a), est_b.estimate(b)
    for name, g in (("A", ga), ("B", gb)):
        if not isinstance(g, Gaussian):
            raise ValueError(f"{name} holds a {type(g).__name__}, not a Gaussian")
    framed = (WelfordState, MomentsState)  # the rows' mean is origin + mean
    if isinstance(a, framed) and isinstance(b, framed) and a.origin.shape == b.origin.shape:
        b = b.reframed(a.origin.astype(b.origin.dtype))
        ga, gb = Gaussian(a.mean, ga.cov), Gaussian(b.mean, gb.cov)
    return ga, gb


def run(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from jaxgauss import distances
    from jaxgauss.gaussian import kl_divergence

    _cli_paths.check_inputs_exist([args.a, args.b])
    if args.float64:
        jax.config.update("jax_enable_x64", True)
    (a, est_a), (b, est_b) = _fitted(args.a), _fitted(args.b)
    ga, gb = _in_one_frame(a, est_a, b, est_b)
    if ga.mean.shape != gb.mean.shape:
        raise ValueError(f"A has dimension {ga.mean.shape[-1]} and B {gb.mean.shape[-1]}")
    dtype = np.result_type(ga.mean.dtype, gb.mean.dtype)
    ga, gb = ga.astype(dtype), gb.astype(dtype)
    fn = {
        "frechet": distances.frechet_distance,
        "bhattacharyya": distances.bhattacharyya_distance,
        "hellinger": distances.hellinger_distance,
        "kl": kl_divergence,
    }[args.metric]
    value = float(fn(ga, gb))
    if args.json:
        record = {"metric": args.metric, "distance": value, "a": args.a, "b": args.b}
        print(json.dumps({**record, "dtype": str(dtype), "d": int(ga.mean.shape[-1])}))
    else:
        print(f"{value:.10g}")
    return 0
