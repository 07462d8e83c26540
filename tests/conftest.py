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


@pytest.fixture(autouse=True, scope="module")
def _fresh_compilation_caches():
    """Free each module's compiled programs when it is done: one process compiles
    thousands of programs over the suite, and XLA's CPU compiler was seen to crash
    late in a long single-process run."""
    yield
    jax.clear_caches()
