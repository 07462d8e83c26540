"""A workaround for a known jaxlib hang, applied where users would not think of it.

On XLA's CPU backend, the concurrency-optimised scheduler sometimes deadlocks
vmapped sweeps: ``jaxgauss sweep --method fisher-sgd --parameterization precision
--dim 20 --num-lr 16 --seeds 4 --steps 3000 --lr-min .5 --lr-max 1.5 --condition
1e4`` hung 4 times in 4 tries (blocked, little CPU used), and never with
``--xla_cpu_enable_concurrency_optimized_scheduler=false``. XLA reads ``XLA_FLAGS``
once, when the first backend starts, so ``import jaxgauss`` (and with it the
``jaxgauss`` command, which imports the package before jax) appends the flag then,
keeping the user's other flags; an explicit setting of the flag is respected.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
import warnings
from collections.abc import MutableMapping

NAME = "xla_cpu_enable_concurrency_optimized_scheduler"
FLAG = f"--{NAME}=false"
# XLA aborts on an unknown flag: add it only for jaxlib versions known to have it
# (it predates jaxlib 0.4.26, April 2024; the oldest jaxlib this package supports
# is newer still).
MIN_JAXLIB = (0, 4, 26)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def jaxlib_version() -> tuple[int, ...] | None:
    try:
        return _version(importlib.metadata.version("jaxlib"))
    except importlib.metadata.PackageNotFoundError:
        return None


def backend_started() -> bool:
    """Whether a JAX backend is already running (then XLA_FLAGS has been read)."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except Exception:  # a private API: if it moved, assume the worst and warn
        return True


def apply(
    environ: MutableMapping[str, str] = os.environ,
    version: tuple[int, ...] | None = None,
    started: bool | None = None,
) -> str:
    """Append ``FLAG`` to ``XLA_FLAGS`` if it may and must be; returns what was done:
    "present" (the user set the flag, either way), "unknown" (a jaxlib without it),
    "late" (a backend already started: a warning says how to set it) or "set"."""
    flags = environ.get("XLA_FLAGS", "")
    if NAME in flags:
        return "present"
    version = jaxlib_version() if version is None else version
    if version is None or version < MIN_JAXLIB:
        return "unknown"
    if backend_started() if started is None else started:
        warnings.warn(
            "jaxgauss was imported after a JAX backend started, so it could not disable "
            "XLA's concurrency-optimised CPU scheduler, which can hang large sweeps; set "
            f'XLA_FLAGS="{FLAG}" in the environment before starting Python',
            RuntimeWarning,
            stacklevel=3,
        )
        return "late"
    environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
    return "set"


apply()
