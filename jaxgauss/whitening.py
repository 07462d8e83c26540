"""PCA and whitening from any Gaussian: a fitted estimate, a merged or grouped one.

Everything here is one symmetric eigendecomposition Σ = V diag(s) Vᵀ (or, for the
Cholesky whitening, one Cholesky factor), so it works on moments streamed through
any estimator: no data matrix and no SVD of it (scikit-learn's ``IncrementalPCA``
keeps one of n_components rows, refuses batches smaller than that, and its ratios
can exceed 1). Eigenvalues below 0 by rounding are clipped to 0, and the ratios'
denominator is rounded up by d ε, so the explained-variance ratios sum to at most 1.

Whitening maps x to z with identity covariance; the three matrices W (z = (x − μ) W)
differ by a rotation:

| method | W | property |
| --- | --- | --- |
| ``"zca"`` | Σ^−½ = V diag(s^−½) Vᵀ | symmetric: z is closest to x − μ in mean squared distance (Mahalanobis whitening) |
| ``"pca"`` | V diag(s^−½), columns by decreasing variance | z's columns are the principal components, scaled (scikit-learn's ``PCA(whiten=True)``) |
| ``"cholesky"`` | L⁻ᵀ, Σ = L Lᵀ | triangular: z's first column depends on x's first only |

``eps`` adds ε I to Σ first (ε > 0 makes a rank-deficient Σ whitenable; ZCA with ε
is the usual regularised ZCA).
"""

from __future__ import annotations

from numbers import Integral
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from jaxgauss.gaussian import Gaussian, check_shapes, rank_tolerance

__all__: list[str] = []  # PCA, pca, whiten and unwhiten are exported at the top level

METHODS = ("zca", "pca", "cholesky")


class PCA(NamedTuple):
    """Principal components of a Gaussian, as ``jg.pca`` returns them (the names and
    meanings of scikit-learn's ``PCA`` attributes, without their trailing ``_``).

    Attributes:
      mean: μ, (..., d).
      components: the principal axes as rows, (..., k, d), by decreasing variance;
        each row's entry of largest absolute value is positive (the first such entry
        when several tie), as scikit-learn's ``svd_flip`` does for ``PCA``.
      explained_variance: the variance along each axis (the eigenvalues of Σ,
        clipped at 0), (..., k).
      explained_variance_ratio: each as a fraction of tr Σ, (..., k); they sum to at
        most 1 (with every component, to 1 − d ε: the denominator is rounded up).

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> p = jg.pca(jg.Gaussian(jnp.zeros(3), jnp.diag(jnp.array([1.0, 4.0, 2.0]))), 2)
      >>> p.components.shape, p.explained_variance.tolist()
      ((2, 3), [4.0, 2.0])
    """

    mean: jax.Array
    components: jax.Array
    explained_variance: jax.Array
    explained_variance_ratio: jax.Array


def _check_gaussian(g, name: str = "g") -> Gaussian:
    check_shapes(g, name)
    return g.astype(jnp.result_type(g.mean, g.cov, jnp.float32))


