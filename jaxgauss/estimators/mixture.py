"""Online EM for a K-component Gaussian mixture, of any of scikit-learn's covariance types.

The E-step gives each row its responsibilities

  r_k = π_k N(y | μ_k, Σ_k) / Σ_j π_j N(y | μ_j, Σ_j),

computed in log space with log-sum-exp; the complete-data statistics of component k
are then (r_k, r_k y, r_k y yᵀ), and stepwise online EM (Cappé and Moulines 2009;
``jaxgauss.estimators._em``) moves each component's weighted moments by the same
expectation-parameter step as ``natural_gradient``, with row weights a r_k, and
the mixing weights by π ← (1 − a) π + a r. All K components are updated by one
vmapped weighted Gram matmul per batch.

Seeding: the first ``n_init`` rows are buffered; k-means++ (D² sampling with the
given key, greedy as in scikit-learn) picks K centres among them, a few Lloyd iterations refine them, and the
hard clusters give the initial weights, means and covariances (each blended with
one pseudo-row of the buffer's covariance, so a cluster of fewer than d + 1 rows
still starts SPD). That seed counts as τ₀ pseudo-rows of the default step.

Components that lose all mass are kept, not re-seeded: their mixing weight decays
toward 0 while their mean and covariance stay where they were, and every covariance
used (in the E-step and the estimate) is C_k + ``reg_covar`` I, as in
scikit-learn, so it stays SPD.

Covariance types (``jaxgauss.estimators.covariance_types``): ``tied`` keeps every
component's C_k and shares Σ = Σ_k π_k C_k; ``diag`` and ``spherical`` keep only the
weighted variances (K, d), so their rows cost O(K·d). The type is static data of the
``Mixture`` pytree (not a leaf: a string leaf would break ``jit`` and stacked
snapshots, and shapes alone are ambiguous when K = d).

Model choice: ``bic`` and ``aic`` are scikit-learn's, −2 n ℓ̄ + p log n and
−2 n ℓ̄ + 2p, with ℓ̄ the mean log-likelihood of the rows and p the free parameters
(``covariance_types.n_parameters``).
"""

from __future__ import annotations

import functools
from numbers import Integral, Real
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import logsumexp

from jaxgauss.estimators import _em
from jaxgauss.estimators import covariance_types as ct
from jaxgauss.estimators.base import Estimator, all_finite
from jaxgauss.estimators.moments import absorb
from jaxgauss.gaussian import Gaussian

__all__ = ["Mixture", "MixtureState", "aic", "bic", "gaussian_mixture"]

_LLOYD_ITERATIONS = 10


class Mixture(NamedTuple):
    """A Gaussian mixture Σ_k π_k N(μ_k, Σ_k) as a pytree.

    Attributes:
      weights: mixing weights π, (K,), non-negative, summing to 1.
      means: component means μ_k, (K, d).
      covs: component covariances, SPD, shaped by ``covariance_type`` as scikit-learn's
        ``covariances_``: "full" (K, d, d), "tied" (d, d), "diag" (K, d) variances,
        "spherical" (K,) variances.
      covariance_type: "full" (the default), "tied", "diag" or "spherical"; static
        data of the pytree (its treedef), not a leaf.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgauss as jg
      >>> m = jg.Mixture(jnp.array([0.5, 0.5]), jnp.array([[-3.0], [3.0]]), jnp.ones((2, 1, 1)))
      >>> m.predict(jnp.array([[-2.0], [4.0]])).tolist()
      [0, 1]
      >>> m.sample(jax.random.key(0), 5).shape
      (5, 1)
      >>> d = jg.Mixture(m.weights, m.means, jnp.ones((2, 1)), "diag")
      >>> bool(jnp.allclose(d.log_likelihood(jnp.zeros(1)), m.log_likelihood(jnp.zeros(1))))
      True
    """

    weights: jax.Array
    means: jax.Array
    covs: jax.Array
    covariance_type: str = "full"

    def _joint(self, y: jax.Array) -> jax.Array:
        """log π_k + log N(y | μ_k, Σ_k), (..., K)."""
        y = jnp.asarray(y)
        flat = y.reshape(-1, y.shape[-1])
        densities = ct.component_log_densities(self.means, self.covs, self.covariance_type, flat)
        logp = densities + jnp.log(self.weights)
        return logp.reshape(y.shape[:-1] + (self.weights.shape[-1],))

    def log_likelihood(self, y: jax.Array) -> jax.Array:
        """log Σ_k π_k N(y | μ_k, Σ_k) at points ``y`` (..., d) -> (...), by log-sum-exp."""
        return logsumexp(self._joint(y), axis=-1)

    def responsibilities(self, y: jax.Array) -> jax.Array:
        """Posterior component probabilities r_k(y), (..., K), each row summing to 1."""
        joint = self._joint(y)
        return jnp.exp(joint - logsumexp(joint, axis=-1, keepdims=True))

    def predict(self, y: jax.Array) -> jax.Array:
        """The most likely component argmax_k r_k(y), (...) ints."""
        return jnp.argmax(self._joint(y), axis=-1)

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """n draws (n, d): a component k ~ π, then y ~ N(μ_k, Σ_k)."""
        return _sample(self, key, n)


