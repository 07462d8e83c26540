"""Forgetting by window: removing rows from a ``welford`` state, and the moments of
the last w rows of a stream.

``exponential`` forgets smoothly; a window forgets exactly: the estimate after row t
is the MLE of rows t − w + 1 … t and nothing older. Removing rows is the inverse of
absorbing them: the pairwise union formula (``higher_moments.combine``) with the
removed set's weight negated. Unlike absorbing, removing subtracts, so rounding
errors do not shrink with the count: each removal leaves O(ε · scale of the removed
rows) behind, and over a long stream these residues add up (a random walk of √t
steps, or worse once an early burst of large rows has been subtracted from a calm
window). ``rolling`` therefore keeps the window's rows in a ring buffer and every
``reanchor_every`` rows recomputes the moments from the buffer in two passes, which
bounds the drift to what the last ``reanchor_every`` updates add, at an amortised
cost of one more row's work per row (for the default of w rows).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxgauss.estimators.base import Estimator, all_finite
from jaxgauss.estimators.higher_moments import Moments, batch_moments, combine
from jaxgauss.estimators.moments import WelfordState
from jaxgauss.gaussian import Gaussian

__all__ = ["RollingState", "downdate", "rolling"]


def downdate(state: WelfordState, rows: jax.Array) -> WelfordState:
    """Remove ``rows`` from a ``welford`` state: the inverse of ``update`` (river's
    ``revert``), so that downdate(update(s, B), B) equals s to rounding.

    With n = t + n₀ the state's weight, B the b removed rows (mean μ_B, covariance
    Σ_B) and n' = n − b:

      μ' = (n μ − b μ_B)/n',        Σ' = (n Σ − b Σ_B − (n b/n') (μ_B − μ)(μ_B − μ)ᵀ)/n',

    and the fourth moments, if tracked, by the same negated-weight union. The rows must
    be rows the state absorbed; otherwise the result is not the moments of any set
    of rows (and may not be positive semi-definite).

    Accuracy: concrete rows are moved into the state's frame (minus its ``origin``,
    the first row ``fit`` saw) in their own precision before the cast to the state's
    dtype, so float64 rows with a large offset lose nothing to float32. Removing
    subtracts: the variance left carries a rounding error of up to 64 ε (ε the
    dtype's machine epsilon) times what the subtraction cancels, n Σ/n' + b (Σ_B +
    (μ_B − μ)²)/n' per column. Where that bound exceeds 1 % of the variance left
    (removing most of the rows, or rows far larger than those kept), a
    ``RuntimeWarning`` names the column and the bound: recompute the rows kept with
    ``welford`` (or work in float64) for an accurate answer.

    Args:
      state: a ``WelfordState``.
      rows: (b, d) rows to remove, b ≤ the rows absorbed.

    Returns:
      The ``WelfordState`` of the remaining rows (count t − b). Removing every row
      leaves the prior (with n₀ > 0) or zero moments.

    Raises:
      ValueError: not a welford state; ``rows`` not (b, d); more rows than the state
        has absorbed (when the count is concrete).

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> ys = jnp.array([[0.0], [1.0], [2.0], [5.0]])
      >>> state = jg.downdate(jg.fit(jg.welford(), ys).state, ys[3:])
      >>> state.cov.tolist(), jg.mle(ys[:3]).cov.tolist(), int(state.count)
      ([[0.666...]], [[0.666...]], 3)
    """
    if not isinstance(state, WelfordState):
        raise ValueError(f"downdate removes rows from a welford state, got {type(state).__name__}")
    if jnp.ndim(state.count) != 0:
        raise ValueError(
            f"downdate removes rows from one welford state; this one has a leading axis of "
            f"{jnp.shape(state.count)[0]} (groups or a vmap): downdate each, e.g. "
            "jax.tree_util.tree_map(lambda x: x[k], state) for group k"
        )
    d = state.mean.shape[-1]
    if jnp.ndim(rows) != 2 or jnp.shape(rows)[1] != d:
        raise ValueError(f"rows must have shape (b, {d}), got {jnp.shape(rows)}")
    rows = _in_frame(rows, state.origin).astype(state.mean.dtype)
    if not isinstance(state.count, jax.core.Tracer) and rows.shape[0] > int(state.count):
        raise ValueError(
            f"cannot remove {rows.shape[0]} rows from a state that absorbed {int(state.count)}"
        )
    n = (state.count + state.prior_weight).astype(state.mean.dtype)
    whole = Moments(n, state.mean, state.cov, state.third, state.fourth)
    removed = batch_moments(rows, higher=state.fourth is not None)
    left = combine(whole, removed._replace(weight=-removed.weight))
    # Emptied: nothing but rounding is left; report exact zeros, not residue.
    empty = left.weight == 0
    left = jax.tree_util.tree_map(lambda x: jnp.where(empty, 0, x), left)
    _check_removable(state, removed, left)
    return state._replace(
        mean=left.mean,
        cov=left.cov,
        count=state.count - rows.shape[0],
        third=left.third,
        fourth=left.fourth,
    )


def _in_frame(rows: jax.Array, origin: jax.Array) -> jax.Array:
    """``rows − origin``: for concrete rows in their own precision (float64 rows keep
    their digits below a large offset), else in the dtype they come in."""
    if isinstance(rows, jax.core.Tracer) or isinstance(origin, jax.core.Tracer):
        return jnp.asarray(rows) - origin
    rows = np.asarray(rows)
    wide = np.promote_types(rows.dtype, np.asarray(origin).dtype)
    return jnp.asarray(rows.astype(wide) - np.asarray(origin, wide))


def _check_removable(state: WelfordState, removed: Moments, left: Moments) -> None:
    """Refuse (when the values are concrete) a downdate whose remaining variance is
    negative beyond rounding: the rows removed were not all rows the state absorbed;
    warn where the rounding bound exceeds 1 % of the variance left. Rounding is
    bounded by 64 ulps of what the subtraction cancels: the variance before it,
    weighted n/n', and the removed rows' spread about the old mean, weighted b/n'."""
    if any(isinstance(x, jax.core.Tracer) for x in (left.cov, state.cov, removed.cov)):
        return
    n, b = np.float64(state.count + state.prior_weight), np.float64(removed.weight)
    kept = max(n - b, 1.0)
    var = np.diagonal(np.asarray(left.cov, np.float64))
    away = (np.asarray(removed.mean, np.float64) - np.asarray(state.mean, np.float64)) ** 2
    scale = (n * np.diagonal(np.asarray(state.cov, np.float64))) / kept + b * (
        np.diagonal(np.asarray(removed.cov, np.float64)) + away
    ) / kept
    eps = np.finfo(np.asarray(state.cov).dtype).eps
    bound = 64 * eps * np.maximum(scale, np.finfo(np.float64).tiny)
    bad = np.flatnonzero(var < -bound)
    if bad.size:
        j = int(bad[0])
        raise ValueError(
            f"downdate left a negative variance ({var[j]:.3g} in column {j}): the rows "
            "removed are not all rows the state absorbed"
        )
    lost = np.flatnonzero((bound > 0.01 * var) & (kept > 0) & (n > b))
    if lost.size:
        j = int(lost[0])
        warnings.warn(
            f"downdate cancelled most of column {j}'s variance: what is left ({var[j]:.3g}) "
            f"is within its rounding bound ({bound[j]:.3g}, 64 ulps of the "
            f"{scale[j]:.3g} cancelled), so it may have no correct digits; recompute the "
            "rows kept with welford, or work in float64",
            RuntimeWarning,
            stacklevel=3,
        )


class RollingState(NamedTuple):
    """State of ``rolling``.

    Attributes:
      buffer: (w, d) ring buffer: row t (1-based) of the stream is at (t − 1) mod w.
      mean: μ of the rows in the window, (d,).
      cov: Σ, their covariance dividing by the window's row count, (d, d).
      count: t, the number of data rows absorbed, int32; the window holds min(t, w).
      since_anchor: rows absorbed since the moments were last recomputed from the
        buffer, int32.
      origin: the reference row the buffer and the mean are kept relative to, (d,):
        the window's mean is ``origin + mean`` (``fit`` moves it to the first row, so
        an offset costs no float32 accuracy; ``moments``, Frames).
    """

    buffer: jax.Array
    mean: jax.Array
    cov: jax.Array
    count: jax.Array
    since_anchor: jax.Array
    origin: jax.Array

    def reframed(self, origin: jax.Array) -> RollingState:
        """The same window with its rows and mean kept relative to ``origin``."""
        delta = self.origin - origin
        return self._replace(buffer=self.buffer + delta, mean=self.mean + delta, origin=origin)


def _buffer_moments(buffer: jax.Array, count: jax.Array) -> Moments:
    """Two-pass moments of the rows the buffer holds (all w, or the first ``count``)."""
    w = buffer.shape[0]
    held = jnp.arange(w) < count
    return batch_moments(buffer, held.astype(buffer.dtype), higher=False)


def rolling(window: int, ddof: float = 0, reanchor_every: int | None = None) -> Estimator:
    """Mean and covariance of the last ``window`` rows of the stream (river's
    ``Rolling``, TFP's windowed statistics).

    After t rows the estimate is the MLE (``ddof=1``: ``np.cov``) of rows
    max(1, t − w + 1) … t. Each update absorbs the new rows, removes the rows that fall
    out of the window (``downdate``'s formula) and writes the new rows into a ring
    buffer of w rows; every ``reanchor_every`` rows the moments are recomputed from the
    buffer, so rounding errors of the removals do not accumulate over the stream
    (module docstring). Before the window fills, the estimate is that of every row so
    far, like ``welford``; the initial Gaussian is never part of the window.

    Updates are per row: ``update`` with a batch of b rows equals b single-row updates
    to rounding (``rowwise=True``); a batch of b ≥ w rows leaves exactly its last w.
    ``fit`` may therefore apply many rows per compiled step; with ``block_rows`` below w
    it removes rows by downdates, above w it recomputes each window from the rows.

    Args:
      window: w ≥ 1 rows (static: it sets the buffer's shape).
      ddof: the estimate's covariance is Σ · m/(m − ddof) with m = min(t, w) rows
        (for m ≤ ddof the uncorrected Σ).
      reanchor_every: recompute the moments from the buffer after this many rows
        (None: w; 0: never, which shows the drift that re-anchoring removes).

    Returns:
      An ``Estimator`` with ``rowwise=True`` and ``RollingState`` states.

    Raises:
      ValueError: ``window`` not an integer ≥ 1; ``reanchor_every`` negative;
        ``ddof`` negative.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> ys = jnp.array([[9.0], [0.0], [1.0], [2.0]])
      >>> res = jg.fit(jg.rolling(3, ddof=1), ys)
      >>> res.estimate.mean.tolist(), res.estimate.cov.tolist()  # of 0, 1, 2
      ([1.0], [[1.0]])
    """
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be an integer >= 1, got {window!r}")
    if not ddof >= 0:
        raise ValueError(f"ddof must be >= 0, got {ddof}")
    every = window if reanchor_every is None else reanchor_every
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 0:
        raise ValueError(f"reanchor_every must be an integer >= 0 or None, got {reanchor_every!r}")
    w = int(window)

    def init(g0: Gaussian) -> RollingState:
        d = g0.mean.shape[-1]
        zero = jnp.zeros((), jnp.int32)
        buffer = jnp.zeros((w, d), g0.mean.dtype)
        return RollingState(buffer, g0.mean, g0.cov, zero, zero, jnp.zeros_like(g0.mean))

    def update(state: RollingState, batch: jax.Array) -> RollingState:
        batch = batch - state.origin
        b = batch.shape[0]
        count = state.count + b
        dtype = state.mean.dtype
        if b >= w:  # the window is the batch's last w rows: nothing old survives
            kept = batch[b - w :]
            # row count + 1 − w + i sits at slot (count − w + i) mod w
            buffer = jnp.roll(kept, count % w, axis=0)
            m = batch_moments(kept, higher=False)
            return RollingState(
                buffer, m.mean, m.cov, count, jnp.zeros((), jnp.int32), state.origin
            )
        slots = (state.count + jnp.arange(b)) % w
        leaving = state.buffer[slots]
        # the slot's old row left only if the buffer was full there
        was_full = (state.count + jnp.arange(b)) >= w
        n_old = jnp.minimum(state.count, w).astype(dtype)
        old = Moments(n_old, state.mean, state.cov)
        grown = combine(old, batch_moments(batch, higher=False))
        gone = batch_moments(leaving, was_full.astype(dtype), higher=False)
        m = combine(grown, gone._replace(weight=-gone.weight))
        buffer = state.buffer.at[slots].set(batch)
        since = state.since_anchor + b
        if every:
            anchor = since >= every
            m = jax.lax.cond(anchor, lambda: _buffer_moments(buffer, count), lambda: m)
            since = jnp.where(anchor, 0, since)
        return RollingState(buffer, m.mean, m.cov, count, since, state.origin)

    def estimate(state: RollingState) -> Gaussian:
        n = jnp.minimum(state.count, w).astype(state.mean.dtype)
        defined = n > ddof
        scale = jnp.where(defined, n, 1) / jnp.where(defined, n - ddof, 1)
        return Gaussian(state.origin + state.mean, scale * state.cov)

    return Estimator(init=init, update=update, estimate=estimate, is_valid=all_finite, rowwise=True)
