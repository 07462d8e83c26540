"""The Gaussian pytree and its closed-form quantities.

Every matrix function here goes through a Cholesky factor: no inverse is formed,
log-determinants come from the factor's diagonal (log det Σ = 2 Σᵢ log Lᵢᵢ).

A moment estimate can be singular: the MLE of n ≤ d rows, a constant column, a
feature that is a sum of others. A Cholesky factor of such a matrix either fails (NaN)
or, when rounding leaves it barely positive, succeeds with a tiny pivot whose log
dominates every density. ``allow_singular=True`` switches the density, distance,
entropy and precision to scipy's degenerate-Gaussian semantics instead: an
eigendecomposition Σ = V diag(s) Vᵀ, eigenvalues at or below a tolerance treated as
exact zeros, the density taken on the support (the span of the kept eigenvectors)
with the pseudo-determinant, and −inf off it. That path is not the default because
``gradient_ascent`` differentiates the log-likelihood, and eigenvector derivatives are
unstable where eigenvalues are close; the Cholesky path is what ``jax.grad`` and
``cookbook_gradients`` agree on.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve, solve_triangular

# The Gaussian and its functions are exported at the top level (jaxgauss.Gaussian,
# jaxgauss.log_likelihood, ...); this module's own public names are the building blocks.
__all__ = ["check_gaussian", "kl_divergence_float64", "rank_tolerance"]


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


def _whiten(g: Gaussian, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The Cholesky factor L of Σ and z = L⁻¹(y − μ), shape (..., d)."""
    chol = jnp.linalg.cholesky(g.cov)
    r = jnp.asarray(y) - g.mean
    return chol, solve_triangular(chol, r[..., None], lower=True)[..., 0]


def rank_tolerance(cov: jax.Array) -> jax.Array:
    """The eigenvalue cutoff below which ``allow_singular=True`` treats an eigenvalue
    of ``cov`` (..., d, d) as zero: c · ε · maxᵢ |sᵢ|, with ε the dtype's machine
    epsilon and c = 10⁶ for float64, 10³ for float32 (scipy's ``_eigvalsh_to_eps``,
    also what ``scipy.stats.multivariate_normal`` uses). For float64 that is
    2.2 × 10⁻¹⁰ of the largest variance; for float32, 1.2 × 10⁻⁴.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> float(jg.gaussian.rank_tolerance(jnp.diag(jnp.array([4.0, 0.0], jnp.float32))))
      0.000476...
    """
    s = jnp.linalg.eigvalsh(cov)
    return _tolerance(s)


def _tolerance(s: jax.Array) -> jax.Array:
    factor = 1e6 if s.dtype == jnp.float64 else 1e3
    return factor * jnp.finfo(s.dtype).eps * jnp.max(jnp.abs(s), axis=-1)


class _Spectral(NamedTuple):
    """Σ = V diag(s) Vᵀ with the eigenvalues above the tolerance kept (scipy's ``_PSD``)."""

    vecs: jax.Array  # V, (..., d, d)
    kept: jax.Array  # sᵢ > tolerance, (..., d) bool
    root: jax.Array  # V diag(s⁺)^½, the pseudo-inverse's square root, (..., d, d)
    factor: jax.Array  # V diag(s_kept)^½: Σ's square root on the support, (..., d, d)
    log_pdet: jax.Array  # Σᵢ log sᵢ over the kept eigenvalues, (...)
    rank: jax.Array  # number of kept eigenvalues, (...)
    tol: jax.Array  # the tolerance, (...)
    psd: jax.Array  # no eigenvalue below −tolerance, (...)


def spectral(cov: jax.Array) -> _Spectral:
    s, vecs = jnp.linalg.eigh(cov)
    tol = _tolerance(s)
    kept = s > tol[..., None]
    safe = jnp.where(kept, s, 1)
    root = vecs * jnp.where(kept, 1 / jnp.sqrt(safe), 0)[..., None, :]
    factor = vecs * jnp.where(kept, jnp.sqrt(safe), 0)[..., None, :]
    log_pdet = jnp.sum(jnp.where(kept, jnp.log(safe), 0), axis=-1)
    psd = jnp.min(s, axis=-1) >= -tol
    return _Spectral(vecs, kept, root, factor, log_pdet, jnp.sum(kept, axis=-1), tol, psd)


