"""Bijections between unconstrained parameters and a ``Gaussian``.

Each parameterisation maps a ``Params`` pytree (``mean`` (d,) and ``matrix``) to a
Gaussian and back, and evaluates the log-likelihood directly in its own coordinates:

| name | ``matrix`` holds | every value SPD? | log-likelihood needs |
| --- | --- | --- | --- |
| "covariance" | Σ itself (symmetric) | no: an update can leave the cone | a Cholesky of Σ |
| "cholesky" | L with log-diagonal, Σ = L Lᵀ | yes | one triangular solve |
| "precision" | U with log-diagonal, Σ⁻¹ = U Uᵀ | yes | matmuls only |
| "diagonal" | log-variances (d,) | yes | elementwise ops |

For the triangular ones only the lower triangle of ``matrix`` is used; its diagonal
holds logarithms, so any real matrix is a valid point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve, solve_triangular

from jaxgauss.gaussian import Gaussian, half_log_2pi, is_spd, log_likelihood

__all__ = ["Params", "Parameterization", "PARAMETERIZATIONS", "get_parameterization"]


class Params(NamedTuple):
    """Unconstrained parameters: ``mean`` (d,) and ``matrix`` ((d, d), or (d,) for
    "diagonal"), interpreted by a ``Parameterization``."""

    mean: jax.Array
    matrix: jax.Array


class Parameterization(NamedTuple):
    """A bijection ``Params`` ↔ ``Gaussian`` and the log-likelihood in ``Params``.

    Attributes:
      name: one of "covariance", "cholesky", "precision", "diagonal".
      from_gaussian: Gaussian -> Params.
      to_gaussian: Params -> Gaussian.
      log_likelihood: (Params, y (..., d)) -> (...).
      is_valid: Params -> bool array: a cheap check (no factorisation except for
        "covariance") that the parameters map to a finite, positive-definite
        Gaussian. Only "covariance" can leave the SPD cone; the others can still
        overflow (a log-diagonal entry beyond the float's exponent range).
      fisher_inverse: (Params θ, gradient g in θ) -> F(θ)⁻¹ g, the Gaussian's Fisher
        metric pulled back to θ and inverted in closed form (the derivations are in
        ``jaxgauss.preconditioners``); None where no closed form is known.
    """

    name: str
    from_gaussian: Callable[[Gaussian], Params]
    to_gaussian: Callable[[Params], Gaussian]
    log_likelihood: Callable[[Params, jax.Array], jax.Array]
    is_valid: Callable[[Params], jax.Array]
    fisher_inverse: Callable[[Params, Params], Params] | None = None


def _log_diag_to_tri(m: jax.Array) -> jax.Array:
    """Lower-triangular factor whose diagonal is exp(diag m)."""
    return jnp.tril(m, -1) + jnp.diag(jnp.exp(jnp.diagonal(m)))


def _tri_to_log_diag(chol: jax.Array) -> jax.Array:
    return jnp.tril(chol, -1) + jnp.diag(jnp.log(jnp.diagonal(chol)))


def symmetric(a: jax.Array) -> jax.Array:
    return 0.5 * (a + a.T)


def _natural_log_factor(m: jax.Array, g: jax.Array) -> jax.Array:
    """Natural gradient for a lower factor T with log-diagonal ``m`` (A = T Tᵀ).

    With T = tril(m, −1) + diag(exp(diag m)) and dT = T X (X lower triangular),
    dA = T (X + Xᵀ) Tᵀ and the Gaussian's Fisher metric ½ tr(A⁻¹ dA A⁻¹ dA) equals
    ‖X + Xᵀ‖²_F / 2 = Σ_{i>j} X_ij² + 2 Σ_i X_ii²: diagonal in X. The gradient g in
    ``m`` pulls back to G_T (diagonal divided by T_ii), pairs with X as tril(Tᵀ G_T),
    and the metric's inverse halves that diagonal: X = Φ(Tᵀ G_T). Back in ``m``,
    dm = tril(T X, −1) + diag(X) (dT_ii = T_ii dm_ii = T_ii X_ii).
    """
    t = _log_diag_to_tri(m)
    g_t = jnp.tril(g, -1) + jnp.diag(jnp.diagonal(g) * jnp.exp(-jnp.diagonal(m)))
    h = t.T @ g_t  # its lower triangle depends only on tril(g_t)
    x_diag = 0.5 * jnp.diagonal(h)
    x = jnp.tril(h, -1) + jnp.diag(x_diag)
    return jnp.tril(t @ x, -1) + jnp.diag(x_diag)


# --- covariance: the raw Σ ------------------------------------------------


def _cov_from(g: Gaussian) -> Params:
    return Params(g.mean, symmetric(g.cov))


def _cov_to(p: Params) -> Gaussian:
    return Gaussian(p.mean, p.matrix)


def _cov_ll(p: Params, y: jax.Array) -> jax.Array:
    return log_likelihood(Gaussian(p.mean, p.matrix), y)


def _cov_valid(p: Params) -> jax.Array:
    return is_spd(p.matrix)


def _cov_fisher_inverse(p: Params, g: Params) -> Params:
    # F⁻¹ on (μ, Σ): (Σ g_μ, 2 Σ G Σ), applied through Σ's Cholesky factor. G carries
    # Σ⁻¹ twice (it came from solves with this same factor); L (Lᵀ G L) Lᵀ undoes those
    # solves, while matmuls with Σ itself lose Σ's small eigenvalues once κ(Σ) ≳ 10⁷
    # (float64). Symmetrised so the iterate stays exactly symmetric (an asymmetric G
    # acts through its symmetric part).
    chol = jnp.linalg.cholesky(p.matrix)
    return Params(
        chol @ (chol.T @ g.mean), symmetric(2.0 * chol @ (chol.T @ g.matrix @ chol) @ chol.T)
    )


# --- cholesky: Σ = L Lᵀ, log-diagonal ------------------------------------------------


def _chol_from(g: Gaussian) -> Params:
    return Params(g.mean, _tri_to_log_diag(jnp.linalg.cholesky(g.cov)))


def _chol_to(p: Params) -> Gaussian:
    chol = _log_diag_to_tri(p.matrix)
    return Gaussian(p.mean, chol @ chol.T)


def _chol_valid(p: Params) -> jax.Array:
    return jnp.all(jnp.isfinite(_chol_to(p).cov))


def _chol_fisher_inverse(p: Params, g: Params) -> Params:
    chol = _log_diag_to_tri(p.matrix)
    return Params(chol @ (chol.T @ g.mean), _natural_log_factor(p.matrix, g.matrix))


def _chol_ll(p: Params, y: jax.Array) -> jax.Array:
    chol = _log_diag_to_tri(p.matrix)
    r = jnp.asarray(y) - p.mean
    z = solve_triangular(chol, r.reshape(-1, r.shape[-1]).T, lower=True)
    quad = jnp.sum(z**2, axis=0).reshape(r.shape[:-1])
    return -0.5 * quad - jnp.sum(jnp.diagonal(p.matrix)) - half_log_2pi(p.mean.shape[-1])


# --- precision: Σ⁻¹ = U Uᵀ, log-diagonal -------------------------------------------


def _prec_from(g: Gaussian) -> Params:
    # Σ⁻¹ = L⁻ᵀ L⁻¹ is an upper-times-lower product, so its lower factor U needs a
    # second Cholesky; L⁻¹ comes from a triangular solve, not an inverse.
    d = g.mean.shape[-1]
    chol = jnp.linalg.cholesky(g.cov)
    l_inv = solve_triangular(chol, jnp.eye(d, dtype=g.cov.dtype), lower=True)
    prec = l_inv.T @ l_inv
    return Params(g.mean, _tri_to_log_diag(jnp.linalg.cholesky(symmetric(prec))))


def _prec_to(p: Params) -> Gaussian:
    u = _log_diag_to_tri(p.matrix)
    d = p.mean.shape[-1]
    u_inv = solve_triangular(u, jnp.eye(d, dtype=u.dtype), lower=True)
    return Gaussian(p.mean, symmetric(u_inv.T @ u_inv))


def _exp_in_range(log_values: jax.Array) -> jax.Array:
    """exp(±x) neither overflows nor underflows to 0, for every entry x."""
    return jnp.all(jnp.abs(log_values) < jnp.log(jnp.finfo(log_values.dtype).max) / 2)


def _prec_valid(p: Params) -> jax.Array:
    # Σ = U⁻ᵀU⁻¹ needs a solve; bounding U's diagonal keeps both U and U⁻¹ finite on
    # the diagonal without one (the likelihood itself needs only U).
    return _exp_in_range(jnp.diagonal(p.matrix))


def _prec_fisher_inverse(p: Params, g: Params) -> Params:
    # Σ g_μ = (U Uᵀ)⁻¹ g_μ by two triangular solves; the factor's part is matmuls only
    # (the metric of Λ = U Uᵀ has the same form as that of Σ).
    u = _log_diag_to_tri(p.matrix)
    return Params(cho_solve((u, True), g.mean), _natural_log_factor(p.matrix, g.matrix))


def _prec_ll(p: Params, y: jax.Array) -> jax.Array:
    u = _log_diag_to_tri(p.matrix)
    z = (jnp.asarray(y) - p.mean) @ u
    return (
        -0.5 * jnp.sum(z**2, axis=-1)
        + jnp.sum(jnp.diagonal(p.matrix))
        - half_log_2pi(p.mean.shape[-1])
    )


# --- diagonal: log-variances ----------------------------------------------------------


def _diag_from(g: Gaussian) -> Params:
    # Projection: off-diagonal covariances are dropped.
    return Params(g.mean, jnp.log(jnp.diagonal(g.cov)))


def _diag_to(p: Params) -> Gaussian:
    return Gaussian(p.mean, jnp.diag(jnp.exp(p.matrix)))


def _diag_valid(p: Params) -> jax.Array:
    return _exp_in_range(p.matrix)


def _diag_fisher_inverse(p: Params, g: Params) -> Params:
    # F = diag(1/σ²) for μ and ½ I for s = log σ².
    return Params(jnp.exp(p.matrix) * g.mean, 2.0 * g.matrix)


def _diag_ll(p: Params, y: jax.Array) -> jax.Array:
    r = jnp.asarray(y) - p.mean
    return (
        -0.5 * jnp.sum(r**2 * jnp.exp(-p.matrix), axis=-1)
        - 0.5 * jnp.sum(p.matrix)
        - half_log_2pi(p.mean.shape[-1])
    )


PARAMETERIZATIONS: dict[str, Parameterization] = {
    "covariance": Parameterization(
        "covariance", _cov_from, _cov_to, _cov_ll, _cov_valid, _cov_fisher_inverse
    ),
    "cholesky": Parameterization(
        "cholesky", _chol_from, _chol_to, _chol_ll, _chol_valid, _chol_fisher_inverse
    ),
    "precision": Parameterization(
        "precision", _prec_from, _prec_to, _prec_ll, _prec_valid, _prec_fisher_inverse
    ),
    "diagonal": Parameterization(
        "diagonal", _diag_from, _diag_to, _diag_ll, _diag_valid, _diag_fisher_inverse
    ),
}


def get_parameterization(name: str | Parameterization) -> Parameterization:
    """Look up a parameterisation by name ("covariance", "cholesky", "precision",
    "diagonal"); a ``Parameterization`` passes through.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> p = jg.parameterizations.get_parameterization("cholesky")
      >>> g = p.to_gaussian(p.from_gaussian(jg.Gaussian(jnp.zeros(2), 2 * jnp.eye(2))))
      >>> jnp.round(g.cov, 5).tolist()
      [[2.0, 0.0], [0.0, 2.0]]
    """
    if isinstance(name, Parameterization):
        return name
    try:
        return PARAMETERIZATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown parameterization {name!r}; choose one of {sorted(PARAMETERIZATIONS)}"
        ) from None
