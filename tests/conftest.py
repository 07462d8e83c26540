"""Test configuration: float64 is available (tests choose float32 or float64
explicitly); every test gets a fresh, fixed key through the ``key`` fixture."""

import jax
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def key():
    return jax.random.key(0)


# A script that test_distributed.py runs in its own processes, not a test module (its
# top level joins a distributed runtime).
collect_ignore = ["distributed_worker.py"]