# The covariance type is static: jit, vmap, scan and stacked snapshots see three leaves.
jax.tree_util.register_pytree_node(
    Mixture,
    lambda m: ((m.weights, m.means, m.covs), m.covariance_type),
    lambda covariance_type, leaves: Mixture(*leaves, covariance_type),
)


@functools.partial(jax.jit, static_argnames="n")
def _sample(mixture: Mixture, key: jax.Array, n: int) -> jax.Array:
    """``Mixture.sample`` as one compiled call (run op by op, a first draw compiled a
    dozen small programs, ~4 s)."""
    k_comp, k_noise = jax.random.split(key)
    comp = jax.random.categorical(k_comp, jnp.log(mixture.weights), shape=(n,))
    z = jax.random.normal(k_noise, (n, mixture.means.shape[-1]), mixture.means.dtype)
    return mixture.means[comp] + ct.noise(mixture.covs, mixture.covariance_type, comp, z)


class MixtureState(NamedTuple):
    """State of ``gaussian_mixture``.

    Attributes:
      totals: S₀ per component, the running average of its responsibilities, (K,)
        (the iterate's mixing weights are S₀ / Σ S₀).
      means: the iterate's component means, (K, d).
      covs: the iterate's responsibility-weighted covariances C_k (before
        ``reg_covar``), (K, d, d) for "full" and "tied", or their diagonals (K, d)
        for "diag" and "spherical".
      average: the estimate: the running average of the iterates, a ``Mixture``.
      buffer: the first ``n_init`` rows, (n_init, d), used to seed.
      count: rows absorbed, buffered ones included, int32.
      origin: the reference row that ``means``, ``average.means`` and the buffered
        rows are kept relative to, (d,) (``fit`` moves it to the first row, so an
        offset costs no float32 accuracy; ``jaxgauss.estimators.moments``, Frames).
    """

    totals: jax.Array
    means: jax.Array
    covs: jax.Array
    average: Mixture
    buffer: jax.Array
    count: jax.Array
    origin: jax.Array

    def reframed(self, origin: jax.Array) -> MixtureState:
        """The same state with its locations kept relative to ``origin``."""
        delta = self.origin - origin
        return self._replace(
            means=self.means + delta,
            average=self.average._replace(means=self.average.means + delta),
            buffer=self.buffer + delta,
            origin=origin,
        )


def _kmeans_plus_plus(key: jax.Array, rows: jax.Array, mask: jax.Array, k: int) -> jax.Array:
    """K centres (K, d) among the rows where ``mask`` by greedy k-means++ (as
    scikit-learn's): the first uniformly; for each next one, 2 + ⌊ln K⌋ candidates
    drawn with probability ∝ their squared distance to the nearest centre so far, and
    the candidate that most lowers the total squared distance is kept."""
    keys = jax.random.split(key, k)
    m = mask.astype(rows.dtype)
    trials = 2 + int(np.log(k))

    def pick(i, carry):
        centres, d2 = carry
        p = jnp.where(i == 0, m, d2 * m)
        p = jnp.where(jnp.sum(p) > 0, p, m)  # all rows on the centres: uniform
        cand = jax.random.choice(keys[i], rows.shape[0], (trials,), p=p / jnp.sum(p))
        new_d2 = jnp.minimum(d2, jnp.sum((rows[None] - rows[cand][:, None]) ** 2, axis=-1))
        best = jnp.argmin(jnp.sum(jnp.where(m > 0, new_d2, 0), axis=1))
        return centres.at[i].set(rows[cand[best]]), new_d2[best]

    d2 = jnp.full(rows.shape[0], jnp.inf, rows.dtype)
    return jax.lax.fori_loop(0, k, pick, (jnp.zeros((k, rows.shape[1]), rows.dtype), d2))[0]


