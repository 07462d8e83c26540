"""Fisher preconditioner and covariance retraction: the closed forms against a
brute-force Fisher matrix, the natural step's exact form, and statistical efficiency
of the preconditioned SGD with a_t = 1/(t + 1) on every parameterisation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxgauss as jg
from jaxgauss.engine import init_carry, scan_batches
from jaxgauss.schedules import robbins_monro

NAMES = ["covariance", "cholesky", "precision", "diagonal"]
TRIANGULAR = ["cholesky", "precision"]

# a_t = 1/(t + 1): the running moments with the init counted as one row (n₀ = 1).
STEP = robbins_monro(0.5, power=1.0, offset=2.0)


def _natural_sgd(name, learning_rate=STEP, retract=True):
    parts = [jg.fisher_preconditioner(name), optax.sgd(learning_rate)]
    if retract:
        parts.append(jg.preconditioners.covariance_retraction(name))
    return jg.gradient_ascent(optax.chain(*parts), name)


def _run_rows(estimator, init, ys):
    """Single-row updates of ``estimator`` from ``init`` over ``ys`` (n, d); the state."""
    state, _ = jax.lax.scan(
        lambda s, y: (estimator.update(s, y[None]), None), estimator.init(init), ys
    )
    return state


# --- the closed forms against a brute-force Fisher matrix ----------------------------


def _free_coordinates(name, d):
    """(flatten, unflatten) between ``Params`` and the free coordinates θ: the mean,
    then the lower triangle (mirrored into the upper one for "covariance"), or the d
    log-variances for "diagonal"."""
    rows, cols = np.tril_indices(d)

    def flatten(p):
        return jnp.concatenate([p.mean, p.matrix if name == "diagonal" else p.matrix[rows, cols]])

    def unflatten(theta):
        mean, rest = theta[:d], theta[d:]
        if name == "diagonal":
            return jg.parameterizations.Params(mean, rest)
        matrix = jnp.zeros((d, d), theta.dtype).at[rows, cols].set(rest)
        if name == "covariance":
            matrix = matrix.at[cols, rows].set(rest)
        return jg.parameterizations.Params(mean, matrix)

    return flatten, unflatten


# d = 2 has every kind of coordinate (a mean, diagonal and off-diagonal entries); d = 1
# and 3 run with -m slow.
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "d", [pytest.param(1, marks=pytest.mark.slow), 2, pytest.param(3, marks=pytest.mark.slow)]
)
def test_matches_brute_force_fisher(name, d):
    p = jg.parameterizations.get_parameterization(name)
    model = jg.streams.random_truth(jax.random.key(d), d, 100.0, dtype=jnp.float64)
    if name == "diagonal":
        model = jg.Gaussian(model.mean, jnp.diag(jnp.diagonal(model.cov)))
    # Data from another Gaussian, so that the gradient is far from zero in every coordinate.
    other = jg.streams.random_truth(jax.random.key(10 + d), d, 10.0, dtype=jnp.float64)
    ys = jg.streams.sample(jax.random.key(20 + d), other, 7)
    params = p.from_gaussian(model)
    if name in TRIANGULAR:  # the unused strict upper triangle must not matter
        params = params._replace(matrix=params.matrix + jnp.triu(jnp.full((d, d), 7.0), 1))

    def loss(q):
        return -jnp.mean(p.log_likelihood(q, ys))

    flatten, unflatten = _free_coordinates(name, d)

    @jax.jit  # one program per case, not each operation's own
    def both(params):
        theta = flatten(params)
        grad_theta = jax.grad(lambda t: loss(unflatten(t)))(theta)
        # The Fisher matrix is the Hessian of θ' ↦ KL(p_θ ‖ p_θ') at θ' = θ (exact).
        fisher = jax.hessian(
            lambda t: jg.kl_divergence(p.to_gaussian(unflatten(theta)), p.to_gaussian(unflatten(t)))
        )(theta)
        expected = unflatten(jnp.linalg.solve(fisher, grad_theta))
        transform = jg.fisher_preconditioner(name)
        natural, _ = transform.update(jax.grad(loss)(params), transform.init(params), params)
        return natural, expected

    natural, expected = both(params)
    # float64; the Fisher matrix of a condition-100 Gaussian is solved densely (~1e-13).
    np.testing.assert_allclose(natural.mean, expected.mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(natural.matrix, expected.matrix, rtol=1e-9, atol=1e-12)


def test_covariance_step_is_the_natural_moment_step():
    a = 0.3
    est = _natural_sgd("covariance", a, retract=False)
    g0 = jg.streams.random_truth(jax.random.key(0), 3, 10.0, dtype=jnp.float64)
    y = jnp.array([1.5, -2.0, 0.25])
    g1 = est.estimate(est.update(est.init(g0), y[None]))
    r = y - g0.mean
    # Two matmuls and a Cholesky of a condition-10 matrix away from the formula: rounding.
    np.testing.assert_allclose(g1.mean, g0.mean + a * r, rtol=1e-13)
    np.testing.assert_allclose(g1.cov, g0.cov + a * (jnp.outer(r, r) - g0.cov), rtol=1e-12)
    np.testing.assert_array_equal(g1.cov, g1.cov.T)


@pytest.mark.parametrize("name", ["cholesky", "precision", "diagonal"])
def test_retraction_reproduces_the_covariance_iterates(name):
    d = 4
    truth = jg.streams.random_truth(jax.random.key(1), d, 10.0, dtype=jnp.float64)
    ys = jg.streams.sample(jax.random.key(2), truth, 300)
    init = jg.Gaussian(jnp.zeros(d), 2.0 * jnp.eye(d))
    cov_est = _natural_sgd("covariance", retract=False)
    reference = cov_est.estimate(_run_rows(cov_est, init, ys))
    est = _natural_sgd(name)
    got = est.estimate(_run_rows(est, init, ys))
    if name == "diagonal":  # the recursion Σ_ii ← (1 − a) Σ_ii + a r_i² sees no off-diagonal
        reference = jg.Gaussian(reference.mean, jnp.diag(jnp.diagonal(reference.cov)))
    # 300 steps of well-conditioned (κ ≤ 20) factorisations: rounding accumulates to ~1e-13.
    np.testing.assert_allclose(got.mean, reference.mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got.cov, reference.cov, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", TRIANGULAR)
def test_retraction_prevents_the_log_factor_overshoot(name):
    # The case: Σ₀ = 0.1 I, a truth of condition 100, a first step of ½.
    d = 5
    truth = jg.streams.random_truth(jax.random.key(3), d, 100.0, dtype=jnp.float64)
    y = jg.streams.sample(jax.random.key(4), truth, 1)
    g0 = jg.Gaussian(jnp.zeros(d), 0.1 * jnp.eye(d))
    est = _natural_sgd(name)
    g1 = est.estimate(jax.jit(est.update)(est.init(g0), y))  # one program, not each op's
    r = y[0]
    np.testing.assert_allclose(g1.mean, 0.5 * r, rtol=1e-12)
    # One Cholesky of a condition-~10⁴ matrix (and a second one for "precision"): ~1e-12.
    np.testing.assert_allclose(g1.cov, 0.5 * g0.cov + 0.5 * jnp.outer(r, r), rtol=1e-9, atol=1e-12)
    # Without the retraction the step moves log-diagonal entries by ±a (z_i² − 1)/2, with
    # z = L⁻¹ r of order √(100/0.1) (here by up to 38; hundreds for rows further out):
    # one step scales Σ by up to e^(2·38).
    plain = _natural_sgd(name, retract=False)
    overshoot = plain.estimate(jax.jit(plain.update)(plain.init(g0), y))
    assert float(jnp.max(jnp.abs(overshoot.cov))) > 1e10 * float(jnp.max(jnp.abs(g1.cov)))


def test_retraction_passes_the_update_through_where_it_does_not_exist():
    # a = 1.5: Σ' = −½ Σ + 1.5 r rᵀ is indefinite for d = 2, so no parameters represent it.
    name, a = "cholesky", 1.5
    params = jg.parameterizations.get_parameterization(name).from_gaussian(
        jg.Gaussian(jnp.zeros(2), jnp.eye(2))
    )
    grads = jax.grad(
        lambda q: (
            -jg.parameterizations.get_parameterization(name).log_likelihood(
                q, jnp.array([1.0, 0.0])
            )
        )
    )(params)
    first_order = optax.chain(jg.fisher_preconditioner(name), optax.sgd(a))
    expected, _ = first_order.update(grads, first_order.init(params), params)
    retraction = jg.preconditioners.covariance_retraction(name)
    got, _ = retraction.update(expected, retraction.init(params), params)
    for x, e in zip(got, expected):
        np.testing.assert_array_equal(x, e)


@pytest.mark.parametrize(
    "make", [jg.fisher_preconditioner, jg.preconditioners.covariance_retraction]
)
def test_needs_params(make):
    params = jg.parameterizations.Params(jnp.zeros(2), jnp.zeros((2, 2)))
    transform = make("cholesky")
    with pytest.raises(ValueError, match="needs the current parameters"):
        transform.update(params, transform.init(params))


def test_unknown_parameterization():
    with pytest.raises(ValueError, match="unknown parameterization"):
        jg.fisher_preconditioner("eigen")
    # a parameterisation record without a closed-form Fisher inverse
    custom = jg.parameterizations.get_parameterization("cholesky")._replace(
        name="mine", fisher_inverse=None
    )
    with pytest.raises(ValueError, match="no closed-form Fisher information"):
        jg.fisher_preconditioner(custom)


def test_traced_learning_rate_under_vmap_without_recompiling():
    name, d = "precision", 3
    ys = jg.streams.sample(jax.random.key(5), jg.Gaussian(jnp.ones(d), jnp.eye(d)), 50)
    init = jg.Gaussian(jnp.zeros(d), jnp.eye(d))

    def run(lr):
        est = _natural_sgd(name, lr)
        return est.estimate(_run_rows(est, init, ys))

    lrs = jnp.array([0.05, 0.2, 0.5])
    batched = jax.jit(jax.vmap(run))(lrs)
    # against a Python float rate (a constant in its program), then traced rates alone
    np.testing.assert_allclose(batched.cov[0], run(float(lrs[0])).cov, rtol=1e-12)
    jitted = jax.jit(run)
    for i in range(3):
        np.testing.assert_allclose(batched.cov[i], jitted(lrs[i]).cov, rtol=1e-12)
    assert jitted._cache_size() == 1  # one program serves every rate


# --- statistical efficiency ------------------------------------------------------------

N_ROWS, N_SEEDS = 10_000, 16


def _stream_runner(estimator, d, n=N_ROWS, condition=1e4, truth=None):
    """One compiled call per init scale: N_SEEDS truths (``random_truth``, mean N(0, I),
    unless ``truth`` is given) and streams, ``estimator`` from N(0, scale·I) through
    the guarded scan. Returns scale -> (truths, estimates, diverged_at, MLEs).

    The seeds are vmapped and the scales looped over: batching 64–80 such scans
    ("precision", d = 20) hung XLA's CPU runtime (jaxlib 0.10.2), 16 never did.
    """
    keys = jax.random.split(jax.random.key(d), N_SEEDS)

    def one_seed(key, scale):
        k_truth, k_data = jax.random.split(key)
        g = jg.streams.random_truth(k_truth, d, condition, jnp.float64) if truth is None else truth
        ys = jg.streams.sample(k_data, g, n)
        init = jg.Gaussian(jnp.zeros(d), scale * jnp.eye(d))
        carry, _ = scan_batches(estimator, init_carry(estimator.init(init)), ys[:, None, :])
        return g, estimator.estimate(carry.state), carry.diverged_at, jg.mle(ys)

    run = jax.jit(jax.vmap(one_seed, in_axes=(0, None)))
    return lambda scale: run(keys, jnp.float64(scale))


def _efficiency(runner, scale):
    """mean KL(truth ‖ estimate) / mean KL(truth ‖ batch MLE) over the seeds, and the
    diverged_at flags."""
    truth, est, diverged_at, mle = runner(scale)
    return float(
        jnp.mean(jg.kl_divergence(truth, est)) / jnp.mean(jg.kl_divergence(truth, mle))
    ), diverged_at


# The estimate is the running mean and covariance with the init counted as one row:
# against the MLE it differs by the init's weight 1/(n + 1) (Σ₀/n ≤ 10/10⁴ of the
# smallest eigenvalue 1 here) and by residuals taken against the running mean (bias
# Σ log(n)/n), both far below the MLE's own KL ≈ d(d + 3)/(4n); and both estimators see
# the same stream, so the ratio is 1 ± 0.01 (measured 0.998–1.004). 1.1 (resp. 1.2 as
# the issue asks for the log-factor ones) leaves a wide margin and still fails on a
# step-size or bias bug (a wrong a_t costs a factor, a lost update leaves a KL of O(1)).
@pytest.mark.slow
@pytest.mark.parametrize("d", [1, 5, 20])
def test_covariance_efficiency(d):
    runner = _stream_runner(_natural_sgd("covariance", retract=False), d)
    # Every step is a convex combination: SPD from any init in exact arithmetic. From 1e-3
    # at d = 20 the first iterates have κ(Σ) ~ 1e8, where applying 2 Σ G Σ by matmuls
    # with Σ (instead of through its Cholesky factor) left the cone on rounding alone.
    for scale in (1e-3, 1.0):
        eff, diverged_at = _efficiency(runner, scale)
        assert np.all(diverged_at == -1), scale
        assert eff <= 1.1, (scale, eff)


@pytest.mark.slow
@pytest.mark.parametrize("name", TRIANGULAR)
@pytest.mark.parametrize("d", [1, 5, 20])
def test_log_factor_efficiency_with_retraction(name, d):
    runner = _stream_runner(_natural_sgd(name), d)
    for scale in (0.1, 10.0):
        eff, diverged_at = _efficiency(runner, scale)
        assert np.all(diverged_at == -1), scale
        assert eff <= 1.2, (scale, eff)


@pytest.mark.slow
def test_question_setup_converges():
    # 1-D N(0, 1) from Σ₀ = 0.001 and 100, n = 10⁵ rows. Exactly
    # (n + 1) Σ_n = Σ₀ + Σₜ rₜ² with E rₜ² = 1 + 1/t, so Σ_n − 1 = (Σ₀ − 1 + H_n)/(n + 1)
    # + noise of sd √(2/n) (4.5e-3). The band: that bias plus 5 sd per seed (a false
    # alarm has probability ~2e-5 over the 32 runs).
    n = 100_000
    runner = _stream_runner(
        _natural_sgd("covariance", retract=False),
        1,
        n=n,
        truth=jg.Gaussian(jnp.zeros(1), jnp.eye(1)),
    )
    for cov0 in (0.001, 100.0):
        _, est, diverged_at, _ = runner(cov0)
        assert np.all(diverged_at == -1)
        band = (abs(cov0 - 1.0) + np.log(n) + 1.0) / (n + 1) + 5.0 * np.sqrt(2.0 / n)
        np.testing.assert_array_less(np.abs(np.asarray(est.cov[:, 0, 0]) - 1.0), band)


# --- scale invariance, measured with sweep (issue: "the best learning rate moves") ----------


@pytest.mark.slow
def test_fisher_best_step_is_scale_free_while_plain_sgds_moves():
    """Data scaled by √s (Σ·s) with the initial guess scaled alike: the natural gradient
    is equivariant, so the Fisher-preconditioned chain sees the same problem at every
    scale and its best c in a_t = c/(t + 1) (``make_method("fisher-sgd")``) is the same
    grid value, within 1.1 of the MLE (asymptotically c²/(2c − 1) = 1 at c = 1). The
    Euclidean gradient on Σ scales like 1/s, so plain SGD's best constant step moves
    with s² (from Σ₀ = 0.001 the question's method jumped to Σ ≈ 500 for the same
    reason)."""
    base = jg.streams.random_truth(jax.random.key(7), 2, 10.0, dtype=jnp.float64)
    fisher = jg.methods.make_method("fisher-sgd", "covariance")
    plain = jg.methods.make_method("sgd", "covariance")
    c_grid = np.array([0.6, 0.8, 1.0, 1.25, 1.6])
    lr_grid = np.logspace(-9, 5, 15)
    best_c, best_lr = {}, {}
    for s in (1e-3, 1.0, 1e3):
        truth = jg.Gaussian(base.mean * np.sqrt(s), base.cov * s)
        init = jg.Gaussian(jnp.zeros(2), s * jnp.eye(2))
        kw = dict(truth=truth, init=init, n_steps=4000, seeds=16, key=jax.random.key(3))
        res = jg.sweep(fisher, c_grid, **kw)
        best_c[s] = res.best()
        median = res.stats()[0][res.best_index()]
        print(f"scale {s:g}: fisher-sgd best c = {best_c[s]}, median efficiency {median:.3f}")
        assert median <= 1.1
        assert int(np.sum(np.asarray(res.diverged_at) >= 0)) == 0
        best_lr[s] = jg.sweep(plain, lr_grid, **kw).best()
        print(f"scale {s:g}: plain sgd best learning rate = {best_lr[s]:.0e}")
    assert best_c[1e-3] == best_c[1.0] == best_c[1e3]
    assert best_lr[1e3] / best_lr[1e-3] >= 1e4  # orders of magnitude (theory: s², 10¹²)
