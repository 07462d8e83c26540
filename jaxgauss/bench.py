"""Throughput of jaxgauss's own estimators on the current JAX backend.

``jaxgauss bench`` runs these cases from the installed package; ``python -m benchmarks``
(from a checkout) times them side by side with peers (NumPy, river, PyTorch) in the
same process on the same data. The timing helper ``time_call`` and the machine
description ``machine_info`` live here so that every benchmark shares them.

Every case is one ``jaxgauss.fit`` call on float32 rows already on the device, timed
after a warm-up call (whose extra time over a steady call is reported as compile
time) as the median of repeats, each waited for with ``jax.block_until_ready``. The
unit is data rows per second; cheap cases are timed on more rows than costly ones.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

from jaxgauss._fit import fit
from jaxgauss.estimators.base import Estimator
from jaxgauss.estimators.gradient import gradient_ascent
from jaxgauss.estimators.moments import exponential, natural_gradient, welford
from jaxgauss.streams import random_truth, sample

__all__ = [
    "Timing",
    "time_call",
    "machine_info",
    "Case",
    "CASES",
    "case_rows",
    "make_data",
    "time_case",
    "run",
    "format_table",
]

DEFAULT_DIMS = (1, 10, 100)
DEFAULT_ROWS = 2**20
DEFAULT_REPEATS = 5


class Timing(NamedTuple):
    """What ``time_call`` measured, in seconds.

    Attributes:
      seconds: the median of the timed calls.
      first: the first (warm-up) call: tracing, compilation and one run.
      repeats: how many calls the median is over.
    """

    seconds: float
    first: float
    repeats: int

    @property
    def compile_seconds(self) -> float:
        """The warm-up call's extra time over a steady call (0 when none)."""
        return max(self.first - self.seconds, 0.0)


def time_call(fn: Callable[[], Any], repeats: int = DEFAULT_REPEATS) -> Timing:
    """Time ``fn()``: one warm-up call, then the median of ``repeats`` calls.

    Each call is waited for with ``jax.block_until_ready`` on its result (a no-op for
    results that are not JAX arrays), so asynchronous dispatch is not mistaken for
    speed.

    Example:
      >>> import jax.numpy as jnp
      >>> t = time_call(lambda: jnp.ones(3) * 2, repeats=3)
      >>> t.repeats, t.seconds >= 0
      (3, True)
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")

    def once() -> float:
        start = time.perf_counter()
        jax.block_until_ready(fn())
        return time.perf_counter() - start

    first = once()
    return Timing(statistics.median(once() for _ in range(repeats)), first, repeats)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas() -> str:
    """NumPy's BLAS: library, version, kernel and threads (threadpoolctl if
    installed, else NumPy's build configuration)."""
    try:
        from threadpoolctl import threadpool_info

        found = [
            f"{p['internal_api']} {p['version']} ({p.get('architecture') or '?'} kernel, "
            f"{p['num_threads']} threads)"
            for p in threadpool_info()
            if p["user_api"] == "blas" and "numpy" in p["filepath"]
        ]
        if found:
            return "; ".join(found)
    except ImportError:
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas.get('version', '')}".strip()
    except (TypeError, KeyError):
        return "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info(packages: Iterable[str] = ()) -> dict:
    """The machine and software a benchmark ran on, as a JSON-ready dict.

    Args:
      packages: extra distributions whose versions to record (e.g. peers), besides
        python, jax, jaxlib, optax and numpy; a missing one is "not installed".

    Example:
      >>> info = machine_info(["no-such-package"])
      >>> info["versions"]["no-such-package"], "backend" in info
      ('not installed', True)
    """
    device = jax.devices()[0]
    versions = {"python": platform.python_version()}
    versions.update({p: _version(p) for p in ("jaxgauss", "jax", "jaxlib", "optax", "numpy")})
    versions.update({p: _version(p) for p in packages})
    return {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "blas": _blas(),
        "versions": versions,
    }


class Case(NamedTuple):
    """One jaxgauss throughput case: ``fit(make(), rows, batch_size=…, block_rows=…)``.

    Attributes:
      name: the label in tables.
      make: builds the estimator (once per case, so ``fit``'s compilation is reused).
      batch_size: rows per update.
      block_rows: ``fit``'s ``block_rows`` (None: its default).
      cost: log₂ of how much costlier a row is than the cheapest case's; the case
        is timed on 2^-cost as many rows.
    """

    name: str
    make: Callable[[], Estimator]
    batch_size: int = 1
    block_rows: int | None = None
    cost: int = 0


