"""Synthetic truths and data streams."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxgauss.gaussian import Gaussian

__all__ = ["random_truth", "sample"]


def random_truth(key: jax.Array, d: int, condition: float = 1.0, dtype=None) -> Gaussian:
    """A random Gaussian in dimension ``d`` with condition number ``condition``.

    The mean is drawn from N(0, I); the covariance is Q diag(λ) Qᵀ with Q a
    Haar-random rotation and λ log-spaced in [1, condition].

    Args:
      key: a JAX PRNG key.
      d: dimension.
      condition: ratio of the largest to the smallest eigenvalue, ≥ 1.
      dtype: float dtype (default: JAX's default float, float32 unless x64 is on).

    Example:
      >>> import jax, jaxgauss as jg
      >>> truth = jg.streams.random_truth(jax.random.key(0), 3, condition=100.0)
      >>> round(float(jax.numpy.linalg.cond(truth.cov)))
      100
    """
    if d < 1:
        raise ValueError(f"dimension d must be >= 1, got {d}")
    if not condition >= 1.0:
        raise ValueError(f"condition must be >= 1, got {condition}")
    dtype = dtype or jnp.zeros(()).dtype
    k_rot, k_mean = jax.random.split(key)
    q, r = jnp.linalg.qr(jax.random.normal(k_rot, (d, d), dtype))
    q = q * jnp.sign(jnp.diagonal(r))  # sign fix makes Q Haar-distributed
    eig = jnp.logspace(0.0, jnp.log10(jnp.asarray(condition, dtype)), d, dtype=dtype)
    cov = (q * eig) @ q.T
    return Gaussian(jax.random.normal(k_mean, (d,), dtype), 0.5 * (cov + cov.T))


def sample(key: jax.Array, truth: Gaussian, n: int) -> jax.Array:
    """``n`` independent draws from ``truth``, shape (n, d), in the truth's dtype.

    Example:
      >>> import jax, jaxgauss as jg
      >>> g = jg.Gaussian(jax.numpy.zeros(2), jax.numpy.eye(2))
      >>> jg.streams.sample(jax.random.key(0), g, 5).shape
      (5, 2)
    """
    chol = jnp.linalg.cholesky(truth.cov)
    z = jax.random.normal(key, (n, truth.mean.shape[-1]), truth.mean.dtype)
    return truth.mean + z @ chol.T
