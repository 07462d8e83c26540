"""``fit`` with ``groups`` and ``weights``: many Gaussians from one stream of rows.

A grouped fit keeps G estimator states stacked along a leading axis and lets every
row update only its own group's state, so group k ends exactly where a fit of its
rows alone would. Two formulations, both one compiled program per piece of rows:

* estimators with a ``grouped_update`` (``welford``) take blocks of rows in one
  pass: gather each row's group mean, shift, segment sums of rows and of outer
  products. The cost is that of an ungrouped fit plus a scatter, whatever G.
* any other weighted estimator gets each group's rows cut into its own batches of
  ``batch_size`` on the host (rows of one group keep their order, a group's last
  rows wait for the next chunk to fill a batch), padded with weight-0 rows to a
  common shape and run as a ``vmap`` over groups of ``fit``'s guarded scan: padding
  is exact because a batch of weight 0 is no update.

Weights without groups are the case G = 1, run on the same path and returned without
the group axis.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxgauss._checks import check_int, check_stacked_gaussian, check_truth
from jaxgauss._engine import FitCarry, FitResult, ScanPlan, Trace, guarded_step
from jaxgauss._memory import check_memory
from jaxgauss._stream import (
    check_chunk,
    check_state,
    float_dtype,
    nonfinite_error,
    nonfinite_rows,
    run_stream,
    start_state,
    tile,
)
from jaxgauss.estimators.base import Estimator, counter_dtype
from jaxgauss.gaussian import Gaussian
from jaxgauss.streams import read_chunks


def _where_groups(mask: jax.Array, a: Any, b: Any) -> Any:
    """Per group (leading axis): ``a`` where ``mask``, else ``b``."""
    return jax.tree_util.tree_map(
        lambda x, y: jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - 1)), x, y), a, b
    )


class _GroupPlan(NamedTuple):
    """The compiled programs' static settings."""

    estimator: Estimator
    batch_size: int
    block: int  # rows per segment step (segment path)


# --- the compiled programs ------------------------------------------------------------


def _segment_step(est: Estimator, carry: FitCarry, piece) -> FitCarry:
    """One block of rows through ``grouped_update``, guarded per group. If a group's
    result is rejected the block is replayed row by row, so that its ``diverged_at``
    names the exact row and its state the last valid one."""
    rows, groups, weights, index = piece
    live = carry.diverged_at < 0

    def apply(c, rows, groups, weights):
        w = jnp.where((c.diverged_at < 0)[groups], weights, 0)
        return est.grouped_update(c.state, rows, groups, w)

    new = apply(carry, rows, groups, weights)
    ok = jax.vmap(est.is_valid)(new) | ~live

    def one_by_one(c):
        def row(c, x):
            y, g, w, i = x
            new = apply(c, y[None], g[None], w[None])
            accept = jax.vmap(est.is_valid)(new) & (c.diverged_at < 0)
            reject = ~accept & (c.diverged_at < 0)
            state = _where_groups(accept, new, c.state)
            return c._replace(state=state, diverged_at=jnp.where(reject, i, c.diverged_at)), None

        return jax.lax.scan(row, c, (rows, groups, weights, index))[0]

    return jax.lax.cond(jnp.all(ok), lambda c: c._replace(state=new), one_by_one, carry)


@functools.partial(jax.jit, static_argnames="plan")
def _run_segments(plan: _GroupPlan, carry, rows, groups, weights, index):
    """Blocks of ``plan.block`` rows (m a multiple of it) through ``_segment_step``."""
    d, b = rows.shape[1], plan.block
    pieces = (rows.reshape(-1, b, d), groups.reshape(-1, b), weights.reshape(-1, b))
    pieces += (index.reshape(-1, b),)
    step = lambda c, p: (_segment_step(plan.estimator, c, p), None)  # noqa: E731
    return jax.lax.scan(step, carry, pieces)[0]


