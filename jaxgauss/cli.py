"""The ``jaxgauss`` command (also ``python -m jaxgauss``): demo, fit, sweep, bench."""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from jaxgauss import _cli_groups
from jaxgauss.estimators.registry import METHODS, get_method
from jaxgauss.parameterizations import PARAMETERIZATIONS

__all__ = ["main"]


def _check_out_name(value: str | None) -> None:
    if value is not None and not value.strip():
        raise ValueError("--out must name a file or folder, got an empty string")


def _check_folder(out: str) -> None:
    """An output folder may exist, but not as a file."""
    _check_out_name(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} is a file, not a folder: choose another name")


def _demo(args: argparse.Namespace) -> int:
    from jaxgauss.demo import run_demo

    _check_folder(args.out)
    run_demo(out=args.out, steps=args.steps, seed=args.seed)
    return 0


def _hyperparameters(args: argparse.Namespace) -> dict:
    """The hyperparameters given on the command line, by name (None: not given)."""
    return {h.name: getattr(args, h.name) for m in METHODS.values() for h in m.hyperparameters}


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


def method_config(args: argparse.Namespace) -> dict:
    """The settings that rebuild the estimator: the method, its hyperparameters (given
    or default, checked against the registry: one a method does not take is refused,
    not ignored) and, for gradient methods, the parameterisation. What a checkpoint
    stores and a resume must match."""
    method = get_method(args.method)
    config = {"method": method.name, **method.resolve(_hyperparameters(args))}
    if method.uses_parameterization:
        config["parameterization"] = args.parameterization or "cholesky"
    elif args.parameterization is not None:
        raise ValueError(
            f"method {method.name} does not take --parameterization (gradient methods do)"
        )
    return config


def _build_estimator(config: dict):
    method = get_method(config["method"])
    hyper = {k: v for k, v in config.items() if k not in ("method", "parameterization")}
    return method.build(config.get("parameterization", "cholesky"), **hyper)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return os.path.abspath(a) == os.path.abspath(b)


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before reading anything, an output that would overwrite an input
    (also through links) or another output."""
    from jaxgauss.checkpoint import npz_path

    _check_out_name(args.out)
    if args.checkpoint is not None and not args.checkpoint.strip():
        raise ValueError("--checkpoint must name a file, got an empty string")
    inputs = [("FILE", f) for f in args.file if f != "-"] + [("--resume", args.resume)]
    outputs = {"--out": args.out}
    if args.checkpoint:
        outputs["--checkpoint"] = str(npz_path(args.checkpoint))
    for out_name, out in outputs.items():
        for in_name, src in inputs:
            if out and src and _same_file(out, src):
                if (out_name, in_name) == ("--checkpoint", "--resume"):
                    continue  # replacing the checkpoint resumed from is the point
                raise ValueError(
                    f"{out_name} {out} is the same file as {in_name} {src}: refusing to overwrite it"
                )
    if args.out and args.checkpoint and _same_file(args.out, outputs["--checkpoint"]):
        raise ValueError(f"--out and --checkpoint name the same file {args.out}")


class _Tap:
    """The data's chunks as they pass into ``fit``: checks the width against a
    resumed state and remembers the last chunk (its raw values, for messages)."""

    def __init__(self, chunks, d: int | None, name: str):
        self.chunks, self.d, self.name = iter(chunks), d, name
        self.last, self.start, self.seen = None, 0, 0

    def __iter__(self):
        return self

    def __next__(self):
        chunk = next(self.chunks)
        if self.d is not None and np.ndim(chunk) == 2 and np.shape(chunk)[1] != self.d:
            raise ValueError(
                f"{self.name} has {np.shape(chunk)[1]} columns, the resumed state has d = {self.d}"
            )
        self.last, self.start = chunk, self.seen
        self.seen += np.shape(chunk)[0] if np.ndim(chunk) else 0
        return chunk

    def raw_row(self, row: int):
        if self.last is not None and self.start <= row < self.seen:
            return np.asarray(self.last[row - self.start])
        return None


def _data_dtype(args: argparse.Namespace):
    """The dtype ``fit`` will compute in, from the file's header (nothing consumed)."""
    from jaxgauss._fit import _float_dtype
    from jaxgauss.streams import file_kind, open_npy

    first = args.file[0]
    if first != "-" and file_kind(first) == "npy":
        return np.dtype(_float_dtype(open_npy(first).dtype))
    return np.dtype(_float_dtype(np.float64))