def _pseudo_mahalanobis(sp: _Spectral, r: jax.Array) -> jax.Array:
    """rᵀ Σ⁺ r = ‖(V diag(s⁺)^½)ᵀ r‖² for r (..., d)."""
    return jnp.sum((r[..., None, :] @ sp.root)[..., 0, :] ** 2, axis=-1)


def _log_likelihood_singular(g: Gaussian, y: jax.Array) -> jax.Array:
    sp = spectral(g.cov)
    r = jnp.asarray(y) - g.mean
    # scipy's support test: the length of r's component in the null space against
    # 10³ × the eigenvalue tolerance.
    off = (r[..., None, :] @ sp.vecs)[..., 0, :]
    residual = jnp.sqrt(jnp.sum(jnp.where(sp.kept, 0, off) ** 2, axis=-1))
    logpdf = -0.5 * (sp.rank * math.log(2.0 * math.pi) + sp.log_pdet + _pseudo_mahalanobis(sp, r))
    logpdf = jnp.where(residual < 1e3 * sp.tol, logpdf, -jnp.inf)
    return jnp.where(sp.psd, logpdf, jnp.nan)


def log_likelihood(g: Gaussian, y: jax.Array, allow_singular: bool = False) -> jax.Array:
    """Log-density log N(y | μ, Σ), computed through the Cholesky factor Σ = L Lᵀ.

    log N(y | μ, Σ) = −½‖L⁻¹(y − μ)‖² − Σᵢ log Lᵢᵢ − (d/2) log 2π.

    With ``allow_singular=True`` it is ``scipy.stats.multivariate_normal(μ, Σ,
    allow_singular=True).logpdf``: from Σ = V diag(s) Vᵀ, the eigenvalues above
    ``rank_tolerance(Σ)`` are kept (rank r), and

      log N(y) = −½ (r log 2π + Σ_kept log sᵢ + (y − μ)ᵀ Σ⁺ (y − μ))

    on the support μ + span(V_kept), −inf off it (y's component in the null space
    longer than 10³ × the tolerance, as scipy). For an SPD Σ both paths agree.

    Args:
      g: the Gaussian, mean (..., d), cov (..., d, d); or a ``StudentT`` or
        ``Mixture``, dispatched to its own ``log_likelihood`` method.
      y: points, shape (..., d); leading axes broadcast against ``g``'s.
      allow_singular: a Python bool (static): the pseudo-determinant density.

    Returns:
      Log-densities, shape (...). Default path: NaN if Σ is not positive definite
      to rounding; a Σ that is singular in exact arithmetic but positive definite
      after rounding (a rotated rank-deficient matrix) gives a finite but meaningless
      value dominated by log of a tiny pivot (13.1 where scipy says −4.16 in the
      rotated rank-3 example of tests/test_gaussian.py): use ``allow_singular=True``
      for such covariances. ``allow_singular=True``: NaN if Σ has an eigenvalue below
      −tolerance (not positive semidefinite; scipy raises there).

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> float(jg.log_likelihood(jg.Gaussian(jnp.zeros(1), jnp.eye(1)), jnp.zeros(1)))
      -0.918938...
      >>> g = jg.Gaussian(jnp.zeros(2), jnp.diag(jnp.array([1.0, 0.0])))  # a line
      >>> jg.log_likelihood(g, jnp.array([[0.0, 0.0], [0.0, 1.0]]), allow_singular=True).tolist()
      [-0.918938..., -inf]
    """
    if not isinstance(g, Gaussian) and hasattr(g, "log_likelihood"):
        return g.log_likelihood(y)
    if allow_singular:
        return _log_likelihood_singular(g, y)
    chol, z = _whiten(g, y)
    half_logdet = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    return -0.5 * jnp.sum(z**2, axis=-1) - half_logdet - half_log_2pi(g.mean.shape[-1])