@functools.partial(jax.jit, static_argnames="plan")
def _run_laid_out(plan: _GroupPlan, carry, laid, weights):
    """Apply rows laid out in their groups' slots, (G, m, d) with weights (G, m)
    (padding weighs 0), in one ``grouped_update``. Returns the new carry and whether
    every live group's update was accepted."""
    live = carry.diverged_at < 0
    est = plan.estimator
    w = jnp.where(live[:, None], weights, 0)
    new = est.grouped_update(carry.state, laid, None, w)
    ok = jnp.all(jax.vmap(est.is_valid)(new) | ~live)
    return carry._replace(state=new), ok


@functools.partial(jax.jit, static_argnames="plan")
def _run_batches(plan: _GroupPlan, carry, batches, weights, first, active):
    """For the groups ``active`` (k,) (padded with G, past the last group), group
    ``active[j]``'s batches ``batches[j]`` (u, b, d) with ``weights[j]`` (u, b) through
    ``fit``'s guarded step (a rejection records ``first[j]``). Only those groups'
    states are gathered, stepped and written back."""

    def one_group(c, batches, weights, first):
        def step(c, x):
            return guarded_step(plan.estimator, c, *x), None

        return jax.lax.scan(step, c, (batches, weights, first))[0]

    # Padding gathers the last group (clipped) with weight-0 batches and is dropped.
    sub = jax.tree_util.tree_map(lambda x: jnp.take(x, active, axis=0, mode="clip"), carry)
    new = jax.vmap(one_group)(sub, batches, weights, first)
    return jax.tree_util.tree_map(lambda x, y: x.at[active].set(y, mode="drop"), carry, new)


@functools.partial(jax.jit, static_argnames=("estimator", "score", "truth_axis"))
def _group_snapshot(estimator, score, state, truth, truth_axis):
    estimate = jax.vmap(estimator.estimate)(state)
    if truth is None:
        return estimate, None
    return estimate, jax.vmap(score, in_axes=(truth_axis, 0))(truth, estimate)


# --- the host side ---------------------------------------------------------------------


class _Source(NamedTuple):
    """Where groups or weights come from: None, a column of the data, or an array
    aligned with the rows as given."""

    column: int | None
    values: np.ndarray | None


def _source(name: str, value: Any) -> _Source:
    if value is None:
        return _Source(None, None)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return _Source(int(value), None)
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array with one entry per row, or a column index, "
            f"got shape {arr.shape}"
        )
    return _Source(None, arr)


def _check_groups(g: np.ndarray, n_groups: int, offset: int) -> np.ndarray:
    """Group ids of one chunk as int32, with a ValueError naming the first bad row."""
    if g.dtype == np.bool_ or not (
        np.issubdtype(g.dtype, np.integer) or np.issubdtype(g.dtype, np.floating)
    ):
        raise ValueError(f"groups must be integers, got dtype {g.dtype}")
    bad = (g < 0) | (g >= n_groups)
    if np.issubdtype(g.dtype, np.floating):
        with np.errstate(invalid="ignore"):
            bad |= ~np.isfinite(g) | (g != np.round(g))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"groups[{offset + i}] = {g[i].item()!r} is not an integer in [0, n_groups = {n_groups})"
        )
    return g.astype(np.int32)


def _check_weights(w: np.ndarray, offset: int, dtype: Any) -> np.ndarray:
    """Weights of one chunk, with a ValueError naming the first bad row: one that is
    negative or not finite, or positive but below the working ``dtype``'s smallest
    normal number (XLA flushes it to 0, so the row would silently not count)."""
    if w.dtype == np.bool_ or not (
        np.issubdtype(w.dtype, np.integer) or np.issubdtype(w.dtype, np.floating)
    ):
        raise ValueError(f"weights must be real numbers, got dtype {w.dtype}")
    bad = w < 0
    if np.issubdtype(w.dtype, np.floating):
        bad |= ~np.isfinite(w)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"weights[{offset + i}] = {w[i].item()!r} is not a finite number >= 0")
    tiny = np.finfo(dtype).tiny
    small = (w > 0) & (w < tiny)
    if small.any():
        i = int(np.flatnonzero(small)[0])
        raise ValueError(
            f"weights[{offset + i}] = {w[i].item()!r} is below {np.dtype(dtype).name}'s "
            f"smallest normal number ({tiny:.3g}), which the computation flushes to 0: "
            "rescale the weights (only their ratios matter) or compute in float64"
        )
    return w


