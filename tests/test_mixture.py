"""Tests for ``gaussian_mixture`` (stepwise online EM) and ``Mixture``.

References: scipy's ``multivariate_normal`` for the component densities (log-sum-exp
over components for the mixture), scikit-learn's ``GaussianMixture`` given the same
parameters for responsibilities and predictions, and ``GaussianMixture(3, "full")``
fitted by batch EM on the same rows for the held-out log-likelihood. The accuracy
test runs 16 seeds as one vmapped scan.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp
from sklearn.mixture import GaussianMixture
from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky

import jaxgauss as jg

SEEDS = 16

TRUTH = jg.Mixture(
    jnp.array([0.5, 0.3, 0.2]),
    jnp.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]]),
    jnp.array([[[1.0, 0.5], [0.5, 1.0]], [[2.0, -0.8], [-0.8, 1.0]], [[0.5, 0.0], [0.0, 1.5]]]),
)


def _sklearn_with(m):
    """A GaussianMixture holding the parameters of ``m`` (not fitted by it)."""
    gm = GaussianMixture(len(m.weights), covariance_type="full")
    gm.weights_, gm.means_, gm.covariances_ = (np.asarray(x) for x in m[:3])
    gm.precisions_cholesky_ = np.linalg.cholesky(np.linalg.inv(gm.covariances_)).copy()
    return gm


def test_mixture_functions_match_scipy_and_sklearn():
    ys = np.random.default_rng(0).normal(size=(50, 2)) * 4 + 2
    ref = logsumexp(
        [
            np.log(w) + stats.multivariate_normal(m, c).logpdf(ys)
            for w, m, c in zip(*(np.asarray(x) for x in TRUTH[:3]))
        ],
        axis=0,
    )
    # float64 through Cholesky factors: ~1e-12 of the values' size
    np.testing.assert_allclose(np.asarray(TRUTH.log_likelihood(ys)), ref, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(jg.log_likelihood(TRUTH, ys)), ref, rtol=1e-12)
    gm = _sklearn_with(TRUTH)
    np.testing.assert_allclose(
        np.asarray(TRUTH.responsibilities(ys)), gm.predict_proba(ys), atol=1e-12
    )
    np.testing.assert_array_equal(np.asarray(TRUTH.predict(ys)), gm.predict(ys))


def _as_type(m, covariance_type):
    """``m`` with its covariances reduced to a type as scikit-learn's M-step would:
    tied Σ π_k Σ_k, diag the diagonals, spherical their means."""
    covs = np.asarray(m.covs)
    reduced = {
        "full": covs,
        "tied": np.einsum("k,kij->ij", np.asarray(m.weights), covs),
        "diag": np.diagonal(covs, axis1=1, axis2=2).copy(),
        "spherical": np.diagonal(covs, axis1=1, axis2=2).mean(axis=1),
    }[covariance_type]
    return jg.Mixture(m.weights, m.means, jnp.asarray(reduced), covariance_type)


def _sklearn_of_type(m):
    gm = GaussianMixture(len(m.weights), covariance_type=m.covariance_type)
    gm.weights_, gm.means_, gm.covariances_ = (np.asarray(x) for x in m[:3])
    gm.precisions_cholesky_ = _compute_precision_cholesky(gm.covariances_, m.covariance_type)
    return gm


TYPES = ["full", "tied", "diag", "spherical"]


@jax.jit
def _everything(m, ys):
    return (
        m.log_likelihood(ys),
        m.responsibilities(ys),
        m.predict(ys),
        jg.bic(m, ys),
        jg.aic(m, ys),
        m.sample(jax.random.key(3), 20_000),
    )


# Quick: full and diag (a Cholesky path and an elementwise one); tied and spherical,
# the same paths with a shared factor or a scalar, with -m slow.
@pytest.mark.parametrize(
    "covariance_type",
    ["full", "diag", *(pytest.param(t, marks=pytest.mark.slow) for t in ("tied", "spherical"))],
)
def test_every_type_and_bic_aic_equal_sklearn_given_the_same_parameters(covariance_type):
    """Float64, the same parameters set into scikit-learn's GaussianMixture: the
    log-densities through Cholesky factors (full, tied) or elementwise (diag,
    spherical) agree with scikit-learn's precision-Cholesky expansions to ~1e-14 of
    their size (measured 1.3e-14); bic and aic are sums of n of them plus a count,
    so 1e-10 relative (the issue's bound) is far above rounding."""
    m = _as_type(TRUTH, covariance_type)
    ys = np.random.default_rng(0).normal(size=(200, 2)) * 4 + 2
    gm = _sklearn_of_type(m)
    ll, resp, label, bic, aic, draws = _everything(m, ys)  # one program (op by op: ~1 s more)
    np.testing.assert_allclose(np.asarray(ll), gm.score_samples(ys), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(resp), gm.predict_proba(ys), atol=1e-12)
    np.testing.assert_array_equal(np.asarray(label), gm.predict(ys))
    np.testing.assert_allclose(float(bic), gm.bic(ys), rtol=1e-10)
    np.testing.assert_allclose(float(aic), gm.aic(ys), rtol=1e-10)
    assert (
        gm._n_parameters() == {"full": 17, "tied": 11, "diag": 14, "spherical": 11}[covariance_type]
    )
    # sample: 2·10⁴ draws; the mean within 0.125 (5 standard errors, as in
    # test_sample_moments) and each coordinate's variance within 5 % of the mixture's
    # (the relative standard error of a variance of 2·10⁴ draws is ~1.5 % here)
    w, mu = np.asarray(m.weights), np.asarray(m.means)
    covs = np.asarray(m.covs)
    if covariance_type == "full":
        comp_var = np.diagonal(covs, axis1=1, axis2=2)
    elif covariance_type == "tied":
        comp_var = np.broadcast_to(np.diag(covs), (3, 2))
    else:
        comp_var = covs if covariance_type == "diag" else np.broadcast_to(covs[:, None], (3, 2))
    mean = w @ mu
    np.testing.assert_allclose(draws.mean(axis=0), mean, atol=0.125)
    np.testing.assert_allclose(draws.var(axis=0), w @ (comp_var + mu**2) - mean**2, rtol=0.05)


def test_the_type_is_static_data_of_the_pytree():
    """A string leaf would break jit and stacked snapshots; K = d = 2 makes "diag"
    (K, d) and "tied" (d, d) covariances the same shape, told apart by the type."""
    diag = jg.Mixture(jnp.full(2, 0.5), jnp.zeros((2, 2)), jnp.ones((2, 2)), "diag")
    tied = jg.Mixture(jnp.full(2, 0.5), jnp.zeros((2, 2)), jnp.eye(2), "tied")
    assert len(jax.tree_util.tree_leaves(diag)) == 3
    assert jax.tree_util.tree_structure(diag) != jax.tree_util.tree_structure(tied)
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), diag, diag)
    assert stacked.covariance_type == "diag" and stacked.covs.shape == (2, 2, 2)
    assert jax.jit(lambda m: m)(tied).covariance_type == "tied"
    y = jnp.zeros((1, 2))
    ll = jax.jit(lambda m: m.log_likelihood(y))
    np.testing.assert_allclose(ll(diag), ll(tied), rtol=1e-14)


