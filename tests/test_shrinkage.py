"""Tests for jg.oas and jg.ledoit_wolf on streamed welford states, against
scikit-learn's OAS and LedoitWolf on the same rows (float64).

Ported peer cases (scikit-learn, sklearn/covariance/tests/test_covariance.py, rewritten
here): ``test_ledoit_wolf`` and ``test_oas`` on the diabetes data (all 10 features, one
feature, one sample of 5 features), ``test_ledoit_wolf_small`` (the first 4 features)
and ``test_ledoit_wolf_large`` (10 rows of 20 standard-normal features: d > n).

Tolerances: 1e-12 relative to the covariance's scale, in float64. The streamed
state differs from a two-pass computation only by rounding: O(ε) = 1e-16 per row
and per merge, over ≤ 10³ rows here. With a 10⁶ offset the data themselves carry
an absolute rounding of 10⁶ ε ≈ 1e-10 per entry (σ ≈ 1), which the mean inherits to
first order in the third moments, hence 1e-8 there (the raw-power-sum alternative
is off by ~10¹⁰, checked below).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sklearn
from sklearn.covariance import OAS, LedoitWolf
from sklearn.datasets import load_diabetes, load_digits

import jaxgauss as jg

FOURTH = jg.welford(fourth_moments=True)
PLAIN = jg.welford()
DIABETES = load_diabetes(return_X_y=True)[0]


@functools.partial(jax.jit, static_argnums=0)
def _stream(est, ys, b=16):
    """A one-pass streamed state: updates of b rows in a scan, then one of the rest
    (one compiled program per data shape, which keeps this file fast; ``fit`` is
    used where its blocking is what is tested)."""
    n, d = ys.shape
    head = n - n % b
    state = est.init(jg.Gaussian(jnp.zeros(d, ys.dtype), jnp.eye(d, dtype=ys.dtype)))
    state = jax.lax.scan(lambda s, x: (est.update(s, x), None), state, ys[:head].reshape(-1, b, d))[
        0
    ]
    return est.update(state, ys[head:]) if head < n else state


def _state(est, ys):
    return _stream(est, jnp.asarray(ys, jnp.float64))


_lw, _oas = jax.jit(jg.ledoit_wolf), jax.jit(jg.oas)
_lw_s, _oas_s = jax.jit(jg.estimators.ledoit_wolf_shrinkage), jax.jit(jg.estimators.oas_shrinkage)


def _close(actual, desired, rtol=1e-12, scale=None):
    """max |actual − desired| ≤ rtol · scale (default: max |desired|)."""
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    scale = float(np.max(np.abs(desired))) if scale is None else scale
    np.testing.assert_allclose(actual, desired, rtol=0, atol=rtol * scale)


CASES = {
    "diabetes": DIABETES,
    "diabetes-4-features": DIABETES[:, :4],  # test_ledoit_wolf_small
    "diabetes-1-feature": DIABETES[:, :1],
    "wide-10x20": np.random.RandomState(0).normal(size=(10, 20)),  # test_ledoit_wolf_large
}


@pytest.mark.parametrize("name", list(CASES))
def test_equals_scikit_learn(name):
    # OAS's formula changed in scikit-learn 1.3 (PR #23867); jaxgauss follows 1.3+.
    assert tuple(int(p) for p in sklearn.__version__.split(".")[:2]) >= (1, 3)
    ys = CASES[name]
    lw, oa = LedoitWolf().fit(ys), OAS().fit(ys)
    state = _state(FOURTH, ys)
    _close(_lw_s(state), lw.shrinkage_)
    _close(_lw(state).cov, lw.covariance_)
    _close(_lw(state).mean, lw.location_, scale=np.max(np.abs(ys)))
    _close(_oas_s(state), oa.shrinkage_)
    _close(_oas(state).cov, oa.covariance_)


def test_oas_needs_no_fourth_moments():
    _close(_oas(_state(PLAIN, DIABETES)).cov, OAS().fit(DIABETES).covariance_)


def test_one_sample_gives_zero_covariance():
    # scikit-learn's one-sample case: np.arange(5) as one row -> zeros, not NaN.
    state = _state(FOURTH, np.arange(5.0)[None])
    for g in (_lw(state), _oas(state)):
        np.testing.assert_array_equal(np.asarray(g.cov), np.zeros((5, 5)))


def test_large_offset_does_not_cancel():
    rng = np.random.default_rng(1)
    ys = rng.normal(size=(300, 4)) @ np.diag([1.0, 2.0, 0.5, 1.5]) + 1e6
    lw, oa = LedoitWolf().fit(ys), OAS().fit(ys)
    state = _state(FOURTH, ys)
    _close(_lw(state).cov, lw.covariance_, 1e-8)
    _close(_oas(state).cov, oa.covariance_, 1e-8)
    _close(np.diagonal(state.fourth), np.mean((ys - ys.mean(0)) ** 4, 0), 1e-8)
    # The same fourth moments from raw power sums, E[y⁴] − 4μE[y³] + 6μ²E[y²] − 3μ⁴,
    # are off by orders of magnitude: the data make the test able to fail.
    m = ys.mean(0)
    raw = np.mean(ys**4, 0) - 4 * m * np.mean(ys**3, 0) + 6 * m**2 * np.mean(ys**2, 0) - 3 * m**4
    assert np.max(np.abs(raw - np.mean((ys - m) ** 4, 0))) > 1e3


def test_merge_and_groups():
    ys = DIABETES
    whole = LedoitWolf().fit(ys)
    parts = [_state(FOURTH, ys[i : i + 221]) for i in (0, 221)]
    merged = jax.jit(jg.merge)(*parts)
    _close(_lw(merged).cov, whole.covariance_)
    # Groups: states with a leading group axis give one estimate per group.
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *parts[:2])
    both = _lw(stacked).cov
    for k in range(2):
        rows = ys[k * 221 : (k + 1) * 221]
        _close(both[k], LedoitWolf().fit(rows).covariance_)
        _close(_oas(stacked).cov[k], OAS().fit(rows).covariance_)


def test_digits_singular_mle_but_shrunk_spd():
    # scikit-learn's digits: 64 pixels, several always 0, so the MLE is singular.
    xs = load_digits().data.astype(np.float64)
    train, test = xs[::2], xs[1::2]
    state = _state(FOURTH, train)
    mle = jg.Gaussian(state.mean, state.cov)
    assert not np.all(np.isfinite(np.asarray(jg.log_likelihood(mle, test))))
    for g, peer in ((_lw(state), LedoitWolf()), (_oas(state), OAS())):
        assert bool(jg.is_spd(g.cov))
        held_out = np.asarray(jg.log_likelihood(g, test))
        assert np.all(np.isfinite(held_out))
        # the same held-out log-likelihood as scikit-learn's score (its mean per row)
        _close(held_out.mean(), peer.fit(train).score(test), 1e-9)


def test_fit_blocks_equal_sklearn():
    # Through fit's blocked scan (updates of 13 rows, two per compiled step), as users
    # call it; 442 = 13 · 34 rows, so one program is compiled.
    state = jg.fit(FOURTH, DIABETES, batch_size=13, block_rows=26).state
    _close(_lw(state).cov, LedoitWolf().fit(DIABETES).covariance_)


def test_errors():
    g = jg.Gaussian(jnp.zeros(3), jnp.eye(3))
    plain, fourth = PLAIN.init(g), FOURTH.init(g)
    with pytest.raises(ValueError, match="fourth_moments=True"):
        jg.ledoit_wolf(plain)
    with pytest.raises(ValueError, match="fourth_moments=True"):
        jg.estimators.ledoit_wolf_shrinkage(plain)
    with pytest.raises(ValueError, match="welford state"):
        jg.oas(jg.exponential(10.0).init(g))
    with pytest.raises(ValueError, match="fourth moments and one without"):
        jg.merge(plain, fourth)
