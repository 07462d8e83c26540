"""Argument checks shared by ``fit`` and ``sweep``: one place for each, with messages
that name the argument, the value and the fix."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgauss.gaussian import Gaussian, check_gaussian, kl_divergence

Score = Callable[[Any, Any], jax.Array]


def check_int(name: str, value: Any, minimum: int) -> int:
    """Boundary check of an integer argument (``fit``'s and ``sweep``'s): a clear
    ValueError for bools, floats and values below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_score(score: Any) -> Score:
    """Boundary check of ``score`` (``fit``'s and ``sweep``'s): None means KL."""
    if score is None:
        return kl_divergence
    if not callable(score):
        raise ValueError(
            f"score must be a function score(truth, estimate) -> scalar, got {type(score).__name__}"
        )
    return score


def check_truth(truth: Any, score: Score, d: int | None, dtype: Any) -> Any:
    """The truth a score is measured against, in the data's dtype: a ``Gaussian``
    (checked) for the default KL score, any pytree of arrays for another score."""
    if score is kl_divergence:
        check_gaussian(truth, d, name="truth")
        return truth.astype(dtype)
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(
            x, dtype if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else None
        ),
        truth,
    )


def check_stacked_gaussian(g: Any, n: int, d: int | None, what: str, *, name: str) -> int:
    """Boundary check of a ``Gaussian`` with a leading axis of ``n`` (one per group
    or seed, ``what`` names them). Returns d."""
    if not isinstance(g, Gaussian) or jnp.ndim(g.mean) != 2:
        raise ValueError(f"{name} must be a Gaussian with mean (n, d), got {type(g).__name__}")
    if jnp.shape(g.mean)[0] != n:
        raise ValueError(f"{name} has {jnp.shape(g.mean)[0]} Gaussians for {n} {what}")
    for k in range(n):
        check_gaussian(Gaussian(g.mean[k], g.cov[k]), d, name=f"{name}[{k}]")
    return jnp.shape(g.mean)[1]
