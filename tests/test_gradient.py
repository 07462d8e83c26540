"""gradient_ascent: the question's exact update, optimizer plumbing, traced learning rates."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxgauss as jg


def _question_step(mean, cov, y, alpha):
    """The matrix-cookbook step of the question, in NumPy float64 with an explicit inverse."""
    p = np.linalg.inv(cov)
    r = y - mean
    grad_cov = -0.5 * (p - p @ np.outer(r, r) @ p)
    return mean + alpha * p @ r, cov + alpha * grad_cov


@pytest.mark.parametrize("d", [1, 3])
def test_sgd_on_covariance_is_the_questions_update(d):
    truth = jg.streams.random_truth(jax.random.key(1), d, 10.0, dtype=jnp.float64)
    ys = np.asarray(jg.streams.sample(jax.random.key(2), truth, 20))
    est = jg.gradient_ascent(optax.sgd(0.002), "covariance")
    state, update = est.init(jg.Gaussian(jnp.zeros(d), jnp.eye(d))), jax.jit(est.update)
    mean, cov = np.zeros(d), np.eye(d)
    for y in ys:
        state = update(state, jnp.asarray(y)[None])
        mean, cov = _question_step(mean, cov, y, 0.002)
    g = est.estimate(state)
    np.testing.assert_allclose(g.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(g.cov, cov, rtol=1e-12)
    assert int(state.count) == 20


def test_batch_step_uses_the_batch_mean_gradient():
    d = 2
    est = jg.gradient_ascent(optax.sgd(0.01), "covariance")
    g0 = jg.Gaussian(jnp.zeros(d), jnp.eye(d))
    batch = jg.streams.sample(jax.random.key(3), g0, 8)
    g = est.estimate(jax.jit(est.update)(est.init(g0), batch))  # one program, not each op's
    grads = jax.jit(jax.vmap(lambda y: jg.cookbook_gradients(g0, y)))(batch)
    np.testing.assert_allclose(g.mean, 0.01 * grads.mean.mean(0), rtol=1e-12)
    np.testing.assert_allclose(g.cov, jnp.eye(d) + 0.01 * grads.cov.mean(0), rtol=1e-12)


def test_optimizer_receives_params():
    seen = []

    def needs_params():
        def update(updates, state, params=None):
            if params is None:
                raise AssertionError("params were not passed")
            seen.append(jax.tree_util.tree_structure(params))
            return updates, state

        return optax.GradientTransformation(lambda p: optax.EmptyState(), update)

    est = jg.gradient_ascent(optax.chain(needs_params(), optax.sgd(0.1)), "precision")
    state = est.init(jg.Gaussian(jnp.zeros(2), jnp.eye(2)))
    est.update(state, jnp.ones((1, 2)))
    assert seen and seen[0] == jax.tree_util.tree_structure(state.params)


@pytest.mark.parametrize("name", ["covariance", "cholesky", "precision", "diagonal"])
def test_traced_learning_rate_under_vmap(name):
    lrs = jnp.array([1e-3, 1e-2, 5e-2])
    g0 = jg.Gaussian(jnp.zeros(2), jnp.eye(2))
    batch = jnp.array([[0.5, -1.0], [2.0, 0.3]])

    def one(lr):
        est = jg.gradient_ascent(optax.sgd(lr), name)
        return est.estimate(est.update(est.init(g0), batch))

    batched = jax.vmap(one)(lrs)
    for i, lr in enumerate(lrs):
        ref = one(float(lr))
        np.testing.assert_allclose(batched.cov[i], ref.cov, rtol=1e-12)
        np.testing.assert_allclose(batched.mean[i], ref.mean, rtol=1e-12)


def test_is_valid():
    cov_est = jg.gradient_ascent(optax.sgd(0.1), "covariance")
    bad = cov_est.init(jg.Gaussian(jnp.zeros(2), jnp.eye(2)))
    bad = bad._replace(params=bad.params._replace(matrix=jnp.array([[1.0, 2.0], [2.0, 1.0]])))
    assert not bool(cov_est.is_valid(bad))  # finite but indefinite: rejected

    chol_est = jg.gradient_ascent(optax.sgd(0.1), "cholesky")
    state = chol_est.init(jg.Gaussian(jnp.zeros(2), jnp.eye(2)))
    assert bool(chol_est.is_valid(state))
    nan_state = state._replace(params=state.params._replace(mean=jnp.array([jnp.nan, 0.0])))
    assert not bool(chol_est.is_valid(nan_state))
