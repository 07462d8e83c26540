"""Estimators: the ``Estimator`` protocol and every estimator factory."""

from jaxgauss.estimators.averaged import AveragedState, averaged
from jaxgauss.estimators.base import Estimator, all_finite
from jaxgauss.estimators.gradient import GradientAscentState, gradient_ascent
from jaxgauss.estimators.mixture import Mixture, MixtureState, gaussian_mixture
from jaxgauss.estimators.moments import (
    MomentsState,
    WelfordState,
    exponential,
    merge,
    natural_gradient,
    welford,
)
from jaxgauss.estimators.registry import METHODS, make_method
from jaxgauss.estimators.student_t import StudentT, StudentTState, student_t

__all__ = [
    "Estimator",
    "all_finite",
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
    "make_method",
    "Mixture",
    "MixtureState",
    "gaussian_mixture",
    "StudentT",
    "StudentTState",
    "student_t",
]
