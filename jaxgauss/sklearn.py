"""scikit-learn estimators that stream: ``OnlineEmpiricalCovariance`` and
``OnlineGaussianMixture``.

scikit-learn's ``EmpiricalCovariance`` needs every row in memory at once. This
estimator has the same attributes and methods but also ``partial_fit``, which feeds
rows through the same compiled update as ``fit`` (``fit`` is a fresh ``partial_fit``),
so a table larger than memory can be estimated chunk by chunk with the result of one
pass.

Precision: scikit-learn returns float64 whatever the input; JAX computes in float32
unless x64 is enabled. Every JAX call here runs inside ``jax.enable_x64(True)`` on
float64 data, so results are float64 whatever the global setting, and the state is
kept as NumPy float64 arrays between calls (which also makes the fitted estimator
picklable). Integer data are moved to their first row in integer arithmetic before
the conversion to float64, so int64 values far beyond 2⁵³ keep their spread. The
rows go through ``jaxgauss.fit`` (its compiled programs are cached per estimator
and shape: the method's ``Estimator`` is built once per (method, centred) and
reused by every instance).

``OnlineGaussianMixture`` is ``sklearn.mixture.GaussianMixture`` with ``partial_fit``
(scikit-learn #8714): the rows go through ``jaxgauss.gaussian_mixture``'s online EM,
``batch_size`` rows per E-step, and the fitted attributes are scikit-learn's, so its
``score_samples``, ``predict_proba``, ``bic`` and the others are computed from the
same parameters the same way (to ~1e-14).

scikit-learn is an optional dependency (``pip install "jaxgauss[sklearn]"``).
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from scipy.linalg import solve_triangular
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from jaxgauss._fit import fit
from jaxgauss.estimators.base import Estimator
from jaxgauss.estimators.covariance_types import check_covariance_type
from jaxgauss.estimators.mixture import Mixture, aic, bic, gaussian_mixture
from jaxgauss.estimators.moments import welford
from jaxgauss.estimators.shrinkage import ledoit_wolf, oas
from jaxgauss.gaussian import Gaussian, is_spd, log_likelihood, mahalanobis, precision

__all__ = ["OnlineEmpiricalCovariance", "OnlineGaussianMixture", "COVARIANCE_METHODS"]


def _plain(estimator: Estimator, state) -> Gaussian:
    return estimator.estimate(state)


# method name -> (build the estimator given centred=True/False, (estimator, state) ->
# Gaussian). With a known mean the rows are centred by it in NumPy before streaming,
# so every known mean shares one compiled program (welford(known_mean=0) on y − m).
def _ledoit_wolf_estimator(centred: bool) -> Estimator:
    if centred:
        raise ValueError(
            "method='ledoit-wolf' estimates the mean (its fourth-moment sums are centred at "
            "it): leave assume_centered and known_mean unset, or use method='oas'"
        )
    return welford(fourth_moments=True)


COVARIANCE_METHODS = {
    "welford": (lambda centred: welford(known_mean=0.0 if centred else None), _plain),
    "ledoit-wolf": (_ledoit_wolf_estimator, lambda estimator, state: ledoit_wolf(state)),
    "oas": (
        lambda centred: welford(known_mean=0.0 if centred else None),
        lambda estimator, state: oas(state),
    ),
}


@functools.cache
def _cached_estimator(method: str, centred: bool) -> Estimator:
    return COVARIANCE_METHODS[method][0](centred)


@functools.partial(jax.jit, static_argnames=("estimator", "finish"))
def _summary(estimator: Estimator, finish, state):
    g = finish(estimator, state)
    return g, precision(g, allow_singular=True)


@jax.jit
def _mahalanobis(g: Gaussian, rows):
    return mahalanobis(g, rows, allow_singular=True)


@jax.jit
def _mean_log_likelihood(g: Gaussian, rows):
    return jnp.where(is_spd(g.cov), jnp.mean(log_likelihood(g, rows)), -jnp.inf)


def _shifted(X: np.ndarray, shift: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """float64 rows ``X − shift`` and the float64 shift added back to the location.
    Integer rows are subtracted in int64 (exact where no difference reaches 2⁶²),
    so values far beyond 2⁵³ keep their spread; float rows, or no shift, as they are."""
    if shift is None:
        return X.astype(np.float64, copy=False), np.zeros(X.shape[1])
    if X.dtype == np.int64 and np.all(np.abs(X.astype(np.float64) - shift) < 2.0**62):
        return (X - shift).astype(np.float64), shift.astype(np.float64)
    return X.astype(np.float64) - shift.astype(np.float64), shift.astype(np.float64)


def _diverged_message(method, rows: np.ndarray) -> str:
    """Why an update was rejected: rows whose squares overflow float64, or the
    method's own divergence."""
    spread = float(np.max(np.abs(rows - rows[:1]), initial=0.0))
    if not spread < np.sqrt(np.finfo(np.float64).max / rows.shape[0]):
        return (
            f"the rows spread up to {spread:.3g} about the first one: their squares "
            "exceed float64's range, so no covariance can be represented; rescale the "
            "data (the fit keeps the last valid state)"
        )
    advice = "" if method == "welford" else " Use method='welford' or a smaller step."
    return (
        "the estimator rejected an update (it diverged) on these rows; the fit keeps "
        f"the last valid state.{advice}"
    )


