"""Estimators: the ``Estimator`` protocol and every estimator factory."""

from jaxgauss.estimators.averaged import AveragedState, averaged
from jaxgauss.estimators.base import Estimator, all_finite, counter_dtype
from jaxgauss.estimators.gradient import GradientAscentState, gradient_ascent
from jaxgauss.estimators.higher_moments import kurtosis, skewness
from jaxgauss.estimators.merging import merge
from jaxgauss.estimators.mixture import Mixture, MixtureState, gaussian_mixture
from jaxgauss.estimators.moments import (
    MomentsState,
    WelfordState,
    exponential,
    natural_gradient,
    welford,
)
from jaxgauss.estimators.registry import METHODS, Hyperparameter, Method, get_method, make_method
from jaxgauss.estimators.shrinkage import (
    ledoit_wolf,
    ledoit_wolf_shrinkage,
    oas,
    oas_shrinkage,
    shrunk,
)
from jaxgauss.estimators.student_t import StudentT, StudentTState, student_t
from jaxgauss.estimators.window import RollingState, downdate, rolling

__all__ = [
    "Estimator",
    "all_finite",
    "counter_dtype",
    "GradientAscentState",
    "gradient_ascent",
    "AveragedState",
    "averaged",
    "MomentsState",
    "WelfordState",
    "exponential",
    "merge",
    "natural_gradient",
    "welford",
    "METHODS",
    "Hyperparameter",
    "Method",
    "get_method",
    "make_method",
    "kurtosis",
    "skewness",
    "ledoit_wolf",
    "ledoit_wolf_shrinkage",
    "oas",
    "oas_shrinkage",
    "shrunk",
    "RollingState",
    "downdate",
    "rolling",
    "Mixture",
    "MixtureState",
    "gaussian_mixture",
    "StudentT",
    "StudentTState",
    "student_t",
]
