"""Tests for the streamed third/fourth moments (welford(fourth_moments=True)) and
jg.estimators.skewness / jg.estimators.kurtosis against scipy.stats.skew / kurtosis on the same rows.

Ported peer cases (scipy, scipy/stats/tests/test_stats.py, ``TestMoments``, rewritten
here): ``test_skewness`` and ``test_kurtosis`` on the MathWorks example
[1.165, 0.6268, 0.0751, 0.3516, -0.6965] (skewness −0.29322304336607, bias=False
−0.437111105023940; Pearson kurtosis 2.1658856802973, bias=False 3.663542721189047)
and on [1, 2, 3, 4] (skewness 0, Pearson kurtosis 1.64); one row (NaN);
``test_skew_constant_value`` / ``test_kurtosis_constant_value`` (a constant column,
also scaled by 2^±50: NaN).

Tolerances: float64; 1e-12 where the rows are few (O(ε) per row), 1e-10 for the
scipy constants (they are given to 13-15 digits).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import jaxgauss as jg

FOURTH = jg.welford(fourth_moments=True)
MATHWORKS = [1.165, 0.6268, 0.0751, 0.3516, -0.6965]


@functools.partial(jax.jit, static_argnums=0)
def _stream(est, ys, b=3):
    """A streamed state: updates of b rows in a scan, then one of the rest."""
    n, d = ys.shape
    head = n - n % b
    state = est.init(jg.Gaussian(jnp.zeros(d, ys.dtype), jnp.eye(d, dtype=ys.dtype)))
    state = jax.lax.scan(lambda s, x: (est.update(s, x), None), state, ys[:head].reshape(-1, b, d))[
        0
    ]
    return est.update(state, ys[head:]) if head < n else state


def _state(ys):
    return _stream(FOURTH, jnp.asarray(ys, jnp.float64).reshape(len(ys), -1))


@functools.partial(jax.jit, static_argnames=("bias", "fisher"))
def _moments(state, bias=True, fisher=True):
    return jg.estimators.skewness(state, bias=bias), jg.estimators.kurtosis(
        state, fisher=fisher, bias=bias
    )


def test_scipy_constants():
    skew, pearson = _moments(_state(MATHWORKS), fisher=False)
    np.testing.assert_allclose(skew, [-0.29322304336607], rtol=0, atol=1e-10)
    np.testing.assert_allclose(pearson, [2.1658856802973], rtol=1e-10)
    skew, pearson = _moments(_state(MATHWORKS), bias=False, fisher=False)
    np.testing.assert_allclose(skew, [-0.437111105023940], rtol=0, atol=1e-10)
    np.testing.assert_allclose(pearson, [3.663542721189047], rtol=1e-10)
    skew, pearson = _moments(_state([1.0, 2.0, 3.0, 4.0]), fisher=False)
    np.testing.assert_allclose(skew, [0.0], atol=1e-12)
    np.testing.assert_allclose(pearson, [1.64], rtol=1e-12)


def test_degenerate_rows_give_nan_as_scipy():
    assert np.all(np.isnan(_moments(_state([4.0]))))  # one row
    constant = np.full(10, -0.27829495)
    for scale in (1.0, 2.0**50, 2.0**-50):
        assert np.all(np.isnan(_moments(_state(constant * scale))))
        assert np.all(np.isnan(_moments(_state(constant * scale), bias=False)))


@pytest.mark.parametrize("bias", [True, False])
def test_equals_scipy_on_skewed_data(bias):
    # Exponential and uniform columns (skewness 2 / 0, excess kurtosis 6 / −1.2), with a
    # 10⁶ offset on one column: centred updates keep full accuracy there.
    rng = np.random.default_rng(0)
    ys = np.column_stack(
        [rng.exponential(size=200), rng.uniform(size=200) + 1e6, rng.normal(size=200)]
    )
    skew, kurt = _moments(_state(ys), bias=bias)
    # scipy's own two-pass float64 result carries its mean's rounding, 1e6·ε ≈ 1e-10,
    # which enters m₃ to first order: 3·|δμ|/σ ≈ 1e-8 in the skewness of the offset
    # column (measured 1.1e-8), so scipy is matched at 5e-8 ...
    np.testing.assert_allclose(skew, scipy.stats.skew(ys, bias=bias), rtol=0, atol=5e-8)
    np.testing.assert_allclose(kurt, scipy.stats.kurtosis(ys, bias=bias), rtol=0, atol=5e-8)
    if np.finfo(np.longdouble).eps < 1e-18:
        # ... and an extended-precision two-pass reference at 1e-9 (measured 1.4e-10).
        ext = ys.astype(np.longdouble)
        e = ext - ext.mean(0)
        m2, m3, m4 = ((e**k).mean(0) for k in (2, 3, 4))
        g1, g2 = m3 / m2**1.5, m4 / m2**2 - 3
        if not bias:
            n = len(ys)
            g1 = g1 * np.sqrt(n * (n - 1.0)) / (n - 2)
            g2 = ((n + 1) * g2 + 6) * (n - 1) / ((n - 2) * (n - 3))
        np.testing.assert_allclose(skew, g1.astype(np.float64), rtol=0, atol=1e-9)
        np.testing.assert_allclose(kurt, g2.astype(np.float64), rtol=0, atol=1e-9)


def test_merge_and_downdate_higher_moments():
    rng = np.random.default_rng(1)
    ys = rng.exponential(size=(60, 3)) + rng.normal(size=3) * 10
    whole, head = _state(ys), _state(ys[:30])
    merged = jax.jit(jg.merge)(head, _state(ys[30:]))
    removed = jax.jit(jg.downdate)(whole, jnp.asarray(ys[30:]))
    for a, b in ((merged, whole), (removed, head)):
        for field in ("mean", "cov", "third", "fourth"):
            ref = getattr(b, field)
            np.testing.assert_allclose(
                getattr(a, field), ref, rtol=0, atol=1e-12 * np.max(np.abs(ref))
            )


def test_errors():
    plain = jg.welford().init(jg.Gaussian(jnp.zeros(2), jnp.eye(2)))
    for f in (jg.estimators.skewness, jg.estimators.kurtosis):
        with pytest.raises(ValueError, match="fourth_moments=True"):
            f(plain)