class OnlineEmpiricalCovariance(BaseEstimator):
    """Maximum-likelihood (or shrunk) covariance, fitted in one pass or streamed.

    A drop-in for ``sklearn.covariance.EmpiricalCovariance`` (same attributes,
    ``score``, ``mahalanobis``, ``error_norm``, ``get_precision``) that also has
    ``partial_fit``: calling it on consecutive chunks of rows gives the ``fit`` of
    all of them (to rounding). Results are float64 whatever JAX's x64 setting.

    Args:
      method: ``"welford"`` (the exact MLE, default), ``"ledoit-wolf"`` or ``"oas"``
        (the shrunk estimates of scikit-learn's ``LedoitWolf``/``OAS``, streamed), or any ``jaxgauss``
        ``Estimator`` (e.g. ``jg.exponential(500.0)`` to forget old rows; such an
        instance must carry its own ``known_mean``, and is not picklable).
      store_precision: keep ``precision_`` (the pseudo-inverse of ``covariance_``).
      assume_centered: the data's mean is known to be 0 (``known_mean=0``).
      known_mean: None, or the known mean (a scalar or an (n_features,) vector):
        ``location_`` is it and ``covariance_`` the second moment about it
        (``jaxgauss.welford(known_mean=...)``).

    Attributes:
      location_: (n_features,) float64, the mean.
      covariance_: (n_features, n_features) float64.
      precision_: (n_features, n_features) float64 pseudo-inverse of ``covariance_``
        (``jaxgauss.precision(g, allow_singular=True)``), or None.
      n_samples_seen_: rows absorbed so far.
      n_features_in_: columns seen during ``fit``.

    Example:
      >>> import numpy as np
      >>> from jaxgauss.sklearn import OnlineEmpiricalCovariance
      >>> X = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]])
      >>> est = OnlineEmpiricalCovariance().partial_fit(X[:2]).partial_fit(X[2:])
      >>> est.covariance_.round(4).tolist(), est.n_samples_seen_
      ([[2.6667, 2.0], [2.0, 2.0]], 3)
    """

    def __init__(
        self, *, method="welford", store_precision=True, assume_centered=False, known_mean=None
    ):
        self.method = method
        self.store_precision = store_precision
        self.assume_centered = assume_centered
        self.known_mean = known_mean

    def _mean_offset(self, d: int) -> np.ndarray | None:
        """The known mean as an (d,) float64 vector, or None."""
        if self.known_mean is None:
            return np.zeros(d) if self.assume_centered else None
        if self.assume_centered:
            raise ValueError("assume_centered=True means known_mean=0: give only one of them")
        m = np.asarray(self.known_mean, np.float64)
        if m.ndim > 1 or (m.ndim == 1 and m.shape[0] != d):
            raise ValueError(
                f"known_mean must be a scalar or have {d} entries, got shape {m.shape}"
            )
        if not np.all(np.isfinite(m)):
            raise ValueError("known_mean has non-finite entries")
        return np.broadcast_to(m, (d,)).copy()

    def _estimator(self) -> tuple[Estimator, object]:
        if isinstance(self.method, Estimator):
            if self.assume_centered or self.known_mean is not None:
                raise ValueError(
                    "with an Estimator as method, build the known mean into it "
                    "(e.g. jg.welford(known_mean=m)); leave assume_centered and known_mean unset"
                )
            return self.method, _plain
        if self.method not in COVARIANCE_METHODS:
            raise ValueError(
                f"unknown method {self.method!r}; choose from {', '.join(COVARIANCE_METHODS)} "
                "or pass a jaxgauss Estimator"
            )
        centred = self.assume_centered or self.known_mean is not None
        return _cached_estimator(self.method, centred), COVARIANCE_METHODS[self.method][1]

    def fit(self, X, y=None):
        """Fit to the rows of ``X`` (n_samples, n_features), forgetting earlier fits.

        Returns:
          self.
        """
        for name in ("n_samples_seen_", "_state", "_shift"):
            if hasattr(self, name):
                delattr(self, name)
        return self.partial_fit(X)

    def partial_fit(self, X, y=None):
        """Absorb the rows of ``X`` (n_samples, n_features) into the current fit
        (a first call starts one); the result equals ``fit`` on all rows so far.

        Returns:
          self.
        """
        first = not hasattr(self, "_state")
        X = validate_data(self, X, reset=first, dtype=[np.float64, np.int64])
        if first and X.shape[0] == 1:
            warnings.warn(
                "Only one sample available. You may want to reshape your data array",
                UserWarning,
                stacklevel=2,
            )
        estimator, finish = self._estimator()
        d = X.shape[1]
        offset = self._mean_offset(d)
        if offset is None:
            if first and X.dtype == np.int64:
                self._shift = X[0].copy()
            rows, shift = _shifted(X, getattr(self, "_shift", None))
        else:
            rows, shift = X - offset, offset
        with jax.enable_x64(True):
            state = None if first else jax.tree_util.tree_map(jnp.asarray, self._state)
            res = fit(estimator, rows, state=state)  # the engine's guarded blocked scan
            state, diverged = res.state, int(res.diverged_at) >= 0
            g, prec = _summary(estimator, finish, state)
            self._state = jax.tree_util.tree_map(np.asarray, state)
        self.n_samples_seen_ = int(getattr(self, "n_samples_seen_", 0) + X.shape[0])
        self.location_ = offset if offset is not None else shift + np.asarray(g.mean, np.float64)
        self.covariance_ = np.asarray(g.cov, np.float64)
        self.precision_ = np.asarray(prec, np.float64) if self.store_precision else None
        if diverged:
            raise ValueError(_diverged_message(self.method, rows))
        return self

    def _gaussian(self) -> Gaussian:
        return Gaussian(jnp.asarray(self.location_), jnp.asarray(self.covariance_))

    def get_precision(self) -> np.ndarray:
        """The precision matrix (pseudo-inverse of ``covariance_``), float64."""
        check_is_fitted(self)
        if self.precision_ is not None:
            return self.precision_
        with jax.enable_x64(True):
            return np.asarray(precision(self._gaussian(), allow_singular=True), np.float64)

    def mahalanobis(self, X) -> np.ndarray:
        """SQUARED Mahalanobis distances of the rows of ``X`` to ``location_``
        (as scikit-learn's), with the pseudo-inverse for a singular covariance.

        Returns:
          (n_samples,) float64.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        with jax.enable_x64(True):
            return np.asarray(_mahalanobis(self._gaussian(), X), np.float64)

    def score(self, X_test, y=None) -> float:
        """Mean log-likelihood of the rows of ``X_test`` under N(location_, covariance_);
        −inf when ``covariance_`` is not positive definite (as scikit-learn, whose
        pseudo-inverse precision then has log-determinant −inf).
        """
        check_is_fitted(self)
        X_test = validate_data(self, X_test, reset=False, dtype=np.float64)
        with jax.enable_x64(True):
            return float(_mean_log_likelihood(self._gaussian(), X_test))

    def error_norm(self, comp_cov, norm="frobenius", scaling=True, squared=True) -> float:
        """The norm of ``comp_cov − covariance_``: "frobenius" (‖E‖²_F) or "spectral"
        (the largest singular value², σ_max(E)²), divided by n_features when
        ``scaling``, and its square root when not ``squared``.

        Raises:
          NotImplementedError: another norm (as scikit-learn).
        """
        check_is_fitted(self)
        error = np.asarray(comp_cov, np.float64) - self.covariance_
        if norm == "frobenius":
            value = float(np.sum(error**2))
        elif norm == "spectral":
            value = float(np.linalg.norm(error, 2) ** 2)
        else:
            raise NotImplementedError("Only spectral and frobenius norms are implemented")
        if scaling:
            value /= error.shape[0]
        return value if squared else float(np.sqrt(value))


@functools.cache
def _mixture_estimator(k: int, covariance_type: str, reg_covar: float, seed: int, n_init: int):
    """One ``Estimator`` per setting, so that every instance (and every ``fit``) with
    those settings reuses ``jaxgauss.fit``'s compiled programs."""
    return gaussian_mixture(
        k,
        key=jax.random.key(seed),
        covariance_type=covariance_type,
        reg_covar=reg_covar,
        n_init=n_init,
    )


