"""Data-parallel ``fit`` over several devices and processes.

Why a separate driver: a single-device ``fit`` streams rows through one carry; going
wider means cutting the rows into contiguous shards, one per device, and combining
what each shard learned so that the answer is the single-device one. It runs on JAX's
own multi-controller runtime (``jax.distributed.initialize``, a ``Mesh`` over the
global ``jax.devices()``, its collectives: gloo between processes on a CPU), so the
same code serves two local devices and many hosts.

How each family combines (global shard order: process 0's devices first, each
process's rows cut in the order of ``devices``):

* ``welford`` states (also ``natural_gradient()``): each shard is an ordinary blocked
  scan; the states merge with Chan's formula (``merge``).
* other moment estimators (``exponential``, ``natural_gradient(a)`` with a constant or
  scheduled step): their recursion η ← (1 − aₜ) η + aₜ T(y) is linear in the
  expectation parameters η with steps that depend only on the global row number t.
  Shard B runs at its global row offset from a zero-weight state and yields its own
  part η_B and K_B = Π(1 − aₜ), and shards combine in order, η = K_B η_A + η_B. K_B
  is read off a constant column of ones appended to the rows; shard rows are shifted
  by their first row so that the zero-weight recursion stays well conditioned.
* every other estimator (gradient ascent, ``averaged``): synchronous data-parallel
  updates. Update k uses the k-th local batch of ``batch_size / D`` rows of every
  shard; the local batches are all-gathered (one collective per compiled chunk, in
  device order) and every device applies the same update to the same global batch,
  so the carries stay identical without a second collective. Exact for any
  deterministic update, and equal to a single-device ``fit`` over the rows reordered
  batch by batch.

Errors are agreed before anything is fitted: every process screens its rows for
non-finite values and the counts are all-gathered, so a bad row anywhere raises the
same ``DataError`` everywhere (``.result`` None: nothing was estimated), and no
process is left waiting in a collective.
"""

from __future__ import annotations

import functools
import glob
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxgauss._checks import check_truth
from jaxgauss._engine import DataError, FitResult, ScanPlan, init_carry, scan_rows
from jaxgauss._feeder import Feeder
from jaxgauss._stream import (
    check_chunk,
    float_dtype,
    original_row,
    report_progress,
    start_or_continue,
)
from jaxgauss.estimators.base import Estimator, counter_dtype
from jaxgauss.estimators.merging import mix_moments
from jaxgauss.estimators.moments import MomentsState, WelfordState
from jaxgauss.streams import DEFAULT_CHUNK_ROWS, read_chunks

__all__ = ["fit_data_parallel", "local_files", "local_rows"]


# --- who holds which rows -------------------------------------------------------------


class _Topology(NamedTuple):
    """The devices of a data-parallel fit in global shard order.

    Attributes:
      devices: all devices, process by process, each process's in the order given.
      local: this process's devices, in that order.
      first: the global index of this process's first shard.
      processes: the number of processes taking part.
      rank: this process's rank among them.
    """

    devices: tuple
    local: tuple
    first: int
    processes: int
    rank: int


def _topology(devices: Any) -> _Topology:
    try:
        devices = list(devices)
    except TypeError:
        raise ValueError(f"devices must be a list of jax devices, got {devices!r}") from None
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise ValueError(f"devices must be a non-empty list of jax devices, got {devices!r}")
    if len(set(devices)) != len(devices):
        raise ValueError("devices lists a device twice")
    procs = sorted({d.process_index for d in devices})
    me = jax.process_index()
    if me not in procs:
        raise ValueError(f"devices holds none of this process's (process {me}) devices")
    per = {p: [d for d in devices if d.process_index == p] for p in procs}
    if len({len(v) for v in per.values()}) != 1:
        counts = {p: len(v) for p, v in per.items()}
        raise ValueError(f"every process must contribute as many devices, got {counts}")
    ordered = tuple(d for p in procs for d in per[p])
    rank = procs.index(me)
    return _Topology(ordered, tuple(per[me]), rank * len(per[me]), len(procs), rank)


