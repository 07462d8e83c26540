"""``fit``: validate the arguments and hand the stream to its runner (one stream,
groups and weights, or devices and processes)."""

from __future__ import annotations

from typing import Any

from jaxgauss._checks import Score, check_int, check_score
from jaxgauss._distributed import fit_data_parallel
from jaxgauss._engine import FitResult, ScanPlan, block_updates
from jaxgauss._grouped import fit_grouped
from jaxgauss._single import fit_single
from jaxgauss.estimators.base import Estimator
from jaxgauss.gaussian import Gaussian

__all__ = ["fit"]


def _plan(estimator, batch_size, trace_every, block_rows, score) -> ScanPlan:
    """Validate the run's settings and fix the compiled scan's shape."""
    if not isinstance(estimator, Estimator):
        raise ValueError(f"estimator must be a jaxgauss Estimator, got {type(estimator).__name__}")
    batch_size = check_int("batch_size", batch_size, 1)
    trace_every = check_int("trace_every", trace_every, 0)
    if block_rows is not None:
        block_rows = check_int("block_rows", block_rows, 1)
    block = block_updates(estimator, batch_size, trace_every, block_rows)
    return ScanPlan(estimator, batch_size, block, trace_every, check_score(score))


def _check_source_options(chunk_rows, nan_policy, init, state) -> None:
    if chunk_rows is not None:
        check_int("chunk_rows", chunk_rows, 1)
    if nan_policy not in ("raise", "skip"):
        raise ValueError(f"nan_policy must be 'raise' or 'skip', got {nan_policy!r}")
    if state is not None and init is not None:
        raise ValueError("pass either init (a fresh start) or state (a continuation), not both")


