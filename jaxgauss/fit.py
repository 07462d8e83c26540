"""``fit``: run an estimator over a stream in one jit-compiled ``lax.scan``.

The building blocks (``FitCarry``, ``init_carry``, ``scan_batches``) are pure and
un-jitted so that ``sweep`` can vmap them; ``fit`` is the jit boundary and validates
its inputs in Python first.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxgauss.estimators.base import Estimator
from jaxgauss.gaussian import Gaussian, check_gaussian, kl_divergence

__all__ = ["Trace", "FitResult", "FitCarry", "init_carry", "scan_batches", "fit"]


class Trace(NamedTuple):
    """Snapshots taken every ``trace_every`` updates.

    Attributes:
      rows: (m,) int32, data rows consumed when each snapshot was taken.
      estimate: a ``Gaussian`` with a leading (m,) axis.
      kl: (m,) KL(truth ‖ estimate), or None when no truth was given.
    """

    rows: jax.Array
    estimate: Gaussian
    kl: jax.Array | None


class FitResult(NamedTuple):
    """What ``fit`` returns.

    Attributes:
      estimate: the final ``Gaussian`` (the last valid one if the run diverged).
      state: the final estimator state; pass it back as ``fit(..., state=...)`` to
        continue, save it, or ``merge`` it.
      diverged_at: int32 scalar, 0-based index of the first data row of the first
        rejected update, or -1. From that update on nothing is applied.
      trace: a ``Trace``, or None when ``trace_every=0``.
    """

    estimate: Gaussian
    state: Any
    diverged_at: jax.Array
    trace: Trace | None


class FitCarry(NamedTuple):
    """The scan's carry: estimator state, first rejected row (-1 if none), rows seen."""

    state: Any
    diverged_at: jax.Array
    rows: jax.Array


def init_carry(state: Any) -> FitCarry:
    """A fresh carry around an estimator state."""
    return FitCarry(state, jnp.array(-1, jnp.int32), jnp.array(0, jnp.int32))


def _guarded_step(estimator: Estimator, carry: FitCarry, batch: jax.Array) -> FitCarry:
    new = estimator.update(carry.state, batch)
    accept = estimator.is_valid(new) & (carry.diverged_at < 0)
    state = jax.tree_util.tree_map(lambda a, b: jnp.where(accept, a, b), new, carry.state)
    first_reject = (~accept) & (carry.diverged_at < 0)
    diverged_at = jnp.where(first_reject, carry.rows, carry.diverged_at)
    return FitCarry(state, diverged_at, carry.rows + batch.shape[0])


def scan_batches(
    estimator: Estimator,
    carry: FitCarry,
    batches: jax.Array,
    truth: Gaussian | None = None,
    trace_every: int = 0,
) -> tuple[FitCarry, Trace | None]:
    """Apply the guarded update to each batch of ``batches`` (u, b, d) in a ``lax.scan``.

    Pure and un-jitted. With ``trace_every = k > 0`` a snapshot is taken after every
    k updates (u // k snapshots); the remaining u % k updates run after the last one.
    """

    def step(c, batch):
        return _guarded_step(estimator, c, batch), None

    if trace_every == 0:
        carry, _ = jax.lax.scan(step, carry, batches)
        return carry, None

    n_snap = batches.shape[0] // trace_every
    head = batches[: n_snap * trace_every].reshape((n_snap, trace_every) + batches.shape[1:])

    def block(c, blk):
        c, _ = jax.lax.scan(step, c, blk)
        est = estimator.estimate(c.state)
        kl = None if truth is None else kl_divergence(truth, est)
        return c, (c.rows, est, kl)

    carry, (rows, est, kl) = jax.lax.scan(block, carry, head)
    carry, _ = jax.lax.scan(step, carry, batches[n_snap * trace_every :])
    return carry, Trace(rows, est, kl)


@partial(jax.jit, static_argnames=("estimator", "trace_every"))
def _run(estimator, carry, batches, truth, trace_every):
    return scan_batches(estimator, carry, batches, truth, trace_every)


def _as_data(data: Any) -> jax.Array:
    """Validate the stream at the Python boundary and return it as a float array."""
    if isinstance(data, jax.Array):
        arr = data
    else:
        arr = np.asarray(data)
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
        ):
            raise ValueError(f"data must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(
            f"data must be 2-D with shape (n, d), got shape {arr.shape}"
            + ("; for a single column use data[:, None]" if arr.ndim == 1 else "")
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"data is empty (shape {arr.shape})")
    if jnp.issubdtype(arr.dtype, jnp.complexfloating):
        raise ValueError(f"data must be real, got dtype {arr.dtype}")
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.zeros(()).dtype)
    arr = jnp.asarray(arr)  # float64 becomes float32 unless x64 is enabled
    bad_rows = ~jnp.all(jnp.isfinite(arr), axis=1)
    if bool(jnp.any(bad_rows)):
        first = int(jnp.argmax(bad_rows))
        raise ValueError(
            f"data row {first} is not finite ({np.asarray(arr[first]).tolist()}); "
            f"rows 0..{first - 1} are valid: fit(estimator, data[:{first}]) estimates from them"
        )
    return arr