def _hard_moments(rows: jax.Array, onehot: jax.Array, covariance_type: str) -> tuple:
    """Weights, means and state moments (``covariance_types.state_covs``'s shapes) of
    hard clusters (``onehot`` (m, K)), each blended with one pseudo-row of all rows'
    moments; "diag" and "spherical" form no d × d matrix."""
    counts = jnp.sum(onehot, axis=0)
    n = jnp.sum(counts)
    zero = jnp.zeros((), rows.dtype)
    d = rows.shape[1]
    diagonal = covariance_type in ("diag", "spherical")
    absorb_fn = ct.diagonal_absorb if diagonal else absorb
    start = jnp.zeros((d,) if diagonal else (d, d), rows.dtype)
    all_mean, all_cov = absorb_fn(rows[0], start, rows, zero, jnp.sum(onehot, axis=1) / n)

    def one(c, col):
        safe = jnp.maximum(c, 1)
        mean, cov = absorb_fn(all_mean, jnp.zeros_like(all_cov), rows, zero, col / safe)
        mean = jnp.where(c > 0, mean, all_mean)
        return mean, (c * cov + all_cov) / (c + 1)

    means, covs = jax.vmap(one, in_axes=(0, 1))(counts, onehot)
    return counts / n, means, covs


def _seed(key: jax.Array, rows: jax.Array, mask: jax.Array, k: int, covariance_type: str) -> tuple:
    """k-means++ centres, ``_LLOYD_ITERATIONS`` Lloyd steps, hard-cluster moments."""
    m = mask.astype(rows.dtype)

    def assign(centres):
        d2 = jnp.sum((rows[:, None] - centres[None]) ** 2, axis=-1)
        return jax.nn.one_hot(jnp.argmin(d2, axis=1), k, dtype=rows.dtype) * m[:, None]

    def lloyd(_, centres):
        onehot = assign(centres)
        counts = jnp.sum(onehot, axis=0)
        new = (onehot.T @ rows) / jnp.maximum(counts, 1)[:, None]
        return jnp.where(counts[:, None] > 0, new, centres)

    centres = _kmeans_plus_plus(key, rows, mask, k)
    centres = jax.lax.fori_loop(0, _LLOYD_ITERATIONS, lloyd, centres)
    return _hard_moments(rows, assign(centres), covariance_type)


def _check_mixture(init: Mixture, k: int, covariance_type: str) -> None:
    if not isinstance(init, Mixture):
        raise ValueError(f"init must be a jaxgauss.Mixture, got {type(init).__name__}")
    if init.covariance_type != covariance_type:
        raise ValueError(
            f"init is a {init.covariance_type!r} mixture but covariance_type is "
            f"{covariance_type!r}: give the same type"
        )
    weights, means, covs = (np.asarray(x) for x in (init.weights, init.means, init.covs))
    if weights.shape != (k,) or means.ndim != 2 or means.shape[0] != k:
        raise ValueError(
            f"init must have weights (K,) and means (K, d) with K = n_components = {k}, "
            f"got shapes {weights.shape} and {means.shape}"
        )
    ct.check_covs(covs, covariance_type, k, means.shape[1])
    if not all(np.all(np.isfinite(x)) for x in (weights, means, covs)):
        raise ValueError("init has non-finite entries")
    if np.any(weights < 0) or not np.isclose(weights.sum(), 1):
        raise ValueError(f"init.weights must be >= 0 and sum to 1, got {weights.tolist()}")