@functools.partial(jax.jit, static_argnames="what")
def _mixture_call(mixture: Mixture, rows, what: str):
    if what == "score_samples":
        return mixture.log_likelihood(rows)
    if what == "predict_proba":
        return mixture.responsibilities(rows)
    if what == "predict":
        return mixture.predict(rows)
    return bic(mixture, rows) if what == "bic" else aic(mixture, rows)


def _precisions_cholesky(covs: np.ndarray, covariance_type: str) -> np.ndarray:
    """scikit-learn's ``precisions_cholesky_``: L⁻ᵀ of each covariance's Cholesky
    factor L (full, tied), 1/σ of the variances (diag, spherical)."""
    if covariance_type in ("diag", "spherical"):
        return 1 / np.sqrt(covs)

    def one(cov):
        chol = np.linalg.cholesky(cov)
        return solve_triangular(chol, np.eye(len(cov)), lower=True).T

    return one(covs) if covariance_type == "tied" else np.stack([one(c) for c in covs])


def _precisions(prec_chol: np.ndarray, covariance_type: str) -> np.ndarray:
    if covariance_type == "full":
        return np.einsum("kij,klj->kil", prec_chol, prec_chol)
    if covariance_type == "tied":
        return prec_chol @ prec_chol.T
    return prec_chol**2


