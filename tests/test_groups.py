"""Grouped and weighted fits (``fit(..., groups=, n_groups=, weights=)``) and the
weighted estimator updates, against NumPy: per-group ``np.cov(bias=True)``,
``np.average``/``np.cov(aweights=...)``, repeated rows for integer weights, and fits
of each group's rows alone."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxgauss as jg
from jaxgauss import _grouped

# Rounding bounds: a few hundred rows of O(1) data; float32 moments are accurate to
# ~1e-6 relative (eps 1.2e-7 times the log of the row count), float64 to ~1e-13.
TOL = {np.float32: 2e-5, np.float64: 1e-12}
N, D, G = 600, 3, 5
# One estimator object per kind: fit's compilations are cached per estimator object.
WELFORD, WEIGHTED = jg.welford(), jg.welford(weighted=True)
ADAM = jg.gradient_ascent(optax.adam(0.05))


def _data(dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D)) @ rng.normal(size=(D, D)) + 3.0
    groups = rng.integers(0, G, N)
    groups[groups == 3] = 2  # group 3 receives no rows
    weights = rng.uniform(0, 2, N)
    weights[::5] = 0.0
    return x.astype(dtype), groups, weights


# The further table checks' float32 case runs with -m slow (the quick run keeps
# float32 in the per-group check).
DTYPES_FLOAT32_SLOW = [pytest.param(np.float32, marks=pytest.mark.slow), np.float64]


def _close(got, want, dtype):
    scale = max(1.0, float(np.max(np.abs(want))))
    np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=TOL[dtype] * scale, rtol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grouped_welford_equals_numpy_per_group(dtype):
    x, groups, _ = _data(dtype)
    res = jg.fit(WELFORD, x, groups=groups, n_groups=G)
    assert res.estimate.mean.shape == (G, D) and res.estimate.cov.dtype == dtype
    np.testing.assert_array_equal(res.n_rows, np.bincount(groups, minlength=G))
    for k in range(G):
        if k == 3:  # no rows: the init N(0, I), reported with n_rows 0
            np.testing.assert_array_equal(res.estimate.cov[k], np.eye(D))
            continue
        xk = x[groups == k].astype(np.float64)
        _close(res.estimate.mean[k], xk.mean(0), dtype)
        _close(res.estimate.cov[k], np.cov(xk.T, bias=True), dtype)
    np.testing.assert_array_equal(res.diverged_at, -np.ones(G))


@pytest.mark.parametrize("dtype", DTYPES_FLOAT32_SLOW)
def test_grouped_weighted_welford_equals_numpy_aweights(dtype):
    x, groups, w = _data(dtype)
    # chunked and in small blocks: many compiled pieces, the state carried between them
    res = jg.fit(WEIGHTED, x, groups=groups, weights=w, chunk_rows=170, block_rows=64)
    assert res.estimate.mean.shape == (G, D)  # n_groups = 1 + the largest id
    for k in (0, 1, 2):
        sel = groups == k
        xk, wk = x[sel].astype(np.float64), w[sel]
        _close(res.estimate.mean[k], np.average(xk, axis=0, weights=wk), dtype)
        _close(res.estimate.cov[k], np.cov(xk.T, aweights=wk, bias=True), dtype)
        np.testing.assert_allclose(res.state.count[k], wk.sum(), rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES_FLOAT32_SLOW)
def test_weighted_welford_without_groups_equals_numpy(dtype):
    x, _, w = _data(dtype)
    res = jg.fit(WEIGHTED, x, weights=w)
    assert res.estimate.mean.shape == (D,) and res.n_rows == N
    _close(res.estimate.mean, np.average(x.astype(np.float64), axis=0, weights=w), dtype)
    _close(res.estimate.cov, np.cov(x.T.astype(np.float64), aweights=w, bias=True), dtype)


def test_integer_weights_equal_repeated_rows_and_ddof_is_frequency():
    # The estimator-level contract: one update each (compiled, not run op by op).
    x, _, _ = _data(np.float64)
    reps = np.random.default_rng(1).integers(0, 4, N)
    rep = jnp.asarray(np.repeat(x, reps, axis=0))
    g0 = jg.Gaussian.standard(D, jnp.float64)

    def once(est, *rows):
        return jax.jit(lambda *r: est.estimate(est.update(est.init(g0), *r)))(*rows)

    for est, ref in [
        (jg.welford(ddof=1, weighted=True), jg.welford(ddof=1)),
        (jg.exponential(50.0, weighted=True), jg.exponential(50.0)),
        (jg.natural_gradient(0.01, weighted=True), jg.natural_gradient(0.01)),
    ]:
        got = once(est, jnp.asarray(x), jnp.asarray(reps, float))
        want = once(ref, rep)
        np.testing.assert_allclose(got.cov, want.cov, atol=1e-11)
        np.testing.assert_allclose(got.mean, want.mean, atol=1e-11)
    ddof1 = once(jg.welford(ddof=1, weighted=True), jnp.asarray(x), jnp.asarray(reps, float))
    np.testing.assert_allclose(ddof1.cov, np.cov(x.T, fweights=reps, ddof=1), atol=1e-11)


def test_weight_zero_is_a_no_op_for_every_weighted_update():
    x = jnp.asarray(_data(np.float64)[0][:8])
    g0 = jg.Gaussian(jnp.ones(D), 2 * jnp.eye(D))
    for est in [
        jg.welford(weighted=True),
        jg.exponential(5.0, weighted=True),
        jg.natural_gradient(0.3, weighted=True),
        jg.natural_gradient(optax.linear_schedule(0.5, 0.1, 10), weighted=True),
        jg.gradient_ascent(optax.adam(0.1)),
        jg.averaged(jg.gradient_ascent(optax.sgd(0.1))),
    ]:
        update = jax.jit(est.update)  # compiled once, not run op by op
        state = update(est.init(g0), x[:4], jnp.array([1.0, 0.5, 2.0, 1.5]))
        after = update(state, x[4:], jnp.zeros(4))
        for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(after)):
            np.testing.assert_array_equal(a, b)


def test_fit_runs_the_weighted_form_of_an_unweighted_moment_estimator():
    """fit(welford(), x, weights=w) just works: the runner uses the estimator's
    weighted form and returns that form's state (a float total weight); continuing an
    unweighted state with weights is refused with a message naming weighted=True,
    and the update itself still refuses weights it was not built for."""
    x, groups, w = _data(np.float64)
    got = jg.fit(WELFORD, x, weights=w)
    want = jg.fit(jg.welford(weighted=True), x, weights=w)
    np.testing.assert_array_equal(got.estimate.cov, want.estimate.cov)
    assert jnp.issubdtype(got.state.count.dtype, jnp.floating)
    est = jg.natural_gradient(0.1)
    got = jg.fit(est, x, groups=groups, n_groups=G)
    want = jg.fit(jg.natural_gradient(0.1, weighted=True), x, groups=groups, n_groups=G)
    np.testing.assert_array_equal(got.estimate.cov, want.estimate.cov)
    unweighted = jg.fit(WELFORD, x).state
    with pytest.raises(ValueError, match="weighted=True"):
        jg.fit(WELFORD, x, weights=w, state=unweighted)
    with pytest.raises(ValueError, match="weighted=True"):
        jg.welford().update(jg.welford().init(jg.Gaussian.standard(D)), x[:2], w[:2])
    with pytest.raises(ValueError, match="no weighted form .* cannot be fitted with weights"):
        jg.fit(jg.welford(fourth_moments=True), x, weights=w)
    with pytest.raises(ValueError, match="cannot be fitted per group .* gradient_ascent can"):
        jg.fit(jg.student_t(4.0), x, groups=groups)  # issue 25: it said "weighted=True"


@pytest.mark.slow  # quick-suite budget: covered quickly by simpler cases
def test_grouped_gradient_ascent_equals_each_groups_own_fit():
    x, groups, w = _data(np.float64)
    est = ADAM
    res = jg.fit(est, x, groups=groups, n_groups=G, weights=w, batch_size=4, chunk_rows=130)
    for k in (4,):
        sel = groups == k
        alone = jg.fit(est, x[sel], weights=w[sel], batch_size=4)
        np.testing.assert_allclose(res.estimate.cov[k], alone.estimate.cov, atol=1e-12)
        assert int(res.state.count[k]) == int(alone.state.count)  # its own optimizer steps
    assert int(res.state.count[3]) == 0


def test_diverged_at_is_per_group_and_a_row_of_the_data_as_given():
    x, groups, _ = _data(np.float64)
    x[:, 0] *= 0.01
    est = jg.gradient_ascent(optax.sgd(3.0), "covariance")  # blows up
    res = jg.fit(est, x, groups=groups, n_groups=G)
    for k in (1,):
        alone = jg.fit(est, x[groups == k])
        assert int(alone.diverged_at) >= 0
        assert int(res.diverged_at[k]) == int(np.flatnonzero(groups == k)[int(alone.diverged_at)])
    assert int(res.diverged_at[3]) == -1


def test_grouped_welford_guard_names_the_exact_row():
    # An overflowing row (finite data, infinite square) is rejected inside a block: the
    # block is replayed row by row for that group only.
    x, groups, _ = _data(np.float64)
    x[100] = 1e200
    res = jg.fit(WELFORD, x, groups=groups, n_groups=G, block_rows=64)
    k = groups[100]
    assert int(res.diverged_at[k]) == 100
    sel = (groups == k) & (np.arange(N) < 100)
    np.testing.assert_allclose(res.estimate.cov[k], np.cov(x[sel].T, bias=True), atol=1e-12)
    others = [j for j in (0, 1, 2, 4) if j != k]
    assert np.all(np.asarray(res.diverged_at)[others] == -1)


def test_merge_and_checkpoint_of_grouped_weighted_states(tmp_path):
    x, groups, w = _data(np.float64)
    est = WEIGHTED
    a = jg.fit(est, x[:250], groups=groups[:250], n_groups=G, weights=w[:250]).state
    b = jg.fit(est, x[250:], groups=groups[250:], n_groups=G, weights=w[250:]).state
    merged = jg.merge(a, b)
    one = jg.fit(est, x, groups=groups, n_groups=G, weights=w).state
    np.testing.assert_allclose(merged.cov, one.cov, atol=1e-12)
    np.testing.assert_allclose(merged.count, one.count, rtol=1e-14)
    path = jg.checkpoint.save(tmp_path / "groups", merged)
    back = jg.checkpoint.load(path, one)
    np.testing.assert_array_equal(back.cov, merged.cov)
    assert back.count.dtype == np.float64
    # continuing a grouped state equals one pass
    cont = jg.fit(est, x[250:], groups=groups[250:], n_groups=G, weights=w[250:], state=a)
    np.testing.assert_allclose(cont.state.cov, one.cov, atol=1e-12)


def test_grouped_trace_is_per_group():
    x, groups, _ = _data(np.float64)
    truth = jg.Gaussian(jnp.zeros((G, D)), jnp.broadcast_to(jnp.eye(D), (G, D, D)))
    res = jg.fit(WELFORD, x, groups=groups, n_groups=G, trace_every=200, truth=truth)
    assert res.trace.rows.tolist() == [200, 400, 600]
    assert res.trace.score.shape == (3, G) and res.trace.estimate.cov.shape == (3, G, D, D)
    np.testing.assert_array_equal(res.trace.estimate.cov[-1], res.estimate.cov)


def test_groups_and_weights_from_columns_and_iterables():
    x, groups, w = _data(np.float64)
    table = np.column_stack([groups, x, w])
    want = jg.fit(WEIGHTED, x, groups=groups, n_groups=G, weights=w)
    got = jg.fit(WEIGHTED, table, groups=0, weights=-1, chunk_rows=100)
    np.testing.assert_allclose(got.estimate.cov, want.estimate.cov, atol=1e-12)
    chunks = (table[i : i + 97] for i in range(0, N, 97))
    got = jg.fit(WEIGHTED, chunks, groups=0, n_groups=G, weights=D + 1)
    np.testing.assert_allclose(got.estimate.cov, want.estimate.cov, atol=1e-12)
    with pytest.raises(ValueError, match="n_groups is needed"):
        jg.fit(WELFORD, iter([table]), groups=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(groups="bad"), "1-D array"),
        (dict(groups=np.r_[np.zeros(N - 1), 7.0], n_groups=G), rf"groups\[{N - 1}\] = 7.0"),
        (dict(groups=np.r_[0.5, np.zeros(N - 1)]), r"groups\[0\] = 0.5"),
        (dict(groups=np.zeros(N - 2, int)), f"{N - 2} entries"),
        (dict(weights=np.r_[np.ones(9), -1.0, np.ones(N - 10)]), r"weights\[9\] = -1.0"),
        (dict(weights=np.r_[np.ones(3), np.nan, np.ones(N - 4)]), r"weights\[3\] = nan"),
        (dict(groups=np.zeros(N, int), n_groups=0), "n_groups must be an integer >= 1"),
    ],
)
def test_bad_groups_and_weights_are_named(kwargs, match):
    x, _, _ = _data(np.float64)
    with pytest.raises(ValueError, match=match):
        jg.fit(WEIGHTED, x, **kwargs)


def test_nonfinite_row_in_a_grouped_fit_keeps_the_rows_before_it():
    x, groups, _ = _data(np.float64)
    x[300, 1] = np.nan
    with pytest.raises(jg.DataError) as err:
        jg.fit(WELFORD, x, groups=groups, n_groups=G)
    assert err.value.row == 300
    assert err.value.result.n_rows.sum() == 300
    skipped = jg.fit(WELFORD, x, groups=groups, n_groups=G, nan_policy="skip")
    keep = np.arange(N) != 300
    k = groups[300]
    ref = np.cov(x[keep & (groups == k)].T, bias=True)
    np.testing.assert_allclose(skipped.estimate.cov[k], ref, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES_FLOAT32_SLOW)
def test_per_class_gaussians_of_wine_equal_numpy(dtype):
    # The per-class Gaussians of quadratic discriminant analysis on a real table
    # (scikit-learn's wine, 178 × 13, features spanning four orders of magnitude).
    datasets = pytest.importorskip("sklearn.datasets")
    bunch = datasets.load_wine()
    x, y = bunch.data.astype(dtype), bunch.target
    res = jg.fit(WELFORD, x, groups=y)
    for k in range(3):
        ref = np.cov(bunch.data[y == k].T, bias=True)
        # Relative to each entry's scale √(Σᵢᵢ Σⱼⱼ), as in test_real_data.py.
        scale = np.sqrt(np.outer(np.diag(ref), np.diag(ref)))
        err = np.abs(np.asarray(res.estimate.cov[k], np.float64) - ref) / scale
        assert err.max() < (1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.slow  # three sweep programs
def test_sweep_with_a_truth_per_seed_equals_sweeps_of_each_truth():
    import jax

    keys = jax.random.split(jax.random.key(3), 2)
    truths = [jg.streams.random_truth(k, 2, c, jnp.float64) for k, c in zip(keys, [1.0, 100.0])]
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *truths)
    make = jg.methods.make_method("sgd", "cholesky")
    grid = np.array([0.01, 0.05])
    both = jg.sweep(make, grid, truth=stacked, n_steps=64, seeds=2)
    assert both.final_kl.shape == (2, 2) and both.truth.mean.shape == (2, 2)
    for s, truth in enumerate(truths):
        alone = jg.sweep(make, grid, truth=truth, n_steps=64, seeds=2)
        np.testing.assert_allclose(both.final_kl[:, s], alone.final_kl[:, s], rtol=1e-12)
        np.testing.assert_allclose(both.mle_kl[s], alone.mle_kl[s], rtol=1e-12)
    with pytest.raises(ValueError, match="2 Gaussians for 3 seeds"):
        jg.sweep(make, grid, truth=stacked, n_steps=64, seeds=3)


def test_cli_group_by_text_labels_and_weights(tmp_path, cli):
    import json

    rng = np.random.default_rng(5)
    n = 120
    labels = rng.choice(["north", "south", "east"], n)
    x, w = rng.normal(size=(n, 2)) * [1.0, 3.0], rng.uniform(0, 2, n)
    path = tmp_path / "fleet.csv"
    lines = ["a,site,b,w"] + [
        f"{x[i, 0]:.17g},{labels[i]},{x[i, 1]:.17g},{w[i]:.17g}" for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.json"
    args = ["fit", str(path), "--group-by", "site", "--weights", "3", "--float64", "--quiet"]
    assert cli(*args, "--out", out).returncode == 0
    doc = json.loads(out.read_text())
    first_seen = list(dict.fromkeys(labels))
    assert [g["label"] for g in doc["groups"]] == first_seen
    for g in doc["groups"]:
        sel = labels == g["label"]
        assert g["n"] == sel.sum()
        np.testing.assert_allclose(
            g["mean"], np.average(x[sel], axis=0, weights=w[sel]), atol=1e-12
        )
        np.testing.assert_allclose(
            g["cov"], np.cov(x[sel].T, aweights=w[sel], bias=True), atol=1e-12
        )
    # one pass with a bound: the same result; past the bound a clear error
    assert cli(*args, "--max-groups", "3", "--out", out).returncode == 0
    assert [g["n"] for g in json.loads(out.read_text())["groups"]] == [
        g["n"] for g in doc["groups"]
    ]
    bounded = cli(*args, "--max-groups", "2")
    assert bounded.returncode == 2 and "past --max-groups 2" in bounded.stderr


@pytest.mark.parametrize("dtype", DTYPES_FLOAT32_SLOW)
def test_skewed_groups_take_the_block_path_and_equal_numpy(dtype):
    # About equal groups are laid out per group (one batched Gram matmul); here one
    # group holds ~90 % of the rows, so padding would more than double them and the
    # rows go through the blocks' segment sums instead. Both must equal NumPy.
    x, _, _ = _data(dtype)
    groups = np.where(np.random.default_rng(2).uniform(size=N) < 0.9, 0, np.arange(N) % G)
    res = jg.fit(WELFORD, x, groups=groups, n_groups=G, block_rows=128)
    for k in range(G):
        xk = x[groups == k].astype(np.float64)
        _close(res.estimate.cov[k], np.cov(xk.T, bias=True), dtype)


@pytest.mark.slow  # quick-suite budget: covered quickly by simpler cases
def test_a_rejected_laid_out_piece_is_replayed_to_the_exact_row():
    """A grouped welford fit lays out pieces of rows per group and reads each piece's
    acceptance only after dispatching the next: a piece whose update a group rejects
    (an overflowing row in the second piece) is replayed in blocks from the carry
    before it, so that group's diverged_at names the row and every group ends where
    a fit of its own rows does."""
    from jaxgauss._grouped import PIECE_ROWS

    rng = np.random.default_rng(0)
    n, groups = 2 * PIECE_ROWS + 40_000, 50
    x = rng.standard_normal((n, 3)).astype(np.float32)
    g = rng.integers(0, groups, n)
    bad = PIECE_ROWS + 7  # in the second of three pieces: the third is applied again
    x[bad] = 3e30  # its square overflows float32
    res = jg.fit(jg.welford(), x, groups=g, n_groups=groups)
    k = g[bad]
    assert res.diverged_at.tolist() == [bad if j == k else -1 for j in range(groups)]
    for j in (k, (k + 1) % groups):
        alone = jg.fit(jg.welford(), x[g == j])
        # float32, different block edges: rounding of entries of about 1
        np.testing.assert_allclose(res.estimate.cov[j], alone.estimate.cov, atol=1e-5)


@pytest.mark.parametrize("groups", [None, np.arange(200) % 3])
def test_weights_at_the_edges_of_float32_are_refused_not_lost(groups):
    """Issue 25, case 5: weights that float32 cannot hold were silently lost (1e-40:
    flushed to 0, the initial N(0, I) returned with count 0; all zero: the same; 1e37:
    the total overflowed and the fit stopped). Now each is a ValueError that names the
    problem, and weights float32 does hold give a result that does not depend on
    their scale."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 2)).astype(np.float32)
    w = rng.uniform(0.5, 1.5, 200).astype(np.float32)
    fit = functools.partial(jg.fit, jg.welford(), x, groups=groups, n_groups=None)
    with pytest.raises(ValueError, match=r"weights\[\d+\] = .* below float32's smallest normal"):
        fit(weights=w * 1e-40)
    with pytest.raises(ValueError, match="no row has a positive weight: all 200 weights are 0"):
        fit(weights=np.zeros(200))
    with pytest.raises(ValueError, match="add up to .* more than float32 holds"):
        fit(weights=w * 1e37)
    small, unit = fit(weights=w * 1e-30), fit(weights=w)
    # float32: the same weighted sums at another scale, equal to rounding
    np.testing.assert_allclose(small.estimate.cov, unit.estimate.cov, rtol=1e-5, atol=1e-6)


