"""Distances between Gaussians against their peers' own formulas, ported to NumPy:
pytorch-fid's ``calculate_frechet_distance`` (scipy's ``sqrtm`` of Σ₁Σ₂), POT's
Bures–Wasserstein distance (an eigh square root with eigenvalues clipped at 0), and
the closed forms of the Bhattacharyya and Hellinger distances (checked against a
numerical integral in one dimension)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import scipy.stats

import jaxgauss as jg


def _spd(rng, d, k=None):
    """A well-conditioned SPD matrix: the scatter of k = 4d standard rows, divided by k
    (condition number about (1 + ½)²/(1 − ½)² = 9 by Marchenko–Pastur)."""
    k = 4 * d if k is None else k
    a = rng.normal(size=(d, k))
    return a @ a.T / k


def pytorch_fid(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's ``calculate_frechet_distance`` (src/pytorch_fid/fid_score.py),
    as it is written there, NumPy and scipy only."""
    diff = mu1 - mu2
    covmean, _ = scipy.linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def _sqrtm_psd(a):
    """POT's ``ot.utils.dots``-style PSD square root: eigh, eigenvalues clipped at 0."""
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.maximum(w, 0))) @ v.T


def pot_bures_wasserstein_squared(m1, c1, m2, c2):
    """POT's ``ot.gaussian.bures_wasserstein_distance`` squared:
    ‖m1 − m2‖² + tr C1 + tr C2 − 2 tr (C1^½ C2 C1^½)^½ with eigh square roots."""
    root = _sqrtm_psd(c1)
    bures = np.trace(c1) + np.trace(c2) - 2 * np.trace(_sqrtm_psd(root @ c2 @ root))
    return np.sum((m1 - m2) ** 2) + max(bures, 0.0)


def bhattacharyya_reference(m1, c1, m2, c2):
    c = (c1 + c2) / 2
    delta = m1 - m2
    logdet = np.linalg.slogdet(c)[1] - 0.5 * (np.linalg.slogdet(c1)[1] + np.linalg.slogdet(c2)[1])
    return delta @ np.linalg.solve(c, delta) / 8 + logdet / 2


def _fid_tolerance(ref, c1, c2):
    """The issue's bound: 1e-8 relative or 1e-11 (tr Σ₁ + tr Σ₂), whichever is larger."""
    return max(1e-8 * abs(ref), 1e-11 * (np.trace(c1) + np.trace(c2)))


@pytest.mark.parametrize("d", [64, pytest.param(2048, marks=pytest.mark.slow)])
def test_frechet_equals_pytorch_fid(d):
    rng = np.random.default_rng(d)
    c1, c2 = _spd(rng, d), _spd(rng, d)
    m1, m2 = rng.normal(size=d), 0.1 * rng.normal(size=d)
    ref = pytorch_fid(m1, c1, m2, c2)
    ours = float(jg.frechet_distance(jg.Gaussian(m1, c1), jg.Gaussian(m2, c2)))
    assert abs(ours - ref) <= _fid_tolerance(ref, c1, c2), (ours, ref)


@pytest.mark.slow
@pytest.mark.parametrize("n", [5, 40])
def test_rank_deficient_is_bures_wasserstein(n):
    """n < d rows (FID with few images): both covariances singular, where scipy's sqrtm
    of the product returns complex parts; POT's clipped eigh formula is the reference.
    Rounding: the clipped eigenvalues are 0 ± ε‖Σ‖ on each side, whose square roots
    enter T as √(ε)‖Σ‖^½ per eigenvalue in the reference's nested square root, so the
    two agree to about d √ε ‖Σ‖ = 64 · 1.5e-8 · ‖Σ‖ ≈ 1e-6 ‖Σ‖; we allow 1e-5 tr."""
    rng = np.random.default_rng(n)
    d = 64
    x1, x2 = rng.normal(size=(n, d)), rng.normal(size=(n, d)) + 0.3
    g1, g2 = jg.mle(jnp.asarray(x1)), jg.mle(jnp.asarray(x2))
    c1, c2 = np.asarray(g1.cov), np.asarray(g2.cov)
    ref = pot_bures_wasserstein_squared(np.asarray(g1.mean), c1, np.asarray(g2.mean), c2)
    ours = float(jg.frechet_distance(g1, g2))
    assert abs(ours - ref) <= 1e-5 * (np.trace(c1) + np.trace(c2)), (ours, ref)
    # and it is the distance of the two rows' sets as SPD limits: ε I added to both
    eps = 1e-9
    lifted = float(
        jg.frechet_distance(
            jg.Gaussian(g1.mean, g1.cov + eps * jnp.eye(d)),
            jg.Gaussian(g2.mean, g2.cov + eps * jnp.eye(d)),
        )
    )
    assert abs(lifted - ours) <= 1e-5 * (np.trace(c1) + np.trace(c2))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_equal_gaussians_give_zero_up_to_rounding(dtype):
    """In [0, 1e-6 tr Σ]: the singular values of F₁ᵀF₁ = diag(s) carry the eigenvalues'
    own rounding, d ε ‖Σ‖ in all ≈ 64 · 1.2e-7 · 1.5 tr Σ/64 ≈ 2e-7 tr Σ in float32."""
    rng = np.random.default_rng(1)
    c = _spd(rng, 64)
    g = jg.Gaussian(jnp.asarray(rng.normal(size=64) * 100, dtype), jnp.asarray(c, dtype))
    value = jg.frechet_distance(g, g)
    assert value.dtype == dtype
    value = float(value)
    assert 0 <= value <= 1e-6 * np.trace(c), value