@pytest.mark.parametrize(
    ("m", "x", "match"),
    [
        (TRUTH, np.zeros((4, 3)), r"x must be rows \(n, 2\)"),
        (TRUTH, np.zeros(2), r"x must be rows"),
        ("not a mixture", np.zeros((4, 2)), "mixture must be"),
    ],
)
def test_bic_refuses_what_it_cannot_score(m, x, match):
    with pytest.raises(ValueError, match=match):
        jg.bic(m, x)
    with pytest.raises(ValueError, match=match):
        jg.aic(m, x)


def test_a_gaussian_scores_as_one_full_component():
    g = jg.Gaussian(jnp.array([1.0, -1.0]), jnp.array([[2.0, 0.3], [0.3, 1.0]]))
    one = jg.Mixture(jnp.ones(1), g.mean[None], g.cov[None])
    x = np.random.default_rng(0).normal(size=(20, 2))

    @jax.jit  # one program (op by op: ~1 s)
    def scores(g, one, x):
        return jg.bic(g, x), jg.bic(one, x), jg.aic(g, x), jnp.sum(jg.log_likelihood(g, x))

    bic_g, bic_one, aic_g, total = scores(g, one, x)
    assert float(bic_g) == float(bic_one)
    # a full 2-D Gaussian: 2 + 3 parameters, and no mixing weight
    np.testing.assert_allclose(float(aic_g), -2 * float(total) + 10, rtol=1e-13)