def _error_message(err: BaseException, name: str, tap: _Tap | None, dtype) -> str:
    from jaxgauss._fit import DataError

    if isinstance(err, KeyboardInterrupt):
        return "interrupted"
    if isinstance(err, DataError):
        raw = None if tap is None else tap.raw_row(err.row)
        if raw is not None and np.all(np.isfinite(raw)) and dtype != np.float64:
            return (
                f"{name}: row {err.row} overflows {dtype} (|x| > {np.finfo(dtype).max:.3g}); "
                "pass --float64 to read it"
            )
        return (
            f"{name}: row {err.row} is not finite (NaN or inf); "
            "pass --nan-policy skip to drop such rows"
        )
    return str(err)


def _estimate_fields(estimate) -> dict[str, np.ndarray]:
    """The estimate's fields as NumPy arrays, by name: a Gaussian's mean and cov, a
    StudentT's mean, scale and dof, a Mixture's weights, means and covs."""
    return {name: np.asarray(value) for name, value in estimate._asdict().items()}


def _print_estimate(fields: dict[str, np.ndarray], has_out: bool) -> None:
    """Each field in full while it is small (a d ≤ 10 covariance); a summary of the
    larger ones (the full arrays go to --out)."""
    with np.printoptions(precision=6, suppress=False, linewidth=120):
        for name, value in fields.items():
            if value.size <= 100:
                print(f"{name}:\n{value}")
            else:
                print(
                    f"{name}: shape {value.shape}, values in [{value.min():.6g}, {value.max():.6g}]"
                    + ("" if has_out else " (pass --out result.json for the full arrays)")
                )


