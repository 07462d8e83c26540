"""jaxgauss: online estimation of a Gaussian's mean and covariance in JAX."""

# First, before any backend starts: the workaround for a known jaxlib hang.
from jaxgauss import _xla_flags  # noqa: F401  (applies it on import)

# isort: split


# The public submodules, as attributes (jg.streams.sample); not star-exported.
from jaxgauss import checkpoint as checkpoint
from jaxgauss import engine as engine
from jaxgauss import estimators as estimators
from jaxgauss import gaussian as gaussian
from jaxgauss import methods as methods
from jaxgauss import normalization as normalization
from jaxgauss import parameterizations as parameterizations
from jaxgauss import preconditioners as preconditioners
from jaxgauss import schedules as schedules
from jaxgauss import streams as streams
from jaxgauss._engine import DataError, FitResult, Trace
from jaxgauss._fit import fit
from jaxgauss._sweep import SweepResult, grid_product, sweep
from jaxgauss._version import __version__  # noqa: F401  (jaxgauss.__version__)
from jaxgauss.distances import bhattacharyya_distance, frechet_distance, hellinger_distance
from jaxgauss.estimators.averaged import averaged
from jaxgauss.estimators.base import Estimator
from jaxgauss.estimators.ewm import ewm
from jaxgauss.estimators.gradient import gradient_ascent
from jaxgauss.estimators.merging import merge
from jaxgauss.estimators.mixture import Mixture, aic, bic, gaussian_mixture
from jaxgauss.estimators.moments import exponential, natural_gradient, welford
from jaxgauss.estimators.pooled import pooled_covariance
from jaxgauss.estimators.shrinkage import ledoit_wolf, oas, shrunk
from jaxgauss.estimators.student_t import StudentT, student_t
from jaxgauss.estimators.window import downdate, rolling
from jaxgauss.gaussian import (
    Gaussian,
    condition,
    cookbook_gradients,
    correlation,
    entropy,
    is_spd,
    kl_divergence,
    log_likelihood,
    mahalanobis,
    marginal,
    mle,
    precision,
)
from jaxgauss.normalization import normalizer
from jaxgauss.preconditioners import fisher_preconditioner
from jaxgauss.whitening import PCA, pca, unwhiten, whiten

# What a user calls and the types they receive. The building blocks live in named
# public submodules: jaxgauss.engine (your own lax.scan), jaxgauss.methods (the
# registry), jaxgauss.estimators (state types, counters, higher moments, shrinkage
# coefficients), jaxgauss.gaussian (checks and tolerances), jaxgauss.parameterizations,
# jaxgauss.preconditioners, jaxgauss.schedules, jaxgauss.streams (synthetic data and
# readers), jaxgauss.checkpoint. Each object has one public name.
__all__ = [
    # types a fit receives and returns
    "DataError",
    "Estimator",
    "FitResult",
    "Gaussian",
    "Mixture",
    "StudentT",
    "SweepResult",
    "Trace",
    # estimators
    "averaged",
    "ewm",
    "exponential",
    "gaussian_mixture",
    "gradient_ascent",
    "natural_gradient",
    "rolling",
    "student_t",
    "welford",
    # choosing a model
    "aic",
    "bic",
    # running them
    "fit",
    "grid_product",
    "sweep",
    # operations on states
    "downdate",
    "merge",
    "pooled_covariance",
    # a running normaliser of observations
    "normalizer",
    # the estimate as a distribution
    "condition",
    "cookbook_gradients",
    "correlation",
    "entropy",
    "is_spd",
    "kl_divergence",
    "log_likelihood",
    "mahalanobis",
    "marginal",
    "mle",
    "precision",
    # distances between Gaussians
    "bhattacharyya_distance",
    "frechet_distance",
    "hellinger_distance",
    # PCA and whitening
    "PCA",
    "pca",
    "unwhiten",
    "whiten",
    # shrinkage
    "ledoit_wolf",
    "oas",
    "shrunk",
    # optax
    "fisher_preconditioner",
]
