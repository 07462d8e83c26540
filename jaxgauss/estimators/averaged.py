"""Polyak–Ruppert averaging of any estimator's iterates."""

from __future__ import annotations

from numbers import Integral
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxgauss.estimators.base import Estimator, all_finite, new_counter, skip_if_weightless
from jaxgauss.gaussian import Gaussian

__all__ = ["AveragedState", "averaged"]


class AveragedState(NamedTuple):
    """State of ``averaged``.

    Attributes:
      inner: the wrapped estimator's state.
      average: the running average (μ̄, Σ̄) of the iterates after update ``start``, a
        ``Gaussian``; during the first ``start`` updates, the inner estimate itself.
      count: the number of updates taken, a scalar in ``counter_dtype()``.
    """

    inner: Any
    average: Gaussian
    count: jax.Array


def averaged(estimator: Estimator, start: int | jax.Array = 0) -> Estimator:
    """Polyak–Ruppert average of the iterates (μₜ, Σₜ) of ``estimator``.

    With (μₜ, Σₜ) the inner estimate after update t and s = ``start``, the estimate
    after update t > s is

      μ̄ₜ = (1/(t − s)) Σ_{u=s+1..t} μᵤ,        Σ̄ₜ = (1/(t − s)) Σ_{u=s+1..t} Σᵤ,

    kept as a running mean, and for t ≤ s it is the inner estimate (the first s
    updates are burn-in). Σ̄ₜ is a convex combination of covariances, so it is SPD
    whenever they are. Averaging SGD iterates with steps decaying slower than 1/t
    (``jaxgauss.schedules.robbins_monro`` with power in (½, 1)) reaches the
    Cramér–Rao efficiency of the MLE asymptotically (Polyak and Juditsky, 1992),
    which neither the last iterate nor any single step size does.

    Weights: if ``estimator`` is weighted, so is the average: ``update(state, batch,
    weights)`` passes them on, and a batch of total weight 0 is no update (no term in
    the average).

    Updates are counted, not rows: the average has one term per ``update`` call, so
    the result depends on the batch size and ``rowwise`` is False.

    Args:
      estimator: any ``Estimator``.
      start: s ≥ 0, the number of burn-in updates left out of the average. May be
        traced.

    Returns:
      An ``Estimator`` with ``AveragedState`` states; ``is_valid`` is the inner
      estimator's ``is_valid`` and a finite average.

    Raises:
      ValueError: a concrete ``start`` that is negative or not an integer.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> res = jg.fit(jg.averaged(jg.welford(), start=1), jnp.array([[0.0], [2.0], [4.0]]))
      >>> res.estimate.mean.tolist()  # the running means are 0, 1, 2; the last two averaged
      [1.5]
    """
    if isinstance(start, bool) or (
        not isinstance(start, jax.Array) and not (isinstance(start, Integral) and start >= 0)
    ):
        raise ValueError(f"start must be an integer >= 0, got {start!r}")

    def init(g0: Gaussian) -> AveragedState:
        inner = estimator.init(g0)
        return AveragedState(inner, estimator.estimate(inner), new_counter())

    def update(state: AveragedState, batch: jax.Array, weights=None) -> AveragedState:
        if weights is None:
            inner = estimator.update(state.inner, batch)
        elif not estimator.weighted:
            raise ValueError("averaged(estimator) takes weights only if its estimator does")
        else:
            inner = estimator.update(state.inner, batch, weights)
        count = state.count + 1
        terms = count - start  # iterates in the average, this one included
        current = estimator.estimate(inner)

        def running_mean(avg: jax.Array, new: jax.Array) -> jax.Array:
            step = avg + (new - avg) / terms.astype(avg.dtype)
            return jnp.where(terms > 1, step, new)

        average = jax.tree_util.tree_map(running_mean, state.average, current)
        new = AveragedState(inner, average, count)
        return new if weights is None else skip_if_weightless(new, state, weights)

    def estimate(state: AveragedState) -> Gaussian:
        return state.average

    def is_valid(state: AveragedState) -> jax.Array:
        return estimator.is_valid(state.inner) & all_finite(state.average)

    return Estimator(
        init=init, update=update, estimate=estimate, is_valid=is_valid, weighted=estimator.weighted
    )