def _allgather(tree: Any, topo: _Topology) -> Any:
    """Stack every process's copy of ``tree`` (NumPy leaves) along a new axis 0."""
    if topo.processes == 1:
        return jax.tree_util.tree_map(lambda x: np.asarray(x)[None], tree)
    return jax.tree_util.tree_map(np.asarray, multihost_utils.process_allgather(tree))


def local_files(paths: Sequence[str], rank: int, processes: int) -> list[str]:
    """Process ``rank``'s contiguous range of ``paths``: [rank·F/P, (rank + 1)·F/P).

    Example:
      >>> local_files(["a", "b", "c"], 0, 2), local_files(["a", "b", "c"], 1, 2)
      (['a'], ['b', 'c'])
    """
    f = len(paths)
    return list(paths[rank * f // processes : (rank + 1) * f // processes])


def _paths(data: Any) -> list[str] | None:
    """A list of file paths (a glob pattern expanded and sorted), or None."""
    if isinstance(data, (str, os.PathLike)):
        data = os.fspath(data)
        if glob.has_magic(data):
            found = sorted(glob.glob(data))
            if not found:
                raise ValueError(f"no file matches {data!r}")
            return found
        return [data]
    if (
        isinstance(data, (list, tuple))
        and data
        and all(isinstance(p, (str, os.PathLike)) for p in data)
    ):
        return [os.fspath(p) for p in data]
    return None


def _read_whole(path: str) -> Any:
    """All rows of one file: a ``.npy`` memory-mapped, a ``.csv`` read."""
    chunks, _, _ = read_chunks(path, None)
    if path.endswith(".npy"):
        return np.load(path, mmap_mode="r")
    parts = list(chunks)
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def local_rows(data: Any, rank: int, processes: int) -> list[Any]:
    """This process's rows as a list of (n_i, d) arrays (memory maps where possible).

    A list of paths (or a glob, sorted) is divided among the processes in contiguous
    ranges of files; one ``.npy`` file into P contiguous row ranges; an array or an
    iterable of chunks is this process's own data.
    """
    paths = _paths(data)
    if paths is None:
        if isinstance(data, (np.ndarray, jax.Array)) or hasattr(data, "__array__"):
            return [data]
        if isinstance(data, (list, tuple)) and data and not hasattr(data[0], "shape"):
            return [np.asarray(data)]
        chunks, _, _ = read_chunks(data, None)
        return list(chunks)
    if len(paths) == 1 and processes > 1:
        path = paths[0]
        if not path.endswith(".npy"):
            raise ValueError(
                f"{path}: with several processes one file is split by rows, which needs a "
                ".npy file (memory-mapped); convert it or give several files"
            )
        arr = _read_whole(path)
        n = arr.shape[0]
        return [arr[rank * n // processes : (rank + 1) * n // processes]]
    return [_read_whole(p) for p in local_files(paths, rank, processes)]


class _Rows:
    """Several (n_i, d) arrays read as one: ``slice(a, b)`` copies only rows a..b."""

    def __init__(self, pieces: list[Any]):
        self.pieces = pieces
        self.bounds = np.cumsum([0] + [p.shape[0] for p in pieces])
        self.n = int(self.bounds[-1])

    def slice(self, a: int, b: int) -> np.ndarray:
        out = []
        for p, lo, hi in zip(self.pieces, self.bounds[:-1], self.bounds[1:]):
            if lo < b and hi > a:
                out.append(np.asarray(p[max(a - lo, 0) : min(b, hi) - lo]))
        return out[0] if len(out) == 1 else np.concatenate(out)


class _Shard(NamedTuple):
    """One device's contiguous rows: [start, stop) of this process's rows, and the
    indices (relative to start) of its non-finite rows."""

    start: int
    stop: int
    bad: np.ndarray


def _screen(rows: _Rows, n_shards: int, chunk: int) -> list[_Shard]:
    shards = []
    for i in range(n_shards):
        start, stop = i * rows.n // n_shards, (i + 1) * rows.n // n_shards
        bad = [
            a - start + np.flatnonzero(~np.all(np.isfinite(rows.slice(a, min(a + chunk, stop))), 1))
            for a in range(start, stop, chunk)
        ]
        shards.append(_Shard(start, stop, np.concatenate(bad) if bad else np.zeros(0, np.int64)))
    return shards


class _Layout(NamedTuple):
    """What every process knows after the first all-gather, per global shard (S,)."""

    given: np.ndarray  # rows as given
    kept: np.ndarray  # rows kept (non-finite ones skipped)
    first_bad: np.ndarray  # first non-finite row (-1: none), relative to the shard
    d: int
    dtype: Any

    def offset(self, g: int) -> int:
        return int(self.given[:g].sum())


def _width(rows: _Rows) -> tuple[int, int]:
    """This process's data width and working float size in bytes ((-1, 0) if empty)."""
    d, itemsize = -1, 0
    for p in rows.pieces:
        if p.shape[0]:
            p = check_chunk(p[:1], None, 0)
            if d >= 0 and p.shape[1] != d:
                raise ValueError(f"this process's files have {d} and {p.shape[1]} columns")
            d, itemsize = p.shape[1], np.dtype(float_dtype(p.dtype)).itemsize
    return d, itemsize


def _read(data: Any, topo: _Topology, chunk: int):
    """This process's rows, shards, width and float size, or the error reading them
    (raised at once in one process; with several, after telling the others)."""
    try:
        rows = _Rows(local_rows(data, topo.rank, topo.processes))
        return rows, _screen(rows, len(topo.local), chunk), *_width(rows), None
    except (ValueError, OSError) as err:
        if topo.processes == 1:
            raise
        empty = [_Shard(0, 0, np.zeros(0, np.int64))] * len(topo.local)
        return None, empty, -1, 0, err


def _agree(shards: list[_Shard], d: int, itemsize: int, local_error, topo: _Topology) -> _Layout:
    """All-gather the shard sizes, widths and dtypes; refuse disagreement everywhere."""
    info = {
        "ok": np.int64(local_error is None),
        "d": np.int64(d),
        "itemsize": np.int64(itemsize),
        "given": np.array([s.stop - s.start for s in shards], np.int64),
        "bad": np.array([s.bad.size for s in shards], np.int64),
        "first_bad": np.array([s.bad[0] if s.bad.size else -1 for s in shards], np.int64),
    }
    all_info = _allgather(info, topo)
    if not all_info["ok"].all():
        failed = np.flatnonzero(all_info["ok"] == 0).tolist()
        if local_error is not None:
            raise local_error
        raise ValueError(f"process(es) {failed} could not read their data (see their errors)")
    widths = {int(w) for w in all_info["d"] if w >= 0}
    if len(widths) > 1:
        raise ValueError(f"the processes' data have different widths: {sorted(widths)} columns")
    if not widths:
        raise ValueError("data is empty: no rows")
    sizes = {int(s) for s, w in zip(all_info["itemsize"], all_info["d"]) if w >= 0}
    if len(sizes) > 1:
        raise ValueError("the processes' data have different float precisions")
    given = all_info["given"].reshape(-1)
    if not given.sum():
        raise ValueError("data is empty: no rows")
    dtype = jnp.float64 if sizes.pop() == 8 else jnp.float32
    return _Layout(
        given,
        given - all_info["bad"].reshape(-1),
        all_info["first_bad"].reshape(-1),
        widths.pop(),
        jax.dtypes.canonicalize_dtype(dtype),
    )


# --- the three ways of combining ------------------------------------------------------


def _chunks(rows: _Rows, shard: _Shard, chunk: int, dtype, skip: bool):
    """The kept rows of a shard in chunks, as NumPy of ``dtype``."""
    for a in range(shard.start, shard.stop, chunk):
        b = min(a + chunk, shard.stop)
        part = rows.slice(a, b)
        if skip:
            bad = shard.bad[(shard.bad >= a - shard.start) & (shard.bad < b - shard.start)]
            part = np.delete(part, bad - (a - shard.start), axis=0)
        yield np.asarray(part, dtype)


def _run_shards(plans, starts, rows, shards, topo, chunk, dtype, skip, size) -> list[FitResult]:
    """One feeder per local shard, fed round-robin so the devices work concurrently
    (dispatch is asynchronous)."""
    feeders = []
    for plan, start, shard, dev in zip(plans, starts, shards, topo.local):
        feeder = Feeder(plan, jax.device_put(init_carry(start), dev), None, size)
        feeder.skipped = shard.bad.tolist() if skip else []
        feeders.append(feeder)
    streams = [_chunks(rows, s, chunk, dtype, skip) for s in shards]
    live = list(range(len(shards)))
    while live:
        for i in list(live):
            part = next(streams[i], None)
            if part is None:
                live.remove(i)
            else:
                with jax.default_device(topo.local[i]):
                    feeders[i].push(jax.device_put(part, topo.local[i]))
    out = []
    for feeder, dev in zip(feeders, topo.local):
        with jax.default_device(dev):
            feeder.close()
            out.append(feeder.result())
    return out


class _Part(NamedTuple):
    """One shard's (or a run of shards') contribution, on the host.

    Attributes:
      weight: for ``welford`` states the rows' absolute weight t + n₀; otherwise
        W = 1 − K, the weight the rows keep against everything before them (1 for the
        first shard, which starts from the real initial state).
      keep: K = Π(1 − aₜ), the factor everything before the rows keeps (tracked as a
        product of its own: 1 − W rounds to 0 in float32 once W is near 1, dropping a
        history that still counts, e.g. an outlier's); 0 for the first shard.
      mean, cov: the rows' own normalised moments.
      count: rows absorbed.
      diverged_at: the global row of a rejected update, or -1 (later shards are
        then dropped).
    """

    weight: Any
    mean: Any
    cov: Any
    count: Any
    diverged_at: Any
    keep: Any = 0.0


def _fold(a: _Part, b: _Part, absolute: bool) -> _Part:
    """Append part b to part a. Absolute weights (``welford``: Chan's merge):
    W = W_A + W_B; relative ones (η = K_B η_A + η_B): W = K_B W_A + W_B."""
    if int(a.diverged_at) >= 0:
        return a
    weight = a.weight + b.weight if absolute else b.keep * a.weight + b.weight
    frac_b = np.asarray(b.weight / weight if weight > 0 else 0.0)
    mean, cov = mix_moments(a.mean, a.cov, b.mean, b.cov, frac_b)
    keep = a.keep * b.keep
    return _Part(weight, mean, cov, a.count + b.count, b.diverged_at, keep)


def _global_row(res: FitResult, offset: int) -> int:
    d = int(res.diverged_at)
    return -1 if d < 0 else offset + d


def _part(res: FitResult, offset: int, welford_like: bool) -> _Part:
    """A shard's part, in float64 on the host (its folds are on the host too: in
    float32 a fold of shards around a 1e10 outlier lost 0.2 %)."""
    s = jax.tree_util.tree_map(
        lambda x: np.asarray(x, np.float64) if np.issubdtype(x.dtype, np.floating) else x,
        jax.device_get(res.state),
    )
    if isinstance(s, tuple) and not isinstance(s, (WelfordState, MomentsState)):
        return _weighted_part(s, res, offset)
    weight = s.count + s.prior_weight if welford_like else 1
    mean = s.origin + s.mean  # parts fold in the data's own frame
    return _Part(np.asarray(weight, mean.dtype), mean, s.cov, s.count, _global_row(res, offset))


def _weighted_part(state, res: FitResult, offset: int) -> _Part:
    """Normalise a zero-weight shard's (d + 2)-column state: the mean of column d is
    W = 1 − K, of column d + 1 K itself; the first d columns' are Σᵢ wᵢ (yᵢ − c) and
    their centred scatter. With a known mean (shift None) the means stay and W and K
    are the last two variances; the first d columns' scatter is about the mean."""
    inner, shift = state
    m, cov = np.asarray(inner.origin + inner.mean), np.asarray(inner.cov)
    if shift is None:
        w, keep = cov[-2, -2], cov[-1, -1]
        sigma = cov[:-2, :-2] / w if w > 0 else cov[:-2, :-2]
        return _Part(w, m[:-2], sigma, res.n_rows, _global_row(res, offset), keep)
    w, keep = m[-2], m[-1]
    if not w > 0:  # an empty shard
        return _Part(np.zeros((), m.dtype), shift, cov[:-2, :-2], 0, -1, np.ones((), m.dtype))
    mu = m[:-2] / w
    # Σ_b = M/W − μ_b μ_bᵀ with M = Σ' + μ'μ'ᵀ the weighted uncentred scatter, that
    # is Σ'/W − (1 − W) μ_b μ_bᵀ, with K for 1 − W (which cancels in float32).
    sigma = cov[:-2, :-2] / w - keep * np.outer(mu, mu)
    sigma = 0.5 * (sigma + sigma.T)
    return _Part(w, shift + mu, sigma, res.n_rows, _global_row(res, offset), keep)


@functools.cache
def _with_weight(estimator: Estimator) -> Estimator:
    """``estimator`` on rows (y − c, 1, 0), the state carrying the shift c: from a
    zero-weight start whose last mean is 1, column d's running mean is the total
    weight W = 1 − K of the rows absorbed and column d + 1's is K. An estimator with a
    known mean (shift None: its means never move) takes the rows as given, and from
    a start whose last variance is 1, the last two variances are W and K."""

    def update(state, batch):
        inner, shift = state
        ones = jnp.ones((batch.shape[0], 1), batch.dtype)
        rows = batch if shift is None else batch - shift
        rows = jnp.concatenate([rows, ones, 0 * ones], axis=1)
        return estimator.update(inner, rows), shift

    return Estimator(
        init=None,
        update=update,
        estimate=lambda s: estimator.estimate(s[0]),
        is_valid=lambda s: estimator.is_valid(s[0]),
        rowwise=True,
    )


def _first_kept(rows: _Rows, shard: _Shard, dtype) -> np.ndarray:
    """A shard's first finite row: the shift of its zero-weight run."""
    bad = set(shard.bad.tolist())
    for a in range(shard.start, shard.stop):
        if a - shard.start not in bad:
            return np.asarray(rows.slice(a, a + 1)[0], dtype)
    return np.zeros(rows.pieces[0].shape[1], dtype)


def _shard_start(plan, start, g, rows, shard, layout, known):
    """The plan and start state of global shard g: the real start for shard 0; for
    ``welford`` an empty state; otherwise a zero-weight state at the shard's global
    row number (``known``: the estimator keeps a known mean, ``_fixes_mean``)."""
    if g == 0:
        return plan, start
    if isinstance(start, WelfordState):
        return plan, start._replace(count=start.count * 0, prior_weight=start.prior_weight * 0)
    d, dtype = layout.d, layout.dtype
    count = jnp.asarray(start.count + int(layout.kept[:g].sum()), counter_dtype())
    zero = MomentsState(
        mean=jnp.zeros(d + 2, dtype).at[-1].set(0 if known else 1),  # K starts at 1
        cov=jnp.zeros((d + 2, d + 2), dtype).at[-1, -1].set(1 if known else 0),
        count=count,
        origin=jnp.zeros(d + 2, dtype),
    )
    if known:  # the means are the known mean, for good
        zero = zero._replace(mean=zero.mean.at[:d].set(start.origin + start.mean))
    shift = None if known else jnp.asarray(_first_kept(rows, shard, dtype))
    return plan._replace(estimator=_with_weight(plan.estimator)), (zero, shift)


def _fixes_mean(estimator: Estimator, start: MomentsState) -> bool:
    """Whether the estimator keeps its mean (``known_mean``): its update of the start
    by a row away from the mean leaves the mean as it was."""
    row = (start.origin + start.mean + 1)[None]
    return bool(jnp.all(estimator.update(start, row).mean == start.mean))


def _moments_fit(plan, start, rows, shards, topo, layout, skip, size, chunk):
    """Run this process's shards of a moment estimator and fold every shard, in
    global order (locally, then the processes' folds). Returns the state and the
    global row of a rejected update (-1)."""
    welford_like = isinstance(start, WelfordState)
    known = not welford_like and len(shards) > 0 and _fixes_mean(plan.estimator, start)
    firsts = [
        _shard_start(plan, start, topo.first + i, rows, s, layout, known)
        for i, s in enumerate(shards)
    ]
    results = _run_shards(
        [f[0] for f in firsts],
        [f[1] for f in firsts],
        rows,
        shards,
        topo,
        chunk,
        layout.dtype,
        skip,
        size,
    )
    fold = functools.partial(_fold, absolute=welford_like)
    parts = [_part(r, layout.offset(topo.first + i), welford_like) for i, r in enumerate(results)]
    local = functools.reduce(fold, parts)
    # Fixed dtypes: every process must send the same bytes to the collective.
    every = _allgather(
        _Part(
            np.asarray(local.weight, layout.dtype),
            np.asarray(local.mean, layout.dtype),
            np.asarray(local.cov, layout.dtype),
            np.asarray(local.count, np.int64),
            np.asarray(local.diverged_at, np.int64),
            np.asarray(local.keep, layout.dtype),
        )._asdict(),
        topo,
    )
    total = functools.reduce(
        fold, [_Part(**{k: v[p] for k, v in every.items()}) for p in range(topo.processes)]
    )
    mean, cov = jnp.asarray(total.mean, layout.dtype), jnp.asarray(total.cov, layout.dtype)
    count = jnp.asarray(total.count, counter_dtype())
    origin = jnp.zeros_like(mean)
    if welford_like:
        state = WelfordState(mean, cov, count, start.prior_weight, origin)
    else:
        state = MomentsState(mean=mean, cov=cov, count=count, origin=origin)
    return state, int(total.diverged_at)


# --- gradient estimators: all-gathered batches ----------------------------------------


@functools.partial(jax.jit, static_argnames=("plan", "mesh", "local_batch"))
def _gathered_program(plan: ScanPlan, mesh: Mesh, local_batch: int, carry, rows, truth):
    """``scan_rows`` over the rows of every shard regrouped batch by batch: update k
    is the concatenation, in device order, of every shard's k-th local batch."""

    def local(carry, rows, truth):
        u = rows.shape[0] // local_batch
        batches = rows.reshape(u, local_batch, rows.shape[1])
        batches = jax.lax.all_gather(batches, "x", axis=1, tiled=True)
        return scan_rows(plan, carry, batches.reshape(-1, rows.shape[1]), truth)

    return jax.shard_map(
        local, mesh=mesh, in_specs=(P(), P("x"), P()), out_specs=(P(), P()), check_vma=False
    )(carry, rows, truth)


def _gathered_runner(mesh: Mesh, topo: _Topology, d: int):
    """A ``Feeder`` runner for rows (m, D_local·d): the i-th row holds the i-th row of
    each local shard side by side, so the feeder's regrouping stays row-wise."""
    n = len(topo.devices)
    sharding = NamedSharding(mesh, P("x"))

    def run(plan, carry, rows, truth, origin):
        # gradient states keep no origin: the rows come as given (origin is None)
        m = rows.shape[0]
        local = np.asarray(rows).reshape(m, len(topo.local), d).transpose(1, 0, 2).reshape(-1, d)
        global_rows = jax.make_array_from_process_local_data(sharding, local)
        big = plan._replace(batch_size=plan.batch_size * n)
        return _gathered_program(big, mesh, plan.batch_size, carry, global_rows, truth)

    return run


def _rechunk(parts, chunk: int):
    """Pieces of exactly ``chunk`` rows (the last one shorter) from pieces of any size."""
    buf, n = [], 0
    for part in parts:
        buf.append(part)
        n += part.shape[0]
        while n >= chunk:
            rows = np.concatenate(buf)
            yield rows[:chunk]
            buf, n = [rows[chunk:]], n - chunk
    if n:
        yield np.concatenate(buf)


def _gathered_fit(plan, start, truth, rows, shards, topo, layout, skip, size, chunk, progress):
    """Synchronous data-parallel updates (module docstring); the result is every
    process's own copy."""
    n = len(topo.devices)
    if plan.batch_size % n:
        raise ValueError(
            f"batch_size ({plan.batch_size}) must be a multiple of the number of devices ({n}): "
            "each update takes batch_size / D rows from every device's shard"
        )
    if len(set(layout.kept.tolist())) != 1:
        raise ValueError(
            "a gradient (non-rowwise) estimator runs synchronous data-parallel updates, which "
            f"need shards of equal length; the shards have {layout.kept.tolist()} rows (after "
            "skipping): give every process the same number of rows, divisible by its number "
            "of devices (weighted gradients for unequal shards are not supported yet)"
        )
    mesh = Mesh(np.asarray(topo.devices), ("x",))
    local_plan = plan._replace(batch_size=plan.batch_size // n)
    run = _gathered_runner(mesh, topo, layout.d)
    feeder = Feeder(local_plan, init_carry(start), truth, size, run=run)
    streams = [_rechunk(_chunks(rows, s, chunk, layout.dtype, skip), chunk) for s in shards]
    started, done = time.perf_counter(), 0
    for parts in zip(*streams):
        feeder.push(jnp.asarray(np.concatenate(parts, axis=1)))
        done += parts[0].shape[0] * n
        if progress:
            report_progress(done, int(layout.kept.sum()), started)
    feeder.close()
    res = _local(feeder.result())
    diverged = int(res.diverged_at)
    if diverged >= 0:
        # A rejected update k starts with shard 0's k-th local batch (also for the
        # last, shorter one): its local row k·b/D, mapped back to the data as given.
        kept = diverged // plan.batch_size * local_plan.batch_size
        mine = original_row(kept, shards[0].bad.tolist() if skip else [])
        diverged = int(_allgather(np.int64(mine), topo)[0])
    return res._replace(
        diverged_at=jnp.asarray(diverged, jnp.int32),
        n_rows=int(layout.kept.sum()),
        n_skipped=int((layout.given - layout.kept).sum()),
    )


def _local(tree: Any) -> Any:
    """Global replicated arrays as this process's own (usable with local arrays)."""
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(np.asarray(x)) if isinstance(x, jax.Array) else x, tree
    )


# --- the driver -----------------------------------------------------------------------


def fit_data_parallel(
    plan: ScanPlan,
    data: Any,
    devices: Any,
    *,
    init,
    state,
    truth,
    chunk_rows,
    nan_policy,
    progress,
) -> FitResult:
    """``fit(..., devices=...)``: see ``fit`` and the module docstring."""
    topo = _topology(devices)
    est = plan.estimator
    if est.rowwise and plan.trace_every:
        raise ValueError(
            "trace_every is not supported by a data-parallel fit of a moment estimator "
            "(each shard sees only its rows): trace a single-device fit"
        )
    chunk = chunk_rows or DEFAULT_CHUNK_ROWS
    rows, shards, d, itemsize, local_error = _read(data, topo, chunk)
    layout = _agree(shards, d, itemsize, local_error, topo)
    skip = nan_policy == "skip"
    bad = np.flatnonzero(layout.first_bad >= 0)
    if bad.size and not skip:
        g = int(bad[0])
        row = layout.offset(g) + int(layout.first_bad[g])
        raise DataError(
            f"data row {row} (of the rows of all processes in order) is not finite; a "
            "data-parallel fit screens every shard first, so nothing was estimated (pass "
            "nan_policy='skip' to drop such rows)",
            row,
        )
    start = start_or_continue(est, init, state, layout.d, layout.dtype)
    size = None if chunk_rows is None else chunk
    show = progress and jax.process_index() == 0
    if not est.rowwise:
        truth = None if truth is None else check_truth(truth, plan.score, layout.d, layout.dtype)
        try:
            return _gathered_fit(
                plan, start, truth, rows, shards, topo, layout, skip, size, chunk, show
            )
        finally:
            if show:
                print(file=sys.stderr)
    if not isinstance(start, (WelfordState, MomentsState)):
        raise ValueError(
            "a data-parallel fit combines welford, natural_gradient and exponential "
            f"states, or runs non-rowwise estimators batch-synchronously; this rowwise "
            f"estimator's state is a {type(start).__name__}: fit it on one device"
        )
    t0 = time.perf_counter()
    new_state, diverged = _moments_fit(plan, start, rows, shards, topo, layout, skip, size, chunk)
    if show:
        report_progress(int(layout.given.sum()), int(layout.given.sum()), t0)
        print(file=sys.stderr)
    return FitResult(
        est.estimate(new_state),
        new_state,
        jnp.asarray(diverged, jnp.int32),
        None,
        int(layout.kept.sum()),
        int((layout.given - layout.kept).sum()),
    )
