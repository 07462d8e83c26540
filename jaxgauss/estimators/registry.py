"""The method names shared by the command line, ``sweep`` and the benchmarks.

Each name maps a learning rate (possibly traced) and a parameterisation to an
``Estimator``: the one place where "sgd", "fisher-sgd", … are defined.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from jaxgauss.estimators.averaged import averaged
from jaxgauss.estimators.base import Estimator
from jaxgauss.estimators.gradient import gradient_ascent
from jaxgauss.estimators.moments import exponential, natural_gradient, welford
from jaxgauss.parameterizations import get_parameterization
from jaxgauss.preconditioners import covariance_retraction, fisher_preconditioner
from jaxgauss.schedules import robbins_monro

__all__ = ["METHODS", "make_method"]


def _exponential(lr: jax.Array, parameterization: str) -> Estimator:
    # Forgetting a fraction a of the old moments per row is a half-life of
    # ln 2 / −ln(1 − a) rows.
    return exponential(-math.log(2.0) / jnp.log1p(-lr))


def _fisher_sgd(lr: jax.Array, parameterization: str) -> Estimator:
    # Step a_t = c/(t + 1) with c = lr: robbins_monro(c/2, power=1, offset=2). c = 1
    # weighs the initial guess as one pseudo-row; the asymptotic efficiency is
    # c²/(2c − 1) for c > ½, whatever the data's scale.
    # The retraction takes the natural step in (μ, Σ), where it is a convex
    # combination, and maps it back exactly: without it a first-order step in
    # log-factor coordinates overshoots on far-out rows (tests/test_preconditioners.py).
    optimizer = optax.chain(
        fisher_preconditioner(parameterization),
        optax.sgd(robbins_monro(lr / 2, power=1.0, offset=2.0)),
        covariance_retraction(parameterization),
    )
    return gradient_ascent(optimizer, parameterization)


# name -> (learning rate, parameterization) -> Estimator; the names used by the CLI, sweep and demo.
METHODS: dict[str, Callable[[jax.Array, str], Estimator]] = {
    "welford": lambda lr, p: welford(),
    "natural": lambda lr, p: natural_gradient(lr),
    "exponential": _exponential,
    "sgd": lambda lr, p: gradient_ascent(optax.sgd(lr), p),
    "adam": lambda lr, p: gradient_ascent(optax.adam(lr), p),
    "averaged-sgd": lambda lr, p: averaged(gradient_ascent(optax.sgd(lr), p)),
    "fisher-sgd": _fisher_sgd,
}


@functools.cache
def make_method(name: str, parameterization: str = "cholesky") -> Callable[[jax.Array], Estimator]:
    """A ``make_estimator`` for ``sweep`` from a method name and a learning rate.

    The same arguments return the same function, so repeated sweeps reuse its
    compilation.

    The learning rate means: the optax step size for "sgd", "adam" and
    "averaged-sgd"; the factor c of the Fisher-preconditioned step a_t = c/(t + 1)
    for "fisher-sgd" (c = 1 is the natural choice, whatever the data's scale); the
    constant step a of "natural"; the forgetting rate a of
    "exponential" (half-life ln 2 / −ln(1 − a) rows); "welford" ignores it. The
    parameterisation applies to the gradient methods.

    Raises:
      ValueError: an unknown method or parameterisation.

    Example:
      >>> import jaxgauss as jg
      >>> make = jg.make_method("sgd", "precision")
      >>> type(make(0.01)).__name__
      'Estimator'
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    get_parameterization(parameterization)
    method = METHODS[name]

    def make_estimator(lr: jax.Array) -> Estimator:
        return method(lr, parameterization)

    return make_estimator
