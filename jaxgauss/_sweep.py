"""``sweep``: hyperparameters × seeds in one compiled program, sharded across devices.

The K grid values × S seeds of a sweep are one ``vmap`` of ``fit``'s scan
(``jaxgauss.engine.scan_batches``, its guarded step and traces), wrapped in a
``jax.shard_map`` over a (k, s) mesh of all ``jax.devices()``. The stream is long, so
it runs in chunks: one jitted chunk program is called again and again with the
carry passed between calls. Each seed's rows for a chunk are drawn once, from that
seed's key, by a stream program of their own, and shared by every grid value (common
random numbers); it also keeps the exact running MLE of the same rows (``welford``),
the efficiency reference. The stream program depends on the truth's shape and the
chunk, not on the estimator, so sweeps of several estimators over the same truth
compile it once.
"""

from __future__ import annotations

import functools
import itertools
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxgauss._checks import check_int, check_score, check_stacked_gaussian
from jaxgauss._engine import Trace, init_carry, scan_batches
from jaxgauss._memory import available_memory, gigabytes
from jaxgauss._stream import tile
from jaxgauss.estimators.base import Estimator, counter_dtype
from jaxgauss.estimators.moments import welford
from jaxgauss.gaussian import Gaussian, check_gaussian
from jaxgauss.streams import sample

__all__ = ["SweepResult", "sweep", "grid_product"]

Grid = np.ndarray | dict[str, np.ndarray]

# Bytes of rows drawn per chunk (over a device's seeds) when chunk_steps=None.
_CHUNK_BYTES = 64 * 2**20


