"""The single-stream runner: one fit over a chunked source on one device."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgauss._checks import check_truth
from jaxgauss._engine import (
    FitCarry,
    FitResult,
    block_updates,
    framed,
)
from jaxgauss._feeder import Feeder, unit_plan
from jaxgauss._memory import check_memory
from jaxgauss._stream import (
    SMALL_ENTRIES,
    check_chunk,
    chunk_stats,
    first_finite_row,
    float_dtype,
    largest_counter,
    nonfinite_error,
    nonfinite_rows,
    run_stream,
    small_on_host,
    start_or_continue,
    subtract_host,
    to_frame,
)
from jaxgauss.estimators.base import COUNTER_LIMIT_INT32, counter_dtype
from jaxgauss.streams import read_chunks


class SingleStream:
    """The steps of one ``fit`` over a chunked source: start at the first chunk (the
    data fix d and the dtype), frame, screen and count each chunk, feed it.

    Framing (moment estimators, whose states keep the mean relative to an origin
    row): the first finite row, rounded to the working dtype, becomes the origin (a
    continued state keeps its own), and every chunk is moved into that frame on the
    host in the data's own precision BEFORE the cast, so float64 data far from 0 lose
    nothing in float32 (see ``jaxgauss.estimators.moments``).

    A whole array of a moment estimator with ``nan_policy="raise"`` is screened by
    the engine instead (``FitCarry.bad_row``): rows already in the working dtype go
    to the compiled scan as they are, the state keeping its origin so that each block
    is shifted in cache (a NumPy array from its first 64-byte-aligned row on without
    a copy, ``_aligned_start``; else in pieces of about ``PIECE_BYTES``); rows that
    need a cast are shifted on the host piece by piece, so the host's shift of one
    piece overlaps the device's work on the last. No pass over the data is made
    before the scan.
    """

    def __init__(self, plan, *, init, state, truth, size, nan_policy, block_rows=None):
        self.plan, self.init, self.state, self.truth = plan, init, state, truth
        self.size, self.nan_policy, self.block_rows = size, nan_policy, block_rows
        self.feeder: Feeder | None = None
        self.d = self.dtype = None
        self.seen = 0  # rows read, skipped ones included
        self.counted = 0  # the largest counter in a continued state
        self.framed = False
        self.spread: np.ndarray | None = None  # per column, max |row − origin|
        self.whole: Any = None  # the array, when the engine screens it
        self.origin: np.ndarray | None = None  # its rows' shift on the host, if any

    def _start(self, first: Any) -> Feeder:
        d, dtype = first.shape[1], float_dtype(first.dtype)
        if self.block_rows is None:  # the default block is sized by d
            plan = self.plan
            block = block_updates(plan.estimator, plan.batch_size, plan.trace_every, None, d)
            self.plan = plan._replace(block=block)
        truth = None if self.truth is None else check_truth(self.truth, self.plan.score, d, dtype)
        if self.state is None:
            held = self.size and max(self.size, unit_plan(self.plan, self.size)[1])
            check_memory(self.plan.estimator, d, dtype, chunk_rows=held or 0)
        state = start_or_continue(self.plan.estimator, self.init, self.state, d, dtype)
        self.counted = 0 if self.state is None else largest_counter(state)
        self.d, self.dtype = d, dtype
        # Counters start on the host: the first compiled call takes them over.
        counter = functools.partial(np.asarray, dtype=counter_dtype())
        carry = FitCarry(state, counter(-1), counter(0))
        self.framed = framed(state)
        host_or_cast_free = isinstance(first, np.ndarray) or first.dtype == dtype
        if self.framed and self.size is None and self.nan_policy == "raise" and host_or_cast_free:
            self.whole = first  # the engine screens a whole array
            carry = carry._replace(bad_row=counter(-1))
        feeder = Feeder(self.plan, carry, truth, self.size)
        if self.framed and self.state is not None and self.whole is None:
            feeder.enter_frame(np.asarray(state.origin))
        return feeder

    def _feed_whole(self, chunk: Any) -> None:
        """A whole array, screened by the engine (class docstring)."""
        origin = first_finite_row(chunk) if self.state is None else None
        if self.state is None and origin is None:
            raise nonfinite_error(0, chunk[0])
        carry = self.feeder.carry
        origin = np.asarray(carry.state.origin) if origin is None else origin.astype(self.dtype)
        if chunk.dtype != self.dtype:  # shifted on the host, before the cast
            self.origin = origin
            self.feeder.enter_frame(origin)
        elif self.state is None:  # rebased on the host: cheaper than a compiled call
            state = jax.tree_util.tree_map(np.asarray, carry.state).reframed(origin)
            self.feeder.carry = carry._replace(state=state)
        self.seen += chunk.shape[0]
        head = _aligned_start(chunk, self.plan.batch_size, self.feeder.unit, self.dtype)
        if head is not None:  # the rest is handed to the device without a copy
            self.feeder.push(chunk[:head])
            self.feeder.close()  # the head first, in order (the tail program)
            self.feeder.push(jax.device_put(chunk[head:]))
            return
        for piece in _pieces(chunk, self.feeder.unit, self.dtype):
            self.feeder.push(self._shifted(piece))

    def _shifted(self, rows: Any) -> Any:
        return rows if self.origin is None else subtract_host(rows, self.origin, self.dtype)

    def _check_screen(self) -> None:
        """After the engine screened a whole array: a bad row raised as ``DataError``
        once the rows before it are applied (by the partial result)."""
        carry = self.feeder.carry
        bad = int(carry.bad_row)
        if bad >= 0:
            applied = int(carry.rows)
            self.feeder.carry = carry._replace(bad_row=np.asarray(-1, counter_dtype()))
            self.feeder.push(self._shifted(np.asarray(self.whole[applied:bad])))
            raise nonfinite_error(bad, self.whole[bad])

    def _frame(self, chunk: Any) -> tuple[Any, Any]:
        """The chunk in the working dtype, moved into the state's frame: the origin
        is subtracted on the host in the data's own precision, before the cast.
        NumPy chunks stay on the host until the compiled call (``chunk_stats`` reads
        them there). Also what ``chunk_stats`` needs, when it came on the way (device rows)."""
        if self.framed and self.feeder.origin is None:
            first = first_finite_row(chunk)
            if first is not None:  # else no reference yet: these rows are all screened out
                self.feeder.enter_frame(first.astype(self.dtype))
        origin = self.feeder.origin if self.framed else None
        if isinstance(chunk, jax.Array):
            return to_frame(chunk, origin, jnp.dtype(self.dtype))
        if origin is None:
            out = np.asarray(chunk, self.dtype)
        else:
            out = subtract_host(chunk, origin, self.dtype)
        return out, None

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
        bad_any, spread = chunk_stats(rows, found)
        self._record_spread(spread)
        bad = nonfinite_rows(rows) if bad_any else np.zeros(0, np.int64)
        if not bad.size:
            return rows
        if self.nan_policy == "raise":
            self.feeder.push(rows[: bad[0]])
            raise nonfinite_error(self.seen + int(bad[0]), rows[bad[0]])
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
        chunk = small_on_host(check_chunk(chunk, self.d, self.seen))
        if chunk.shape[0] == 0:
            return
        self.feeder = self.feeder or self._start(chunk)
        self._check_capacity(chunk.shape[0])
        if self.whole is not None:
            self._feed_whole(chunk)
            return
        rows = self._screen(*self._frame(chunk))
        self.seen += chunk.shape[0]
        self.feeder.push(rows)

    def result(self) -> FitResult:
        if self.feeder is None:
            raise ValueError("data is empty: no rows")
        self.feeder.close()
        if self.whole is not None:
            self._check_screen()
        result = self.feeder.result()
        if result.n_rows == 0 and result.n_skipped:
            raise ValueError(
                f"no finite rows: all {result.n_skipped} rows were skipped "
                "(nan_policy='skip'), so nothing was estimated"
            )
        if self.whole is not None and self.dtype == jnp.float32:
            self.spread = self._whole_spread()
        if self.spread is not None:
            self._check_range()
        return result

    def _whole_spread(self) -> np.ndarray:
        """The range check's spread of each column about the origin, for a whole
        array screened by the engine: read off its first ``HEAD_ROWS`` rows, and over
        all rows only for the columns that spread less than 2⁻⁵² there (a spread only
        grows, so ordinary data make no pass over the rows for it)."""
        origin = self.origin
        if origin is None:
            origin = np.asarray(self.feeder.carry.state.origin)
        head = np.asarray(self.whole[:HEAD_ROWS])  # float32: NumPy keeps subnormals
        spread = np.max(np.abs(head - origin), axis=0).astype(np.float64)
        for j in np.flatnonzero(spread < 2.0**-52):
            column = np.asarray(self.whole[:, j], np.float64)
            spread[j] = np.max(np.abs(column - np.float64(origin[j])))
        return spread

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


# Rows per piece of a whole NumPy array handed to the compiled scan: about this many
# bytes, so a piece's transfer and host shift stay in cache (copying a whole array
# of 10⁶ × 10 float32 to the device at once took 45-76 ms, a Gram of it 10 ms).
PIECE_BYTES = 1 << 21


# Rows of a whole array the range check reads first (see ``_whole_spread``).
HEAD_ROWS = 64


# jax.device_put hands a NumPy array to CPU devices without copying it when its data
# start on a multiple of this many bytes (XLA's buffer alignment); otherwise it
# copies (25 ms for 10⁶ × 10 float32 rows, against 0.05 ms aligned).
ALIGNMENT = 64


def _aligned_start(chunk: Any, batch_size: int, unit: int, dtype: Any) -> int | None:
    """The first row from which a NumPy array of the working dtype can go to a CPU
    device without a copy (its data start on an ``ALIGNMENT`` boundary), when that
    row starts a batch and whole units follow; else None (the array goes in
    pieces)."""
    if not isinstance(chunk, np.ndarray) or chunk.dtype != dtype or chunk.size <= SMALL_ENTRIES:
        return None  # (a small array is padded on the host for the tail program)
    if not (chunk.flags.c_contiguous and jax.devices()[0].platform == "cpu"):
        return None
    row_bytes = chunk.strides[0]
    for head in range(0, ALIGNMENT, batch_size):
        if (chunk.ctypes.data + head * row_bytes) % ALIGNMENT == 0:
            return head if chunk.shape[0] - head >= unit else None
    return None


def _pieces(chunk: Any, unit: int, dtype: Any):
    """A whole array in pieces of whole units of about ``PIECE_BYTES`` (a device
    array, or one not larger than a piece, stays whole)."""
    row_bytes = chunk.shape[1] * np.dtype(dtype).itemsize
    step = unit * max(1, PIECE_BYTES // (unit * row_bytes))
    if isinstance(chunk, jax.Array) or chunk.shape[0] <= step:
        yield chunk
        return
    for start in range(0, chunk.shape[0], step):
        yield chunk[start : start + step]


def fit_single(
    plan, data, *, init, state, truth, chunk_rows, nan_policy, progress, block_rows
) -> FitResult:
    """``fit`` of one stream on one device (see ``fit``'s docstring)."""
    chunks, total, size = read_chunks(data, chunk_rows)
    stream = SingleStream(
        plan, init=init, state=state, truth=truth, size=size, nan_policy=nan_policy,
        block_rows=block_rows,
    )  # fmt: skip
    return run_stream(stream, chunks, total, progress)