def _grouped_start(est: Estimator, init: Any, state: Any, n_groups: int, d: int, dtype: Any):
    """The stacked state a grouped fit starts from: a continued one (checked), one
    initial Gaussian per group (a leading axis), or one for all groups."""
    G = n_groups
    if state is not None:
        _check_group_count(state, G)
        check_state(est._replace(init=lambda g0: tile(est.init(g0), G)), state, d, dtype)
        return state
    if init is not None and jnp.ndim(init.mean) == 2:  # one initial Gaussian per group
        check_stacked_gaussian(init, G, d, "groups", name="init")
        return jax.vmap(est.init)(init.astype(dtype))
    return tile(start_state(est, init, d, dtype), G)


def _check_group_count(state: Any, n_groups: int) -> None:
    """A continued grouped state has one entry per group (its leaves' leading axis)."""
    held = jnp.shape(jax.tree_util.tree_leaves(state)[0])[:1]
    if held != (n_groups,):
        raise ValueError(
            f"state holds {held[0] if held else 'no'} groups and this fit n_groups = "
            f"{n_groups}: continue a grouped state with the same number of groups"
        )


def _add_weight(totals: np.ndarray, groups, weights, counts: np.ndarray, dtype) -> None:
    """Add a chunk's weights (None: all 1, the groups' ``counts``) to each group's
    total (float64, on the host, in place), refused past what the working dtype
    holds: the state's total would overflow and the fit stop at that row."""
    if weights is None:
        totals += counts
        return
    totals += np.bincount(groups, weights=weights, minlength=totals.shape[0])
    limit = float(np.finfo(dtype).max) / 16  # room for the update's n + W
    if totals.max() > limit:
        k = int(np.argmax(totals))
        raise ValueError(
            f"the weights of group {k} add up to {totals[k]:.3g}, more than "
            f"{np.dtype(dtype).name} holds in a fit (at most {limit:.3g}): rescale the "
            "weights (only their ratios matter) or compute in float64"
        )


def _check_some_weight(n_rows: np.ndarray, totals: np.ndarray) -> None:
    """Rows were read but none has a positive weight: nothing was estimated."""
    if n_rows.sum() and not totals.any():
        raise ValueError(
            f"no row has a positive weight: all {int(n_rows.sum())} weights are 0, so "
            "nothing was estimated"
        )


def _split(chunk: Any, groups: _Source, weights: _Source, n_groups: int, d, offset: int):
    """(rows, group ids, weights) of a chunk: columns split off, arrays sliced."""
    cols = [c for c in (groups.column, weights.column) if c is not None]
    arr = None  # the chunk with its id and weight columns, when it has them
    if cols:
        arr = np.asarray(chunk)
        full = check_chunk(arr, None, offset)
        for c in cols:
            if not -full.shape[1] <= c < full.shape[1]:
                raise ValueError(f"column {c} is out of range for data of {full.shape[1]} columns")
        drop = sorted({c % full.shape[1] for c in cols})
        if len(drop) != len(cols):
            raise ValueError("groups and weights must be different columns")
        chunk = np.delete(arr, drop, axis=1)
    chunk = check_chunk(chunk, d, offset)
    m = chunk.shape[0]
    g = _chunk_values("groups", groups, arr, offset, m, np.zeros(m, np.int32))
    w = _chunk_values("weights", weights, arr, offset, m, None)
    w = np.ones(m, np.float32) if w is None else _check_weights(w, offset, float_dtype(chunk.dtype))
    return chunk, _check_groups(g, n_groups, offset), w


def _chunk_values(name: str, src: _Source, arr: Any, offset: int, m: int, default: Any):
    """A chunk's group ids or weights: its column, its slice of the aligned array
    (refused when that ran out), or ``default``."""
    if src.column is not None:
        return np.asarray(arr[:, src.column])
    if src.values is None:
        return default
    values = src.values[offset : offset + m]
    if values.shape[0] != m:
        raise ValueError(f"{name} has {src.values.shape[0]} entries, data more rows")
    return values


