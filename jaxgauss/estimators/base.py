"""The ``Estimator`` protocol shared by every estimator factory."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxgauss.gaussian import Gaussian

__all__ = [
    "Estimator",
    "all_finite",
    "counter_dtype",
    "new_counter",
    "shared",
    "skip_if_weightless",
    "COUNTER_LIMIT_INT32",
]

State = Any


class Estimator(NamedTuple):
    """A streaming estimator of (μ, Σ): a NamedTuple of pure functions, in the style of
    ``optax.GradientTransformation``.

    Attributes:
      init: ``init(g0: Gaussian) -> state``. The state is a pytree of arrays whose
        structure, shapes and dtypes ``update`` keeps (the scan carries it); counters
        are scalar integer arrays (a weighted state's count is its total weight, a
        float scalar).
      update: ``update(state, batch) -> state`` for a batch of rows (b, d), b ≥ 1;
        when ``weighted``, also ``update(state, batch, weights)`` with finite weights
        wᵢ ≥ 0 (b,) (a batch of total weight 0 leaves the state unchanged).
      estimate: ``estimate(state) -> estimate``: a ``Gaussian`` for the estimators of
        one Gaussian; any pytree of arrays otherwise (a Student-t, a mixture). The
        drivers only stack it (traces) and hand it to a ``score(truth, estimate)``
        (``fit``'s and ``sweep``'s yardstick, KL for a ``Gaussian``), so an estimator
        with another estimate needs no driver change, only a score that reads it.
      is_valid: ``is_valid(state) -> bool array``; what ``fit``'s divergence guard
        checks after every update.
      rowwise: True when ``update(state, batch)`` equals b single-row updates to
        rounding (the moment estimators). ``fit`` may then apply many rows per
        compiled step without changing the result.
      weighted: True when ``update`` takes per-row ``weights`` (see each factory for
        what a weight means to it). ``fit(..., weights=...)`` refuses an estimator
        without them rather than ignore the weights.
      grouped_update: None, or ``grouped_update(states, batch, groups, weights) ->
        states`` for states with a leading (G,) axis, rows (B, d), group ids (B,) in
        [0, G) and weights (B,) (0/1 for unweighted states): every group's state
        absorbs its rows in order, as ``update`` would, in one pass over the rows
        (segment sums rather than a loop over groups); with ``groups=None`` the rows
        come laid out per group, (G, m, d) with weights (G, m), padding weighted 0.
        ``fit(..., groups=...)`` uses it when present and otherwise vmaps ``update``
        over per-group batches.
      weighted_form: None, or a function of no arguments returning the same
        estimator built to take weights (``weighted=True``): ``fit(..., weights=...)``
        (and a grouped fit that pads with weight-0 rows) then runs that form and
        returns its state, so ``fit(welford(), x, weights=w)`` just works.

    Fields may be added later with defaults: build estimators by keyword, never
    unpack one positionally.
    """

    init: Callable[[Gaussian], State]
    update: Callable[[State, jax.Array], State]
    estimate: Callable[[State], Any]
    is_valid: Callable[[State], jax.Array]
    rowwise: bool = False
    weighted: bool = False
    grouped_update: Callable[..., State] | None = None
    weighted_form: Callable[[], Estimator] | None = None


def shared(factory: Callable[..., Estimator]) -> Callable[..., Estimator]:
    """Make an estimator factory return the same ``Estimator`` for the same scalar
    arguments (bools, ints, floats, strings, None; ``1`` and ``1.0`` kept apart).

    ``jit`` caches compiled programs by the estimator's functions, so every
    ``fit(welford(), …)`` then reuses the programs of the first instead of compiling
    its own. Arguments that are arrays or schedules build a new estimator each call.
    """
    # Keyed by the counter dtype too: an estimator built with x64 on (int64 counters,
    # float64 constants) is not the one to use with it off.
    cached = functools.lru_cache(maxsize=256, typed=True)(
        lambda _counter, *args, **kwargs: factory(*args, **kwargs)
    )
    scalar = (bool, int, float, str, type(None))

    @functools.wraps(factory)
    def make(*args: Any, **kwargs: Any) -> Estimator:
        if all(type(v) in scalar for v in (*args, *kwargs.values())):
            return cached(counter_dtype(), *args, **kwargs)
        return factory(*args, **kwargs)

    return make


def all_finite(tree: Any) -> jax.Array:
    """True where every floating-point leaf of ``tree`` is finite (the guard's
    minimum: a non-finite state is always rejected)."""
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


# The largest count an int32 counter holds: without x64, JAX narrows int64 to int32.
COUNTER_LIMIT_INT32 = 2**31 - 1


def counter_dtype() -> jnp.dtype:
    """The dtype of every row and update counter: int64 when x64 is enabled, else
    int32 (``fit`` and ``merge`` then refuse, in Python, to count past 2³¹ − 1)."""
    return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.int64))


def new_counter(value: int = 0) -> jax.Array:
    """A scalar counter in ``counter_dtype()``."""
    return jnp.asarray(value, counter_dtype())


def skip_if_weightless(new: Any, old: Any, weights: jax.Array) -> Any:
    """``new`` where the batch's ``weights`` sum to more than 0, else ``old``: a batch
    of total weight 0 is no update (for estimators whose step does not vanish with
    the weights by itself, such as an optimizer's)."""
    live = jnp.sum(weights) > 0
    return jax.tree_util.tree_map(lambda a, b: jnp.where(live, a, b), new, old)
