"""jaxgauss: online estimation of a Gaussian's mean and covariance in JAX."""

from jaxgauss import parameterizations, streams
from jaxgauss.estimators import Estimator, GradientAscentState, gradient_ascent
from jaxgauss.fit import FitResult, Trace, fit
from jaxgauss.gaussian import (
    Gaussian,
    check_gaussian,
    cookbook_gradients,
    is_spd,
    kl_divergence,
    log_likelihood,
    mle,
)
from jaxgauss.parameterizations import Params, Parameterization, get_parameterization

__version__ = "0.1.0"

__all__ = [
    "Estimator",
    "FitResult",
    "Gaussian",
    "GradientAscentState",
    "Params",
    "Parameterization",
    "Trace",
    "check_gaussian",
    "cookbook_gradients",
    "fit",
    "get_parameterization",
    "gradient_ascent",
    "is_spd",
    "kl_divergence",
    "log_likelihood",
    "mle",
    "parameterizations",
    "streams",
]
