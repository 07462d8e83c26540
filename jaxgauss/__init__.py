"""jaxgauss: online estimation of a Gaussian's mean and covariance in JAX."""

# First, before any backend starts: the workaround for a known jaxlib hang.
from jaxgauss import _xla_flags  # noqa: F401  (applies it on import)

# isort: split


from jaxgauss import checkpoint, parameterizations, schedules, streams
from jaxgauss._fit import (
    DataError,
    FitCarry,
    FitResult,
    Trace,
    default_block_rows,
    fit,
    init_carry,
    scan_batches,
)
from jaxgauss._sweep import SweepResult, grid_product, sweep
from jaxgauss.estimators import (
    METHODS,
    AveragedState,
    Estimator,
    GradientAscentState,
    Hyperparameter,
    Method,
    MomentsState,
    WelfordState,
    averaged,
    counter_dtype,
    exponential,
    get_method,
    gradient_ascent,
    make_method,
    merge,
    natural_gradient,
    welford,
)
from jaxgauss.gaussian import (
    Gaussian,
    check_gaussian,
    cookbook_gradients,
    is_spd,
    kl_divergence,
    kl_divergence_float64,
    log_likelihood,
    mle,
)
from jaxgauss.parameterizations import Parameterization, Params, get_parameterization
from jaxgauss.preconditioners import covariance_retraction, fisher_preconditioner

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "Hyperparameter",
    "Method",
    "AveragedState",
    "DataError",
    "FitCarry",
    "Estimator",
    "FitResult",
    "Gaussian",
    "GradientAscentState",
    "MomentsState",
    "Params",
    "Parameterization",
    "SweepResult",
    "Trace",
    "WelfordState",
    "averaged",
    "check_gaussian",
    "checkpoint",
    "cookbook_gradients",
    "counter_dtype",
    "covariance_retraction",
    "default_block_rows",
    "exponential",
    "fisher_preconditioner",
    "fit",
    "get_parameterization",
    "gradient_ascent",
    "grid_product",
    "init_carry",
    "is_spd",
    "kl_divergence",
    "kl_divergence_float64",
    "log_likelihood",
    "get_method",
    "make_method",
    "merge",
    "mle",
    "natural_gradient",
    "parameterizations",
    "scan_batches",
    "schedules",
    "streams",
    "sweep",
    "welford",
]
