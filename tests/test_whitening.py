"""PCA and whitening against scikit-learn's ``PCA`` on its own data sets (digits,
wine), fitted by ``welford(ddof=1)`` as ``PCA`` divides by n − 1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits, load_wine
from sklearn.decomposition import PCA

import jaxgauss as jg


def _fit(x):
    return jg.fit(jg.welford(ddof=1), jnp.asarray(x, jnp.float64)).estimate


@pytest.mark.slow
def test_pca_equals_scikit_learn_on_digits():
    """Digits: 1797 rows × 64 pixels, some constant (zero variance). Variances and ratios
    to 1e-8 relative where nonzero (eigh of Σ versus an SVD of the centred data: both
    backward stable, so eigenvalue errors are ε λ_max ≈ 4e-14 absolute, 1e-10 relative
    at the smallest nonzero one); the zero ones to 1e-12 λ_max. Components: those whose
    eigenvalue is apart from its neighbours by a relative gap ≥ 1e-3 (perturbation of
    an eigenvector ≈ ε λ_max/gap ≤ 1e-10) to 1e-8, up to sign, and with the sign of
    scikit-learn's svd_flip."""
    x = load_digits().data
    ref = PCA().fit(x)
    ours = jg.pca(_fit(x))
    ev, ref_ev = np.asarray(ours.explained_variance), ref.explained_variance_
    top = ref_ev[0]
    nonzero = ref_ev > 1e-9 * top
    np.testing.assert_allclose(ev[nonzero], ref_ev[nonzero], rtol=1e-8)
    np.testing.assert_allclose(ev[~nonzero], 0, atol=1e-12 * top)
    ratio = np.asarray(ours.explained_variance_ratio)
    np.testing.assert_allclose(ratio[nonzero], ref.explained_variance_ratio_[nonzero], rtol=1e-8)
    assert ratio.sum() <= 1.0
    gaps = np.minimum(
        np.abs(np.diff(ref_ev, prepend=np.inf)), np.abs(np.diff(ref_ev, append=-np.inf))
    )
    separated = nonzero & (gaps >= 1e-3 * ref_ev)
    assert separated.sum() >= 40
    comps = np.asarray(ours.components)[separated]
    np.testing.assert_allclose(comps, ref.components_[separated], atol=1e-8)
    np.testing.assert_allclose(ours.mean, ref.mean_, rtol=1e-12)


@pytest.mark.slow
def test_n_components_and_ratios_never_above_one():
    x = load_wine().data
    g = _fit(x)
    ref = PCA(n_components=3).fit(x)
    ours = jg.pca(g, n_components=3)
    assert ours.components.shape == (3, 13)
    np.testing.assert_allclose(
        ours.explained_variance_ratio, ref.explained_variance_ratio_, rtol=1e-8
    )
    # Many random spectra, float32 and float64: the rounded sum never exceeds 1.
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for _ in range(20):
            a = rng.normal(size=(7, 7)) * rng.lognormal(size=7)
            full = jg.pca(jg.Gaussian(jnp.zeros(7, dtype), jnp.asarray(a @ a.T, dtype)))
            assert float(jnp.sum(full.explained_variance_ratio)) <= 1.0


@pytest.mark.parametrize(
    "method",
    [
        "zca",
        pytest.param("pca", marks=pytest.mark.slow),
        pytest.param("cholesky", marks=pytest.mark.slow),
    ],
)
def test_whitened_rows_have_identity_covariance(method):
    """Wine (13 features of scales 0.1 to 1000, so Σ's condition number is ~1e7): the
    whitened rows' covariance (same divisor as the fit) is I to 1e-10 (float64), and
    ``unwhiten`` inverts ``whiten`` to 1e-10 relative."""
    x = load_wine().data
    g = jg.mle(jnp.asarray(x))  # = jg.fit(jg.welford(), x).estimate, to rounding
    z = np.asarray(jg.whiten(g, x, method=method))
    np.testing.assert_allclose(np.cov(z.T, bias=True), np.eye(13), atol=1e-10)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-10)
    back = np.asarray(jg.unwhiten(g, z, method=method))
    np.testing.assert_allclose(back, x, rtol=1e-10, atol=1e-10 * np.abs(x).max())


@pytest.mark.slow
def test_pca_whitening_equals_scikit_learn_and_zca_is_closest():
    x = load_wine().data
    g = _fit(x)
    ref = PCA(whiten=True).fit(x).transform(x)
    z = np.asarray(jg.whiten(g, x, method="pca"))
    np.testing.assert_allclose(z, ref, atol=1e-8)
    # ZCA: of the three, the closest to the centred (standardised) input.
    xs = (x - x.mean(0)) / x.std(0)
    gs = jg.fit(jg.welford(), jnp.asarray(xs)).estimate
    dist = {
        m: np.mean(np.sum((np.asarray(jg.whiten(gs, xs, method=m)) - xs) ** 2, axis=1))
        for m in ("zca", "pca", "cholesky")
    }
    assert dist["zca"] < dist["pca"] and dist["zca"] < dist["cholesky"], dist


@pytest.mark.slow
def test_rank_deficient_needs_eps():
    x = np.random.default_rng(1).normal(size=(50, 3))
    x = np.c_[x, x[:, 0] + x[:, 1]]  # a column that is a sum of two others
    g = jg.fit(jg.welford(), jnp.asarray(x)).estimate
    for method in ("zca", "pca", "cholesky"):
        with pytest.raises(ValueError, match="eps > 0"):
            jg.whiten(g, x, method=method)
    z = jg.whiten(g, x, method="zca", eps=1e-6)
    assert bool(jnp.all(jnp.isfinite(z)))
    # Under jit the singular Σ gives NaN rather than an error.
    assert bool(jnp.all(jnp.isnan(jax.jit(jg.whiten)(g, x))))


@pytest.mark.slow
def test_batched_and_float32():
    """Leading axes: a grouped fit's Gaussians, each PCA equal to its own; float32
    Gaussians give float32 results."""
    x, y = load_wine(return_X_y=True)
    est = jg.fit(jg.welford(ddof=1), jnp.asarray(x), groups=y).estimate
    batched = jax.jit(jg.pca)(est)
    for k in range(3):
        one = jg.pca(jg.Gaussian(est.mean[k], est.cov[k]))
        np.testing.assert_allclose(
            batched.explained_variance[k], one.explained_variance, rtol=1e-12
        )
        np.testing.assert_allclose(
            np.abs(batched.components[k, :3]), np.abs(one.components[:3]), atol=1e-10
        )
    g32 = jg.Gaussian(jnp.zeros(2, jnp.float32), jnp.eye(2, dtype=jnp.float32))
    assert jg.pca(g32).components.dtype == jnp.float32
    assert jg.whiten(g32, np.ones((3, 2), np.float32)).dtype == jnp.float32


def test_bad_input_names_the_argument():
    g = jg.Gaussian(jnp.zeros(2), jnp.eye(2))
    with pytest.raises(ValueError, match="n_components must be in"):
        jg.pca(g, n_components=3)
    with pytest.raises(ValueError, match="n_components must be an integer"):
        jg.pca(g, n_components=1.5)
    with pytest.raises(ValueError, match="g must be a jaxgauss Gaussian"):
        jg.pca((g.mean, g.cov))
    with pytest.raises(ValueError, match="method must be one of"):
        jg.whiten(g, jnp.ones(2), method="svd")
    with pytest.raises(ValueError, match="x must have shape"):
        jg.whiten(g, jnp.ones(3))
    with pytest.raises(ValueError, match="eps must be >= 0"):
        jg.unwhiten(g, jnp.ones(2), eps=-1.0)