def mahalanobis(g: Gaussian, y: jax.Array, allow_singular: bool = False) -> jax.Array:
    """The SQUARED Mahalanobis distance (y − μ)ᵀ Σ⁻¹ (y − μ) = ‖L⁻¹(y − μ)‖², as
    scikit-learn's ``EmpiricalCovariance.mahalanobis`` (not its square root, which
    ``scipy.spatial.distance.mahalanobis`` returns).

    Args:
      g: the Gaussian, mean (..., d), cov (..., d, d).
      y: points, shape (..., d); leading axes broadcast against ``g``'s.
      allow_singular: use the pseudo-inverse Σ⁺ (eigenvalues at or below
        ``rank_tolerance`` dropped): y's component off the support is ignored, as
        scikit-learn's ``pinvh``-based precision does.

    Returns:
      Squared distances, shape (...). NaN if Σ is not positive definite (default),
      or with ``allow_singular`` not positive semi-definite (as ``log_likelihood``).

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> g = jg.Gaussian(jnp.zeros(2), jnp.diag(jnp.array([4.0, 1.0])))
      >>> float(jg.mahalanobis(g, jnp.array([2.0, 1.0])))  # 2²/4 + 1²/1
      2.0
    """
    if allow_singular:
        sp = spectral(g.cov)
        distance = _pseudo_mahalanobis(sp, jnp.asarray(y) - g.mean)
        return jnp.where(sp.psd, distance, jnp.nan)  # an indefinite Σ: as log_likelihood
    return jnp.sum(_whiten(g, y)[1] ** 2, axis=-1)


def entropy(g: Gaussian, allow_singular: bool = False) -> jax.Array:
    """Differential entropy H = ½ (d (1 + log 2π) + log det Σ), in nats.

    With ``allow_singular=True``, scipy's degenerate entropy
    ½ (r (1 + log 2π) + Σ_kept log sᵢ) over the rank r support (see ``log_likelihood``).

    Returns:
      Shape (...) for a cov (..., d, d). NaN if Σ is not positive definite (default).

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> round(float(jg.entropy(jg.Gaussian(jnp.zeros(1), jnp.eye(1)))), 6)  # ½ log 2πe
      1.418939
    """
    if allow_singular:
        sp = spectral(g.cov)
        return 0.5 * (sp.rank * (1.0 + math.log(2.0 * math.pi)) + sp.log_pdet)
    chol = jnp.linalg.cholesky(g.cov)
    half_logdet = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    return half_logdet + 0.5 * g.mean.shape[-1] + half_log_2pi(g.mean.shape[-1])


def precision(g: Gaussian, allow_singular: bool = False) -> jax.Array:
    """The precision matrix Σ⁻¹, (..., d, d), exactly symmetric, by Cholesky solves
    against the identity (no explicit inverse).

    Args:
      g: the Gaussian.
      allow_singular: the pseudo-inverse Σ⁺ = V diag(1/sᵢ for kept sᵢ, else 0) Vᵀ
        (scipy's ``_PSD.pinv``; scikit-learn's ``get_precision`` uses ``pinvh``,
        whose cutoff is lower: they agree unless an eigenvalue lies between the
        two cutoffs).

    Returns:
      NaN entries if Σ is not positive definite (default).

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> jg.precision(jg.Gaussian(jnp.zeros(2), jnp.diag(jnp.array([4.0, 0.0]))), True).tolist()
      [[0.25, 0.0], [0.0, 0.0]]
    """
    if allow_singular:
        root = spectral(g.cov).root
        p = root @ jnp.swapaxes(root, -1, -2)
    else:
        chol = jnp.linalg.cholesky(g.cov)
        eye = jnp.broadcast_to(jnp.eye(g.cov.shape[-1], dtype=g.cov.dtype), g.cov.shape)
        p = cho_solve((chol, True), eye)
    return 0.5 * (p + jnp.swapaxes(p, -1, -2))


def correlation(g: Gaussian) -> jax.Array:
    """The correlation matrix Σᵢⱼ / √(Σᵢᵢ Σⱼⱼ), (..., d, d), with an exact unit
    diagonal and entries clipped to [−1, 1] (as ``np.corrcoef``). A coordinate with
    zero variance has NaN in its row and column (as ``np.corrcoef``).

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> jg.correlation(jg.Gaussian(jnp.zeros(2), jnp.array([[4.0, 1.0], [1.0, 1.0]]))).tolist()
      [[1.0, 0.5], [0.5, 1.0]]
    """
    sd = jnp.sqrt(jnp.diagonal(g.cov, axis1=-2, axis2=-1))
    scale = sd[..., :, None] * sd[..., None, :]
    corr = jnp.clip(g.cov / scale, -1, 1)
    unit = jnp.eye(g.cov.shape[-1], dtype=bool) & (scale > 0)
    return jnp.where(unit, 1, corr)


