"""Stochastic gradient ascent on the log-likelihood, with any optax optimizer."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxgauss.estimators.base import Estimator, all_finite, new_counter, skip_if_weightless
from jaxgauss.gaussian import Gaussian
from jaxgauss.parameterizations import Parameterization, Params, get_parameterization

__all__ = ["GradientAscentState", "gradient_ascent"]


class GradientAscentState(NamedTuple):
    """State of ``gradient_ascent``.

    Attributes:
      params: the unconstrained ``Params`` of the chosen parameterisation.
      opt_state: the optax optimizer's state.
      count: number of updates (optimizer steps) taken, a scalar in ``counter_dtype()``.
    """

    params: Params
    opt_state: optax.OptState
    count: jax.Array


def gradient_ascent(
    optimizer: optax.GradientTransformation,
    parameterization: str | Parameterization = "cholesky",
) -> Estimator:
    """Stochastic gradient ascent on the mean log-likelihood of each batch.

    One update takes one optimizer step on −(1/b) Σᵢ log N(yᵢ | θ) (optax minimises),
    with gradients from ``jax.grad`` in the parameterisation's own coordinates θ, and
    passes the current θ to ``optimizer.update`` (for transformations that need it,
    such as ``jaxgauss.fisher_preconditioner``).

    With ``optax.sgd(α)`` and ``parameterization="covariance"`` the update of one row
    is, with r = y − μ (the Matrix Cookbook gradients):

      μ ← μ + α Σ⁻¹ r,      Σ ← Σ − ½ α (Σ⁻¹ − Σ⁻¹ r rᵀ Σ⁻¹),

    which has no positive-definiteness constraint: its ``is_valid`` rejects a Σ that is
    not positive definite, as well as any non-finite state. The other
    parameterisations keep every iterate SPD; they reject non-finite states and
    parameters whose covariance would overflow (``Parameterization.is_valid``).

    Weights: ``update(state, batch, weights)`` maximises the weighted mean
    Σᵢ wᵢ log N(yᵢ | θ) / Σᵢ wᵢ of the batch instead; a batch of total weight 0 takes
    no step (the state, the optimizer's included, is unchanged and not counted).

    A learning rate may be a traced value (``optax.sgd(lr)`` with ``lr`` under
    ``vmap``), so one compiled program serves many learning rates.

    Args:
      optimizer: any ``optax.GradientTransformation``.
      parameterization: "covariance", "cholesky" (default), "precision" or "diagonal".

    Example:
      >>> import jax, optax, jaxgauss as jg
      >>> truth = jg.Gaussian(jax.numpy.ones(2), jax.numpy.eye(2))
      >>> ys = jg.streams.sample(jax.random.key(0), truth, 2000)
      >>> res = jg.fit(jg.gradient_ascent(optax.adam(0.05)), ys)
      >>> bool(jax.numpy.all(abs(res.estimate.mean - 1.0) < 0.2))
      True
    """
    param = get_parameterization(parameterization)

    def loss(params: Params, batch: jax.Array, weights: jax.Array | None) -> jax.Array:
        ll = param.log_likelihood(params, batch)
        if weights is None:
            return -jnp.mean(ll)
        total = jnp.sum(weights)
        return -jnp.sum(weights * ll) / jnp.where(total > 0, total, 1)

    def init(g0: Gaussian) -> GradientAscentState:
        params = param.from_gaussian(g0)
        return GradientAscentState(params, optimizer.init(params), new_counter())

    def update(state: GradientAscentState, batch: jax.Array, weights=None) -> GradientAscentState:
        if weights is not None:
            weights = jnp.asarray(weights, batch.dtype)
        grads = jax.grad(loss)(state.params, batch, weights)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new = GradientAscentState(params, opt_state, state.count + 1)
        if weights is None:
            return new
        return skip_if_weightless(new, state, weights)

    def estimate(state: GradientAscentState) -> Gaussian:
        return param.to_gaussian(state.params)

    def is_valid(state: GradientAscentState) -> jax.Array:
        return all_finite(state) & param.is_valid(state.params)

    return Estimator(init=init, update=update, estimate=estimate, is_valid=is_valid, weighted=True)