class _Grouped:
    """One grouped fit in progress: splits each chunk into rows, group ids, weights
    and original row indices, buffers them into pieces of ``size`` rows, applies
    each piece in one compiled call and (with a trace) snapshots after it."""

    def __init__(
        self, plan: ScanPlan, *, n_groups, groups, weights, init, state, truth, size, nan_policy,
        squeeze,
    ):  # fmt: skip
        self.plan, self.n_groups, self.nan_policy = plan, n_groups, nan_policy
        self.squeeze = squeeze  # weights without groups: one group, returned without its axis
        self.groups, self.weights = groups, weights
        self.init, self.state0, self.truth0 = init, state, truth
        self.interval = plan.batch_size * plan.trace_every
        self.size = self.interval or size
        self.pending, self.n_pending = [], 0  # buffered (rows, groups, weights, index)
        self.carry: FitCarry | None = None
        self.d = self.dtype = None
        self.seen = 0  # rows read, skipped ones included
        self.skipped: list[int] = []
        self.n_rows = np.zeros(n_groups, np.int64)
        self.group_weight = np.zeros(n_groups)  # each group's total weight, float64
        self.leftover: list[tuple] = []  # per group: rows waiting to fill a batch
        self.snapshots: list[tuple] = []
        self.done = 0  # rows applied (the trace's row count)

    # -- start -------------------------------------------------------------------------

    def _start(self, d: int, dtype) -> None:
        est, G = self.plan.estimator, self.n_groups
        self.d, self.dtype = d, dtype
        check_memory(est, d, dtype, chunk_rows=PIECE_ROWS, groups=G)
        state = _grouped_start(est, self.init, self.state0, G, d, dtype)
        self.carry = FitCarry(
            state, jnp.full((G,), -1, counter_dtype()), jnp.zeros((G,), counter_dtype())
        )
        self.truth, self.truth_axis = _check_group_truth(self.truth0, self.plan, d, dtype, G)
        segment = est.grouped_update is not None
        block = 0
        if segment:
            block = self.plan.block * self.plan.batch_size
            block = max(1, min(block, self.size or block))
            if self.interval:
                block = max(q for q in range(1, block + 1) if self.interval % q == 0)
        self.gplan = _GroupPlan(est, self.plan.batch_size, block)
        self.leftover = [None] * G if not segment else []

    # -- feed --------------------------------------------------------------------------

    def feed(self, chunk: Any) -> None:
        """Split, check and buffer one chunk; apply every full piece."""
        chunk, groups, weights = _split(
            chunk, self.groups, self.weights, self.n_groups, self.d, self.seen
        )
        if chunk.shape[0] == 0:
            return
        if self.carry is None:
            self._start(chunk.shape[1], float_dtype(chunk.dtype))
        rows = np.asarray(chunk, self.dtype) if isinstance(chunk, np.ndarray) else chunk
        rows = rows if rows.dtype == self.dtype else jnp.asarray(rows, self.dtype)
        index = self.seen + np.arange(chunk.shape[0], dtype=np.int64)
        bad = nonfinite_rows(rows)
        m = chunk.shape[0]
        if bad.size:
            if self.nan_policy == "raise":
                cut = int(bad[0])
                self._push(rows[:cut], groups[:cut], weights[:cut], index[:cut])
                row = self.seen + cut
                self.seen += cut
                raise nonfinite_error(row, rows[cut])
            keep = np.ones(m, bool)
            keep[bad] = False
            self.skipped.extend((self.seen + bad).tolist())
            rows, groups, weights, index = rows[keep], groups[keep], weights[keep], index[keep]
        self.seen += m
        self._push(rows, groups, weights, index)

    def _push(self, rows, groups, weights, index) -> None:
        if not rows.shape[0]:
            return
        counts = np.bincount(groups, minlength=self.n_groups)
        self.n_rows += counts
        given = self.weights.column is not None or self.weights.values is not None
        _add_weight(self.group_weight, groups, weights if given else None, counts, self.dtype)
        self.pending.append((rows, groups, weights, index))
        self.n_pending += rows.shape[0]
        if self.size and self.n_pending >= self.size:
            parts = _joined(self.pending)
            self.pending, self.n_pending = [], 0
            done = 0
            while parts[0].shape[0] - done >= self.size:
                self._apply(
                    [p[done : done + self.size] for p in parts], snapshot=bool(self.interval)
                )
                done += self.size
            if done < parts[0].shape[0]:
                self.pending = [tuple(p[done:] for p in parts)]
                self.n_pending = parts[0].shape[0] - done

    def close(self) -> None:
        """Apply what is buffered, then (generic path) every group's last short batch."""
        if self.carry is None:
            return
        if self.n_pending:
            parts = _joined(self.pending)
            self.pending, self.n_pending = [], 0
            self._apply(parts, snapshot=False)
        if self.gplan.block == 0:
            self._run_groups(flush=True)

    # -- apply -------------------------------------------------------------------------

    def _apply(self, parts, snapshot: bool) -> None:
        rows, groups, weights, index = parts
        if self.gplan.block:
            self._run_segment(rows, groups, weights, index)
        else:
            self._collect(rows, groups, weights, index)
            self._run_groups(flush=False)
        self.done += rows.shape[0]
        if snapshot:
            self.snapshots.append(
                (self.done,)
                + _group_snapshot(
                    self.plan.estimator,
                    self.plan.score,
                    self.carry.state,
                    self.truth,
                    self.truth_axis,
                )
            )

    def _run_segment(self, rows, groups, weights, index) -> None:
        """In pieces of ``PIECE_ROWS`` rows (each group's rows stay in order), each
        laid out per group when that suits it (``_lay_out``), else in blocks.

        A laid-out piece's acceptance is read only after the next piece is
        dispatched, so the host lays out one piece while the device applies the
        last. A rejected piece (a group's update not valid) is replayed in blocks
        from the carry before it, which name the exact row, and the piece dispatched
        after it is applied again."""
        unchecked = None  # (carry before, piece, accepted) of the last laid-out piece
        for start in range(0, rows.shape[0], PIECE_ROWS):
            piece = slice(start, start + PIECE_ROWS)
            laid = _lay_out(rows[piece], groups[piece], weights[piece], self.n_groups, self.dtype)
            if laid is None:
                self._settle(unchecked, rows, groups, weights, index)
                unchecked = None
                self._run_blocks(rows[piece], groups[piece], weights[piece], index[piece])
                continue
            before = self.carry
            self.carry, ok = _run_laid_out(self.gplan, before, *laid)
            if self._settle(unchecked, rows, groups, weights, index):
                before = self.carry
                self.carry, ok = _run_laid_out(self.gplan, before, *laid)
            unchecked = (before, piece, ok)
        self._settle(unchecked, rows, groups, weights, index)

    def _settle(self, unchecked, rows, groups, weights, index) -> bool:
        """Whether a laid-out piece was rejected, then replayed in blocks from the
        carry before it (the carry is that replay's)."""
        if unchecked is None or bool(unchecked[2]):
            return False
        self.carry, piece = unchecked[0], unchecked[1]
        self._run_blocks(rows[piece], groups[piece], weights[piece], index[piece])
        return True

    def _run_blocks(self, rows, groups, weights, index) -> None:
        """Whole blocks in one call, the rest padded to one block with weight-0 rows
        (a no-op), so a stream compiles at most three shapes."""
        b, m = self.gplan.block, rows.shape[0]
        head = m // b * b
        if head and head < m:
            self._run_blocks(rows[:head], groups[:head], weights[:head], index[:head])
            rows, groups, weights, index = rows[head:], groups[head:], weights[head:], index[head:]
            m -= head
        pad = -m % b
        if pad:
            rows = jnp.concatenate([rows, jnp.zeros((pad, rows.shape[1]), rows.dtype)])
            groups = np.concatenate([groups, np.zeros(pad, np.int32)])
            weights = np.concatenate([weights, np.zeros(pad, weights.dtype)])
            index = np.concatenate([index, np.full(pad, -1, np.int64)])
        self.carry = _run_segments(
            self.gplan,
            self.carry,
            rows,
            jnp.asarray(groups),
            jnp.asarray(weights, self.dtype),
            jnp.asarray(index, jnp.int32),
        )

    def _collect(self, rows, groups, weights, index) -> None:
        """Append the piece's rows to each group's waiting rows, in order."""
        rows = np.asarray(rows)
        order = np.argsort(groups, kind="stable")
        bounds = np.searchsorted(groups[order], np.arange(self.n_groups + 1))
        for k in range(self.n_groups):
            sel = order[bounds[k] : bounds[k + 1]]
            if not sel.size:
                continue
            new = (rows[sel], weights[sel], index[sel])
            old = self.leftover[k]
            self.leftover[k] = (
                new if old is None else tuple(np.concatenate([a, c]) for a, c in zip(old, new))
            )

    def _run_groups(self, flush: bool) -> None:
        """Every group's full batches (with ``flush``, its short last one too), in
        vmapped calls over the groups that have some (``_pack_batches``)."""
        b = self.plan.batch_size
        while (packed := _pack_batches(self.leftover, b, self.d, self.dtype, flush)) is not None:
            self.carry = _run_batches(self.gplan, self.carry, *map(jnp.asarray, packed))

    # -- result ------------------------------------------------------------------------

    def result(self) -> FitResult:
        """After the last chunk: the checks only the whole stream allows, what is
        buffered applied, and the ``FitResult``."""
        if self.carry is None:
            raise ValueError("data is empty: no rows")
        for name, src in (("groups", self.groups), ("weights", self.weights)):
            if src.values is not None and src.values.shape[0] != self.seen:
                raise ValueError(
                    f"{name} has {src.values.shape[0]} entries but data has {self.seen} rows"
                )
        _check_some_weight(self.n_rows, self.group_weight)
        self.close()
        return self._assemble()

    def partial_result(self) -> FitResult | None:
        """After an error: the fit of every row read before it (None if none was)."""
        if self.carry is None:
            return None
        try:
            self.close()
        except Exception:
            pass
        return self._assemble()

    def _assemble(self) -> FitResult:
        carry = self.carry
        estimate = jax.vmap(self.plan.estimator.estimate)(carry.state)
        trace = None
        if self.plan.trace_every:
            trace = _trace(self.snapshots, estimate, self.truth, self.n_groups, self.dtype)
        out = FitResult(
            estimate, carry.state, carry.diverged_at, trace, self.n_rows, len(self.skipped)
        )
        return _squeezed(out) if self.squeeze else out


