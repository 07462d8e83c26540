"""The four covariance types of a Gaussian mixture, with scikit-learn's meanings.

| type | ``Mixture.covs`` | component k's covariance | parameters |
| --- | --- | --- | --- |
| ``"full"`` | (K, d, d) | Σ_k | K d(d + 1)/2 |
| ``"tied"`` | (d, d) | Σ, shared | d(d + 1)/2 |
| ``"diag"`` | (K, d) | diag(σ²_k) | K d |
| ``"spherical"`` | (K,) | σ²_k I | K |

Each function here takes the covariances in their type's shape and the type as a
static string, so ``diag`` and ``spherical`` never form a d × d matrix: their
densities, samples and online-EM statistics cost O(K·d) per row. The online EM keeps
per-component moments whose shape ``state_shape`` gives: ``full`` and ``tied`` keep
each component's weighted covariance C_k (K, d, d) (``tied`` shares Σ = Σ_k π_k C_k,
scikit-learn's tied M-step), ``diag`` and ``spherical`` its weighted variances
(K, d) (``spherical`` averages them over the d coordinates, as scikit-learn does).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxgauss.estimators import _em
from jaxgauss.estimators.moments import absorb

__all__ = [
    "COVARIANCE_TYPES",
    "absorb_moments",
    "check_covariance_type",
    "check_covs",
    "component_log_densities",
    "covs_shape",
    "diagonal_absorb",
    "iterate_covs",
    "n_parameters",
    "noise",
    "regularised",
    "state_covs",
]

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def check_covariance_type(covariance_type) -> None:
    """Refuse anything but the four names."""
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"covariance_type must be one of {', '.join(map(repr, COVARIANCE_TYPES))}, "
            f"got {covariance_type!r}"
        )


def covs_shape(covariance_type: str, k: int, d: int) -> tuple[int, ...]:
    """The shape of ``Mixture.covs`` for a type."""
    return {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[covariance_type]


def check_covs(covs: np.ndarray, covariance_type: str, k: int, d: int) -> None:
    """Shape and positive definiteness of concrete covariances of a type."""
    shape = covs_shape(covariance_type, k, d)
    if covs.shape != shape:
        raise ValueError(
            f"covs of a {covariance_type!r} mixture must have shape {shape}, got {covs.shape}"
        )
    if covariance_type in ("full", "tied"):
        sym = 0.5 * (covs + np.swapaxes(covs, -1, -2))
        ok = np.all(np.linalg.eigvalsh(sym) > 0)
    else:
        ok = np.all(covs > 0)
    if not ok:
        raise ValueError(f"covs must be positive definite ({covariance_type!r} covariances)")


def n_parameters(k: int, d: int, covariance_type: str) -> int:
    """Free parameters of a K-component mixture in d dimensions (scikit-learn's
    ``GaussianMixture._n_parameters``): K − 1 weights, K d means, and the covariances."""
    cov = {
        "full": k * d * (d + 1) // 2,
        "tied": d * (d + 1) // 2,
        "diag": k * d,
        "spherical": k,
    }[covariance_type]
    return int(cov + k * d + k - 1)


def component_log_densities(
    means: jax.Array, covs: jax.Array, covariance_type: str, ys: jax.Array
) -> jax.Array:
    """log N(yᵢ | μ_k, Σ_k) for rows ``ys`` (b, d): (b, K)."""
    d = means.shape[-1]
    const = 0.5 * d * math.log(2 * math.pi)
    if covariance_type in ("diag", "spherical"):
        var = covs if covariance_type == "diag" else covs[:, None] * jnp.ones_like(means)
        r = ys[:, None, :] - means[None]  # (b, K, d): O(K·d) per row
        delta = jnp.sum(r * r / var[None], axis=-1)
        return -0.5 * delta - 0.5 * jnp.sum(jnp.log(var), axis=-1) - const
    if covariance_type == "tied":
        chol = jnp.linalg.cholesky(covs)
        delta = jax.vmap(lambda m: _em.row_mahalanobis(chol, ys - m), out_axes=1)(means)
        return -0.5 * delta - _em.half_log_det(chol) - const
    chols = jnp.linalg.cholesky(covs)
    delta = jax.vmap(_em.row_mahalanobis, in_axes=(0, 0), out_axes=1)(
        chols, ys[None] - means[:, None]
    )
    return -0.5 * delta - _em.half_log_det(chols)[None] - const


def noise(covs: jax.Array, covariance_type: str, comp: jax.Array, z: jax.Array) -> jax.Array:
    """Σ_{comp_i}^½ zᵢ for standard normal rows ``z`` (n, d) of components ``comp``."""
    if covariance_type == "diag":
        return jnp.sqrt(covs[comp]) * z
    if covariance_type == "spherical":
        return jnp.sqrt(covs[comp])[:, None] * z
    if covariance_type == "tied":
        return z @ jnp.linalg.cholesky(covs).T
    return jnp.einsum("nij,nj->ni", jnp.linalg.cholesky(covs)[comp], z)


def regularised(covs: jax.Array, covariance_type: str, reg_covar) -> jax.Array:
    """``covs`` + ``reg_covar`` on every variance (scikit-learn's ``reg_covar``)."""
    reg = jnp.asarray(reg_covar, covs.dtype)
    if covariance_type in ("full", "tied"):
        return covs + reg * jnp.eye(covs.shape[-1], dtype=covs.dtype)
    return covs + reg


def state_covs(covs: jax.Array, covariance_type: str, k: int, d: int) -> jax.Array:
    """The online EM's per-component moments (``iterate_covs``'s inverse, up to the
    tie): C_k (K, d, d) for full and tied, variances (K, d) for diag and spherical."""
    if covariance_type == "tied":
        return jnp.broadcast_to(covs, (k, d, d))
    if covariance_type == "spherical":
        return jnp.broadcast_to(covs[:, None], (k, d))
    return covs


def iterate_covs(moments: jax.Array, weights: jax.Array, covariance_type: str) -> jax.Array:
    """A mixture's covariances from the per-component moments and mixing weights:
    tied Σ = Σ_k π_k C_k; spherical σ²_k = mean_j of the variances (scikit-learn's
    M-steps); full and diag as they are."""
    if covariance_type == "tied":
        return jnp.einsum("k,kij->ij", weights, moments)
    if covariance_type == "spherical":
        return jnp.mean(moments, axis=-1)
    return moments


def diagonal_absorb(
    mean: jax.Array, var: jax.Array, batch: jax.Array, keep: jax.Array, weights: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """``moments.absorb``'s update of the diagonal only: rows (b, d) with row weights
    ``weights`` (b,) and the old state's weight ``keep``, O(b·d):

      s = Σᵢ wᵢ eᵢ,  μ' = μ + s,  σ²' = σ² − W σ² + Σᵢ wᵢ eᵢ² − s²,   eᵢ = yᵢ − μ,

    with the rows shifted by their own weighted mean when ``keep`` = 0."""
    forget = keep == 0
    total = jnp.sum(weights)
    some = total > 0
    centre = jnp.where(some, weights @ batch / jnp.where(some, total, 1), batch[0])
    shift = jnp.where(forget, centre, mean)
    e = batch - shift
    s = weights @ e
    sq = weights @ (e * e)
    old = jnp.where(forget, 0, var - total * var)
    return shift + s, old + sq - s * s


def absorb_moments(covariance_type: str):
    """The per-component absorb of a type's state moments (``_em.weighted_absorb``'s
    ``absorb`` argument)."""
    if covariance_type in ("diag", "spherical"):
        return diagonal_absorb
    return absorb
