"""Estimators: the families behind the top-level factories, and their extension surface.

The factories (``jaxgauss.welford``, ``jaxgauss.student_t``, ...) and the types a fit
returns are exported at the top level. This package names what code written around
them needs: the state each estimator carries (for ``isinstance`` checks and for
building states by hand), the counter dtype, the higher-moment functions of a
``welford(fourth_moments=True)`` state, and the shrinkage coefficients behind
``jaxgauss.oas`` and ``jaxgauss.ledoit_wolf``. The method registry is
``jaxgauss.methods``.
"""

from jaxgauss.estimators.averaged import AveragedState
from jaxgauss.estimators.base import all_finite, counter_dtype
from jaxgauss.estimators.ewm import EWMState
from jaxgauss.estimators.gradient import GradientAscentState
from jaxgauss.estimators.higher_moments import kurtosis, skewness
from jaxgauss.estimators.mixture import MixtureState
from jaxgauss.estimators.moments import MomentsState, WelfordState
from jaxgauss.estimators.shrinkage import ledoit_wolf_shrinkage, oas_shrinkage
from jaxgauss.estimators.student_t import StudentTState
from jaxgauss.estimators.window import RollingState

__all__ = [
    "AveragedState",
    "EWMState",
    "GradientAscentState",
    "MixtureState",
    "MomentsState",
    "RollingState",
    "StudentTState",
    "WelfordState",
    "all_finite",
    "counter_dtype",
    "kurtosis",
    "ledoit_wolf_shrinkage",
    "oas_shrinkage",
    "skewness",
]