def _check_group_truth(truth, plan: ScanPlan, d: int, dtype, n_groups: int):
    """The truth for a grouped trace: one ``Gaussian`` for all groups, or one with a
    leading (G,) axis (one per group). Returns it and its vmap axis."""
    if truth is None:
        return None, None
    if isinstance(truth, Gaussian) and jnp.ndim(truth.mean) == 2:
        check_stacked_gaussian(truth, n_groups, d, "groups", name="truth")
        return truth.astype(dtype), 0
    return check_truth(truth, plan.score, d, dtype), None


def _weighted_plan(plan: ScanPlan, groups: Any, weights: Any, state: Any) -> ScanPlan:
    """The plan with the estimator's weighted form where the fit needs weights (given
    ones, or the weight-0 padding of a grouped fit without ``grouped_update``)."""
    est = plan.estimator
    needs = weights is not None or (groups is not None and est.grouped_update is None)
    if not needs or est.weighted:
        return plan
    if est.weighted_form is None:
        raise ValueError(
            "this estimator takes no weights and has no weighted form "
            "(Estimator.weighted_form), so it cannot be fitted "
            + ("with weights" if weights is not None else "per group (a grouped fit pads "
               "each group's batches with weight-0 rows)")
            + ": welford, natural_gradient, exponential and gradient_ascent can"
        )  # fmt: skip
    count = getattr(state, "count", None)
    if count is not None and jnp.issubdtype(jnp.result_type(count), jnp.integer):
        raise ValueError(
            "state was made without weights (an integer row count), and a fit with weights "
            "continues a weighted state (a float total weight): build the estimator with "
            "weighted=True from the start to mix weighted and unweighted fits"
        )
    return plan._replace(estimator=est.weighted_form())


