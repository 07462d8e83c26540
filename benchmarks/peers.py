"""Peers: other ways to get a Gaussian's mean and covariance, timed beside jaxgauss.

A ``Peer``'s ``setup(rows)`` takes the benchmark's float32 rows (a NumPy array (n, d))
and returns a function of no arguments that processes all of them, as that peer
would, and returns its estimate. Work that is not the peer's estimation (converting
the rows to the peer's input format) is done in ``setup``, outside the timing.
``setup`` raises ``ImportError`` when the peer's optional package (the ``bench``
extra: river, torch) is not installed; the harness reports it as skipped.

The gradient peers take the same step size as ``jaxgauss.bench``'s gradient cases.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

from jaxgauss import Gaussian, gradient_ascent

LEARNING_RATE = 1e-3


class Peer(NamedTuple):
    """A peer implementation.

    Attributes:
      name: the label in tables.
      setup: rows (n, d) float32 -> a function of no arguments that runs the peer on
        all of them.
      cost: log₂ of how much costlier a row is than jaxgauss's cheapest case's (as
        ``jaxgauss.bench.Case.cost``): slow peers are timed on fewer rows.
      one_thread: None, or a context manager factory that limits the peer's library
        to one thread (None when that is not possible here). The peer is then timed
        with its default threads and with one, keeping the faster: on a small or
        busy machine, threads that wait for each other can cost more than they give.
    """

    name: str
    setup: Callable[[np.ndarray], Callable[[], Any]]
    cost: int
    one_thread: Callable[[], ContextManager | None] | None = None


def blas_one_thread() -> ContextManager | None:
    """NumPy's BLAS limited to one thread (None without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(1, user_api="blas")


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def torch_one_thread() -> ContextManager:
    """PyTorch's intra-op thread pool limited to one thread."""
    return _torch_threads(1)


def numpy_welford(rows: np.ndarray) -> Callable[[], Any]:
    """Welford's algorithm, one row at a time in a Python loop over NumPy arrays."""
    d = rows.shape[1]

    def run():
        mean = np.zeros(d, rows.dtype)
        scatter = np.zeros((d, d), rows.dtype)
        for t, y in enumerate(rows, start=1):
            delta = y - mean
            mean += delta / t
            scatter += np.outer(delta, y - mean)
        return mean, scatter / len(rows)

    return run


def numpy_question(rows: np.ndarray) -> Callable[[], Any]:
    """The question's update, one row at a time: with r = y − μ,
    μ += α Σ⁻¹ r and Σ += α (−½)(Σ⁻¹ − Σ⁻¹ r rᵀ Σ⁻¹), as written (with ``np.linalg.inv``)."""
    d = rows.shape[1]

    def run():
        mean = np.zeros(d, rows.dtype)
        cov = np.eye(d, dtype=rows.dtype)
        for y in rows:
            precision = np.linalg.inv(cov)
            g = precision @ (y - mean)
            mean += LEARNING_RATE * g
            cov += LEARNING_RATE * -0.5 * (precision - np.outer(g, g))
        return mean, cov

    return run


def river_gaussian(rows: np.ndarray) -> Callable[[], Any]:
    """river's ``proba.MultivariateGaussian``, updated one dict per row (its
    ``update``, the distribution's counterpart of a model's ``learn_one``)."""
    from river.proba import MultivariateGaussian

    dicts = [dict(enumerate(y.tolist())) for y in rows]

    def run():
        g = MultivariateGaussian()
        for x in dicts:
            g.update(x)
        return g.mu

    return run


def torch_sgd(rows: np.ndarray) -> Callable[[], Any]:
    """PyTorch: autograd of the log-likelihood and ``torch.optim.SGD``, one row per
    step, in log-Cholesky coordinates (Σ = L Lᵀ, L's diagonal stored as logs)."""
    import torch
    from torch.distributions import MultivariateNormal

    data = torch.tensor(rows)
    d = rows.shape[1]

    def run():
        mean = torch.zeros(d, requires_grad=True)
        raw = torch.zeros(d, d, requires_grad=True)
        opt = torch.optim.SGD([mean, raw], lr=LEARNING_RATE)
        for y in data:
            chol = torch.tril(raw, -1) + torch.diag(torch.exp(torch.diagonal(raw)))
            loss = -MultivariateNormal(mean, scale_tril=chol, validate_args=False).log_prob(y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return mean.detach(), raw.detach()

    return run


def jax_jit_loop(rows: np.ndarray) -> Callable[[], Any]:
    """A Python loop calling a jitted per-row step of jaxgauss's gradient ascent
    ("precision"), instead of ``fit``'s compiled scan."""
    d = rows.shape[1]
    est = gradient_ascent(optax.sgd(LEARNING_RATE), "precision")
    step = jax.jit(est.update)
    state0 = est.init(Gaussian.standard(d, rows.dtype))

    def run():
        state = state0
        for i in range(len(rows)):
            state = step(state, rows[i : i + 1])
        return est.estimate(state)

    return run


def numpy_cov(rows: np.ndarray) -> Callable[[], Any]:
    """Batch ``np.cov`` of all rows in float32 (the rows' dtype)."""
    return lambda: np.cov(rows, rowvar=False, dtype=rows.dtype)


def numpy_gram(rows: np.ndarray) -> Callable[[], Any]:
    """The raw Gram matrix X.T @ X of all rows: the hardware's floor for any
    covariance (NumPy's BLAS; it uses a symmetric rank-k update)."""
    return lambda: rows.T @ rows


def xla_gram(rows: np.ndarray) -> Callable[[], Any]:
    """The same Gram matrix as one jitted XLA call on the JAX device's copy of the
    rows (on some CPUs faster than NumPy's BLAS: the moment targets are set against
    the faster of the two)."""
    on_device = jax.device_put(rows)
    gram = jax.jit(lambda a: a.T @ a)
    return lambda: gram(on_device)


NUMPY_WELFORD = "NumPy Welford loop"
NUMPY_QUESTION = "NumPy loop, question's update"
RIVER = "river MultivariateGaussian"
TORCH = "PyTorch autograd + SGD"
JAX_JIT_LOOP = "Python loop of jax.jit(step)"
NP_COV = "np.cov (batch)"
GRAM = "X.T @ X (batch)"
XLA_GRAM = "XLA X.T @ X (batch)"

PEERS: tuple[Peer, ...] = (
    Peer(NUMPY_WELFORD, numpy_welford, cost=8),
    Peer(NUMPY_QUESTION, numpy_question, cost=8),
    Peer(RIVER, river_gaussian, cost=10),
    Peer(TORCH, torch_sgd, cost=10, one_thread=torch_one_thread),
    Peer(JAX_JIT_LOOP, jax_jit_loop, cost=8),
    Peer(NP_COV, numpy_cov, cost=0, one_thread=blas_one_thread),
    Peer(GRAM, numpy_gram, cost=0, one_thread=blas_one_thread),
    Peer(XLA_GRAM, xla_gram, cost=0),
)