@pytest.mark.slow
@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_diagonal_types_cost_o_k_d_per_row(covariance_type):
    """d = 1 000, K = 8: the state holds no d × d array, and the compiled update's
    temporaries grow linearly in d (a d × d intermediate would quadruple them from
    d = 1 000 to 2 000; measured ×2.0), so memory and time per row are O(K·d).
    (One pass per type against batch EM: tests/test_sklearn.py, through
    ``OnlineGaussianMixture``.)"""
    k, b = 8, 16

    def compiled(d):
        est = jg.gaussian_mixture(
            k, key=jax.random.key(0), covariance_type=covariance_type, n_init=64
        )
        g0 = jg.Gaussian(jnp.zeros(d), jnp.eye(d))
        state = jax.eval_shape(est.init, g0)
        assert all(x.size < d * d for x in jax.tree_util.tree_leaves(state))
        batch = jax.ShapeDtypeStruct((b, d), jnp.float64)
        return est, est.init(g0), jax.jit(est.update).lower(state, batch).compile()

    est, state, update = compiled(1000)
    small = update.memory_analysis().temp_size_in_bytes
    assert compiled(2000)[2].memory_analysis().temp_size_in_bytes / small < 2.5
    ys = np.random.default_rng(0).normal(size=(256, 1000)) + np.repeat(np.eye(8, 1000) * 20, 32, 0)
    for batch in ys.reshape(-1, b, 1000):
        state = update(state, jnp.asarray(batch))
    m = jax.jit(est.estimate)(state)
    assert m.covs.shape == ((k, 1000) if covariance_type == "diag" else (k,))
    assert np.all(np.isfinite(np.asarray(m.covs))) and np.all(np.asarray(m.covs) > 0)


def test_sample_moments():
    """Mean of 2·10⁴ draws against Σ π_k μ_k: each coordinate's standard error is
    below 3.5/√(2·10⁴) = 0.025, so 5 standard errors is 0.125."""
    ys = np.asarray(TRUTH.sample(jax.random.key(3), 20_000))
    mean = np.asarray(TRUTH.weights) @ np.asarray(TRUTH.means)
    np.testing.assert_allclose(ys.mean(axis=0), mean, atol=0.125)


@pytest.mark.slow  # a statistical comparison with batch EM: run by .ci/run (-m slow)
def test_one_pass_held_out_likelihood_within_one_percent_of_batch_em():
    """16 seeds of 4000 rows, one vmapped scan of 8 rows per update; the held-out
    mean log-likelihood against scikit-learn's batch EM on the same rows.

    Both land within sampling noise (~0.05 %) of each other unless the k-means++
    seed splits a cluster and online EM keeps the worse local optimum: measured in 1
    of 32 seeds (benchmarks/results/em_accuracy.md), so the 1 % bound must hold for
    the median and at most 2 of 16 seeds may miss it (P ≈ 0.09 at a 3 % rate).
    """
    n = 4000
    keys = jax.random.split(jax.random.key(7), SEEDS)
    ys = jax.vmap(lambda k: TRUTH.sample(k, n))(keys)
    held_out = np.asarray(TRUTH.sample(jax.random.key(99), 5000))
    g0 = jg.Gaussian(jnp.zeros(2), jnp.eye(2))

    @jax.jit
    @jax.vmap
    def run(key, y):
        est = jg.gaussian_mixture(3, key=key)
        carry, _ = jg.engine.scan_batches(
            est, jg.engine.init_carry(est.init(g0)), y.reshape(-1, 8, 2)
        )
        return est.estimate(carry.state), carry.diverged_at

    m, diverged = run(jax.random.split(jax.random.key(0), SEEDS), ys)
    assert np.all(np.asarray(diverged) == -1)
    online = np.asarray(jax.vmap(lambda m: m.log_likelihood(held_out).mean())(m))
    batch = np.array(
        [
            GaussianMixture(3, covariance_type="full", random_state=s)
            .fit(np.asarray(y))
            .score(held_out)
            for s, y in enumerate(ys)
        ]
    )
    loss = (batch - online) / np.abs(batch)
    assert np.median(loss) < 0.01 and np.sum(loss >= 0.01) <= 2, loss


