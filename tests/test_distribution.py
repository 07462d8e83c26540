"""The estimate as a usable distribution (jaxgauss.gaussian: log_likelihood with
allow_singular, mahalanobis, entropy, precision, correlation, marginal, condition,
sample), against scipy.stats.multivariate_normal and scikit-learn.

Cases ported (rewritten, not copied) from scipy's
``scipy/stats/tests/test_multivariate.py`` (TestMultivariateNormal.test_degenerate_distributions,
test_rank, test_degenerate_array, test_large_pseudo_determinant, test_entropy,
test_multivariate_normal_rvs_zero_covariance; TestMarginal.test_marginal_distribution,
test_marginal_input_validation, test_marginal_special_cases) and scikit-learn's
``sklearn/covariance/tests/test_covariance.py`` (mahalanobis on the diabetes table).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from scipy.stats import multivariate_normal
from scipy.stats._multivariate import _eigvalsh_to_eps
from sklearn.covariance import EmpiricalCovariance
from sklearn.datasets import load_diabetes, load_digits
from sklearn.linear_model import LinearRegression

import jaxgauss as jg

# One compiled program per shape instead of one per primitive and shape (eager mode):
# the difference between ~10 s and ~40 s of CPU for this file.
LL = jax.jit(jg.log_likelihood, static_argnames="allow_singular")
ENTROPY = jax.jit(jg.entropy, static_argnames="allow_singular")
MLE = jax.jit(jg.mle)
SAMPLE = jax.jit(jg.streams.sample, static_argnames=("n", "allow_singular"))
MAHALANOBIS = jax.jit(jg.mahalanobis, static_argnames="allow_singular")
PRECISION = jax.jit(jg.precision, static_argnames="allow_singular")
CONDITION = jax.jit(jg.condition, static_argnames="index")


def _orthonormal(n):
    # scipy's _sample_orthonormal_matrix: the left singular vectors of a fixed draw.
    rng = np.random.default_rng(9086764251)
    return scipy.linalg.svd(rng.standard_normal((n, n)))[0]


def _degenerate_cases():
    """scipy's test_degenerate_distributions: a k×k covariance embedded in n×n and
    rotated, with a point on the support, for n = 1..4 and k < n."""
    rng = np.random.default_rng(1234)
    for n in range(1, 5):
        z = rng.standard_normal(n)
        for k in range(1, n):
            s = rng.standard_normal((k, k))
            cov_kk = s @ s.T
            cov_nn = np.zeros((n, n))
            cov_nn[:k, :k] = cov_kk
            x = np.zeros(n)
            x[:k] = z[:k]
            u = _orthonormal(n)
            yield n, k, cov_kk, u @ cov_nn @ u.T, x, u @ x, u


def test_degenerate_distributions_match_scipy():
    for n, k, cov_kk, cov_rr, x, y, u in _degenerate_cases():
        ref = multivariate_normal(np.zeros(n), cov_rr, allow_singular=True)
        g = jg.Gaussian(jnp.zeros(n), jnp.asarray(cov_rr))
        ll = float(LL(g, y, allow_singular=True))
        # scipy's own check: the rotated density equals the k-dimensional one.
        low = multivariate_normal(np.zeros(k), cov_kk).logpdf(x[:k])
        np.testing.assert_allclose(ll, ref.logpdf(y), rtol=1e-10)
        np.testing.assert_allclose(ll, low, rtol=1e-9)
        # A step orthogonal to the support has zero density.
        assert float(LL(g, y + u[:, -1], allow_singular=True)) == -np.inf
        np.testing.assert_allclose(float(ENTROPY(g, True)), ref.entropy(), rtol=1e-10)


def test_default_path_on_a_singular_covariance_is_documented():
    # The rotated rank-3 covariance in 4-D is positive definite after rounding, so
    # the default Cholesky path returns a finite number set by a tiny pivot (13.10)
    # where scipy's degenerate density is −4.16: what the docstring says.
    n, k, _, cov_rr, _, y, _ = list(_degenerate_cases())[-1]
    assert (n, k) == (4, 3)
    g = jg.Gaussian(jnp.zeros(4), jnp.asarray(cov_rr))
    ref = multivariate_normal(np.zeros(4), cov_rr, allow_singular=True).logpdf(y)
    assert abs(float(LL(g, y)) - ref) > 10
    np.testing.assert_allclose(float(LL(g, y, allow_singular=True)), ref, rtol=1e-10)
    assert round(ref, 2) == -4.16


def test_rank_and_degenerate_samples():
    # scipy's test_rank and test_degenerate_array: covariances of every rank in 4-D;
    # draws with allow_singular lie on the support, and their densities match scipy's.
    rng = np.random.default_rng(1234)
    mean = rng.standard_normal(4)
    for rank in range(1, 5):
        s = rng.standard_normal((4, rank))
        cov = s @ s.T
        g = jg.Gaussian(jnp.asarray(mean), jnp.asarray(cov))
        ys = SAMPLE(jax.random.key(rank), g, 10, allow_singular=True)
        ll = LL(g, ys, allow_singular=True)
        assert np.all(np.isfinite(ll))
        ref = multivariate_normal(mean, cov, allow_singular=True)
        np.testing.assert_allclose(ll, ref.logpdf(np.asarray(ys)), rtol=1e-8)
        # rank r: the entropy counts r dimensions (scipy's cov_object.rank).
        np.testing.assert_allclose(float(ENTROPY(g, True)), ref.entropy(), rtol=1e-10)
        assert ref.cov_object.rank == rank


@pytest.mark.parametrize("dtype", [jnp.float32, pytest.param(jnp.float64, marks=pytest.mark.slow)])
def test_pooled_draws_are_jax_randoms_own(dtype):
    # sample and random_truth cut small eager draws from a flat draw of a power of two
    # of entries: the numbers must be those of jax.random.normal of the asked shape,
    # eagerly and under jit, for new-style and legacy keys.
    from jaxgauss.streams import _normal

    for key in (jax.random.key(3), jax.random.PRNGKey(3)):
        # Pools of 256 (two shapes) and 4096 entries, and a draw too large to pool.
        for shape in [(1,), (5, 5), (1001, 3), (40_000, 2)]:
            want = jax.random.normal(key, shape, dtype)
            np.testing.assert_array_equal(_normal(key, shape, dtype), want)
        jitted = jax.jit(_normal, static_argnums=(1, 2))(key, (7, 2), dtype)  # a traced key
        np.testing.assert_array_equal(jitted, jax.random.normal(key, (7, 2), dtype))
    truth = jg.Gaussian(jnp.ones(3, dtype), jnp.eye(3, dtype=dtype))
    ys = jg.streams.sample(jax.random.key(4), truth, 11)
    np.testing.assert_array_equal(ys, 1 + jax.random.normal(jax.random.key(4), (11, 3), dtype))


def test_zero_covariance_samples_the_mean():
    # scipy's test_multivariate_normal_rvs_zero_covariance
    g = jg.Gaussian(jnp.array([1.0, -2.0]), jnp.zeros((2, 2)))
    ys = SAMPLE(jax.random.key(0), g, 3, allow_singular=True)
    np.testing.assert_array_equal(ys, np.tile([1.0, -2.0], (3, 1)))
    assert float(LL(g, g.mean + 1.0, allow_singular=True)) == -np.inf


def test_large_pseudo_determinant():
    # scipy's test_large_pseudo_determinant: 100 variances e¹⁰ and two zeros; the
    # determinant of the positive block overflows, its log (1000) does not.
    cov = np.zeros((102, 102))
    np.fill_diagonal(cov[:100, :100], np.exp(10.0))
    g = jg.Gaussian(jnp.zeros(102), jnp.asarray(cov))
    ref = multivariate_normal(np.zeros(102), cov, allow_singular=True)
    np.testing.assert_allclose(float(ENTROPY(g, True)), ref.entropy(), rtol=1e-12)
    np.testing.assert_allclose(
        float(ENTROPY(g, True)), 0.5 * (100 * (1 + np.log(2 * np.pi)) + 1000.0), rtol=1e-12
    )


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_rank_tolerance_is_scipys(dtype):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 3))
    cov = (a @ a.T).astype(dtype)
    spectrum = np.linalg.eigvalsh(cov)
    np.testing.assert_allclose(
        float(jg.gaussian.rank_tolerance(jnp.asarray(cov))), _eigvalsh_to_eps(spectrum), rtol=1e-3
    )


def test_singular_mles_from_data_match_scipy():
    """Real singular estimates: 3 rows in 5-D, and the digits table (64 pixels, some
    always 0), in float64; and the n ≤ d MLE in float32 against scipy in float64."""
    rng = np.random.default_rng(3)
    few = rng.standard_normal((3, 5))
    digits = load_digits().data[:200]
    for ys in (few, digits):
        g = MLE(jnp.asarray(ys))
        ref = multivariate_normal(np.asarray(g.mean), np.asarray(g.cov), allow_singular=True)
        ours = LL(g, ys[:10], allow_singular=True)
        np.testing.assert_allclose(ours, ref.logpdf(ys[:10]), rtol=1e-8)
        off = ys[0] + 1.0  # moves the constant columns (digits) / leaves the plane (few)
        assert float(LL(g, off, allow_singular=True)) == ref.logpdf(off) == -np.inf
    g32 = MLE(jnp.asarray(few, jnp.float32))
    ours32 = LL(g32, jnp.asarray(few, jnp.float32), allow_singular=True)
    ref = multivariate_normal(few.mean(0), np.cov(few.T, bias=True), allow_singular=True)
    assert ours32.dtype == jnp.float32
    # float32 rounding of the rank-2 MLE; its kept eigenvalues carry ~1e-6 relative error.
    np.testing.assert_allclose(ours32, ref.logpdf(few), rtol=1e-4)


def test_not_psd_gives_nan_on_the_singular_path():
    g = jg.Gaussian(jnp.zeros(2), jnp.diag(jnp.array([1.0, -1.0])))
    assert np.isnan(float(LL(g, jnp.zeros(2), allow_singular=True)))


def test_batched_and_jitted():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((3, 4, 2))
    covs = a @ np.swapaxes(a, -1, -2)  # three rank-2 covariances in 4-D
    g = jg.Gaussian(jnp.asarray(rng.standard_normal((3, 4))), jnp.asarray(covs))
    ys = SAMPLE(jax.random.key(0), g, 5, allow_singular=True)  # (5, 3, 4)
    assert ys.shape == (5, 3, 4)
    ll = LL(g, ys, allow_singular=True)
    vm = jax.vmap(lambda g, y: LL(g, y, True), in_axes=(0, 1), out_axes=1)(g, ys)
    np.testing.assert_allclose(ll, vm, rtol=1e-12)
    for b in range(3):
        ref = multivariate_normal(np.asarray(g.mean[b]), covs[b], allow_singular=True)
        np.testing.assert_allclose(ll[:, b], ref.logpdf(np.asarray(ys[:, b])), rtol=1e-8)


def test_mahalanobis_matches_scikit_learn_and_scipy():
    # scikit-learn's test_covariance fits EmpiricalCovariance to the diabetes table.
    X = load_diabetes().data
    sk = EmpiricalCovariance().fit(X)
    g = MLE(jnp.asarray(X))
    np.testing.assert_allclose(MAHALANOBIS(g, X), sk.mahalanobis(X), rtol=1e-9)
    np.testing.assert_allclose(MAHALANOBIS(g, X, allow_singular=True), sk.mahalanobis(X), rtol=1e-8)
    np.testing.assert_allclose(PRECISION(g), sk.precision_, rtol=1e-9)
    # squared: scipy.spatial's mahalanobis is the square root
    d = scipy.spatial.distance.mahalanobis(X[0], sk.location_, sk.precision_)
    np.testing.assert_allclose(float(MAHALANOBIS(g, X[0])), d**2, rtol=1e-9)


def test_pseudo_inverse_on_singular_data_matches_scikit_learn():
    # 4 rows in 6-D: scikit-learn's precision is pinvh of the singular MLE.
    X = np.random.default_rng(7).standard_normal((4, 6))
    sk = EmpiricalCovariance().fit(X)
    g = MLE(jnp.asarray(X))
    np.testing.assert_allclose(PRECISION(g, True), sk.precision_, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(MAHALANOBIS(g, X, True), sk.mahalanobis(X), rtol=1e-8)


def test_entropy_matches_scipy():
    # scipy's test_entropy: a random 3-D covariance, and the eigenvalue formula.
    rng = np.random.RandomState(2846)
    mean = rng.randn(3)
    m = rng.randn(3, 3)
    cov = m @ m.T
    g = jg.Gaussian(jnp.asarray(mean), jnp.asarray(cov))
    ref = multivariate_normal(mean, cov).entropy()
    np.testing.assert_allclose(float(ENTROPY(g)), ref, rtol=1e-12)
    eig = np.linalg.eigvalsh(cov)
    np.testing.assert_allclose(
        float(ENTROPY(g)), 0.5 * (3 * (np.log(2 * np.pi) + 1) + np.log(eig).sum()), rtol=1e-12
    )


def test_correlation_matches_corrcoef():
    X = load_diabetes().data
    corr = jg.correlation(MLE(jnp.asarray(X)))
    np.testing.assert_allclose(corr, np.corrcoef(X.T), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(np.diag(corr), np.ones(X.shape[1]))
    z = jg.correlation(jg.Gaussian(jnp.zeros(2), jnp.diag(jnp.array([1.0, 0.0]))))
    assert np.isnan(z[1]).all() and float(z[0, 0]) == 1.0


@pytest.mark.parametrize("dims", [[1], [-1, 1], 2])
def test_marginal_matches_scipy(dims):
    # scipy's TestMarginal.test_marginal_distribution (3-D, negative indices).
    rng = np.random.default_rng(413911473)
    loc = rng.standard_normal(3)
    a = rng.standard_normal((3, 3))
    cov = a @ a.T
    x = rng.standard_normal((4, np.size(dims)))
    ref = multivariate_normal(loc, cov).marginal(dims)
    m = jg.marginal(jg.Gaussian(jnp.asarray(loc), jnp.asarray(cov)), dims)
    np.testing.assert_allclose(LL(m, x), ref.logpdf(x), rtol=1e-12)


def test_marginal_input_validation():
    # scipy's test_marginal_input_validation and test_marginal_special_cases
    g = jg.Gaussian(jnp.zeros(3), jnp.eye(3))
    for bad, msg in [
        (3, "outside"),
        ([0, 1, 2, 3], "outside"),
        ([2, -1], "repeats"),
        ([[0, 1]], "1-D"),
        ([1.1, 2.0], "integers"),
        ([], "empty"),
    ]:
        with pytest.raises(ValueError, match=msg):
            jg.marginal(g, bad)
    with pytest.raises(ValueError, match="nothing is left"):
        jg.condition(g, [0, 1, 2], jnp.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        jg.condition(g, [0], jnp.zeros(2))


def test_condition_is_the_joint_over_the_marginal():
    """log p(x) = log p(x_i) + log p(x_o | x_i), every density from scipy."""
    a = np.random.default_rng(3).standard_normal((5, 5))
    g = jg.Gaussian(jnp.asarray(np.arange(5.0)), jnp.asarray(a @ a.T + 0.1 * np.eye(5)))
    xs = np.asarray(SAMPLE(jax.random.key(4), g, 6))
    given = [3, 0]
    c = CONDITION(g, tuple(given), xs[:, given])  # mean (6, 3), cov (3, 3)
    mean, cov = np.asarray(g.mean), np.asarray(g.cov)
    joint = multivariate_normal(mean, cov).logpdf(xs)
    low = multivariate_normal(mean[given], cov[np.ix_(given, given)]).logpdf(xs[:, given])
    cond = [
        multivariate_normal(np.asarray(c.mean[j]), np.asarray(c.cov)).logpdf(xs[j, [1, 2, 4]])
        for j in range(6)
    ]
    np.testing.assert_allclose(low + np.array(cond), joint, rtol=1e-10)


def test_condition_mean_is_least_squares_imputation():
    # Imputing a missing feature with the conditional mean of the MLE Gaussian is the
    # least-squares regression of it on the observed ones (scikit-learn's LinearRegression).
    X = load_diabetes().data
    given = [0, 1, 2, 3, 5, 6, 7, 8, 9]
    c = CONDITION(MLE(jnp.asarray(X)), tuple(given), X[:, given])
    pred = LinearRegression().fit(X[:, given], X[:, 4]).predict(X[:, given])
    np.testing.assert_allclose(c.mean[:, 0], pred, rtol=1e-9, atol=1e-12)
