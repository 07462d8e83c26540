"""jaxgauss: online estimation of a Gaussian's mean and covariance in JAX."""

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
    MomentsState,
    WelfordState,
    averaged,
    exponential,
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
    log_likelihood,
    mle,
)
from jaxgauss.parameterizations import Parameterization, Params, get_parameterization
from jaxgauss.preconditioners import covariance_retraction, fisher_preconditioner

__version__ = "0.1.0"

__all__ = [
    "METHODS",
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
    "log_likelihood",
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
