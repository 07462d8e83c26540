"""Shrinkage covariances from a streamed ``welford`` state: Ledoit–Wolf and OAS.

With few rows per dimension the MLE Σ̂ is noisy, and singular once n ≤ d (or when a
feature is constant): its log-likelihood on new rows is −∞ or NaN. Both estimators
here shrink it toward the scaled identity,

  Σ_s = (1 − s) Σ̂ + s μ I,        μ = tr(Σ̂)/d,

which is positive definite for any s > 0 and tr Σ̂ > 0, with the coefficient s chosen
from the data, exactly as scikit-learn's ``LedoitWolf`` and ``OAS`` choose it from
the rows in memory. What those need is a function of the state alone:

- OAS (Chen et al., 2010, in scikit-learn's form since 1.3) needs only n, tr Σ̂ and
  ‖Σ̂‖²_F, so it works on any ``welford`` state.
- Ledoit–Wolf (2004) estimates the variance of the sample covariance's entries,
  β = (1/(d n)) (Σᵢⱼ E[eᵢ² eⱼ²] − ‖Σ̂‖²_F), from the centred fourth moments
  Fᵢⱼ = E[eᵢ² eⱼ²] that ``welford(fourth_moments=True)`` streams and merges exactly
  (``jaxgauss.estimators.higher_moments``): a d × d matrix, not the d⁴ tensor.

Since the state is one pass over a stream (and ``merge`` combines shards), the
shrunk estimate of any number of rows costs O(d²) memory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxgauss.estimators.higher_moments import require_fourth, total_weight
from jaxgauss.estimators.moments import WelfordState
from jaxgauss.gaussian import Gaussian

__all__ = ["oas", "oas_shrinkage", "ledoit_wolf", "ledoit_wolf_shrinkage", "shrunk"]


def _check_state(state, what: str) -> None:
    if not isinstance(state, WelfordState):
        raise ValueError(
            f"{what} needs a welford state (jg.fit(jg.welford(...), data).state), "
            f"got a {type(state).__name__}"
        )


def _trace_mean(cov: jax.Array) -> jax.Array:
    return jnp.trace(cov, axis1=-2, axis2=-1) / cov.shape[-1]


def shrunk(g: Gaussian, shrinkage: jax.Array) -> Gaussian:
    """(1 − s) Σ + s (tr Σ/d) I, with the mean unchanged (scikit-learn's
    ``shrunk_covariance``). Leading batch axes broadcast.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> g = jg.Gaussian(jnp.zeros(2), jnp.array([[3.0, 1.0], [1.0, 1.0]]))
      >>> jg.shrunk(g, 0.5).cov.tolist()
      [[2.5, 0.5], [0.5, 1.5]]
    """
    s = jnp.asarray(shrinkage, g.cov.dtype)[..., None, None]
    eye = jnp.eye(g.cov.shape[-1], dtype=g.cov.dtype)
    return Gaussian(g.mean, (1 - s) * g.cov + s * _trace_mean(g.cov)[..., None, None] * eye)


def oas_shrinkage(state: WelfordState) -> jax.Array:
    """The Oracle Approximating Shrinkage coefficient of the rows in a ``welford`` state,
    as scikit-learn's ``OAS().fit(X).shrinkage_`` (its formula since version 1.3).

    With Σ̂ the MLE, n the state's weight (rows plus any prior weight), μ = tr Σ̂/d and
    α = ‖Σ̂‖²_F/d²:

      s = min(1, (α + μ²) / ((n + 1)(α − μ²/d))),

    and s = 1 where the denominator is 0 (Σ̂ a multiple of I, or n = 1); s = 0 when
    d = 1, where shrinking changes nothing.

    Args:
      state: any ``WelfordState`` (leading batch axes allowed).

    Returns:
      The coefficient s ∈ [0, 1], shape (…).

    Example:
      >>> import jax, jaxgauss as jg
      >>> ys = jax.random.normal(jax.random.key(0), (5, 4))
      >>> s = jg.estimators.oas_shrinkage(jg.fit(jg.welford(), ys).state)
      >>> bool(0 < s <= 1)
      True
    """
    _check_state(state, "oas_shrinkage")
    d = state.cov.shape[-1]
    if d == 1:
        return jnp.zeros(state.cov.shape[:-2], state.cov.dtype)
    alpha = jnp.mean(state.cov**2, axis=(-2, -1))
    mu2 = _trace_mean(state.cov) ** 2
    n = total_weight(state).astype(state.cov.dtype)
    den = (n + 1) * (alpha - mu2 / d)
    return jnp.where(den == 0, 1.0, jnp.minimum((alpha + mu2) / jnp.where(den == 0, 1, den), 1))


def ledoit_wolf_shrinkage(state: WelfordState) -> jax.Array:
    """The Ledoit–Wolf shrinkage coefficient of the rows in a
    ``welford(fourth_moments=True)`` state, as scikit-learn's
    ``LedoitWolf().fit(X).shrinkage_``.

    With Σ̂ the MLE, F = E[eᵢ² eⱼ²] the centred fourth moments, n the state's weight and
    μ = tr Σ̂/d:

      β = (Σᵢⱼ Fᵢⱼ − ‖Σ̂‖²_F)/(d n),    δ = ‖Σ̂ − μ I‖²_F/d,    s = min(β, δ)/δ

    (s = 0 where β = 0, e.g. d = 1). β estimates the mean squared error of Σ̂'s entries,
    δ the distance of Σ̂ from the target.

    Args:
      state: a ``WelfordState`` with fourth moments (leading batch axes allowed).

    Returns:
      The coefficient s ∈ [0, 1], shape (…).

    Raises:
      ValueError: not a welford state, or one without fourth moments.

    Example:
      >>> import jax, jaxgauss as jg
      >>> ys = jax.random.normal(jax.random.key(0), (5, 4))
      >>> s = jg.estimators.ledoit_wolf_shrinkage(jg.fit(jg.welford(fourth_moments=True), ys).state)
      >>> bool(0 < s <= 1)
      True
    """
    _check_state(state, "ledoit_wolf_shrinkage")
    require_fourth(state, "ledoit_wolf_shrinkage")
    d = state.cov.shape[-1]
    cov = state.cov
    n = total_weight(state).astype(cov.dtype)
    frob2 = jnp.sum(cov**2, axis=(-2, -1))
    beta = (jnp.sum(state.fourth, axis=(-2, -1)) - frob2) / (d * n)
    eye = jnp.eye(d, dtype=cov.dtype)
    delta = jnp.sum((cov - _trace_mean(cov)[..., None, None] * eye) ** 2, axis=(-2, -1)) / d
    beta = jnp.minimum(beta, delta)
    return jnp.where(beta == 0, 0.0, beta / jnp.where(beta == 0, 1, delta))


def oas(state: WelfordState) -> Gaussian:
    """The OAS-shrunk Gaussian of the rows in any ``welford`` state: the mean, and the
    covariance of scikit-learn's ``OAS().fit(X)`` (``shrunk`` of the MLE by
    ``oas_shrinkage``).

    Args:
      state: any ``WelfordState`` (leading batch axes allowed, e.g. one per group).

    Returns:
      A ``Gaussian``; its covariance is positive definite whenever Σ̂ ≠ 0.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgauss as jg
      >>> ys = jax.random.normal(jax.random.key(0), (3, 5))  # 3 rows, 5 features
      >>> state = jg.fit(jg.welford(), ys).state
      >>> bool(jg.is_spd(jg.oas(state).cov)), bool(jg.is_spd(state.cov))
      (True, False)
    """
    s = oas_shrinkage(state)
    return shrunk(Gaussian(state.origin + state.mean, state.cov), s)


def ledoit_wolf(state: WelfordState) -> Gaussian:
    """The Ledoit–Wolf-shrunk Gaussian of the rows in a ``welford(fourth_moments=True)``
    state: the mean, and the covariance of scikit-learn's ``LedoitWolf().fit(X)``.

    Args:
      state: a ``WelfordState`` with fourth moments (leading batch axes allowed).

    Returns:
      A ``Gaussian``; its covariance is positive definite whenever the shrinkage and
      tr Σ̂ are positive.

    Raises:
      ValueError: not a welford state, or one without fourth moments (build the
        estimator with ``jg.welford(fourth_moments=True)``).

    Example:
      >>> import jax, jax.numpy as jnp, jaxgauss as jg
      >>> ys = jax.random.normal(jax.random.key(0), (3, 5))
      >>> state = jg.fit(jg.welford(fourth_moments=True), ys).state
      >>> bool(jg.is_spd(jg.ledoit_wolf(state).cov))
      True
    """
    s = ledoit_wolf_shrinkage(state)
    return shrunk(Gaussian(state.origin + state.mean, state.cov), s)
