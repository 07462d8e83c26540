"""Tests for forgetting by window: jg.downdate (removing rows from a welford state)
and jg.rolling (the moments of the last w rows).

Ported peer cases (rewritten here): river's ``test_covariance_revert``
(river/covariance/test_emp.py: update with all rows, revert the second half, equal
to the first half alone) and river's rolling-statistics checks (``Rolling(stat,
window)`` against the statistic of the last w rows after every row, here against
np.cov for w = 1 and 7, row by row through fit's trace). TFP's windowed statistics
are the same quantity.

Tolerances: float64 at 1e-12 relative (O(ε) per row over ≤ 10² rows). The float32
drift test derives its bound in place.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgauss as jg


def _close(actual, desired, rtol):
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    np.testing.assert_allclose(actual, desired, rtol=0, atol=rtol * np.max(np.abs(desired)))


def _rows(n=48, d=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * [1.0, 3.0] + [5.0, -2.0]


def test_revert_second_half_leaves_first_half():
    ys = jnp.asarray(_rows())
    est = jg.welford()
    update = jax.jit(est.update)  # one compiled shape: 24 rows
    first = update(est.init(jg.Gaussian(jnp.zeros(2), jnp.eye(2))), ys[:24])
    reverted = jax.jit(jg.downdate)(update(first, ys[24:]), ys[24:])
    assert int(reverted.count) == 24
    _close(reverted.mean, first.mean, 1e-12)
    _close(reverted.cov, first.cov, 1e-12)


@pytest.mark.parametrize("window", [1, 7])
def test_rolling_equals_np_cov_after_every_row(window):
    ys = _rows()
    res = jg.fit(jg.rolling(window), ys, trace_every=1)
    for t in range(len(ys)):
        rows = ys[max(0, t + 1 - window) : t + 1]
        _close(res.trace.estimate.mean[t], rows.mean(0), 1e-12)
        _close(res.trace.estimate.cov[t], np.cov(rows.T, bias=True), 1e-12)


@pytest.mark.parametrize("block_rows", [3, 16])
def test_rolling_blocks_equal_rows(block_rows):
    # Blocks of 3 rows (< w: downdates) and of 16 (≥ w: the window is recomputed).
    ys = _rows()
    res = jg.fit(jg.rolling(7, ddof=1), ys, block_rows=block_rows)
    _close(res.estimate.cov, np.cov(ys[-7:].T), 1e-12)
    _close(res.estimate.mean, ys[-7:].mean(0), 1e-12)


@pytest.mark.slow  # 10⁶ rows
def test_float32_drift_after_a_million_rows():
    # 10⁶ float32 rows, the first half 100 times louder, all offset by 10; w = 1000;
    # blocks of 500 rows, so every block removes 500 rows by downdate.
    n, d, w = 10**6, 4, 1000
    rng = np.random.default_rng(0)
    ys = rng.normal(size=(n, d)).astype(np.float32)
    ys[: n // 2] *= 100
    ys += np.float32(10)
    ref = np.cov(ys[-w:].astype(np.float64).T)

    def error(est):
        res = jg.fit(est, ys, block_rows=500, chunk_rows=n)
        assert res.estimate.cov.dtype == jnp.float32
        return np.max(np.abs(np.asarray(res.estimate.cov, np.float64) - ref)) / np.max(np.abs(ref))

    # Re-anchored every w rows, the error is what ≤ w calm rows' downdates add since
    # the last two-pass recomputation: at most ~w·ε(float32) = 6e-5 even if every step
    # erred the same way (measured: 2.1e-7).
    assert error(jg.rolling(w, ddof=1)) < 6e-5
    # Without re-anchoring, the loud half's removal leaves residues of
    # O(ε·100²) relative to the calm window's variance (measured: 0.45).
    assert error(jg.rolling(w, ddof=1, reanchor_every=0)) > 1e-2


def test_errors():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="window"):
            jg.rolling(bad)
    with pytest.raises(ValueError, match="reanchor_every"):
        jg.rolling(3, reanchor_every=-1)
    state = jg.fit(jg.welford(), _rows(n=5)).state
    with pytest.raises(ValueError, match="cannot remove 6 rows"):
        jg.downdate(state, jnp.zeros((6, 2)))
    with pytest.raises(ValueError, match=r"shape \(b, 2\)"):
        jg.downdate(state, jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="welford state"):
        jg.downdate(
            jg.exponential(3.0).init(jg.Gaussian(jnp.zeros(2), jnp.eye(2))), jnp.zeros((1, 2))
        )


def test_impossible_state_operations_are_refused():
    """Issue 25, case 8: removing rows a state never absorbed returned a negative
    variance, and merging a grouped state with an ungrouped one broadcast the counts.
    Both are ValueErrors now; removing rows it did absorb still works."""
    x = np.random.default_rng(0).standard_normal((500, 2))
    state = jg.fit(jg.welford(), x).state
    with pytest.raises(ValueError, match="negative variance .* not all rows the state absorbed"):
        jg.downdate(state, x[:3] + 50.0)
    kept = jg.downdate(state, x[:100])
    np.testing.assert_allclose(kept.cov, jg.mle(x[100:]).cov, rtol=1e-5)
    grouped = jg.fit(jg.welford(), x, groups=np.arange(500) % 5).state
    with pytest.raises(ValueError, match=r"means \(5, 2\) with one of \(2,\)"):
        jg.merge(grouped, state)
    with pytest.raises(ValueError, match=r"means \(5, 2\) with one of \(3, 2\)"):
        jg.merge(grouped, jg.fit(jg.welford(), x, groups=np.arange(500) % 3).state)


def test_downdate_keeps_float32_accuracy_with_an_offset_and_warns_on_cancellation():
    """Issue 25, case 7: removing float64 rows offset by 1e6 from a float32 state lost
    0.3-0.9 % of the covariance (the rows were cast to float32 before leaving the
    offset); and removing 990 rows of scale 1e4 while keeping 10 unit rows returned a
    covariance off by a factor ~1 700 that looked SPD. Now the rows leave the offset
    in float64 (error at float32 rounding), and the cancellation warns with its bound
    (the warning's 64-ulp bound is ~1e5 here, the variance left ~0.4); an ordinary
    downdate does not warn."""
    rng = np.random.default_rng(0)
    y = rng.standard_normal((2000, 2)) + 1e6
    with jax.enable_x64(False), warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning on an ordinary downdate
        left = jg.downdate(jg.fit(jg.welford(), y).state, y[:1000])
    reference = np.cov(y[1000:].T, bias=True)
    assert np.max(np.abs(np.asarray(left.cov) - reference)) < 1e-5 * np.max(reference)
    x = np.concatenate([1e4 * rng.standard_normal((990, 2)), rng.standard_normal((10, 2))])
    with jax.enable_x64(False):
        state = jg.fit(jg.welford(), x).state
        with pytest.warns(RuntimeWarning, match=r"cancelled most of column 0.* rounding bound"):
            jg.downdate(state, x[:990])
