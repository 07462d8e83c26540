"""Estimators: the ``Estimator`` protocol and every estimator factory."""

from jaxgauss.estimators.averaged import AveragedState, averaged
from jaxgauss.estimators.base import Estimator, all_finite, counter_dtype
from jaxgauss.estimators.gradient import GradientAscentState, gradient_ascent
from jaxgauss.estimators.moments import (
    MomentsState,
    WelfordState,
    exponential,
    merge,
    natural_gradient,
    welford,
)
from jaxgauss.estimators.registry import METHODS, Hyperparameter, Method, get_method, make_method

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
]
