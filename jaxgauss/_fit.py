"""``fit``: run an estimator over a stream in one jit-compiled ``lax.scan``.

The building blocks (``FitCarry``, ``init_carry``, ``scan_batches``) are pure and
un-jitted so that ``sweep`` can vmap them; ``fit`` is the jit boundary and validates
its inputs in Python first.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxgauss._checks import Score, check_int, check_score, check_truth
from jaxgauss._memory import check_memory
from jaxgauss.estimators.base import COUNTER_LIMIT_INT32, Estimator, counter_dtype, new_counter
from jaxgauss.estimators.moments import MomentsState, WelfordState
from jaxgauss.gaussian import Gaussian, check_gaussian, kl_divergence
from jaxgauss.streams import read_chunks

__all__ = ["Trace", "FitResult", "FitCarry", "DataError", "init_carry", "scan_batches", "fit"]


class Trace(NamedTuple):
    """Snapshots taken every ``trace_every`` updates.

    Attributes:
      rows: (m,) integers (``counter_dtype()``), data rows consumed when each
        snapshot was taken.
      estimate: the estimate with a leading (m,) axis (a stacked ``Gaussian`` for
        Gaussian estimators).
      score: (m,) ``score(truth, estimate)`` (KL(truth ‖ estimate) by default), or
        None when no truth was given.
    """

    rows: jax.Array
    estimate: Any
    score: jax.Array | None

    @property
    def kl(self) -> jax.Array | None:
        """The score under its default name: KL(truth ‖ estimate) unless ``fit`` or
        ``sweep`` was given another ``score``."""
        return self.score


class FitResult(NamedTuple):
    """What ``fit`` returns.

    Attributes:
      estimate: the final ``Gaussian`` (the last valid one if the run diverged).
      state: the final estimator state; pass it back as ``fit(..., state=...)`` to
        continue, save it, or ``merge`` it.
      diverged_at: an integer scalar (``counter_dtype()``), 0-based index of the first data row of the first
        rejected update, or -1. From that update on nothing is applied.
      trace: a ``Trace``, or None when ``trace_every=0``.
      n_rows: data rows read and offered to the estimator (skipped rows excluded).
      n_skipped: rows dropped by ``nan_policy="skip"``.
    """

    estimate: Gaussian
    state: Any
    diverged_at: jax.Array
    trace: Trace | None
    n_rows: int = 0
    n_skipped: int = 0


class FitCarry(NamedTuple):
    """The scan's carry: estimator state, first rejected row (-1 if none), rows seen."""

    state: Any
    diverged_at: jax.Array
    rows: jax.Array


def init_carry(state: Any) -> FitCarry:
    """A fresh carry around an estimator state."""
    return FitCarry(state, new_counter(-1), new_counter(0))


class ScanPlan(NamedTuple):
    """What a compiled scan over rows does, fixed at trace time (hashable, so it is
    the static argument of the jitted program).

    Attributes:
      estimator: the ``Estimator``.
      batch_size: rows per update.
      block: updates applied per scan step (> 1 only for rowwise estimators).
      trace_every: a snapshot every this many updates (0: none); a multiple of block.
      score: ``score(truth, estimate) -> scalar`` recorded in snapshots when a truth
        is given.
      unroll: scan steps per loop iteration (``lax.scan``'s ``unroll``): on an
        accelerator, several small steps per kernel launch.
    """

    estimator: Estimator
    batch_size: int = 1
    block: int = 1
    trace_every: int = 0
    score: Score = kl_divergence
    unroll: int = 1


def _guarded_step(
    estimator: Estimator, carry: FitCarry, batch: jax.Array, weights=None, first_row=None
) -> FitCarry:
    """One guarded update; ``weights`` (b,) are passed to a weighted update, and
    ``first_row`` (default: the rows seen) is what a rejection records."""
    new = (
        estimator.update(carry.state, batch)
        if weights is None
        else (estimator.update(carry.state, batch, weights))
    )
    accept = estimator.is_valid(new) & (carry.diverged_at < 0)
    state = jax.tree_util.tree_map(lambda a, b: jnp.where(accept, a, b), new, carry.state)
    first_reject = (~accept) & (carry.diverged_at < 0)
    row = carry.rows if first_row is None else first_row
    diverged_at = jnp.where(first_reject, row, carry.diverged_at)
    return FitCarry(state, diverged_at, carry.rows + batch.shape[0])


# Updates of a non-rowwise estimator unrolled into one step of the compiled loop: at
# d = 10 a gradient step is a few dozen tiny kernels, and the loop's own work per
# iteration (its condition, slicing a row, the guard's selects) cost as much again.
# Measured at d = 10 (sgd, precision and cholesky): 4 runs as fast as 8 and compiles in
# 30 % less time (0.95 s against 1.42 s); 2 is ~7 % slower, 1 ~20 %.
_UNROLL = 4


