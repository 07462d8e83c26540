"""The pooled (within-class) covariance against scikit-learn's discriminant analyses
on the wine data (178 rows, 13 features, 3 classes), float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_wine
from sklearn.discriminant_analysis import (
    LinearDiscriminantAnalysis,
    QuadraticDiscriminantAnalysis,
)

import jaxgauss as jg


def _scale(cov):
    return np.abs(cov).max()


def test_pooled_equals_lda_covariance():
    """To 1e-10 of the largest entry: both are sums of 178 products of numbers of the
    data's size (up to 1680), so rounding is ~n ε |x|² ≈ 1e-11 relative."""
    x, y = load_wine(return_X_y=True)
    state = jg.fit(jg.welford(), jnp.asarray(x), groups=y).state
    ref = LinearDiscriminantAnalysis(solver="lsqr", store_covariance=True).fit(x, y).covariance_
    pooled = np.asarray(jg.pooled_covariance(state))
    np.testing.assert_allclose(pooled, ref, rtol=0, atol=1e-10 * _scale(ref))
    assert np.array_equal(pooled, pooled.T)


@pytest.mark.slow
def test_weighted_state_counts_weights_as_repeated_rows():
    """Integer weights equal repeated rows: LDA of the rows repeated is the reference."""
    x, y = load_wine(return_X_y=True)
    w = np.random.default_rng(0).integers(0, 4, size=len(y))
    state = jg.fit(jg.welford(weighted=True), jnp.asarray(x), groups=y, weights=w).state
    rep = np.repeat(np.arange(len(y)), w)
    ref = LinearDiscriminantAnalysis(solver="lsqr", store_covariance=True)
    ref = ref.fit(x[rep], y[rep]).covariance_
    np.testing.assert_allclose(jg.pooled_covariance(state), ref, rtol=0, atol=1e-10 * _scale(ref))


@pytest.mark.slow
def test_grouped_fit_equals_qda_covariances():
    """QDA's covariance_ divides each class's scatter by nₖ in scikit-learn 1.9 (its
    maximum-likelihood change, PR #33626): welford(); by nₖ − 1 before: welford(ddof=1)."""
    import sklearn

    ddof = 0 if tuple(int(p) for p in sklearn.__version__.split(".")[:2]) >= (1, 9) else 1
    x, y = load_wine(return_X_y=True)
    est = jg.fit(jg.welford(ddof=ddof), jnp.asarray(x), groups=y).estimate
    ref = np.stack(QuadraticDiscriminantAnalysis(store_covariance=True).fit(x, y).covariance_)
    np.testing.assert_allclose(est.cov, ref, rtol=0, atol=1e-10 * _scale(ref))


@pytest.mark.slow
def test_under_jit_and_empty_classes():
    x, y = load_wine(return_X_y=True)
    state = jg.fit(jg.welford(), jnp.asarray(x), groups=y, n_groups=4).state  # class 3: empty
    ref = LinearDiscriminantAnalysis(solver="lsqr", store_covariance=True).fit(x, y).covariance_
    np.testing.assert_allclose(
        jax.jit(jg.pooled_covariance)(state), ref, rtol=0, atol=1e-10 * _scale(ref)
    )


@pytest.mark.slow
def test_bad_input_names_the_argument():
    x = jnp.ones((4, 2))
    with pytest.raises(ValueError, match="pooling needs a leading classes axis"):
        jg.pooled_covariance(jg.fit(jg.welford(), x).state)
    with pytest.raises(ValueError, match="state must be the WelfordState"):
        jg.pooled_covariance(jg.Gaussian(jnp.zeros(2), jnp.eye(2)))
