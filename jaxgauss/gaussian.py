"""The Gaussian pytree and its closed-form quantities.

Every matrix function here goes through a Cholesky factor: no inverse is formed,
log-determinants come from the factor's diagonal (log det Σ = 2 Σᵢ log Lᵢᵢ).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve, solve_triangular

__all__ = [
    "Gaussian",
    "log_likelihood",
    "cookbook_gradients",
    "kl_divergence",
    "kl_divergence_float64",
    "mle",
    "is_spd",
    "check_gaussian",
]


class Gaussian(NamedTuple):
    """A multivariate normal N(mean, cov) as a pytree.

    Attributes:
      mean: location, shape (..., d).
      cov: covariance, shape (..., d, d), symmetric positive (semi-)definite.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> g = jg.Gaussian(jnp.zeros(2), jnp.eye(2))
      >>> g.mean.shape, g.cov.shape
      ((2,), (2, 2))
    """

    mean: jax.Array
    cov: jax.Array

    @classmethod
    def standard(cls, d: int, dtype: Any = None) -> Gaussian:
        """N(0, I) in dimension ``d`` (dtype: JAX's default float when None).

        Example:
          >>> import jaxgauss as jg
          >>> jg.Gaussian.standard(2).cov.tolist()
          [[1.0, 0.0], [0.0, 1.0]]
        """
        dtype = jnp.zeros(()).dtype if dtype is None else dtype
        return cls(jnp.zeros(d, dtype), jnp.eye(d, dtype=dtype))

    def astype(self, dtype: Any) -> Gaussian:
        """The same Gaussian with both fields as JAX arrays of ``dtype``."""
        return Gaussian(jnp.asarray(self.mean, dtype), jnp.asarray(self.cov, dtype))


def half_log_2pi(d: int) -> float:
    """½ d log 2π: the normalising constant of a d-dimensional Gaussian log-density."""
    return 0.5 * d * math.log(2.0 * math.pi)


def log_likelihood(g: Gaussian, y: jax.Array) -> jax.Array:
    """Log-density log N(y | μ, Σ), computed through the Cholesky factor Σ = L Lᵀ.

    log N(y | μ, Σ) = −½‖L⁻¹(y − μ)‖² − Σᵢ log Lᵢᵢ − (d/2) log 2π.

    Args:
      g: the Gaussian, mean (d,), cov (d, d).
      y: points, shape (..., d).

    Returns:
      Log-densities, shape (...). NaN if ``g.cov`` is not positive definite.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> float(jg.log_likelihood(jg.Gaussian(jnp.zeros(1), jnp.eye(1)), jnp.zeros(1)))
      -0.918938...
    """
    chol = jnp.linalg.cholesky(g.cov)
    r = jnp.asarray(y) - g.mean
    z = solve_triangular(chol, r[..., None], lower=True)[..., 0]
    half_logdet = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    return -0.5 * jnp.sum(z**2, axis=-1) - half_logdet - half_log_2pi(g.mean.shape[-1])


def cookbook_gradients(g: Gaussian, y: jax.Array) -> Gaussian:
    """Closed-form gradients of ``log_likelihood(g, y)`` for one point y (d,).

    With r = y − μ (the Matrix Cookbook, eqs. 61 and 63 with symmetric Σ):

      ∇μ L = Σ⁻¹ r,        ∇Σ L = −½ (Σ⁻¹ − Σ⁻¹ r rᵀ Σ⁻¹).

    Σ⁻¹ is applied by Cholesky solves, never formed by inversion.

    Returns:
      A ``Gaussian`` pytree holding (∇μ L, ∇Σ L); it equals
      ``jax.grad(log_likelihood)(g, y)``.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> grads = jg.cookbook_gradients(jg.Gaussian(jnp.zeros(1), jnp.eye(1)), jnp.full(1, 2.0))
      >>> grads.mean.tolist(), grads.cov.tolist()  # Σ⁻¹r = 2, −½(1 − 4) = 1.5
      ([2.0], [[1.5]])
    """
    chol = jnp.linalg.cholesky(g.cov)
    eye = jnp.eye(g.mean.shape[-1], dtype=g.cov.dtype)
    precision = cho_solve((chol, True), eye)
    p_r = cho_solve((chol, True), jnp.asarray(y) - g.mean)
    grad_cov = -0.5 * (precision - jnp.outer(p_r, p_r))
    return Gaussian(p_r, 0.5 * (grad_cov + grad_cov.T))


def kl_divergence(p: Gaussian, q: Gaussian) -> jax.Array:
    """KL(p ‖ q) between two Gaussians of the same dimension d.

    KL = ½ [tr(Σq⁻¹ Σp) + (μq − μp)ᵀ Σq⁻¹ (μq − μp) − d + log det Σq − log det Σp],
    evaluated with the Cholesky factors Lp, Lq: tr(Σq⁻¹Σp) = ‖Lq⁻¹ Lp‖²_F.
    Leading batch dimensions broadcast. Infinite or NaN if q's covariance is singular.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> p = jg.Gaussian(jnp.zeros(2), jnp.eye(2))
      >>> float(jg.kl_divergence(p, p))
      0.0
    """
    lp = jnp.linalg.cholesky(p.cov)
    lq = jnp.linalg.cholesky(q.cov)
    lp, lq = jnp.broadcast_arrays(lp, lq)
    m = solve_triangular(lq, lp, lower=True)
    dmu = (q.mean - p.mean)[..., None]
    dmu = jnp.broadcast_to(dmu, lq.shape[:-1] + (1,))
    z = solve_triangular(lq, dmu, lower=True)[..., 0]
    logdet_q = 2.0 * jnp.sum(jnp.log(jnp.diagonal(lq, axis1=-2, axis2=-1)), axis=-1)
    logdet_p = 2.0 * jnp.sum(jnp.log(jnp.diagonal(lp, axis1=-2, axis2=-1)), axis=-1)
    d = p.mean.shape[-1]
    trace = jnp.sum(m**2, axis=(-2, -1))
    return 0.5 * (trace + jnp.sum(z**2, axis=-1) - d + logdet_q - logdet_p)


def kl_divergence_float64(p: Gaussian, q: Gaussian) -> np.ndarray:
    """``kl_divergence(p, q)`` computed in float64 whatever the x64 setting, as NumPy:
    the yardstick for references (demo, benchmarks), where float32 rounding of a
    near-zero KL would dominate it.

    Example:
      >>> import jaxgauss as jg
      >>> p = jg.Gaussian.standard(2)
      >>> float(jg.kl_divergence_float64(p, jg.Gaussian(p.mean, 2 * p.cov)))  # log 2 − ½
      0.193147...
    """
    with jax.enable_x64(True):
        return np.asarray(kl_divergence(p.astype(jnp.float64), q.astype(jnp.float64)))


def mle(ys: jax.Array) -> Gaussian:
    """Batch maximum-likelihood Gaussian of rows ``ys`` (n, d): the sample mean and
    the covariance divided by n (``np.cov(ys.T, bias=True)``), by two passes.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> jg.mle(jnp.array([[0.0], [2.0]])).cov.tolist()
      [[1.0]]
    """
    ys = jnp.asarray(ys)
    mean = jnp.mean(ys, axis=-2)
    r = ys - mean[..., None, :]
    cov = jnp.einsum("...ni,...nj->...ij", r, r) / ys.shape[-2]
    return Gaussian(mean, 0.5 * (cov + jnp.swapaxes(cov, -1, -2)))


def is_spd(cov: jax.Array) -> jax.Array:
    """Traced check that ``cov`` (..., d, d) is positive definite: its Cholesky
    factor exists and is finite (JAX returns NaN where the factorisation fails)."""
    chol = jnp.linalg.cholesky(cov)
    return jnp.all(jnp.isfinite(chol), axis=(-2, -1))


@jax.jit
def _factorizes(cov: jax.Array) -> jax.Array:
    return jnp.all(jnp.isfinite(jnp.linalg.cholesky(cov)))


def check_gaussian(g: Gaussian, d: int | None = None, *, name: str = "init") -> None:
    """Validate a user-supplied Gaussian at the Python boundary.

    Raises:
      ValueError: naming the problem: shapes, dimension ``d`` mismatch, non-finite
        entries, an asymmetric or non-positive-definite covariance.
    """
    if not isinstance(g, Gaussian):
        raise ValueError(f"{name} must be a jaxgauss Gaussian(mean, cov), got {type(g).__name__}")
    mean = np.asarray(g.mean)
    cov = np.asarray(g.cov)
    if mean.ndim != 1:
        raise ValueError(f"{name}.mean must have shape (d,), got shape {mean.shape}")
    k = mean.shape[0]
    if cov.shape != (k, k):
        raise ValueError(
            f"{name}.cov must have shape ({k}, {k}) to match {name}.mean, got {cov.shape}"
        )
    if d is not None and k != d:
        raise ValueError(f"{name} has dimension {k} but the data have dimension {d}")
    for part, arr in (("mean", mean), ("cov", cov)):
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise ValueError(f"{name}.{part} must be real numbers, got dtype {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}.{part} has non-finite entries")
    cov = cov.astype(np.float64)
    scale = max(np.max(np.abs(cov)), np.finfo(np.float64).tiny)
    if np.max(np.abs(cov - cov.T)) > 1e-6 * scale:
        raise ValueError(
            f"{name}.cov is not symmetric (max |Σ − Σᵀ| = {np.max(np.abs(cov - cov.T)):.3g})"
        )
    # The backend's own Cholesky (NumPy's host BLAS crashed at d = 20 000), in the
    # widest float JAX holds here: float64 with x64, else float32.
    if not bool(_factorizes(jnp.asarray(cov, jnp.zeros((), float).dtype))):
        smallest = (
            f" (smallest eigenvalue {np.linalg.eigvalsh(cov).min():.3g})" if k <= 1000 else ""
        )
        raise ValueError(f"{name}.cov is not positive definite{smallest}")
