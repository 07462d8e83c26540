"""Step-size schedules that optax lacks.

A schedule is a function of optax's update count k = t − 1 (k = 0 on the first
update) returning the step size, written with ``jnp`` operations so that its
settings may be traced values (one compiled program for a whole grid of them).
"""

from __future__ import annotations

from numbers import Real

import jax
import jax.numpy as jnp
import optax

__all__ = ["robbins_monro"]


def robbins_monro(
    init_value: float | jax.Array, power: float | jax.Array = 1.0, offset: float | jax.Array = 1.0
) -> optax.Schedule:
    """The Robbins–Monro schedule ηₖ = η₀ / (1 + k/k₀)^κ.

    With k = t − 1 the optax count, the step at update t is η₀ (1 + (t − 1)/k₀)^(−κ):
    it starts at η₀, keeps roughly that value for the first k₀ updates, then decays
    like t^(−κ). For ½ < κ ≤ 1 the steps satisfy Σ ηₜ = ∞ and Σ ηₜ² < ∞, the
    Robbins–Monro conditions; with Polyak–Ruppert averaging (``jaxgauss.averaged``)
    any κ in (½, 1) gives the Cramér–Rao-efficient average. With η₀ = k₀ = κ = 1
    it is ηₜ = 1/t, the step that makes ``jaxgauss.natural_gradient`` the running
    maximum-likelihood estimate.

    Args:
      init_value: η₀ > 0, the first step. May be traced.
      power: the decay exponent κ ≥ 0. May be traced.
      offset: k₀ > 0, the number of updates over which the step stays near η₀.
        May be traced.

    Returns:
      An ``optax.Schedule``: count k (int array) -> step size.

    Raises:
      ValueError: a concrete ``offset`` ≤ 0 or ``power`` < 0.

    Example:
      >>> import jaxgauss as jg
      >>> schedule = jg.schedules.robbins_monro(1.0)
      >>> [round(float(schedule(k)), 3) for k in range(4)]
      [1.0, 0.5, 0.333, 0.25]
    """
    if isinstance(offset, Real) and not offset > 0:
        raise ValueError(f"offset must be > 0, got {offset}")
    if isinstance(power, Real) and not power >= 0:
        raise ValueError(f"power must be >= 0, got {power}")

    def schedule(count: jax.Array) -> jax.Array:
        return init_value * jnp.power(1.0 + count / offset, -power)

    return schedule
