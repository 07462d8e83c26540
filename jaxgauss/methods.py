"""The method registry (``jaxgauss.methods``): one record per named method, shared by the command line,
``sweep``, the demo, checkpoints and the benchmarks.

A ``Method`` names its hyperparameters (``Hyperparameter`` records: keyword, CLI
flag, default, valid range); the CLI's ``fit`` and ``sweep`` options, their help and
``make_method`` are generated from these records, so adding an estimator is its own
file plus one entry in ``METHODS``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from numbers import Real
from typing import Any, NamedTuple

import jax
import optax

from jaxgauss.estimators.averaged import averaged
from jaxgauss.estimators.base import Estimator
from jaxgauss.estimators.covariance_types import COVARIANCE_TYPES
from jaxgauss.estimators.ewm import ewm
from jaxgauss.estimators.gradient import gradient_ascent
from jaxgauss.estimators.mixture import gaussian_mixture
from jaxgauss.estimators.moments import exponential, natural_gradient, welford
from jaxgauss.estimators.student_t import student_t
from jaxgauss.parameterizations import get_parameterization
from jaxgauss.preconditioners import covariance_retraction, fisher_preconditioner
from jaxgauss.schedules import robbins_monro

__all__ = ["Hyperparameter", "Method", "METHODS", "get_method", "make_method"]


class Hyperparameter(NamedTuple):
    """One named hyperparameter of a method.

    Attributes:
      name: the keyword the method's ``build`` takes, e.g. "learning_rate".
      flag: the command-line flag, e.g. "--lr".
      help: what it means, for ``--help``.
      default: the value when not given; None means required (or, where ``optional``,
        the method's own default behaviour).
      low: values must be > low (``low_inclusive``: ≥ low).
      high: values must be ≤ high.
      low_inclusive: whether ``low`` itself is allowed.
      optional: None is a valid value (e.g. ``natural``'s default step 1/t).
      integer: values must be whole numbers.
      grid: the (low, high) range a sweep spans by default (log-spaced).
      aliases: older flag spellings still accepted.
      choices: for a named choice (not a number): the names it takes, e.g. the
        covariance types; the default is one of them.
      boolean: a switch: the flag and its ``--no-`` form (``default`` True or False).
      auto: the value may also be the word "auto" (the method estimates it).
    """

    name: str
    flag: str
    help: str
    default: float | None = None
    low: float = 0.0
    high: float = math.inf
    low_inclusive: bool = False
    optional: bool = False
    integer: bool = False
    grid: tuple[float, float] = (1e-4, 1e-1)
    aliases: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    boolean: bool = False
    auto: bool = False

    @property
    def numeric(self) -> bool:
        """Whether the values are numbers (what a sweep can vary)."""
        return not (self.choices or self.boolean)

    def check(self, value: Any, method: str) -> None:
        """Raise a ValueError naming the method, the flag and the valid range (or the
        choices) when a concrete ``value`` lies outside it (traced values are not
        checked)."""
        if self.choices and value not in self.choices:
            raise ValueError(
                f"{method}: {self.flag} must be one of {', '.join(self.choices)}, got {value!r}"
            )
        if self.boolean and not isinstance(value, bool):
            raise ValueError(f"{method}: {self.flag} must be True or False, got {value!r}")
        if self.auto and value == "auto":
            return
        if not self.numeric or value is None or not isinstance(value, Real):
            return
        if self.integer and value != int(value):
            raise ValueError(
                f"{method}: {self.flag} {self.name} must be a whole number, got {value:g}"
            )
        above = value >= self.low if self.low_inclusive else value > self.low
        if not (above and value <= self.high):
            lo = "[" if self.low_inclusive else "("
            hi = "]" if math.isfinite(self.high) else ")"
            raise ValueError(
                f"{method}: {self.flag} {self.name} must be in {lo}{self.low:g}, {self.high:g}{hi}, "
                f"got {value:g}"
            )


class Method(NamedTuple):
    """A named method: how to build its estimator and what it takes.

    Attributes:
      name: the name used everywhere ("welford", "sgd", …).
      summary: one line for ``--help``.
      build: ``build(parameterization, **hyperparameters) -> Estimator``.
      hyperparameters: the ``Hyperparameter`` records ``build`` takes.
      swept: the hyperparameter a sweep varies (None: the method has none; a sweep
        then runs it once per grid value, identically).
      uses_parameterization: whether ``parameterization`` matters (gradient methods).
    """

    name: str
    summary: str
    build: Callable[..., Estimator]
    hyperparameters: tuple[Hyperparameter, ...] = ()
    swept: str | None = None
    uses_parameterization: bool = False

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """All hyperparameters of this method from ``given`` (name → value, None or
        absent meaning "not given") and the defaults, range-checked.

        Raises:
          ValueError: a name this method does not take, a required one missing, or a
            value out of range (the message names the method and the flag).
        """
        known = {h.name: h for h in self.hyperparameters}
        extra = [n for n, v in given.items() if v is not None and n not in known]
        if extra:
            flags = {h.name: h.flag for m in METHODS.values() for h in m.hyperparameters}
            takes = ", ".join(h.flag for h in self.hyperparameters) or "no hyperparameters"
            raise ValueError(
                f"method {self.name} does not take {', '.join(flags.get(n, n) for n in extra)} "
                f"(it takes {takes})"
            )
        values = {}
        for h in self.hyperparameters:
            value = given.get(h.name)
            value = h.default if value is None else value
            if value is None and not h.optional:
                raise ValueError(f"method {self.name} needs {h.flag} ({h.help})")
            h.check(value, self.name)
            values[h.name] = value
        return values

    def swept_hyperparameter(self) -> Hyperparameter | None:
        """The record of ``swept`` (None when the method has nothing to sweep)."""
        return next((h for h in self.hyperparameters if h.name == self.swept), None)

    def __call__(self, parameterization: str = "cholesky", **hyperparameters: Any) -> Estimator:
        """Build the estimator from named hyperparameters (checked by ``resolve``)."""
        return self.build(parameterization, **self.resolve(hyperparameters))


_POWER = Hyperparameter(
    "power",
    "--power",
    "κ in the online-EM step (t + 500)^−κ, in (0.5, 1]",
    default=0.6,
    low=0.5,
    high=1.0,
    grid=(0.55, 1.0),
)
_LR = Hyperparameter(
    "learning_rate", "--lr", "the optimizer's step size", aliases=("--learning-rate",)
)


def _fisher_sgd(parameterization: str, learning_rate: jax.Array) -> Estimator:
    # Step a_t = c/(t + 1) with c = learning_rate: robbins_monro(c/2, power=1, offset=2).
    # c = 1 weighs the initial guess as one pseudo-row; the asymptotic efficiency is
    # c²/(2c − 1) for c > ½, whatever the data's scale. The retraction takes the
    # natural step in (μ, Σ), where it is a convex combination, and maps it back
    # exactly: without it a first-order step in log-factor coordinates overshoots on
    # far-out rows (tests/test_preconditioners.py).
    optimizer = optax.chain(
        fisher_preconditioner(parameterization),
        optax.sgd(robbins_monro(learning_rate / 2, power=1.0, offset=2.0)),
        covariance_retraction(parameterization),
    )
    return gradient_ascent(optimizer, parameterization)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "welford",
            "exact streaming mean and covariance: the running maximum-likelihood estimate",
            lambda p, prior_weight: welford(prior_weight=prior_weight),
            (
                Hyperparameter(
                    "prior_weight",
                    "--prior-weight",
                    "the initial Gaussian's weight in rows",
                    default=0.0,
                    low_inclusive=True,
                    grid=(0.1, 100.0),
                ),
            ),
            swept="prior_weight",
        ),
        Method(
            "natural",
            "natural-gradient step in expectation parameters (default 1/t: the exact MLE)",
            lambda p, learning_rate: natural_gradient(learning_rate),
            (
                Hyperparameter(
                    "learning_rate",
                    "--lr",
                    "a constant step in (0, 1] (default: 1/t, the running MLE)",
                    high=1.0,
                    optional=True,
                    aliases=("--learning-rate",),
                ),
            ),
            swept="learning_rate",
        ),
        Method(
            "exponential",
            "exponentially forgetting moments, for drifting streams",
            lambda p, half_life: exponential(half_life),
            (
                Hyperparameter(
                    "half_life",
                    "--half-life",
                    "rows after which a row's weight halves",
                    grid=(10.0, 1e4),
                ),
            ),
            swept="half_life",
        ),
        Method(
            "sgd",
            "stochastic gradient ascent on the log-likelihood (optax.sgd)",
            lambda p, learning_rate: gradient_ascent(optax.sgd(learning_rate), p),
            (_LR,),
            swept="learning_rate",
            uses_parameterization=True,
        ),
        Method(
            "adam",
            "gradient ascent with optax.adam",
            lambda p, learning_rate: gradient_ascent(optax.adam(learning_rate), p),
            (_LR,),
            swept="learning_rate",
            uses_parameterization=True,
        ),
        Method(
            "averaged-sgd",
            "Polyak–Ruppert average of SGD iterates",
            lambda p, learning_rate, start: averaged(
                gradient_ascent(optax.sgd(learning_rate), p), start=int(start)
            ),
            (
                _LR,
                Hyperparameter(
                    "start",
                    "--start",
                    "burn-in updates left out of the average",
                    default=0,
                    low_inclusive=True,
                    integer=True,
                ),
            ),
            swept="learning_rate",
            uses_parameterization=True,
        ),
        Method(
            "fisher-sgd",
            "SGD with the Fisher preconditioner and retraction, step c/(t + 1)",
            _fisher_sgd,
            (
                Hyperparameter(
                    "learning_rate",
                    "--lr",
                    "the factor c of the step c/(t + 1); 1 is the natural choice at any scale",
                    default=1.0,
                    grid=(0.5, 2.0),
                    aliases=("--learning-rate",),
                ),
            ),
            swept="learning_rate",
            uses_parameterization=True,
        ),
        Method(
            "ewm",
            "exponentially weighted mean and covariance exactly as pandas' ewm",
            lambda p, alpha, half_life, span, com, adjust, bias: ewm(
                alpha=alpha, halflife=half_life, span=span, com=com, adjust=adjust, bias=bias
            ),
            (
                Hyperparameter(
                    "alpha",
                    "--alpha",
                    "pandas' smoothing factor α in (0, 1]; no default: give exactly one of "
                    "--alpha, --half-life, --span, --com",
                    high=1.0,
                    optional=True,
                    grid=(0.01, 0.5),
                ),
                Hyperparameter(
                    "half_life",
                    "--half-life",
                    "pandas' halflife in rows: α = 1 − 2^(−1/h) (no default)",
                    optional=True,
                    grid=(10.0, 1e4),
                ),
                Hyperparameter(
                    "span",
                    "--span",
                    "pandas' span s ≥ 1: α = 2/(s + 1) (no default)",
                    low=1.0,
                    low_inclusive=True,
                    optional=True,
                    grid=(2.0, 1e3),
                ),  # fmt: skip
                Hyperparameter(
                    "com",
                    "--com",
                    "pandas' centre of mass c ≥ 0: α = 1/(1 + c) (no default)",
                    low_inclusive=True,
                    optional=True,
                    grid=(1.0, 1e3),
                ),  # fmt: skip
                Hyperparameter(
                    "adjust",
                    "--adjust",
                    "pandas' adjust (--no-adjust: the recursion from "
                    "the first row, river's and RiskMetrics')",
                    default=True,
                    boolean=True,
                ),  # fmt: skip
                Hyperparameter(
                    "bias",
                    "--bias",
                    "pandas' cov(bias=...): --no-bias applies the effective-sample-size correction",
                    default=False,
                    boolean=True,
                ),  # fmt: skip
            ),
            swept="alpha",
        ),
        Method(
            "student-t",
            "robust location and scatter of a multivariate t, by online EM (ν given or auto)",
            lambda p, dof, power: student_t(None if dof == "auto" else dof, power=power),
            (
                Hyperparameter(
                    "dof",
                    "--dof",
                    "degrees of freedom ν of the t, or auto (estimated online, in [0.5, 1000])",
                    grid=(1.0, 30.0),
                    auto=True,
                ),
                _POWER,
            ),
            swept="power",
        ),
        Method(
            "mixture",
            "a Gaussian mixture, by online EM (k-means++ seeding)",
            lambda p, components, seed, power, covariance_type: gaussian_mixture(
                int(components),
                key=jax.random.key(int(seed)),
                power=power,
                covariance_type=covariance_type,
            ),
            (
                Hyperparameter(
                    "components",
                    "--components",
                    "number of components K",
                    integer=True,
                    grid=(2.0, 8.0),
                ),
                Hyperparameter(
                    "seed",
                    "--seed",
                    "k-means++ seeding key",
                    default=0,
                    low_inclusive=True,
                    integer=True,
                ),
                _POWER,
                Hyperparameter(
                    "covariance_type",
                    "--covariance-type",
                    "scikit-learn's covariance type",
                    default="full",
                    choices=COVARIANCE_TYPES,
                ),
            ),
            swept="power",
        ),
    )
}


def get_method(name: str) -> Method:
    """The ``Method`` record of a name.

    Raises:
      ValueError: an unknown name (the message lists the known ones).
    """
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}") from None


@functools.cache
def make_method(
    name: str, parameterization: str = "cholesky", **fixed: Any
) -> Callable[[jax.Array], Estimator]:
    """A ``make_estimator`` for ``sweep``: the method's swept hyperparameter → estimator.

    The same arguments return the same function, so repeated sweeps reuse its
    compilation. The value is the method's ``swept`` hyperparameter (see ``METHODS``):
    the optax step size for "sgd", "adam" and "averaged-sgd"; the factor c of the
    Fisher-preconditioned step c/(t + 1) for "fisher-sgd"; the constant step of
    "natural"; the half-life in rows of "exponential"; the prior weight of "welford";
    the exponent κ of the online-EM step for "student-t" and "mixture"; α for "ewm". The other
    hyperparameters take ``fixed`` values or their defaults (checked as in
    ``Method.resolve``); the parameterisation applies to the gradient methods.

    Raises:
      ValueError: an unknown method or parameterisation; a fixed hyperparameter the
        method does not take, out of range, or a required one missing.

    Example:
      >>> import jaxgauss as jg
      >>> make = jg.methods.make_method("sgd", "precision")
      >>> type(make(0.01)).__name__
      'Estimator'
    """
    method = get_method(name)
    get_parameterization(parameterization)
    others = method._replace(
        hyperparameters=tuple(h for h in method.hyperparameters if h.name != method.swept)
    )
    values = others.resolve(fixed)

    def make_estimator(value: jax.Array) -> Estimator:
        return method.build(parameterization, **values, **{method.swept: value})

    return make_estimator
