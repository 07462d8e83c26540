"""``Feeder``: one fit in progress on one device, as the runners see it: rows come
in, compiled pieces of fixed shapes go out, and the ``FitResult`` comes back."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgauss._engine import (
    TAIL_ENTRIES,
    FitCarry,
    FitResult,
    ScanPlan,
    Trace,
    enter_frame,
    finish,
    run_scan,
    run_tail,
    snapshot,
    tail_plan,
)
from jaxgauss._stream import SMALL_ENTRIES, TINY_ENTRIES, original_row, zero_padded
from jaxgauss.estimators.base import counter_dtype, new_counter


def unit_plan(plan: ScanPlan, size: int | None) -> tuple[ScanPlan, int, bool]:
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


class Feeder:
    """One fit in progress: regroups incoming rows into compiled pieces of fixed
    shapes, applies them, and assembles the ``FitResult``.

    Rows are buffered until a full chunk of ``size`` rows (a multiple of the
    indivisible ``unit``) is ready; each full chunk is one call of the same compiled
    program. At the end, the ragged rest is cut into power-of-two pieces (``close``),
    so at most about 2 log₂ of the chunk size distinct shapes are ever compiled.
    """

    def __init__(self, plan: ScanPlan, carry: FitCarry, truth: Any, size: int | None, run=None):
        self.plan, self.unit, self.host_trace = unit_plan(plan, size)  # unit: indivisible
        self.carry, self.truth = carry, truth
        # (plan, carry, rows, truth, origin) -> (carry, trace)
        self.run = run_scan if run is None else run
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
        return not self.plan.trace_every and self.run is run_scan

    def _whole_in_tail(self, entries: int) -> bool:
        """Whether a whole array of this many entries waits for ``close``'s one tail
        call, when small enough to pad: one program to compile for a small fit, not
        two. A rowwise estimator runs as fast there as in the scan; another one's
        blocks are not unrolled there (measured 1.3× slower at d = 10), which only
        arrays of a few milliseconds' work (``TINY_ENTRIES``) do not notice against a
        second compile of about a second."""
        limit = SMALL_ENTRIES if self.plan.estimator.rowwise else TINY_ENTRIES
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
                self.traces.append(snapshot(self.plan, self.carry, self.truth, self.origin))

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
            if len(self.pending) == 1 and repeated(self.plan, rows):
                self._run_whole()
            return
        size = self.size or self.unit * (self.n_pending // self.unit)
        if size and self.n_pending >= size:
            rows = self._take()
            done = 0
            if self.size is None and self.run is run_scan:  # whole units read in place
                self._run(rows, self.plan)
                done = size
            while rows.shape[0] - done >= size:
                self._run(rows[done : done + size], self.plan)
                done += size
            if done < rows.shape[0]:
                self.push(rows[done:])

    def _run_whole(self) -> None:
        """A small whole array seen often enough: all its whole batches in one step of
        a program compiled for its shape (for a rowwise estimator one update, against
        the shared tail program's loop of small blocks: a warm fit of 1000 × 10 rows
        in ~0.2 ms less), the rest as one shorter update."""
        rows, b = self._take(), self.plan.batch_size
        k = rows.shape[0] // b
        if k:
            self._run(rows, self.plan._replace(block=k, trace_every=0))
        if k * b < rows.shape[0]:
            self._run(rows[k * b :], ScanPlan(self.plan.estimator, rows.shape[0] - k * b))

    def close(self) -> None:
        """Apply whatever is buffered: the end of the stream. With a trace (or another
        ``run``), whole units first, in power-of-two counts. Then the whole batches
        left go in one call of ``_run_tail`` (rows padded to a power of two of
        batches, at least ``TAIL_ENTRIES`` entries; no snapshot falls inside them, as
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
        if batches and self.run is run_scan:
            k = 1 << (max(batches, TAIL_ENTRIES // (b * rows.shape[1])) - 1).bit_length()
            padded = zero_padded(rows[done : done + batches * b], k * b)
            self.carry = run_tail(tail_plan(self.plan), self.carry, padded, np.int32(batches))
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
        self.carry = self.carry._replace(state=enter_frame(self.carry.state, origin))
        self.origin = origin

    def result(self) -> FitResult:
        carry = self.carry
        state, estimate = finish(self.plan.estimator.estimate, carry.state, self.origin)
        diverged = jnp.asarray(carry.diverged_at)  # still on the host if nothing ran
        if self.skipped and int(diverged) >= 0:
            diverged = new_counter(original_row(int(diverged), self.skipped))
        trace = self._trace(estimate)
        return FitResult(estimate, state, diverged, trace, int(carry.rows), len(self.skipped))


# A small whole array (of a rowwise estimator) whose shape has been fitted this many
# times before gets a program of its own (``Feeder._run_whole``): a user's loop of
# fits of one shape runs at the speed of one update, while one-off small fits (of
# many shapes, as in a test suite) keep sharing the tail program and compile nothing.
REPEATS = 3
_SEEN: dict = {}


def repeated(plan: ScanPlan, rows: Any) -> bool:
    """Count one more fit of ``rows``' shape under ``plan``; whether it had been seen
    ``REPEATS`` times (only rowwise estimators, whose one update is all the rows)."""
    if not plan.estimator.rowwise:
        return False
    key = (plan, rows.shape, str(rows.dtype), isinstance(rows, np.ndarray))
    if len(_SEEN) > 4096:  # bounded: forget, and count again
        _SEEN.clear()
    _SEEN[key] = _SEEN.get(key, 0) + 1
    return _SEEN[key] > REPEATS
