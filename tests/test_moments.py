"""Tests for the moment estimators (welford, natural_gradient, exponential) and merge.

References: np.cov / jaxgauss.mle for welford, an explicit recursion in the expectation
parameters and an explicitly weighted batch estimate for the other steps. Tolerances:
float64 results are compared at 1e-10 relative to the covariance's scale (each of the
≤ 10³ rows here adds O(ε) = 1e-16 relative error, so even linear growth stays below
1e-12); float32 at 1e-4 (ε = 6e-8 times ≤ 10³ rows, with room).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxgauss as jg
from jaxgauss.estimators.moments import MomentsState, WelfordState

RTOL = {jnp.float32: 1e-4, jnp.float64: 1e-10}
N, D = 120, 3  # the common stream shape, so that compilations are shared between tests
WELFORD = jg.welford()


def _data(d=D, n=N, dtype=jnp.float64, seed=0, condition=10.0):
    k_truth, k_data = jax.random.split(jax.random.key(seed))
    truth = jg.streams.random_truth(k_truth, d, condition, dtype)
    return jg.streams.sample(k_data, truth, n)


def _standard(d=D, dtype=jnp.float64):
    return jg.Gaussian(jnp.zeros(d, dtype), jnp.eye(d, dtype=dtype))


@functools.cache
def _jitted_update(est):
    return jax.jit(est.update)


def _one_update(est, ys, init=None):
    """The state after all of ``ys`` as one batch (one compiled update, no scan)."""
    return _jitted_update(est)(est.init(init or _standard(ys.shape[1], ys.dtype)), ys)


def _close(actual, desired, rtol):
    """Normwise closeness: max |actual − desired| ≤ rtol · max(1, max |desired|)."""
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    scale = max(1.0, float(np.max(np.abs(desired))))
    np.testing.assert_allclose(actual, desired, rtol=0, atol=rtol * scale)


def _weighted_reference(ys, steps, init):
    """The estimate implied by per-row steps a_t, by explicit weights in float64:
    the init keeps c = Π(1 − a_t), row t gets w_t = a_t Π_{s>t}(1 − a_s)."""
    ys = np.asarray(ys, np.float64)
    steps = np.asarray(steps, np.float64)
    weights = np.array([steps[t] * np.prod(1 - steps[t + 1 :]) for t in range(len(steps))])
    keep = np.prod(1 - steps)
    mu0, cov0 = np.asarray(init.mean, np.float64), np.asarray(init.cov, np.float64)
    mean = keep * mu0 + weights @ ys
    dev = ys - mean
    cov = keep * (cov0 + np.outer(mu0 - mean, mu0 - mean)) + (weights[:, None] * dev).T @ dev
    return mean, cov


# --- welford: the running MLE ---------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("d", [pytest.param(1, marks=pytest.mark.slow), D])
def test_welford_equals_mle(d, dtype):
    ys = _data(d, N, dtype)
    ref_mean = np.mean(np.asarray(ys, np.float64), 0)
    ref_cov = np.cov(np.asarray(ys, np.float64).T, bias=True).reshape(d, d)
    rows = jg.fit(WELFORD, ys)  # one row per update
    whole = WELFORD.estimate(_one_update(WELFORD, ys))  # one rank-N update
    for g in (rows.estimate, whole):
        assert g.cov.dtype == dtype
        _close(g.mean, ref_mean, RTOL[dtype])
        _close(g.cov, ref_cov, RTOL[dtype])
        np.testing.assert_array_equal(g.cov, g.cov.T)
    assert rows.state.count.dtype == jg.estimators.counter_dtype() and int(rows.state.count) == N


def test_welford_ddof():
    ys = _data()
    est = jg.welford(ddof=1)
    state = _one_update(est, ys)
    _close(est.estimate(state).cov, np.cov(np.asarray(ys).T, ddof=1), RTOL[jnp.float64])
    _close(state.cov, np.cov(np.asarray(ys).T, bias=True), RTOL[jnp.float64])
    # One row: n = 1 ≤ ddof, the correction is undefined and the MLE (zero) is returned.
    one = est.estimate(_one_update(est, ys[:1]))
    np.testing.assert_array_equal(one.cov, np.zeros((D, D)))
    np.testing.assert_array_equal(one.mean, ys[0])


def test_first_row_forgets_init_exactly():
    # A far, huge init in float32: any leftover of it would dominate the estimate.
    init = jg.Gaussian(jnp.full(2, 1e10, jnp.float32), 1e6 * jnp.eye(2, dtype=jnp.float32))
    y = jnp.array([[1.5, -2.0]], jnp.float32)
    for est in (WELFORD, jg.exponential(3.0), jg.natural_gradient(1.0)):
        g = est.estimate(_one_update(est, y, init))
        np.testing.assert_array_equal(g.mean, y[0])
        np.testing.assert_array_equal(g.cov, np.zeros((2, 2)))


def test_singular_early_estimates_are_valid_not_divergent():
    ys = _data(n=2)  # t ≤ d: the MLE is singular
    res = jg.fit(WELFORD, ys)
    assert int(res.diverged_at) == -1
    assert bool(WELFORD.is_valid(res.state))
    assert not bool(jg.is_spd(res.estimate.cov))
    bad = res.state._replace(cov=res.state.cov.at[0, 0].set(jnp.nan))
    assert not bool(WELFORD.is_valid(bad))


def test_float32_large_mean_accurate_where_naive_sums_fail():
    """Mean 1e4, spread ~1, float32: ulp(1e4) ≈ 1e-3, so E[yyᵀ] − μμᵀ loses everything
    to cancellation (1e8 · 6e-8 ≈ 6 absolute error), while the centred updates only
    round small differences. The reference is np.cov in float64 of the same float32
    rows. Per-row updates round the mean to float32 every row (a random walk of
    ~ ulp · √n ≈ 1e-2 at n = 10⁴) and the covariance picks up its square, ~1e-4
    relative; one update per 1000 rows rounds 1000 times less often."""
    d, n = 3, 10_000
    rng = np.random.default_rng(0)
    ys = (1e4 + rng.normal(size=(n, d)) @ rng.normal(size=(d, d))).astype(np.float32)
    ref = np.cov(ys.astype(np.float64).T, bias=True)
    scale = np.max(np.abs(ref))
    y = jnp.asarray(ys)
    naive = (y.T @ y) / n - jnp.outer(jnp.mean(y, 0), jnp.mean(y, 0))
    naive_err = np.max(np.abs(np.asarray(naive, np.float64) - ref)) / scale
    for batch_size, tol in ((1, 1e-3), (1000, 1e-4)):
        g = jg.fit(WELFORD, y, batch_size=batch_size).estimate
        err = np.max(np.abs(np.asarray(g.cov, np.float64) - ref)) / scale
        assert err < tol, (batch_size, err)
        np.testing.assert_allclose(g.mean, ys.astype(np.float64).mean(0), rtol=1e-5)
    assert naive_err > 0.1, naive_err


# --- one recursion, three steps -------------------------------------------------------


def test_centred_form_is_the_expectation_parameter_recursion():
    """η_t = (1 − a) η_{t−1} + a (y, yyᵀ) with the covariance read off as M − μμᵀ."""
    ys = _data()
    a = 0.3
    init = jg.Gaussian(jnp.ones(D), 2.0 * jnp.eye(D))
    mean, second = np.ones(D), 2.0 * np.eye(D) + np.ones((D, D))
    for y in np.asarray(ys):
        mean, second = (1 - a) * mean + a * y, (1 - a) * second + a * np.outer(y, y)
    g = jg.fit(jg.natural_gradient(a), ys, init).estimate
    _close(g.mean, mean, RTOL[jnp.float64])
    _close(g.cov, second - np.outer(mean, mean), RTOL[jnp.float64])


def test_differs_from_fisher_preconditioned_euclidean_step_at_second_order():
    """Fisher-preconditioned Euclidean step: Σ + a(rrᵀ − Σ); the exact one: minus a² rrᵀ."""
    g0 = jg.Gaussian(jnp.array([0.5, -1.0]), jnp.array([[2.0, 0.3], [0.3, 1.0]]))
    y = jnp.array([[1.0, 2.0]])
    r = y[0] - g0.mean
    for a in (0.5, 0.05, 0.005):
        est = jg.natural_gradient(a)
        g = est.estimate(_one_update(est, y, g0))
        euclid = g0.cov + a * (jnp.outer(r, r) - g0.cov)
        _close(g.mean, g0.mean + a * r, 1e-15)
        _close(g.cov - euclid, -(a**2) * jnp.outer(r, r), 1e-14)


ROWWISE = {
    "welford": WELFORD,
    "welford_prior": jg.welford(prior_weight=5.0),
    "constant": jg.natural_gradient(0.05),
    "schedule": jg.natural_gradient(jg.schedules.robbins_monro(0.5, 0.7, 3.0)),
    "exponential": jg.exponential(20.0),
    "exponential_prior": jg.exponential(20.0, prior_weight=2.0),
}


@pytest.mark.parametrize("name", sorted(ROWWISE))
def test_batch_equals_single_row_updates(name):
    est = ROWWISE[name]
    assert est.rowwise
    ys = _data()
    init = jg.Gaussian(jnp.ones(D), 0.5 * jnp.eye(D))
    rows = jg.fit(est, ys, init).estimate

    @jax.jit
    def blocks(state, ys):
        for lo, hi in ((0, 1), (1, 8), (8, 24), (24, N)):  # uneven blocks, one a single row
            state = est.update(state, ys[lo:hi])
        return state

    state = blocks(est.init(init), ys)
    assert int(state.count) == N
    _close(est.estimate(state).mean, rows.mean, RTOL[jnp.float64])
    _close(est.estimate(state).cov, rows.cov, RTOL[jnp.float64])


def test_unit_robbins_monro_schedule_is_welford():
    ys = _data()
    est = jg.natural_gradient(jg.schedules.robbins_monro(1.0))
    g = est.estimate(_one_update(est, ys))
    _close(g.cov, jg.mle(ys).cov, RTOL[jnp.float64])
    _close(g.mean, jg.mle(ys).mean, RTOL[jnp.float64])


def test_natural_gradient_default_is_welford_and_mergeable():
    ys = _data()
    est = jg.natural_gradient()
    a, b = _one_update(est, ys[:25]), _one_update(est, ys[25:])
    assert isinstance(a, WelfordState)
    _close(jg.merge(a, b).cov, jg.mle(ys).cov, RTOL[jnp.float64])


def test_constant_step_keeps_init_and_stays_spd():
    # An outlier-heavy stream with a large step: every covariance stays SPD.
    ys = 100.0 * _data() ** 3
    est = jg.natural_gradient(0.9)
    res = jg.fit(est, ys, trace_every=1)
    assert bool(jnp.all(jg.is_spd(res.trace.estimate.cov)))
    init = _standard()
    mean, cov = _weighted_reference(ys[:5], np.full(5, 0.9), init)
    g = est.estimate(_one_update(est, ys[:5], init))
    _close(g.mean, mean, RTOL[jnp.float64])
    _close(g.cov, cov, RTOL[jnp.float64])


def test_traced_learning_rate_and_half_life_under_vmap():
    ys = _data()

    def run(est):
        state = est.init(_standard())
        state, _ = jax.lax.scan(lambda s, y: (est.update(s, y[None]), None), state, ys)
        return est.estimate(state)

    got = jax.vmap(lambda a: run(jg.natural_gradient(a)))(jnp.array([0.1, 0.5]))
    for i, a in enumerate([0.1, 0.5]):
        est = jg.natural_gradient(a)
        _close(got.cov[i], est.estimate(_one_update(est, ys)).cov, RTOL[jnp.float64])
    got = jax.vmap(lambda h: run(jg.exponential(h)))(jnp.array([5.0, jnp.inf]))
    est = jg.exponential(5.0)
    _close(got.cov[0], est.estimate(_one_update(est, ys)).cov, RTOL[jnp.float64])
    _close(got.cov[1], jg.mle(ys).cov, RTOL[jnp.float64])


# --- exponential ----------------------------------------------------------------------


@pytest.mark.parametrize("prior_weight", [0.0, 3.0])
def test_exponential_equals_weighted_batch_estimate(prior_weight):
    ys = _data()
    half_life = 12.0
    init = jg.Gaussian(jnp.full(D, 2.0), 3.0 * jnp.eye(D))
    t = np.arange(1, N + 1)
    steps = np.maximum(1 / (t + prior_weight), 1 - 2 ** (-1 / half_life))
    mean, cov = _weighted_reference(ys, steps, init)
    est = jg.exponential(half_life, prior_weight)
    state = _one_update(est, ys, init)
    assert isinstance(state, MomentsState) and int(state.count) == N
    _close(est.estimate(state).mean, mean, RTOL[jnp.float64])
    _close(est.estimate(state).cov, cov, RTOL[jnp.float64])


def test_exponential_with_infinite_half_life_is_welford():
    ys = _data()
    w = WELFORD.estimate(_one_update(WELFORD, ys))
    for half_life in (jnp.inf, float("inf")):
        est = jg.exponential(half_life)
        g = est.estimate(_one_update(est, ys))
        # Same weights by two routes (welford's closed form n/(n + b), 1/(n + b) and
        # exponential's sums of log1p(−1/t)): equal to float64 rounding, not bitwise;
        # rounding is relative to the matrix's scale, so small entries get an atol.
        np.testing.assert_allclose(g.cov, w.cov, rtol=1e-13, atol=1e-13 * np.abs(w.cov).max())
        np.testing.assert_allclose(g.mean, w.mean, rtol=1e-13)


# --- prior weight ---------------------------------------------------------------------


def test_prior_weight_is_pseudo_rows():
    ys = _data()
    init = jg.Gaussian(jnp.array([1.0, 2.0, 3.0]), jnp.diag(jnp.array([1.0, 2.0, 3.0])))
    n0 = 4.0
    est = jg.welford(prior_weight=n0)
    g = est.estimate(_one_update(est, ys, init))
    y = np.asarray(ys)
    mu0, cov0 = np.asarray(init.mean), np.asarray(init.cov)
    mean = (n0 * mu0 + y.sum(0)) / (n0 + N)
    scatter = n0 * (cov0 + np.outer(mu0 - mean, mu0 - mean)) + (y - mean).T @ (y - mean)
    _close(g.mean, mean, RTOL[jnp.float64])
    _close(g.cov, scatter / (n0 + N), RTOL[jnp.float64])


@pytest.mark.parametrize("est", [jg.welford(prior_weight=1.0), jg.exponential(5.0, 1.0)])
def test_prior_keeps_estimates_spd_on_singular_data(est):
    d = 5
    ys = _data(d, 40).at[:, 2].set(7.0)  # a constant column, and t ≤ d for the first rows
    res = jg.fit(est, ys, _standard(d), trace_every=1)
    assert bool(jnp.all(jg.is_spd(res.trace.estimate.cov)))
    assert float(jnp.min(jnp.linalg.eigvalsh(res.estimate.cov))) > 1e-3


# --- merge ----------------------------------------------------------------------------


@pytest.mark.parametrize("split", [0, 1, 37, N - 1, N])
def test_merge_equals_one_pass(split):
    ys = _data()
    whole = jg.fit(WELFORD, ys).state  # row by row
    empty = WELFORD.init(_standard())
    a = _one_update(WELFORD, ys[:split]) if split else empty
    b = _one_update(WELFORD, ys[split:]) if split < N else empty
    for merged in (jg.merge(a, b), jg.merge(b, a)):
        assert int(merged.count) == N
        # states keep the mean relative to their origin row: compare the estimates
        _close(WELFORD.estimate(merged).mean, WELFORD.estimate(whole).mean, RTOL[jnp.float64])
        _close(merged.cov, whole.cov, RTOL[jnp.float64])


def test_merge_with_prior_on_one_shard_equals_one_pass_with_prior():
    ys = _data()
    init = jg.Gaussian(jnp.array([3.0, -3.0, 0.0]), 2.0 * jnp.eye(D))
    with_prior = jg.welford(prior_weight=6.0)
    whole = with_prior.estimate(_one_update(with_prior, ys, init))
    merged = jg.merge(_one_update(with_prior, ys[:30], init), _one_update(WELFORD, ys[30:]))
    g = WELFORD.estimate(merged)
    _close(g.mean, whole.mean, RTOL[jnp.float64])
    _close(g.cov, whole.cov, RTOL[jnp.float64])
    with pytest.raises(ValueError, match="twice"):
        jg.merge(merged, _one_update(with_prior, ys, init))


def test_merge_stacked_shards_and_under_jit():
    ys = _data()
    states = [_one_update(WELFORD, ys[i : i + 40]) for i in (0, 40, 80)]
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *states[:2])
    other = jax.tree_util.tree_map(lambda *x: jnp.stack(x), states[2], states[2])
    pair = jg.merge(stacked, other)  # a leading axis: elementwise merges
    _close(pair.cov[1], jg.mle(ys[40:]).cov, RTOL[jnp.float64])
    total = jax.jit(jg.merge)(jg.merge(states[0], states[1]), states[2])
    _close(total.cov, jg.mle(ys).cov, RTOL[jnp.float64])


def test_merge_rejects_other_kinds_and_dimensions():
    w = WELFORD.init(_standard())
    with pytest.raises(ValueError, match="MomentsState"):
        jg.merge(w, jg.exponential(5.0).init(_standard()))
    with pytest.raises(ValueError, match="GradientAscentState"):
        jg.merge(jg.gradient_ascent(optax.sgd(0.01)).init(_standard()), w)
    with pytest.raises(ValueError, match="dimensions"):
        jg.merge(w, WELFORD.init(_standard(2)))


# --- validation and compilation -------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: jg.welford(ddof=-1), "ddof"),
        (lambda: jg.welford(prior_weight=-1.0), "prior_weight"),
        (lambda: jg.natural_gradient(0.0), "learning_rate"),
        (lambda: jg.natural_gradient(1.5), "learning_rate"),
        (lambda: jg.natural_gradient(0.1, prior_weight=2.0), "prior_weight"),
        (lambda: jg.exponential(0.0), "half_life"),
        (lambda: jg.exponential(5.0, prior_weight=-2.0), "prior_weight"),
    ],
)
def test_rejects_bad_settings(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_traced_half_life_compiles_once():
    ys = _data()

    @jax.jit
    def final_cov(half_life):
        est = jg.exponential(half_life)
        return est.estimate(est.update(est.init(_standard()), ys)).cov

    final_cov(3.0)
    final_cov(30.0)
    assert final_cov._cache_size() == 1


def test_float32_long_stream_has_no_drift():
    """10⁶ float32 rows through blocks of 512: the running covariance must not drift.

    A product of rounded factors 1 − 1/t (every one in a block rounds the same way at
    t ~ 10⁵…10⁶) shrank Σ by 0.1–1 % over such streams; sums of log1p and the
    increment form keep the error at float32 rounding of the sums (~1e-5 here)."""
    rng = np.random.default_rng(0)
    ys = (rng.standard_normal((1_000_000, 3)) * [1.0, 10.0, 100.0] + 3.0).astype(np.float32)
    res = jg.fit(jg.welford(), ys)
    ref = np.cov(ys.astype(np.float64).T, bias=True)
    rel = np.abs(np.asarray(res.estimate.cov, np.float64) - ref) / np.sqrt(
        np.outer(np.diag(ref), np.diag(ref))
    )
    assert rel.max() < 1e-4, rel.max()
