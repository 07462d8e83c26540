"""Test configuration: float64 is available (tests choose float32 or float64
explicitly); every test gets a fresh, fixed key through the ``key`` fixture."""

import jax
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def key():
    return jax.random.key(0)
