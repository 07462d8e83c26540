"""Moment estimators: ``welford``, ``natural_gradient``, ``exponential`` and ``merge``.

All three estimators are one linear recursion in the expectation parameters
η = (μ, E[y yᵀ]) of the Gaussian,

  ηₜ = (1 − aₜ) ηₜ₋₁ + aₜ T(yₜ),        T(y) = (y, y yᵀ),

which, with r = yₜ − μₜ₋₁, reads in centred form

  μₜ = μₜ₋₁ + aₜ r,        Σₜ = (1 − aₜ) Σₜ₋₁ + aₜ (1 − aₜ) r rᵀ.

They differ only in the step aₜ, where t counts data rows (t = 1 for the first row
ever absorbed, whatever the batching):

| estimator | aₜ |
| --- | --- |
| ``welford()``, ``natural_gradient()`` | 1/(t + n₀): the running MLE (n₀ = 0), or n₀ prior rows |
| ``natural_gradient(a)`` | a constant a, or ``schedule(t − 1)`` for an optax schedule |
| ``exponential(h)`` | max(1/(t + n₀), 1 − 2^(−1/h)): forgets with half-life h rows |

Why this is the natural gradient: for an exponential family the Fisher information
in the natural parameters θ is F = ∂η/∂θ and the score is T(y) − η, so a
natural-gradient step θ += a F⁻¹ (T(y) − η) moves the expectation parameters by
η += a (T(y) − η) to first order; taking that step exactly in η gives the recursion
above. The Euclidean gradient of the log-likelihood (∇μ = Σ⁻¹ r,
∇Σ = −½ (Σ⁻¹ − Σ⁻¹ r rᵀ Σ⁻¹)) preconditioned by the inverse Fisher metric of (μ, Σ)
(Σ for μ, 2 Σ ⊗ Σ for Σ) is instead the additive step μ += a r, Σ += a (r rᵀ − Σ).
The two differ by a² r rᵀ in Σ, at O(a²); the additive one centres each row at the
previous mean only, so with aₜ = 1/t it keeps the initial mean's error in Σ and is
not the MLE, while the exact step is.

For 0 < aₜ < 1 the new Σ is a positive combination of an SPD matrix and a PSD
rank-one term, so it never leaves the SPD cone; aₜ = 1 (the first row with n₀ = 0)
replaces the state by the one-row MLE, which is singular like every MLE of t ≤ d
rows: an answer, not a divergence. ``is_valid`` rejects non-finite states, and an
update whose step aₜ lies outside (0, 1] (a traced rate or a schedule out of range,
which would make Σ indefinite) returns a NaN state, so ``fit``'s guard rejects it.

Frames: the states keep μ relative to an ``origin`` row, μ_true = origin + mean. A
fresh ``init`` has origin 0; ``fit`` moves the origin to the first data row (rounded
to the working dtype) and subtracts it from the rows on the host, in the data's own
precision, before casting them: float64 rows with a mean of 10⁸ and unit spread then
reach a float32 estimator as small numbers, and the covariance keeps float32's
relative accuracy whatever the offset. The origin travels with the state, so
continuing, ``merge`` and checkpoints stay exact.

Weights. Built with ``weighted=True``, each estimator's ``update`` also takes
reliability weights wᵢ ≥ 0, and t becomes the total weight absorbed (a float scalar
in the data's dtype, since a sum of weights is not an integer). A row of weight w
counts as w rows: ``welford`` gives the weighted MLE (integer weights equal repeated
rows), a constant step becomes 1 − (1 − a)^w, ``exponential`` forgets per unit of
weight, and a row of weight 0 leaves the state exactly as it was (a mask). The
unweighted default keeps t an exact integer row count.

A known mean m (``known_mean=``: scikit-learn's ``assume_centered`` is m = 0, scipy's
``multivariate_normal.fit(fix_mean=m)``) keeps μₜ = m and makes Σ the weighted second
moment about m, Σₜ = (1 − aₜ) Σₜ₋₁ + aₜ (yₜ − m)(yₜ − m)ᵀ: no degree of freedom is
spent on the mean, so with aₜ = 1/t it is the exact MLE of Σ given m (and unbiased).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from numbers import Real
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgauss.estimators.base import (
    Estimator,
    all_finite,
    counter_dtype,
    shared,
)
from jaxgauss.estimators.higher_moments import Moments, batch_moments, combine, gaussian_fourth
from jaxgauss.gaussian import Gaussian

__all__ = [
    "WelfordState",
    "MomentsState",
    "welford",
    "natural_gradient",
    "exponential",
]


class WelfordState(NamedTuple):
    """State of ``welford`` (and of ``natural_gradient()`` with its default step).

    Attributes:
      mean: μ, the weighted mean of the prior's pseudo-rows and the rows seen, (d,).
      cov: Σ, their weighted scatter divided by the total weight t + n₀ (the MLE
        when n₀ = 0), (d, d), exactly symmetric. ``ddof`` is applied only by
        ``estimate``.
      count: t, the number of data rows absorbed, in ``counter_dtype()``; with
        ``weighted=True`` their total weight, a float scalar of the data's dtype.
      prior_weight: n₀, the number of pseudo-rows the initial Gaussian counts as
        (0: the initial Gaussian is forgotten at the first row), a float scalar.
      third: with ``welford(fourth_moments=True)``, T = E[eᵢ² eⱼ] (d, d), the centred
        third moments (e = y − μ, same weighting as Σ); otherwise None.
      fourth: likewise F = E[eᵢ² eⱼ²] (d, d), symmetric; otherwise None. The prior's
        pseudo-rows count with the moments of the initial Gaussian (T = 0,
        F = Σ₀ᵢᵢ Σ₀ⱼⱼ + 2 Σ₀ᵢⱼ²).
      origin: the reference row the mean is kept relative to, (d,): the mean of the
        rows is ``origin + mean`` (module docstring, Frames).
    """

    mean: jax.Array
    cov: jax.Array
    count: jax.Array
    prior_weight: jax.Array
    origin: jax.Array
    third: jax.Array | None = None
    fourth: jax.Array | None = None

    def reframed(self, origin: jax.Array) -> WelfordState:
        """The same moments with the mean kept relative to ``origin``."""
        return self._replace(mean=self.mean + (self.origin - origin), origin=origin)


class MomentsState(NamedTuple):
    """State of ``natural_gradient`` with a given step and of ``exponential``.

    Attributes:
      mean: μ, the current weighted mean, (d,).
      cov: Σ, the current weighted covariance, (d, d), exactly symmetric.
      count: t, the number of data rows absorbed, in ``counter_dtype()`` (the steps
        depend on it); with ``weighted=True`` their total weight, a float scalar.
      origin: the reference row the mean is kept relative to, (d,): the weighted mean
        is ``origin + mean``.
    """

    mean: jax.Array
    cov: jax.Array
    count: jax.Array
    origin: jax.Array

    def reframed(self, origin: jax.Array) -> MomentsState:
        """The same moments with the mean kept relative to ``origin``."""
        return self._replace(mean=self.mean + (self.origin - origin), origin=origin)


def step_weights(steps: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The weights that b single-row steps a₁…a_b give: the old state keeps
    c = Πᵢ (1 − aᵢ) and row i gets wᵢ = aᵢ Π_{j>i} (1 − aⱼ), so c + Σᵢ wᵢ = 1."""
    # Sums of log1p(−aⱼ), not products: in float32 a product of rounded factors
    # 1 − 1/t is biased (for t ~ 10⁶ every factor in a block rounds the same way),
    # which shrank Σ by ~1 % over 10⁷ rows. log1p(−1) = −inf gives c = 0 exactly.
    log_suffix = jnp.cumsum(jnp.log1p(-steps)[::-1])[::-1]  # Σ_{j≥i} log(1 − aⱼ)
    keep = jnp.exp(log_suffix[0])
    weights = steps * jnp.exp(jnp.append(log_suffix[1:], jnp.zeros((), steps.dtype)))
    return keep, weights


