"""The ``jaxgauss`` command (also ``python -m jaxgauss``): demo, fit, sweep, bench."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NamedTuple

import numpy as np

from jaxgauss import _cli_distance, _cli_distributed, _cli_groups, _cli_paths, _cli_sweep
from jaxgauss._cli_options import add_hyperparameter_options, given_hyperparameters
from jaxgauss.methods import METHODS, get_method
from jaxgauss.parameterizations import PARAMETERIZATIONS

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from jaxgauss.demo import run_demo

    _cli_paths.check_folder(args.out)
    run_demo(out=args.out, steps=args.steps, seed=args.seed)
    return 0


def method_config(args: argparse.Namespace) -> dict:
    """The settings that rebuild the estimator: the method, its hyperparameters (given
    or default, checked against the registry: one a method does not take is refused,
    not ignored) and, for gradient methods, the parameterisation. What a checkpoint
    stores and a resume must match."""
    method = get_method(args.method)
    config = {"method": method.name, **method.resolve(given_hyperparameters(args))}
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
    from jaxgauss._stream import float_dtype
    from jaxgauss.streams import file_kind, open_npy

    first = args.file[0]
    if first != "-" and file_kind(first) == "npy":
        return np.dtype(float_dtype(open_npy(first).dtype))
    return np.dtype(float_dtype(np.float64))


def _error_message(err: BaseException, name: str, tap: _Tap | None, dtype) -> str:
    from jaxgauss._engine import DataError

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


class _FitRun(NamedTuple):
    """What one ``jaxgauss fit`` read and what ``fit`` returned: all its outputs need."""

    args: argparse.Namespace
    estimator: Any
    config: dict  # method_config(args)
    saved: dict  # the config and the dtype: what a checkpoint records
    dtype: np.dtype  # the dtype fit computes in
    name: str  # the input files, for messages
    tap: _Tap | None  # the one stream's chunks; None when fit read the files itself
    d: int | None  # the resumed state's d; None without --resume
    before: int  # the rows the resumed state had seen
    res: Any  # the FitResult, partial when ``error`` is set
    error: BaseException | None

    @property
    def n(self) -> int:
        """Rows fitted in all, the resumed ones included."""
        return self.before + self.res.n_rows

    @property
    def stopped(self) -> int:
        """The row the run stopped at (rows read in this run, skipped ones included)."""
        return self.res.n_rows + self.res.n_skipped


def _resumed_state(args: argparse.Namespace, est, saved: dict, dtype):
    """The state ``--resume`` names, loaded for these settings, its d and the rows it
    had seen: ``(state, d, before)``; ``(None, None, 0)`` without --resume."""
    from jaxgauss import checkpoint
    from jaxgauss.gaussian import Gaussian

    if not args.resume:
        return None, None, 0
    meta = checkpoint.info(args.resume)
    d = (meta["config"] or {}).get("d")
    if not isinstance(d, int):
        raise ValueError(
            f"{args.resume} records no estimator settings (saved by jaxgauss "
            f"{meta['version']}, not by this version's fit --checkpoint): cannot check them"
        )
    like = est.init(Gaussian.standard(d, dtype))
    state = checkpoint.load(args.resume, like, name=args.method, config={**saved, "d": d})
    return state, d, meta["rows"] or 0


def _fit_input(args: argparse.Namespace, distributed: bool, d: int | None, name: str):
    """What ``fit`` reads, as ``(data, tap, devices)``: with several files or processes
    sharing them, the file names, read and divided by the data-parallel driver on
    ``devices``; else this process's chunks through a ``_Tap`` (``devices`` None, or
    every device when the processes fit their own files)."""
    import jax

    from jaxgauss.streams import read_chunks, read_csv_chunks

    shared = distributed and not args.per_process_files
    if shared or (len(args.file) > 1 and not distributed):
        # Several files or processes: the data-parallel driver reads and divides them.
        devices = jax.devices() if distributed else jax.devices()[:1]
        return (args.file[0] if len(args.file) == 1 else args.file), None, devices
    if args.file == ["-"]:
        chunks = read_csv_chunks(sys.stdin.buffer, args.chunk or 65_536)
    else:
        chunks = read_chunks(args.file[0] if len(args.file) == 1 else args.file, args.chunk)[0]
    tap = _Tap(chunks, d, name)
    return tap, tap, (jax.devices() if distributed else None)


def _run_fit(args: argparse.Namespace, est, data, devices, state, **grouping):
    """``fit`` over ``data``: ``(result, None)``, or ``(partial result, error)`` when an
    error came after some rows were read (one before any row is raised). ``grouping``:
    ``fit``'s ``groups``, ``n_groups`` and ``weights``."""
    from jaxgauss._fit import fit

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
                **grouping,
            )
    except (Exception, KeyboardInterrupt) as err:
        if getattr(err, "result", None) is None:  # no row was read: nothing to keep
            raise
        return err.result, err
    return res, None


