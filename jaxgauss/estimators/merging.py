"""Merging ``welford`` states: Chan, Golub and LeVeque's pairwise formula for two
states over disjoint rows (``merge``), and its core, the moments of a mixture of two
weighted row sets (``mix_moments``), which the data-parallel fit also folds with."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxgauss.estimators.base import COUNTER_LIMIT_INT32, counter_dtype
from jaxgauss.estimators.higher_moments import Moments, combine
from jaxgauss.estimators.moments import WelfordState

__all__ = ["merge", "mix_moments"]


def merge(a: WelfordState, b: WelfordState) -> WelfordState:
    """Combine two ``welford`` states over disjoint rows into the state of one pass
    over all of them (Chan, Golub and LeVeque's pairwise formula).

    With weights Wₐ = tₐ + n₀ₐ, W_b = t_b + n₀_b, W = Wₐ + W_b and δ = μ_b − μₐ:

      μ = μₐ + (W_b/W) δ,      Σ = (Wₐ Σₐ + W_b Σ_b)/W + (Wₐ W_b/W²) δ δᵀ.

    Order does not matter (merge(a, b) = merge(b, a) to rounding), and states with a
    leading batch axis (from ``vmap``) merge elementwise.

    Priors: each state's n₀ pseudo-rows are part of what it has absorbed, so merging a
    state built with ``prior_weight=n₀`` and one built with ``prior_weight=0`` equals
    one pass with the prior over both shards' rows. Merging two states that both
    carry a prior would count it twice, which is refused when the weights are concrete
    (under ``jit`` the weights simply add): give the prior to one shard only.

    States of ``welford(fourth_moments=True)`` also merge their centred third and
    fourth moments, by Pébay's pairwise formulas (``higher_moments.combine``).

    Only ``welford`` states merge (``natural_gradient()`` with its default step makes
    them too): the other moment estimators weight rows by their position in the
    stream, so two of their states do not determine the state of the concatenation.

    Args:
      a: a ``WelfordState``.
      b: a ``WelfordState`` of the same dimension.

    The merged state keeps the origin (the reference row its mean is relative to) of
    the state with the larger weight, and the other state's mean is carried into that
    frame, so merging states fitted to data far from 0 loses no precision.

    Weighted states (``welford(weighted=True)``, float counts = total weights) merge
    the same way; merging a weighted and an unweighted state gives a float count.

    Returns:
      The merged ``WelfordState``: counts and prior weights add. If both weights are
      0 (nothing absorbed, no prior), ``a``'s moments are kept.

    Raises:
      ValueError: an argument is not a ``WelfordState``; dimensions differ; both
        carry a (concrete) positive prior weight; one carries fourth moments and the
        other does not;
        without x64, concrete counts whose sum exceeds 2³¹ − 1 (the int32 counter would wrap).

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> ys = jnp.array([[0.0], [1.0], [2.0], [5.0]])
      >>> a = jg.fit(jg.welford(), ys[:1]).state
      >>> b = jg.fit(jg.welford(), ys[1:]).state
      >>> jg.merge(a, b).cov.tolist(), jg.mle(ys).cov.tolist()
      ([[3.5]], [[3.5]])
    """
    for name, s in (("a", a), ("b", b)):
        if not isinstance(s, WelfordState):
            raise ValueError(
                f"merge combines welford states; {name} is a {type(s).__name__}. "
                "States of natural_gradient(learning_rate), exponential and ewm weight rows "
                "by their position in the stream (their order), so two of them cannot be merged."
            )
    if jnp.shape(a.mean)[-1] != jnp.shape(b.mean)[-1]:
        raise ValueError(
            f"cannot merge states of dimensions {jnp.shape(a.mean)[-1]} and {jnp.shape(b.mean)[-1]}"
        )
    if jnp.shape(a.mean) != jnp.shape(b.mean):
        raise ValueError(
            f"cannot merge a state of means {jnp.shape(a.mean)} with one of {jnp.shape(b.mean)}: "
            "states with leading axes (groups, a vmap) merge with states of the same axes, "
            "element by element, never by broadcasting"
        )
    if not any(isinstance(w, jax.core.Tracer) for w in (a.prior_weight, b.prior_weight)) and (
        np.any((np.asarray(a.prior_weight) > 0) & (np.asarray(b.prior_weight) > 0))
    ):
        raise ValueError(
            "both states carry a prior (prior_weight > 0), which merging would count twice; "
            "build all shards but one with welford(prior_weight=0)"
        )
    if (a.fourth is None) != (b.fourth is None):
        raise ValueError(
            "cannot merge a state with fourth moments and one without: build both with "
            "the same welford(fourth_moments=...)"
        )
    _check_merged_count(a.count, b.count)
    weight_a = a.count + a.prior_weight
    weight_b = b.count + b.prior_weight
    total = weight_a + weight_b
    nonempty = total > 0
    frac_b = jnp.where(nonempty, weight_b, 0) / jnp.where(nonempty, total, 1)
    # Both means in the frame of the heavier state: one of them is then exact.
    origin = jnp.where((weight_a >= weight_b)[..., None], a.origin, b.origin)
    mean_a = (a.origin - origin) + a.mean
    mean_b = (b.origin - origin) + b.mean
    mean, cov = mix_moments(mean_a, a.cov, mean_b, b.cov, frac_b)
    higher = {}
    if a.fourth is not None:
        third, fourth = combine(
            Moments(weight_a, mean_a, a.cov, a.third, a.fourth),
            Moments(weight_b, mean_b, b.cov, b.third, b.fourth),
        )[3:]
        higher = dict(third=third, fourth=fourth)
    return WelfordState(
        mean=mean,
        cov=cov,
        count=_merged_count(a.count, b.count),
        prior_weight=a.prior_weight + b.prior_weight,
        origin=origin,
        **higher,
    )


def mix_moments(
    mean_a: jax.Array, cov_a: jax.Array, mean_b: jax.Array, cov_b: jax.Array, frac_b: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The mean and covariance of the mixture (1 − f)·A + f·B of two weighted row sets
    with moments (μₐ, Σₐ) and (μ_b, Σ_b) in one frame, f = ``frac_b``, δ = μ_b − μₐ:

      μ = μₐ + f δ,      Σ = (1 − f) Σₐ + f Σ_b + f (1 − f) δ δᵀ,

    the core of ``merge`` (Chan, Golub and LeVeque), exactly symmetric; leading
    batch axes broadcast. NumPy arrays stay NumPy (the data-parallel fit folds its
    shards on the host in float64).
    """
    frac_a = 1 - frac_b
    delta = mean_b - mean_a
    mean = mean_a + frac_b[..., None] * delta
    cov = (
        frac_a[..., None, None] * cov_a
        + frac_b[..., None, None] * cov_b
        + (frac_a * frac_b)[..., None, None] * (delta[..., :, None] * delta[..., None, :])
    )
    return mean, 0.5 * (cov + cov.swapaxes(-1, -2))


def _merged_count(count_a: jax.Array, count_b: jax.Array) -> jax.Array:
    """Row counts add in ``counter_dtype()``; a weighted (float) total weight stays a float."""
    if jnp.issubdtype(jnp.result_type(count_a, count_b), jnp.integer):
        return count_a.astype(counter_dtype()) + count_b.astype(counter_dtype())
    return count_a + count_b


def _check_merged_count(count_a, count_b) -> None:
    """Without x64 the counters are int32: refuse (when the counts are concrete) a
    merge whose row count would wrap past 2³¹ − 1."""
    if counter_dtype() == jnp.int64 or any(
        isinstance(c, jax.core.Tracer) for c in (count_a, count_b)
    ):
        return
    total = np.asarray(count_a, np.int64) + np.asarray(count_b, np.int64)
    if np.any(total > COUNTER_LIMIT_INT32):
        raise ValueError(
            f"the merged state would count {int(np.max(total)):,} rows, more than an int32 "
            f"counter holds (2**31 - 1 = {COUNTER_LIMIT_INT32:,}); enable x64 "
            "(jax.config.update('jax_enable_x64', True)) for int64 counters"
        )