def _apply_block(estimator: Estimator, state: Any, rows: jax.Array, b: int, unroll: int):
    """The state after the k = n/b updates of ``rows`` (n, d), unguarded, and whether
    every state along the way was valid.

    A rowwise estimator applies all n rows as ONE update (it equals the k updates to
    rounding: one Gram matmul). Any other runs its k updates in an unrolled scan that
    only ANDs ``is_valid`` of each state: no per-update selects or bookkeeping.
    """
    if estimator.rowwise:
        new = estimator.update(state, rows)
        return new, estimator.is_valid(new)

    def body(carry, batch):
        s, ok = carry
        s = estimator.update(s, batch)
        return (s, ok & estimator.is_valid(s)), None

    batches = rows.reshape(rows.shape[0] // b, b, rows.shape[1])
    (new, ok), _ = jax.lax.scan(
        body, (state, jnp.array(True)), batches, unroll=min(unroll, batches.shape[0])
    )
    return new, ok


def _blocked_step(
    estimator: Estimator, carry: FitCarry, rows: jax.Array, b: int, unroll: int = _UNROLL
) -> FitCarry:
    """k updates of b rows each (``rows``: (k·b, d)) applied at once (``_apply_block``).

    Only if some state along the block is rejected is the block replayed update by
    update from its start, so that ``diverged_at`` names the exact row and the state
    stops at the exact last valid update: the result is that of the guarded
    update-by-update scan.
    """
    n = rows.shape[0]

    def one_by_one(c):
        batches = rows.reshape(n // b, b, rows.shape[1])
        return jax.lax.scan(lambda c, x: (_guarded_step(estimator, c, x), None), c, batches)[0]

    def frozen(c):
        return c._replace(rows=c.rows + n)

    # One conditional on the common path (a diverged run computes and drops its
    # blocks: nothing is applied after divergence either way).
    new, ok = _apply_block(estimator, carry.state, rows, b, unroll)
    live = carry.diverged_at < 0
    return jax.lax.cond(
        ok & live,
        lambda c: FitCarry(new, c.diverged_at, c.rows + n),
        lambda c: jax.lax.cond(live, one_by_one, frozen, c),
        carry,
    )


def _step(plan: ScanPlan, carry: FitCarry, rows: jax.Array, unroll: int = _UNROLL) -> FitCarry:
    """One step of the compiled loops: ``plan.block`` updates of ``batch_size`` rows
    (a non-rowwise block's loop unrolled ``unroll`` times)."""
    if plan.block > 1:
        return _blocked_step(plan.estimator, carry, rows, plan.batch_size, unroll)
    return _guarded_step(plan.estimator, carry, rows)


def _scan_rows(
    plan: ScanPlan, carry: FitCarry, rows: jax.Array, truth: Any, origin: Any = None
) -> tuple[FitCarry, Trace | None]:
    """The scans over ``rows`` (m, d), m a multiple of ``batch_size·block`` (and of
    ``batch_size·trace_every`` when tracing): each step applies ``block`` updates of
    ``batch_size`` rows; with ``trace_every`` a snapshot follows every that many updates.

    With ``origin`` (d,), the rows and the carried state are in the frame of that
    row (``fit``'s host-side centring, see ``_Stream``): snapshots put it back.

    The rows are regrouped here, inside the program, into 3-D (or with a trace 4-D)
    pieces whose last two axes are a block's rows and d: a reshape XLA does in place
    (one with a unit batch axis, (…, k, 1, d), made it copy all the data).
    """
    est, b, block = plan.estimator, plan.batch_size, plan.block
    d = rows.shape[1]

    def step(c, piece):
        return _step(plan, c, piece), None

    if not plan.trace_every:
        return jax.lax.scan(step, carry, rows.reshape(-1, b * block, d), unroll=plan.unroll)[
            0
        ], None

    def snapshot(c, pieces):
        c, _ = jax.lax.scan(step, c, pieces, unroll=plan.unroll)
        estimate = est.estimate(c.state if origin is None else _leave_frame(c.state, origin))
        score = None if truth is None else plan.score(truth, estimate)
        return c, (c.rows, estimate, score)

    pieces = rows.reshape(-1, plan.trace_every // block, b * block, d)
    carry, (snap_rows, estimate, score) = jax.lax.scan(snapshot, carry, pieces)
    return carry, Trace(snap_rows, estimate, score)


def scan_batches(
    estimator: Estimator,
    carry: FitCarry,
    batches: jax.Array,
    truth: Any = None,
    trace_every: int = 0,
    block: int = 1,
    score: Score = kl_divergence,
) -> tuple[FitCarry, Trace | None]:
    """Apply the guarded update to each batch of ``batches`` (u, b, d) in a ``lax.scan``.

    Pure and un-jitted: the building block for running an estimator inside your own
    ``jit``/``vmap`` (``fit`` and ``sweep`` are built on it). With ``trace_every = k > 0``
    a snapshot is taken after every k updates (u // k snapshots), recording
    ``score(truth, estimate)`` when ``truth`` is given. With ``block > 1`` (it must
    divide ``trace_every``) each scan step applies ``block`` updates at once (one
    update of all their rows for a rowwise estimator, an unrolled loop with one
    validity check per block otherwise; a rejected block is replayed update by
    update); the result agrees with ``block=1`` to rounding, guard and trace
    included. Under ``vmap`` keep ``block=1`` for non-rowwise estimators: the replay
    branch of a vmapped conditional always runs.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> est = jg.welford()
      >>> carry = jg.init_carry(est.init(jg.Gaussian.standard(1, jnp.float32)))
      >>> rows = jnp.arange(6, dtype=jnp.float32).reshape(3, 2, 1)  # 3 batches of 2 rows
      >>> carry, trace = jg.scan_batches(est, carry, rows, trace_every=1)
      >>> trace.rows.tolist(), trace.estimate.mean[:, 0].tolist(), int(carry.diverged_at)
      ([2, 4, 6], [0.5, 1.5, 2.5], -1)
    """
    if trace_every and trace_every % block:
        raise ValueError(f"block ({block}) must divide trace_every ({trace_every})")
    u, b, d = batches.shape
    n_head = (u // (trace_every or block)) * (trace_every or block)
    rows = batches.reshape(u * b, d)
    plan = ScanPlan(estimator, b, block, trace_every, score)
    carry, trace = _scan_rows(plan, carry, rows[: n_head * b], truth)
    if n_head < u:
        carry, _ = _scan_rows(ScanPlan(estimator, b), carry, rows[n_head * b :], truth)
    return carry, trace


_run = jax.jit(_scan_rows, static_argnames="plan")


def default_block_rows(d: int | None = None) -> int:
    """Rows per compiled step for rowwise estimators on the current backend: one Gram
    matmul must be large enough to hide each step's fixed cost (measured in
    benchmarks/results/profile.md: on a CPU, 4096 rows, or with ``d`` columns about
    2¹⁸ entries when that is more, e.g. 16 384 rows at d = 10; 65 536 rows on a GPU)."""
    if jax.default_backend() != "cpu":
        return 65_536
    if d is None:
        return 4096
    return max(4096, 1 << ((2**18 // d).bit_length() - 1))


# Updates per compiled step of a non-rowwise estimator (measured at d = 10 on a CPU:
# beyond 16 a longer block saves nothing, and a rejected block replays more).
GRADIENT_BLOCK = 16


def _block_updates(
    estimator: Estimator, batch_size: int, trace_every: int, block_rows, d: int | None = None
) -> int:
    """Updates per compiled step: for rowwise estimators about ``block_rows`` rows'
    worth (None: ``default_block_rows(d)``), for others at most ``GRADIENT_BLOCK`` (1
    with ``block_rows=1``); with a trace, the largest divisor of ``trace_every`` not
    above that, so snapshots fall on block edges."""
    rows = default_block_rows(d) if block_rows is None else block_rows
    k = max(1, rows // batch_size)
    if not estimator.rowwise:
        k = min(k, GRADIENT_BLOCK)
    if trace_every:
        k = max(q for q in range(1, min(k, trace_every) + 1) if trace_every % q == 0)
    return k


class DataError(ValueError):
    """A data row is not finite (with ``nan_policy="raise"``).

    Attributes:
      row: 0-based index of the offending row in the data as given.
      result: the ``FitResult`` of every row before it, so nothing already
        estimated is lost (continue with ``fit(..., state=err.result.state)``).
    """

    def __init__(self, message: str, row: int, result: FitResult | None = None):
        super().__init__(message)
        self.row = row
        self.result = result


def _plan(estimator, batch_size, trace_every, block_rows, score) -> ScanPlan:
    """Validate the run's settings and fix the compiled scan's shape."""
    if not isinstance(estimator, Estimator):
        raise ValueError(f"estimator must be a jaxgauss Estimator, got {type(estimator).__name__}")
    batch_size = check_int("batch_size", batch_size, 1)
    trace_every = check_int("trace_every", trace_every, 0)
    if block_rows is not None:
        block_rows = check_int("block_rows", block_rows, 1)
    block = _block_updates(estimator, batch_size, trace_every, block_rows)
    return ScanPlan(estimator, batch_size, block, trace_every, check_score(score))


def _check_source_options(chunk_rows, nan_policy, init, state) -> None:
    if chunk_rows is not None:
        check_int("chunk_rows", chunk_rows, 1)
    if nan_policy not in ("raise", "skip"):
        raise ValueError(f"nan_policy must be 'raise' or 'skip', got {nan_policy!r}")
    if state is not None and init is not None:
        raise ValueError("pass either init (a fresh start) or state (a continuation), not both")


def _check_chunk(chunk: Any, d: int | None, offset: int) -> Any:
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


def _float_dtype(dtype: Any) -> Any:
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


def _check_state(estimator: Estimator, state: Any, d: int, dtype: Any) -> None:
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


# A chunk of at most this many entries (1 MiB of float32) is small: a NumPy one is
# screened on the host (no device call, no wait for its answer: the fixed cost of a
# small fit; larger ones go through one fused compiled pass, faster than NumPy's
# several), and a whole array that small waits for the tail program (``_Feeder``).
_SMALL_ENTRIES = 1 << 18
# A whole array of a non-rowwise estimator this small goes to the tail program too.
_TINY_ENTRIES = 1 << 14


def _small_on_host(chunk: Any) -> Any:
    """A small float chunk on CPU devices as NumPy (in host memory already: no
    transfer): screened, framed and padded on the host like a NumPy chunk, with no
    slice, cast or pad compiled for its shape (~0.15 s per new shape: a small fit's
    fixed cost). Chunks on accelerators stay there."""
    if (
        isinstance(chunk, jax.Array)
        and chunk.size <= _SMALL_ENTRIES
        and chunk.dtype in (np.float32, np.float64)
        and all(device.platform == "cpu" for device in chunk.devices())
    ):
        return np.asarray(chunk)
    return chunk


def _chunk_stats(rows: Any, found=None) -> tuple[bool, np.ndarray]:
    """Whether any entry of a chunk is NaN or ±inf, and each column's largest
    finite |entry|. ``found``: ``_to_frame``'s (total, spread) of device rows."""
    if isinstance(rows, np.ndarray) and rows.size <= _SMALL_ENTRIES:
        finite = np.isfinite(rows)
        if finite.all():
            return False, np.max(np.abs(rows), axis=0)
        return True, np.max(np.where(finite, np.abs(rows), 0), axis=0)
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


# The fewest entries ``close`` pads a tail to: every tail (or whole array) up to this
# size shares one compiled program (e.g. 2048 rows at d = 2 or 3), for a copy of 32 KB.
_TAIL_ENTRIES = 1 << 12


def _zero_padded(rows: Any, n: int) -> Any:
    """``rows`` followed by rows of zeros up to ``n`` rows (on the host for NumPy)."""
    if not isinstance(rows, np.ndarray):
        return jnp.pad(rows, ((0, n - rows.shape[0]), (0, 0)))
    out = np.zeros((n, rows.shape[1]), rows.dtype)
    out[: rows.shape[0]] = rows
    return out


@jax.jit
def _device_chunk_stats(rows: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``_chunk_stats`` of device rows with some non-finite entry."""
    finite = jnp.isfinite(rows)
    return ~jnp.all(finite), jnp.max(jnp.where(finite, jnp.abs(rows), 0), axis=0)


def _nonfinite_rows(rows: jax.Array) -> np.ndarray:
    """Indices of the rows with NaN or ±inf (after ``_chunk_stats`` found some)."""
    return np.flatnonzero(~np.asarray(jnp.all(jnp.isfinite(rows), axis=1)))


def _subtract_host(chunk: np.ndarray, origin: np.ndarray, dtype: Any) -> np.ndarray:
    """(chunk − origin) in ``dtype``, subtracted in float64 (in float32 for float32
    data: the same correctly rounded result) slice by slice, so the float64
    temporary stays small whatever the chunk's size."""
    src = np.float32 if chunk.dtype == np.float32 else np.float64
    origin = origin.astype(src)
    out = np.empty(chunk.shape, dtype)
    step = 1 << 16
    for i in range(0, chunk.shape[0], step):
        out[i : i + step] = np.subtract(chunk[i : i + step], origin, dtype=src)
    return out


def _largest_counter(state: Any) -> int:
    """The largest integer scalar in a state (its row or update counters)."""
    counts = [
        int(x)
        for x in jax.tree_util.tree_leaves(state)
        if jnp.ndim(x) == 0 and jnp.issubdtype(jnp.result_type(x), jnp.integer)
    ]
    return max(counts, default=0)


def _run_tail(plan: ScanPlan, carry: FitCarry, rows: jax.Array, m: jax.Array) -> FitCarry:
    """The first ``m`` batches (traced) of ``rows`` ((K·b, d), the rest padding): whole
    blocks at each level of ``_tail_levels`` in one loop each, then single guarded
    updates. A level applies its blocks unguarded (``_apply_block``) while
    each one's states stay valid; the first block that is not is left to the finer
    levels, so the single updates find the exact row (``diverged_at``) and state of
    the update-by-update scan, and no level needs a replay of its own. After a
    rejection the rest is not applied (the guard's frozen state), only counted.

    Only a rowwise estimator has levels (one update of a level's rows is one Gram
    matmul); any other applies its batches as single guarded updates: its levels,
    one loop of ``plan.block`` updates per level, ran at most 1.2× faster (d = 10)
    and took 40 % longer to compile.

    One compiled program serves every m ≤ K, so a stream's ragged end (or a whole
    small array) is one call and, with K a power of two, at most log₂ of the chunk
    size programs exist. Each has one copy of the update per level, not unrolled (an
    optimizer step with a factorisation compiled 4-6 s unrolled, for rows that run
    once)."""
    b = plan.batch_size
    done = jnp.zeros((), jnp.int32)  # batches applied (or, after a rejection, counted)
    for size in _tail_levels(plan, rows.shape[0] // b):

        def fits(state, size=size):
            _, at, ok = state
            return ok & (m - at >= size)

        def block(state, size=size):
            c, at, _ = state
            piece = jax.lax.dynamic_slice_in_dim(rows, at * b, size * b)
            new, ok = _apply_block(plan.estimator, c.state, piece, b, unroll=1)
            applied = FitCarry(new, c.diverged_at, c.rows + size * b)
            return jax.lax.cond(ok, lambda: (applied, at + size, ok), lambda: (c, at, ok))

        live = carry.diverged_at < 0
        carry, done, _ = jax.lax.while_loop(fits, block, (carry, done, live))

    def single(state):
        c, at = state
        piece = jax.lax.dynamic_slice_in_dim(rows, at * b, b)
        return _guarded_step(plan.estimator, c, piece), at + 1

    carry, done = jax.lax.while_loop(
        lambda state: (state[0].diverged_at < 0) & (state[1] < m), single, (carry, done)
    )
    return carry._replace(rows=carry.rows + (m - done) * b)  # the frozen rest


_run_tail_jit = jax.jit(_run_tail, static_argnames="plan")

# A tail of at most this many batches (a small fit's whole array) has one level, of
# about √K updates per block: one or two copies of the update fewer to compile.
# Measured at d = 1 and 3 (K = 4096 and 8192): 0.1-0.5 s less to compile, at most
# 0.3 ms more to run.
_ONE_LEVEL_BATCHES = 1 << 13


def _tail_levels(plan: ScanPlan, k: int) -> list[int]:
    """Updates per block at each level of a tail of ``k`` batches, largest first:
    none for a non-rowwise estimator; one of about √k (at most ``plan.block``) for a
    short tail; otherwise ``plan.block``, ``block // 16``, ``block // 256``, … down to
    2, those not above k."""
    if not plan.estimator.rowwise:
        return []
    if k <= _ONE_LEVEL_BATCHES:
        size = min(plan.block, 1 << (k.bit_length() - 1) // 2)
        return [size] if size > 1 else []
    sizes = [plan.block]
    while sizes[-1] >= 32:
        sizes.append(sizes[-1] // 16)
    return [s for s in sizes if 1 < s <= k]


def _tail_plan(plan: ScanPlan) -> ScanPlan:
    """The plan ``_run_tail`` is compiled for: only what it reads (no trace or score;
    the block size only for a rowwise estimator's levels), so that fits differing
    elsewhere (a traced fit and an untraced one) share its program."""
    return ScanPlan(plan.estimator, plan.batch_size, plan.block if plan.estimator.rowwise else 1)


def _unit(plan: ScanPlan, size: int | None) -> tuple[ScanPlan, int, bool]:
    """The plan a stream of chunks of ``size`` rows is applied with, the rows it is
    applied in at least (one traced piece, or one block of batches), and whether
    snapshots are taken on the host. They are when a traced piece
    (``batch_size·trace_every`` rows) would be longer than a chunk: buffering it
    could hold a whole file, so blocks that fit a chunk (and divide ``trace_every``,
    so snapshots fall on their edges) run untraced, with host snapshots between
    them. One update's ``batch_size`` rows are the floor."""
    b, every = plan.batch_size, plan.trace_every
    if not every or size is None or b * every <= size:
        return plan, b * (every or plan.block), False
    fits = max(1, min(plan.block, size // b))
    block = max(q for q in range(1, fits + 1) if every % q == 0)
    return plan._replace(block=block), b * block, True


@functools.partial(jax.jit, static_argnames="plan")
def _snapshot(plan: ScanPlan, carry: FitCarry, truth: Any, origin: Any) -> Trace:
    """A snapshot of ``carry`` (out of ``fit``'s frame) with a leading axis of 1, as
    the in-program trace records it, in one compiled call."""
    state = carry.state if origin is None else _leave_frame(carry.state, origin)
    estimate = plan.estimator.estimate(state)
    score = None if truth is None else plan.score(truth, estimate)
    return jax.tree_util.tree_map(lambda x: x[None], Trace(carry.rows, estimate, score))


class _Feeder:
    """One fit in progress: regroups incoming rows into compiled pieces of fixed
    shapes, applies them, and assembles the ``FitResult``.

    Rows are buffered until a full chunk of ``size`` rows (a multiple of the
    indivisible ``unit``) is ready; each full chunk is one call of the same compiled
    program. At the end, the ragged rest is cut into power-of-two pieces (``close``),
    so at most about 2 log₂ of the chunk size distinct shapes are ever compiled.
    """

    def __init__(self, plan: ScanPlan, carry: FitCarry, truth: Any, size: int | None, run=None):
        self.plan, self.unit, self.host_trace = _unit(plan, size)  # unit: indivisible
        self.carry, self.truth = carry, truth
        # (plan, carry, rows, truth, origin) -> (carry, trace)
        self.run = _run if run is None else run
        self.origin: np.ndarray | None = None  # the frame of the carried state and rows
        self.size = None if size is None else self.unit * max(1, size // self.unit)
        self.since_snapshot = 0  # rows applied since the last host snapshot
        self.pending: list[jax.Array] = []
        self.n_pending = 0
        self.traces: list[Trace] = []
        self.skipped: list[int] = []  # rows dropped by nan_policy="skip", as given

    @property
    def _tail_only(self) -> bool:
        """Whether ``close`` applies all whole batches in one ``_run_tail`` call, with
        no whole units first (one device, no trace)."""
        return not self.plan.trace_every and self.run is _run

    def _whole_in_tail(self, entries: int) -> bool:
        """Whether a whole array of this many entries waits for ``close``'s one tail
        call, when small enough to pad: one program to compile for a small fit, not
        two. A rowwise estimator runs as fast there as in the scan; another one's
        blocks are not unrolled there (measured 1.3× slower at d = 10), which only
        arrays of a few milliseconds' work (``_TINY_ENTRIES``) do not notice against a
        second compile of about a second."""
        limit = _SMALL_ENTRIES if self.plan.estimator.rowwise else _TINY_ENTRIES
        return self._tail_only and entries <= limit

    def _run(self, rows: jax.Array, plan: ScanPlan) -> None:
        if self.host_trace and plan.trace_every:
            self._run_to_snapshots(rows, plan._replace(trace_every=0))
            return
        self.carry, trace = self.run(plan, self.carry, rows, self.truth, self.origin)
        if trace is not None:
            self.traces.append(trace)

    def _run_to_snapshots(self, rows: jax.Array, plan: ScanPlan) -> None:
        """Apply ``rows`` (whole units) untraced, cut where a snapshot falls due, in
        power-of-two counts of units (few compiled shapes); snapshot on the host."""
        every = plan.batch_size * self.plan.trace_every  # a multiple of the unit
        done = 0
        while done < rows.shape[0]:
            take = min(rows.shape[0] - done, every - self.since_snapshot)
            units = take // self.unit
            for bit in reversed(range(units.bit_length())):
                if units >> bit & 1:
                    self._run(rows[done : done + (self.unit << bit)], plan)
                    done += self.unit << bit
            self.since_snapshot += take
            if self.since_snapshot == every:
                self.since_snapshot = 0
                self.traces.append(_snapshot(self.plan, self.carry, self.truth, self.origin))

    def _take(self) -> jax.Array:
        if len(self.pending) == 1:
            rows = self.pending[0]
        elif all(isinstance(p, np.ndarray) for p in self.pending):
            rows = np.concatenate(self.pending)
        else:
            rows = jnp.concatenate(self.pending)
        self.pending, self.n_pending = [], 0
        return rows

    def push(self, rows: jax.Array) -> None:
        """Buffer ``rows`` and apply every full chunk (a whole array: all full units,
        unless it waits for ``close``'s one tail call, see ``_whole_in_tail``)."""
        if not rows.shape[0]:
            return
        self.pending.append(rows)
        self.n_pending += rows.shape[0]
        if self.size is None and self._whole_in_tail(self.n_pending * rows.shape[1]):
            return
        size = self.size or self.unit * (self.n_pending // self.unit)
        if size and self.n_pending >= size:
            rows = self._take()
            done = 0
            while rows.shape[0] - done >= size:
                self._run(rows[done : done + size], self.plan)
                done += size
            if done < rows.shape[0]:
                self.push(rows[done:])

    def close(self) -> None:
        """Apply whatever is buffered: the end of the stream. With a trace (or another
        ``run``), whole units first, in power-of-two counts. Then the whole batches
        left go in one call of ``_run_tail`` (rows padded to a power of two of
        batches, at least ``_TAIL_ENTRIES`` entries; no snapshot falls inside them, as
        they are less than a unit), or with
        another ``run`` in power-of-two numbers of batches. Either way about 2 log₂ of
        the chunk size programs exist at most. Fewer than ``batch_size`` rows left are
        one shorter update."""
        if not self.n_pending:
            return
        rows, done = self._take(), 0
        b = self.plan.batch_size
        if not self._tail_only:
            units = rows.shape[0] // self.unit
            for bit in reversed(range(units.bit_length())):
                if units >> bit & 1:
                    self._run(rows[done : done + (self.unit << bit)], self.plan)
                    done += self.unit << bit
        batches = (rows.shape[0] - done) // b
        if batches and self.run is _run:
            k = 1 << (max(batches, _TAIL_ENTRIES // (b * rows.shape[1])) - 1).bit_length()
            padded = _zero_padded(rows[done : done + batches * b], k * b)
            self.carry = _run_tail_jit(_tail_plan(self.plan), self.carry, padded, np.int32(batches))
            done += batches * b
        elif batches:
            for bit in reversed(range(batches.bit_length())):
                if batches >> bit & 1:
                    block = 1 << bit if self.plan.block > 1 else 1
                    plan = self.plan._replace(block=block, trace_every=0)
                    self._run(rows[done : done + (b << bit)], plan)
                    done += b << bit
        if done < rows.shape[0]:
            # one update of fewer than batch_size rows
            self._run(rows[done:], ScanPlan(self.plan.estimator, rows.shape[0] - done))

    def _trace(self, like: Any) -> Trace | None:
        if not self.plan.trace_every:
            return None
        if self.traces:
            return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *self.traces)
        empty = jax.tree_util.tree_map(lambda x: jnp.zeros((0,) + x.shape, x.dtype), like)
        score = (
            None
            if self.truth is None
            else jnp.zeros((0,), jax.tree_util.tree_leaves(like)[0].dtype)
        )
        return Trace(jnp.zeros((0,), counter_dtype()), empty, score)

    def enter_frame(self, origin: np.ndarray) -> None:
        """From now on the rows come relative to ``origin`` (the state follows)."""
        self.carry = self.carry._replace(state=_enter_frame(self.carry.state, origin))
        self.origin = origin

    def result(self) -> FitResult:
        carry = self.carry
        state, estimate = _finish(self.plan.estimator.estimate, carry.state, self.origin)
        diverged = jnp.asarray(carry.diverged_at)  # still on the host if nothing ran
        if self.skipped and int(diverged) >= 0:
            diverged = new_counter(_original_row(int(diverged), self.skipped))
        trace = self._trace(estimate)
        return FitResult(estimate, state, diverged, trace, int(carry.rows), len(self.skipped))


def _framed(state: Any) -> bool:
    """Whether a state keeps its mean relative to an ``origin`` row (the moment
    estimators' states), so ``fit`` can centre the rows on the host."""
    return isinstance(state, (WelfordState, MomentsState))


@functools.partial(jax.jit, static_argnames="dtype")
def _to_frame(chunk: jax.Array, origin: Any, dtype: Any) -> tuple[jax.Array, Any]:
    """Device rows in the working dtype, minus ``origin`` (when given), and their
    ``_sum_and_spread``, in one pass."""
    rows = chunk.astype(dtype)
    rows = rows if origin is None else rows - origin
    return rows, _sum_and_spread(rows)


@jax.jit
def _enter_frame(state: Any, origin: jax.Array) -> Any:
    """The same state with its mean relative to ``origin`` and its origin field 0: the
    form in which the compiled scans see it while the rows arrive minus ``origin``."""
    mean = state.mean + (state.origin - origin)
    return state._replace(mean=mean, origin=jnp.zeros_like(state.origin))


def _leave_frame(state: Any, origin: jax.Array) -> Any:
    return state._replace(origin=jnp.broadcast_to(origin, state.origin.shape))


@functools.partial(jax.jit, static_argnames="estimate")
def _finish(estimate: Callable, state: Any, origin: Any) -> tuple[Any, Any]:
    """The state out of ``fit``'s frame (when it has one) and its estimate, in one
    compiled call instead of a dispatch per operation."""
    state = state if origin is None else _leave_frame(state, origin)
    return state, estimate(state)


@functools.partial(jax.jit, static_argnames=("init", "d", "dtype"))
def _initial_state(init: Callable, g0: Gaussian | None, *, d: int, dtype: Any) -> Any:
    """``init(g0)`` with ``g0`` cast to ``dtype`` (None: the standard Gaussian N(0, I)
    of ``d`` columns), in one compiled call: run op by op, a factorised start
    compiled a dozen small programs (~0.4 s for each new d)."""
    return init(Gaussian.standard(d, dtype) if g0 is None else g0.astype(dtype))


@functools.lru_cache(maxsize=64)
def _standard_state(estimator: Estimator, d: int, dtype: Any, counter: Any) -> Any:
    """``estimator.init`` of the standard Gaussian N(0, I), computed once per
    (estimator, d, dtype, ``counter_dtype()``: the x64 mode decides the counters):
    states are immutable arrays, so every fit may share it."""
    return _initial_state(estimator.init, None, d=d, dtype=dtype)


def _start_state(estimator: Estimator, init: Gaussian | None, d: int, dtype: Any) -> Any:
    """The state a fit starts from: ``init`` checked (one Gaussian of d columns), or
    for None the standard Gaussian's (no check, no factorisation; cached)."""
    if init is None:
        return _standard_state(estimator, d, jnp.dtype(dtype), counter_dtype())
    check_gaussian(init, d)
    return _initial_state(estimator.init, init, d=d, dtype=dtype)


def _first_finite_row(chunk: Any) -> np.ndarray | None:
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


def _original_row(kept: int, skipped: list[int]) -> int:
    """Map an index among the kept rows back to the data as given."""
    row = kept
    for s in skipped:  # sorted
        if s <= row:
            row += 1
    return row


class _Stream:
    """The steps of one ``fit`` over a chunked source: start at the first chunk (the
    data fix d and the dtype), frame, screen and count each chunk, feed it.

    Framing (moment estimators, whose states keep the mean relative to an origin
    row): the first finite row, rounded to the working dtype, becomes the origin (a
    continued state keeps its own), and every chunk is moved into that frame on the
    host in the data's own precision BEFORE the cast, so float64 data far from 0 lose
    nothing in float32 (see ``jaxgauss.estimators.moments``).
    """

    def __init__(self, plan, *, init, state, truth, size, nan_policy, block_rows=None):
        self.plan, self.init, self.state, self.truth = plan, init, state, truth
        self.size, self.nan_policy, self.block_rows = size, nan_policy, block_rows
        self.feeder: _Feeder | None = None
        self.d = self.dtype = None
        self.seen = 0  # rows read, skipped ones included
        self.counted = 0  # the largest counter in a continued state
        self.framed = False
        self.spread: np.ndarray | None = None  # per column, max |row − origin|

    def _start(self, first: Any) -> _Feeder:
        d, dtype = first.shape[1], _float_dtype(first.dtype)
        if self.block_rows is None:  # the default block is sized by d
            plan = self.plan
            block = _block_updates(plan.estimator, plan.batch_size, plan.trace_every, None, d)
            self.plan = plan._replace(block=block)
        truth = None if self.truth is None else check_truth(self.truth, self.plan.score, d, dtype)
        state = self.state
        if state is None:
            held = self.size and max(self.size, _unit(self.plan, self.size)[1])
            check_memory(self.plan.estimator, d, dtype, chunk_rows=held or 0)
            state = _start_state(self.plan.estimator, self.init, d, dtype)
        else:
            _check_state(self.plan.estimator, state, d, dtype)
            self.counted = _largest_counter(state)
        self.d, self.dtype = d, dtype
        # Counters start on the host: the first compiled call takes them over.
        counter = functools.partial(np.asarray, dtype=counter_dtype())
        feeder = _Feeder(self.plan, FitCarry(state, counter(-1), counter(0)), truth, self.size)
        self.framed = _framed(state)
        if self.framed and self.state is not None:
            feeder.enter_frame(np.asarray(state.origin))
        return feeder

    def _frame(self, chunk: Any) -> tuple[Any, Any]:
        """The chunk in the working dtype, moved into the state's frame: the origin
        is subtracted on the host in the data's own precision, before the cast.
        Small NumPy chunks stay on the host until the compiled call (``_chunk_stats``).
        Also what ``_chunk_stats`` needs, when it came on the way (device rows)."""
        if self.framed and self.feeder.origin is None:
            first = _first_finite_row(chunk)
            if first is not None:  # else no reference yet: these rows are all screened out
                self.feeder.enter_frame(first.astype(self.dtype))
        origin = self.feeder.origin if self.framed else None
        if isinstance(chunk, jax.Array):
            return _to_frame(chunk, origin, jnp.dtype(self.dtype))
        if origin is None:
            out = np.asarray(chunk, self.dtype)
        else:
            out = _subtract_host(chunk, origin, self.dtype)
        return (out if out.size <= _SMALL_ENTRIES else jnp.asarray(out)), None

    def _check_capacity(self, n: int) -> None:
        """Without x64 the counters are int32: refuse, before they wrap, a fit that
        would count past 2³¹ − 1 rows (with the continued state's count)."""
        total = self.counted + self.seen + n
        if counter_dtype() == jnp.int32 and total > COUNTER_LIMIT_INT32:
            raise ValueError(
                f"this fit would count {total:,} rows (the state's {self.counted:,} included), "
                f"more than an int32 counter holds (2**31 - 1 = {COUNTER_LIMIT_INT32:,}); "
                "enable x64 (jax.config.update('jax_enable_x64', True), or --float64) for "
                "int64 counters"
            )

    def _screen(self, rows: Any, found: Any = None) -> jax.Array:
        """The finite rows of a chunk: non-finite ones are dropped and counted
        ("skip"), or end the fit with a ``DataError`` after the rows before them.
        Also records each column's spread about the origin (float32 range check)."""
        bad_any, spread = _chunk_stats(rows, found)
        self._record_spread(spread)
        bad = _nonfinite_rows(rows) if bad_any else np.zeros(0, np.int64)
        if not bad.size:
            return rows
        if self.nan_policy == "raise":
            self.feeder.push(rows[: bad[0]])
            row = self.seen + int(bad[0])
            raise DataError(
                f"data row {row} is not finite ({np.asarray(rows[bad[0]]).tolist()}); "
                f"the {row} rows before it were estimated: the error's .result holds "
                "them (or pass nan_policy='skip' to drop such rows)",
                row,
            )
        self.feeder.skipped.extend((self.seen + bad).tolist())
        return (np if isinstance(rows, np.ndarray) else jnp).delete(rows, bad, axis=0)

    def _record_spread(self, spread: jax.Array) -> None:
        if self.framed and self.feeder.origin is not None and self.dtype == jnp.float32:
            spread = np.asarray(spread, np.float64)
            self.spread = spread if self.spread is None else np.maximum(self.spread, spread)

    def _check_range(self) -> None:
        """float32 moment estimators need each column's spread about the origin to
        be at least 2⁻⁵²: its square is then a normal float with 2²² to spare for the
        1/n weights. Below, XLA flushes the subnormal products to zero and the
        covariance would silently be 0. (Above the range, overflow makes the state
        non-finite, which the guard reports as ``diverged_at``.)"""
        low = np.flatnonzero((self.spread > 0) & (self.spread < 2.0**-52))
        if low.size:
            raise ValueError(
                f"column {int(low[0])} spreads only {self.spread[low[0]]:.3g} about its first "
                "row: its covariance is below the range float32 holds (squares of at least "
                "2**-52 are needed, or it would silently be 0); compute in float64 "
                "(--float64, or jax.config.update('jax_enable_x64', True) with float64 data)"
            )

    def feed(self, chunk: Any) -> None:
        chunk = _small_on_host(_check_chunk(chunk, self.d, self.seen))
        if chunk.shape[0] == 0:
            return
        self.feeder = self.feeder or self._start(chunk)
        self._check_capacity(chunk.shape[0])
        rows = self._screen(*self._frame(chunk))
        self.seen += chunk.shape[0]
        self.feeder.push(rows)

    def result(self) -> FitResult:
        if self.feeder is None:
            raise ValueError("data is empty: no rows")
        self.feeder.close()
        result = self.feeder.result()
        if result.n_rows == 0 and result.n_skipped:
            raise ValueError(
                f"no finite rows: all {result.n_skipped} rows were skipped "
                "(nan_policy='skip'), so nothing was estimated"
            )
        if self.spread is not None:
            self._check_range()
        return result

    def partial_result(self) -> FitResult | None:
        """After an error: the fit of every row read before it (None if none was).
        Rows already buffered are applied; if that fails too, the last applied state
        stands."""
        if self.feeder is None:
            return None
        try:
            self.feeder.close()
        except Exception:
            pass
        return self.feeder.result()


def fit(
    estimator: Estimator,
    data: Any,
    init: Gaussian | None = None,
    *,
    batch_size: int = 1,
    trace_every: int = 0,
    truth: Any = None,
    state: Any = None,
    block_rows: int | None = None,
    chunk_rows: int | None = None,
    nan_policy: str = "raise",
    progress: bool = False,
    score: Score | None = None,
    devices: Any = None,
    groups: Any = None,
    n_groups: int | None = None,
    weights: Any = None,
) -> FitResult:
    """Run ``estimator`` over the rows of ``data`` in jit-compiled ``lax.scan`` calls.

    The rows are cut into batches of ``batch_size``; each batch is one
    ``estimator.update``. If n is not a multiple of ``batch_size``, the last n mod b
    rows are applied as one shorter final batch. After every update the divergence
    guard checks ``estimator.is_valid``: the first rejected update sets
    ``diverged_at`` to the row where its batch starts, and the state then stays at
    the last valid value: nothing after it is applied.

    Data may be larger than memory: a ``.npy`` path is memory-mapped and a ``.csv``
    path read in chunks of ``chunk_rows`` rows; an iterable yields its own chunks.
    Chunks are regrouped into pieces of fixed shapes with the state carried between
    compiled calls, so the result equals one in-memory ``fit`` and a stream compiles
    at most a handful of shapes, whatever its length.

    Nothing estimated is lost on an error: any exception raised while the rows are
    read or applied (a non-finite row, a bad CSV cell, a chunk of another width, an
    exception from your iterator, ``KeyboardInterrupt``) propagates as itself with
    ``.result`` attached: the ``FitResult`` of every row read before it (None if no
    row had been read). Continue with ``fit(..., state=err.result.state)``.

    Compilations are cached per (estimator object, shapes, dtypes, trace_every):
    calling ``fit`` again with the same estimator and data shape does not recompile.
    To try many learning rates, either use ``jaxgauss.sweep`` (one compiled call for
    the whole grid) or make the learning rate part of the state with
    ``optax.inject_hyperparams`` and change it in ``res.state`` between calls.

    Args:
      estimator: an ``Estimator``.
      data: rows (n, d): a NumPy or JAX array (or nested lists), a path to a
        ``.npy`` or ``.csv`` file, or an iterable of (m, d) chunks. Integers are
        converted to floats. The estimate's dtype follows the data's (float32
        unless x64 is enabled and the data are float64).
      init: the starting ``Gaussian``; None means N(0, I). Ignored when ``state`` is
        given (passing both is an error).
      batch_size: rows per update, ≥ 1.
      trace_every: take a snapshot every this many updates (0: no trace).
      truth: what the trace's ``score`` is measured against: a ``Gaussian`` for the
        default score, or whatever a given ``score`` takes (e.g. held-out rows).
      state: an estimator state from an earlier ``FitResult.state`` to continue from.
      block_rows: for rowwise estimators (``welford``, ``exponential``,
        ``natural_gradient``), about how many rows each compiled step applies at once
        as one Gram matmul (None: ``default_block_rows(d)``, on a CPU 4096 rows or
        about 2¹⁸ entries when that is more, 65 536 rows on accelerators; 1: update
        by update). Other estimators apply up to
        ``GRADIENT_BLOCK`` (16) updates per compiled step, unrolled, with one
        validity check; ``block_rows=1`` makes them update by update too. The result
        equals the update-by-update one to rounding, the guard and trace included: a
        rejected block is replayed update by update.
      chunk_rows: rows per chunk read from a file or sliced from an array (None:
        65 536 for files, the whole array for arrays).
      nan_policy: what a row with NaN or ±inf does: "raise" (a ``DataError``, a
        ``ValueError`` naming the row and carrying the result of every row before it)
        or "skip" (the row is dropped and counted in ``n_skipped``; indices such as
        ``diverged_at`` still refer to the data as given).
      progress: print rows done and throughput to stderr after each chunk.
      score: ``score(truth, estimate) -> scalar`` recorded in the trace (None:
        ``kl_divergence``, KL(truth ‖ estimate)). Pass the same function object on
        every call to reuse the compilation.
      devices: None (one device), or a list of devices (e.g. ``jax.devices()``) to
        run data-parallel: the rows are cut into contiguous shards, one per device;
        after ``jax.distributed.initialize`` every process passes its own rows (a
        list of files or one ``.npy`` is divided among the processes) and gets the
        same result. Moment estimators equal a one-device fit of all rows in order
        to rounding; other estimators take ``batch_size / D`` rows per update from
        every shard (README, "More than one machine").
      groups: the group of every row, integers in [0, n_groups): an array (n,)
        aligned with the rows as given (any source), or an int, the index of a data
        column holding them (split off every chunk, for files and iterables). The
        fit then keeps one state per group (a leading (n_groups,) axis on
        ``estimate``, ``state``, ``diverged_at``, ``n_rows`` and the trace) and group
        k's equals a fit of its rows alone, in order: ``welford``'s to rounding, in
        one pass of segment sums per block; any other estimator (it must be
        weighted) with its own batches of ``batch_size`` of the group's rows and its
        own counts. A group with no rows keeps ``init`` (``n_rows[k] == 0``).
        ``init`` and ``truth`` may be one ``Gaussian`` or one per group (leading
        axis); ``state`` continues a grouped state. A grouped trace takes a
        snapshot of every group after each ``batch_size·trace_every`` rows of the
        stream (``trace.rows``); rows still waiting to fill a group's batch are in
        a later snapshot.
      n_groups: the number of groups; None: 1 + the largest id, when the ids are
        an array or a column of an array (streamed columns need it).
      weights: finite reliability weights wᵢ ≥ 0 per row, an array (n,) or a column
        index as for ``groups``; the estimator must be weighted
        (``welford(weighted=True)``, ``gradient_ascent``, …; others are refused).
        Moment estimators give the weighted MLE (``np.cov(aweights=w, bias=True)``),
        gradient estimators maximise Σ wᵢ ℓᵢ / Σ wᵢ per batch; a weight of 0 masks
        its row. Without ``groups`` the result has no group axis.

    Returns:
      A ``FitResult`` (estimate, state, diverged_at, trace, n_rows, n_skipped).

    Raises:
      ValueError: data not 2-D, empty, non-numeric, with inconsistent columns, or
        with a non-finite row (a ``DataError``); ``init`` or ``truth`` of the wrong
        shape, non-finite, asymmetric or not positive definite; a ``state`` of another
        estimator or shape; ``batch_size < 1``; ``trace_every < 0``; an unknown
        ``nan_policy``; a group id that is not an integer in [0, n_groups), a
        weight that is negative or not finite (the message names the first such
        row), ``groups`` or ``weights`` of another length than the data.

    Example:
      >>> import jax, optax, jaxgauss as jg
      >>> ys = jg.streams.sample(jax.random.key(0), jg.Gaussian.standard(1), 100)
      >>> res = jg.fit(jg.gradient_ascent(optax.sgd(0.002), "covariance"), ys, trace_every=10)
      >>> res.trace.rows.tolist()[:3], int(res.diverged_at), res.n_rows
      ([10, 20, 30], -1, 100)

      Two groups, the second masked in part by a weight of 0:

      >>> import numpy as np
      >>> ys = np.array([[0.0], [1.0], [10.0], [20.0], [99.0]])
      >>> res = jg.fit(jg.welford(weighted=True), ys, groups=[0, 0, 1, 1, 1],
      ...              weights=[1, 1, 1, 1, 0])
      >>> res.estimate.mean[:, 0].tolist(), res.n_rows.tolist()
      ([0.5, 15.0], [2, 3])
    """
    plan = _plan(estimator, batch_size, trace_every, block_rows, score)
    _check_source_options(chunk_rows, nan_policy, init, state)
    if devices is not None and (groups is not None or weights is not None):
        raise ValueError("devices= does not combine with groups= or weights= yet")
    if devices is not None:
        from jaxgauss._distributed import fit_data_parallel

        return fit_data_parallel(
            plan,
            data,
            devices,
            init=init,
            state=state,
            truth=truth,
            chunk_rows=chunk_rows,
            nan_policy=nan_policy,
            progress=progress,
        )
    if groups is not None or weights is not None or n_groups is not None:
        from jaxgauss._grouped import fit_grouped  # it builds on this module

        return fit_grouped(
            plan, data, init, groups=groups, n_groups=n_groups, weights=weights, truth=truth,
            state=state, chunk_rows=chunk_rows, nan_policy=nan_policy, progress=progress,
        )  # fmt: skip
    chunks, total, size = read_chunks(data, chunk_rows)
    stream = _Stream(
        plan, init=init, state=state, truth=truth, size=size, nan_policy=nan_policy,
        block_rows=block_rows,
    )  # fmt: skip
    try:
        _feed_all(stream, chunks, total, progress)
        return stream.result()
    except BaseException as err:
        if getattr(err, "result", None) is None:
            err.result = stream.partial_result()
        raise


def _feed_all(stream: Any, chunks: Any, total: int | None, progress: bool) -> None:
    """Feed every chunk to ``stream`` (anything with ``feed(chunk)`` and ``seen``), with
    a progress line on stderr that is ended by a newline however the loop ends."""
    started = time.perf_counter()
    try:
        for chunk in chunks:
            stream.feed(chunk)
            if progress:
                _report(stream.seen, total, started)
    finally:
        if progress:
            print(file=sys.stderr)


def _report(done: int, total: int | None, started: float) -> None:
    rate = done / max(time.perf_counter() - started, 1e-9)
    of = f" / {total:,}" if total else ""
    print(f"\r  {done:,}{of} rows  ({rate:,.0f} rows/s)", end="", file=sys.stderr, flush=True)