def _check_index(index, d: int, what: str) -> tuple[int, ...]:
    """A static index (an int or a 1-D sequence of ints) as sorted-as-given
    non-negative ints, with scipy's ``marginal`` checks."""
    idx = np.asarray(index)
    if idx.ndim > 1:
        raise ValueError(f"{what} must be an int or a 1-D sequence of ints, got shape {idx.shape}")
    idx = idx.reshape(-1)
    if idx.size == 0:
        raise ValueError(f"{what} is empty: give at least one coordinate")
    if idx.dtype == bool or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"{what} must hold integers, got {np.asarray(index).tolist()!r}")
    bad = idx[(idx < -d) | (idx >= d)]
    if bad.size:
        raise ValueError(f"{what} has coordinates {bad.tolist()} outside a {d}-D Gaussian")
    idx = idx % d
    if len(set(idx.tolist())) != idx.size:
        raise ValueError(f"{what} repeats a coordinate: {np.asarray(index).tolist()}")
    return tuple(idx.tolist())


def _block(cov: jax.Array, rows: tuple[int, ...], cols: tuple[int, ...]) -> jax.Array:
    return cov[..., np.asarray(rows)[:, None], np.asarray(cols)]


def marginal(g: Gaussian, index) -> Gaussian:
    """The marginal Gaussian of the coordinates ``index``, in the order given:
    N(μ[index], Σ[index, index]) (``scipy.stats.multivariate_normal.marginal``).

    Args:
      g: the Gaussian, mean (..., d), cov (..., d, d).
      index: static: an int or a sequence of distinct ints in [−d, d).

    Raises:
      ValueError: ``index`` empty, not integers, out of range or repeated.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> g = jg.Gaussian(jnp.arange(3.0), jnp.diag(jnp.array([1.0, 2.0, 3.0])))
      >>> m = jg.marginal(g, [2, 0])
      >>> m.mean.tolist(), m.cov.tolist()
      ([2.0, 0.0], [[3.0, 0.0], [0.0, 1.0]])
    """
    idx = _check_index(index, g.mean.shape[-1], "index")
    return Gaussian(g.mean[..., np.asarray(idx)], _block(g.cov, idx, idx))


