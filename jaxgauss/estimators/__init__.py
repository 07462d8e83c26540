"""Estimators: the ``Estimator`` protocol and every estimator factory."""

from jaxgauss.estimators.base import Estimator, all_finite
from jaxgauss.estimators.gradient import GradientAscentState, gradient_ascent

__all__ = ["Estimator", "all_finite", "GradientAscentState", "gradient_ascent"]
