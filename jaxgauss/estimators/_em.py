"""Shared pieces of the online-EM estimators (``student_t``, ``gaussian_mixture``).

Stepwise online EM (Sato 2000; Cappé and Moulines 2009) keeps running averages of
the complete-data sufficient statistics and replaces each row's statistics by their
posterior expectations. For a latent weight wᵢ ≥ 0 per row (the t's scale variable,
or a mixture component's responsibility) the statistics are (w, w y, w y yᵀ), and
one step of size a is

  S₀ ← (1 − a) S₀ + a w,      μ ← μ + (a w / S₀') r,
  C ← (S₀/S₀')(1 − a) [C + (a w / S₀') r rᵀ],      r = y − μ,

with C the w-weighted covariance: the expectation-parameter step of the moment
estimators with row weight a w / S₀' in place of a. A batch of b rows therefore goes
through ``moments.absorb`` (one weighted Gram matmul) with the old state weighted
c S₀/S₀' and row i weighted αᵢ wᵢ/S₀', where c and αᵢ are the weights that b
single-row steps a₁…a_b give (``moments.step_weights``). All b rows share one
E-step at the state before the batch.

Plain Robbins–Monro steps were not enough in prototypes (a one-pass t location 4–7×
the batch t-MLE's squared error; mixtures collapsing onto tiny covariances), so the
default step a_τ = (τ + τ₀)^(−κ) has an offset τ₀ (the initial estimate counts as
τ₀ pseudo-rows) and the estimate is an average of the iterates whose weights grow
like τ^η (polynomial-decay averaging, Shamir and Zhang 2013): the Polyak–Ruppert
average over roughly the later part of the stream, without knowing its length.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxgauss.estimators.moments import absorb, step_weights

# Defaults measured in benchmarks/em_accuracy.py (docs/latent-models.md, "The schedule
# behind them"): κ = 0.6, τ₀ = 500, η = 0.
DEFAULT_POWER = 0.6
DEFAULT_OFFSET = 500.0
DEFAULT_AVERAGE_POWER = 0.0


def check_schedule(learning_rate: Any, power: Any, offset: Any, average_power: Any) -> None:
    """Boundary checks of the step settings that are concrete numbers."""
    if isinstance(learning_rate, Real) and not 0 < learning_rate <= 1:
        raise ValueError(f"a constant learning_rate must be in (0, 1], got {learning_rate}")
    if isinstance(power, Real) and not 0.5 < power <= 1:
        raise ValueError(f"power must be in (0.5, 1] (Robbins–Monro), got {power}")
    if isinstance(offset, Real) and not offset >= 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    if average_power is not None and isinstance(average_power, Real) and not average_power >= 0:
        raise ValueError(f"average_power must be >= 0 or None, got {average_power}")


def online_steps(
    tau: jax.Array,
    online: jax.Array,
    dtype: Any,
    learning_rate: float | jax.Array | optax.Schedule | None,
    power: float | jax.Array,
    offset: float | jax.Array,
) -> jax.Array:
    """Steps a_τ of rows with online row numbers ``tau`` (b,) (τ = 1 first); 0 where
    ``online`` is False (rows that only fill the seeding buffer)."""
    t = tau.astype(dtype)
    if learning_rate is None:
        steps = jnp.power(t + jnp.asarray(offset, dtype), -jnp.asarray(power, dtype))
    elif callable(learning_rate):
        steps = jax.vmap(learning_rate)(tau - 1).astype(dtype)
    else:
        steps = jnp.full(tau.shape, learning_rate, dtype)
    return jnp.where(online, steps, 0)


def weighted_absorb(
    total: jax.Array,
    mean: jax.Array,
    cov: jax.Array,
    batch: jax.Array,
    steps: jax.Array,
    w: jax.Array,
    absorb_fn: Any = absorb,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One stepwise-EM update of (S₀, μ, C) by rows ``batch`` (b, d) with steps
    ``steps`` (b,) and E-step weights ``w`` (b,) (module docstring). Where the new
    weight S₀' is 0 (nothing ever had mass) the moments are kept. ``absorb_fn`` is
    ``moments.absorb`` or a variant of its signature (a mixture's diagonal moments)."""
    keep, alphas = step_weights(steps)
    mass = alphas * w
    new_total = keep * total + jnp.sum(mass)
    ok = new_total > 0
    denom = jnp.where(ok, new_total, 1)
    new_mean, new_cov = absorb_fn(mean, cov, batch, keep * total / denom, mass / denom)
    return new_total, jnp.where(ok, new_mean, mean), jnp.where(ok, new_cov, cov)


def average_weight(tau: jax.Array, online: jax.Array, average_power: Any, dtype: Any) -> jax.Array:
    """The weight ρ of the newest iterate in the running average after an update whose
    rows have online numbers ``tau`` (b,), those where ``online``: b single-row steps
    of the polynomial-decay average x̄ ← (1 − ρ_τ) x̄ + ρ_τ x with ρ_τ = (η + 1)/(τ + η)
    (iterate τ gets a weight ∝ τ^η; η = 0 is the plain running mean), applied to the
    same iterate: ρ = 1 − Π_τ (1 − ρ_τ). ρ = 1 on the first online row (ρ₁ = 1); 0
    when the update had none.

    The product goes through Σ log1p(−ρ_τ) and ρ = −expm1 of it: accurate when each
    ρ_τ is a few ulps of 1 (late in a stream). Log-gamma ratios of τ, the closed form,
    cancel to garbage in float32 there (lgamma(10⁵) ≈ 10⁶, spaced 0.06): a float32
    Student-t averaged over 10⁵ rows was 2.8 % off the batch t-MLE, 0.5 % in float64.
    """
    if average_power is None:
        return jnp.ones((), dtype)
    eta = jnp.asarray(average_power, dtype)
    t = tau.astype(dtype)
    step = jnp.where(online, (eta + 1) / jnp.where(online, t + eta, 1), 0)
    return -jnp.expm1(jnp.sum(jnp.log1p(-step)))


def running_average(average: Any, current: Any, rho: jax.Array) -> Any:
    """x̄ + ρ (x − x̄) leafwise (ρ = 1 replaces the average by x exactly)."""
    return jax.tree_util.tree_map(
        lambda a, x: jnp.where(rho == 1, x, a + rho.astype(a.dtype) * (x - a)), average, current
    )


def buffer_rows(buffer: jax.Array, count: jax.Array, batch: jax.Array) -> jax.Array:
    """``buffer`` (m, d) with the batch's rows written at rows count, count + 1, …
    (rows past m are dropped)."""
    index = count + jnp.arange(batch.shape[0], dtype=count.dtype)
    return buffer.at[index].set(batch.astype(buffer.dtype), mode="drop")


def row_mahalanobis(chol: jax.Array, r: jax.Array) -> jax.Array:
    """‖L⁻¹ rᵢ‖² for rows ``r`` (b, d) and one Cholesky factor L (d, d): (b,)."""
    z = jax.scipy.linalg.solve_triangular(chol, r.T, lower=True)
    return jnp.sum(z**2, axis=0)


def half_log_det(chol: jax.Array) -> jax.Array:
    """½ log det Σ = Σᵢ log Lᵢᵢ for Σ = L Lᵀ (batched over leading axes)."""
    return jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
