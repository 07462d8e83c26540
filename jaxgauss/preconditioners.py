"""Optax transformations that apply the Gaussian's Fisher metric.

``fisher_preconditioner`` turns a Euclidean gradient in a parameterisation's
coordinates into the natural gradient F(θ)⁻¹ g, in closed form. ``covariance_retraction``
takes the resulting first-order update and applies it as a step in (μ, Σ) space,
mapped back exactly through the parameterisation. Chained with an SGD step of size
a ∈ (0, 1) on the negative log-likelihood, the pair turns every parameterisation
into the moment recursion

  μ ← μ + a r,      Σ ← (1 − a) Σ + a r rᵀ,      r = y − μ,

a convex combination that never leaves the cone of positive-definite matrices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxgauss.estimators.base import all_finite
from jaxgauss.gaussian import Gaussian
from jaxgauss.parameterizations import (
    Parameterization,
    Params,
    get_parameterization,
    symmetric,
)

# fisher_preconditioner is exported at the top level (jaxgauss.fisher_preconditioner).
__all__ = ["covariance_retraction"]


def _require_params(params: Params | None, name: str) -> Params:
    if params is None:
        raise ValueError(
            f"{name} needs the current parameters: call update(updates, state, params) "
            "(jaxgauss.gradient_ascent passes them)"
        )
    return params


def fisher_preconditioner(
    parameterization: str | Parameterization,
) -> optax.GradientTransformation:
    """Natural gradient: maps a Euclidean gradient g in a parameterisation's
    unconstrained ``Params`` θ to F(θ)⁻¹ g, with F the Gaussian's Fisher information
    pulled back through the parameterisation, in closed form.

    The Fisher metric of N(μ, Σ) has no (μ, Σ) cross term: ‖dμ‖²_F = dμᵀ Σ⁻¹ dμ and
    ‖dΣ‖²_F = ½ tr(Σ⁻¹ dΣ Σ⁻¹ dΣ). Per parameterisation (G the gradient's matrix part):

    * "covariance": (Σ g_μ, 2 Σ G Σ).
    * "cholesky" (Σ = L Lᵀ, log-diagonal m): (L Lᵀ g_μ, dm) with X = Φ(Lᵀ G_L),
      dm = tril(L X, −1) + diag(X), where G_L is G with its diagonal divided by
      L_ii and Φ keeps the lower triangle and halves the diagonal. This is
      2 Σ G_Σ Σ pulled back: dΣ = L (X + Xᵀ) Lᵀ.
    * "precision" (Σ⁻¹ = U Uᵀ): the same formula with U, and U⁻ᵀ U⁻¹ g_μ.
    * "diagonal" (s = log σ²): (σ² g_μ, 2 g_s).

    No (d²)×(d²) matrix and no inverse is formed: matmuls, plus a Cholesky factor of Σ
    for "covariance" and two triangular solves for the precision's mean. The map is
    linear, so the sign convention of the incoming gradient (optax minimises the
    negative log-likelihood) passes through. For the
    negative log-likelihood of one row y, with r = y − μ, the output is
    −(r, r rᵀ − Σ) pulled back: ``optax.sgd(a)`` after it takes the natural step
    μ ← μ + a r, Σ ← Σ + a (r rᵀ − Σ) (exactly so on "covariance"; on the other
    parameterisations to first order, see ``covariance_retraction``).

    Choosing the step: ``jaxgauss.schedules.robbins_monro(1/(n₀ + 1), 1.0, n₀ + 1)``
    gives a_t = 1/(t + n₀) at update t = 1, 2, …, and then

      μ_n = (n₀ μ₀ + Σₜ yₜ)/(n + n₀),      Σ_n = (n₀ Σ₀ + Σₜ rₜ rₜᵀ)/(n + n₀):

    the running moments with the initial Gaussian counted as n₀ extra rows (rₜ is
    taken against the running mean, which adds about Σ log(n)/n). The init's bias
    after n rows is n₀ (Σ₀ − Σ)/(n + n₀): n₀ is the number of rows the initial guess
    is worth. Take n₀ = 1 for an uninformed init (the offset 2 of
    ``robbins_monro(0.5, 1.0, 2.0)``), larger n₀ for a trusted prior (a previous fit on
    n₀ rows). An init far off the data's scale (Σ₀ ≫ Σ) leaves a bias n₀ Σ₀/n that only
    more data removes; n₀ < 1 shrinks it, but the first d iterates are then nearly
    singular (weight n₀/(t + n₀) on Σ₀ in the directions no row has spanned yet).

    Args:
      parameterization: "covariance", "cholesky", "precision" or "diagonal" (or a
        ``Parameterization`` with a ``fisher_inverse``).

    Returns:
      An ``optax.GradientTransformation`` with an empty state; its ``update`` needs
      ``params`` (the current ``Params``) and raises ``ValueError`` without them.

    Raises:
      ValueError: an unknown parameterisation.

    Example:
      >>> import jax.numpy as jnp, optax, jaxgauss as jg
      >>> opt = optax.chain(jg.fisher_preconditioner("covariance"), optax.sgd(0.5))
      >>> est = jg.gradient_ascent(opt, "covariance")
      >>> state = est.update(est.init(jg.Gaussian(jnp.zeros(1), jnp.eye(1))), jnp.array([[2.0]]))
      >>> est.estimate(state).mean.tolist(), est.estimate(state).cov.tolist()
      ([1.0], [[2.5]])
    """
    param = get_parameterization(parameterization)
    if param.fisher_inverse is None:
        raise ValueError(f"no closed-form Fisher information for parameterization {param.name!r}")

    def update_fn(updates, state, params=None):
        params = _require_params(params, "fisher_preconditioner")
        return param.fisher_inverse(params, Params(*updates)), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def covariance_retraction(
    parameterization: str | Parameterization,
) -> optax.GradientTransformation:
    """Apply a first-order update as a step in (μ, Σ) space, mapped back exactly.

    Place it last in the chain, after the scaling by the learning rate (so it works
    with any schedule and with traced learning rates). It pushes the update δθ forward
    to the tangent (δμ, δΣ) = J(θ) δθ of the parameterisation θ ↦ (μ, Σ) (a
    ``jax.jvp``), and returns the update that lands exactly on the parameters of
    (μ + δμ, Σ + δΣ):

      θ' = from_gaussian(to_gaussian(θ) + J(θ) δθ),      update = θ' − θ.

    This agrees with δθ to first order. After ``fisher_preconditioner`` and
    ``optax.sgd(a)`` on the negative log-likelihood of a batch of b rows it is
    Σ' = (1 − a) Σ + (a/b) Σᵢ rᵢ rᵢᵀ, which is positive definite for every a ∈ [0, 1):
    a row far out in the tails moves Σ linearly in r rᵀ. The first-order step instead
    moves a log-diagonal entry by a (z² − 1)/2 with z = L⁻¹ r, which for a row
    100 standard deviations out adds thousands to a logarithm and overflows.

    Where Σ + δΣ is not positive definite (a ≥ 1, or updates from other optimizers)
    the retraction does not exist and the update passes through unchanged. On
    "covariance" the map θ ↦ Σ is linear and the retraction is the identity (to
    rounding).

    Args:
      parameterization: "covariance", "cholesky", "precision" or "diagonal", or a
        ``Parameterization``.

    Returns:
      An ``optax.GradientTransformation`` with an empty state; its ``update`` needs
      ``params`` and raises ``ValueError`` without them.

    Example:
      >>> import jax.numpy as jnp, optax, jaxgauss as jg
      >>> p = "cholesky"
      >>> opt = optax.chain(jg.fisher_preconditioner(p), optax.sgd(0.5), jg.preconditioners.covariance_retraction(p))
      >>> est = jg.gradient_ascent(opt, p)
      >>> state = est.update(est.init(jg.Gaussian(jnp.zeros(1), jnp.eye(1))), jnp.array([[100.0]]))
      >>> round(float(est.estimate(state).cov[0, 0]), 1)   # ½·1 + ½·100²
      5000.5
    """
    param = get_parameterization(parameterization)

    def update_fn(updates, state, params=None):
        params = _require_params(params, "covariance_retraction")
        updates = Params(*updates)
        g, dg = jax.jvp(param.to_gaussian, (params,), (updates,))
        moved = Gaussian(g.mean + dg.mean, symmetric(g.cov + dg.cov))
        retracted = jax.tree_util.tree_map(jnp.subtract, param.from_gaussian(moved), params)
        # A non-positive-definite Σ + δΣ shows up as NaN in its Cholesky factor.
        ok = all_finite(retracted)
        out = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), retracted, updates)
        return out, state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)
