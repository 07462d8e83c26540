"""Memory estimates made before a run, so that a ``fit`` of very wide data or a
``sweep`` of very many seeds is refused with the estimate and a suggestion instead
of being killed by the kernel (or crashing) part-way.

The estimates are deliberately coarse upper bounds: a fixed number of copies of the
state (the update's temporaries, the guard's select, the donated buffers) plus the
rows and outputs. They only need to be right within a factor of about two to turn
an out-of-memory crash into a clear error.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import jax
import jax.numpy as jnp

from jaxgauss.gaussian import Gaussian

# Below this estimate a run is not checked (nor the free memory read): any machine
# that runs JAX has that much to spare, and small fits pay no fixed cost for it.
_ALWAYS_AVAILABLE = 64 * 2**20

# Copies of a state alive at the peak of one update (old, new, the guard's select,
# the Gram and outer-product temporaries of a d × d covariance).
_STATE_COPIES = 6


def available_memory() -> int | None:
    """Bytes the current backend can still allocate: the sum over devices of
    ``bytes_limit − bytes_in_use`` on accelerators, the host's MemAvailable on a
    CPU (None when unknown)."""
    devices = jax.devices()
    if devices[0].platform != "cpu":
        total = 0
        for device in devices:
            stats = device.memory_stats() or {}
            if "bytes_limit" not in stats:
                break
            total += stats["bytes_limit"] - stats.get("bytes_in_use", 0)
        else:
            return total
    return _host_available()


def _host_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def gigabytes(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def tree_bytes(tree: Any) -> int:
    """Bytes of a pytree of arrays or shape-dtype structs."""
    return sum(
        math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree_util.tree_leaves(tree)
    )


def abstract_gaussian(d: int, dtype: Any) -> Gaussian:
    """A ``Gaussian`` of shape-dtype structs: what ``jax.eval_shape`` needs to size a
    state without allocating a d × d matrix."""
    return Gaussian(jax.ShapeDtypeStruct((d,), dtype), jax.ShapeDtypeStruct((d, d), dtype))


@functools.lru_cache(maxsize=64)
def _state_bytes(estimator: Any, d: int, dtype: Any) -> int:
    # eval_shape traces init: once per (estimator, d, dtype), not per fit call.
    return tree_bytes(jax.eval_shape(estimator.init, abstract_gaussian(d, dtype)))


def fit_bytes(estimator: Any, d: int, dtype: Any, chunk_rows: int, groups: int = 1) -> int:
    """Estimated peak bytes of a ``fit``: copies of the state, the initial and final
    ``Gaussian`` (and a host copy of the result), each once per group, and two copies
    of a chunk of rows."""
    itemsize = jnp.dtype(dtype).itemsize
    state = _state_bytes(estimator, d, jnp.dtype(dtype))
    gaussian = (d * d + d) * itemsize
    return groups * (_STATE_COPIES * state + 3 * gaussian) + 2 * chunk_rows * d * itemsize


def check_memory(
    estimator: Any, d: int, dtype: Any, *, chunk_rows: int = 0, groups: int = 1
) -> None:
    """Refuse, before allocating anything of size d², a ``fit`` whose estimated peak
    memory exceeds what the backend has available.

    Raises:
      ValueError: with the estimate, what is available and what to do.
    """
    need = fit_bytes(estimator, d, dtype, chunk_rows, groups)
    if need < _ALWAYS_AVAILABLE:
        return
    have = available_memory()
    if have is not None and need > have and groups > 1:
        raise ValueError(
            f"a grouped fit of n_groups = {groups:,} at d = {d:,} in {jnp.dtype(dtype).name} "
            f"needs about {gigabytes(need)} of memory (a {d:,} × {d:,} covariance per group "
            f"and the update's copies of them), more than the {gigabytes(have)} available: "
            "fit fewer groups at a time (their ids renumbered) or fewer columns"
        )
    rows = 2 * chunk_rows * d * jnp.dtype(dtype).itemsize
    if have is not None and need > have and rows > need // 2:
        raise ValueError(
            f"a fit of d = {d:,} columns in {jnp.dtype(dtype).name} holds {chunk_rows:,} rows "
            f"at once (one update of batch_size rows, or a block of them, and a chunk): about "
            f"{gigabytes(need)} of memory, more than the {gigabytes(have)} available: use a "
            "smaller batch_size (or chunk_rows)"
        )
    if have is not None and need > have:
        raise ValueError(
            f"a fit of d = {d:,} columns in {jnp.dtype(dtype).name} needs about "
            f"{gigabytes(need)} of memory (its {d:,} × {d:,} covariance and the update's "
            f"copies of it), more than the {gigabytes(have)} available: fit fewer columns "
            "(e.g. blocks of columns, or a diagonal model)"
        )
