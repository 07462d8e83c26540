"""Online EM for the multivariate Student t: a location/scatter estimate robust to outliers.

The t with ν degrees of freedom is a Gaussian scale mixture: y | u ~ N(μ, Σ/u) with
u ~ Gamma(ν/2, ν/2). Given the current (μ, Σ), the E-step replaces the latent u of a
row by its posterior mean

  w = E[u | y] = (ν + d) / (ν + δ),      δ = (y − μ)ᵀ Σ⁻¹ (y − μ),

so a far-out row (large δ) gets a small weight. The M-step of batch EM is the
w-weighted mean and scatter, μ = Σ wᵢ yᵢ / Σ wᵢ, Σ = (1/n) Σ wᵢ (yᵢ − μ)(yᵢ − μ)ᵀ,
whose fixed point is the t maximum-likelihood estimate (at it, the mean of the wᵢ
is 1). Stepwise online EM runs the running-average form of those statistics
(``jaxgauss.estimators._em``): the natural-gradient step of the moment estimators
with each row weighted by w.

The first ``n_init`` rows are buffered and fitted in batch (fixed-point iterations
from their sample moments) before the online steps start; that seed counts as τ₀
pseudo-rows in the default step a_τ = (τ + τ₀)^(−κ).

ν estimated (``dof=None``): the complete-data statistic of ν is the mean of
log u − u, whose E-step value for a row is

  h = E[log u − u | y] = log w − w + ψ((ν + d)/2) − log((ν + d)/2),

and the M-step solves log(ν/2) − ψ(ν/2) = −1 − S₃ for ν, S₃ the running average of
h (Liu and Rubin 1995's ECM/ECME update of ν; at the batch fixed point it is the
t-MLE's ν). Stepwise online EM keeps S₃ with the same steps a_τ as the location and
scatter statistics and solves for ν after each batch (bisection in log ν, 40 halvings,
kept in ``DOF_RANGE`` = [0.5, 1000]: beyond 1000 the t is a Gaussian to within the
noise of any stream, and below 0.5 it has no usable scatter). The seed estimates ν in
batch the same way; the estimate's ν is the average of the iterates' ν.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.scipy.special import digamma, gammaln

from jaxgauss.estimators import _em
from jaxgauss.estimators.base import Estimator, all_finite
from jaxgauss.estimators.moments import absorb, step_weights
from jaxgauss.gaussian import Gaussian

__all__ = ["DOF_RANGE", "StudentT", "StudentTState", "solve_dof", "student_t"]

_SEED_ITERATIONS = 20
_SEED_DOF = 10.0  # where the seed's estimate of ν starts
_BISECTIONS = 40

# The range ν is kept in when it is estimated (module docstring).
DOF_RANGE = (0.5, 1000.0)


class StudentT(NamedTuple):
    """A multivariate Student t distribution t_ν(μ, Σ) as a pytree.

    Attributes:
      mean: the location μ, (..., d).
      scale: the scatter matrix Σ, (..., d, d), SPD (the covariance is
        Σ ν/(ν − 2) for ν > 2).
      dof: the degrees of freedom ν > 0, a scalar (...).

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> t = jg.StudentT(jnp.zeros(2), jnp.eye(2), jnp.asarray(3.0))
      >>> round(float(t.log_likelihood(jnp.zeros(2))), 6)
      -1.837877
    """

    mean: jax.Array
    scale: jax.Array
    dof: jax.Array

    def log_likelihood(self, y: jax.Array) -> jax.Array:
        """Log-density at points ``y`` (..., d) -> (...), through Σ's Cholesky factor:

        log Γ((ν + d)/2) − log Γ(ν/2) − (d/2) log(νπ) − ½ log det Σ
        − ((ν + d)/2) log(1 + δ/ν),   δ = ‖L⁻¹(y − μ)‖².

        Equals ``scipy.stats.multivariate_t(mean, scale, df=dof).logpdf(y)``.
        """
        d = self.mean.shape[-1]
        chol = jnp.linalg.cholesky(self.scale)
        r = jnp.asarray(y) - self.mean
        z = jax.scipy.linalg.solve_triangular(chol, r[..., None], lower=True)[..., 0]
        delta = jnp.sum(z**2, axis=-1)
        nu = jnp.asarray(self.dof, delta.dtype)
        return (
            gammaln((nu + d) / 2)
            - gammaln(nu / 2)
            - 0.5 * d * jnp.log(nu * jnp.pi)
            - _em.half_log_det(chol)
            - 0.5 * (nu + d) * jnp.log1p(delta / nu)
        )


class StudentTState(NamedTuple):
    """State of ``student_t``.

    Attributes:
      total: S₀, the running average of the E-step weights w (1 at the t-MLE).
      mean: μ, the current iterate's location, (d,).
      wcov: C, the w-weighted covariance; the iterate's scatter is Σ = S₀ C, (d, d).
      dof: ν of the current iterate (the given ν, or its online estimate).
      dof_stat: S₃, the running average of E[log u − u | y] that ν is solved from
        (module docstring); unused when ν is given.
      average: the estimate: the polynomial-decay average of the iterates, a ``StudentT``.
      buffer: the first ``n_init`` rows, (n_init, d), fitted in batch to seed.
      count: rows absorbed, buffered ones included, int32.
      origin: the reference row that ``mean``, ``average.mean`` and the buffered rows
        are kept relative to, (d,) (``fit`` moves it to the first row, so an offset
        costs no float32 accuracy; ``jaxgauss.estimators.moments``, Frames).
    """

    total: jax.Array
    mean: jax.Array
    wcov: jax.Array
    dof: jax.Array
    dof_stat: jax.Array
    average: StudentT
    buffer: jax.Array
    count: jax.Array
    origin: jax.Array

    def reframed(self, origin: jax.Array) -> StudentTState:
        """The same state with its locations kept relative to ``origin``."""
        delta = self.origin - origin
        return self._replace(
            mean=self.mean + delta,
            average=self.average._replace(mean=self.average.mean + delta),
            buffer=self.buffer + delta,
            origin=origin,
        )


def _weights(dof: jax.Array, mean: jax.Array, scale: jax.Array, ys: jax.Array) -> jax.Array:
    """E-step weights wᵢ = (ν + d)/(ν + δᵢ) of rows ``ys`` (b, d).

    On degenerate data (a constant column, repeated rows, collinear columns) Σ is
    singular, while the rows lie on its support, where δ is defined; rounding leaves
    Σ with tiny eigenvalues of either sign across it. δ therefore goes through the
    Cholesky factor of Σ + λI: λ = ε tr Σ (ε the dtype's machine epsilon), which keeps
    the rows' rounding across the support from counting in δ and changes δ along it
    by a relative O(ε cond Σ); where that factor still fails, λ = √ε tr Σ / d (at
    least the dtype's smallest normal number, for Σ = 0). The estimate is then
    singular, as the moment estimators' is on such data, instead of NaN.
    """
    info = jnp.finfo(scale.dtype)
    d = scale.shape[-1]
    eye = jnp.eye(d, dtype=scale.dtype)
    chol = jnp.linalg.cholesky(scale + info.eps * jnp.trace(scale) * eye)

    def ridged(_):
        ridge = jnp.maximum(jnp.sqrt(info.eps) * jnp.trace(scale) / d, info.tiny)
        return jnp.linalg.cholesky(scale + ridge * eye)

    chol = jax.lax.cond(jnp.all(jnp.isfinite(chol)), lambda _: chol, ridged, None)
    delta = _em.row_mahalanobis(chol, ys - mean)
    return (dof + mean.shape[-1]) / (dof + delta)


def _dof_statistic(nu: jax.Array, w: jax.Array, d: int) -> jax.Array:
    """h = E[log u − u | y] of rows with E-step weights ``w`` under ν."""
    half = (nu + d) / 2
    return jnp.log(w) - w + digamma(half) - jnp.log(half)


def solve_dof(stat: jax.Array) -> jax.Array:
    """ν in ``DOF_RANGE`` with log(ν/2) − ψ(ν/2) = −1 − S₃ (the left side falls
    from ∞ to 0 as ν grows), by bisection in log ν; the range's ends where the root
    lies outside it."""
    target = -1 - stat
    lo, hi = (jnp.log(jnp.asarray(v, stat.dtype)) for v in DOF_RANGE)

    def halve(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        half = jnp.exp(mid) / 2
        above = jnp.log(half) - digamma(half) > target  # ν too small
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    lo, hi = jax.lax.fori_loop(0, _BISECTIONS, halve, (lo, hi))
    return jnp.exp(0.5 * (lo + hi))


def _batch_fit(
    dof: jax.Array | None, rows: jax.Array, mask: jax.Array, iterations: int
) -> StudentT:
    """t-MLE of the rows where ``mask``: the seed, and the estimate before it exists.

    Iterates μ = Σ wᵢ yᵢ / Σ wᵢ, Σ = Σ wᵢ rᵢ rᵢᵀ / Σ wᵢ from the sample moments: the
    parameter-expanded EM of Liu, Rubin and Wu (1998), which has the t-MLE as its fixed
    point (there Σ wᵢ = n) and converges faster than dividing by n. ``dof=None``:
    each iteration also solves for ν from the rows' mean E[log u − u | y] (ECM).
    """
    m = mask.astype(rows.dtype)
    zero = jnp.zeros((), rows.dtype)
    d = rows.shape[1]

    def step(_, g):
        mean, scale, w, nu = g
        mean, scale = absorb(mean, scale, rows, zero, w / jnp.sum(w))
        raw = _weights(nu, mean, scale, rows)
        if dof is None:
            count = jnp.maximum(jnp.sum(m), 1)
            nu = solve_dof(jnp.sum(m * _dof_statistic(nu, raw, d)) / count)
        return mean, scale, raw * m, nu

    nu = jnp.asarray(_SEED_DOF if dof is None else dof, rows.dtype)
    start = (rows[0], jnp.zeros((d, d), rows.dtype), m, nu)
    mean, scale, _, nu = jax.lax.fori_loop(0, iterations + 1, step, start)
    return StudentT(mean, scale, nu)


def _average_of(state: StudentTState) -> StudentT:
    return state.average._replace(mean=state.origin + state.average.mean)


def _check_dof(dof) -> None:
    if dof is None:
        return
    if isinstance(dof, str) or not (isinstance(dof, Real | jax.Array) or hasattr(dof, "dtype")):
        raise ValueError(f"dof must be a number > 0 or None (estimated), got {dof!r}")
    if isinstance(dof, Real) and not dof > 0:
        raise ValueError(f"dof must be > 0, got {dof}")
    if isinstance(dof, Real) and math.isinf(dof):
        raise ValueError(
            "dof must be finite: the t with infinitely many degrees of freedom is the "
            "Gaussian, which jaxgauss.welford() fits exactly"
        )


def _start(g0: Gaussian, dof, n_init: int) -> StudentTState:
    dtype = g0.mean.dtype
    nu = jnp.asarray(_SEED_DOF if dof is None else dof, dtype)
    return StudentTState(
        total=jnp.ones((), dtype),
        mean=g0.mean,
        wcov=g0.cov,
        dof=nu,
        dof_stat=jnp.zeros((), dtype),
        average=StudentT(g0.mean, g0.cov, nu),
        buffer=jnp.zeros((n_init, g0.mean.shape[-1]), dtype),
        count=jnp.zeros((), jnp.int32),
        origin=jnp.zeros_like(g0.mean),
    )


def _seeded(state: StudentTState, buffer: jax.Array, dof, n_init: int, filled) -> tuple:
    """(S₀, μ, C, ν, S₃, average) of the state, or of the batch seed of the buffer
    once it is ``filled``; S₃ of a seed is the value whose solution is its ν."""

    def seed(_):
        t = _batch_fit(dof, buffer, jnp.ones(n_init, bool), _SEED_ITERATIONS)
        half = t.dof / 2
        stat = -1 - (jnp.log(half) - digamma(half))
        return jnp.ones((), buffer.dtype), t.mean, t.scale, t.dof, stat, t

    def keep(_):
        return state.total, state.mean, state.wcov, state.dof, state.dof_stat, state.average

    return jax.lax.cond(filled, seed, keep, None)


def student_t(
    dof: float | jax.Array | None,
    learning_rate: float | jax.Array | optax.Schedule | None = None,
    *,
    power: float | jax.Array = _em.DEFAULT_POWER,
    offset: float | jax.Array = _em.DEFAULT_OFFSET,
    average_power: float | jax.Array | None = _em.DEFAULT_AVERAGE_POWER,
    n_init: int = 100,
) -> Estimator:
    """Online EM for the multivariate t: a robust location and scatter, with ν given
    (``dof``) or estimated (``dof=None``).

    Each row gets the E-step weight wᵢ = (ν + d)/(ν + δᵢ), δᵢ its squared Mahalanobis
    distance under the current iterate, and enters the natural-gradient step of the
    moment estimators weighted by wᵢ (module docstring). A batch of b rows shares one
    E-step at the iterate before it. The first ``n_init`` rows seed the iterate by
    batch EM; after them, row τ = 1, 2, … takes the step

      a_τ = (τ + τ₀)^(−κ)   (default: κ = ``power`` = 0.6, τ₀ = ``offset`` = 500),

    and the estimate is the average of the iterates with weights growing like τ^η
    (η = ``average_power`` = 0, the plain average since the seed; None: the last
    iterate). One pass over n rows is then close to the batch t-MLE
    (docs/latent-models.md, "How good is one pass"). With ``dof=None`` ν is estimated
    alongside by the online ECM step of Liu and Rubin (module docstring), kept in
    ``DOF_RANGE`` = [0.5, 1000], and ``StudentT.dof`` reports its average. The
    Gaussian ``fit`` passes as ``init`` sets only d and the dtype.

    Args:
      dof: ν > 0 (may be traced), or None to estimate it.
      learning_rate: None: the default step above; a number in (0, 1]: a constant
        step; an optax schedule: a_τ = schedule(τ − 1).
      power: κ in (½, 1] of the default step. May be traced.
      offset: τ₀ ≥ 0 of the default step, in rows. May be traced.
      average_power: η ≥ 0 of the average, or None for the last iterate.
      n_init: rows fitted in batch to seed (≥ 1; with fewer than d + 1 rows the
        scatter is singular). Until they are all seen, the estimate is the batch fit
        of the rows so far.

    Returns:
      An ``Estimator`` whose ``estimate`` is a ``StudentT`` and whose states are
      ``StudentTState``.

    Raises:
      ValueError: a concrete ``dof`` ≤ 0, infinite or not a number; ``power`` outside
        (½, 1], negative ``offset`` or ``average_power``, a constant step outside
        (0, 1], ``n_init`` < 1.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgauss as jg
      >>> ys = jax.random.normal(jax.random.key(0), (2000, 2))
      >>> ys = ys.at[::20].set(1000.0)  # 5 % gross outliers
      >>> t = jg.fit(jg.student_t(None), ys).estimate  # ν estimated: small, here
      >>> bool(jnp.all(jnp.abs(t.mean) < 0.2)), bool(jnp.all(jnp.abs(ys.mean(0)) > 40))
      (True, True)
      >>> 0.5 <= float(t.dof) < 3
      True
    """
    _check_dof(dof)
    if isinstance(n_init, bool) or not isinstance(n_init, Integral) or n_init < 1:
        raise ValueError(f"n_init must be an integer >= 1, got {n_init!r}")
    _em.check_schedule(learning_rate, power, offset, average_power)

    def init(g0: Gaussian) -> StudentTState:
        return _start(g0, dof, n_init)

    def update(state: StudentTState, batch: jax.Array) -> StudentTState:
        batch = batch - state.origin
        dtype = state.mean.dtype
        buffer = _em.buffer_rows(state.buffer, state.count, batch)
        rows = state.count + jnp.arange(batch.shape[0], dtype=state.count.dtype)
        filled = (state.count < n_init) & (rows[-1] >= n_init - 1)
        total, mean, wcov, nu, stat, average = _seeded(state, buffer, dof, n_init, filled)
        if dof is not None:
            nu = jnp.asarray(dof, dtype)
        online = rows >= n_init
        tau = rows - n_init + 1
        steps = _em.online_steps(tau, online, dtype, learning_rate, power, offset)
        w = _weights(nu, mean, total * wcov, batch)
        total, mean, wcov = _em.weighted_absorb(total, mean, wcov, batch, steps, w)
        if dof is None:
            keep, alphas = step_weights(steps)
            stat = keep * stat + jnp.sum(alphas * _dof_statistic(nu, w, batch.shape[1]))
            nu = jnp.where(jnp.any(online), solve_dof(stat), nu)
        rho = _em.average_weight(tau, online, average_power, dtype)
        average = _em.running_average(average, StudentT(mean, total * wcov, nu), rho)
        count = state.count + batch.shape[0]
        return StudentTState(total, mean, wcov, nu, stat, average, buffer, count, state.origin)

    def before_seed(state: StudentTState) -> StudentT:
        mask = jnp.arange(n_init) < state.count
        # ν from the state, not the closure: a traced ν must not leak into this trace
        t = _batch_fit(None if dof is None else state.dof, state.buffer, mask, _SEED_ITERATIONS)
        return t._replace(mean=state.origin + t.mean)

    def estimate(state: StudentTState) -> StudentT:
        # Branches built once per estimator, so that an eager call hits lax.cond's cache.
        return jax.lax.cond(state.count >= n_init, _average_of, before_seed, state)

    return Estimator(init=init, update=update, estimate=estimate, is_valid=all_finite)