def _average_of(state: MixtureState) -> Mixture:
    return state.average._replace(means=state.origin + state.average.means)


def _check_settings(
    n_components: int,
    key: jax.Array | None,
    init: Mixture | None,
    n_init: int,
    reg_covar,
    covariance_type: str,
) -> tuple[int, int]:
    """K and the number of rows to buffer (0 with an ``init``), after refusing the
    settings ``gaussian_mixture`` lists under Raises (all but the step's)."""
    if isinstance(n_components, bool) or not isinstance(n_components, Integral) or n_components < 1:
        raise ValueError(f"n_components must be an integer >= 1, got {n_components!r}")
    ct.check_covariance_type(covariance_type)
    k = int(n_components)
    if init is not None:
        _check_mixture(init, k, covariance_type)
        n_init = 0
    elif key is None:
        raise ValueError("gaussian_mixture needs key= (a jax.random.key for the seeding) or init=")
    elif isinstance(n_init, bool) or not isinstance(n_init, Integral) or n_init < k:
        raise ValueError(f"n_init must be an integer >= n_components ({k}), got {n_init!r}")
    if isinstance(reg_covar, Real) and not reg_covar >= 0:
        raise ValueError(f"reg_covar must be >= 0, got {reg_covar}")
    return k, n_init


def _start_state(
    g0: Gaussian, init: Mixture | None, k: int, n_init: int, covariance_type: str
) -> MixtureState:
    """The state before any row: ``init`` in ``g0``'s dtype, or K copies of ``g0``
    with equal weights; an empty buffer of ``n_init`` rows."""
    dtype = g0.mean.dtype
    d = g0.mean.shape[-1]
    if init is None:
        weights = jnp.full((k,), 1 / k, dtype)
        means = jnp.broadcast_to(g0.mean, (k, d))
        if covariance_type in ("full", "tied"):
            moments = jnp.broadcast_to(g0.cov, (k, d, d))
        else:
            moments = jnp.broadcast_to(jnp.diagonal(g0.cov), (k, d))
        covs = ct.iterate_covs(moments, weights, covariance_type)
    else:
        weights, means, covs = (
            jnp.asarray(x, dtype) for x in (init.weights, init.means, init.covs)
        )
        if means.shape[1] != d:
            raise ValueError(f"init has dimension {means.shape[1]}, the data {d}")
        moments = ct.state_covs(covs, covariance_type, k, d)
    return MixtureState(
        totals=weights,
        means=means,
        covs=moments,
        average=Mixture(weights, means, covs, covariance_type),
        buffer=jnp.zeros((n_init, d), dtype),
        count=jnp.zeros((), jnp.int32),
        origin=jnp.zeros_like(g0.mean),
    )


def bic(mixture: Mixture | Gaussian, x: jax.Array) -> jax.Array:
    """The Bayesian information criterion of a mixture on rows ``x``, scikit-learn's
    ``GaussianMixture.bic``: −2 Σᵢ log p(xᵢ) + p log n, with p the free parameters
    (K − 1 weights, K d means and the covariances of its type: K d(d + 1)/2 "full",
    d(d + 1)/2 "tied", K d "diag", K "spherical"). Lower is better.

    Args:
      mixture: a ``Mixture`` (a ``Gaussian`` counts as one "full" component).
      x: rows (n, d), n ≥ 1.

    Returns:
      A scalar in the rows' floating dtype.

    Raises:
      ValueError: ``x`` is not (n, d) with n ≥ 1 and the mixture's d.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> m = jg.Mixture(jnp.array([1.0]), jnp.zeros((1, 1)), jnp.ones((1, 1, 1)))
      >>> x = jnp.array([[-1.0], [1.0]])
      >>> round(float(jg.bic(m, x)), 4)  # 2 (1 + log 2π) + 2 log 2: mean and variance
      7.062
    """
    mixture, x = _model_and_rows(mixture, x)
    n = x.shape[0]
    return -2 * jnp.sum(mixture.log_likelihood(x)) + _n_parameters(mixture) * jnp.log(
        jnp.asarray(n, x.dtype)
    )


