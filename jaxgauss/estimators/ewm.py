"""``ewm``: exponentially weighted moments exactly as pandas defines them.

pandas' ``DataFrame.ewm(alpha=α, adjust=...)`` weighs the row s steps back by

  adjust=True:   wₛ ∝ (1 − α)ˢ                       (s = 0, …, t − 1),
  adjust=False:  wₛ ∝ α (1 − α)ˢ for s < t − 1, and (1 − α)ᵗ⁻¹ for the first row,

and ``.mean()`` / ``.cov(bias=True)`` are the weighted mean and scatter under those
weights (normalised to sum 1). Both are the moment estimators' recursion
(``jaxgauss.estimators.moments``) with the step

  adjust=True:   aₜ = 1/Sₜ,  Sₜ = Σ_{s<t} (1 − α)ˢ = (1 − (1 − α)ᵗ)/α,
  adjust=False:  a₁ = 1,  aₜ = α (t ≥ 2),

so a₁ = 1 forgets the initial Gaussian at the first row: the estimate after t rows
depends on those rows only. ``cov(bias=False)`` multiplies by pandas'
effective-sample-size correction 1/(1 − V), V = Σ wₛ² (the weights normalised), which
the state carries by the recursion V ← (1 − a)² V + a² (V = 1 after one row: the
correction is undefined there, pandas gives NaN and ``ewm`` the uncorrected Σ = 0,
as ``welford(ddof=1)`` does for one row).

The four parameterisations are pandas': α = 1/(1 + com) (com ≥ 0), α = 2/(span + 1)
(span ≥ 1), α = 1 − 2^(−1/halflife) (halflife > 0), or α itself in (0, 1].

Weights (pandas' ``ewm`` has none): a row of weight w counts as w repeated rows.
For adjust=True, with T the weight before the row, a = (1 − βʷ)/(1 − β^(T+w)),
β = 1 − α; for adjust=False a = 1 − βʷ (a = 1 when T = 0). Its share of V is a² ρ(w)
with ρ(w) = Σ_{j<w} β²ʲ / (Σ_{j<w} βʲ)² = α (1 + βʷ) / ((2 − α)(1 − βʷ)) (1 for w =
1; the first rows of adjust=False are counted as pandas counts repeated ones).

``exponential(half_life)`` differs: its step max(1/t, λ) runs the plain mean of all
rows until 1/t falls to λ and only then forgets, so early rows all weigh the same; the
forgetting after that point is the same as adjust=False with α = λ. Use ``ewm`` to
reproduce pandas, river (``EWMean``/``EWVar``: adjust=False) or RiskMetrics
(``ewm(alpha=0.06, adjust=False, bias=True)``); ``exponential`` when an unbiased
start matters more than a named convention.
"""

from __future__ import annotations

import functools
import math
from numbers import Real
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxgauss.estimators.base import Estimator, all_finite, counter_dtype, shared
from jaxgauss.estimators.moments import absorb
from jaxgauss.gaussian import Gaussian

__all__ = ["EWMState", "ewm"]


class EWMState(NamedTuple):
    """State of ``ewm``.

    Attributes:
      mean: μ, the weighted mean of the rows seen (the initial mean before any), (d,).
      cov: Σ, their weighted scatter with the weights normalised to sum 1 (pandas'
        ``cov(bias=True)``), (d, d), exactly symmetric.
      count: t, the rows absorbed, in ``counter_dtype()``; with ``weighted=True``
        their total weight, a float scalar of the data's dtype.
      sum_sq: V = Σ wₛ², the sum of the squared normalised weights (1/V is the
        effective sample size; ``bias=False`` divides Σ by 1 − V), a float scalar.
      origin: the reference row the mean is kept relative to, (d,): the mean of the
        rows is ``origin + mean`` (``jaxgauss.estimators.moments``, Frames).
    """

    mean: jax.Array
    cov: jax.Array
    count: jax.Array
    sum_sq: jax.Array
    origin: jax.Array

    def reframed(self, origin: jax.Array) -> EWMState:
        """The same moments with the mean kept relative to ``origin``."""
        return self._replace(mean=self.mean + (self.origin - origin), origin=origin)