def fit_grouped(
    plan: ScanPlan,
    data: Any,
    init: Any,
    *,
    groups: Any,
    n_groups: Any,
    weights: Any,
    truth: Any,
    state: Any,
    chunk_rows: int | None,
    nan_policy: str,
    progress: bool,
) -> FitResult:
    """``fit`` with ``groups`` and/or ``weights`` (see ``fit``'s docstring)."""
    plan = _weighted_plan(plan, groups, weights, state)
    g_src, w_src = _source("groups", groups), _source("weights", weights)
    chunks, total, size = read_chunks(data, chunk_rows)
    for name, src in (("groups", g_src), ("weights", w_src)):
        if src.values is not None and total is not None and src.values.shape[0] != total:
            raise ValueError(f"{name} has {src.values.shape[0]} entries but data has {total} rows")
    squeeze = groups is None
    if squeeze:
        if n_groups not in (None, 1):
            raise ValueError("n_groups needs groups")
        n_groups = 1
    elif n_groups is None:
        if g_src.values is not None:
            n_groups = int(np.max(_check_groups(g_src.values, np.iinfo(np.int32).max, 0)) + 1)
        elif total is not None:
            col = np.asarray(data)[:, g_src.column]
            n_groups = int(np.max(_check_groups(col, np.iinfo(np.int32).max, 0)) + 1)
        else:
            raise ValueError(
                "n_groups is needed when the group ids come from a column of a file or an "
                "iterable (they are not known before the stream ends)"
            )
    else:
        n_groups = check_int("n_groups", n_groups, 1)
    run = _Grouped(
        plan, n_groups=n_groups, groups=g_src, weights=w_src, init=init,
        state=None if state is None else (tile(state, 1) if squeeze else state),
        truth=truth, size=size, nan_policy=nan_policy, squeeze=squeeze,
    )  # fmt: skip
    return run_stream(run, chunks, total, progress)