def condition(g: Gaussian, index, values: jax.Array) -> Gaussian:
    """The conditional Gaussian of the coordinates NOT in ``index`` (in increasing
    order) given that those in ``index`` equal ``values``: the basis for imputing
    missing features (the conditional mean is the best guess, the conditional
    covariance its uncertainty).

    With o the other coordinates and i = ``index``,

      μ_o|i = μ_o + Σ_oi Σ_ii⁻¹ (v − μ_i),      Σ_o|i = Σ_oo − Σ_oi Σ_ii⁻¹ Σ_io,

    by the Cholesky factor L of Σ_ii: A = L⁻¹ Σ_io, Σ_o|i = Σ_oo − Aᵀ A,
    μ_o|i = μ_o + Aᵀ L⁻¹ (v − μ_i).

    Args:
      g: the Gaussian, mean (..., d), cov (..., d, d).
      index: static: the observed coordinates, an int or a sequence of distinct ints
        in [−d, d), at least one coordinate left over.
      values: the observed values, (..., k) with k = len(index), in ``index``'s order;
        leading axes broadcast against ``g``'s (many rows at once).

    Returns:
      A ``Gaussian`` with mean (..., d − k) (the broadcast of ``values``' and ``g``'s
      leading axes) and cov (g's leading axes..., d − k, d − k), which does not depend
      on the values. NaN if Σ_ii is not positive definite.

    Raises:
      ValueError: a bad ``index`` (see ``marginal``), no coordinate left, or
        ``values`` whose last axis is not k.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> g = jg.Gaussian(jnp.zeros(2), jnp.array([[1.0, 0.8], [0.8, 1.0]]))
      >>> c = jg.condition(g, [1], jnp.array([1.0]))  # y₀ given y₁ = 1
      >>> round(float(c.mean[0]), 6), round(float(c.cov[0, 0]), 6)
      (0.8, 0.36)
    """
    d = g.mean.shape[-1]
    given = _check_index(index, d, "index")
    others = tuple(j for j in range(d) if j not in given)
    if not others:
        raise ValueError("index lists every coordinate: nothing is left to condition")
    values = jnp.asarray(values)
    if values.ndim == 0 or values.shape[-1] != len(given):
        raise ValueError(
            f"values must have shape (..., {len(given)}) to match index, got {values.shape}"
        )
    chol = jnp.linalg.cholesky(_block(g.cov, given, given))
    a = solve_triangular(chol, _block(g.cov, given, others), lower=True)
    cov = _block(g.cov, others, others) - jnp.swapaxes(a, -1, -2) @ a
    w = solve_triangular(chol, (values - g.mean[..., np.asarray(given)])[..., None], lower=True)
    mean = g.mean[..., np.asarray(others)] + (jnp.swapaxes(w, -1, -2) @ a)[..., 0, :]
    return Gaussian(mean, 0.5 * (cov + jnp.swapaxes(cov, -1, -2)))


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
      >>> float(jg.gaussian.kl_divergence_float64(p, jg.Gaussian(p.mean, 2 * p.cov)))  # log 2 − ½
      0.193147...
    """
    with jax.enable_x64(True):
        return np.asarray(kl_divergence(p.astype(jnp.float64), q.astype(jnp.float64)))


def mle(ys: jax.Array, known_mean: jax.Array | None = None) -> Gaussian:
    """Batch maximum-likelihood Gaussian of rows ``ys`` (n, d): the sample mean and
    the covariance divided by n (``np.cov(ys.T, bias=True)``), by two passes.

    Args:
      ys: rows (..., n, d).
      known_mean: None, or the mean m when it is known (broadcast to (..., d); 0 for
        centred data). The covariance is then the second moment about it,
        Σᵢ (yᵢ − m)(yᵢ − m)ᵀ / n (scipy's ``multivariate_normal.fit(fix_mean=m)``,
        scikit-learn's ``assume_centered=True`` for m = 0), and the mean is m.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> jg.mle(jnp.array([[0.0], [2.0]])).cov.tolist()
      [[1.0]]
      >>> jg.mle(jnp.array([[0.0], [2.0]]), known_mean=0.0).cov.tolist()  # (0² + 2²)/2
      [[2.0]]
    """
    ys = jnp.asarray(ys)
    if known_mean is None:
        mean = jnp.mean(ys, axis=-2)
    else:
        dtype = jnp.result_type(ys.dtype, jnp.float32)
        mean = jnp.broadcast_to(jnp.asarray(known_mean, dtype), ys.shape[:-2] + ys.shape[-1:])
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


def check_shapes(g: Any, name: str) -> None:
    """Check, in Python and under ``jit`` alike, that ``g`` is a ``Gaussian`` whose
    covariance matches its mean over any leading (batch) axes: mean (..., d), cov
    (..., d, d); a ValueError naming ``name`` otherwise (the values are not looked at:
    ``check_gaussian`` does that for one concrete Gaussian)."""
    if not isinstance(g, Gaussian):
        hint = " (pass res.estimate of a fit)" if hasattr(g, "estimate") else ""
        raise ValueError(
            f"{name} must be a jaxgauss Gaussian(mean, cov){hint}, got {type(g).__name__}"
        )
    mean, cov = jnp.shape(g.mean), jnp.shape(g.cov)
    if len(mean) < 1 or cov != mean + mean[-1:]:
        raise ValueError(
            f"{name}.cov has shape {cov}; {name}.mean's {mean} needs {mean + mean[-1:]}"
        )


def check_gaussian(g: Gaussian, d: int | None = None, *, name: str = "init") -> None:
    """Validate a user-supplied Gaussian at the Python boundary.

    Raises:
      ValueError: naming the problem: not a ``Gaussian`` (a plain ``(mean, cov)``
        tuple, a string), shapes, dimension ``d`` mismatch, non-finite entries, an
        asymmetric or non-positive-definite covariance.
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