@pytest.mark.slow
def test_never_negative_and_real_where_sqrtm_fails():
    """Nearly equal singular covariances: scipy's sqrtm of the product gives complex
    parts and pytorch-fid's formula a negative number; ours stays in [0, tiny]."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20, 64))
    c = np.cov(x.T, bias=True)
    m = x.mean(0)
    ours = float(jg.frechet_distance(jg.Gaussian(m, c), jg.Gaussian(m, c + 1e-13 * c)))
    assert 0 <= ours <= 1e-6 * np.trace(c)


def _w2(m1, c1, m2, c2):
    return jg.frechet_distance(jg.Gaussian(m1, c1), jg.Gaussian(m2, c2))


def test_gradient_is_finite_at_repeated_eigenvalues():
    """Σ₁ = Σ₂ = I: a plain eigh square root's derivative divides 0 by 0 (NaN); the
    closed form (module docstring) is finite, and at Σ₁ = 2I, Σ₂ = I it is the exact
    d/dΣ₂ [tr Σ₂ − 2 tr (2Σ₂)^½] = (1 − √2) I (float64, to rounding)."""
    d = 4
    eye = jnp.eye(d)
    grads = jax.jit(jax.grad(_w2, argnums=(0, 1, 2, 3)))(jnp.zeros(d), eye, jnp.ones(d), eye)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)
    g2 = jax.jit(jax.grad(_w2, argnums=3))(jnp.zeros(d), 2 * eye, jnp.zeros(d), eye)
    np.testing.assert_allclose(g2, (1 - np.sqrt(2)) * np.eye(d), atol=1e-12)


@pytest.mark.slow
def test_gradient_matches_central_differences():
    """Step 1e-6 in float64: truncation O(h²) and rounding O(ε/h) ≈ 1e-10, so 1e-7
    relative."""
    d, w2 = 4, _w2
    rng = np.random.default_rng(4)
    c1, c2 = _spd(rng, d), _spd(rng, d)
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    e = rng.normal(size=(d, d))
    e = e + e.T
    h = 1e-6
    for arg, grad in enumerate(jax.grad(w2, argnums=(1, 3))(m1, c1, m2, c2)):
        args = [m1, c1, m2, c2]
        plus, minus = list(args), list(args)
        plus[2 * arg + 1] = args[2 * arg + 1] + h * e
        minus[2 * arg + 1] = args[2 * arg + 1] - h * e
        fd = (float(w2(*plus)) - float(w2(*minus))) / (2 * h)
        assert abs(fd - float(jnp.sum(grad * e))) <= 1e-7 * abs(fd), (fd, float(jnp.sum(grad * e)))


@pytest.mark.parametrize(
    "fn",
    [
        pytest.param(jg.frechet_distance, marks=pytest.mark.slow),
        pytest.param(jg.bhattacharyya_distance, marks=pytest.mark.slow),
        pytest.param(jg.hellinger_distance, marks=pytest.mark.slow),
    ],
)
def test_batched_under_jit_and_vmap(fn):
    """Leading axes broadcast (3 Gaussians against one), equal to one at a time, under
    jit and vmap alike."""
    rng = np.random.default_rng(5)
    d = 5
    covs = np.stack([_spd(rng, d) for _ in range(3)])
    means = rng.normal(size=(3, d))
    g1 = jg.Gaussian(jnp.asarray(means), jnp.asarray(covs))
    g2 = jg.Gaussian(jnp.zeros(d), jnp.asarray(_spd(rng, d)))
    batched = jax.jit(fn)(g1, g2)
    mapped = jax.jit(jax.vmap(fn, in_axes=(0, None)))(g1, g2)
    one = jax.jit(fn)
    one = np.array([float(one(jg.Gaussian(g1.mean[k], g1.cov[k]), g2)) for k in range(3)])
    assert batched.shape == (3,)
    np.testing.assert_allclose(batched, one, rtol=1e-12)
    np.testing.assert_allclose(mapped, one, rtol=1e-12)


@pytest.mark.slow
def test_bhattacharyya_and_hellinger_against_references():
    rng = np.random.default_rng(6)
    d = 6
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    c1, c2 = _spd(rng, d), _spd(rng, d)
    g1, g2 = jg.Gaussian(m1, c1), jg.Gaussian(m2, c2)
    ref = bhattacharyya_reference(m1, c1, m2, c2)
    np.testing.assert_allclose(float(jg.bhattacharyya_distance(g1, g2)), ref, rtol=1e-12)
    np.testing.assert_allclose(
        float(jg.hellinger_distance(g1, g2)), np.sqrt(1 - np.exp(-ref)), rtol=1e-12
    )
    assert float(jg.bhattacharyya_distance(g1, g1)) == pytest.approx(0, abs=1e-14)


@pytest.mark.slow
def test_bhattacharyya_against_a_numerical_integral():
    # One dimension: BC = ∫ √(p q) by quadrature (its own error estimate is below 1e-10).
    p, q = scipy.stats.norm(0.3, 1.2), scipy.stats.norm(-0.5, 0.7)
    bc = scipy.integrate.quad(lambda x: np.sqrt(p.pdf(x) * q.pdf(x)), -np.inf, np.inf)[0]
    a = jg.Gaussian(jnp.array([0.3]), jnp.array([[1.44]]))
    b = jg.Gaussian(jnp.array([-0.5]), jnp.array([[0.49]]))
    np.testing.assert_allclose(float(jg.bhattacharyya_distance(a, b)), -np.log(bc), rtol=1e-9)
    np.testing.assert_allclose(float(jg.hellinger_distance(a, b)), np.sqrt(1 - bc), rtol=1e-9)


@pytest.mark.slow
def test_float32_inputs_give_float32():
    g = jg.Gaussian(jnp.zeros(2, jnp.float32), jnp.eye(2, dtype=jnp.float32))
    for fn in (jg.frechet_distance, jg.bhattacharyya_distance, jg.hellinger_distance):
        assert fn(g, g).dtype == jnp.float32


@pytest.mark.slow
def test_bad_input_names_the_argument():
    g = jg.Gaussian(jnp.zeros(2), jnp.eye(2))
    with pytest.raises(ValueError, match="g2 must be a jaxgauss Gaussian"):
        jg.frechet_distance(g, (jnp.zeros(2), jnp.eye(2)))
    with pytest.raises(ValueError, match="dimensions 2 and 3"):
        jg.bhattacharyya_distance(g, jg.Gaussian(jnp.zeros(3), jnp.eye(3)))
    with pytest.raises(ValueError, match="g1.cov has shape"):
        jg.hellinger_distance(jg.Gaussian(jnp.zeros(2), jnp.eye(3)), g)
    with pytest.raises(ValueError, match="do not broadcast"):
        jg.frechet_distance(
            jg.Gaussian(jnp.zeros((3, 2)), jnp.broadcast_to(jnp.eye(2), (3, 2, 2))),
            jg.Gaussian(jnp.zeros((4, 2)), jnp.broadcast_to(jnp.eye(2), (4, 2, 2))),
        )
    with pytest.raises(ValueError, match="g2.cov is not positive semi-definite"):
        jg.frechet_distance(g, jg.Gaussian(jnp.zeros(2), jnp.diag(jnp.array([1.0, -1e-3]))))
    with pytest.raises(ValueError, match="g1.cov is not positive definite"):
        jg.bhattacharyya_distance(jg.Gaussian(jnp.zeros(2), jnp.diag(jnp.array([1.0, 0.0]))), g)
