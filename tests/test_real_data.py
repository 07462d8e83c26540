"""Real tables shipped inside scikit-learn: singular and badly scaled covariances.

digits (1797 × 64): several pixels are constant, so the MLE covariance is singular.
breast cancer (569 × 30): feature variances span about twelve orders of magnitude.
Both are also fed in class-sorted order, the order in which first-order updates drift
furthest from the MLE.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxgauss as jg

datasets = pytest.importorskip("sklearn.datasets")

TABLES = {
    "digits": datasets.load_digits,
    "breast_cancer": datasets.load_breast_cancer,
}


def _table(name, order):
    bunch = TABLES[name]()
    x = bunch.data.astype(np.float64)
    return x[np.argsort(bunch.target, kind="stable")] if order == "class-sorted" else x


@pytest.mark.parametrize("name", list(TABLES))
@pytest.mark.parametrize("order", ["as shipped", "class-sorted"])
@pytest.mark.parametrize("estimator", ["welford", "natural_gradient"])
def test_moment_estimators_equal_numpy_on_real_tables(name, order, estimator):
    x = _table(name, order)
    est = jg.welford() if estimator == "welford" else jg.natural_gradient()
    res = jg.fit(est, x)  # float64: conftest enables x64
    ref = np.cov(x.T, bias=True)
    # Relative to each entry's scale √(Σᵢᵢ Σⱼⱼ): entries of tiny-variance features are
    # compared at their own scale, not at the largest feature's (1e-12 vs 1e6).
    scale = np.sqrt(np.outer(np.diag(ref), np.diag(ref))) + 1e-300
    np.testing.assert_array_less(np.abs(np.asarray(res.estimate.cov) - ref), 1e-10 * scale + 1e-300)
    np.testing.assert_allclose(res.estimate.mean, x.mean(0), rtol=1e-11, atol=1e-12)
    if name == "digits":
        constant = np.flatnonzero(x.std(0) == 0)
        assert constant.size > 0
        # a constant column has exactly zero variance: singular, yet no divergence
        assert np.all(np.asarray(res.estimate.cov)[constant][:, constant] == 0)
        assert int(res.diverged_at) == -1


def test_first_order_fisher_step_is_off_the_mle_on_sorted_data():
    """The additive natural step Σ += a(r rᵀ − Σ) with a = 1/t centres each row at the
    previous mean; on class-sorted data it ends measurably away from the MLE, while the
    exact step does not."""
    x = _table("breast_cancer", "class-sorted")
    mean, cov = np.zeros(x.shape[1]), np.eye(x.shape[1])
    for t, y in enumerate(x, start=1):
        r = y - mean
        mean = mean + r / t
        cov = cov + (np.outer(r, r) - cov) / t
    ref = np.cov(x.T, bias=True)
    rel = np.abs(cov - ref).max() / np.abs(ref).max()
    exact = jg.fit(jg.natural_gradient(), x).estimate.cov
    assert rel > 1e-2  # first-order step: measured 3.3 % of max |Σ| off the MLE
    assert np.abs(np.asarray(exact) - ref).max() / np.abs(ref).max() < 1e-12


def test_prior_weight_gives_a_usable_covariance_on_singular_data():
    x = _table("digits", "as shipped")[:40]  # d = 64 > n = 40, and constant pixels
    init = jg.Gaussian(jnp.asarray(x.mean(0)), jnp.eye(64) * x.var())
    res = jg.fit(jg.welford(prior_weight=1.0), x, init)
    assert bool(jg.is_spd(res.estimate.cov))
    assert np.all(np.isfinite(np.asarray(jg.log_likelihood(res.estimate, x))))