def aic(mixture: Mixture | Gaussian, x: jax.Array) -> jax.Array:
    """The Akaike information criterion of a mixture on rows ``x``, scikit-learn's
    ``GaussianMixture.aic``: −2 Σᵢ log p(xᵢ) + 2p (p as in ``bic``). Lower is better.

    Args:
      mixture: a ``Mixture`` (a ``Gaussian`` counts as one "full" component).
      x: rows (n, d), n ≥ 1.

    Returns:
      A scalar in the rows' floating dtype.

    Raises:
      ValueError: ``x`` is not (n, d) with n ≥ 1 and the mixture's d.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> m = jg.Mixture(jnp.array([1.0]), jnp.zeros((1, 1)), jnp.ones((1, 1, 1)))
      >>> round(float(jg.aic(m, jnp.array([[-1.0], [1.0]]))), 4)  # 2 (1 + log 2π) + 2·2
      9.6758
    """
    mixture, x = _model_and_rows(mixture, x)
    return -2 * jnp.sum(mixture.log_likelihood(x)) + 2 * _n_parameters(mixture)


def _n_parameters(mixture: Mixture) -> int:
    k, d = mixture.means.shape
    return ct.n_parameters(k, d, mixture.covariance_type)


def _model_and_rows(mixture, x) -> tuple[Mixture, jax.Array]:
    """The model as a ``Mixture`` and the rows as a float array, checked."""
    if isinstance(mixture, Gaussian):
        mixture = Mixture(jnp.ones((1,), mixture.mean.dtype), mixture.mean[None], mixture.cov[None])
    if not isinstance(mixture, Mixture):
        raise ValueError(
            f"mixture must be a jaxgauss.Mixture or Gaussian, got {type(mixture).__name__}"
        )
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(mixture.means.dtype)
    d = mixture.means.shape[-1]
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] != d:
        raise ValueError(f"x must be rows (n, {d}) with n >= 1, got shape {x.shape}")
    return mixture, x


