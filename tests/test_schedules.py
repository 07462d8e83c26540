"""Tests for jaxgauss.schedules: values against the formula, tracing, use in optax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxgauss as jg


@pytest.mark.parametrize(("init_value", "power", "offset"), [(1.0, 1.0, 1.0), (0.3, 0.6, 50.0)])
def test_values_match_formula(init_value, power, offset):
    k = np.arange(0, 1000, 7)
    got = jg.schedules.robbins_monro(init_value, power, offset)(jnp.asarray(k, jnp.int32))
    # float64 throughout (x64 on, Python settings): only the power's rounding differs.
    np.testing.assert_allclose(got, init_value / (1 + k / offset) ** power, rtol=1e-13)


def test_unit_schedule_is_one_over_t():
    schedule = jg.schedules.robbins_monro(1.0)
    t = np.arange(1, 100)
    np.testing.assert_allclose(schedule(jnp.asarray(t - 1)), 1 / t, rtol=1e-15)


def test_traced_settings_under_vmap_and_one_compilation():
    def at_count_10(init_value, power, offset):
        return jg.schedules.robbins_monro(init_value, power, offset)(jnp.int32(10))

    values = jnp.array([0.1, 0.5, 2.0])
    got = jax.vmap(at_count_10, in_axes=(0, None, None))(values, 0.6, 10.0)
    np.testing.assert_allclose(got, values / 2.0**0.6, rtol=1e-14)
    jitted = jax.jit(at_count_10)
    jitted(0.1, 1.0, 1.0)
    jitted(0.7, 0.5, 3.0)
    assert jitted._cache_size() == 1


def test_dtype_follows_init_value():
    schedule = jg.schedules.robbins_monro(jnp.float32(0.5), 0.6, 10.0)
    assert schedule(jnp.int32(3)).dtype == jnp.float32


def test_drives_optax_sgd_with_optax_count():
    opt = optax.sgd(jg.schedules.robbins_monro(0.4, power=1.0, offset=2.0))
    params = jnp.zeros(2)
    state = opt.init(params)
    steps = []
    for _ in range(3):
        updates, state = opt.update(jnp.ones(2), state, params)
        steps.append(float(-updates[0]))
    # k = 0, 1, 2 (the first update sees k = 0): 0.4 / (1 + k/2)
    np.testing.assert_allclose(steps, [0.4, 0.4 / 1.5, 0.4 / 2.0], rtol=1e-7)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"offset": 0.0}, "offset"), ({"power": -1.0}, "power")]
)
def test_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jg.schedules.robbins_monro(1.0, **kwargs)