def test_grouped_states_refuse_what_they_cannot_do_in_words():
    """Issue 25 (case 15 and smaller): downdate of a grouped state was a TypeError,
    and continuing a state of 3 groups with n_groups = 4 blamed "another width or
    precision"; a list of files is read one after another, as one stream."""
    x = np.random.default_rng(0).standard_normal((300, 2))
    state = jg.fit(jg.welford(), x, groups=np.arange(300) % 3).state
    with pytest.raises(ValueError, match="leading axis of 3 .* downdate each"):
        jg.downdate(state, x[:2])
    with pytest.raises(ValueError, match="state holds 3 groups and this fit n_groups = 4"):
        jg.fit(jg.welford(), x, groups=np.arange(300) % 4, state=state)


def test_a_list_of_files_is_one_stream(tmp_path):
    x = np.random.default_rng(1).standard_normal((300, 2))
    np.save(tmp_path / "a.npy", x[:100])
    np.savetxt(tmp_path / "b.csv", x[100:], delimiter=",")
    res = jg.fit(jg.welford(), [tmp_path / "a.npy", str(tmp_path / "b.csv")])
    assert res.n_rows == 300
    np.testing.assert_allclose(res.estimate.cov, jg.mle(x).cov, rtol=1e-5)


def test_a_grouped_fit_too_large_for_memory_is_refused_up_front():
    """Issue 25, case 11: a million groups at d = 100 died allocating 40 GB; the
    memory estimate fit makes elsewhere now counts the groups and refuses first."""
    x = np.zeros((10, 100), np.float32)
    with pytest.raises(ValueError, match=r"n_groups = 1,000,000 at d = 100 .* GiB of memory"):
        jg.fit(jg.welford(), x, groups=np.arange(10), n_groups=10**6)