def test_given_init_and_lost_components_stay_spd():
    """From a given Mixture no rows are buffered; on data from one cluster two of
    three components lose their mass and must keep SPD covariances."""
    start = jg.Mixture(
        jnp.full(3, 1 / 3),
        jnp.array([[0.0, 0.0], [30.0, 0.0], [0.0, 30.0]]),
        jnp.broadcast_to(jnp.eye(2), (3, 2, 2)),
    )
    ys = jax.random.normal(jax.random.key(0), (3000, 2))
    res = jg.fit(jg.gaussian_mixture(3, init=start), ys, batch_size=50)
    m = res.estimate
    assert int(res.diverged_at) == -1
    assert float(m.weights[0]) > 0.97
    assert bool(jnp.all(jg.is_spd(m.covs)))
    np.testing.assert_allclose(np.asarray(m.means[0]), np.zeros(2), atol=0.1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_components=0, key=jax.random.key(0)), "n_components"),
        (dict(n_components=2), "key"),
        (dict(n_components=3, key=jax.random.key(0), n_init=2), "n_init"),
        (dict(n_components=2, key=jax.random.key(0), power=1.5), "power"),
        (
            dict(
                n_components=2, init=jg.Mixture(jnp.ones(2), jnp.zeros((2, 1)), jnp.ones((2, 1, 1)))
            ),
            "sum to 1",
        ),
        (
            dict(
                n_components=2,
                init=jg.Mixture(jnp.full(2, 0.5), jnp.zeros((2, 1)), -jnp.ones((2, 1, 1))),
            ),
            "positive definite",
        ),
        (dict(n_components=2, key=jax.random.key(0), covariance_type="ful"), "covariance_type"),
        (
            dict(
                n_components=2,
                covariance_type="diag",
                init=jg.Mixture(jnp.full(2, 0.5), jnp.zeros((2, 1)), jnp.ones((2, 1, 1))),
            ),
            "same type",
        ),
        (
            dict(
                n_components=2,
                covariance_type="diag",
                init=jg.Mixture(jnp.full(2, 0.5), jnp.zeros((2, 1)), jnp.ones((2, 2)), "diag"),
            ),
            r"shape \(2, 1\)",
        ),
    ],
)
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jg.gaussian_mixture(**kwargs)


@pytest.mark.slow  # a mixture's EM programs through the command; mixtures run quick elsewhere
def test_cli_fit_mixture_and_student_t(tmp_path, cli):
    import json

    ys = np.asarray(TRUTH.sample(jax.random.key(4), 1200))
    np.save(tmp_path / "rows.npy", ys)
    out = tmp_path / "mix.json"
    args = ["fit", tmp_path / "rows.npy", "--quiet", "--float64"]
    assert cli(*args, "--method", "mixture", "--components", "3", "--out", out).returncode == 0
    result = json.loads(out.read_text())
    assert result["n"] == 1200 and sorted(np.round(result["weights"], 1)) == [0.2, 0.3, 0.5]
    student = cli(*args, "--method", "student-t")
    assert student.returncode == 2 and "needs --dof" in student.stderr


@pytest.mark.slow  # an EM sweep program; mixtures and sweeps each run quick elsewhere
def test_mixture_sweeps_over_the_step_exponent_with_a_held_out_score():
    """Online EM in a sweep: κ of the step (t + 500)^−κ × seeds in one compiled call,
    scored by the held-out negative log-likelihood (``score`` reads any estimate that
    ``jg.log_likelihood`` reads). On Gaussian rows a 2-component mixture is no worse
    than a few per cent above the MLE Gaussian's held-out value (measured 1.01–1.03 at
    640 rows, 500 of them seeding); 1.1 leaves room for seed noise."""
    truth = jg.Gaussian(jnp.array([1.0, -1.0]), jnp.array([[2.0, 0.3], [0.3, 0.5]]))
    held = jg.streams.sample(jax.random.key(9), truth, 512)

    def held_out_nll(truth, estimate):
        return -jnp.mean(jg.log_likelihood(estimate, held))

    make = jg.methods.make_method("mixture", components=2)
    res = jg.sweep(
        make, np.array([0.6, 0.9]), truth=truth, n_steps=640, seeds=2, score=held_out_nll
    )
    assert np.all(np.asarray(res.diverged_at) == -1)
    assert np.all(np.asarray(res.efficiency) < 1.1)
