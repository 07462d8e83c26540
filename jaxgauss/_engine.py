"""The engine: what every runner and ``sweep`` share, below any host-side loop.

The carry and result types (``FitCarry``, ``Trace``, ``FitResult``), the plan of a
compiled scan (``ScanPlan``), the compiled programs (the guarded and blocked steps,
the scan over rows, the tail, snapshots, the frame of moment states) and
``DataError``. Everything here is a pure function of arrays or a jitted program; the
host side that feeds them (chunks, screening, progress) lives in ``_stream`` and
``_feeder``, the runners above those.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxgauss._checks import Score
from jaxgauss.estimators.base import Estimator, new_counter
from jaxgauss.gaussian import Gaussian, kl_divergence

__all__ = [
    "Trace",
    "FitResult",
    "FitCarry",
    "DataError",
    "ScanPlan",
    "init_carry",
    "scan_batches",
    "default_block_rows",
]


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
    """The scan's carry: estimator state, first rejected row (-1 if none), rows seen.

    With ``bad_row`` (-1 to start; None: off) the engine screens the rows itself
    (``fit`` of a whole array of a moment estimator, whose rows then reach the program
    unscreened): an update that the guard rejects and whose batch holds a NaN or ±inf
    entry is bad data, not a divergence (a non-finite entry always makes a moment
    state non-finite, so the guard sees it). ``bad_row`` then names that entry's row,
    the state stays before its batch (in a blocked step, before its block) and
    nothing more is applied or counted, so ``rows`` is the rows applied: the host
    applies the rows up to the bad one again (``SingleStream``).
    """

    state: Any
    diverged_at: jax.Array
    rows: jax.Array
    bad_row: Any = None


def live(carry: FitCarry) -> jax.Array:
    """Whether updates still apply: no rejection and no bad row yet."""
    ok = carry.diverged_at < 0
    return ok if carry.bad_row is None else ok & (carry.bad_row < 0)


def _skipped(carry: FitCarry, n: int) -> FitCarry:
    """``n`` rows passed over after a rejection: counted, unless a bad row stopped
    the count (``rows`` is then what was applied)."""
    counted = n if carry.bad_row is None else jnp.where(carry.bad_row < 0, n, 0)
    return carry._replace(rows=carry.rows + counted)


def _screened_reject(carry: FitCarry, batch: jax.Array, reject: jax.Array, row) -> FitCarry:
    """Record a rejected update: as bad data at its first non-finite row when its
    batch holds one and the carry screens, else as a divergence at ``row``."""
    if carry.bad_row is None:
        return carry._replace(diverged_at=jnp.where(reject, row, carry.diverged_at))
    has_bad, first = _first_nonfinite(batch)
    bad = reject & has_bad
    return carry._replace(
        diverged_at=jnp.where(reject & ~bad, row, carry.diverged_at),
        bad_row=jnp.where(bad, carry.rows + first, carry.bad_row),
    )


def _first_nonfinite(rows: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Whether ``rows`` hold a NaN or ±inf entry, and the index of the first such row."""
    finite = jnp.all(jnp.isfinite(rows), axis=1)
    return ~jnp.all(finite), jnp.argmin(finite)


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


def guarded_step(
    estimator: Estimator, carry: FitCarry, batch: jax.Array, weights=None, first_row=None
) -> FitCarry:
    """One guarded update; ``weights`` (b,) are passed to a weighted update, and
    ``first_row`` (default: the rows seen) is what a rejection records."""
    new = (
        estimator.update(carry.state, batch)
        if weights is None
        else (estimator.update(carry.state, batch, weights))
    )
    was_live = live(carry)
    accept = estimator.is_valid(new) & was_live
    state = jax.tree_util.tree_map(lambda a, b: jnp.where(accept, a, b), new, carry.state)
    row = carry.rows if first_row is None else first_row
    carry = _screened_reject(carry, batch, (~accept) & was_live, row)
    return _skipped(carry._replace(state=state), batch.shape[0])


# Updates of a non-rowwise estimator unrolled into one step of the compiled loop: at
# d = 10 a gradient step is a few dozen tiny kernels, and the loop's own work per
# iteration (its condition, slicing a row, the guard's selects) cost as much again.
# Measured at d = 10 (sgd, precision and cholesky): 4 runs as fast as 8 and compiles in
# 30 % less time (0.95 s against 1.42 s); 2 is ~7 % slower, 1 ~20 %.
_UNROLL = 4


