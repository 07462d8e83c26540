"""The running normaliser against its peers' own test cases, ported: acme's
``running_statistics_test.py`` (nested trees, one batch axis, std clipping, weights,
normalize's max_abs_value, integer leaves, a pmap'ed update, denormalize) and
stable-baselines3's ``RunningMeanStd`` test (three batches merged with epsilon=0,
equal to the moments of their concatenation); then float32 accuracy at an offset
of 10⁶, an exact count past 3 × 10⁹ rows without x64, and bad input."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgauss as jg
from benchmarks.normalizer import RunningMeanStd  # the port the benchmark races

NORM = jg.normalizer()
update = jax.jit(NORM.update)


def acme_close(actual, desired):
    """acme's assert_allclose: atol = rtol = 1e-5 (its tests run in float32)."""
    np.testing.assert_allclose(actual, desired, atol=1e-5, rtol=1e-5)


def _mean(state):
    return jax.tree.map(lambda o, m: o + m, state.origin, state.mean)


def test_acme_normalize_and_denormalize():
    """acme's test_normalize (4 updates of (5, 2, 5)) and test_denormalize."""
    state = NORM.init(jnp.zeros(5, jnp.float32))
    x = jnp.arange(200, dtype=jnp.float32).reshape(20, 2, 5)
    for part in jnp.split(x, 4, axis=0):
        state = update(state, part)
    normalized = NORM.normalize(state, x)
    acme_close(jnp.mean(normalized), 0.0)
    acme_close(jnp.std(normalized), 1.0)
    acme_close(NORM.denormalize(state, normalized), x)
    assert NORM.count(state) == 40


@pytest.mark.slow
def test_acme_init_one_batch_dim_and_clip():
    """acme's test_init_normalize, test_one_batch_dim and test_clip (std of the
    clipped normalised arange(5) is √0.6)."""
    state = NORM.init(jnp.zeros(5, jnp.float32))
    x = jnp.arange(200, dtype=jnp.float32).reshape(20, 2, 5)
    acme_close(NORM.normalize(state, x), x)
    x = jnp.arange(10, dtype=jnp.float32).reshape(2, 5)
    normalized = NORM.normalize(update(state, x), x)
    acme_close(jnp.mean(normalized, axis=0), jnp.zeros(5))
    acme_close(jnp.std(normalized, axis=0), jnp.ones(5))
    state = NORM.init(jnp.zeros((), jnp.float32))
    x = jnp.arange(5, dtype=jnp.float32)
    normalized = NORM.normalize(update(state, x), x, clip=1.0)
    acme_close(jnp.mean(normalized), 0.0)
    acme_close(jnp.std(normalized), math.sqrt(0.6))


@pytest.mark.slow
def test_acme_nested_integer_and_weights():
    """acme's test_nested_normalize, test_int_not_normalized and test_weights."""
    state = NORM.init({"a": jnp.zeros(5, jnp.float32), "b": jnp.zeros(2, jnp.float32)})
    x1 = {
        "a": jnp.arange(20, dtype=jnp.float32).reshape(2, 2, 5),
        "b": jnp.arange(8, dtype=jnp.float32).reshape(2, 2, 2),
    }
    x2 = jax.tree.map(lambda v, k: v + k, x1, {"a": 20.0, "b": 8.0})
    x3 = {
        "a": jnp.arange(40, dtype=jnp.float32).reshape(4, 2, 5),
        "b": jnp.arange(16, dtype=jnp.float32).reshape(4, 2, 2),
    }
    for batch in (x1, x2, x3):
        state = update(state, batch)
    normalized = NORM.normalize(state, x3)
    for leaf in jax.tree.leaves(normalized):
        acme_close(jnp.mean(leaf, axis=(0, 1)), jnp.zeros(leaf.shape[-1]))
        acme_close(jnp.std(leaf, axis=(0, 1)), jnp.ones(leaf.shape[-1]))
    ints = NORM.init(jnp.zeros((), jnp.int32))
    x = jnp.arange(5, dtype=jnp.int32)
    np.testing.assert_array_equal(NORM.normalize(NORM.update(ints, x), x), x)
    state = NORM.init(jnp.zeros((), jnp.float32))
    x = jnp.arange(5, dtype=jnp.float32)
    y = 2 * x + 5
    z = jnp.concatenate([x, y])
    weights = jnp.concatenate([jnp.ones(5), 2 * jnp.ones(5)])
    state = NORM.update(state, z, weights=weights)
    acme_close(_mean(state), (jnp.mean(x) + 2 * jnp.mean(y)) / 3)
    normalized = NORM.normalize(state, jnp.concatenate([x, y, y]))
    assert abs(float(jnp.mean(normalized))) < 1e-6
    assert abs(float(jnp.std(normalized)) - 1) < 1e-6
    assert NORM.count(state) == 15.0  # the total weight, a float


