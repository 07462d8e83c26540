"""A running normaliser of observations over pytrees (acme's and brax's
``running_statistics``, stable-baselines3's ``RunningMeanStd``), with welford's
float32 accuracy and an exact row count.

Per element of every floating leaf it keeps the mean and the variance of the rows
seen (diagonal: no d × d matrix, so 10⁵ features cost 10⁵ numbers), merged batch by
batch with Chan, Golub and LeVeque's formula. The variance divides by the total
weight and std = clip(√var, std_min, std_max), acme's conventions.

Accuracy: like ``welford``'s states, the mean is kept relative to an ``origin`` (the
first row), and each batch is measured about the current mean, x − (origin + μ) (the
sum rounded, its rounding error carried separately), before its sums are taken:
float32 observations with an offset of 10⁶ keep float32's relative accuracy in the
variance, where sums of x and x² lose it all.

Counting: a normaliser lives inside a training loop, where refusing to count on is
not an option, so the rows seen are two int32 words (hi · 2³⁰ + lo), exact to 2⁶¹
rows without x64; the total weight is a pair of floats (hi + lo, compensated
summation), so adding a batch of 256 to 3 × 10⁹ is exact in float32 too.

Speed: XLA:CPU reduces over a leading axis slowly (``jnp.sum(x, 0)`` of a 256 × 10⁵
batch costs 60× a gemv), so the sums are a ``lax.scan`` over blocks of 16 rows whose
body adds the 16 rows elementwise into the (D,) running sums, Σ w y and Σ w y² as
one complex array so that one loop reads each block once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["Normalizer", "NormalizerState"]

_LO_BITS = 30  # the count's low word holds [0, 2³⁰); the high word counts 2³⁰s
_BLOCK = 16  # rows per scan step (the fastest on XLA:CPU at 256 × 10⁵)


class NormalizerState(NamedTuple):
    """State of ``jg.normalizer``: a pytree with the structure of ``init``'s example.

    Attributes:
      mean: per floating leaf, the weighted mean of the rows seen relative to
        ``origin`` (the leaf's shape and dtype); integer leaves keep zeros.
      var: per floating leaf, the weighted variance (divided by the total weight);
        1 before any row, so a fresh state normalises to the identity.
      origin: per floating leaf, the row the mean is kept relative to (the first row
        of positive weight); the mean of the rows is ``origin + mean``.
      count: int32 (2,), the rows seen, hi · 2³⁰ + lo (``normalizer.count`` reads it).
      weight: (2,) floats hi + lo, the total weight (rows, when no weights were given).
      weighted: bool scalar, whether any update had ``weights``.
    """

    mean: Any
    var: Any
    origin: Any
    count: jax.Array
    weight: jax.Array
    weighted: jax.Array


class Normalizer(NamedTuple):
    """The pure functions ``jg.normalizer`` returns (``init``, ``update``, ``normalize``,
    ``denormalize``, ``count``); see ``jg.normalizer``."""

    init: Callable[..., NormalizerState]
    update: Callable[..., NormalizerState]
    normalize: Callable[..., Any]
    denormalize: Callable[..., Any]
    count: Callable[[NormalizerState], int | float]


def _floating(leaf) -> bool:
    return jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating)


def _two_sum(hi: jax.Array, lo: jax.Array, add: jax.Array) -> jax.Array:
    """(hi + lo) + add as a renormalised pair [hi, lo] (Knuth's TwoSum, then Fast2Sum)."""
    s = hi + add
    b = s - hi
    err = (hi - (s - b)) + (add - b) + lo
    new_hi = s + err
    return jnp.stack([new_hi, err - (new_hi - s)])


def _add_rows(count: jax.Array, rows) -> jax.Array:
    lo = count[1] + jnp.asarray(rows, jnp.int32)
    return jnp.stack([count[0] + (lo >> _LO_BITS), lo & ((1 << _LO_BITS) - 1)])


def _sums(x: jax.Array, w: jax.Array | None, shift: jax.Array):
    """Σ w y and Σ w y² over the rows of x (n, D), y = x − shift (w None: all 1).

    The two sums travel as the real and imaginary parts of one complex array:
    XLA:CPU does not fuse two reductions of the same rows into one loop, so two real
    sums would read every block twice. Half-precision leaves are summed in float32.
    """
    n, d = x.shape
    dtype = jnp.result_type(x.dtype, jnp.float32)
    whole = n // _BLOCK * _BLOCK
    sums = jnp.zeros(d, jnp.result_type(dtype, jnp.complex64))
    if whole:

        def body(carry, block):
            xs, ws = block
            for j in range(_BLOCK):  # one fused elementwise pass over 16 rows
                y = (xs[j] - shift).astype(dtype)
                wy = y if ws is None else ws[j].astype(dtype) * y
                carry = carry + lax.complex(wy, wy * y)
            return carry, None

        blocks = x[:whole].reshape(-1, _BLOCK, d)
        ws = None if w is None else w[:whole].reshape(-1, _BLOCK)
        sums = lax.scan(body, sums, (blocks, ws))[0]
    s1, s2 = sums.real, sums.imag
    if whole < n:
        y = (x[whole:] - shift).astype(dtype)
        wr = jnp.ones(n - whole, dtype) if w is None else w[whole:].astype(dtype)
        s1, s2 = s1 + wr @ y, s2 + wr @ (y * y)
    return s1.astype(x.dtype), s2.astype(x.dtype)


def _psum(value, axis_name):
    return value if axis_name is None else lax.psum(value, axis_name)


def _check_tree(state: NormalizerState, tree, name: str):
    """The leaves of ``tree`` and its leading (batch) shape; ValueError naming ``name``
    if its structure or trailing shapes differ from ``init``'s example."""
    if not isinstance(state, NormalizerState):
        raise ValueError(f"state must be a NormalizerState (from init), got {type(state).__name__}")
    want = jax.tree.structure(state.mean)
    got = jax.tree.structure(tree)
    if got != want:
        raise ValueError(f"{name} has tree structure {got}, but init's example had {want}")
    leaves, lead = [jnp.asarray(v) for v in jax.tree.leaves(tree)], None
    for path_leaf, leaf in zip(jax.tree.leaves(state.mean), leaves):
        k = jnp.ndim(path_leaf)
        if leaf.ndim < k or leaf.shape[leaf.ndim - k :] != jnp.shape(path_leaf):
            raise ValueError(
                f"{name} has a leaf of shape {leaf.shape}; init's example leaf has shape "
                f"{jnp.shape(path_leaf)}, which must be its trailing axes"
            )
        this = leaf.shape[: leaf.ndim - k]
        if lead is not None and this != lead:
            raise ValueError(f"{name}'s leaves have different leading axes: {lead} and {this}")
        lead = this
    return leaves, lead if lead is not None else ()


def _check_weights(weights, lead: tuple[int, ...]):
    if weights is None:
        return None
    weights = jnp.asarray(weights)
    if weights.shape != lead:
        raise ValueError(f"weights must have the batch's leading shape {lead}, got {weights.shape}")
    if not isinstance(weights, jax.core.Tracer):
        w = np.asarray(weights, np.float64)
        if not np.all(np.isfinite(w) & (w >= 0)):
            raise ValueError("weights must be finite and >= 0 (0 masks a row)")
    return weights


def _origin(x, w, weight_total, old, axis_name):
    """The state's origin: kept once rows were seen; else the first row of positive
    weight (with ``axis_name``, the average of each device's first such row)."""
    valid = w > 0
    first = x[jnp.argmax(valid)]
    has = jnp.any(valid).astype(x.dtype)
    candidate = _psum(has * first, axis_name) / jnp.maximum(_psum(has, axis_name), 1)
    return jnp.where(weight_total > 0, old, candidate)


def _update_leaf(mean, var, origin, leaf, w, weighted, weight_total, axis_name):
    shape = jnp.shape(mean)
    x = leaf.reshape(-1, math.prod(shape)).astype(mean.dtype)
    flat = [a.reshape(-1) for a in (mean, var, origin)]
    o = _origin(x, w.astype(x.dtype), weight_total, flat[2], axis_name)
    centre = jnp.where(weight_total > 0, flat[0] + (flat[2] - o), 0)  # the mean, in o's frame
    shift, err = _two_sum(o, 0, centre)  # the mean in x's units, and what rounding left out
    s0 = _psum(jnp.sum(w), axis_name).astype(x.dtype)
    sums = _sums(x, w.astype(x.dtype) if weighted else None, shift)
    s1, s2 = (_psum(s, axis_name) for s in sums)
    safe = jnp.where(s0 > 0, s0, 1)
    about_shift = s1 / safe
    step = about_shift - err  # batch mean − running mean
    batch_var = jnp.maximum(s2 / safe - about_shift**2, 0)
    frac = jnp.where(s0 > 0, s0 / (weight_total + s0), 0).astype(x.dtype)
    new_mean = centre + frac * step
    new_var = (1 - frac) * flat[1] + frac * batch_var + frac * (1 - frac) * step**2
    return tuple(a.reshape(shape) for a in (new_mean, new_var, o))


def _init(example) -> NormalizerState:
    leaves, treedef = jax.tree.flatten(example)
    if not leaves:
        raise ValueError("example must be a pytree with at least one array leaf")
    arrays = [jnp.asarray(v) for v in leaves]
    floats = [a.dtype for a in arrays if jnp.issubdtype(a.dtype, jnp.floating)]
    dtype = floats[0] if floats else jnp.zeros(()).dtype
    like = [jnp.zeros(a.shape, a.dtype if _floating(a) else dtype) for a in arrays]
    return NormalizerState(
        mean=treedef.unflatten(like),
        var=treedef.unflatten([jnp.ones_like(a) for a in like]),
        origin=treedef.unflatten(like),
        count=jnp.zeros(2, jnp.int32),
        weight=jnp.zeros(2, dtype),
        weighted=jnp.zeros((), bool),
    )


def _count(state: NormalizerState) -> int | float:
    if bool(state.weighted):
        return float(np.sum(np.asarray(state.weight, np.float64)))
    hi, lo = (int(v) for v in np.asarray(state.count))
    return hi * 2**_LO_BITS + lo


def _std(var, weight_total, std_min, std_max):
    return jnp.where(weight_total > 0, jnp.clip(jnp.sqrt(var), std_min, std_max), 1)


def normalizer(std_min: float = 1e-6, std_max: float = 1e6) -> Normalizer:
    """A running normaliser of observations: pure ``init``/``update``/``normalize``/
    ``denormalize`` over pytrees (acme's ``running_statistics``), with ``count``.

    - ``init(example)``: a pytree of arrays shaped as ONE observation (integer
      leaves pass through ``normalize`` unchanged) -> ``NormalizerState``.
    - ``update(state, batch, weights=None, axis_name=None)``: ``batch`` has the
      example's structure, each leaf with leading batch axes (the same for all
      leaves); ``weights`` ≥ 0 per row (0 masks it); ``axis_name`` (inside
      ``pmap``, ``shard_map`` or a named ``vmap``) merges every device's rows by
      ``psum``, exactly as one update with all of them. Statistics are per element,
      merged by Chan's formula; the variance divides by the total weight.
    - ``normalize(state, tree, clip=None)``: (x − μ)/σ with σ = clip(√var, std_min,
      std_max) per element, then clipped to [−clip, clip] when ``clip`` is given
      (acme's ``max_abs_value``). A fresh state is the identity.
    - ``denormalize(state, tree)``: x σ + μ, the inverse (before clipping).
    - ``count(state)``: the rows seen, an exact Python int past 2³¹ without x64; the
      total weight (a float) once any update had ``weights``.

    All but ``count`` are traceable (``jit``, ``vmap``, ``scan``); shapes and tree
    structures are checked in Python at trace time.

    Args:
      std_min: the smallest σ ``normalize`` divides by (acme's ``std_min_value``).
      std_max: the largest σ (acme's ``std_max_value``).

    Returns:
      A ``jaxgauss.normalization.Normalizer``.

    Raises:
      ValueError: ``std_min`` ≤ 0 or ``std_max`` < ``std_min``; and from its
        functions: a tree whose structure or trailing shapes differ from ``init``'s
        example, leaves with different leading axes, ``weights`` not of the batch's
        leading shape or (when concrete) negative or non-finite.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> norm = jg.normalizer()
      >>> state = norm.init({"obs": jnp.zeros(2)})
      >>> state = norm.update(state, {"obs": jnp.array([[1.0, 10.0], [3.0, 30.0]])})
      >>> norm.normalize(state, {"obs": jnp.array([3.0, 10.0])})["obs"].tolist()
      [1.0, -1.0]
      >>> norm.count(state)
      2
    """
    if not (std_min > 0 and std_max >= std_min):
        raise ValueError(f"need 0 < std_min <= std_max, got std_min={std_min}, std_max={std_max}")

    def update(state, batch, weights=None, axis_name=None) -> NormalizerState:
        leaves, lead = _check_tree(state, batch, "batch")
        weights = _check_weights(weights, lead)
        n = math.prod(lead)
        w = jnp.ones(n, state.weight.dtype) if weights is None else weights.reshape(n)
        total = state.weight[0] + state.weight[1]
        parts = []
        for args in zip(*(jax.tree.leaves(t) for t in state[:3]), leaves):
            if not _floating(args[3]):
                parts.append(args[:3])
                continue
            parts.append(_update_leaf(*args, w, weights is not None, total, axis_name))
        treedef = jax.tree.structure(state.mean)
        added = _psum(jnp.sum(w.astype(state.weight.dtype)), axis_name)
        return NormalizerState(
            *(treedef.unflatten([p[i] for p in parts]) for i in range(3)),
            count=_add_rows(state.count, _psum(n, axis_name)),
            weight=_two_sum(state.weight[0], state.weight[1], added),
            weighted=state.weighted | (weights is not None),
        )

    def _map(state, tree, name, fn):
        leaves, _ = _check_tree(state, tree, name)
        total = state.weight[0] + state.weight[1]
        out = [
            fn(x, m, o, _std(v, total, std_min, std_max)) if _floating(x) else x
            for x, m, v, o in zip(leaves, *(jax.tree.leaves(t) for t in state[:3]))
        ]
        return jax.tree.structure(state.mean).unflatten(out)

    def normalize(state, tree, clip=None):
        def one(x, mean, origin, std):
            z = ((x - origin) - mean) / std
            return z if clip is None else jnp.clip(z, -clip, clip)

        return _map(state, tree, "tree", one)

    def denormalize(state, tree):
        return _map(state, tree, "tree", lambda z, mean, origin, std: (z * std + mean) + origin)

    return Normalizer(_init, update, normalize, denormalize, _count)