def _trace(snapshots: list, like: Any, truth: Any, n_groups: int, dtype: Any) -> Trace:
    """The grouped trace: every group's snapshot after each traced piece."""
    if not snapshots:
        empty = jax.tree_util.tree_map(lambda x: jnp.zeros((0,) + x.shape, x.dtype), like)
        score = None if truth is None else jnp.zeros((0, n_groups), dtype)
        return Trace(jnp.zeros((0,), counter_dtype()), empty, score)
    rows, estimates, scores = zip(*snapshots)
    stack = lambda *xs: jnp.stack(xs)  # noqa: E731
    return Trace(
        jnp.asarray(rows, counter_dtype()),
        jax.tree_util.tree_map(stack, *estimates),
        None if truth is None else jnp.stack(scores),
    )


def _joined(pending: list[tuple]) -> list:
    """Buffered (rows, groups, weights, index) pieces as one of each; rows stay NumPy
    when they all are (laid out on the host) and join on the device otherwise."""
    if len(pending) == 1:
        return list(pending[0])
    rows = [p[0] for p in pending]
    xp = np if all(isinstance(r, np.ndarray) for r in rows) else jnp
    return [xp.concatenate(rows)] + [np.concatenate(p) for p in list(zip(*pending))[1:]]


# Rows per laid-out piece of a grouped welford fit: large enough that the groups'
# batched Gram hides each call's cost, small enough that a piece's host gather and
# transfer stay in cache and overlap the device's work on the last one.
PIECE_ROWS = 1 << 17


