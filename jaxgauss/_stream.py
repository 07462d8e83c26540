"""The host-side stream protocol shared by every runner: checking a chunk, the
working dtype, starting or continuing a state, screening non-finite rows, moving rows
into a moment state's frame, progress, and the partial result attached to any error.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgauss._engine import DataError
from jaxgauss.estimators.base import Estimator, counter_dtype
from jaxgauss.gaussian import Gaussian, check_gaussian


def check_chunk(chunk: Any, d: int | None, offset: int) -> Any:
    """Shape and dtype checks of one chunk at the Python boundary."""
    if not isinstance(chunk, jax.Array):
        chunk = np.asarray(chunk)
        if chunk.dtype == object or not (
            np.issubdtype(chunk.dtype, np.number) or chunk.dtype == np.bool_
        ):
            raise ValueError(f"data must be numeric, got dtype {chunk.dtype} (rows from {offset})")
    if chunk.ndim != 2:
        raise ValueError(
            f"data must be 2-D with shape (n, d), got shape {chunk.shape}"
            + ("; for a single column use data[:, None]" if chunk.ndim == 1 else "")
        )
    if chunk.shape[1] == 0:
        raise ValueError(f"data has no columns (shape {chunk.shape})")
    if d is not None and chunk.shape[1] != d:
        raise ValueError(f"data rows from {offset} have {chunk.shape[1]} columns, earlier rows {d}")
    if jnp.issubdtype(chunk.dtype, jnp.complexfloating):
        raise ValueError(f"data must be real, got dtype {chunk.dtype}")
    return chunk


def float_dtype(dtype: Any) -> Any:
    """The working dtype: float32, or float64 for float64 data when x64 is enabled.
    Integers, booleans and narrower floats (float16, bfloat16: too coarse for running
    moments) become float32, with or without x64."""
    wide = (
        jnp.promote_types(dtype, jnp.float32)
        if jnp.issubdtype(dtype, jnp.floating)
        else jnp.float32
    )
    # canonicalize_dtype maps float64 to float32 without x64, silently: NumPy's
    # default float64 data must not warn on every call.
    return jax.dtypes.canonicalize_dtype(wide)


def check_state(estimator: Estimator, state: Any, d: int, dtype: Any) -> None:
    """A continuation state must have the structure, shapes and dtypes this estimator
    gives for d-column data of this dtype."""
    like = jax.eval_shape(estimator.init, Gaussian.standard(d, dtype))
    got, want = jax.tree_util.tree_structure(state), jax.tree_util.tree_structure(like)
    if got != want:
        raise ValueError(
            f"state does not belong to this estimator: it has structure {got}, "
            f"the estimator's states have {want}"
        )
    for leaf, spec in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(like)):
        shape, leaf_dtype = jnp.shape(leaf), jnp.result_type(leaf)
        if shape != spec.shape or leaf_dtype != spec.dtype:
            raise ValueError(
                f"state has a leaf of shape {shape} and dtype {leaf_dtype} where {d}-column "
                f"{jnp.dtype(dtype).name} data need {spec.shape} and {spec.dtype}: was it "
                "saved from data of another width or precision?"
            )


@functools.partial(jax.jit, static_argnames=("init", "d", "dtype"))
def initial_state(init: Callable, g0: Gaussian | None, *, d: int, dtype: Any) -> Any:
    """``init(g0)`` with ``g0`` cast to ``dtype`` (None: the standard Gaussian N(0, I)
    of ``d`` columns), in one compiled call: run op by op, a factorised start
    compiled a dozen small programs (~0.4 s for each new d)."""
    return init(Gaussian.standard(d, dtype) if g0 is None else g0.astype(dtype))


@functools.lru_cache(maxsize=64)
def standard_state(estimator: Estimator, d: int, dtype: Any, counter: Any) -> Any:
    """``estimator.init`` of the standard Gaussian N(0, I), computed once per
    (estimator, d, dtype, ``counter_dtype()``: the x64 mode decides the counters):
    states are immutable arrays, so every fit may share it."""
    return initial_state(estimator.init, None, d=d, dtype=dtype)


def start_or_continue(estimator: Estimator, init: Any, state: Any, d: int, dtype: Any) -> Any:
    """The state a fit starts from: a continued ``state``, checked against what the
    estimator gives for d columns of ``dtype``, or else ``init``'s (``start_state``)."""
    if state is None:
        return start_state(estimator, init, d, dtype)
    check_state(estimator, state, d, dtype)
    return state