def _save_checkpoint(run: _FitRun) -> tuple[list[str], list[str]]:
    """Save the state to --checkpoint: ``([its "wrote" line], [])``, or ``([], [the
    failure])``; warns when resuming from it would not equal one pass."""
    from jaxgauss import checkpoint

    args, res = run.args, run.res
    lines, failures = [], []
    means = res.estimate._asdict().get("mean", getattr(res.estimate, "means", None))
    d_out = run.d if run.d is not None else int(np.shape(means)[-1])
    try:
        path = checkpoint.save(
            args.checkpoint,
            res.state,
            name=args.method,
            config={**run.saved, "d": d_out},
            rows=run.n,
        )
        lines.append(f"wrote {path}" + (" (partial)" if run.error else ""))
    except (OSError, ValueError) as e:
        failures.append(f"--checkpoint {args.checkpoint}: {e}")
    if not run.estimator.rowwise and res.n_rows % args.batch_size:
        print(
            f"jaxgauss fit: warning: the last {res.n_rows % args.batch_size} rows were one "
            f"shorter update (not a multiple of --batch-size {args.batch_size}); resuming "
            "from this checkpoint equals one pass over all rows only when every part but "
            "the last has a multiple of --batch-size rows",
            file=sys.stderr,
        )
    return lines, failures


def _result_record(run: _FitRun, fields: dict[str, np.ndarray]) -> dict:
    """The run's record for --out (the estimate's arrays are added when written)."""
    args, res = run.args, run.res
    result = {
        "method": args.method,
        "file": args.file[0] if len(args.file) == 1 else args.file,
        "n": run.n,
        "n_this_run": res.n_rows,
        "n_resumed": run.before,
        "n_skipped": res.n_skipped,
        "diverged_at": int(res.diverged_at),
        "dtype": str(fields[next(iter(fields))].dtype),
        "settings": run.config,
        "partial": run.error is not None,
    }
    if run.error is not None:
        result["stopped_at_row"] = run.stopped
        result["error"] = _error_message(run.error, run.name, run.tap, run.dtype)
    return result


def _write_out(out: str, result: dict, fields: dict[str, np.ndarray], partial: bool):
    """Write the record and the estimate to --out as JSON: ``([its "wrote" line], [])``,
    or ``([], [the failure])``."""
    import json

    try:
        record = {**result, **_fields_for_json(fields, out)}
        with open(out, "w") as f:
            json.dump(record, f, indent=2)
        return [f"wrote {out}" + (" (partial)" if partial else "")], []
    except OSError as e:
        return [], [f"--out {out}: {e}"]


def _print_report(run: _FitRun, result: dict, fields, lines: list[str], failures: list[str]):
    """The run on stdout (rows, dtype, the estimate, the files written); its error and
    the outputs that failed on stderr."""
    args, res, error = run.args, run.res, run.error
    resumed = f", {res.n_rows} in this run, {run.before} from {args.resume}" if args.resume else ""
    print(
        f"method {args.method}, n = {run.n} rows ({res.n_skipped} skipped{resumed}), "
        f"dtype {result['dtype']}" + (f"; stopped at row {run.stopped}" if error else "")
    )
    if result["diverged_at"] >= 0:
        print(
            f"diverged at row {result['diverged_at']}: the estimate is the last valid one before it"
        )
    _print_estimate(fields, bool(args.out))
    for line in lines:
        print(line)
    if error is not None:
        stopped = run.stopped
        if args.checkpoint or args.out:
            kept = f"the fit of the {stopped} rows before row {stopped} was kept"
        else:
            kept = f"the fit of the {stopped} rows before it is printed above (pass --checkpoint to keep it)"
        print(
            f"jaxgauss fit: error: {_error_message(error, run.name, run.tap, run.dtype)}; {kept}",
            file=sys.stderr,
        )
    for failure in failures:
        print(f"jaxgauss fit: error: {failure}", file=sys.stderr)


def _exit_status(error: BaseException | None, failures: list[str]) -> int:
    """130 on Ctrl-C, 2 for bad input or a failed output, else 0; an error that is
    not bad input is raised (a bug: its traceback, after the outputs are safe)."""
    if isinstance(error, KeyboardInterrupt):
        return 130
    if error is not None and not isinstance(error, (ValueError, OSError)):
        raise error
    return 2 if error is not None or failures else 0