def absorb(
    mean: jax.Array,
    cov: jax.Array,
    batch: jax.Array,
    keep: jax.Array,
    weights: jax.Array,
    known: bool = False,
    origin: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Apply the rows yᵢ of ``batch`` (b, d) with the old state's weight c = ``keep``
    and row weights wᵢ (``weights``: (b,), or one scalar for all rows), as the b
    single-row updates would, in one Gram matmul of shifted rows eᵢ = yᵢ − μ:

      s = Σᵢ wᵢ eᵢ,    μ' = μ + s,    Σ' = Σ − W Σ + Σᵢ wᵢ eᵢ eᵢᵀ − s sᵀ,   W = Σᵢ wᵢ,

    which is Chan et al.'s pairwise formula (c Σ + c (μ − μ')(μ − μ')ᵀ +
    Σᵢ wᵢ (yᵢ − μ')(yᵢ − μ')ᵀ with c = 1 − W) rearranged so the rows are read once.

    With ``known=True`` the mean μ is known and stays: Σ' = Σ − W Σ + Σᵢ wᵢ eᵢ eᵢᵀ.

    With ``origin`` the rows are ``batch − origin`` (a state's frame), subtracted here
    in the same pass as the shift (eᵢ = (yᵢ − origin) − μ, in that order), so the
    shifted batch is never stored: at d = 10 a stored copy made a block ~1.5x slower.
    """
    uniform = jnp.ndim(weights) == 0
    # c = 0 (a first row with no prior) drops the old state exactly, however large it
    # was: the rows are then shifted by the batch's own (weighted) mean, not the old mean,
    # so that s ≈ 0 and Σᵢ wᵢ eᵢ eᵢᵀ − s sᵀ does not cancel (centring on the first
    # row lost ~1e-7 absolute in float32 on data of mean 5). Only then is that mean
    # computed (a pass over the rows).
    forget = keep == 0
    framed = (lambda: batch) if origin is None else (lambda: batch - origin)
    if known:
        shift = mean
    else:
        shift = jax.lax.cond(forget, lambda: _centre(framed(), weights), lambda: mean)
    e = framed() - shift  # small next to |μ| when the mean is large: float32 stays accurate
    # One matmul of the rows with a column of ones appended gives Σᵢ wᵢ eᵢ eᵢᵀ and
    # s = Σᵢ wᵢ eᵢ together: one read of the rows, no separate reduction over them (at
    # d = 10 that halved the update's time on a CPU).
    augmented = jnp.concatenate([e, jnp.ones((e.shape[0], 1), e.dtype)], axis=1)
    if uniform:
        products = weights * (augmented.T @ augmented)
    else:
        products = (augmented.T * weights) @ augmented
    gram, s = products[:-1, :-1], products[:-1, -1]
    total = weights * e.shape[0] if uniform else jnp.sum(weights)
    # Increment form: the old state decays by subtracting W·Σ, rounded entry by entry,
    # not by multiplying with a rounded factor c.
    old = jnp.where(forget, 0, cov - total * cov)
    new_cov = old + gram if known else old + gram - jnp.outer(s, s)
    return (mean if known else shift + s), 0.5 * (new_cov + new_cov.T)


def _centre(batch: jax.Array, weights: jax.Array) -> jax.Array:
    """The rows' mean, weighted by ``weights`` ((b,) or one scalar for all rows): rows
    of weight 0 (padding) do not pull it; with no weight at all, the first row."""
    if jnp.ndim(weights) == 0:
        return jnp.mean(batch, axis=0)
    total_weight = jnp.sum(weights)
    some = total_weight > 0
    return jnp.where(some, weights @ batch / jnp.where(some, total_weight, 1), batch[0])


def _check_nonnegative(name: str, value) -> None:
    if isinstance(value, Real) and not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def _count_dtype(weighted: bool, dtype) -> jnp.dtype:
    """An exact integer row count (``counter_dtype()``), or for weighted states a total
    weight in ``dtype``."""
    return dtype if weighted else counter_dtype()


def _weights_for(weighted: bool, name: str, weights, dtype) -> jax.Array:
    """Per-row weights in ``dtype``, refused (never ignored) by an unweighted estimator."""
    if not weighted:
        raise ValueError(
            f"this {name} estimator was built without weights (its count is an integer "
            f"number of rows): build it with {name}(..., weighted=True) to pass weights"
        )
    return jnp.asarray(weights, dtype)


def _welford_weights(n: jax.Array, added: jax.Array, weights) -> tuple[jax.Array, jax.Array]:
    """``welford``'s exact weights: the old state (weight n) keeps n/(n + W) and a row
    of weight wᵢ gets wᵢ/(n + W), W the batch's total weight; when n + W = 0 nothing
    changes (keep 1, rows 0)."""
    some = added + n > 0
    total = jnp.where(some, n + added, 1)
    return jnp.where(some, n, 1) / total, jnp.where(some, weights, 0) / total


def _add_count(count: jax.Array, added: jax.Array) -> jax.Array:
    """count + added, kept an integer for unweighted (0/1-masked) states."""
    if jnp.issubdtype(count.dtype, jnp.integer):
        return count + jnp.round(added).astype(count.dtype)
    return count + added


def _laid_out_absorb(state: WelfordState, batch, weights) -> WelfordState:
    """G groups' rows laid out (G, m, d) with weights (G, m), padded with weight-0
    rows: ``absorb`` of each group's rows with ``welford``'s weights (a 0/1 mask for an
    unweighted state), written batched over groups: one batched Gram of the shifted
    rows and their weighted sums (no column of ones appended: at d = 10 that doubled
    the Gram's time)."""
    dtype = state.mean.dtype
    weights = weights.astype(dtype)
    n = state.count.astype(dtype) + state.prior_weight
    added = jnp.sum(weights, axis=1)
    keep, row = _welford_weights(n[:, None], added[:, None], weights)  # (G, 1), (G, m)
    rows = batch - state.origin[:, None, :]
    forget = keep[:, 0] == 0  # a group's first rows: shifted by their own mean
    some = added > 0
    centre = jnp.sum(weights[:, :, None] * rows, axis=1) / jnp.where(some, added, 1)[:, None]
    centre = jnp.where(some[:, None], centre, rows[:, 0])
    shift = jnp.where(forget[:, None], centre, state.mean)
    e = rows - shift[:, None, :]
    s = jnp.sum(row[:, :, None] * e, axis=1)
    gram = jnp.einsum("gmi,gmj->gij", e * row[:, :, None], e)
    total = jnp.sum(row, axis=1)[:, None, None]
    old = jnp.where(forget[:, None, None], 0, state.cov - total * state.cov)
    cov = old + gram - s[:, :, None] * s[:, None, :]
    cov = 0.5 * (cov + jnp.swapaxes(cov, 1, 2))
    return state._replace(mean=shift + s, cov=cov, count=_add_count(state.count, added))


def _grouped_absorb(state: WelfordState, batch, groups, weights) -> WelfordState:
    """``welford``'s update of G states at once (leading axis G).

    With ``groups=None`` the rows are already laid out per group, ``batch`` (G, m, d)
    and ``weights`` (G, m) (padding has weight 0): one batched Gram matmul. Otherwise
    rows yᵢ of group gᵢ with weights wᵢ, as ``absorb`` per group, in segment sums over
    the rows:

      eᵢ = yᵢ − μ_{gᵢ},  s_k = Σ_{gᵢ=k} ωᵢ eᵢ,  Σ'_k = Σ_k − W_k Σ_k + Σ_{gᵢ=k} ωᵢ eᵢ eᵢᵀ − s_k s_kᵀ,

    with ωᵢ = wᵢ/(n_k + Σ_{gᵢ=k} wᵢ) and W_k = Σ_{gᵢ=k} ωᵢ. A group with no weight in
    the batch is unchanged; a group's first rows with n_k = 0 replace its state,
    shifted by its first row of positive weight. With G = 1 the outer products are one
    Gram matmul."""
    if groups is None:
        return _laid_out_absorb(state, batch, weights)
    n_groups, dtype = state.mean.shape[0], state.mean.dtype
    weights = weights.astype(dtype)
    segsum = lambda x: jax.ops.segment_sum(x, groups, n_groups)  # noqa: E731
    n = state.count.astype(dtype) + state.prior_weight
    added = segsum(weights)
    keep, scale = _welford_weights(n, added, 1.0)
    row = weights * scale[groups]
    forget = keep == 0
    batch = batch - state.origin[groups]  # each row in its group's frame
    index = jnp.arange(batch.shape[0])
    first = jax.ops.segment_min(jnp.where(weights > 0, index, batch.shape[0] - 1), groups, n_groups)
    shift = jnp.where(forget[:, None], batch[jnp.clip(first, 0, batch.shape[0] - 1)], state.mean)
    e = batch - shift[groups]
    s = segsum(row[:, None] * e)
    if n_groups == 1:
        gram = ((e.T * row) @ e)[None]
    else:
        gram = segsum(row[:, None, None] * (e[:, :, None] * e[:, None, :]))
    decay = (added * scale)[:, None, None]
    old = jnp.where(forget[:, None, None], 0, state.cov - decay * state.cov)
    cov = old + gram - s[:, :, None] * s[:, None, :]
    cov = 0.5 * (cov + jnp.swapaxes(cov, 1, 2))
    return state._replace(mean=shift + s, cov=cov, count=_add_count(state.count, added))


def _check_known_mean(known_mean) -> None:
    """Boundary check of ``known_mean``: None, or a finite scalar or (d,) vector."""
    if known_mean is None or isinstance(known_mean, jax.core.Tracer):
        return
    m = np.asarray(known_mean)
    if m.ndim > 1 or not (np.issubdtype(m.dtype, np.number) and not np.iscomplexobj(m)):
        raise ValueError(f"known_mean must be a real scalar or a (d,) vector, got {known_mean!r}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"known_mean has non-finite entries: {m.tolist()}")


def _initial_mean(known_mean, g0: Gaussian) -> jax.Array:
    """The state's starting mean: g0's, or the known mean broadcast to g0's shape."""
    if known_mean is None:
        return g0.mean
    m = jnp.asarray(known_mean, g0.mean.dtype)
    if m.ndim == 1 and m.shape != g0.mean.shape:
        raise ValueError(
            f"known_mean has {m.shape[0]} entries but the data have dimension {g0.mean.shape[-1]}"
        )
    return jnp.broadcast_to(m, g0.mean.shape)


def _moment_record(
    init, update, estimate, weighted: bool, weighted_form, grouped_update=None
) -> Estimator:
    """The ``Estimator`` of a moment estimator: rowwise, its guard finiteness (its
    updates never leave the PSD cone), its weighted form when it is not weighted."""
    return Estimator(
        init=init, update=update, estimate=estimate, is_valid=all_finite, rowwise=True,
        weighted=weighted, grouped_update=grouped_update,
        weighted_form=None if weighted else weighted_form,
    )  # fmt: skip


def _check_fourth_moments(fourth_moments: bool, known: bool, weighted: bool) -> None:
    if known and fourth_moments:
        raise ValueError(
            "fourth_moments=True with a known_mean is not supported: the fourth-moment sums "
            "are centred at the estimated mean"
        )
    if weighted and fourth_moments:
        raise ValueError("fourth_moments=True does not take weights (weighted=True) yet")


@shared
def welford(
    ddof: float = 0,
    prior_weight: float | jax.Array = 0.0,
    known_mean: float | jax.Array | None = None,
    fourth_moments: bool = False,
    weighted: bool = False,
) -> Estimator:
    """Exact streaming mean and covariance (Welford's algorithm, blocked).

    The step aₜ = 1/(t + n₀) makes the state the weighted MLE of the rows seen plus n₀
    pseudo-rows with the initial Gaussian's moments:

      μₜ = (n₀ μ₀ + Σₛ yₛ) / (n₀ + t),
      Σₜ = (n₀ [Σ₀ + (μ₀ − μₜ)(μ₀ − μₜ)ᵀ] + Σₛ (yₛ − μₜ)(yₛ − μₜ)ᵀ) / (n₀ + t),

    i.e. Σₜ = Ψₜ/(n₀ + t) with Ψₜ the scale matrix of the normal–inverse-Wishart
    posterior for the prior κ₀ = ν₀ = n₀, Ψ₀ = n₀ Σ₀. With n₀ = 0
    (the default) the initial Gaussian is forgotten at the first row and the state
    after t rows equals ``jaxgauss.mle`` of them to rounding; with n₀ > 0 and an SPD
    initial covariance every estimate is SPD, even from one row or degenerate data.

    A batch of b rows is one rank-b update (a weighted Gram matmul of rows centred at
    the new mean), equal to b single-row updates to rounding, so ``fit``'s
    ``batch_size`` changes only the speed. Two states over disjoint rows combine with
    ``merge``.

    Weights (``weighted=True``): ``update(state, batch, weights)`` absorbs row i with
    weight wᵢ ≥ 0, so the state is the weighted MLE, μ = Σ wᵢ yᵢ / W and
    Σ = Σ wᵢ (yᵢ − μ)(yᵢ − μ)ᵀ / W with W = Σ wᵢ (``np.average(weights=w)`` and
    ``np.cov(aweights=w, bias=True)``); ``count`` is W, a float. ``ddof`` treats
    the weights as frequencies: Σ · W/(W − ddof), which for integer weights equals
    repeating each row wᵢ times (``np.cov(fweights=w, ddof=ddof)``).

    Args:
      ddof: the estimate's covariance is Σ · n/(n − ddof) with n = t + n₀ (ddof = 1:
        the unbiased sample covariance when n₀ = 0). While n ≤ ddof the correction is
        undefined and the uncorrected Σ is returned. It does not affect the state.
      prior_weight: n₀ ≥ 0, the initial Gaussian's weight in rows. May be traced.
      known_mean: None (estimate the mean), or the mean m when it is known: a scalar
        (0: centred data, scikit-learn's ``assume_centered=True``) or a (d,) vector.
        The state's mean is m throughout and Σₜ = (n₀ Σ₀ + Σₛ (yₛ − m)(yₛ − m)ᵀ)/(n₀ + t),
        equal to ``jaxgauss.mle(ys, known_mean=m)`` to rounding (scipy's
        ``multivariate_normal.fit(fix_mean=m)``); ddof = 0 is then the unbiased one.
        Two such states with the same m ``merge`` exactly.
      fourth_moments: also track the centred third and fourth moments T and F
        (``WelfordState.third``/``fourth``, merged and downdated exactly), which
        ``ledoit_wolf``, ``skewness`` and ``kurtosis`` need. Costs two more d × d
        matmuls per batch; the mean and covariance are unchanged.
      weighted: accept per-row weights; the count is then a float total weight (not
        with ``fourth_moments``).

    Returns:
      An ``Estimator`` with ``rowwise=True`` and ``WelfordState`` states, and (unless
      ``known_mean`` or ``fourth_moments`` is given) a ``grouped_update`` for
      grouped fits.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> ys = jnp.array([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]])
      >>> res = jg.fit(jg.welford(ddof=1), ys, batch_size=2)
      >>> jnp.round(res.estimate.cov, 4).tolist(), int(res.state.count)
      ([[4.0, 3.0], [3.0, 3.0]], 3)
    """
    if isinstance(ddof, bool) or not isinstance(ddof, Real) or not ddof >= 0:
        raise ValueError(f"ddof must be a number >= 0, got {ddof!r}")
    _check_nonnegative("prior_weight", prior_weight)
    _check_known_mean(known_mean)
    known = known_mean is not None
    _check_fourth_moments(fourth_moments, known, weighted)

    def init(g0: Gaussian) -> WelfordState:
        higher = {}
        if fourth_moments:
            higher = dict(third=jnp.zeros_like(g0.cov), fourth=gaussian_fourth(g0.cov))
        return WelfordState(
            mean=_initial_mean(known_mean, g0),
            cov=g0.cov,
            count=jnp.zeros((), _count_dtype(weighted, g0.mean.dtype)),
            prior_weight=jnp.asarray(prior_weight, g0.mean.dtype),
            origin=jnp.zeros_like(g0.mean),
            **higher,
        )

    def update(state: WelfordState, batch: jax.Array, weights=None) -> WelfordState:
        # Steps 1/(n + 1), …, 1/(n + b) with n = t + n₀ weigh every row 1/(n + b)
        # and the old state n/(n + b): exact weights, no products needed.
        n = state.count.astype(state.mean.dtype) + state.prior_weight
        if weights is None:
            keep, row, added = n / (n + batch.shape[0]), 1 / (n + batch.shape[0]), batch.shape[0]
        else:
            weights = _weights_for(weighted, "welford", weights, state.mean.dtype)
            added = jnp.sum(weights)
            keep, row = _welford_weights(n, added, weights)
        mean, cov = absorb(state.mean, state.cov, batch, keep, row, known, state.origin)
        higher = {}
        if fourth_moments:
            rows = batch - state.origin
            old = Moments(n, state.mean, state.cov, state.third, state.fourth)
            third, fourth = combine(old, batch_moments(rows))[3:]
            higher = dict(third=third, fourth=fourth)
        return state._replace(mean=mean, cov=cov, count=state.count + added, **higher)

    def estimate(state: WelfordState) -> Gaussian:
        n = state.count + state.prior_weight
        defined = n > ddof
        scale = jnp.where(defined, n, 1) / jnp.where(defined, n - ddof, 1)
        return Gaussian(state.origin + state.mean, scale[..., None, None] * state.cov)

    again = (
        None
        if fourth_moments
        else functools.partial(welford, ddof, prior_weight, known_mean, weighted=True)
    )
    grouped = None if known or fourth_moments else _grouped_absorb
    return _moment_record(init, update, estimate, weighted, again, grouped)


def _moments_estimator(
    steps: Callable[[jax.Array, jax.Array | None, jnp.dtype], jax.Array],
    weighted: bool,
    name: str,
    known_mean=None,
    weighted_form: Callable[[], Estimator] | None = None,
) -> Estimator:
    """The ``MomentsState`` estimator whose rows get ``steps(before, w, dtype)`` (b,):
    ``before`` the count absorbed before each row, ``w`` the rows' weights (None: 1);
    ``weighted_form`` builds its weighted form (used when ``weighted`` is False)."""
    _check_known_mean(known_mean)

    def init(g0: Gaussian) -> MomentsState:
        return MomentsState(
            mean=_initial_mean(known_mean, g0),
            cov=g0.cov,
            count=jnp.zeros((), _count_dtype(weighted, g0.mean.dtype)),
            origin=jnp.zeros_like(g0.mean),
        )

    def update(state: MomentsState, batch: jax.Array, weights=None) -> MomentsState:
        dtype, b = state.mean.dtype, batch.shape[0]
        if weights is None:
            before = state.count + jnp.arange(b, dtype=state.count.dtype)
            added = b
        else:
            weights = _weights_for(weighted, name, weights, dtype)
            before = state.count + jnp.cumsum(weights) - weights
            added = jnp.sum(weights)
        a = steps(before, weights, dtype)
        keep, row = step_weights(a)
        known = known_mean is not None
        mean, cov = absorb(state.mean, state.cov, batch, keep, row, known, state.origin)
        # A step outside (0, 1] makes Σ indefinite (a PSD test of a legitimately
        # singular early MLE would be ill-posed): poison the state so the guard,
        # which rejects non-finite states, rejects this update. A row of weight 0
        # takes the step 0 (no update).
        massless = False if weights is None else weights == 0
        in_range = jnp.all(((a > 0) | massless) & (a <= 1))
        mean = jnp.where(in_range, mean, jnp.nan)
        return state._replace(mean=mean, cov=cov, count=state.count + added)

    def estimate(state: MomentsState) -> Gaussian:
        return Gaussian(state.origin + state.mean, state.cov)

    return _moment_record(init, update, estimate, weighted, weighted_form)


def _per_weight(step: jax.Array, weights: jax.Array | None) -> jax.Array:
    """The step a row of weight w takes for a per-unit step a: 1 − (1 − a)^w (w
    single steps of a), exactly a when unweighted and 0 for w = 0."""
    if weights is None:
        return step
    return -jnp.expm1(weights * jnp.log1p(-step))


@shared
def natural_gradient(
    learning_rate: float | jax.Array | optax.Schedule | None = None,
    prior_weight: float | jax.Array = 0.0,
    known_mean: float | jax.Array | None = None,
    weighted: bool = False,
) -> Estimator:
    """Natural-gradient ascent on the log-likelihood, in expectation parameters:

      μ ← μ + a r,        Σ ← (1 − a) Σ + a (1 − a) r rᵀ,        r = y − μ,

    the natural-gradient step taken exactly in η (the derivation, and how it differs
    from the first-order Fisher step, are in the module docstring). For 0 < a < 1 it
    never leaves the SPD cone.

    Args:
      learning_rate: the step aₜ (t counts data rows, so batching changes the result
        only by rounding):
        None: 1/(t + n₀), which makes this exactly ``welford(prior_weight=n₀)``
        (same state, mergeable); a number or array in (0, 1]: a constant step,
        an exponentially weighted average that keeps weight (1 − a)ᵗ on the initial
        Gaussian (``exponential`` forgets it instead); an optax schedule: aₜ =
        schedule(t − 1), with values in (0, 1]. A traced rate or a schedule value
        outside (0, 1] makes that update's state NaN, which ``fit``'s guard rejects
        (``diverged_at``).
      prior_weight: n₀ ≥ 0, the initial Gaussian's weight in rows, for the default
        step only (a given step sets the initial Gaussian's weight itself).
      known_mean: None, or a known mean m (scalar or (d,)): μ stays m and Σ averages
        (y − m)(y − m)ᵀ with the same steps (see ``welford``).
      weighted: accept per-row weights (the count is then a float total weight): a
        row of weight w takes the step 1 − (1 − a)^w, as w rows of step a would (a
        schedule is evaluated at the total weight before the row); the default step
        is ``welford(weighted=True)``'s weighted MLE.

    Returns:
      An ``Estimator`` with ``rowwise=True``.

    Raises:
      ValueError: a concrete constant step outside (0, 1]; ``prior_weight`` with a
        given step; a negative ``prior_weight``.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> ys = jnp.array([[0.0], [2.0], [4.0]])
      >>> round(float(jg.fit(jg.natural_gradient(), ys).estimate.mean[0]), 6)  # the MLE
      2.0
      >>> float(jg.fit(jg.natural_gradient(0.5), ys).estimate.mean[0])  # init N(0, 1) kept
      2.5
    """
    if learning_rate is None:
        return welford(prior_weight=prior_weight, known_mean=known_mean, weighted=weighted)
    if not (isinstance(prior_weight, Real) and prior_weight == 0):
        raise ValueError(
            "prior_weight applies only to the default step (learning_rate=None); a constant "
            "or scheduled step sets the initial Gaussian's weight itself"
        )
    if callable(learning_rate):
        schedule = jax.vmap(learning_rate)

        def steps(before, weights, dtype):
            return _per_weight(schedule(before).astype(dtype), weights)

    else:
        _check_static_rate(learning_rate)

        def steps(before, weights, dtype):
            return _per_weight(jnp.full(before.shape, learning_rate, dtype), weights)

    weighted_form = functools.partial(
        natural_gradient, learning_rate, prior_weight, known_mean, weighted=True
    )
    return _moments_estimator(steps, weighted, "natural_gradient", known_mean, weighted_form)


def _check_static_rate(learning_rate) -> None:
    """A concrete constant step (number or array) must lie in (0, 1]; traced ones are
    checked by the guard (``update`` poisons a state reached by a step out of range)."""
    if isinstance(learning_rate, jax.core.Tracer):
        return
    rate = np.asarray(learning_rate)
    if not (np.issubdtype(rate.dtype, np.number) and np.all((rate > 0) & (rate <= 1))):
        raise ValueError(f"a constant learning_rate must be in (0, 1], got {learning_rate}")


@shared
def exponential(
    half_life: float | jax.Array,
    prior_weight: float | jax.Array = 0.0,
    known_mean: float | jax.Array | None = None,
    weighted: bool = False,
) -> Estimator:
    """Exponentially forgetting mean and covariance, for drifting streams.

    The step is aₜ = max(1/(t + n₀), λ) with λ = 1 − 2^(−1/h): running moments
    (``welford``) until t + n₀ reaches 1/λ ≈ h/ln 2, then a constant step under
    which a row's weight halves every h rows. Starting at 1/t instead of λ removes the
    bias toward the initial Gaussian that a constant step (``natural_gradient(λ)``)
    has; h = ∞ gives ``welford``'s estimates exactly. This start matches no one
    else's convention: for pandas' ``ewm`` (and river's ``EWMean``/``EWVar``,
    RiskMetrics) use ``jaxgauss.ewm``, equal to it at every row.

    Args:
      half_life: h > 0, in data rows. May be traced (``jnp.inf`` allowed).
      prior_weight: n₀ ≥ 0, the initial Gaussian's weight in rows, as in ``welford``.
      known_mean: None, or a known mean m (scalar or (d,)), as in ``welford``.
      weighted: accept per-row weights (the count is then a float total weight T):
        forgetting is per unit of weight, a row of weight w taking the step
        max(w/(T + w + n₀), 1 − 2^(−w/h)), 0 for w = 0.

    Returns:
      An ``Estimator`` with ``rowwise=True`` and ``MomentsState`` states.

    Raises:
      ValueError: a concrete ``half_life`` ≤ 0 or a negative ``prior_weight``.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> ys = jnp.concatenate([jnp.zeros((100, 1)), jnp.ones((100, 1))])
      >>> round(float(jg.fit(jg.exponential(10.0), ys).estimate.mean[0]), 4)  # 1 − 2^(−100/10)
      0.999
      >>> round(float(jg.fit(jg.welford(), ys).estimate.mean[0]), 4)  # no forgetting
      0.5
    """
    if isinstance(half_life, Real) and not half_life > 0:
        raise ValueError(f"half_life must be > 0, got {half_life}")
    _check_nonnegative("prior_weight", prior_weight)

    def steps(before, weights, dtype):
        rate = jnp.log(2.0) / jnp.asarray(half_life, dtype)
        before = before.astype(dtype)
        if weights is None:
            return jnp.maximum(1 / (before + 1 + prior_weight), -jnp.expm1(-rate))
        live = weights > 0
        warm = jnp.where(live, weights, 0) / jnp.where(live, before + weights + prior_weight, 1)
        return jnp.maximum(warm, -jnp.expm1(-rate * weights))

    weighted_form = functools.partial(
        exponential, half_life, prior_weight, known_mean, weighted=True
    )
    return _moments_estimator(steps, weighted, "exponential", known_mean, weighted_form)