def _sgd(parameterization: str) -> Callable[[], Estimator]:
    return lambda: gradient_ascent(optax.sgd(1e-3), parameterization)


CASES: tuple[Case, ...] = (
    Case("welford", welford),
    Case("natural_gradient(0.01)", lambda: natural_gradient(0.01)),
    Case("exponential(1000)", lambda: exponential(1000.0)),
    Case("welford, block_rows=1", welford, block_rows=1, cost=4),
    Case("welford, batch_size=64", welford, batch_size=64),
    Case("welford, batch_size=1024", welford, batch_size=1024),
    Case("gradient_ascent(sgd, cholesky)", _sgd("cholesky"), cost=4),
    Case("gradient_ascent(sgd, precision)", _sgd("precision"), cost=4),
)


def case_rows(rows: int, d: int, cost: int) -> int:
    """Rows to time a case of log₂-cost ``cost`` on in dimension ``d``.

    ``rows`` for the cheapest cases up to d = 10, halved per unit of cost and per
    doubling of d beyond 10 (per-row work grows with d), and at least 64. A power of
    two ``rows`` gives powers of two, which every batch size here divides.

    Example:
      >>> case_rows(2**20, 10, 0), case_rows(2**20, 100, 0), case_rows(2**20, 1, 4)
      (1048576, 65536, 65536)
    """
    shift = cost + max(0, int(np.ceil(np.log2(d / 10))))
    return max(64, rows >> shift)


def make_data(d: int, n: int, seed: int = 0) -> jax.Array:
    """``n`` float32 rows from a random Gaussian in dimension ``d`` (condition 10), on
    the default device."""
    k_truth, k_rows = jax.random.split(jax.random.key(seed))
    truth = random_truth(k_truth, d, 10.0, dtype=np.float32)
    return jax.block_until_ready(sample(k_rows, truth, n))


def time_case(case: Case, data: jax.Array, repeats: int = DEFAULT_REPEATS) -> dict:
    """Time ``fit`` of one case on all the rows of ``data``; a JSON-ready dict."""
    est = case.make()
    n, d = data.shape
    timing = time_call(
        lambda: fit(est, data, batch_size=case.batch_size, block_rows=case.block_rows).estimate,
        repeats,
    )
    return {
        "name": case.name,
        "d": d,
        "rows": n,
        "batch_size": case.batch_size,
        "rows_per_s": n / timing.seconds,
        "seconds": timing.seconds,
        "compile_seconds": timing.compile_seconds,
        "repeats": repeats,
    }


def run(
    dims: Iterable[int] = DEFAULT_DIMS,
    rows: int = DEFAULT_ROWS,
    repeats: int = DEFAULT_REPEATS,
    cases: Iterable[Case] = CASES,
    progress: Callable[[dict], None] | None = None,
) -> dict:
    """Time every case in every dimension; the result as a JSON-ready dict.

    Args:
      dims: dimensions d.
      rows: rows for the cheapest cases (see ``case_rows``).
      repeats: timed calls per case (after one warm-up call).
      cases: the cases (default ``CASES``).
      progress: called with each case's result as it finishes.

    Returns:
      ``{"machine": machine_info(), "settings": {...}, "results": [case dicts]}``;
      each case dict has name, d, rows, batch_size, rows_per_s, seconds,
      compile_seconds, repeats.
    """
    cases = tuple(cases)
    results = []
    for d in dims:
        data = make_data(d, max(case_rows(rows, d, c.cost) for c in cases))
        for case in cases:
            result = time_case(case, data[: case_rows(rows, d, case.cost)], repeats)
            results.append(result)
            if progress is not None:
                progress(result)
    settings = {"dims": list(dims), "rows": rows, "repeats": repeats, "dtype": "float32"}
    return {"machine": machine_info(), "settings": settings, "results": results}


def format_table(results: Iterable[dict]) -> str:
    """A Markdown table of case results: name, d, rows, rows/s, compile seconds."""
    lines = [
        "| case | d | rows | rows/s | compile (s) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['d']} | {r['rows']:,} | {r['rows_per_s']:.3g} "
            f"| {r['compile_seconds']:.2f} |"
        )
    return "\n".join(lines)