def gaussian_mixture(
    n_components: int,
    learning_rate: float | jax.Array | optax.Schedule | None = None,
    *,
    key: jax.Array | None = None,
    init: Mixture | None = None,
    power: float | jax.Array = _em.DEFAULT_POWER,
    offset: float | jax.Array = _em.DEFAULT_OFFSET,
    average_power: float | jax.Array | None = _em.DEFAULT_AVERAGE_POWER,
    n_init: int = 500,
    reg_covar: float | jax.Array = 1e-6,
    covariance_type: str = "full",
) -> Estimator:
    """Stepwise online EM for a mixture of ``n_components`` Gaussians.

    For each batch of b rows: the responsibilities of every row under the current
    iterate (one batched E-step, log-sum-exp), then per component the natural-gradient
    step of the moment estimators with row weights a r_k, and π ← (1 − a) π + a r̄
    (module docstring). Unless ``init`` is given, the first ``n_init`` rows seed the
    iterate (greedy k-means++ with ``key``, Lloyd steps, hard-cluster moments); after them
    row τ = 1, 2, … takes the step

      a_τ = (τ + τ₀)^(−κ)   (default: κ = ``power`` = 0.6, τ₀ = ``offset`` = 500),

    and the estimate is the average of the iterates with weights ∝ τ^η (η =
    ``average_power`` = 0, the plain Polyak–Ruppert average since the seed; None:
    the last iterate). Components that lose all mass are kept with a weight decaying
    to 0; every covariance is C_k + ``reg_covar`` I, so it stays SPD. The Gaussian
    ``fit`` passes as ``init`` sets only d and the dtype.

    Args:
      n_components: K ≥ 1.
      learning_rate: None: the default step above; a number in (0, 1]: a constant
        step; an optax schedule: a_τ = schedule(τ − 1).
      key: the PRNG key of the k-means++ seeding (required unless ``init`` is given).
      init: a ``Mixture`` to start from instead of seeding (no rows are buffered).
      power: κ in (½, 1] of the default step. May be traced.
      offset: τ₀ ≥ 0 of the default step, in rows. May be traced.
      average_power: η ≥ 0 of the average, or None for the last iterate.
      n_init: rows buffered to seed (≥ n_components). Until they are all seen, the
        estimate is the seed of the rows so far.
      reg_covar: added to every covariance's diagonal (scikit-learn's default).
      covariance_type: scikit-learn's: "full" (each component its own covariance),
        "tied" (one shared), "diag" (each its own diagonal), "spherical" (each its
        own variance); the estimate's ``covs`` have scikit-learn's shapes for it.
        "diag" and "spherical" cost O(K·d) per row, with no d × d matrix.

    Returns:
      An ``Estimator`` whose ``estimate`` is a ``Mixture`` and whose states are
      ``MixtureState``.

    Raises:
      ValueError: ``n_components`` < 1; no ``key`` and no ``init``; an ``init`` with
        wrong shapes, weights not summing to 1, non-SPD covariances or another
        covariance type; ``n_init`` < ``n_components``; a bad concrete step setting;
        a negative ``reg_covar``; an unknown ``covariance_type``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgauss as jg
      >>> truth = jg.Mixture(jnp.array([0.3, 0.7]), jnp.array([[-5.0, 0.0], [5.0, 0.0]]),
      ...                    jnp.stack([jnp.eye(2), 0.5 * jnp.eye(2)]))
      >>> ys = truth.sample(jax.random.key(1), 3000)
      >>> m = jg.fit(jg.gaussian_mixture(2, key=jax.random.key(0)), ys).estimate
      >>> order = jnp.argsort(m.means[:, 0])
      >>> [round(float(w), 1) for w in m.weights[order]], [round(float(x)) for x in m.means[order, 0]]
      ([0.3, 0.7], [-5, 5])
    """
    kind = covariance_type
    k, n_init = _check_settings(n_components, key, init, n_init, reg_covar, kind)
    _em.check_schedule(learning_rate, power, offset, average_power)
    absorb_each = jax.vmap(
        functools.partial(_em.weighted_absorb, absorb_fn=ct.absorb_moments(kind)),
        in_axes=(0, 0, 0, None, None, 1),
    )

    def iterate(totals, means, moments) -> Mixture:
        weights = totals / jnp.sum(totals)
        covs = ct.regularised(ct.iterate_covs(moments, weights, kind), kind, reg_covar)
        return Mixture(weights, means, covs, kind)

    def seed_of(buffer, mask) -> tuple:
        return _seed(key, buffer, mask, k, kind)

    def init_fn(g0: Gaussian) -> MixtureState:
        return _start_state(g0, init, k, n_init, kind)

    def update(state: MixtureState, batch: jax.Array) -> MixtureState:
        batch = batch - state.origin
        dtype = state.means.dtype
        buffer = _em.buffer_rows(state.buffer, state.count, batch)
        rows = state.count + jnp.arange(batch.shape[0], dtype=state.count.dtype)

        def seed(_):
            s = seed_of(buffer, jnp.ones(n_init, bool))
            return (*s, iterate(*s))

        def keep(_):
            return state.totals, state.means, state.covs, state.average

        if n_init:
            filled = (state.count < n_init) & (rows[-1] >= n_init - 1)
            totals, means, covs, average = jax.lax.cond(filled, seed, keep, None)
        else:
            totals, means, covs, average = keep(None)
        online = rows >= n_init
        tau = rows - n_init + 1
        steps = _em.online_steps(tau, online, dtype, learning_rate, power, offset)
        resp = iterate(totals, means, covs).responsibilities(batch)
        totals, means, covs = absorb_each(totals, means, covs, batch, steps, resp)
        rho = _em.average_weight(tau, online, average_power, dtype)
        average = _em.running_average(average, iterate(totals, means, covs), rho)
        count = state.count + batch.shape[0]
        return MixtureState(totals, means, covs, average, buffer, count, state.origin)

    def before_seed(state: MixtureState) -> Mixture:
        seed = iterate(*seed_of(state.buffer, jnp.arange(n_init) < state.count))
        return seed._replace(means=state.origin + seed.means)

    def estimate(state: MixtureState) -> Mixture:
        if n_init == 0:
            return _average_of(state)
        # Branches built once per estimator, so that an eager call hits lax.cond's cache.
        return jax.lax.cond(state.count >= n_init, _average_of, before_seed, state)

    return Estimator(init=init_fn, update=update, estimate=estimate, is_valid=all_finite)