def _fit(args: argparse.Namespace) -> int:
    import json

    import jax

    config = method_config(args)
    for path in args.file:
        if path != "-" and not os.path.exists(path):
            raise FileNotFoundError(f"no such file: {path}")
    _check_outputs(args)
    if args.float64:
        jax.config.update("jax_enable_x64", True)

    from jaxgauss import checkpoint
    from jaxgauss._fit import fit
    from jaxgauss.gaussian import Gaussian
    from jaxgauss.streams import read_chunks, read_csv_chunks

    distributed = _init_distributed(args)
    est = _build_estimator(config)
    if _cli_groups.wanted(args):
        return _cli_groups.run(args, est, config)
    dtype = _data_dtype(args)
    saved = {**config, "dtype": str(dtype)}
    state, d, before = None, None, 0
    if args.resume:
        meta = checkpoint.info(args.resume)
        d = (meta["config"] or {}).get("d")
        if not isinstance(d, int):
            raise ValueError(
                f"{args.resume} records no estimator settings (saved by jaxgauss "
                f"{meta['version']}, not by this version's fit --checkpoint): cannot check them"
            )
        like = est.init(Gaussian.standard(d, dtype))
        state = checkpoint.load(args.resume, like, name=args.method, config={**saved, "d": d})
        before = meta["rows"] or 0
    name = " ".join(args.file)
    tap, devices = None, None
    if distributed or len(args.file) > 1:
        # Several files or processes: the data-parallel driver reads and divides them.
        devices = jax.devices() if distributed else jax.devices()[:1]
        data = args.file[0] if len(args.file) == 1 else args.file
    else:
        if args.file == ["-"]:
            chunks = read_csv_chunks(sys.stdin.buffer, args.chunk or 65_536)
        else:
            chunks = read_chunks(args.file[0], args.chunk)[0]
        data = tap = _Tap(chunks, d, name)
    error, res = None, None
    try:
        with np.errstate(over="ignore"):  # float32 overflow is reported as such below
            res = fit(
                est,
                data,
                devices=devices,
                state=state,
                batch_size=args.batch_size,
                chunk_rows=args.chunk,
                nan_policy=args.nan_policy,
                progress=not args.quiet,
            )
    except (Exception, KeyboardInterrupt) as err:
        error, res = err, getattr(err, "result", None)
        if res is None:  # no row was read: nothing to keep
            raise
    if jax.process_index() > 0:  # every process holds the same result; process 0 writes it
        return 130 if isinstance(error, KeyboardInterrupt) else 2 if error is not None else 0

    # Outputs in a safe order: the checkpoint first, then --out, then stdout.
    lines, failures = [], []
    n, stopped = before + res.n_rows, res.n_rows + res.n_skipped
    if args.checkpoint:
        means = res.estimate._asdict().get("mean", getattr(res.estimate, "means", None))
        d_out = d if d is not None else int(np.shape(means)[-1])
        try:
            path = checkpoint.save(
                args.checkpoint, res.state, name=args.method, config={**saved, "d": d_out}, rows=n
            )
            lines.append(f"wrote {path}" + (" (partial)" if error else ""))
        except (OSError, ValueError) as e:
            failures.append(f"--checkpoint {args.checkpoint}: {e}")
        if not est.rowwise and res.n_rows % args.batch_size:
            print(
                f"jaxgauss fit: warning: the last {res.n_rows % args.batch_size} rows were one "
                f"shorter update (not a multiple of --batch-size {args.batch_size}); resuming "
                "from this checkpoint equals one pass over all rows only when every part but "
                "the last has a multiple of --batch-size rows",
                file=sys.stderr,
            )
    fields = _estimate_fields(res.estimate)
    diverged = int(res.diverged_at)
    result = {
        "method": args.method,
        "file": args.file[0] if len(args.file) == 1 else args.file,
        "n": n,
        "n_this_run": res.n_rows,
        "n_resumed": before,
        "n_skipped": res.n_skipped,
        "diverged_at": diverged,
        "dtype": str(fields[next(iter(fields))].dtype),
        "settings": config,
        "partial": error is not None,
    }
    if error is not None:
        result["stopped_at_row"] = stopped
        result["error"] = _error_message(error, name, tap, dtype)
    if args.out:
        try:
            result.update(_fields_for_json(fields, args.out))
            with open(args.out, "w") as f:
                json.dump(result, f, indent=2)
            lines.append(f"wrote {args.out}" + (" (partial)" if error else ""))
        except OSError as e:
            failures.append(f"--out {args.out}: {e}")

    resumed = f", {res.n_rows} in this run, {before} from {args.resume}" if args.resume else ""
    print(
        f"method {args.method}, n = {n} rows ({res.n_skipped} skipped{resumed}), "
        f"dtype {result['dtype']}" + (f"; stopped at row {stopped}" if error else "")
    )
    if diverged >= 0:
        print(f"diverged at row {diverged}: the estimate is the last valid one before it")
    _print_estimate(fields, bool(args.out))
    for line in lines:
        print(line)
    if error is not None:
        if args.checkpoint or args.out:
            kept = f"the fit of the {stopped} rows before row {stopped} was kept"
        else:
            kept = f"the fit of the {stopped} rows before it is printed above (pass --checkpoint to keep it)"
        print(
            f"jaxgauss fit: error: {_error_message(error, name, tap, dtype)}; {kept}",
            file=sys.stderr,
        )
    for failure in failures:
        print(f"jaxgauss fit: error: {failure}", file=sys.stderr)
    if isinstance(error, KeyboardInterrupt):
        return 130
    if error is not None and not isinstance(error, (ValueError, OSError)):
        raise error  # a bug, not bad input: its traceback, after the outputs are safe
    return 2 if error is not None or failures else 0


# Above this many entries a covariance goes to a .npy file beside the JSON, not into
# it: JSON text takes ~25 bytes an entry (a 20 000² matrix would be ~10 GB of text).
_JSON_MAX_ENTRIES = 250_000


def _fields_for_json(fields: dict[str, np.ndarray], out: str) -> dict:
    """The estimate's fields for the JSON: each as a list, or for a large array (a
    d × d covariance past ``_JSON_MAX_ENTRIES``) the name of a ``.npy`` file written
    beside the JSON (key ``<name>_file``)."""
    entries = {}
    for name, value in fields.items():
        if value.size <= _JSON_MAX_ENTRIES:
            entries[name] = value.tolist()
            continue
        path = f"{os.path.splitext(out)[0]}.{name}.npy"
        np.save(path, value)
        print(f"wrote {path} (the {' x '.join(map(str, value.shape))} {name})")
        entries[f"{name}_file"] = os.path.basename(path)
    return entries


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
    _check_folder(args.out)
    grid = np.geomspace(low, high, args.num_grid)
    for m in methods:
        m.swept_hyperparameter().check(low, m.name)
        m.swept_hyperparameter().check(high, m.name)
    _init_distributed(args)
    makers = {m.name: make_method(m.name, args.parameterization) for m in methods}
    swept = swept.pop().replace("_", " ")
    out = Path(args.out)
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

    if jax.process_index() > 0:
        return 0  # every process holds the same results; process 0 writes them
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
    return 0