def start_state(estimator: Estimator, init: Gaussian | None, d: int, dtype: Any) -> Any:
    """The state a fit starts from: ``init`` checked (one Gaussian of d columns), or
    for None the standard Gaussian's (no check, no factorisation; cached)."""
    if init is None:
        return standard_state(estimator, d, jnp.dtype(dtype), counter_dtype())
    check_gaussian(init, d)
    return initial_state(estimator.init, init, d=d, dtype=dtype)


def largest_counter(state: Any) -> int:
    """The largest integer scalar in a state (its row or update counters)."""
    counts = [
        int(x)
        for x in jax.tree_util.tree_leaves(state)
        if jnp.ndim(x) == 0 and jnp.issubdtype(jnp.result_type(x), jnp.integer)
    ]
    return max(counts, default=0)


# A chunk of at most this many entries (1 MiB of float32) is small: a small device
# chunk on a CPU is screened on the host like a NumPy one, and a whole array that
# small waits for the tail program (``Feeder``).
SMALL_ENTRIES = 1 << 18


# A whole array of a non-rowwise estimator this small goes to the tail program too.
TINY_ENTRIES = 1 << 14


def small_on_host(chunk: Any) -> Any:
    """A small float chunk on CPU devices as NumPy (in host memory already: no
    transfer): screened, framed and padded on the host like a NumPy chunk, with no
    slice, cast or pad compiled for its shape (~0.15 s per new shape: a small fit's
    fixed cost). Chunks on accelerators stay there."""
    if (
        isinstance(chunk, jax.Array)
        and chunk.size <= SMALL_ENTRIES
        and chunk.dtype in (np.float32, np.float64)
        and all(device.platform == "cpu" for device in chunk.devices())
    ):
        return np.asarray(chunk)
    return chunk


def chunk_stats(rows: Any, found=None) -> tuple[bool, np.ndarray]:
    """Whether any entry of a chunk is NaN or ±inf, and each column's largest
    finite |entry|. ``found``: ``to_frame``'s (total, spread) of device rows."""
    if isinstance(rows, np.ndarray):  # on the host: no copy to the device, no wait
        if _finite_sum(rows):
            return False, np.max(np.abs(rows), axis=0)
        finite = np.isfinite(rows)
        return not finite.all(), np.max(np.where(finite, np.abs(rows), 0), axis=0)
    total, spread = _sum_and_spread(rows) if found is None else found
    if np.isfinite(total):  # NaN and ±inf entries make the sum non-finite
        return False, spread
    # Some entry is not finite (or the finite sum overflowed): the exact pass.
    bad, spread = _device_chunk_stats(rows)
    return bool(bad), spread