def _alpha(alpha, halflife, span, com):
    """α from exactly one of pandas' four parameterisations (traced values pass
    unchecked; concrete ones are range-checked as pandas checks them)."""
    given = dict(alpha=alpha, halflife=halflife, span=span, com=com)
    named = [k for k, v in given.items() if v is not None]
    if len(named) != 1:
        raise ValueError(
            "ewm takes exactly one of alpha=, halflife=, span=, com= (pandas' "
            f"parameterisations), got {', '.join(named) if named else 'none'}"
        )
    name = named[0]
    value = given[name]
    if isinstance(value, Real):
        low, ok = {
            "alpha": ("in (0, 1]", 0 < value <= 1),
            "halflife": ("> 0", value > 0 and math.isfinite(value)),
            "span": (">= 1", value >= 1 and math.isfinite(value)),
            "com": (">= 0", value >= 0 and math.isfinite(value)),
        }[name]
        if not ok:
            raise ValueError(f"ewm: {name} must be {low}, got {value}")
    elif not isinstance(value, jax.Array | jax.core.Tracer | np.ndarray):
        raise ValueError(f"ewm: {name} must be a number, got {value!r}")
    return name, value


def _check_flags(**flags) -> None:
    for flag, v in flags.items():
        if not isinstance(v, bool):
            raise ValueError(f"ewm: {flag} must be True or False, got {v!r}")


def _row_weights(weights, weighted: bool, b: int, dtype) -> jax.Array:
    """Each row's weight (b,): 1 without ``weights``; refused, never ignored, by an
    estimator built without ``weighted=True``."""
    if weights is None:
        return jnp.ones((b,), dtype)
    if not weighted:
        raise ValueError(
            "this ewm estimator was built without weights: build it with "
            "ewm(..., weighted=True) to pass weights"
        )
    return jnp.asarray(weights, dtype)


def _to_alpha(name: str, value, dtype) -> jax.Array:
    """pandas' conversion to α, in ``dtype``."""
    v = jnp.asarray(value, dtype)
    if name == "alpha":
        return v
    if name == "halflife":
        return -jnp.expm1(jnp.log(jnp.asarray(0.5, dtype)) / v)
    if name == "span":
        return 2 / (v + 1)
    return 1 / (1 + v)


def _one_minus_beta_pow(log_beta: jax.Array, n: jax.Array) -> jax.Array:
    """1 − βⁿ = −expm1(n log β), exact for n = 0 (β = 0 gives log β = −inf)."""
    return jnp.where(n > 0, -jnp.expm1(jnp.where(n > 0, n, 1) * log_beta), 0)


def _steps_and_shares(alpha, before, w, adjust: bool):
    """Steps aᵢ of rows of weights ``w`` (b,) with total weights ``before`` (b,)
    absorbed before each, and each row's share qᵢ = aᵢ² ρ(wᵢ) of V (module docstring)."""
    log_beta = jnp.log1p(-alpha)
    live = w > 0
    fresh = before <= 0
    part = _one_minus_beta_pow(log_beta, w)  # 1 − βʷ
    if adjust:
        later = part / jnp.where(fresh, 1, _one_minus_beta_pow(log_beta, before + w))
    else:
        later = part
    a = jnp.where(live, jnp.where(fresh, 1, later), 0)
    # ρ(w) = α (2 − (1 − βʷ)) / ((2 − α)(1 − βʷ)); exactly 1 for one row.
    rho = alpha * (2 - part) / ((2 - alpha) * jnp.where(live, part, 1))
    rho = jnp.where(w == 1, 1, rho)
    if not adjust:
        # adjust=False's first rows: the oldest of w repeated rows keeps β^(w−1), the
        # others α βʲ (j < w − 1).
        lead = jnp.where(w > 1, jnp.exp(2 * jnp.where(w > 1, w - 1, 1) * log_beta), 1)
        rho = jnp.where(fresh, lead + alpha * (1 - lead) / (2 - alpha), rho)
    return a, jnp.where(live, a * a * rho, 0)