def _fit(args: argparse.Namespace) -> int:
    import jax

    config = method_config(args)
    _cli_paths.check_inputs_exist(args.file)
    _cli_paths.check_outputs(args)
    if args.float64:
        jax.config.update("jax_enable_x64", True)

    if _cli_groups.wanted(args) and _cli_distributed.requested(args):
        raise ValueError(
            "--group-by and --weights run in one process: drop --coordinator (and the "
            "other options of several processes) or split the file by group yourself"
        )
    distributed = _cli_distributed.initialize(args)
    est = _build_estimator(config)
    if _cli_groups.wanted(args):
        return _fit_grouped(args, est, config)
    dtype = _data_dtype(args)
    saved = {**config, "dtype": str(dtype)}
    state, d, before = _resumed_state(args, est, saved, dtype)
    name = " ".join(args.file)
    data, tap, devices = _fit_input(args, distributed, d, name)
    res, error = _run_fit(args, est, data, devices, state)
    if jax.process_index() > 0:  # every process holds the same result; process 0 writes it
        return 130 if isinstance(error, KeyboardInterrupt) else 2 if error is not None else 0

    run = _FitRun(
        args=args,
        estimator=est,
        config=config,
        saved=saved,
        dtype=dtype,
        name=name,
        tap=tap,
        d=d,
        before=before,
        res=res,
        error=error,
    )
    # Outputs in a safe order: the checkpoint first, then --out, then stdout.
    lines, failures = _save_checkpoint(run) if args.checkpoint else ([], [])
    fields = _estimate_fields(res.estimate)
    result = _result_record(run, fields)
    if args.out:
        written, failed = _write_out(args.out, result, fields, partial=bool(error))
        lines, failures = lines + written, failures + failed
    _print_report(run, result, fields, lines, failures)
    return _exit_status(error, failures)


def _fit_grouped(args: argparse.Namespace, est, config: dict) -> int:
    """``jaxgauss fit FILE --group-by/--weights``: the file read by ``fit``'s readers,
    and an error after some rows reported and kept as ``fit`` keeps them."""
    source = _cli_groups.grouped_input(args, est, config)
    tap = _Tap(source.chunks, None, args.file[0])
    res, error = _run_fit(args, source.estimator, tap, None, None, **source.options)
    message = None if error is None else _error_message(error, args.file[0], tap, _data_dtype(args))
    return _exit_status(error, _cli_groups.finish(args, res, source.ids, message))


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


def _bench(args: argparse.Namespace) -> int:
    import json

    from jaxgauss import bench

    _cli_paths.check_out_name(args.out)
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


def _add_demo_command(sub) -> None:
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


def _add_fit_command(sub) -> None:
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
    add_hyperparameter_options(fit)
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
    _add_fit_output_options(fit)
    _cli_distributed.add_options(fit, files=True)
    _cli_groups.add_arguments(fit)
    fit.set_defaults(func=_fit)


def _add_fit_output_options(fit: argparse.ArgumentParser) -> None:
    fit.add_argument(
        "--out",
        help="write the result as JSON (keys mean, cov, n, method, ...); a covariance of "
        "more than 250 000 entries goes to a .npy file beside it (key cov_file)",
    )
    fit.add_argument("--checkpoint", help="save the final estimator state to this .npz")
    fit.add_argument("--resume", help="continue from a state saved with --checkpoint")
    fit.add_argument("--quiet", action="store_true", help="no progress line")


def _add_bench_command(sub) -> None:
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxgauss",
        description="Online estimation of a Gaussian's mean and covariance in JAX.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo_command(sub)
    _add_fit_command(sub)
    _cli_sweep.add_command(sub)
    _cli_distance.add_command(sub)
    _add_bench_command(sub)
    return parser


def _status(args: argparse.Namespace) -> tuple[int, str | None]:
    """Run the command: its exit status and its error (printed here), if any."""
    try:
        return args.func(args), None
    except BrokenPipeError:
        # stdout closed early (`| head -1`): whatever files were due are written
        # already; end quietly, as a program killed by SIGPIPE would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141, None
    except KeyboardInterrupt:
        print(f"jaxgauss {args.command}: interrupted", file=sys.stderr)
        return 130, "interrupted (Ctrl-C)"
    except (ValueError, OSError) as err:
        print(f"jaxgauss {args.command}: error: {err}", file=sys.stderr)
        return 2, str(err)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status: 0, or 2 with a one-line error for bad
    input, 130 on Ctrl-C, 141 when stdout was closed early. A process of several
    ends here, after telling the others (``_cli_distributed.finish``)."""
    args = _parser().parse_args(argv)
    return _cli_distributed.finish(*_status(args))


if __name__ == "__main__":
    raise SystemExit(main())