def fit(
    estimator: Estimator,
    data: Any,
    init: Gaussian | None = None,
    *,
    batch_size: int = 1,
    trace_every: int = 0,
    truth: Any = None,
    state: Any = None,
    block_rows: int | None = None,
    chunk_rows: int | None = None,
    nan_policy: str = "raise",
    progress: bool = False,
    score: Score | None = None,
    devices: Any = None,
    groups: Any = None,
    n_groups: int | None = None,
    weights: Any = None,
) -> FitResult:
    """Run ``estimator`` over the rows of ``data`` in jit-compiled ``lax.scan`` calls.

    The rows are cut into batches of ``batch_size``; each batch is one
    ``estimator.update``. If n is not a multiple of ``batch_size``, the last n mod b
    rows are applied as one shorter final batch. After every update the divergence
    guard checks ``estimator.is_valid``: the first rejected update sets
    ``diverged_at`` to the row where its batch starts, and the state then stays at
    the last valid value: nothing after it is applied.

    Data may be larger than memory: a ``.npy`` path is memory-mapped and a ``.csv``
    path read in chunks of ``chunk_rows`` rows; an iterable yields its own chunks.
    Chunks are regrouped into pieces of fixed shapes with the state carried between
    compiled calls, so the result equals one in-memory ``fit`` and a stream compiles
    at most a handful of shapes, whatever its length.

    Nothing estimated is lost on an error: any exception raised while the rows are
    read or applied (a non-finite row, a bad CSV cell, a chunk of another width, an
    exception from your iterator, ``KeyboardInterrupt``) propagates as itself with
    ``.result`` attached: the ``FitResult`` of every row read before it (None if no
    row had been read). Continue with ``fit(..., state=err.result.state)``.

    Compilations are cached per (estimator object, shapes, dtypes, trace_every):
    calling ``fit`` again with the same estimator and data shape does not recompile.
    To try many learning rates, either use ``jaxgauss.sweep`` (one compiled call for
    the whole grid) or make the learning rate part of the state with
    ``optax.inject_hyperparams`` and change it in ``res.state`` between calls.

    Args:
      estimator: an ``Estimator``.
      data: rows (n, d): a NumPy or JAX array (or nested lists), a path to a
        ``.npy`` or ``.csv`` file (or a list of paths, read one after another), or
        an iterable of (m, d) chunks. Integers are
        converted to floats. The estimate's dtype follows the data's (float32
        unless x64 is enabled and the data are float64).
      init: the starting ``Gaussian``; None means N(0, I). Ignored when ``state`` is
        given (passing both is an error).
      batch_size: rows per update, ≥ 1.
      trace_every: take a snapshot every this many updates (0: no trace).
      truth: what the trace's ``score`` is measured against: a ``Gaussian`` for the
        default score, or whatever a given ``score`` takes (e.g. held-out rows).
      state: an estimator state from an earlier ``FitResult.state`` to continue from.
      block_rows: for rowwise estimators (``welford``, ``exponential``,
        ``natural_gradient``), about how many rows each compiled step applies at once
        as one Gram matmul (None: ``default_block_rows(d)``, on a CPU 4096 rows or
        about 2¹⁸ entries when that is more, 65 536 rows on accelerators; 1: update
        by update). Other estimators apply up to
        ``GRADIENT_BLOCK`` (16) updates per compiled step, unrolled, with one
        validity check; ``block_rows=1`` makes them update by update too. The result
        equals the update-by-update one to rounding, the guard and trace included: a
        rejected block is replayed update by update.
      chunk_rows: rows per chunk read from a file or sliced from an array (None:
        65 536 for files, the whole array for arrays).
      nan_policy: what a row with NaN or ±inf does: "raise" (a ``DataError``, a
        ``ValueError`` naming the row and carrying the result of every row before it)
        or "skip" (the row is dropped and counted in ``n_skipped``; indices such as
        ``diverged_at`` still refer to the data as given).
      progress: print rows done and throughput to stderr after each chunk.
      score: ``score(truth, estimate) -> scalar`` recorded in the trace (None:
        ``kl_divergence``, KL(truth ‖ estimate)). Pass the same function object on
        every call to reuse the compilation.
      devices: None (one device), or a list of devices (e.g. ``jax.devices()``) to
        run data-parallel: the rows are cut into contiguous shards, one per device;
        after ``jax.distributed.initialize`` every process passes its own rows (a
        list of files or one ``.npy`` is divided among the processes) and gets the
        same result. Moment estimators equal a one-device fit of all rows in order
        to rounding; other estimators take ``batch_size / D`` rows per update from
        every shard (docs/multi-process.md).
      groups: the group of every row, integers in [0, n_groups): an array (n,)
        aligned with the rows as given (any source), or an int, the index of a data
        column holding them (split off every chunk, for files and iterables). The
        fit then keeps one state per group (a leading (n_groups,) axis on
        ``estimate``, ``state``, ``diverged_at``, ``n_rows`` and the trace) and group
        k's equals a fit of its rows alone, in order: ``welford``'s to rounding, in
        one pass of segment sums per block; any other estimator (weighted, or run in its
        ``weighted_form``) with its own batches of ``batch_size`` of the group's rows and its
        own counts. A group with no rows keeps ``init`` (``n_rows[k] == 0``).
        ``init`` and ``truth`` may be one ``Gaussian`` or one per group (leading
        axis); ``state`` continues a grouped state. A grouped trace takes a
        snapshot of every group after each ``batch_size·trace_every`` rows of the
        stream (``trace.rows``); rows still waiting to fill a group's batch are in
        a later snapshot.
      n_groups: the number of groups; None: 1 + the largest id, when the ids are
        an array or a column of an array (streamed columns need it).
      weights: finite reliability weights wᵢ ≥ 0 per row, an array (n,) or a column
        index as for ``groups``. An unweighted moment estimator (``welford()``,
        ``natural_gradient``, ``exponential``) runs in its weighted form and returns
        that form's state (a float total weight; continuing an unweighted state with
        weights is refused); estimators with no weighted form are refused.
        Moment estimators give the weighted MLE (``np.cov(aweights=w, bias=True)``),
        gradient estimators maximise Σ wᵢ ℓᵢ / Σ wᵢ per batch; a weight of 0 masks
        its row. Without ``groups`` the result has no group axis.

    Returns:
      A ``FitResult`` (estimate, state, diverged_at, trace, n_rows, n_skipped).

    Raises:
      ValueError: data not 2-D, empty, non-numeric, with inconsistent columns, or
        with a non-finite row (a ``DataError``); ``init`` or ``truth`` of the wrong
        shape, non-finite, asymmetric or not positive definite; a ``state`` of another
        estimator or shape; ``batch_size < 1``; ``trace_every < 0``; an unknown
        ``nan_policy``; a group id that is not an integer in [0, n_groups), a
        weight that is negative or not finite (the message names the first such
        row), ``groups`` or ``weights`` of another length than the data.

    Example:
      >>> import jax, optax, jaxgauss as jg
      >>> ys = jg.streams.sample(jax.random.key(0), jg.Gaussian.standard(1), 100)
      >>> res = jg.fit(jg.gradient_ascent(optax.sgd(0.002), "covariance"), ys, trace_every=10)
      >>> res.trace.rows.tolist()[:3], int(res.diverged_at), res.n_rows
      ([10, 20, 30], -1, 100)

      Two groups, the second masked in part by a weight of 0:

      >>> import numpy as np
      >>> ys = np.array([[0.0], [1.0], [10.0], [20.0], [99.0]])
      >>> res = jg.fit(jg.welford(), ys, groups=[0, 0, 1, 1, 1],
      ...              weights=[1, 1, 1, 1, 0])
      >>> res.estimate.mean[:, 0].tolist(), res.n_rows.tolist()
      ([0.5, 15.0], [2, 3])
    """
    plan = _plan(estimator, batch_size, trace_every, block_rows, score)
    _check_source_options(chunk_rows, nan_policy, init, state)
    if devices is not None and (groups is not None or weights is not None):
        raise ValueError("devices= does not combine with groups= or weights= yet")
    if devices is not None:
        return fit_data_parallel(
            plan, data, devices, init=init, state=state, truth=truth, chunk_rows=chunk_rows,
            nan_policy=nan_policy, progress=progress,
        )  # fmt: skip
    if groups is not None or weights is not None or n_groups is not None:
        return fit_grouped(
            plan, data, init, groups=groups, n_groups=n_groups, weights=weights, truth=truth,
            state=state, chunk_rows=chunk_rows, nan_policy=nan_policy, progress=progress,
        )  # fmt: skip
    return fit_single(
        plan, data, init=init, state=state, truth=truth, chunk_rows=chunk_rows,
        nan_policy=nan_policy, progress=progress, block_rows=block_rows,
    )  # fmt: skip