def _suffix_keep(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """c = Π (1 − aⱼ) over the batch and sᵢ = Π_{j>i} (1 − aⱼ) (sums of log1p, as in
    ``moments.step_weights``; a = 1 gives exact zeros)."""
    logs = jnp.log1p(-a)
    suffix = jnp.cumsum(logs[::-1])[::-1]
    after = jnp.exp(jnp.append(suffix[1:], jnp.zeros((), a.dtype)))
    return jnp.exp(suffix[0]), after


@shared
def ewm(
    *,
    alpha: float | jax.Array | None = None,
    halflife: float | jax.Array | None = None,
    span: float | jax.Array | None = None,
    com: float | jax.Array | None = None,
    adjust: bool = True,
    bias: bool = False,
    weighted: bool = False,
) -> Estimator:
    """Exponentially weighted mean and covariance, equal to pandas' ``ewm``.

    ``fit(ewm(alpha=α, adjust=A, bias=B), x, trace_every=1)`` gives at every row
    ``pandas.DataFrame(x).ewm(alpha=α, adjust=A).mean()`` and
    ``.cov(bias=B)`` (module docstring: the weights, the steps, the correction). The
    initial Gaussian is forgotten at the first row (no pseudo-rows).

    Args:
      alpha: the smoothing factor α in (0, 1].
      halflife: h > 0 rows: α = 1 − 2^(−1/h) (pandas' ``halflife``; not times).
      span: s ≥ 1: α = 2/(s + 1).
      com: c ≥ 0: α = 1/(1 + c). Exactly one of the four is given; it may be traced
        (a traced α outside (0, 1] makes the state NaN, which ``fit``'s guard rejects).
      adjust: pandas' ``adjust``: True weighs the row s back by (1 − α)ˢ over the
        rows seen; False is the recursion μ ← (1 − α) μ + α y from the first row
        (river's ``EWMean``/``EWVar``, RiskMetrics).
      bias: pandas' ``cov(bias=...)``: True, the weighted scatter; False, divided by
        1 − Σ wₛ² (the effective-sample-size correction). After one row the
        correction is undefined (pandas: NaN) and the uncorrected Σ = 0 is returned.
      weighted: accept per-row weights (the count is then a float total weight): a
        row of weight w counts as w repeated rows (0: a mask).

    Returns:
      An ``Estimator`` with ``rowwise=True`` and ``EWMState`` states. ``merge`` does
      not take them: the weights depend on the rows' order.

    Raises:
      ValueError: not exactly one of ``alpha``, ``halflife``, ``span``, ``com``; a
        concrete value out of its range; a non-bool ``adjust`` or ``bias``.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> x = jnp.array([[1.0], [2.0], [4.0]])
      >>> est = jg.ewm(alpha=0.5, adjust=False, bias=True)
      >>> g = jg.fit(est, x).estimate  # pandas: 2.75 and 1.6875
      >>> float(g.mean[0]), float(g.cov[0, 0])
      (2.75, 1.6875)
    """
    name, value = _alpha(alpha, halflife, span, com)
    _check_flags(adjust=adjust, bias=bias, weighted=weighted)

    def init(g0: Gaussian) -> EWMState:
        dtype = g0.mean.dtype
        return EWMState(
            mean=g0.mean,
            cov=g0.cov,
            count=jnp.zeros((), dtype if weighted else counter_dtype()),
            sum_sq=jnp.ones((), dtype),
            origin=jnp.zeros_like(g0.mean),
        )

    def update(state: EWMState, batch: jax.Array, weights=None) -> EWMState:
        dtype, b = state.mean.dtype, batch.shape[0]
        a_ = _to_alpha(name, value, dtype)
        w = _row_weights(weights, weighted, b, dtype)
        before = state.count.astype(dtype) + jnp.cumsum(w) - w
        a, q = _steps_and_shares(a_, before, w, adjust)
        keep, after = _suffix_keep(a)
        rows = a * after
        mean, cov = absorb(state.mean, state.cov, batch, keep, rows, False, state.origin)
        sum_sq = keep * keep * state.sum_sq + jnp.sum(q * after * after)
        # A traced α outside (0, 1] would make Σ indefinite: poison the state so the
        # guard rejects this update.
        mean = jnp.where((a_ > 0) & (a_ <= 1), mean, jnp.nan)
        added = b if weights is None else jnp.sum(w)
        return EWMState(mean, cov, state.count + added, sum_sq, state.origin)

    def estimate(state: EWMState) -> Gaussian:
        if bias:
            return Gaussian(state.origin + state.mean, state.cov)
        defined = state.sum_sq < 1
        factor = 1 / jnp.where(defined, 1 - state.sum_sq, 1)
        return Gaussian(state.origin + state.mean, factor * state.cov)

    weighted_form = None
    if not weighted:
        weighted_form = functools.partial(
            ewm, alpha=alpha, halflife=halflife, span=span, com=com, adjust=adjust,
            bias=bias, weighted=True,
        )  # fmt: skip
    return Estimator(
        init=init,
        update=update,
        estimate=estimate,
        is_valid=all_finite,
        rowwise=True,
        weighted=weighted,
        weighted_form=weighted_form,
    )
