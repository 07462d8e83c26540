"""Parameterisations: exact round trips, log-likelihoods and gradients in their own
coordinates against the Gaussian's, and the cost structure promised for each."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgauss as jg

NAMES = ["covariance", "cholesky", "precision", "diagonal"]


def _gaussian(name, d, dtype):
    g = jg.streams.random_truth(jax.random.key(d), d, 100.0, dtype=dtype)
    if name == "diagonal":
        g = jg.Gaussian(g.mean, jnp.diag(jnp.diagonal(g.cov)))
    return g


# float64 round trips go through one or two Cholesky factorisations of a
# condition-100 matrix: ~1e-13 relative; float32 keeps ~1e-5 of its 1e-7.
TOL = {jnp.float64: 1e-10, jnp.float32: 2e-4}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("d", [1, 4])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_round_trip(name, d, dtype):
    p = jg.parameterizations.get_parameterization(name)
    g = _gaussian(name, d, dtype)
    back = p.to_gaussian(p.from_gaussian(g))
    assert back.cov.dtype == dtype
    np.testing.assert_allclose(back.mean, g.mean, rtol=TOL[dtype])
    np.testing.assert_allclose(back.cov, g.cov, rtol=TOL[dtype], atol=TOL[dtype] * 10)
    np.testing.assert_array_equal(back.cov, back.cov.T)
    params = p.from_gaussian(g)
    again = p.from_gaussian(p.to_gaussian(params))
    np.testing.assert_allclose(again.matrix, params.matrix, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("d", [pytest.param(1, marks=pytest.mark.slow), 4])
def test_log_likelihood_and_gradient_in_own_coordinates(name, d):
    p = jg.parameterizations.get_parameterization(name)
    g = _gaussian(name, d, jnp.float64)
    params = p.from_gaussian(g)
    ys = jg.streams.sample(jax.random.key(9), g, 5)
    np.testing.assert_allclose(p.log_likelihood(params, ys), jg.log_likelihood(g, ys), rtol=1e-10)

    # Gradient of the direct formula vs autodiff through to_gaussian + the Gaussian's
    # Cholesky log-likelihood: two independent routes to the same derivative.
    # (each compiled as one program, not run op by op)
    direct = jax.jit(jax.grad(lambda q: jnp.sum(p.log_likelihood(q, ys))))(params)
    via_cov = jax.jit(jax.grad(lambda q: jnp.sum(jg.log_likelihood(p.to_gaussian(q), ys))))(params)
    for a, b in zip(direct, via_cov):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)

    # ... and against central finite differences along a random direction.
    rng = np.random.default_rng(d)
    dirs = jg.parameterizations.Params(*(jnp.asarray(rng.normal(size=x.shape)) for x in params))
    if name == "covariance":
        dirs = dirs._replace(matrix=dirs.matrix + dirs.matrix.T)
    eps = 1e-6
    f = jax.jit(
        lambda t: jnp.sum(
            p.log_likelihood(jax.tree_util.tree_map(lambda x, v: x + t * v, params, dirs), ys)
        )
    )
    fd = (f(eps) - f(-eps)) / (2 * eps)
    analytic = sum(jnp.sum(a * v) for a, v in zip(direct, dirs))
    np.testing.assert_allclose(fd, analytic, rtol=1e-6)


@pytest.mark.parametrize("name", ["cholesky", "precision", "diagonal"])
def test_every_value_is_spd(name):
    p = jg.parameterizations.get_parameterization(name)
    d = 3
    shape = (d,) if name == "diagonal" else (d, d)
    raw = jg.parameterizations.Params(
        jnp.zeros(d), 5.0 * jax.random.normal(jax.random.key(3), shape)
    )
    assert bool(jg.is_spd(p.to_gaussian(raw).cov))
    assert bool(p.is_valid(raw))
    # ... but a log-diagonal beyond the exponent range overflows: rejected.
    huge = raw._replace(matrix=raw.matrix.at[(0,) * raw.matrix.ndim].set(800.0))
    assert not bool(jnp.all(jnp.isfinite(p.to_gaussian(huge).cov))) or name == "precision"
    assert not bool(p.is_valid(huge))


def test_covariance_can_leave_the_cone():
    p = jg.parameterizations.get_parameterization("covariance")
    params = jg.parameterizations.Params(jnp.zeros(2), jnp.array([[1.0, 2.0], [2.0, 1.0]]))
    assert not bool(jg.is_spd(p.to_gaussian(params).cov))
    assert not bool(p.is_valid(params))


def _primitives(fn, *args):
    return {str(e.primitive) for e in jax.make_jaxpr(fn)(*args).jaxpr.eqns}


def test_precision_likelihood_and_gradient_need_no_lapack():
    p = jg.parameterizations.get_parameterization("precision")
    params = p.from_gaussian(_gaussian("precision", 3, jnp.float64))
    ys = jnp.ones((4, 3))
    grad = jax.grad(lambda q: jnp.sum(p.log_likelihood(q, ys)))
    prims = _primitives(grad, params)
    assert not prims & {"cholesky", "triangular_solve", "lu"}, prims


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown parameterization 'cov'"):
        jg.parameterizations.get_parameterization("cov")
