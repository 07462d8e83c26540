"""Centred third- and fourth-order moments that stream, merge and downdate exactly.

Ledoit–Wolf shrinkage and the per-feature skewness and kurtosis need, beyond the mean
and covariance, the centred moments

  Tᵢⱼ = E[eᵢ² eⱼ],        Fᵢⱼ = E[eᵢ² eⱼ²],        e = y − μ,

two d × d matrices (T is not symmetric; its diagonal holds E[eᵢ³], F's holds E[eᵢ⁴]).
Raw power sums Σ yᵢ² yⱼ² cancel catastrophically once |μ| ≫ σ (at an offset of 10⁶
the fourth powers are 10²⁴ times the central moments), so they are never formed.
Instead, every set of rows is summarised by its weight n and its moments centred at
its own mean, and two summaries combine exactly, as in Pébay (2008): moving a set's
centre by p (e ← e − p, with E[e] = 0 at the set's own mean) gives

  Σ'   = Σ + p pᵀ,
  T'ᵢⱼ = Tᵢⱼ − pⱼ Σᵢᵢ − 2 pᵢ Σᵢⱼ − pᵢ² pⱼ,
  F'ᵢⱼ = Fᵢⱼ − 2 pⱼ Tᵢⱼ − 2 pᵢ Tⱼᵢ + pⱼ² Σᵢᵢ + pᵢ² Σⱼⱼ + 4 pᵢ pⱼ Σᵢⱼ + pᵢ² pⱼ²,

and the union of sets A and B is the weighted average of both sets' moments moved to
the common mean μ = μ_A + (n_B/n)(μ_B − μ_A). A batch of rows is summarised two-pass
(its own mean first), then combined with the state; the shifts p are differences of
means, of the order of σ whatever the offset. Removing rows is the same combination
with the removed set's weight negated: the union formula is linear in the sets' sums,
so combining the whole with −B leaves A exactly (up to the rounding of the
subtraction, which is inherent to forgetting).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Moments", "batch_moments", "combine", "gaussian_fourth", "skewness", "kurtosis"]


class Moments(NamedTuple):
    """The summary of a set of rows: weight n, mean, and moments centred at the mean,
    all normalised by n (``third``/``fourth`` None when not tracked). Leading batch
    axes broadcast."""

    weight: jax.Array
    mean: jax.Array
    cov: jax.Array
    third: jax.Array | None = None
    fourth: jax.Array | None = None


def gaussian_fourth(cov: jax.Array) -> jax.Array:
    """F of a Gaussian with covariance Σ (Isserlis): E[eᵢ² eⱼ²] = Σᵢᵢ Σⱼⱼ + 2 Σᵢⱼ²."""
    diag = jnp.diagonal(cov, axis1=-2, axis2=-1)
    return diag[..., :, None] * diag[..., None, :] + 2 * cov**2


def batch_moments(
    rows: jax.Array, weights: jax.Array | None = None, higher: bool = True
) -> Moments:
    """The ``Moments`` of ``rows`` (b, d), two-pass: mean first, then centred sums.

    ``weights`` (b,) ≥ 0 weigh the rows (0 masks one); with all weights 0 the moments
    are 0, not NaN, and the summary's weight is 0.
    """
    if weights is None:
        weights = jnp.ones(rows.shape[:1], rows.dtype)
    total = jnp.sum(weights)
    safe = jnp.where(total > 0, total, 1)
    mean = (weights @ rows) / safe
    e = rows - mean
    we = e * (weights / safe)[:, None]
    cov = we.T @ e
    cov = 0.5 * (cov + cov.T)
    if not higher:
        return Moments(total, mean, cov)
    e2 = e * e
    third = (we * e).T @ e  # Σ w eᵢ² eⱼ / W
    fourth = (we * e).T @ e2
    return Moments(total, mean, cov, third, 0.5 * (fourth + fourth.T))


def _shift(m: Moments, p: jax.Array) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
    """(Σ, T, F) of ``m`` moved from its own mean to the centre mean + p, where e ← e − p."""
    pi, pj = p[..., :, None], p[..., None, :]
    cov = m.cov + pi * pj
    if m.fourth is None:
        return cov, None, None
    diag = jnp.diagonal(m.cov, axis1=-2, axis2=-1)
    cii, cjj = diag[..., :, None], diag[..., None, :]
    t = m.third
    third = t - pj * cii - 2 * pi * m.cov - pi**2 * pj
    fourth = (
        m.fourth
        - 2 * (pj * t + pi * jnp.swapaxes(t, -1, -2))
        + pj**2 * cii
        + pi**2 * cjj
        + 4 * pi * pj * m.cov
        + pi**2 * pj**2
    )
    return cov, third, fourth


def combine(a: Moments, b: Moments) -> Moments:
    """The ``Moments`` of the union of the sets ``a`` and ``b`` (Pébay's pairwise
    update), or, with ``b.weight`` negative, of ``a`` with the rows of ``b`` removed.

    If the total weight is 0, ``a``'s moments are kept.
    """
    total = a.weight + b.weight
    nonempty = total != 0
    frac_b = jnp.where(nonempty, b.weight, 0) / jnp.where(nonempty, total, 1)
    frac_a = 1 - frac_b
    delta = b.mean - a.mean
    mean = a.mean + frac_b[..., None] * delta
    # Moving a by p_a = frac_b·δ and b by p_b = −frac_a·δ to the common mean.
    sa = _shift(a, frac_b[..., None] * delta)
    sb = _shift(b, -frac_a[..., None] * delta)
    fa, fb = frac_a[..., None, None], frac_b[..., None, None]
    cov, third, fourth = (None if x is None else fa * x + fb * y for x, y in zip(sa, sb))
    sym = lambda m: None if m is None else 0.5 * (m + jnp.swapaxes(m, -1, -2))  # noqa: E731
    return Moments(total, mean, sym(cov), third, sym(fourth))


def require_fourth(state, what: str) -> None:
    if getattr(state, "fourth", None) is None:
        raise ValueError(
            f"{what} needs the centred third and fourth moments, which this state does not "
            "carry: build the estimator with jg.welford(fourth_moments=True)"
        )


def total_weight(state) -> jax.Array:
    return state.count + state.prior_weight


def _variance(state) -> jax.Array:
    """Per-feature m₂, NaN where it is zero to rounding: like scipy, a (near-)constant
    feature has no defined skewness or kurtosis, rather than one made of round-off."""
    m2 = jnp.diagonal(state.cov, axis1=-2, axis2=-1)
    resolution = jnp.finfo(m2.dtype).resolution
    return jnp.where(m2 <= (resolution * (state.origin + state.mean)) ** 2, jnp.nan, m2)


def skewness(state, bias: bool = True) -> jax.Array:
    """Per-feature sample skewness from a ``welford(fourth_moments=True)`` state, as
    ``scipy.stats.skew`` of the rows absorbed.

    g₁ = m₃ / m₂^{3/2} with the central moments mₖ = E[eᵢᵏ] (dividing by n). With
    ``bias=False`` the adjusted Fisher–Pearson coefficient G₁ = g₁ √(n(n − 1))/(n − 2)
    (for n > 2; g₁ otherwise, as scipy). n counts the rows plus any prior weight.
    A feature whose variance is zero to rounding gives NaN, as scipy.

    Args:
      state: a ``WelfordState`` with fourth moments (leading batch axes allowed).
      bias: False applies the small-sample correction.

    Returns:
      (…, d) skewness per feature.

    Raises:
      ValueError: the state carries no fourth moments.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> ys = jnp.array([[0.0], [0.0], [0.0], [4.0]])
      >>> state = jg.fit(jg.welford(fourth_moments=True), ys).state
      >>> round(float(jg.estimators.skewness(state)[0]), 4)  # scipy.stats.skew: 1.1547
      1.1547
    """
    require_fourth(state, "skewness")
    m2 = _variance(state)
    m3 = jnp.diagonal(state.third, axis1=-2, axis2=-1)
    g1 = m3 / m2**1.5
    if bias:
        return g1
    n = total_weight(state).astype(g1.dtype)[..., None]
    corrected = g1 * jnp.sqrt(n * (n - 1)) / jnp.where(n > 2, n - 2, 1)
    return jnp.where(n > 2, corrected, g1)


def kurtosis(state, fisher: bool = True, bias: bool = True) -> jax.Array:
    """Per-feature sample kurtosis from a ``welford(fourth_moments=True)`` state, as
    ``scipy.stats.kurtosis`` of the rows absorbed.

    b₂ = m₄ / m₂², minus 3 with ``fisher=True`` (the excess kurtosis, 0 for a
    Gaussian). With ``bias=False`` the unbiased-cumulant form
    ((n² − 1) b₂ − 3 (n − 1)²)/((n − 2)(n − 3)) (for n > 3; b₂ otherwise, as scipy).
    A feature whose variance is zero to rounding gives NaN, as scipy; a state without
    fourth moments is a ValueError, as for ``skewness``.

    Args:
      state: a ``WelfordState`` with fourth moments (leading batch axes allowed).
      fisher: subtract 3 (excess kurtosis).
      bias: False applies the small-sample correction.

    Returns:
      (…, d) kurtosis per feature.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> rows = jnp.array([[0.0], [1.0], [0.0], [4.0]])
      >>> moments = jg.fit(jg.welford(fourth_moments=True), rows).state
      >>> excess, plain = jg.estimators.kurtosis(moments), jg.estimators.kurtosis(moments, fisher=False)
      >>> round(float(excess[0]), 4), round(float(plain[0]), 4)  # scipy: -0.8513, 2.1487
      (-0.8513, 2.1487)
    """
    require_fourth(state, "kurtosis")
    m2 = _variance(state)
    m4 = jnp.diagonal(state.fourth, axis1=-2, axis2=-1)
    b2 = m4 / m2**2
    if not bias:
        n = total_weight(state).astype(b2.dtype)[..., None]
        ok = n > 3
        corrected = ((n**2 - 1) * b2 - 3 * (n - 1) ** 2) / jnp.where(ok, (n - 2) * (n - 3), 1)
        b2 = jnp.where(ok, corrected + 3, b2)
    return b2 - 3 if fisher else b2