def _spectrum(cov: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Eigenvalues by decreasing size, clipped at 0, and the eigenvectors as rows with
    the sign convention of ``PCA.components``: ((..., d), (..., d, d))."""
    s, vecs = jnp.linalg.eigh(0.5 * (cov + jnp.swapaxes(cov, -1, -2)))
    s, rows = jnp.maximum(s[..., ::-1], 0), jnp.swapaxes(vecs[..., :, ::-1], -1, -2)
    largest = jnp.argmax(jnp.abs(rows), axis=-1)
    signs = jnp.sign(jnp.take_along_axis(rows, largest[..., None], axis=-1))
    return s, rows * jnp.where(signs == 0, 1, signs)


def pca(g: Gaussian, n_components: int | None = None) -> PCA:
    """Principal component analysis of a Gaussian: Σ's eigenvectors by decreasing
    eigenvalue.

    Fit the moments with the divisor you want: scikit-learn's ``PCA`` divides by
    n − 1, which ``jg.fit(jg.welford(ddof=1), X).estimate`` matches. Works on any
    Gaussian (merged shards, a grouped fit's, with leading axes) and under ``jit``.

    Args:
      g: a Gaussian, mean (..., d), cov (..., d, d) symmetric PSD.
      n_components: how many leading components to keep (static), 1 ≤ k ≤ d; None
        keeps all d. The ratios are fractions of the whole tr Σ either way.

    Returns:
      A ``PCA(mean, components, explained_variance, explained_variance_ratio)``;
      components are rows, each with its largest-magnitude entry positive.

    Raises:
      ValueError: ``g`` is not a ``Gaussian`` or its shapes disagree;
        ``n_components`` is not an integer in [1, d].

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> p = jg.pca(jg.Gaussian(jnp.zeros(2), jnp.diag(jnp.array([1.0, 3.0]))))
      >>> p.components.tolist(), [round(r, 6) for r in p.explained_variance_ratio.tolist()]
      ([[0.0, 1.0], [1.0, 0.0]], [0.75, 0.25])
    """
    g = _check_gaussian(g)
    d = g.mean.shape[-1]
    if n_components is None:
        n_components = d
    if isinstance(n_components, bool) or not isinstance(n_components, Integral):
        raise ValueError(f"n_components must be an integer or None, got {n_components!r}")
    if not 1 <= n_components <= d:
        raise ValueError(f"n_components must be in [1, {d}] (the dimension), got {n_components}")
    s, rows = _spectrum(g.cov)
    # The denominator rounded up by d ε (a relative bias of d ε, 1e-14 in float64 at
    # d = 64): each ratio rounds up by at most ε/2 and the sum of the eigenvalues down
    # by (d − 1) ε/2, so without it the ratios could add up past 1.
    total = jnp.sum(s, axis=-1, keepdims=True) * (1 + d * jnp.finfo(s.dtype).eps)
    ratio = s / jnp.where(total > 0, total, 1)
    k = n_components
    return PCA(g.mean, rows[..., :k, :], s[..., :k], ratio[..., :k])


def _check_method(method, eps) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not isinstance(eps, jax.core.Tracer) and not np.all(np.asarray(eps) >= 0):
        raise ValueError(f"eps must be >= 0, got {eps}")


def _check_points(name: str, x, d: int) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[-1] != d:
        raise ValueError(f"{name} must have shape (..., {d}) to match g, got {x.shape}")
    return x


def _scaled_spectrum(g: Gaussian, eps):
    """(√(s + ε), eigenvector rows, ok): ok is False where s + ε is within the rank
    tolerance of 0 (a concrete such Σ is refused here, naming ``eps``)."""
    s, rows = _spectrum(g.cov)
    s = s + eps
    ok = s[..., -1] > rank_tolerance(g.cov)
    if not isinstance(ok, jax.core.Tracer) and not bool(jnp.all(ok)):
        raise ValueError(
            f"g.cov is singular (smallest eigenvalue {float(jnp.min(s - eps)):.3g}): whitening "
            "divides by its square root; pass eps > 0 (Σ + eps·I is whitened instead)"
        )
    root = jnp.where(ok[..., None], jnp.sqrt(jnp.where(s > 0, s, 1)), jnp.nan)
    return root, rows


def _cholesky(g: Gaussian, eps) -> jax.Array:
    """L with L Lᵀ = Σ + ε I; NaN where a pivot² is within the rank tolerance of 0
    (a concrete such Σ is refused here, naming ``eps``)."""
    d = g.mean.shape[-1]
    chol = jnp.linalg.cholesky(g.cov + jnp.asarray(eps)[..., None, None] * jnp.eye(d))
    pivots = jnp.diagonal(chol, axis1=-2, axis2=-1) ** 2
    ok = jnp.all(pivots > rank_tolerance(g.cov)[..., None], axis=-1)  # False on NaN too
    if not isinstance(ok, jax.core.Tracer) and not bool(jnp.all(ok)):
        raise ValueError(
            "g.cov + eps·I is singular (not positive definite): the Cholesky whitening "
            "divides by its factor; pass eps > 0"
        )
    return jnp.where(ok[..., None, None], chol, jnp.nan)


def whiten(g: Gaussian, x: jax.Array, method: str = "zca", eps=0.0) -> jax.Array:
    """Whitened points z = (x − μ) W, whose covariance under ``g`` is the identity.

    ``"zca"``: W = Σ^−½ (symmetric; of all whitenings, z stays closest to x − μ in
    mean squared distance). ``"pca"``: W = V diag(s^−½) with columns by decreasing
    variance, as scikit-learn's ``PCA(whiten=True).transform`` (and ``jg.pca``'s
    sign convention). ``"cholesky"``: W = L⁻ᵀ with Σ = L Lᵀ, by a triangular solve.
    The inverse is ``unwhiten``.

    Args:
      g: the Gaussian, mean (..., d), cov (..., d, d).
      x: points (..., d); leading axes broadcast against ``g``'s.
      method: ``"zca"``, ``"pca"`` or ``"cholesky"``.
      eps: ε ≥ 0 added to Σ's diagonal first (whitening Σ + ε I); needed when Σ is
        singular.

    Returns:
      z, shape of the broadcast (..., d). Under ``jit``, NaN where Σ + ε I is singular.

    Raises:
      ValueError: a bad ``method``, a negative ``eps``, ``x`` of another dimension,
        or (outside ``jit``) a singular Σ + ε I, which says to pass ``eps`` > 0.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> g = jg.Gaussian(jnp.ones(2), jnp.diag(jnp.array([4.0, 9.0])))
      >>> jg.whiten(g, jnp.array([3.0, 4.0])).tolist()  # (3 − 1)/2, (4 − 1)/3
      [1.0, 1.0]
    """
    g = _check_gaussian(g)
    _check_method(method, eps)
    r = _check_points("x", x, g.mean.shape[-1]) - g.mean
    if method == "cholesky":
        return solve_triangular(_cholesky(g, eps), r[..., None], lower=True)[..., 0]
    root, rows = _scaled_spectrum(g, eps)
    coords = jnp.einsum("...j,...ij->...i", r, rows) / root  # principal coordinates, scaled
    if method == "pca":
        return coords
    return jnp.einsum("...i,...ij->...j", coords, rows)


def unwhiten(g: Gaussian, z: jax.Array, method: str = "zca", eps=0.0) -> jax.Array:
    """The inverse of ``whiten``: x = z W⁻¹ + μ with the same ``method`` and ``eps``
    (``"zca"``: z Σ^½ + μ; ``"pca"``: z diag(s^½) Vᵀ + μ; ``"cholesky"``: z Lᵀ + μ).
    Also a sampler: ``unwhiten(g, standard normal draws)`` draws from ``g``.

    Args:
      g: the Gaussian, mean (..., d), cov (..., d, d).
      z: whitened points (..., d).
      method: ``"zca"``, ``"pca"`` or ``"cholesky"``, as given to ``whiten``.
      eps: as given to ``whiten``.

    Returns:
      x, shape of the broadcast (..., d).

    Raises:
      ValueError: as ``whiten``.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> g = jg.Gaussian(jnp.ones(2), jnp.diag(jnp.array([4.0, 9.0])))
      >>> jg.unwhiten(g, jnp.array([1.0, 1.0])).tolist()
      [3.0, 4.0]
    """
    g = _check_gaussian(g)
    _check_method(method, eps)
    z = _check_points("z", z, g.mean.shape[-1])
    if method == "cholesky":
        return jnp.einsum("...j,...ij->...i", z, _cholesky(g, eps)) + g.mean
    root, rows = _scaled_spectrum(g, eps)
    coords = z if method == "pca" else jnp.einsum("...j,...ij->...i", z, rows)
    return jnp.einsum("...i,...ij->...j", coords * root, rows) + g.mean