def fit(
    estimator: Estimator,
    data: Any,
    init: Gaussian | None = None,
    *,
    batch_size: int = 1,
    trace_every: int = 0,
    truth: Gaussian | None = None,
    state: Any = None,
) -> FitResult:
    """Run ``estimator`` over the rows of ``data`` in one jit-compiled ``lax.scan``.

    The rows are cut into batches of ``batch_size``; each batch is one
    ``estimator.update``. If n is not a multiple of ``batch_size``, the last n mod b
    rows are applied as one shorter final batch (a second, cached compilation for
    that shape). After every update the divergence guard checks
    ``estimator.is_valid``: the first rejected update sets ``diverged_at`` to the row
    where its batch starts, and the state then stays at the last valid value.

    Compilations are cached per (estimator object, shapes, dtypes, trace_every):
    calling ``fit`` again with the same estimator and data shape does not recompile.
    To try many learning rates, either use ``jaxgauss.sweep`` (one compiled call for
    the whole grid) or make the learning rate part of the state with
    ``optax.inject_hyperparams`` and change it in ``res.state`` between calls.

    Args:
      estimator: an ``Estimator``.
      data: rows (n, d): a NumPy or JAX array, or anything ``np.asarray`` accepts.
        Integers are converted to floats. The estimate's dtype follows the data's
        (float32 unless x64 is enabled and the data are float64).
      init: the starting ``Gaussian``; None means N(0, I). Ignored when ``state`` is
        given (passing both is an error).
      batch_size: rows per update, ≥ 1.
      trace_every: take a snapshot every this many updates (0: no trace).
      truth: a ``Gaussian``; with ``trace_every``, the trace records
        KL(truth ‖ estimate).
      state: an estimator state from an earlier ``FitResult.state`` to continue from.

    Returns:
      A ``FitResult`` (estimate, state, diverged_at, trace).

    Raises:
      ValueError: data not 2-D, empty, non-numeric or with a non-finite row (named);
        ``init`` or ``truth`` of the wrong shape, non-finite, asymmetric or not
        positive definite; ``batch_size < 1``; ``trace_every < 0``.

    Example:
      >>> import jax, optax, jaxgauss as jg
      >>> ys = jg.streams.sample(jax.random.key(0), jg.Gaussian(jax.numpy.zeros(1), jax.numpy.eye(1)), 100)
      >>> res = jg.fit(jg.gradient_ascent(optax.sgd(0.002), "covariance"), ys, trace_every=10)
      >>> res.trace.rows.tolist()[:3], int(res.diverged_at)
      ([10, 20, 30], -1)
    """
    if not isinstance(estimator, Estimator):
        raise ValueError(f"estimator must be a jaxgauss Estimator, got {type(estimator).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(trace_every, bool) or not isinstance(trace_every, (int, np.integer)) or trace_every < 0:
        raise ValueError(f"trace_every must be an integer >= 0, got {trace_every!r}")
    arr = _as_data(data)
    n, d = arr.shape
    dtype = arr.dtype
    if state is not None and init is not None:
        raise ValueError("pass either init (a fresh start) or state (a continuation), not both")
    if truth is not None:
        check_gaussian(truth, d, name="truth")
        truth = Gaussian(jnp.asarray(truth.mean, dtype), jnp.asarray(truth.cov, dtype))
    if state is None:
        if init is None:
            init = Gaussian(jnp.zeros(d, dtype), jnp.eye(d, dtype=dtype))
        check_gaussian(init, d)
        state = estimator.init(Gaussian(jnp.asarray(init.mean, dtype), jnp.asarray(init.cov, dtype)))

    n_full = (n // batch_size) * batch_size
    carry = init_carry(state)
    trace = None
    if n_full:
        batches = arr[:n_full].reshape(n // batch_size, batch_size, d)
        carry, trace = _run(estimator, carry, batches, truth, int(trace_every))
    if n_full < n:
        carry, _ = _run(estimator, carry, arr[None, n_full:], truth, 0)
    return FitResult(estimator.estimate(carry.state), carry.state, carry.diverged_at, trace)