def _squeezed(out: FitResult) -> FitResult:
    """A fit of one group (weights without groups) without its group axis."""
    first = lambda x: x[0]  # noqa: E731
    trace = out.trace
    if trace is not None:
        trace = Trace(
            trace.rows,
            jax.tree_util.tree_map(lambda x: x[:, 0], trace.estimate),
            None if trace.score is None else trace.score[:, 0],
        )
    return FitResult(
        jax.tree_util.tree_map(first, out.estimate),
        jax.tree_util.tree_map(first, out.state),
        out.diverged_at[0],
        trace,
        int(out.n_rows[0]),
        out.n_skipped,
    )


def _slots(groups: np.ndarray, n_groups: int) -> tuple[np.ndarray, int] | None:
    """Rows laid out per group: the row of each of the (G·m) slots (n for padding,
    which a clipped gather reads as the last row, weighted 0) and m, the largest group's count rounded up (by at most 1/8); None when G = 1 or
    padding would more than double the rows."""
    n, G = groups.shape[0], n_groups
    counts = np.bincount(groups, minlength=G)
    top = int(counts.max())
    q = 1 << max(0, top.bit_length() - 3)
    m = -(-top // q) * q
    if G == 1 or G * m > 2 * n:
        return None
    order = np.argsort(groups.astype(np.uint16) if G <= 2**16 else groups, kind="stable")
    starts = np.cumsum(counts) - counts
    ranked = groups[order]
    source = np.full(G * m, n, np.int64)  # slot -> row (n: a zero row of weight 0)
    source[ranked * m + np.arange(n) - starts[ranked]] = order
    return source.astype(np.int32), m


def _lay_out(rows: Any, groups: np.ndarray, weights: np.ndarray, n_groups: int, dtype: Any):
    """A piece's rows laid out per group, (G, m, d) (m the largest group's count
    rounded up by at most 1/8), with their weights (G, m), padding weighted 0: one
    batched Gram, faster than the blocks' segment sums of outer products when the
    groups are about equal. NumPy rows are gathered on the host. None when G = 1 or
    padding would more than double the rows (``_slots``)."""
    slots = _slots(groups, n_groups)
    if slots is None:
        return None
    source, m = slots
    xp = np if isinstance(rows, np.ndarray) else jnp
    laid = xp.take(rows, source, axis=0, mode="clip").reshape(n_groups, m, -1)
    weights = np.where(source < rows.shape[0], np.take(weights, source, mode="clip"), 0)
    return laid, weights.astype(dtype).reshape(n_groups, m)


def _pack_batches(leftover: list, b: int, d: int, dtype: Any, flush: bool):
    """The next call's batches: of the k groups with a full batch waiting (with
    ``flush``, any row), up to u batches each, in arrays padded to powers of two (k
    to k', u to u', so a stream compiles few shapes) with weight-0 batches: batches
    (k', u', b, d), weights (k', u', b), each batch's first row (k', u') and the
    groups (k',) (padding: G). k' u' b stays within ``PIECE_ROWS`` rows (or one batch
    per group): a large group is applied over several calls rather than every group
    padded to its length. ``leftover`` keeps the rest. None when nothing is waiting."""
    G = len(leftover)
    counts = np.array([0 if x is None else x[0].shape[0] for x in leftover])
    nb = (counts + b - 1) // b if flush else counts // b
    active = np.flatnonzero(nb)
    if not active.size:
        return None
    k = 1 << (active.size - 1).bit_length()
    cap = max(1, PIECE_ROWS // (k * b))
    u = min(1 << (int(nb.max()) - 1).bit_length(), 1 << (cap.bit_length() - 1))
    batches = np.zeros((k, u * b, d), dtype)
    weights = np.zeros((k, u * b), dtype)
    first = np.full((k, u), -1, np.int32)
    for j, g in enumerate(active):
        n = min(int(nb[g]), u)
        take = min(int(counts[g]), n * b)
        y, w, i = leftover[g]
        batches[j, :take], weights[j, :take] = y[:take], w[:take]
        first[j, :n] = i[:take:b]
        leftover[g] = None if take == counts[g] else (y[take:], w[take:], i[take:])
    groups = np.full(k, G, np.int32)
    groups[: active.size] = active
    return batches.reshape(k, u, b, d), weights.reshape(k, u, b), first, groups
