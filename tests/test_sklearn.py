"""jaxgauss.sklearn.OnlineEmpiricalCovariance against scikit-learn's EmpiricalCovariance.

Ported (rewritten) from scikit-learn's ``sklearn/covariance/tests/test_covariance.py``:
test_covariance (diabetes table: covariance, error_norm in every variant, positive
Mahalanobis distances, one feature, one sample with its warning, the centred case) and
test_EmpiricalCovariance_validates_mahalanobis; plus ``check_estimator``. And
``OnlineGaussianMixture`` against scikit-learn's ``GaussianMixture``: given the same
parameters (set into a ``GaussianMixture``), the same densities, responsibilities,
labels, BIC and AIC; fitted in one pass, a held-out likelihood within 1 % of its
batch EM; and ``check_estimator``.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.covariance import EmpiricalCovariance, empirical_covariance
from sklearn.datasets import load_diabetes
from sklearn.mixture import GaussianMixture
from sklearn.utils.estimator_checks import check_estimator

import jaxgauss as jg
from jaxgauss.sklearn import OnlineEmpiricalCovariance, OnlineGaussianMixture

X = load_diabetes().data


@pytest.mark.slow  # scikit-learn's whole battery of estimator checks, ~40 fits
def test_check_estimator():
    started = time.perf_counter()
    check_estimator(OnlineEmpiricalCovariance())
    # compiled programs are shared per (d, piece size): ~28 compiles in all
    print(f"check_estimator took {time.perf_counter() - started:.1f} s")


def test_scikit_learns_covariance_cases():
    cov = OnlineEmpiricalCovariance().fit(X)
    emp = empirical_covariance(X)
    np.testing.assert_allclose(cov.covariance_, emp, rtol=1e-12)
    for kwargs in ({}, {"norm": "spectral"}, {"scaling": False}, {"squared": False}):
        assert cov.error_norm(emp, **kwargs) == pytest.approx(0, abs=1e-12)
    off = emp + np.eye(X.shape[1])
    sk = EmpiricalCovariance().fit(X)
    for kwargs in ({}, {"norm": "spectral"}, {"scaling": False}, {"squared": False}):
        assert cov.error_norm(off, **kwargs) == pytest.approx(sk.error_norm(off, **kwargs))
    with pytest.raises(NotImplementedError):
        cov.error_norm(emp, norm="foo")
    assert np.min(cov.mahalanobis(X)) > 0

    one = OnlineEmpiricalCovariance().fit(X[:, :1])
    np.testing.assert_allclose(one.covariance_, empirical_covariance(X[:, :1]), rtol=1e-12)
    assert one.error_norm(empirical_covariance(X[:, :1]), norm="spectral") < 1e-20

    with pytest.warns(UserWarning, match="Only one sample available"):
        single = OnlineEmpiricalCovariance().fit(np.arange(5).reshape(1, 5))
    np.testing.assert_array_equal(single.covariance_, np.zeros((5, 5)))

    centred = OnlineEmpiricalCovariance(assume_centered=True).fit(X)
    np.testing.assert_array_equal(centred.location_, np.zeros(X.shape[1]))
    np.testing.assert_allclose(
        centred.covariance_, empirical_covariance(X, assume_centered=True), rtol=1e-12
    )

    with pytest.raises(ValueError, match=f"X has 2 features, but \\w+ is expecting {X.shape[1]}"):
        cov.mahalanobis(X[:, :2])


def test_same_numbers_as_empirical_covariance():
    train, test = X[:300], X[300:]
    ours = OnlineEmpiricalCovariance().fit(train)
    sk = EmpiricalCovariance().fit(train)
    np.testing.assert_allclose(ours.location_, sk.location_, rtol=1e-13)
    np.testing.assert_allclose(ours.precision_, sk.precision_, rtol=1e-9)
    np.testing.assert_allclose(ours.mahalanobis(test), sk.mahalanobis(test), rtol=1e-9)
    np.testing.assert_allclose(ours.score(test), sk.score(test), rtol=1e-12)
    lean = OnlineEmpiricalCovariance(store_precision=False).fit(train)
    assert lean.precision_ is None
    np.testing.assert_allclose(lean.get_precision(), sk.precision_, rtol=1e-9)
    # singular: 5 rows in 8-D. scikit-learn's pinvh precision; score is -inf in both.
    few = np.random.default_rng(1).standard_normal((5, 8))
    ours, sk = OnlineEmpiricalCovariance().fit(few), EmpiricalCovariance().fit(few)
    np.testing.assert_allclose(ours.precision_, sk.precision_, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(ours.mahalanobis(few), sk.mahalanobis(few), rtol=1e-8)
    assert ours.score(few) == sk.score(few) == -np.inf


def test_partial_fit_streams_to_the_fit():
    est = OnlineEmpiricalCovariance()
    for chunk in np.array_split(X, 5):
        est.partial_fit(chunk)
    whole = OnlineEmpiricalCovariance().fit(X)
    assert est.n_samples_seen_ == whole.n_samples_seen_ == X.shape[0]
    np.testing.assert_allclose(est.covariance_, whole.covariance_, rtol=1e-12)
    # The diabetes columns are centred: each mean is ~1e-17, pure rounding, and
    # chunked and whole fits sum the rows in different orders (blocks of the engine's
    # scan), so they agree to a few ulps of the rows' own scale, not to 1e-17.
    ulps = 4 * np.finfo(np.float64).eps * np.abs(X).max()
    np.testing.assert_allclose(est.location_, whole.location_, rtol=1e-12, atol=ulps)
    with pytest.raises(ValueError, match="features"):
        est.partial_fit(X[:3, :4])
    est.fit(X[:10])  # fit starts over
    assert est.n_samples_seen_ == 10


def test_known_mean_and_methods():
    loc = X.mean(0) + 0.01
    est = OnlineEmpiricalCovariance(known_mean=loc).fit(X[:200]).partial_fit(X[200:])
    _, cov_fix = multivariate_normal.fit(X, fix_mean=loc)
    np.testing.assert_array_equal(est.location_, loc)
    np.testing.assert_allclose(est.covariance_, cov_fix, rtol=1e-12)
    with pytest.raises(ValueError, match="only one"):
        OnlineEmpiricalCovariance(known_mean=0.0, assume_centered=True).fit(X)
    with pytest.raises(ValueError, match="unknown method"):
        OnlineEmpiricalCovariance(method="nope").fit(X)
    # any jaxgauss estimator: an infinite half-life forgets nothing (= welford)
    forgetting = OnlineEmpiricalCovariance(method=jg.exponential(jnp.inf)).fit(X)
    np.testing.assert_allclose(forgetting.covariance_, empirical_covariance(X), rtol=1e-12)
    with pytest.raises(ValueError, match="build the known mean into it"):
        OnlineEmpiricalCovariance(method=jg.welford(), assume_centered=True).fit(X)


def test_float64_without_x64():
    """Without JAX's x64 flag, results are still float64 (float32 would miss rtol 1e-12
    by five orders of magnitude), and the flag is left off. (The tests enable x64; a
    user's process, as here, has it off.)"""
    with jax.enable_x64(False):
        est = OnlineEmpiricalCovariance().partial_fit(X[:100]).partial_fit(X[100:])
        sk = EmpiricalCovariance().fit(X)
        assert est.covariance_.dtype == np.float64 and est.precision_.dtype == np.float64
        np.testing.assert_allclose(est.covariance_, sk.covariance_, rtol=1e-12)
        np.testing.assert_allclose(est.score(X), sk.score(X), rtol=1e-12)
        assert not jax.config.jax_enable_x64
        assert jax.numpy.zeros(1).dtype == np.float32


def test_shrinkage_methods_equal_scikit_learns_and_stream():
    """method="ledoit-wolf"/"oas" are scikit-learn's LedoitWolf/OAS (installed
    version; float64), also when the rows come in chunks through partial_fit."""
    from sklearn.covariance import OAS, LedoitWolf

    for method, peer in (("ledoit-wolf", LedoitWolf), ("oas", OAS)):
        ours = OnlineEmpiricalCovariance(method=method)
        for chunk in np.array_split(X, 3):
            ours.partial_fit(chunk)
        np.testing.assert_allclose(ours.covariance_, peer().fit(X).covariance_, rtol=1e-10)
    centred = OnlineEmpiricalCovariance(method="oas", assume_centered=True).fit(X)
    want = OAS(assume_centered=True).fit(X).covariance_
    np.testing.assert_allclose(centred.covariance_, want, rtol=1e-10)
    with pytest.raises(ValueError, match="ledoit-wolf.*estimates the mean"):
        OnlineEmpiricalCovariance(method="ledoit-wolf", assume_centered=True).fit(X)


def test_int64_beyond_2_to_53_keeps_its_spread_and_overflow_is_named():
    """Issue 25 (smaller): int64 rows near 2⁶² with a spread of 1 024 were converted to
    float64 first (spacing 1 024 there): variance 407 780 against 699 051. They are now
    moved to their first row in int64, so the covariance is exact to float64 rounding,
    streamed or not. Rows at 1e155, whose squares overflow float64, said "use
    method='welford'" while using it; the error now names the overflow."""
    rng = np.random.default_rng(0)
    X = (2**62 + rng.integers(0, 1024, size=(2000, 2))).astype(np.int64)
    exact = np.cov((X - X[0]).astype(np.float64).T, bias=True)  # differences are exact
    whole = OnlineEmpiricalCovariance().fit(X)
    streamed = OnlineEmpiricalCovariance().partial_fit(X[:1000]).partial_fit(X[1000:])
    for est in (whole, streamed):
        np.testing.assert_allclose(est.covariance_, exact, rtol=1e-12)
    assert abs(whole.location_[0] - 2.0**62) < 2048  # float64 spacing there: 1 024
    with pytest.raises(ValueError, match="squares exceed float64's range") as err:
        OnlineEmpiricalCovariance().fit(rng.normal(size=(50, 2)) * 1e155)
    assert "method='welford'" not in str(err.value)


@pytest.mark.slow  # scikit-learn's battery for the mixture: ~30 s, most of it compiles
def test_check_estimator_online_gaussian_mixture():
    started = time.perf_counter()
    check_estimator(OnlineGaussianMixture())
    print(f"check_estimator took {time.perf_counter() - started:.1f} s")


def _three_clusters(n, seed):
    rng = np.random.default_rng(seed)
    centres = np.array([[-5.0, 0.0, 0.0], [5.0, 0.0, 1.0], [0.0, 8.0, -1.0]])
    scales = np.array([1.0, 2.0, 0.7])
    label = rng.choice(3, size=n, p=[0.45, 0.35, 0.2])
    mixing = np.array([[1.0, 0.4, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 1.0]])
    return centres[label] + scales[label, None] * rng.normal(size=(n, 3)) @ mixing


@pytest.mark.slow  # one EM program per type (~6 s each)
@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_online_gaussian_mixture_against_gaussian_mixture(covariance_type):
    """One pass over 6 000 rows (batch_size 100) of a 3-component set:

    - ``partial_fit`` on chunks of 1 000 rows (multiples of ``batch_size``) equals one
      ``fit`` exactly (the same batches, the same arithmetic);
    - given its fitted parameters, scikit-learn's ``GaussianMixture`` gives the same
      ``score_samples``, ``predict_proba`` (1e-10: both are float64 through Cholesky
      factors, measured ~2e-14), ``predict``, ``bic`` and ``aic`` (1e-10 relative);
    - the held-out mean log-likelihood is within 1 % of scikit-learn's batch EM with
      the same K and type (measured within 2e-4 for every type)."""
    X, held = _three_clusters(6000, 0), _three_clusters(2000, 1)
    ours = OnlineGaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    chunks = OnlineGaussianMixture(3, covariance_type=covariance_type, random_state=0)
    for start in range(0, len(X), 1000):
        chunks.partial_fit(X[start : start + 1000])
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(chunks, name), getattr(ours, name))
    assert ours.converged_ and ours.n_samples_seen_ == 6000 and ours.n_iter_ == 60

    sk = GaussianMixture(3, covariance_type=covariance_type)
    sk.weights_, sk.means_, sk.covariances_ = ours.weights_, ours.means_, ours.covariances_
    sk.precisions_cholesky_ = ours.precisions_cholesky_
    np.testing.assert_allclose(ours.score_samples(held), sk.score_samples(held), rtol=1e-10)
    np.testing.assert_allclose(ours.predict_proba(held), sk.predict_proba(held), atol=1e-10)
    np.testing.assert_array_equal(ours.predict(held), sk.predict(held))
    assert ours.bic(held) == pytest.approx(sk.bic(held), rel=1e-10)
    assert ours.aic(held) == pytest.approx(sk.aic(held), rel=1e-10)
    covs = ours.covariances_
    inverse = np.linalg.inv(covs) if covariance_type in ("full", "tied") else 1 / covs
    np.testing.assert_allclose(ours.precisions_, inverse, rtol=1e-9, atol=1e-12)

    batch = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    assert (batch.score(held) - ours.score(held)) / abs(batch.score(held)) < 0.01
    rows, labels = ours.sample(500)
    assert rows.shape == (500, 3) and np.all(np.diff(labels) >= 0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"covariance_type": "ful"}, "covariance_type"),
        ({"n_components": 0}, "n_components"),
        ({"batch_size": 0}, "batch_size"),
        ({"reg_covar": -1.0}, "reg_covar"),
    ],
)
def test_online_gaussian_mixture_refuses_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OnlineGaussianMixture(**kwargs).fit(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        OnlineGaussianMixture(3).fit(np.zeros((2, 2)))