def _bench(args: argparse.Namespace) -> int:
    import json

    from jaxgauss import bench

    _check_out_name(args.out)
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


# --- several processes -----------------------------------------------------------------

# Defaults of jax.distributed.initialize's timeouts (seconds): long enough for every
# host of a cluster job to start and compile, short enough that a dead peer ends the
# others within minutes rather than hanging them in a collective.
_INIT_TIMEOUT = 300
_HEARTBEAT_TIMEOUT = 60


def _add_distributed_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "several processes",
        "run on JAX's distributed runtime: every process runs the same command with its "
        "own --process-id (or the cluster launcher's environment sets them, as "
        "jax.distributed.initialize reads it: JAX_COORDINATOR_ADDRESS, SLURM, Open MPI)",
    )
    group.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
    group.add_argument("--num-processes", type=int, metavar="N", help="number of processes")
    group.add_argument("--process-id", type=int, metavar="I", help="this process, 0..N-1")
    group.add_argument(
        "--distributed",
        action="store_true",
        help="initialise from the cluster launcher's environment (SLURM, Open MPI, ...)",
    )
    group.add_argument(
        "--init-timeout",
        type=int,
        default=_INIT_TIMEOUT,
        metavar="S",
        help="give up if the processes have not all joined within S seconds (default: %(default)s)",
    )
    group.add_argument(
        "--heartbeat-timeout",
        type=int,
        default=_HEARTBEAT_TIMEOUT,
        metavar="S",
        help="a process silent this long counts as dead and the others stop (default: %(default)s)",
    )


def _init_distributed(args: argparse.Namespace) -> bool:
    """Join the processes if asked to (flags, --distributed, or JAX_COORDINATOR_ADDRESS);
    True when several processes run."""
    import jax

    flags = (args.coordinator, args.num_processes, args.process_id)
    if not (
        any(f is not None for f in flags)
        or args.distributed
        or os.environ.get("JAX_COORDINATOR_ADDRESS")
    ):
        return False
    if args.init_timeout < 1 or args.heartbeat_timeout < 1:
        raise ValueError("--init-timeout and --heartbeat-timeout must be >= 1 second")
    # CPU collectives between processes (no effect on accelerators).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    print(
        f"jaxgauss {args.command}: joining the distributed runtime (a process that has not "
        f"joined within {args.init_timeout} s, or is silent for {args.heartbeat_timeout} s, "
        "stops all of them)",
        file=sys.stderr,
        flush=True,
    )
    try:
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
            initialization_timeout=args.init_timeout,
            heartbeat_timeout_seconds=args.heartbeat_timeout,
        )
    except Exception as err:  # JAX raises RuntimeError/XlaRuntimeError on a timeout
        raise ValueError(
            f"could not join the distributed runtime within --init-timeout "
            f"{args.init_timeout} s: {err}"
        ) from None
    print(
        f"jaxgauss {args.command}: process {jax.process_index()} of {jax.process_count()}, "
        f"{jax.local_device_count()} local / {jax.device_count()} devices",
        file=sys.stderr,
        flush=True,
    )
    return jax.process_count() > 1


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
        "--steps", type=int, default=10_000, help="stream length (default: %(default)s)"
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
    fit.add_argument(
        "file",
        metavar="FILE",
        nargs="+",
        help="a .npy, .csv (or with pyarrow .parquet, .feather) file of shape (n, d); "
        "several files are read in order (with several processes, divided among them)",
    )
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
        choices=list(PARAMETERIZATIONS),
        help="for gradient methods (default: cholesky)",
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
    _add_distributed_options(fit)
    _cli_groups.add_arguments(fit)
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
    _add_distributed_options(sweep)
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
    """Entry point; returns the exit status: 0, or 2 with a one-line error for bad
    input, 130 on Ctrl-C, 141 when stdout was closed early."""
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        # stdout closed early (`| head -1`): whatever files were due are written
        # already; end quietly, as a program killed by SIGPIPE would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print(f"jaxgauss {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:
        print(f"jaxgauss {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
