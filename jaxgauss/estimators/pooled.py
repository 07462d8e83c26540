"""The within-class (pooled) covariance of a grouped fit: the shared covariance of
linear discriminant analysis and of Mahalanobis out-of-distribution scores.

A grouped ``welford`` fit keeps each class's weight nₖ (its rows, or its total
weight) and its MLE covariance Σₖ (scatter / nₖ); the pooled covariance is their
weighted average Σₖ nₖ Σₖ / Σₖ nₖ = (within-class scatter) / n, which is
scikit-learn's ``LinearDiscriminantAnalysis(solver="lsqr" or "eigen").covariance_``
(its ``_class_cov``: the class covariances weighted by the class frequencies).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxgauss.estimators.moments import WelfordState

__all__: list[str] = []  # pooled_covariance is exported at the top level


def pooled_covariance(state: WelfordState) -> jax.Array:
    """The within-class covariance Σₖ nₖ Σₖ / Σₖ nₖ of a grouped ``welford`` state.

    nₖ is class k's weight: its row count, or with ``welford(weighted=True)`` its total
    weight (plus any prior weight); Σₖ its covariance divided by nₖ (the state's, not
    ``ddof``'s). This is scikit-learn's ``LinearDiscriminantAnalysis`` ``covariance_``
    (solvers "lsqr" and "eigen"); the unbiased pooled estimate divides the scatter by
    n − K instead: multiply by n/(n − K). Classes with no rows are left out.

    Args:
      state: the ``state`` of ``jg.fit(jg.welford(), X, groups=y)`` (or of a weighted
        grouped fit, or merged shards of one): a ``WelfordState`` whose fields have a
        leading (K,) classes axis.

    Returns:
      The pooled covariance, (d, d), exactly symmetric, in the state's dtype.

    Raises:
      ValueError: ``state`` is not a ``WelfordState``, has no leading classes axis, or
        (when concrete) has a negative class weight or no rows at all.

    Example:
      >>> import jax.numpy as jnp, jaxgauss as jg
      >>> x = jnp.array([[0.0], [2.0], [10.0], [14.0]])
      >>> state = jg.fit(jg.welford(), x, groups=jnp.array([0, 0, 1, 1])).state
      >>> jg.pooled_covariance(state).tolist()  # (2 · 1 + 2 · 4) / 4
      [[2.5]]
    """
    if not isinstance(state, WelfordState):
        raise ValueError(
            "state must be the WelfordState of a grouped welford fit "
            f"(jg.fit(jg.welford(), X, groups=y).state), got {type(state).__name__}"
        )
    if jnp.ndim(state.mean) != 2:
        raise ValueError(
            f"state has means of shape {jnp.shape(state.mean)}: pooling needs a leading "
            "classes axis, (K, d), from a grouped fit (fit(..., groups=y))"
        )
    weights = state.count + state.prior_weight
    if not isinstance(weights, jax.core.Tracer):
        w = np.asarray(weights, np.float64)
        if np.any(w < 0):
            raise ValueError(f"state has a negative class weight ({w.min():.3g})")
        if not np.sum(w) > 0:
            raise ValueError("state has no rows in any class: nothing to pool")
    weights = jnp.asarray(weights, state.cov.dtype)
    # An empty class's covariance is its initial one (or anything): weight 0 drops it.
    covs = jnp.where((weights > 0)[..., None, None], state.cov, 0)
    pooled = jnp.einsum("k,kij->ij", weights / jnp.sum(weights), covs)
    return 0.5 * (pooled + pooled.T)