class OnlineGaussianMixture(DensityMixin, BaseEstimator):
    """A Gaussian mixture fitted by online EM in one pass, or streamed with
    ``partial_fit``: scikit-learn's ``GaussianMixture`` attributes and methods.

    The rows go through ``jaxgauss.gaussian_mixture`` (k-means++ seeding on the first
    ``n_seed_rows`` rows, then stepwise EM with one E-step per ``batch_size`` rows).
    ``fit(X)`` forgets earlier fits, then is ``partial_fit(X)``; ``partial_fit`` on
    consecutive chunks whose sizes are multiples of ``batch_size`` equals one ``fit``
    on all rows (other sizes split a batch, which changes the result slightly).
    Results are float64 whatever JAX's x64 setting.

    Args:
      n_components: K ≥ 1.
      covariance_type: "full", "tied", "diag" or "spherical", as scikit-learn's.
      reg_covar: added to the diagonal of every covariance (≥ 0).
      batch_size: rows per E-step (≥ 1).
      n_seed_rows: rows buffered for the k-means++ seed (≥ n_components); until they
        are all seen the fit is the seed of the rows so far.
      random_state: None, an int or a ``numpy.random.RandomState``: the seeding's key
        (drawn once per ``fit``) and ``sample``'s generator. The compiled EM programs
        are kept per seed, so an int reuses them across fits and instances, while
        None (a new seed per ``fit``) compiles them anew each time (seconds).

    Attributes:
      weights_: (K,) mixing weights.
      means_: (K, n_features).
      covariances_: shaped by ``covariance_type`` as scikit-learn's.
      precisions_: their inverses; ``precisions_cholesky_``: scikit-learn's factors.
      converged_: True once the seed is built and the online steps run (there is no
        iteration to converge: one pass is the fit).
      n_iter_: updates (E-steps) so far; ``lower_bound_``: the mean log-likelihood of
        the last chunk under the fit.
      n_samples_seen_: rows absorbed so far; ``n_features_in_``: columns.

    Example:
      >>> import numpy as np
      >>> from jaxgauss.sklearn import OnlineGaussianMixture
      >>> rng = np.random.default_rng(0)
      >>> X = np.concatenate([rng.normal(-5, 1, (600, 2)), rng.normal(5, 1, (600, 2))])
      >>> gm = OnlineGaussianMixture(2, covariance_type="diag", random_state=0)
      >>> gm = gm.partial_fit(X[::2]).partial_fit(X[1::2])
      >>> sorted(np.round(gm.means_[:, 0]).tolist()), gm.covariances_.shape
      ([-5.0, 5.0], (2, 2))
    """

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        reg_covar=1e-6,
        batch_size=100,
        n_seed_rows=500,
        random_state=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.batch_size = batch_size
        self.n_seed_rows = n_seed_rows
        self.random_state = random_state

    def _estimator(self) -> Estimator:
        check_covariance_type(self.covariance_type)
        for name, low in (("n_components", 1), ("batch_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not isinstance(self.reg_covar, int | float) or not self.reg_covar >= 0:
            raise ValueError(f"reg_covar must be a number >= 0, got {self.reg_covar!r}")
        return _mixture_estimator(
            int(self.n_components),
            self.covariance_type,
            float(self.reg_covar),
            self._seed,
            self._seed_rows(),
        )

    def _seed_rows(self) -> int:
        if isinstance(self.n_seed_rows, bool) or not isinstance(self.n_seed_rows, int | np.integer):
            raise ValueError(f"n_seed_rows must be an integer, got {self.n_seed_rows!r}")
        return max(int(self.n_seed_rows), int(self.n_components))

    def fit(self, X, y=None):
        """Forget earlier fits, then ``partial_fit(X)``.

        Returns:
          self.
        """
        for name in ("n_samples_seen_", "_state", "_seed"):
            if hasattr(self, name):
                delattr(self, name)
        return self.partial_fit(X)

    def partial_fit(self, X, y=None):
        """Absorb the rows of ``X`` (n_samples, n_features) into the current fit (a
        first call starts one).

        Returns:
          self.

        Raises:
          ValueError: a first call with fewer rows than ``n_components``; bad
            settings; rows with another number of features than before.
        """
        first = not hasattr(self, "_state")
        X = validate_data(self, X, reset=first, dtype=np.float64, ensure_min_samples=1)
        if first:
            if X.shape[0] < self.n_components:
                raise ValueError(
                    f"Expected n_samples >= n_components but got n_components = "
                    f"{self.n_components}, n_samples = {X.shape[0]}"
                )
            self._seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        estimator = self._estimator()
        with jax.enable_x64(True):
            state = None if first else jax.tree_util.tree_map(jnp.asarray, self._state)
            res = fit(estimator, X, state=state, batch_size=int(self.batch_size))
            self._state = jax.tree_util.tree_map(np.asarray, res.state)
            m = res.estimate
            self.lower_bound_ = float(jnp.mean(_mixture_call(m, X, "score_samples")))
        self.n_samples_seen_ = int(getattr(self, "n_samples_seen_", 0) + X.shape[0])
        self.n_iter_ = int(getattr(self, "n_iter_", 0) if not first else 0) + -(
            -X.shape[0] // int(self.batch_size)
        )
        self.weights_, self.means_, self.covariances_ = (
            np.asarray(x, np.float64) for x in (m.weights, m.means, m.covs)
        )
        self.precisions_cholesky_ = _precisions_cholesky(self.covariances_, self.covariance_type)
        self.precisions_ = _precisions(self.precisions_cholesky_, self.covariance_type)
        self.converged_ = self.n_samples_seen_ >= self._seed_rows()
        if int(res.diverged_at) >= 0:
            raise ValueError("the online EM rejected an update (non-finite state) on these rows")
        return self

    def _call(self, X, what: str) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        m = Mixture(self.weights_, self.means_, self.covariances_, self.covariance_type)
        with jax.enable_x64(True):
            return np.asarray(_mixture_call(jax.tree_util.tree_map(jnp.asarray, m), X, what))

    def score_samples(self, X) -> np.ndarray:
        """Log-density of each row of ``X`` under the mixture, (n_samples,)."""
        return self._call(X, "score_samples")

    def score(self, X, y=None) -> float:
        """Mean log-likelihood of the rows of ``X``."""
        return float(np.mean(self.score_samples(X)))

    def predict_proba(self, X) -> np.ndarray:
        """Each row's component probabilities (responsibilities), (n_samples, K)."""
        return self._call(X, "predict_proba")

    def predict(self, X) -> np.ndarray:
        """Each row's most likely component, (n_samples,) ints."""
        return self._call(X, "predict").astype(np.int64)

    def fit_predict(self, X, y=None) -> np.ndarray:
        """``fit(X)``, then the components of its rows."""
        return self.fit(X).predict(X)

    def bic(self, X) -> float:
        """scikit-learn's Bayesian information criterion on ``X`` (lower is better)."""
        return float(self._call(X, "bic"))

    def aic(self, X) -> float:
        """scikit-learn's Akaike information criterion on ``X`` (lower is better)."""
        return float(self._call(X, "aic"))

    def sample(self, n_samples=1):
        """Draw rows from the mixture, as scikit-learn's ``GaussianMixture.sample``:
        per-component counts from a multinomial, rows grouped by component.

        Returns:
          (X (n_samples, n_features), y (n_samples,) component labels).
        """
        check_is_fitted(self)
        if (
            isinstance(n_samples, bool)
            or not isinstance(n_samples, int | np.integer)
            or n_samples < 1
        ):
            raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
        rng = check_random_state(self.random_state)
        counts = rng.multinomial(n_samples, self.weights_)
        d = self.means_.shape[1]
        parts = []
        for k, (mean, c) in enumerate(zip(self.means_, counts, strict=True)):
            if self.covariance_type in ("full", "tied"):
                cov = self.covariances_ if self.covariance_type == "tied" else self.covariances_[k]
                parts.append(rng.multivariate_normal(mean, cov, c))
            else:
                scale = np.sqrt(self.covariances_[k])
                parts.append(mean + rng.standard_normal((c, d)) * scale)
        labels = np.repeat(np.arange(len(counts)), counts)
        return np.vstack(parts), labels