@jax.jit
def _sum_and_spread(rows: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The sum of all entries (finite exactly when every entry is, unless it
    overflows) and each column's largest |entry|: one pass, which XLA runs 2-3×
    faster than an elementwise finiteness test."""
    return jnp.sum(rows), jnp.max(jnp.abs(rows), axis=0)


@jax.jit
def _device_chunk_stats(rows: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``chunk_stats`` of device rows with some non-finite entry."""
    finite = jnp.isfinite(rows)
    return ~jnp.all(finite), jnp.max(jnp.where(finite, jnp.abs(rows), 0), axis=0)


def _finite_sum(rows: np.ndarray) -> bool:
    """Whether the sum of all entries is finite: exactly when every entry is, unless
    the sum overflows (then the caller's exact pass decides)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(np.sum(rows)))


def nonfinite_rows(rows: Any) -> np.ndarray:
    """Indices of the rows with NaN or ±inf. NumPy rows are read on the host, first
    through their sum (finite exactly when every entry is, unless it overflows)."""
    if isinstance(rows, np.ndarray):
        if _finite_sum(rows):
            return np.zeros(0, np.int64)
        return np.flatnonzero(~np.all(np.isfinite(rows), axis=1))
    return np.flatnonzero(~np.asarray(jnp.all(jnp.isfinite(rows), axis=1)))


def subtract_host(chunk: np.ndarray, origin: np.ndarray, dtype: Any) -> np.ndarray:
    """(chunk − origin) in ``dtype``, subtracted in float64 (in float32 for float32
    data: the same correctly rounded result) and rounded once into the output.

    The rows of a contiguous chunk are subtracted 64 at a time against the origin
    repeated 64 times (NumPy's loop over a broadcast origin of d entries ran ~2x
    slower at d = 10)."""
    src = np.float32 if chunk.dtype == np.float32 else np.float64
    origin = origin.astype(src)
    out = np.empty(chunk.shape, dtype)
    n, d = chunk.shape
    whole = n // 64 * 64 if chunk.flags.c_contiguous else 0
    if whole:
        wide = (whole // 64, 64 * d)
        np.subtract(
            chunk[:whole].reshape(wide), np.tile(origin, 64), out=out[:whole].reshape(wide),
            casting="same_kind",
        )  # fmt: skip
    np.subtract(chunk[whole:], origin, out=out[whole:], casting="same_kind")
    return out


def zero_padded(rows: Any, n: int) -> Any:
    """``rows`` followed by rows of zeros up to ``n`` rows (on the host for NumPy)."""
    if not isinstance(rows, np.ndarray):
        return jnp.pad(rows, ((0, n - rows.shape[0]), (0, 0)))
    out = np.zeros((n, rows.shape[1]), rows.dtype)
    out[: rows.shape[0]] = rows
    return out


@functools.partial(jax.jit, static_argnames="dtype")
def to_frame(chunk: jax.Array, origin: Any, dtype: Any) -> tuple[jax.Array, Any]:
    """Device rows in the working dtype, minus ``origin`` (when given), and their
    ``_sum_and_spread``, in one pass."""
    rows = chunk.astype(dtype)
    rows = rows if origin is None else rows - origin
    return rows, _sum_and_spread(rows)


def first_finite_row(chunk: Any) -> np.ndarray | None:
    """The first row of ``chunk`` with only finite entries, on the host (None if
    none), reading as few rows as it takes: 1, then 64, 4096, … (a device chunk is
    not copied whole to the host for it)."""
    n, k = chunk.shape[0], 1
    while True:
        head = np.asarray(chunk[: min(k, n)])
        finite = np.flatnonzero(np.all(np.isfinite(head), axis=1))
        if finite.size:
            return head[finite[0]]
        if k >= n:
            return None
        k *= 64


def original_row(kept: int, skipped: list[int]) -> int:
    """Map an index among the kept rows back to the data as given."""
    row = kept
    for s in skipped:  # sorted
        if s <= row:
            row += 1
    return row


def feed_all(stream: Any, chunks: Any, total: int | None, progress: bool) -> None:
    """Feed every chunk to ``stream`` (anything with ``feed(chunk)`` and ``seen``), with
    a progress line on stderr that is ended by a newline however the loop ends."""
    started = time.perf_counter()
    try:
        for chunk in chunks:
            stream.feed(chunk)
            if progress:
                report_progress(stream.seen, total, started)
    finally:
        if progress:
            print(file=sys.stderr)


def report_progress(done: int, total: int | None, started: float) -> None:
    rate = done / max(time.perf_counter() - started, 1e-9)
    of = f" / {total:,}" if total else ""
    print(f"\r  {done:,}{of} rows  ({rate:,.0f} rows/s)", end="", file=sys.stderr, flush=True)


def run_stream(stream: Any, chunks: Any, total: int | None, progress: bool) -> Any:
    """The protocol every runner's stream follows: feed it every chunk and return
    ``stream.result()``; any exception on the way (a bad row, a reader's error,
    ``KeyboardInterrupt``) propagates as itself with ``.result`` set to
    ``stream.partial_result()``, the fit of every row read before it."""
    try:
        feed_all(stream, chunks, total, progress)
        return stream.result()
    except BaseException as err:
        if getattr(err, "result", None) is None:
            err.result = stream.partial_result()
        raise


def nonfinite_error(row: int, values: Any) -> DataError:
    """The error of ``nan_policy="raise"`` for data row ``row`` (its ``values``)."""
    return DataError(
        f"data row {row} is not finite ({np.asarray(values).tolist()}); "
        f"the {row} rows before it were estimated: the error's .result holds "
        "them (or pass nan_policy='skip' to drop such rows)",
        row,
    )


def tile(tree: Any, n: int) -> Any:
    """Every leaf of ``tree`` repeated along a new leading axis of ``n``."""
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,) + jnp.shape(x)), tree)
