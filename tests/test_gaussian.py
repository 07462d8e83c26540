"""jaxgauss.gaussian against independent references (scipy, numpy, finite differences)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

import jaxgauss as jg


def _truth(d, condition, seed=0, dtype=jnp.float64):
    return jg.streams.random_truth(jax.random.key(seed), d, condition, dtype=dtype)


@pytest.mark.parametrize("d", [1, 2, 10, 50])
@pytest.mark.parametrize("condition", [1.0, 1e3, 1e6])
def test_log_likelihood_matches_scipy(d, condition):
    g = _truth(d, condition)
    ys = jg.streams.sample(jax.random.key(1), g, 7)
    ref = multivariate_normal(np.asarray(g.mean), np.asarray(g.cov)).logpdf(np.asarray(ys))
    # float64 Cholesky of a matrix with condition 1e6 loses about 6 digits of the
    # 16 only inside the solve; the log-density itself stays accurate to ~1e-10.
    np.testing.assert_allclose(jg.log_likelihood(g, ys), ref, rtol=1e-8)


def test_log_likelihood_batch_shapes_and_float32():
    g = _truth(3, 10.0, dtype=jnp.float32)
    ys = jg.streams.sample(jax.random.key(1), g, 12).reshape(3, 4, 3)
    out = jg.log_likelihood(g, ys)
    assert out.shape == (3, 4) and out.dtype == jnp.float32
    ref = multivariate_normal(np.asarray(g.mean), np.asarray(g.cov)).logpdf(np.asarray(ys))
    # float32 has ~7 digits; the quadratic form of condition-10 data keeps ~6.
    np.testing.assert_allclose(out, ref, rtol=1e-5)
    assert jg.log_likelihood(g, ys[0, 0]).shape == ()


@pytest.mark.parametrize(
    "d", [pytest.param(1, marks=pytest.mark.slow), 3, pytest.param(8, marks=pytest.mark.slow)]
)
def test_autodiff_equals_cookbook(d):
    g = _truth(d, 100.0, seed=d)
    y = jg.streams.sample(jax.random.key(2), g, 1)[0]
    auto = jax.grad(jg.log_likelihood)(g, y)
    book = jg.cookbook_gradients(g, y)
    np.testing.assert_allclose(auto.mean, book.mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(auto.cov, book.cov, rtol=1e-9, atol=1e-12)


def test_cookbook_against_finite_differences():
    g = _truth(3, 10.0, seed=3)
    y = jg.streams.sample(jax.random.key(4), g, 1)[0]
    book = jg.cookbook_gradients(g, y)
    eps = 1e-6
    rng = np.random.default_rng(0)
    for _ in range(5):
        dm = rng.normal(size=3)
        dc = rng.normal(size=(3, 3))
        dc = dc + dc.T  # symmetric directions: Σ stays symmetric
        plus = jg.log_likelihood(jg.Gaussian(g.mean + eps * dm, g.cov + eps * dc), y)
        minus = jg.log_likelihood(jg.Gaussian(g.mean - eps * dm, g.cov - eps * dc), y)
        fd = (plus - minus) / (2 * eps)
        analytic = jnp.dot(book.mean, dm) + jnp.sum(book.cov * dc)
        # central differences: O(eps²) truncation + O(1e-16/eps) rounding ≈ 1e-10
        np.testing.assert_allclose(fd, analytic, rtol=1e-6, atol=1e-8)


def _kl_reference(p, q):
    mp, sp, mq, sq = (np.asarray(x, np.float64) for x in (p.mean, p.cov, q.mean, q.cov))
    d = mp.shape[0]
    sq_inv = np.linalg.inv(sq)
    dm = mq - mp
    return 0.5 * (
        np.trace(sq_inv @ sp)
        + dm @ sq_inv @ dm
        - d
        + np.linalg.slogdet(sq)[1]
        - np.linalg.slogdet(sp)[1]
    )


@pytest.mark.parametrize("d", [1, 4, 12])
def test_kl_closed_form_and_zero(d):
    p, q = _truth(d, 100.0, seed=1), _truth(d, 30.0, seed=2)
    np.testing.assert_allclose(jg.kl_divergence(p, q), _kl_reference(p, q), rtol=1e-9)
    np.testing.assert_allclose(jg.kl_divergence(p, p), 0.0, atol=1e-10)
    assert jg.kl_divergence(p, q) > 0


def test_kl_broadcasts_over_leading_axes():
    p = _truth(3, 10.0)
    truths = jax.vmap(lambda k: jg.streams.random_truth(k, 3, 10.0, dtype=jnp.float64))
    qs = jax.jit(truths)(jax.random.split(jax.random.key(5), 4))  # one program, not each op's
    out = jg.kl_divergence(p, qs)
    assert out.shape == (4,)
    for i in range(4):
        q = jg.Gaussian(qs.mean[i], qs.cov[i])
        np.testing.assert_allclose(out[i], _kl_reference(p, q), rtol=1e-9)


@pytest.mark.parametrize("d", [1, 5])
def test_mle_matches_numpy(d):
    ys = jg.streams.sample(jax.random.key(6), _truth(d, 50.0), 200)
    g = jg.mle(ys)
    np.testing.assert_allclose(g.mean, np.mean(np.asarray(ys), axis=0), rtol=1e-12)
    ref = np.atleast_2d(np.cov(np.asarray(ys).T, bias=True))
    np.testing.assert_allclose(g.cov, ref, rtol=1e-10)
    np.testing.assert_array_equal(g.cov, g.cov.T)


def test_is_spd():
    assert bool(jg.is_spd(jnp.eye(2)))
    assert not bool(jg.is_spd(jnp.array([[1.0, 2.0], [2.0, 1.0]])))
    assert not bool(jg.is_spd(jnp.full((2, 2), jnp.nan)))


@pytest.mark.parametrize(
    "g, message",
    [
        (jg.Gaussian(np.zeros((2, 1)), np.eye(2)), "shape"),
        (jg.Gaussian(np.zeros(2), np.eye(3)), "shape"),
        (jg.Gaussian(np.zeros(2), np.array([[1.0, np.inf], [np.inf, 1.0]])), "non-finite"),
        (jg.Gaussian(np.array([np.nan, 0.0]), np.eye(2)), "non-finite"),
        (jg.Gaussian(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]])), "not symmetric"),
        (jg.Gaussian(np.zeros(2), np.array([[1.0, 2.0], [2.0, 1.0]])), "not positive definite"),
    ],
)
def test_check_gaussian_names_the_problem(g, message):
    with pytest.raises(ValueError, match=message):
        jg.gaussian.check_gaussian(g)


def test_check_gaussian_dimension():
    with pytest.raises(ValueError, match="dimension 2 but the data have dimension 3"):
        jg.gaussian.check_gaussian(jg.Gaussian(np.zeros(2), np.eye(2)), 3)


def test_pseudo_mahalanobis_of_an_indefinite_covariance_is_nan():
    """Issue 25 (smaller): mahalanobis(allow_singular=True) was finite on an
    indefinite Σ where log_likelihood is NaN; both are NaN now, a PSD one finite."""
    g = jg.Gaussian(jnp.zeros(2), jnp.array([[1.0, 0.0], [0.0, -1.0]]))
    y = jnp.array([1.0, 1.0])
    assert np.isnan(jg.mahalanobis(g, y, allow_singular=True))
    assert np.isnan(jg.log_likelihood(g, y, allow_singular=True))
    psd = jg.Gaussian(jnp.zeros(2), jnp.array([[1.0, 0.0], [0.0, 0.0]]))
    assert float(jg.mahalanobis(psd, y, allow_singular=True)) == 1.0
