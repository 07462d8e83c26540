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


def _resident_bytes() -> int | None:
    """This process's resident memory (Linux), or None where it cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _clear_above_bytes() -> int:
    """Above this, a test module's end frees the process's compiled programs: a
    quarter of the machine's memory (two pytest-xdist workers then hold at most
    half), at least 3 GiB."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        total = 0
    return max(3 << 30, total // 4)


_CLEAR_ABOVE_BYTES = _clear_above_bytes()


@pytest.fixture(autouse=True, scope="module")
def _bounded_compilation_caches():
    """Free the compiled programs when a module ends with the process holding more
    than ``_CLEAR_ABOVE_BYTES`` (always, where that cannot be read): one process
    compiles thousands of programs over the suite, and XLA's CPU compiler was seen to
    crash late in a long single-process run. Below it, later modules reuse the
    programs they share (clearing after every module cost ~12 % of the suite's CPU
    time; a clear itself takes ~4 s)."""
    yield
    resident = _resident_bytes()
    if resident is None or resident > _CLEAR_ABOVE_BYTES:
        jax.clear_caches()


@pytest.fixture
def cli(capsys):
    """``cli(*args)`` runs the ``jaxgauss`` command through ``cli.main`` in this
    process, with x64 off unless ``--float64`` is given (as in a user's process; the
    tests enable it), and returns (exit status, stdout, stderr) as a
    ``subprocess.CompletedProcess``. In process, a command shares the tests'
    compiled programs instead of starting Python and compiling them again; the tests
    of the console entry itself (signals, pipes, exit on a closed stdout) start
    processes of their own. An exception other than the command's one-line errors
    fails the test as the traceback a user would see."""
    import contextlib
    import subprocess

    from jaxgauss.cli import main

    def run(*args):
        args = [str(a) for a in args]
        x64 = contextlib.nullcontext() if "--float64" in args else jax.enable_x64(False)
        with x64:
            try:
                code = main(args)
            except SystemExit as exit:  # argparse's own usage errors
                code = exit.code
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    return run