@pytest.mark.slow  # quick-suite budget: covered quickly by simpler cases
def test_one_large_group_does_not_pad_every_group_to_its_length(monkeypatch):
    """Issue 25, case 11: without a grouped update (here natural_gradient(0.01)) each
    group's batches were padded to the largest group's count: 200 000 rows, 1 000
    groups, half of them in group 0 peaked at 10 GB (now 0.33 GB, 3x faster:
    committed in the closing note). The arrays of each call now hold at most
    PIECE_ROWS rows (or one batch per waiting group); the result is unchanged:
    each group equals its own fit."""
    rng = np.random.default_rng(0)
    n, G = 20_000, 200
    groups = np.where(rng.random(n) < 0.5, 0, rng.integers(1, G, n))
    x = rng.standard_normal((n, 2)).astype(np.float32)
    sizes = []
    run = _grouped._run_batches

    def recording(plan, carry, batches, *rest):
        sizes.append(batches.shape[0] * batches.shape[1] * batches.shape[2])
        return run(plan, carry, batches, *rest)

    monkeypatch.setattr(_grouped, "PIECE_ROWS", 4096)
    monkeypatch.setattr(_grouped, "_run_batches", recording)
    est = jg.natural_gradient(0.01)
    res = jg.fit(est, x, groups=groups, n_groups=G)
    assert max(sizes) <= 4096  # before: 200 groups x 16 384 batches of 1 row
    for k in (0, 7):
        alone = jg.fit(est, x[groups == k])
        np.testing.assert_allclose(res.estimate.cov[k], alone.estimate.cov, rtol=1e-5)
        np.testing.assert_allclose(res.estimate.mean[k], alone.estimate.mean, atol=1e-6)


def test_estimate_of_a_grouped_welford_state_directly():
    """welford's estimate takes a grouped state as it is (a leading group axis): the
    ddof scale broadcast against (G,) counts failed on (G, d, d) covariances."""
    x = np.random.default_rng(0).normal(size=(300, 2))
    est = jg.welford(ddof=1)
    res = jg.fit(est, x, groups=np.arange(300) % 3, n_groups=3)
    direct = est.estimate(res.state)
    np.testing.assert_allclose(direct.cov, res.estimate.cov, rtol=1e-6)
    np.testing.assert_allclose(direct.cov[1], np.cov(x[1::3].T), rtol=1e-5)