@pytest.mark.slow
def test_named_axis_update_equals_one_update_of_all_rows():
    """acme's test_pmap_update_nested, as a named vmap over 4 'devices' (psum is the
    same collective): each device's 3 rows, updated twice, equal one update of the 12
    rows twice (float64, to rounding)."""
    devices = 4
    x = {
        "a": jnp.arange(15.0 * devices).reshape(devices, 3, 5) ** 1.5,
        "b": jnp.arange(6.0 * devices).reshape(devices, 3, 2),
    }
    state = NORM.init({"a": jnp.zeros(5), "b": jnp.zeros(2)})
    step = jax.vmap(functools.partial(NORM.update, axis_name="i"), (None, 0), axis_name="i")
    sharded = step(state, x)
    sharded = jax.vmap(functools.partial(NORM.update, axis_name="i"), (0, 0), axis_name="i")(
        sharded, x
    )
    flat = jax.tree.map(lambda v: v.reshape(-1, v.shape[-1]), x)
    one = NORM.update(NORM.update(state, flat), flat)
    # (the origins differ: the first row, or the devices' first rows averaged)
    for got, want in ((_mean(sharded), _mean(one)), (sharded.var, one.var)):
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(g[0], w, rtol=1e-12)
            np.testing.assert_array_equal(g[0], g[3])  # every device holds the same state
    assert NORM.count(jax.tree.map(lambda v: v[0], sharded)) == 24


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(), (2,)])
def test_stable_baselines3_running_mean_std(shape):
    """stable-baselines3's test_runningmeanstd: batches of 3, 4 and 5 rows merged with
    epsilon=0 equal the concatenation's mean and variance (np.allclose there; float64
    here, to 1e-12), and so does the ported RunningMeanStd."""
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(n, *shape)) for n in (3, 4, 5)]
    rms = RunningMeanStd(epsilon=0.0, shape=shape)
    state = NORM.init(jnp.zeros(shape))
    for part in parts:
        rms.update(part)
        state = NORM.update(state, jnp.asarray(part))
    x = np.concatenate(parts)
    np.testing.assert_allclose(_mean(state), x.mean(0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(state.var, x.var(0), rtol=1e-12)
    np.testing.assert_allclose(state.var, rms.var, rtol=1e-12)


@pytest.mark.slow
def test_float32_variance_at_an_offset_of_a_million():
    """float32 rows 10⁶ + N(0, 1): the variance within 1e-4 relative of the float64
    variance of the same float32 values (their spacing at 10⁶ is 0.0625, so the data
    themselves are coarse; sums of x and x² would keep nothing: x² ≈ 10¹² has a float32
    spacing of 6.5 × 10⁴). 16 batches of 256 rows, 100 features."""
    rng = np.random.default_rng(1)
    x = (1e6 + rng.normal(size=(4096, 100))).astype(np.float32)
    state = NORM.init(jnp.zeros(100, jnp.float32))
    for part in np.split(x, 16):
        state = update(state, jnp.asarray(part))
    ref = x.astype(np.float64).var(0)
    assert state.var.dtype == jnp.float32
    np.testing.assert_allclose(state.var, ref, rtol=1e-4)


def test_weights_rest_rows_and_float16_leaves():
    """37 rows (two 16-row scan blocks and a rest of 5): integer weights equal the
    rows repeated (float32, float32's rtol), and a float16 leaf, summed in float32,
    holds the float64 moments of its values to a few float16 roundings (the state is
    float16: the sums' cast, the division and the merge each round by up to 2⁻¹¹)."""
    rng = np.random.default_rng(3)
    x = (100 + 3 * rng.normal(size=(37, 4))).astype(np.float32)
    k = rng.integers(0, 4, size=37)
    state = update(NORM.init(jnp.zeros(4)), jnp.asarray(x), jnp.asarray(k, jnp.float32))
    rows = np.repeat(x, k, axis=0).astype(np.float64)
    np.testing.assert_allclose(_mean(state), rows.mean(0), rtol=1e-6)
    np.testing.assert_allclose(state.var, rows.var(0), rtol=1e-4)
    half = x.astype(np.float16)
    state = update(NORM.init(jnp.zeros(4, jnp.float16)), jnp.asarray(half))
    assert state.var.dtype == jnp.float16
    np.testing.assert_allclose(_mean(state), half.astype(np.float64).mean(0), rtol=2**-9)
    np.testing.assert_allclose(state.var, half.astype(np.float64).var(0), rtol=2**-8)


def _words(value: int) -> jax.Array:
    return jnp.array([value >> 30, value & (2**30 - 1)], jnp.int32)


def _pair(value: float, dtype) -> jax.Array:
    hi = np.asarray(value, dtype)
    return jnp.asarray(np.array([hi, np.asarray(value - float(hi), dtype)]))


def test_count_is_exact_past_three_billion_rows_without_x64():
    """A state that has seen 3 × 10⁹ − 100 rows (past 2³¹, where an int32 counter
    wraps) takes 256 more: the count is exactly 3 × 10⁹ + 156, and with weights the
    total weight is exactly that float (a float32 total alone would be off by up to
    128); the mean moves by the right fraction, 256/(3 × 10⁹)."""
    seen = 3 * 10**9 - 100
    state = NORM.init(jnp.zeros(3, jnp.float32))
    state = state._replace(
        count=_words(seen), weight=_pair(seen, np.float32), var=jnp.ones(3, jnp.float32)
    )
    batch = jnp.full((256, 3), 1.0, jnp.float32)
    after = update(state, batch)
    assert NORM.count(after) == seen + 256
    assert after.count.dtype == jnp.int32
    weighted = update(state, batch, weights=jnp.ones(256, jnp.float32))
    assert NORM.count(weighted) == float(seen + 256)
    np.testing.assert_allclose(after.mean, 256 / (seen + 256), rtol=1e-5)


@pytest.mark.slow
def test_zero_weights_mask_rows_and_jit_does_not_retrace():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 3))
    w = (rng.random(40) > 0.3).astype(np.float64)
    state = NORM.init(jnp.zeros(3))
    masked = NORM.update(state, jnp.asarray(x + 1e3 * (w == 0)[:, None]), weights=w)
    kept = NORM.update(state, jnp.asarray(x[w > 0]))
    np.testing.assert_allclose(_mean(masked), _mean(kept), rtol=1e-12)
    np.testing.assert_allclose(masked.var, kept.var, rtol=1e-12)
    traces = []
    step = jax.jit(lambda s, b: (traces.append(1), NORM.update(s, b))[1])
    for part in np.split(x, 4):
        state = step(state, jnp.asarray(part))
    assert len(traces) == 1