def apply_block(estimator: Estimator, state: Any, rows: jax.Array, b: int, unroll: int):
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
    """k updates of b rows each (``rows``: (k·b, d)) applied at once (``apply_block``).

    Only if some state along the block is rejected is the block replayed update by
    update from its start, so that ``diverged_at`` names the exact row and the state
    stops at the exact last valid update: the result is that of the guarded
    update-by-update scan.
    """
    n = rows.shape[0]

    def one_by_one(c):
        batches = rows.reshape(n // b, b, rows.shape[1])
        return jax.lax.scan(lambda c, x: (guarded_step(estimator, c, x), None), c, batches)[0]

    def rejected(c):
        """A block with a non-finite entry (when the carry screens) stops before it:
        the host applies its rows up to the bad one again, in blocks, not one by one
        (in float32, 6·10⁴ single updates drift by ~3e-5)."""
        if c.bad_row is None:
            return one_by_one(c)
        has_bad, first = _first_nonfinite(rows)
        bad = c._replace(bad_row=c.rows + first)
        return jax.lax.cond(has_bad, lambda c: bad, one_by_one, c)

    # One conditional on the common path (a diverged run computes and drops its
    # blocks: nothing is applied after divergence either way).
    new, ok = apply_block(estimator, carry.state, rows, b, unroll)
    running = live(carry)
    return jax.lax.cond(
        ok & running,
        lambda c: c._replace(state=new, rows=c.rows + n),
        lambda c: jax.lax.cond(running, rejected, lambda c: _skipped(c, n), c),
        carry,
    )


def _step(plan: ScanPlan, carry: FitCarry, rows: jax.Array, unroll: int = _UNROLL) -> FitCarry:
    """One step of the compiled loops: ``plan.block`` updates of ``batch_size`` rows
    (a non-rowwise block's loop unrolled ``unroll`` times)."""
    if plan.block > 1:
        return _blocked_step(plan.estimator, carry, rows, plan.batch_size, unroll)
    return guarded_step(plan.estimator, carry, rows)


def scan_rows(
    plan: ScanPlan, carry: FitCarry, rows: jax.Array, truth: Any, origin: Any = None
) -> tuple[FitCarry, Trace | None]:
    """The scans over the whole steps in ``rows`` (m, d): each step applies ``block``
    updates of ``batch_size`` rows; with ``trace_every`` a snapshot follows every that
    many updates. Rows past the last whole step (or, tracing, the last whole traced
    piece) are left for the caller (``Feeder``: the tail program).

    With ``origin`` (d,), the rows and the carried state are in the frame of that
    row (``fit``'s host-side centring, see ``SingleStream``): snapshots put it back.

    Each step reads its rows with a dynamic slice of ``rows`` inside the program: no
    reshape or slice of the whole array, which XLA may copy (a whole array of
    10⁶ × 10 rows copied costs more than its Gram).
    """
    est, b, block = plan.estimator, plan.batch_size, plan.block
    step_rows = b * block

    def step(c, i):
        piece = jax.lax.dynamic_slice_in_dim(rows, i * step_rows, step_rows)
        return _step(plan, c, piece), None

    if not plan.trace_every:
        steps = jnp.arange(rows.shape[0] // step_rows)
        return jax.lax.scan(step, carry, steps, unroll=plan.unroll)[0], None

    per_snapshot = plan.trace_every // block

    def snapshot(c, k):
        c, _ = jax.lax.scan(
            step, c, k * per_snapshot + jnp.arange(per_snapshot), unroll=plan.unroll
        )
        estimate = est.estimate(c.state if origin is None else leave_frame(c.state, origin))
        score = None if truth is None else plan.score(truth, estimate)
        return c, (c.rows, estimate, score)

    snapshots = jnp.arange(rows.shape[0] // (step_rows * per_snapshot))
    carry, (snap_rows, estimate, score) = jax.lax.scan(snapshot, carry, snapshots)
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
      >>> carry = jg.engine.init_carry(est.init(jg.Gaussian.standard(1, jnp.float32)))
      >>> rows = jnp.arange(6, dtype=jnp.float32).reshape(3, 2, 1)  # 3 batches of 2 rows
      >>> carry, trace = jg.engine.scan_batches(est, carry, rows, trace_every=1)
      >>> trace.rows.tolist(), trace.estimate.mean[:, 0].tolist(), int(carry.diverged_at)
      ([2, 4, 6], [0.5, 1.5, 2.5], -1)
    """
    if trace_every and trace_every % block:
        raise ValueError(f"block ({block}) must divide trace_every ({trace_every})")
    u, b, d = batches.shape
    n_head = (u // (trace_every or block)) * (trace_every or block)
    rows = batches.reshape(u * b, d)
    plan = ScanPlan(estimator, b, block, trace_every, score)
    carry, trace = scan_rows(plan, carry, rows[: n_head * b], truth)
    if n_head < u:
        carry, _ = scan_rows(ScanPlan(estimator, b), carry, rows[n_head * b :], truth)
    return carry, trace


run_scan = jax.jit(scan_rows, static_argnames="plan")


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


def block_updates(
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


# The fewest entries ``close`` pads a tail to: every tail (or whole array) up to this
# size shares one compiled program (e.g. 2048 rows at d = 2 or 3), for a copy of 32 KB.
TAIL_ENTRIES = 1 << 12


def _run_tail(plan: ScanPlan, carry: FitCarry, rows: jax.Array, m: jax.Array) -> FitCarry:
    """The first ``m`` batches (traced) of ``rows`` ((K·b, d), the rest padding): whole
    blocks at each level of ``_tail_levels`` in one loop each, then single guarded
    updates. A level applies its blocks unguarded (``apply_block``) while
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
            new, ok = apply_block(plan.estimator, c.state, piece, b, unroll=1)
            applied = c._replace(state=new, rows=c.rows + size * b)
            return jax.lax.cond(ok, lambda: (applied, at + size, ok), lambda: (c, at, ok))

        carry, done, _ = jax.lax.while_loop(fits, block, (carry, done, live(carry)))

    def single(state):
        c, at = state
        piece = jax.lax.dynamic_slice_in_dim(rows, at * b, b)
        return guarded_step(plan.estimator, c, piece), at + 1

    carry, done = jax.lax.while_loop(
        lambda state: live(state[0]) & (state[1] < m), single, (carry, done)
    )
    return _skipped(carry, (m - done) * b)  # the frozen rest


run_tail = jax.jit(_run_tail, static_argnames="plan")


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


def tail_plan(plan: ScanPlan) -> ScanPlan:
    """The plan ``_run_tail`` is compiled for: only what it reads (no trace or score;
    the block size only for a rowwise estimator's levels), so that fits differing
    elsewhere (a traced fit and an untraced one) share its program."""
    return ScanPlan(plan.estimator, plan.batch_size, plan.block if plan.estimator.rowwise else 1)


@functools.partial(jax.jit, static_argnames="plan")
def snapshot(plan: ScanPlan, carry: FitCarry, truth: Any, origin: Any) -> Trace:
    """A snapshot of ``carry`` (out of ``fit``'s frame) with a leading axis of 1, as
    the in-program trace records it, in one compiled call."""
    state = carry.state if origin is None else leave_frame(carry.state, origin)
    estimate = plan.estimator.estimate(state)
    score = None if truth is None else plan.score(truth, estimate)
    return jax.tree_util.tree_map(lambda x: x[None], Trace(carry.rows, estimate, score))


def framed(state: Any) -> bool:
    """Whether a state keeps its locations relative to an ``origin`` row, so that
    ``fit`` can centre the rows on the host: the states with an ``origin`` field and
    a ``reframed(origin)`` method (the moment, window and latent-model estimators';
    ``jaxgauss.estimators.moments``, Frames)."""
    return hasattr(state, "origin") and hasattr(state, "reframed")


@jax.jit
def enter_frame(state: Any, origin: jax.Array) -> Any:
    """The same state with its locations relative to ``origin`` and its origin field
    0: the form in which the compiled scans see it while the rows arrive minus
    ``origin``."""
    return state.reframed(origin)._replace(origin=jnp.zeros_like(state.origin))


def leave_frame(state: Any, origin: jax.Array) -> Any:
    return state._replace(origin=jnp.broadcast_to(origin, state.origin.shape))


@functools.partial(jax.jit, static_argnames="estimate")
def finish(estimate: Callable, state: Any, origin: Any) -> tuple[Any, Any]:
    """The state out of ``fit``'s frame (when it has one) and its estimate, in one
    compiled call instead of a dispatch per operation."""
    state = state if origin is None else leave_frame(state, origin)
    return state, estimate(state)
