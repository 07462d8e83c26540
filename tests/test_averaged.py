"""Tests for jaxgauss.averaged: the Polyak–Ruppert average against the explicit mean of
the inner iterates, burn-in, counting by updates, and the divergence guard."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxgauss as jg
from jaxgauss.estimators.averaged import AveragedState

N, D = 60, 2
INNER = jg.gradient_ascent(optax.sgd(0.05), "cholesky")


def _data(n=N, d=D):
    truth = jg.Gaussian(jnp.arange(1.0, d + 1), jnp.eye(d) + 0.5)
    return jg.streams.sample(jax.random.key(3), truth, n)


def _init():
    return jg.Gaussian(jnp.zeros(D), jnp.eye(D))


def _inner_iterates(ys, batch_size=1):
    """The inner estimates after each update, from an un-averaged run."""
    return jg.fit(INNER, ys, batch_size=batch_size, trace_every=1).trace.estimate


def test_average_of_iterates_for_every_start():
    """Estimate after t updates = mean of the iterates s+1..t (inner estimate if t ≤ s).
    Float64; the running mean differs from np.mean by rounding only (1e-12)."""
    ys = _data()
    iterates = _inner_iterates(ys)
    starts = jnp.array([0, 1, 17, N - 1, N, N + 5], jnp.int32)

    @jax.jit
    @jax.vmap
    def run(start):  # one compilation for every start: start is traced
        est = jg.averaged(INNER, start)
        state, _ = jax.lax.scan(lambda s, y: (est.update(s, y[None]), None), est.init(_init()), ys)
        return est.estimate(state), state.count

    got, count = run(starts)
    assert count.dtype == jg.estimators.counter_dtype() and bool(jnp.all(count == N))
    for i, s in enumerate(starts.tolist()):
        keep = slice(min(s, N - 1), N)
        np.testing.assert_allclose(got.mean[i], iterates.mean[keep].mean(0), rtol=1e-12)
        np.testing.assert_allclose(got.cov[i], iterates.cov[keep].mean(0), rtol=1e-12)


def test_counts_updates_not_rows():
    ys = _data()
    est = jg.averaged(INNER, start=2)
    assert not est.rowwise
    res = jg.fit(est, ys, batch_size=5)
    iterates = _inner_iterates(ys, batch_size=5)
    assert isinstance(res.state, AveragedState) and int(res.state.count) == N // 5
    np.testing.assert_allclose(res.estimate.mean, iterates.mean[2:].mean(0), rtol=1e-12)
    np.testing.assert_allclose(res.estimate.cov, iterates.cov[2:].mean(0), rtol=1e-12)


def test_averaging_welford_means_averages_running_means():
    ys = _data()
    res = jg.fit(jg.averaged(jg.welford()), ys)
    running = np.cumsum(np.asarray(ys), 0) / np.arange(1, N + 1)[:, None]
    np.testing.assert_allclose(res.estimate.mean, running.mean(0), rtol=1e-12)


def test_inner_divergence_is_caught():
    # The question's update with a large step leaves the SPD cone; averaging hides
    # nothing: the guard stops at the same row.
    question = jg.gradient_ascent(optax.sgd(1.5), "covariance")
    ys = jg.streams.sample(jax.random.key(3), _init(), N)
    inner = jg.fit(question, ys)
    outer = jg.fit(jg.averaged(question, start=0), ys)
    assert int(inner.diverged_at) >= 0
    assert int(outer.diverged_at) == int(inner.diverged_at)
    est = jg.averaged(INNER)
    state = est.init(_init())
    assert bool(est.is_valid(state))
    bad = state._replace(average=state.average._replace(mean=jnp.full(D, jnp.inf)))
    assert not bool(est.is_valid(bad))


@pytest.mark.parametrize("start", [-1, 1.5, True])
def test_rejects_bad_start(start):
    with pytest.raises(ValueError, match="start"):
        jg.averaged(INNER, start)
