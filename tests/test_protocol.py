"""One check over every registry entry (and every parameterisation of the gradient
methods), in the style of optax's tests that run one check over all transformations:
the scan carry needs the state's structure and dtypes to survive ``update``; ``jit`` and
``vmap`` must work; a rowwise estimator's block update must equal its row-by-row
updates; ``is_valid`` is a boolean scalar; states round-trip through a checkpoint.

A new estimator gets these checks by being registered in ``jg.methods.METHODS``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgauss as jg
from jaxgauss.parameterizations import PARAMETERIZATIONS

D = 3


def _variants(method):
    """The settings beyond numbers that change what a method builds: each
    non-default choice (a mixture's covariance types) and "auto" (an estimated ν)."""
    for h in method.hyperparameters:
        for choice in h.choices:
            if choice != h.default:
                yield {h.name: choice}
        if h.auto:
            yield {h.name: "auto"}


def _id(fixed):
    return "-".join(f"{k}={v}" for k, v in fixed.items())


CASES = [
    (name, p, "")
    for name, method in jg.methods.METHODS.items()
    for p in (PARAMETERIZATIONS if method.uses_parameterization else ["cholesky"])
] + [
    (name, "cholesky", _id(fixed))
    for name, method in jg.methods.METHODS.items()
    for fixed in _variants(method)
]


def _middle(h):
    """The geometric middle of a hyperparameter's sweep range: a sensible value."""
    value = float(np.sqrt(h.grid[0] * h.grid[1]))
    return round(value) if h.integer else value


def _estimator(name, parameterization, variant=""):
    method = jg.methods.METHODS[name]
    fixed = dict(item.split("=") for item in variant.split("-")) if variant else {}
    required = {
        h.name: _middle(h)
        for h in method.hyperparameters
        if h.default is None and not h.optional and h.name != method.swept
    }
    make = jg.methods.make_method(name, parameterization, **{**required, **fixed})
    return make(_middle(method.swept_hyperparameter()))


def _rows(n, dtype, seed=0):
    truth = jg.Gaussian(jnp.arange(D, dtype=dtype), jnp.diag(jnp.arange(1, D + 1, dtype=dtype)))
    return jg.streams.sample(jax.random.key(seed), truth, n)


def _leaves_match(a, b):
    """Same tree structure, and leaf by leaf the same shape and dtype."""
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert (x.shape, x.dtype) == (y.shape, y.dtype)


@pytest.mark.parametrize(("name", "parameterization", "variant"), CASES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_state_structure_and_dtypes_survive_update(name, parameterization, variant, dtype):
    # Abstract evaluation only: no compilation, so every case is cheap.
    est = _estimator(name, parameterization, variant)
    g0 = jg.Gaussian.standard(D, dtype)
    state = jax.eval_shape(est.init, g0)
    for b in (1, 5):
        batch = jax.ShapeDtypeStruct((b, D), dtype)
        _leaves_match(jax.eval_shape(est.update, state, batch), state)
    valid = jax.eval_shape(est.is_valid, state)
    assert valid.shape == () and valid.dtype == jnp.bool_
    estimate = jax.eval_shape(est.estimate, state)
    assert jax.tree_util.tree_leaves(estimate)[0].dtype == dtype


# Compiled per case: the quick run checks every registry entry but the mixture (its
# EM programs compile for ~6 s; test_mixture.py runs it quick) and ewm (test_ewm.py
# compiles it quick), and every parameterisation (all four through sgd and
# fisher-sgd, whose preconditioner is per parameterisation); the variants (covariance
# types, ν auto) and the rest run with -m slow.
def _quick(name, parameterization, variant):
    if name in ("mixture", "ewm") or variant:
        return False
    return parameterization == "cholesky" or name in ("sgd", "fisher-sgd")


COMPILED_CASES = [
    pytest.param(*case, marks=[] if _quick(*case) else [pytest.mark.slow]) for case in CASES
]


@pytest.mark.parametrize(("name", "parameterization", "variant"), COMPILED_CASES)
def test_jit_vmap_and_checkpoint(tmp_path, name, parameterization, variant):
    est = _estimator(name, parameterization, variant)
    g0 = jg.Gaussian.standard(D, jnp.float64)
    batches = _rows(8, jnp.float64).reshape(2, 4, D)
    # vmap over two independent states under one jit, against each run alone (also
    # compiled: op by op, a mixture's update compiled a hundred small programs)
    states = jax.vmap(lambda _: est.init(g0))(jnp.arange(2))
    mapped = jax.jit(jax.vmap(est.update))(states, batches)
    for i in range(2):
        alone = jax.jit(est.update)(est.init(g0), batches[i])
        for x, y in zip(jax.tree_util.tree_leaves(mapped), jax.tree_util.tree_leaves(alone)):
            np.testing.assert_allclose(x[i], y, rtol=1e-12, atol=1e-12)
    state = jax.tree_util.tree_map(lambda x: x[0], mapped)
    assert bool(est.is_valid(state))
    path = jg.checkpoint.save(tmp_path / "state", state, name=name)
    loaded = jg.checkpoint.load(path, jax.eval_shape(est.init, g0), name=name)
    _leaves_match(loaded, state)
    for x, y in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(state)):
        np.testing.assert_array_equal(x, y)


ROWWISE = [(n, p) for n, p, v in CASES if _estimator(n, p, v).rowwise]


def test_the_moment_methods_are_rowwise():
    assert {n for n, _ in ROWWISE} == {"welford", "natural", "exponential", "ewm"}


@pytest.mark.parametrize(("name", "parameterization"), ROWWISE)
def test_rowwise_block_equals_row_by_row(name, parameterization):
    est = _estimator(name, parameterization)
    rows = _rows(7, jnp.float64, seed=1)
    state = est.init(jg.Gaussian.standard(D, jnp.float64))
    update = jax.jit(est.update)  # two programs (a block, a row), not each op's
    block = update(state, rows)
    for row in rows:
        state = update(state, row[None])
    for x, y in zip(jax.tree_util.tree_leaves(block), jax.tree_util.tree_leaves(state)):
        # the same arithmetic regrouped: float64 rounding only
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-13)