class SweepResult(NamedTuple):
    """What ``sweep`` returns: K grid values × S seeds.

    Attributes:
      grid: the grid as given, as NumPy: an array (K,) or a dict of arrays (K,).
      final_kl: (K, S) KL(truth ‖ estimate) after the last row (of the last valid
        estimate where a run diverged).
      diverged_at: (K, S) int32, the first row of the first rejected update, or -1.
      estimate: a ``Gaussian`` with leading axes (K, S).
      mle_kl: (S,) KL(truth ‖ MLE of the same rows): the best any estimator can do
        on that stream, to first order.
      efficiency: (K, S) final_kl / mle_kl: 1 matches the MLE, larger is worse.
      trace: with ``trace_every > 0``, a ``Trace`` whose ``rows`` (m,) are the rows
        seen at each snapshot and ``kl`` (K, S, m) is KL(truth ‖ estimate) there;
        ``estimate`` is None (a sweep keeps only the KL over time). Otherwise None.
      truth: the truth every seed's stream was drawn from: one ``Gaussian``, or one
        per seed (a leading (S,) axis), so column s of ``final_kl`` and
        ``efficiency`` is measured against ``truth[s]``.

    Example:
      >>> import numpy as np, jaxgauss as jg
      >>> eff = np.array([[2.0, 4.0], [1.2, 1.4]])  # (K, S) = (2, 2)
      >>> res = jg.SweepResult(np.array([0.1, 0.01]), eff, np.full((2, 2), -1), None,
      ...                      np.ones(2), eff, None)
      >>> res.best()
      0.01
      >>> print(res)
      value  median eff   25%   75%  diverged/2
        0.1           3   2.5   3.5           0
       0.01         1.3  1.25  1.35           0
    """

    grid: Grid
    final_kl: jax.Array
    diverged_at: jax.Array
    estimate: Gaussian
    mle_kl: jax.Array
    efficiency: jax.Array
    trace: Trace | None
    truth: Gaussian | None = None

    def _names_and_values(self) -> tuple[list[str], np.ndarray]:
        """Column names and a (K, n_names) table of the grid's values."""
        if isinstance(self.grid, Mapping):
            names = list(self.grid)
            return names, np.stack([np.asarray(self.grid[n]) for n in names], axis=1)
        return ["value"], np.asarray(self.grid)[:, None]

    def stats(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per grid value, as NumPy arrays (K,): the median, 25 % and 75 % quantiles of
        the efficiency over the seeds that did not diverge, NaN efficiencies ignored
        (NaN where none is left), and how many seeds diverged."""
        diverged = np.asarray(self.diverged_at) >= 0
        eff = np.where(diverged, np.nan, np.asarray(self.efficiency, np.float64))
        quantiles = np.full((3, eff.shape[0]), np.nan)
        ok = ~np.all(np.isnan(eff), axis=1)
        if ok.any():
            quantiles[:, ok] = np.nanquantile(eff[ok], [0.25, 0.5, 0.75], axis=1)
        return quantiles[1], quantiles[0], quantiles[2], np.sum(diverged, axis=1)

    def best_index(self) -> int:
        """The index k of the grid value whose median efficiency over seeds is lowest,
        among the grid values on which no seed diverged and no efficiency is NaN (a
        NaN efficiency is never "best").

        Raises:
          ValueError: every grid value diverged, or has a NaN efficiency, on at least
            one seed.
        """
        median, _, _, n_div = self.stats()
        nan = np.any(np.isnan(np.asarray(self.efficiency, np.float64)), axis=1)
        ok = (n_div == 0) & ~nan & np.isfinite(median)
        if not ok.any():
            raise ValueError(
                "every grid value diverged (or has a NaN efficiency) on at least one seed"
            )
        return int(np.argmin(np.where(ok, median, np.inf)))

    def best(self) -> float | dict[str, float]:
        """The grid value at ``best_index()``: the lowest median efficiency over seeds
        among the grid values on which no seed diverged and no efficiency is NaN.

        Returns:
          That value as a Python float for an array grid, or a dict name → float for a
          dict grid.

        Raises:
          ValueError: every grid value diverged on at least one seed.
        """
        k = self.best_index()
        if isinstance(self.grid, Mapping):
            return {n: v[k].item() for n, v in self.grid.items()}
        return self.grid[k].item()

    def summary(self) -> str:
        """A table, one line per grid value: the grid value(s), the median and 25–75 %
        quantiles of the efficiency over the seeds that did not diverge, and how many
        seeds diverged."""
        names, values = self._names_and_values()
        median, q25, q75, n_div = self.stats()
        n_seeds = self.final_kl.shape[1]
        header = names + ["median eff", "25%", "75%", f"diverged/{n_seeds}"]
        rows = [
            [f"{v:.4g}" for v in values[k]]
            + [f"{x:.4g}" if np.isfinite(x) else "-" for x in (median[k], q25[k], q75[k])]
            + [str(n_div[k])]
            for k in range(values.shape[0])
        ]
        widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
        return "\n".join(
            "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in [header] + rows
        )

    def __str__(self) -> str:
        return self.summary()


def grid_product(**axes: Any) -> dict[str, np.ndarray]:
    """The Cartesian product of named 1-D value lists, as a ``sweep`` dict grid of
    NumPy arrays (exact values: ``sweep`` casts them to the data's dtype).

    The last name varies fastest (like ``itertools.product``); the result has
    K = ∏ len(axis) entries per name.

    Example:
      >>> import jaxgauss as jg
      >>> g = jg.grid_product(lr=[0.1, 0.01], power=[0.5, 1.0])
      >>> g["lr"].tolist(), g["power"].tolist()
      ([0.1, 0.1, 0.01, 0.01], [0.5, 1.0, 0.5, 1.0])
    """
    if not axes:
        raise ValueError("grid_product needs at least one named axis")
    values = {name: _grid_axis(f"grid_product axis {name!r}", v) for name, v in axes.items()}
    combos = list(itertools.product(*(range(len(v)) for v in values.values())))
    return {name: v[[c[i] for c in combos]] for i, (name, v) in enumerate(values.items())}


# --- the compiled programs ------------------------------------------------------------


def _rows(key: jax.Array, truth: Gaussian, start: jax.Array, n: int) -> jax.Array:
    """Rows start, …, start + n − 1 of one seed's stream, (n, d).

    Row t is drawn from its own key fold_in(key, t), so the stream does not depend
    on how it is cut into chunks or batches.
    """
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, start + jnp.arange(n, dtype=jnp.int32))
    return jax.vmap(lambda k: sample(k, truth, 1)[0])(keys)


def _replicated(mesh: Mesh, tree: Any) -> Any:
    return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, P()))


def _made(make_estimator: Callable[[Any], Estimator], h: Any) -> Estimator:
    """``make_estimator(h)``, which must be an ``Estimator``: checked as the programs
    are traced (a ``ValueError`` out of ``sweep``), so no extra call is made."""
    made = make_estimator(h)
    if not isinstance(made, Estimator):
        raise ValueError(
            f"make_estimator must return a jaxgauss Estimator, got {type(made).__name__}"
        )
    return made


class _ChunkPlan(NamedTuple):
    """What the compiled programs do (hashable: their static argument).

    Attributes:
      make_estimator: grid value → ``Estimator``.
      mesh: the (k, s) device mesh.
      num_seeds: S padded to a multiple of the mesh's seed axis.
      num_updates: updates per configuration in one chunk.
      batch_size: rows per update.
      trace_every: a snapshot every this many updates (0: none).
      score: ``score(truth, estimate) -> scalar``, the yardstick.
      truth_per_seed: the truth has a leading seed axis (sharded like the seeds).
    """

    make_estimator: Callable[[Any], Estimator]
    mesh: Mesh
    num_seeds: int
    num_updates: int
    batch_size: int
    trace_every: int
    score: Callable[[Any, Any], jax.Array]
    truth_per_seed: bool = False


@functools.partial(jax.jit, static_argnames=("make_estimator", "mesh", "num_seeds"))
def _init_program(*, make_estimator, mesh, num_seeds, grid, g0):
    """Carries (K_pad, S_pad) of ``init_carry(est.init(g0))`` and welford states (S_pad,)."""
    s_local = num_seeds // mesh.shape["s"]

    def local(grid):
        init = lambda h: tile(init_carry(_made(make_estimator, h).init(g0)), s_local)  # noqa: E731
        return jax.vmap(init)(grid), tile(welford().init(g0), s_local)

    specs = dict(in_specs=(P("k"),), out_specs=(P("k", "s"), P("s")))
    return jax.shard_map(local, mesh=mesh, check_vma=False, **specs)(grid)


@functools.partial(
    jax.jit,
    static_argnames=("mesh", "num_rows", "truth_per_seed", "score"),
    donate_argnames=("mle_state",),
)
def _stream_program(*, mesh, num_rows, truth_per_seed, score, mle_state, keys, truth, start):
    """Every seed's rows ``start``, …, ``start + num_rows − 1`` (S_pad, num_rows, d),
    the seeds' MLE states after them, and score(truth, MLE) (S_pad,), the last
    replicated on every device."""
    t_axis = 0 if truth_per_seed else None  # a truth per seed, or one for all

    def local(mle_state, keys, truth, start):
        ys = jax.vmap(lambda k, t: _rows(k, t, start, num_rows), (0, t_axis))(keys, truth)
        mle_state = jax.vmap(welford().update)(mle_state, ys)
        mle = jax.vmap(lambda s, t: score(t, welford().estimate(s)), (0, t_axis))(mle_state, truth)
        return ys, mle_state, mle

    ys, mle_state, mle = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P("s"), P("s"), P("s") if truth_per_seed else P(), P()),
        out_specs=(P("s"), P("s"), P("s")),
    )(mle_state, keys, truth, start)
    return ys, mle_state, _replicated(mesh, mle)


@functools.partial(jax.jit, static_argnames=("plan",), donate_argnames=("carry",))
def _chunk_program(plan: _ChunkPlan, *, carry, grid, ys, truth):
    """``plan.num_updates`` guarded updates of every (grid value, seed) on the seeds'
    rows ``ys`` (S_pad, num_updates · batch_size, d).

    Returns the new carry, then (replicated on every device) the estimates,
    score(truth, estimate), diverged_at and the chunk's trace scores.
    """
    t_axis = 0 if plan.truth_per_seed else None  # a truth per seed, or one for all

    def local(carry, grid, ys, truth):
        ys = ys.reshape(ys.shape[0], plan.num_updates, plan.batch_size, ys.shape[-1])

        def one(h, c, y, t):
            est = _made(plan.make_estimator, h)
            c, trace = scan_batches(est, c, y, t, plan.trace_every, score=plan.score)
            estimate = est.estimate(c.state)
            trace_score = None if trace is None else trace.score
            return c, estimate, plan.score(t, estimate), trace_score

        # Outer vmap over grid values (data shared), inner over seeds (data per seed).
        run = jax.vmap(jax.vmap(one, in_axes=(None, 0, 0, t_axis)), in_axes=(0, 0, None, None))
        carry, estimate, final, trace_score = run(grid, carry, ys, truth)
        return carry, estimate, final, carry.diverged_at, trace_score

    ks = P("k", "s")
    out = jax.shard_map(
        local,
        mesh=plan.mesh,
        in_specs=(ks, P("k"), P("s"), P("s") if plan.truth_per_seed else P()),
        out_specs=(ks, ks, ks, ks, ks),
        # Estimators are arbitrary user code: their loops (e.g. an EM seed's fori_loop
        # starting from constants) need not track which values vary across devices.
        check_vma=False,
    )(carry, grid, ys, truth)
    return out[0], *_replicated(plan.mesh, out[1:])


# --- the driver -----------------------------------------------------------------------


def _mesh(num_grid: int, num_seeds: int) -> Mesh:
    """A (k, s) mesh of all devices whose shape wastes the fewest padded cells
    (ties: more devices on the seed axis, so fewer devices draw the same rows)."""
    devices = jax.devices()
    n = len(devices)

    def padded(a: int) -> tuple[int, int]:
        b = n // a
        return (-(-num_grid // a) * a) * (-(-num_seeds // b) * b), a

    a = min((a for a in range(1, n + 1) if n % a == 0), key=padded)
    return Mesh(np.asarray(devices).reshape(a, n // a), ("k", "s"))


def _pad(x: jax.Array, size: int) -> jax.Array:
    """Pad axis 0 to ``size`` by repeating the last entry (real values, no NaN)."""
    return jnp.concatenate([x, jnp.repeat(x[-1:], size - x.shape[0], axis=0)])


def _grid_axis(name: str, v: Any) -> np.ndarray:
    """One axis of a grid as NumPy: a non-empty 1-D array of finite real numbers."""
    arr = np.asarray(v)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be real numbers, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has non-finite values")
    return arr


def _as_grid(grid: Any) -> Grid:
    """Validate the grid: an array (K,) or a dict of equal-length arrays (K,), as NumPy."""
    if isinstance(grid, Mapping):
        if not grid:
            raise ValueError("grid is an empty dict")
        out = {str(k): _grid_axis(f"grid[{k!r}]", v) for k, v in grid.items()}
        sizes = {k: v.shape[0] for k, v in out.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"the grid's arrays must have equal lengths, got {sizes}")
        return out
    return _grid_axis("grid", grid)


class _Layout(NamedTuple):
    """How a sweep is laid out: the mesh, the padded grid and seed counts, the chunk."""

    mesh: Mesh
    num_grid: int
    num_seeds: int
    grid_pad: int
    seeds_pad: int
    chunk_rows: int


def _layout(
    num_grid: int, num_seeds: int, *, d: int, dtype, n_steps: int, unit: int, chunk_steps
) -> _Layout:
    """Lay the K × S configurations out on a mesh of all devices (padding both axes
    to fit it) and pick the chunk: a multiple of ``unit`` (batch_size × trace_every)
    rows, or all ``n_steps``; None picks one whose rows take about 64 MiB per device."""
    mesh = _mesh(num_grid, num_seeds)
    grid_pad = -(-num_grid // mesh.shape["k"]) * mesh.shape["k"]
    seeds_pad = -(-num_seeds // mesh.shape["s"]) * mesh.shape["s"]
    bytes_per_row = (seeds_pad // mesh.shape["s"]) * (d * jnp.dtype(dtype).itemsize + 16)
    if chunk_steps is None:
        chunk = _default_chunk(n_steps, unit, bytes_per_row)
    elif chunk_steps >= n_steps:
        chunk = n_steps
    elif chunk_steps % unit:
        raise ValueError(
            f"chunk_steps ({chunk_steps}) must be a multiple of batch_size × trace_every ({unit})"
        )
    else:
        chunk = chunk_steps
    return _Layout(mesh, num_grid, num_seeds, grid_pad, seeds_pad, chunk)


def _sweep_bytes(carry: int, layout: _Layout, *, d: int, dtype, n_snapshots: int) -> int:
    """Estimated peak bytes of a sweep laid out as ``layout`` whose configurations
    each carry ``carry`` bytes: carries (in, out, update temporaries), the MLE
    reference states, one chunk's rows and their keys, the estimates (on the devices
    and on the host), the traces and the seeds' keys."""
    itemsize = jnp.dtype(dtype).itemsize
    configs = layout.grid_pad * layout.seeds_pad
    gaussian = (d * d + d) * itemsize
    rows = layout.seeds_pad * layout.chunk_rows * (3 * d * itemsize + 16)
    return (
        4 * configs * carry
        + 3 * layout.seeds_pad * gaussian
        + rows
        + 2 * configs * (gaussian + 3 * 8)
        + 2 * configs * n_snapshots * itemsize
        + 3 * layout.seeds_pad * 16
    )


# Gaussian-sized parts assumed per configuration's carry (an Adam state holds three:
# parameters and two moments; averaging adds one). Estimated without calling
# make_estimator, so the estimate adds no trace to the sweep's single compilation.
_CARRY_GAUSSIANS = 4


def _check_memory(layout: _Layout, *, d: int, dtype, n_snapshots: int) -> None:
    """Refuse, before allocating anything, a sweep whose estimated memory exceeds what
    the devices have available, with the estimate and how many seeds would fit."""
    carry = _CARRY_GAUSSIANS * (d * d + d) * jnp.dtype(dtype).itemsize + 64
    need = _sweep_bytes(carry, layout, d=d, dtype=dtype, n_snapshots=n_snapshots)
    have = available_memory()
    if have is None or need <= have:
        return
    per_seed = need / layout.seeds_pad
    fit = max(0, int(have // per_seed) - 1)
    raise ValueError(
        f"this sweep needs about {gigabytes(need)} of memory ({layout.num_grid:,} grid values "
        f"× {layout.num_seeds:,} seeds, {gigabytes(per_seed)} per seed), more than the "
        f"{gigabytes(have)} available: run at most about {fit:,} seeds per call (fewer seeds "
        "per chunk; call sweep again with another key and pool the results)"
    )


def _default_chunk(n_steps: int, unit: int, bytes_per_row: int) -> int:
    cap = max(1, _CHUNK_BYTES // bytes_per_row // unit)
    if cap * unit >= n_steps:
        return n_steps
    # Prefer a size that cuts the stream into equal chunks: then every chunk is the
    # same compiled program.
    units = n_steps // unit
    exact = [u for u in range(cap, cap // 2, -1) if units % u == 0 and units * unit == n_steps]
    return (exact[0] if exact else cap) * unit


def _progress(done: int, total: int, start: float) -> None:
    filled = 30 * done // total
    print(
        f"\rsweep [{'#' * filled}{'.' * (30 - filled)}] chunk {done}/{total}"
        f"  {time.perf_counter() - start:.1f} s",
        end="\n" if done == total else "",
        file=sys.stderr,
        flush=True,
    )


def sweep(
    make_estimator: Callable[[Any], Estimator],
    grid: Any,
    *,
    truth: Gaussian,
    n_steps: int,
    seeds: int = 16,
    key: jax.Array | None = None,
    init: Gaussian | None = None,
    batch_size: int = 1,
    trace_every: int = 0,
    chunk_steps: int | None = None,
    progress: bool = False,
    score: Callable[[Any, Any], jax.Array] | None = None,
) -> SweepResult:
    """Run ``make_estimator(h)`` for every grid value h on ``seeds`` synthetic streams.

    Every configuration (h, s) runs ``fit``'s guarded scan over the same stream
    y_s,0, y_s,1, … ~ truth for ``n_steps`` rows, ``batch_size`` rows per update.
    Row t of seed s is drawn from fold_in(key_s, t) with key_s the s-th of
    ``jax.random.split(key, seeds)``: every grid value sees the same S streams
    (common random numbers), and the result does not depend on ``chunk_steps``. The
    rows are drawn inside the compiled program, once per seed and chunk, and never
    stored as a K × S × n array.

    ``make_estimator`` is called with a traced grid value (a dict of traced scalars
    for a dict grid), so all K × S runs are one vmapped program, compiled once per
    (make_estimator, shapes, settings) and cached: a second sweep with another grid
    of the same length does not recompile (pass the same function object, not a
    fresh lambda). The runs are sharded over a (k, s) mesh of all ``jax.devices()``;
    the grid and seed axes are padded to fit the mesh and the padding is dropped.

    The stream runs in chunks of ``chunk_steps`` rows through one jitted chunk
    function, the carry passed between calls. If ``chunk_steps`` does not divide
    ``n_steps``, the shorter last chunk compiles once more.

    The reference is the exact MLE of the same rows (``welford``), and
    efficiency = KL(truth ‖ estimate) / KL(truth ‖ MLE).

    Args:
      make_estimator: grid value → ``Estimator``; e.g.
        ``lambda lr: gradient_ascent(optax.sgd(lr), "precision")``.
      grid: an array (K,) or a dict of equal-length arrays (K,) (see
        ``grid_product``). Floating values take the truth's dtype.
      truth: the ``Gaussian`` the streams are drawn from; its dtype is the data's
        (float32 unless x64 is enabled and the truth is float64). A ``Gaussian``
        with a leading (S,) axis gives each seed its own truth of the same d (e.g.
        ``random_truth`` over condition numbers), so experiments over the
        data-generating process are one compiled call too; every grid value still
        sees the same S streams, and ``final_kl[:, s]`` is against ``truth[s]``.
      n_steps: rows per stream, a multiple of ``batch_size``, > d (so the MLE is
        non-singular).
      seeds: the number S of streams.
      key: a PRNG key (default ``jax.random.key(0)``).
      init: the starting ``Gaussian`` of every run; None means N(0, I).
      batch_size: rows per update.
      trace_every: record KL(truth ‖ estimate) every this many updates (0: no trace).
      chunk_steps: rows per chunk, a multiple of batch_size × trace_every; None
        picks one so that a chunk's rows take about 64 MiB.
      progress: print a progress bar over chunks to stderr.
      score: the yardstick ``score(truth, estimate) -> scalar`` (None:
        ``kl_divergence``, KL(truth ‖ estimate)); ``final_kl``, ``mle_kl``,
        ``efficiency`` and the trace then hold this score (and its ratio to the
        MLE's). Pass the same function object to reuse the compilation.

    Returns:
      A ``SweepResult``.

    Raises:
      ValueError: a bad grid, truth, init or count (the message names it).

    Example:
      >>> import jax.numpy as jnp, optax, jaxgauss as jg
      >>> truth = jg.Gaussian(jnp.zeros(2), jnp.eye(2))
      >>> make = lambda lr: jg.gradient_ascent(optax.sgd(lr), "precision")
      >>> sw = jg.sweep(make, [0.003, 0.03], truth=truth, n_steps=500, seeds=4)
      >>> sw.final_kl.shape, sw.mle_kl.shape
      ((2, 4), (4,))
      >>> sw.best()  # the grid value with the lowest median efficiency
      0.003
    """
    if not callable(make_estimator):
        raise ValueError(f"make_estimator must be callable, got {type(make_estimator).__name__}")
    score = check_score(score)
    num_seeds = check_int("seeds", seeds, 1)
    truth, per_seed = _check_sweep_truth(truth, num_seeds)
    d, dtype = truth.mean.shape[-1], truth.mean.dtype
    n_steps, batch_size = _check_steps(n_steps, batch_size, d)
    trace_every = check_int("trace_every", trace_every, 0)
    if chunk_steps is not None:
        chunk_steps = check_int("chunk_steps", chunk_steps, 1)
    init = Gaussian.standard(d, dtype) if init is None else init
    check_gaussian(init, d)
    key = _check_key(key)
    grid = _as_grid(grid)
    num_grid = jax.tree_util.tree_leaves(grid)[0].shape[0]

    layout = _layout(
        num_grid,
        num_seeds,
        d=d,
        dtype=dtype,
        n_steps=n_steps,
        unit=batch_size * max(trace_every, 1),
        chunk_steps=chunk_steps,
    )
    _check_memory(
        layout,
        d=d,
        dtype=dtype,
        n_snapshots=n_steps // (batch_size * trace_every) if trace_every else 0,
    )
    plan = _ChunkPlan(
        make_estimator=make_estimator,
        mesh=layout.mesh,
        num_seeds=layout.seeds_pad,
        num_updates=layout.chunk_rows // batch_size,
        batch_size=batch_size,
        trace_every=trace_every,
        score=score,
        truth_per_seed=per_seed,
    )
    # Floating grid values are traced in the data's dtype; the result keeps them as given.
    grid_pad = jax.tree_util.tree_map(
        lambda x: _pad(jnp.asarray(x, dtype if _floating(x) else None), layout.grid_pad), grid
    )
    keys = _pad(jax.random.split(key, num_seeds), layout.seeds_pad)
    outputs = _run_chunks(
        plan,
        layout,
        n_steps=n_steps,
        grid=grid_pad,
        keys=keys,
        truth=jax.tree_util.tree_map(lambda x: _pad(x, layout.seeds_pad), truth)
        if per_seed
        else truth,
        init=init.astype(dtype),
        progress=progress,
    )
    return _assemble(grid, layout, plan, outputs)._replace(truth=truth)


def _check_sweep_truth(truth: Any, num_seeds: int) -> tuple[Gaussian, bool]:
    """The truth in a floating dtype, and whether it is one per seed (leading axis)."""
    per_seed = isinstance(truth, Gaussian) and jnp.ndim(truth.mean) == 2
    if per_seed:
        check_stacked_gaussian(truth, num_seeds, None, "seeds", name="truth")
    else:
        check_gaussian(truth, name="truth")
    dtype = jnp.asarray(truth.mean).dtype
    truth = truth.astype(dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.zeros(()).dtype)
    return truth, per_seed


def _floating(x: np.ndarray) -> bool:
    return np.issubdtype(x.dtype, np.floating)


def _check_steps(n_steps: Any, batch_size: Any, d: int) -> tuple[int, int]:
    n_steps = check_int("n_steps", n_steps, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    if n_steps <= d:
        raise ValueError(
            f"n_steps ({n_steps}) must exceed the dimension d = {d}: the MLE reference of "
            "d rows or fewer is singular"
        )
    if n_steps % batch_size:
        raise ValueError(f"n_steps ({n_steps}) must be a multiple of batch_size ({batch_size})")
    if n_steps >= 2**31:
        raise ValueError(
            f"n_steps must be < 2**31 (rows are keyed by 32-bit numbers), got {n_steps}"
        )
    return n_steps, batch_size


def _check_key(key: Any) -> jax.Array:
    key = jax.random.key(0) if key is None else key
    if not isinstance(key, jax.Array) or key.shape not in ((), (2,)):
        raise ValueError(f"key must be one PRNG key such as jax.random.key(0), got {key!r}")
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    return key


def _run_chunks(plan: _ChunkPlan, layout: _Layout, *, n_steps, grid, keys, truth, init, progress):
    """The chunk loop: each chunk's rows are drawn (the stream program), then every
    configuration runs over them (the chunk program), the carry passing from one
    chunk to the next; a shorter last chunk compiles both once more. Returns the last
    chunk's outputs, its MLE scores, and the trace scores of every chunk."""
    carry, mle_state = _init_program(
        make_estimator=plan.make_estimator,
        mesh=plan.mesh,
        num_seeds=plan.num_seeds,
        grid=grid,
        g0=init,
    )
    starts = range(0, n_steps, layout.chunk_rows)
    trace_scores = []
    t0 = time.perf_counter()
    for i, start in enumerate(starts):
        rows = min(layout.chunk_rows, n_steps - start)
        ys, mle_state, mle = _stream_program(
            mesh=plan.mesh,
            num_rows=rows,
            truth_per_seed=plan.truth_per_seed,
            score=plan.score,
            mle_state=mle_state,
            keys=keys,
            truth=truth,
            start=jnp.asarray(start, jnp.int32),
        )
        chunk_plan = plan._replace(num_updates=rows // plan.batch_size)
        carry, *out = _chunk_program(chunk_plan, carry=carry, grid=grid, ys=ys, truth=truth)
        trace_scores.append(out[-1])
        if progress:
            jax.block_until_ready(out[1])
            _progress(i + 1, len(starts), t0)
    return (*out[:-1], mle), trace_scores


def _assemble(grid: Grid, layout: _Layout, plan: _ChunkPlan, outputs) -> SweepResult:
    """Drop the padding and stack the chunks' traces into a ``SweepResult``."""
    (estimate, final, diverged_at, mle), trace_scores = outputs
    k, s = layout.num_grid, layout.num_seeds
    final, mle = final[:k, :s], mle[:s]
    trace = None
    if plan.trace_every:
        scores = jnp.concatenate([t[:k, :s] for t in trace_scores], axis=-1)
        step = plan.batch_size * plan.trace_every
        trace = Trace(
            step * jnp.arange(1, scores.shape[-1] + 1, dtype=counter_dtype()), None, scores
        )
    return SweepResult(
        grid=grid,
        final_kl=final,
        diverged_at=diverged_at[:k, :s],
        estimate=jax.tree_util.tree_map(lambda x: x[:k, :s], estimate),
        mle_kl=mle,
        efficiency=final / mle,
        trace=trace,
    )