@pytest.mark.slow
def test_bad_input_names_the_argument():
    state = NORM.init({"a": jnp.zeros(2), "b": jnp.zeros(3)})
    good = {"a": jnp.ones((4, 2)), "b": jnp.ones((4, 3))}
    with pytest.raises(ValueError, match="batch has tree structure"):
        NORM.update(state, {"a": jnp.ones((4, 2))})
    with pytest.raises(ValueError, match="batch has a leaf of shape"):
        NORM.update(state, {"a": jnp.ones((4, 3)), "b": jnp.ones((4, 3))})
    with pytest.raises(ValueError, match="different leading axes"):
        NORM.update(state, {"a": jnp.ones((4, 2)), "b": jnp.ones((5, 3))})
    with pytest.raises(ValueError, match="weights must be finite and >= 0"):
        NORM.update(state, good, weights=jnp.array([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="weights must have the batch's leading shape"):
        NORM.update(state, good, weights=jnp.ones(3))
    with pytest.raises(ValueError, match="tree has tree structure"):
        NORM.normalize(state, [jnp.ones(2), jnp.ones(3)])
    with pytest.raises(ValueError, match="std_min"):
        jg.normalizer(std_min=0.0)


@pytest.mark.slow
def test_std_is_clipped_to_std_min_and_std_max():
    """A constant feature has σ = 0, clipped to std_min (acme's std_min_value); a wide
    one is clipped to std_max: normalize divides by the clipped σ."""
    norm = jg.normalizer(std_min=1e-3, std_max=10.0)
    x = jnp.stack([jnp.full(8, 5.0), jnp.arange(8.0) * 100, jnp.arange(8.0)], axis=1)
    state = norm.update(norm.init(jnp.zeros(3)), x)
    z = norm.normalize(state, jnp.array([5.5, 350.0 + 100, 4.5]))
    sd = float(jnp.std(jnp.arange(8.0)))
    np.testing.assert_allclose(z, [0.5 / 1e-3, 100 / 10.0, 1.0 / sd], rtol=1e-12)
