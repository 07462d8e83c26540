"""Moment estimators with a known mean (``known_mean=``), against scipy's
``multivariate_normal.fit(fix_mean=...)`` and scikit-learn's
``empirical_covariance(assume_centered=True)``.

Ported (rewritten) from scipy's ``test_multivariate.py``
(TestMultivariateNormal.test_fit_fix_mean: the fixed-mean fit has a lower likelihood
than the free one, and a small perturbation of its covariance lowers it further) and
scikit-learn's ``test_covariance.py`` (test_covariance's centred case).
"""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.covariance import empirical_covariance
from sklearn.datasets import load_diabetes

import jaxgauss as jg


def _fix_mean_case():
    rng = np.random.default_rng(4385269356937404)
    loc = rng.random(3)
    a = rng.random((3, 3))
    samples = multivariate_normal.rvs(mean=loc, cov=a @ a.T, size=100, random_state=rng)
    return loc, samples, rng


@pytest.mark.parametrize("batch_size", [1, 7])
def test_welford_known_mean_is_scipys_fix_mean_fit(batch_size):
    loc, samples, rng = _fix_mean_case()
    res = jg.fit(jg.welford(known_mean=loc), samples, batch_size=batch_size)
    mean_fix, cov_fix = multivariate_normal.fit(samples, fix_mean=loc)
    np.testing.assert_array_equal(res.estimate.mean, loc)
    np.testing.assert_allclose(res.estimate.cov, cov_fix, rtol=1e-12)
    # scipy's own checks of that fit, on ours
    mean_free, cov_free = multivariate_normal.fit(samples)
    logp_fix = multivariate_normal.logpdf(samples, loc, np.asarray(res.estimate.cov)).sum()
    assert logp_fix < multivariate_normal.logpdf(samples, mean_free, cov_free).sum()
    a = rng.random((3, 3))
    perturbed = np.asarray(res.estimate.cov) + 1e-8 * a @ a.T
    assert multivariate_normal.logpdf(samples, loc, perturbed).sum() < logp_fix


def test_every_moment_estimator_and_mle_take_known_mean():
    loc, samples, _ = _fix_mean_case()
    samples = samples[:64]  # a power of two: one compiled piece per estimator
    _, cov_fix = multivariate_normal.fit(samples, fix_mean=loc)
    for est in (
        jg.natural_gradient(known_mean=loc),  # = welford
        jg.exponential(jnp.inf, known_mean=loc),  # infinite half-life = welford
    ):
        g = jg.fit(est, samples).estimate
        np.testing.assert_array_equal(g.mean, loc)
        np.testing.assert_allclose(g.cov, cov_fix, rtol=1e-12)
    np.testing.assert_allclose(jg.mle(samples, known_mean=loc).cov, cov_fix, rtol=1e-12)
    # a constant step: Σₜ = (1 − a) Σₜ₋₁ + a (yₜ − m)(yₜ − m)ᵀ from Σ₀ = I, by hand
    a, cov = 0.1, np.eye(3)
    for y in samples:
        cov = (1 - a) * cov + a * np.outer(y - loc, y - loc)
    g = jg.fit(jg.natural_gradient(a, known_mean=loc), samples).estimate
    np.testing.assert_allclose(g.cov, cov, rtol=1e-10)


def test_assume_centered_is_known_mean_zero_and_merges():
    # scikit-learn's test_covariance, centred case, on the diabetes table
    X = load_diabetes().data[:384]  # shards of 256 and 128 rows: one program each
    ref = empirical_covariance(X, assume_centered=True)
    est = jg.welford(known_mean=0.0)
    a = jg.fit(est, X[:256]).state
    b = jg.fit(est, X[256:]).state
    # the state keeps its mean relative to an origin row; the estimate's mean is m
    np.testing.assert_allclose(est.estimate(a).mean, np.zeros(X.shape[1]), atol=1e-15)
    np.testing.assert_allclose(jg.merge(a, b).cov, ref, rtol=1e-11)


def test_known_mean_float32_and_bad_values():
    loc, samples, _ = _fix_mean_case()
    g = jg.fit(jg.welford(known_mean=loc), samples.astype(np.float32)).estimate
    assert g.cov.dtype == jnp.float32
    _, cov_fix = multivariate_normal.fit(samples, fix_mean=loc)
    # float32 data and mean: ~1e-7 relative rounding per row, 100 rows.
    np.testing.assert_allclose(g.cov, cov_fix, rtol=1e-5)
    for bad, msg in [(np.nan, "non-finite"), (np.ones((2, 2)), "scalar"), ("a", "scalar")]:
        with pytest.raises(ValueError, match=msg):
            jg.welford(known_mean=bad)
    with pytest.raises(ValueError, match="2 entries"):
        jg.fit(jg.welford(known_mean=np.zeros(2)), samples)
