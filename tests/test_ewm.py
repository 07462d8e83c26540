"""``jg.ewm`` against pandas' own ``ewm(...).mean()`` and ``.cov(bias=...)``.

Tolerance: 1e-9 relative to each row's largest entry (the issue's bound). A float64
recursion matches pandas' to ~1e-15 normwise (measured), not entry by entry where a
covariance entry is near zero, hence normwise per row.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgauss as jg

pd = pytest.importorskip("pandas")

D = 3
N = 40
PARAMETERISATIONS = [
    {"alpha": 0.3},
    {"halflife": 4.0},
    {"span": 7.0},
    {"com": 2.5},
]


def _rows(n=N, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, D)) @ np.array([[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.2, -0.3, 2.0]]) + 5
    )


def _pandas(x, kw, adjust, bias):
    e = pd.DataFrame(x).ewm(**kw, adjust=adjust)
    return e.mean().to_numpy(), e.cov(bias=bias).to_numpy().reshape(len(x), D, D)


def _rowwise_err(a, b):
    """max over rows of max|a − b| / max|b| (each row's own scale; a row of zeros,
    the scatter of one row, must be matched exactly)."""
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    scale = np.max(np.abs(b), axis=1)
    err = np.max(np.abs(a - b), axis=1)
    return float(
        np.max(
            np.where(scale > 0, err / np.where(scale > 0, scale, 1), np.where(err > 0, np.inf, 0))
        )
    )


def _trace(est, x, **kw):
    res = jg.fit(est, jnp.asarray(x), trace_every=1, **kw)
    return np.asarray(res.trace.estimate.mean), np.asarray(res.trace.estimate.cov), res


def _check_against_pandas(kw, adjust, bias, batch_size=1):
    x = _rows()
    mean, cov, _ = _trace(jg.ewm(**kw, adjust=adjust, bias=bias), x, batch_size=batch_size)
    p_mean, p_cov = _pandas(x, kw, adjust, bias)
    rows = np.arange(batch_size - 1, N, batch_size)  # one snapshot per batch
    p_mean, p_cov = p_mean[rows], p_cov[rows]
    assert _rowwise_err(mean, p_mean) < 1e-9
    defined = ~np.isnan(p_cov[:, 0, 0])
    assert _rowwise_err(cov[defined], p_cov[defined]) < 1e-9
    # pandas' NaN (bias=False after one row): ewm gives the uncorrected scatter, 0
    np.testing.assert_array_equal(cov[~defined], 0.0)
    assert defined.sum() == len(rows) - (0 if bias or batch_size > 1 else 1)


# Quick, through fit's trace: two of the four (adjust, bias) pairs; every
# combination runs with -m slow, through a scan.
@pytest.mark.parametrize(("adjust", "bias"), [(True, False), (False, True)])
def test_alpha_equals_pandas_at_every_row(adjust, bias):
    _check_against_pandas({"alpha": 0.3}, adjust, bias)


@pytest.mark.slow
@pytest.mark.parametrize("adjust", [True, False])
@pytest.mark.parametrize("kw", PARAMETERISATIONS, ids=lambda kw: next(iter(kw)))
def test_every_combination_equals_pandas_at_every_row_through_a_scan(kw, adjust):
    """All 16 combinations; one compiled scan per (parameterisation, adjust) gives
    both biases' estimates at every row (bias changes only ``estimate``)."""
    x = _rows()
    ests = [jg.ewm(**kw, adjust=adjust, bias=bias) for bias in (True, False)]

    @jax.jit
    def every_row(x):
        def step(state, row):
            state = ests[0].update(state, row[None])
            return state, [est.estimate(state) for est in ests]

        return jax.lax.scan(step, ests[0].init(jg.Gaussian.standard(D, x.dtype)), x)[1]

    for bias, g in zip((True, False), every_row(jnp.asarray(x)), strict=True):
        p_mean, p_cov = _pandas(x, kw, adjust, bias)
        assert _rowwise_err(np.asarray(g.mean), p_mean) < 1e-9
        defined = ~np.isnan(p_cov[:, 0, 0])
        assert _rowwise_err(np.asarray(g.cov)[defined], p_cov[defined]) < 1e-9
        np.testing.assert_array_equal(np.asarray(g.cov)[~defined], 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("adjust", [True, False])
def test_batches_equal_rows(adjust):
    _check_against_pandas({"span": 5.0}, adjust, False, batch_size=4)


@pytest.mark.slow
@pytest.mark.parametrize("adjust", [True, False])
def test_alpha_one_keeps_the_last_row_and_the_correction_stays_undefined(adjust):
    # α = 1: every weight but the last row's is 0, V = 1: pandas' cov(bias=False) is
    # NaN at every row, ewm's the uncorrected 0
    x = _rows(5)
    g = jg.fit(jg.ewm(alpha=1.0, adjust=adjust), jnp.asarray(x)).estimate
    np.testing.assert_array_equal(g.mean, x[-1])
    np.testing.assert_array_equal(g.cov, 0.0)
    assert np.all(np.isnan(_pandas(x, {"alpha": 1.0}, adjust, False)[1][1:]))


@pytest.mark.slow
@pytest.mark.parametrize("adjust", [True, False])
def test_integer_weights_equal_repeated_rows(adjust):
    x = _rows(8)
    w = np.array([3, 1, 0, 2, 1, 4, 0, 2])
    est = jg.ewm(com=1.5, adjust=adjust, bias=False)
    weighted = jg.fit(est, jnp.asarray(x), weights=jnp.asarray(w, float), batch_size=3)
    repeated = np.repeat(x, w, axis=0)
    p_mean, p_cov = _pandas(repeated, {"com": 1.5}, adjust, False)
    np.testing.assert_allclose(weighted.estimate.mean, p_mean[-1], rtol=1e-12)
    assert _rowwise_err(np.asarray(weighted.estimate.cov)[None], p_cov[-1:]) < 1e-9
    assert float(weighted.state.count) == w.sum()


@pytest.mark.slow
def test_continuation_and_checkpoint_equal_one_pass(tmp_path):
    x = _rows()
    est = jg.ewm(halflife=5.0, adjust=True, bias=False)
    whole = jg.fit(est, jnp.asarray(x))
    first = jg.fit(est, jnp.asarray(x[:13]))
    path = jg.checkpoint.save(tmp_path / "ewm", first.state, name="ewm")
    state = jg.checkpoint.load(path, first.state, name="ewm")
    second = jg.fit(est, jnp.asarray(x[13:]), state=state)
    np.testing.assert_allclose(second.estimate.mean, whole.estimate.mean, rtol=1e-13)
    np.testing.assert_allclose(second.estimate.cov, whole.estimate.cov, rtol=1e-12)


@pytest.mark.slow
def test_merge_refuses_ewm_states():
    state = jg.fit(jg.ewm(alpha=0.5), jnp.asarray(_rows(4))).state
    with pytest.raises(ValueError, match="order"):
        jg.merge(state, state)


@pytest.mark.slow
def test_the_initial_gaussian_is_forgotten_at_the_first_row():
    x = _rows(3)
    far = jg.Gaussian(jnp.full(D, 1e6), 1e6 * jnp.eye(D))
    for adjust in (True, False):
        a = jg.fit(jg.ewm(alpha=0.2, adjust=adjust), jnp.asarray(x)).estimate
        b = jg.fit(jg.ewm(alpha=0.2, adjust=adjust), jnp.asarray(x), init=far).estimate
        np.testing.assert_allclose(a.mean, b.mean, rtol=1e-14)
        np.testing.assert_allclose(a.cov, b.cov, rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_float32_with_an_offset_keeps_float32_accuracy():
    # the state keeps its mean relative to the first row (``fit``'s frame)
    x = _rows()
    with jax.enable_x64(False):
        plain = jg.fit(jg.ewm(span=10.0), x).estimate
        moved = jg.fit(jg.ewm(span=10.0), x + 1e7).estimate
    p_mean, p_cov = _pandas(x, {"span": 10.0}, True, False)
    assert moved.cov.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(moved.mean, float) - 1e7, p_mean[-1], atol=1.0 + 1e-4)
    assert _rowwise_err(np.asarray(moved.cov, float)[None], p_cov[-1:]) < 1e-5
    assert _rowwise_err(np.asarray(plain.cov, float)[None], p_cov[-1:]) < 1e-5


def test_traced_alpha_in_a_sweep_and_a_bad_one_is_rejected_by_the_guard():
    x = jnp.asarray(_rows())

    @jax.jit
    def final(alpha):
        est = jg.ewm(alpha=alpha, adjust=False)
        state = est.init(jg.Gaussian.standard(D, jnp.float64))
        state = jax.lax.scan(lambda s, y: (est.update(s, y[None]), None), state, x)[0]
        return est.estimate(state).mean, est.is_valid(state)

    mean, valid = final(0.3)
    np.testing.assert_allclose(mean, _pandas(np.asarray(x), {"alpha": 0.3}, False, False)[0][-1])
    assert bool(valid) and not bool(final(1.5)[1])


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({}, "exactly one"),
        ({"alpha": 0.5, "span": 3.0}, "exactly one"),
        ({"alpha": 0.0}, "alpha must be in"),
        ({"alpha": 1.5}, "alpha must be in"),
        ({"halflife": 0.0}, "halflife must be > 0"),
        ({"span": 0.5}, "span must be >= 1"),
        ({"com": -1.0}, "com must be >= 0"),
        ({"alpha": "0.5"}, "alpha must be a number"),
        ({"alpha": 0.5, "adjust": 1}, "adjust must be True or False"),
    ],
)
def test_bad_settings_are_refused_naming_the_argument(kw, match):
    with pytest.raises(ValueError, match=match):
        jg.ewm(**kw)


def test_weights_need_the_weighted_form():
    est = jg.ewm(alpha=0.5)
    state = est.init(jg.Gaussian.standard(D))
    with pytest.raises(ValueError, match="weighted=True"):
        est.update(state, jnp.ones((2, D)), jnp.ones(2))


@pytest.mark.slow
def test_groups_equal_pandas_groupby_ewm():
    """A grouped fit runs each group's ewm on its own rows (padding rows weigh 0):
    pandas' ``groupby(...).ewm(...)`` of each group."""
    rng = np.random.default_rng(0)
    x, g = rng.normal(size=(60, D)), rng.integers(0, 3, 60)
    res = jg.fit(jg.ewm(span=5.0), jnp.asarray(x), groups=g, n_groups=3, batch_size=7)
    for k in range(3):
        p_mean, p_cov = _pandas(x[g == k], {"span": 5.0}, True, False)
        np.testing.assert_allclose(res.estimate.mean[k], p_mean[-1], rtol=1e-12)
        assert _rowwise_err(np.asarray(res.estimate.cov[k])[None], p_cov[-1:]) < 1e-9
