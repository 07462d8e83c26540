"""Test configuration: float64 is available (tests choose float32 or float64
explicitly); every test gets a fresh, fixed key through the ``key`` fixture.

Compiled programs are shared through JAX's persistent compilation cache, in a
directory made for this session (and removed after it) unless
``JAX_COMPILATION_CACHE_DIR`` is set: the pytest-xdist workers and the command-line,
README and multi-process tests' subprocesses inherit it, so a program one of them
compiled is loaded, not compiled again, by the others. Results are unaffected: the
cache is keyed by the program, the compile options and the jaxlib version.
"""

import atexit
import os
import shutil
import tempfile

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the first process of the session
    _cache = tempfile.mkdtemp(prefix="jaxgauss-tests-xla-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # noqa: E402  (after the cache's environment variables)
import pytest  # noqa: E402

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
