"""fit: the guarded scan, traces, batching, continuation, caching and input validation."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxgauss as jg


def _poisoned_mean_estimator():
    """A running mean whose update turns non-finite on any value above 100: a
    divergence at a row we choose."""

    def update(state, batch):
        mean, n = state
        b = batch.shape[0]
        new = (mean * n + batch.sum(0)) / (n + b)
        new = jnp.where(jnp.any(batch > 100.0), jnp.nan, new)
        return new, n + b

    return jg.Estimator(
        init=lambda g: (g.mean, jnp.zeros((), g.mean.dtype)),
        update=update,
        estimate=lambda s: jg.Gaussian(s[0], jnp.eye(s[0].shape[0], dtype=s[0].dtype)),
        is_valid=lambda s: jnp.all(jnp.isfinite(s[0])),
    )


def _data(n=40, d=2, seed=0, dtype=jnp.float64):
    g = jg.Gaussian(jnp.zeros(d, dtype), jnp.eye(d, dtype=dtype))
    return jg.streams.sample(jax.random.key(seed), g, n)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_divergence_guard_freezes_at_last_valid_state(batch_size):
    ys = np.array(_data(40))
    ys[17, 1] = 1e3
    res = jg.fit(_poisoned_mean_estimator(), ys, batch_size=batch_size)
    start = (17 // batch_size) * batch_size
    assert int(res.diverged_at) == start
    np.testing.assert_allclose(res.estimate.mean, ys[:start].mean(0), rtol=1e-12)
    assert int(res.state[1]) == start  # nothing after the rejected update was applied


def test_no_divergence_is_minus_one():
    res = jg.fit(_poisoned_mean_estimator(), _data(10))
    assert int(res.diverged_at) == -1


def test_covariance_leaving_the_cone_is_caught():
    # Rows exactly at the mean give Σ ← Σ − α/(2Σ): 1 → 0.75 → 0.4167 → −0.18 with
    # α = 0.5, so the third update (row 2) makes Σ indefinite and is rejected.
    est = jg.gradient_ascent(optax.sgd(0.5), "covariance")
    res = jg.fit(est, np.zeros((6, 1)))
    assert int(res.diverged_at) == 2
    np.testing.assert_allclose(res.estimate.cov, [[0.75 - 0.25 / 0.75]], rtol=1e-12)
    assert bool(jg.is_spd(res.estimate.cov))


def test_trace_rows_estimates_and_kl():
    truth = jg.Gaussian(jnp.ones(2), 2.0 * jnp.eye(2))
    ys = jg.streams.sample(jax.random.key(1), truth, 103)
    est = jg.gradient_ascent(optax.adam(0.05), "cholesky")
    res = jg.fit(est, ys, batch_size=2, trace_every=5, truth=truth)
    # 51 full batches and one of 1 row; snapshots every 5 updates = every 10 rows.
    np.testing.assert_array_equal(res.trace.rows, np.arange(1, 11) * 10)
    assert res.trace.estimate.cov.shape == (10, 2, 2)
    np.testing.assert_allclose(
        res.trace.kl, jg.kl_divergence(truth, res.trace.estimate), rtol=1e-12
    )
    head = jg.fit(est, ys[:50], batch_size=2)
    np.testing.assert_allclose(res.trace.estimate.cov[4], head.estimate.cov, rtol=1e-12)
    assert head.trace is None  # no trace unless asked


def test_ragged_last_batch_is_applied_as_one_update():
    ys = _data(10)
    est = jg.gradient_ascent(optax.sgd(0.1), "cholesky")
    g0 = jg.Gaussian(jnp.zeros(2), jnp.eye(2))
    state, update = est.init(g0), jax.jit(est.update)
    for i in range(0, 10, 4):
        state = update(state, ys[i : i + 4])
    res = jg.fit(est, ys, batch_size=4)
    np.testing.assert_allclose(res.estimate.cov, est.estimate(state).cov, rtol=1e-12)
    assert int(res.state.count) == 3


def test_continuation_equals_one_pass():
    ys = _data(60)
    est = jg.gradient_ascent(optax.adam(0.03), "precision")
    whole = jg.fit(est, ys)
    first = jg.fit(est, ys[:25])
    second = jg.fit(est, ys[25:], state=first.state)
    np.testing.assert_allclose(second.estimate.cov, whole.estimate.cov, rtol=1e-12)
    np.testing.assert_allclose(second.estimate.mean, whole.estimate.mean, rtol=1e-12)


def test_second_fit_does_not_recompile():
    traces = []
    base = jg.gradient_ascent(optax.sgd(0.01), "cholesky")

    def counting_update(state, batch):
        traces.append(1)  # runs only while JAX traces, i.e. once per compilation
        return base.update(state, batch)

    est = base._replace(update=counting_update)
    jg.fit(est, _data(30, seed=1))
    n_after_first = len(traces)
    jg.fit(est, _data(30, seed=2))
    jg.fit(est, _data(30, seed=3), init=jg.Gaussian(jnp.ones(2), 3.0 * jnp.eye(2)))
    assert n_after_first >= 1
    assert len(traces) == n_after_first


def test_estimators_built_from_the_same_scalars_are_shared():
    """``fit(jg.welford(), …)`` in a loop compiles once: a factory returns the same
    estimator for the same scalar arguments (per x64 mode); arrays build new ones."""
    from jaxgauss._engine import run_tail

    assert jg.welford(ddof=1) is jg.welford(ddof=1)
    assert jg.welford(ddof=1) is not jg.welford(ddof=1.0)
    assert jg.exponential(7.0) is jg.exponential(7.0)
    assert jg.natural_gradient(prior_weight=jnp.asarray(1.0)) is not jg.natural_gradient(
        prior_weight=jnp.asarray(1.0)
    )
    with jax.enable_x64(False):
        narrow = jg.welford(ddof=1)
    assert narrow is not jg.welford(ddof=1)
    ys = _data(50)
    jg.fit(jg.welford(ddof=1), ys)
    before = run_tail._cache_size()
    jg.fit(jg.welford(ddof=1), ys + 1.0)
    assert run_tail._cache_size() == before


def test_one_estimator_serves_both_x64_modes():
    """The same estimator object with x64 on, then off: the cached initial state is
    per x64 mode (int64 counters were carried into an int32 scan before)."""
    est, ys = jg.welford(), np.ones((6, 2), np.float32)
    assert jg.fit(est, ys).state.count.dtype == jnp.int64
    with jax.enable_x64(False):
        assert jg.fit(est, ys).state.count.dtype == jnp.int32


def test_dtype_follows_data():
    est = jg.gradient_ascent(optax.sgd(0.01), "cholesky")
    assert jg.fit(est, _data(5, dtype=jnp.float32)).estimate.cov.dtype == jnp.float32
    assert jg.fit(est, _data(5, dtype=jnp.float64)).estimate.cov.dtype == jnp.float64
    # integers compute in float32, as docs/streams.md says, even with x64 on
    assert jg.fit(est, np.arange(10).reshape(5, 2)).estimate.cov.dtype == jnp.float32
    assert jg.fit(est, np.ones((5, 2), np.float16)).estimate.cov.dtype == jnp.float32


def test_float64_data_without_x64_gives_float32():
    code = (
        "import numpy as np, optax, jaxgauss as jg;"
        "r = jg.fit(jg.gradient_ascent(optax.sgd(0.01)), np.ones((4, 2)));"
        "print(r.estimate.cov.dtype)"
    )
    # -W error: NumPy's float64 data must not warn about the truncation on every call
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "float32"


EST = jg.gradient_ascent(optax.sgd(0.01), "cholesky")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(data=np.ones(5)), r"2-D with shape \(n, d\), got shape \(5,\); for a single column"),
        (dict(data=np.ones((2, 3, 4))), "2-D"),
        (dict(data=np.ones((0, 2))), "empty"),
        (dict(data=np.array([["a", "b"]])), "numeric"),
        (
            dict(data=np.array([[0.0, 1.0], [np.nan, 1.0], [np.inf, 0.0]])),
            "data row 1 is not finite",
        ),
        (
            dict(data=np.ones((4, 2)), init=jg.Gaussian(np.zeros(3), np.eye(3))),
            "dimension 3 but the data have dimension 2",
        ),
        (
            dict(data=np.ones((4, 2)), init=jg.Gaussian(np.zeros(2), np.full((2, 2), np.nan))),
            "non-finite",
        ),
        (
            dict(
                data=np.ones((4, 2)),
                init=jg.Gaussian(np.zeros(2), np.array([[1.0, 0.3], [0.0, 1.0]])),
            ),
            "not symmetric",
        ),
        (
            dict(data=np.ones((4, 2)), init=jg.Gaussian(np.zeros(2), -np.eye(2))),
            "not positive definite",
        ),
        (dict(data=np.ones((4, 2)), batch_size=0), "batch_size must be an integer >= 1"),
        (dict(data=np.ones((4, 2)), batch_size=1.5), "batch_size"),
        (dict(data=np.ones((4, 2)), trace_every=-1), "trace_every"),
        (
            dict(data=np.ones((4, 2)), truth=jg.Gaussian(np.zeros(2), np.zeros((2, 2)))),
            "truth.cov is not positive definite",
        ),
    ],
)
def test_bad_input_names_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        jg.fit(EST, **kwargs)


def test_init_and_state_together_is_an_error():
    state = EST.init(jg.Gaussian(jnp.zeros(2), jnp.eye(2)))
    with pytest.raises(ValueError, match="not both"):
        jg.fit(EST, np.ones((3, 2)), jg.Gaussian(np.zeros(2), np.eye(2)), state=state)


def test_not_an_estimator():
    with pytest.raises(ValueError, match="must be a jaxgauss Estimator"):
        jg.fit(optax.sgd(0.1), np.ones((3, 2)))


ROWWISE = {
    "welford": lambda: jg.welford(),
    "natural 1/t": lambda: jg.natural_gradient(),
    "natural schedule": lambda: jg.natural_gradient(jg.schedules.robbins_monro(0.5, offset=2.0)),
    "exponential": lambda: jg.exponential(50.0),
}


@pytest.mark.parametrize("name", list(ROWWISE))
@pytest.mark.parametrize("batch_size", [1, pytest.param(3, marks=pytest.mark.slow)])
def test_blocked_path_equals_update_by_update(name, batch_size):
    est = ROWWISE[name]()
    truth = jg.streams.random_truth(jax.random.key(4), 3, 100.0, dtype=jnp.float64)
    ys = jg.streams.sample(jax.random.key(5), truth, 2000)
    kw = dict(batch_size=batch_size, trace_every=40, truth=truth)
    step = jg.fit(est, ys, block_rows=1, **kw)
    fast = jg.fit(est, ys, **kw)  # blocks of up to 512 rows, cut to divide trace_every
    # Same arithmetic regrouped: rounding differences only (float64, ~1e-13).
    np.testing.assert_allclose(fast.estimate.cov, step.estimate.cov, rtol=1e-10)
    np.testing.assert_allclose(fast.estimate.mean, step.estimate.mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(fast.trace.rows, step.trace.rows)
    np.testing.assert_allclose(fast.trace.kl, step.trace.kl, rtol=1e-8)
    assert int(fast.diverged_at) == int(step.diverged_at) == -1


@pytest.mark.parametrize("name", list(ROWWISE))
def test_blocked_path_guard_finds_the_exact_row(name):
    # float32 w·y yᵀ overflows for |y| ~ 1e30: the block holding row 700 is rejected,
    # replayed update by update, and the state stops right before row 700.
    ys = np.array(_data(1500, d=2, dtype=jnp.float32))
    ys[700] = 1e30
    est = ROWWISE[name]()
    fast = jg.fit(est, ys, block_rows=256)  # rows 512..767 are one rejected block
    step = jg.fit(est, ys, block_rows=1)
    assert int(fast.diverged_at) == int(step.diverged_at) == 700
    assert int(fast.state.count) == 700
    np.testing.assert_allclose(fast.estimate.cov, step.estimate.cov, rtol=1e-4)


# --- streams larger than memory: chunks, files, bad rows ---------------------------

STREAMERS = {
    "sgd": lambda: jg.gradient_ascent(optax.sgd(0.01), "cholesky"),
    "welford": lambda: jg.welford(),
}


# Traced gradient steps from chunks (each source compiles its own traced scans) run
# with -m slow; the quick run has the same regrouping traced for welford.
@pytest.mark.parametrize(
    "name, batch_size, trace_every",
    [
        ("sgd", 1, 0),
        pytest.param("welford", 1, 0, marks=pytest.mark.slow),
        pytest.param("sgd", 3, 7, marks=pytest.mark.slow),
        ("welford", 3, 7),
    ],
)
def test_chunked_sources_equal_one_in_memory_fit(tmp_path, name, batch_size, trace_every):
    est = STREAMERS[name]()
    ys = np.asarray(_data(1001, d=3, seed=7))
    kw = dict(batch_size=batch_size, trace_every=trace_every)
    whole = jg.fit(est, ys, **kw)
    np.save(tmp_path / "ys.npy", ys)
    np.savetxt(tmp_path / "ys.csv", ys, delimiter=",", header="a,b,c", comments="", fmt="%.17g")
    # One regrouping size for every source, so they share their compiled programs;
    # the generator's items (1 to 400 rows) regroup across its chunk edges.
    sources = {
        "sliced array": ys,
        "npy": str(tmp_path / "ys.npy"),
        "csv": tmp_path / "ys.csv",
        "ragged generator": (ys[i : i + s] for i, s in _ragged(1001)),
    }
    for label, source in sources.items():
        res = jg.fit(est, source, **kw, chunk_rows=96)
        np.testing.assert_allclose(res.estimate.cov, whole.estimate.cov, rtol=1e-10, err_msg=label)
        np.testing.assert_allclose(res.estimate.mean, whole.estimate.mean, rtol=1e-10, atol=1e-13)
        assert res.n_rows == 1001
        if trace_every:
            np.testing.assert_array_equal(res.trace.rows, whole.trace.rows)
            np.testing.assert_allclose(res.trace.estimate.cov, whole.trace.estimate.cov, rtol=1e-10)


def _ragged(n):
    sizes = [1, 50, 3, 300, 17, 400]
    i = 0
    while i < n:
        s = sizes[i % len(sizes)]
        yield i, s
        i += s


def test_long_stream_compiles_a_bounded_number_of_shapes():
    from jaxgauss._engine import run_scan

    est = jg.gradient_ascent(optax.sgd(0.01), "cholesky")
    ys = np.asarray(_data(5000, d=2))
    before = run_scan._cache_size()
    for n in (1000, 1777, 2500, 4999):
        jg.fit(est, ys[:n], chunk_rows=256)
    # One program for full 256-row chunks plus at most one per power of two below it.
    assert run_scan._cache_size() - before <= 1 + 8
    # A rowwise estimator's tail goes in power-of-two blocks too: at most 2·log₂ shapes.
    before = run_scan._cache_size()
    welford = jg.welford()
    for n in (1000, 1777, 2500, 4999):
        jg.fit(welford, ys[:n], chunk_rows=1024)
    assert run_scan._cache_size() - before <= 1 + 2 * 10


def test_nan_row_raises_with_the_result_so_far():
    ys = np.array(_data(300, d=2))
    ys[123, 0] = np.nan
    est = jg.welford()
    with pytest.raises(jg.DataError, match="data row 123 is not finite") as info:
        jg.fit(est, ys, chunk_rows=50)
    err = info.value
    assert isinstance(err, ValueError) and err.row == 123
    assert err.result.n_rows == 123
    np.testing.assert_allclose(err.result.estimate.cov, np.cov(ys[:123].T, bias=True), rtol=1e-10)
    rest = jg.fit(est, ys[124:], state=err.result.state)
    both = np.concatenate([ys[:123], ys[124:]])
    np.testing.assert_allclose(rest.estimate.cov, np.cov(both.T, bias=True), rtol=1e-10)


def test_nan_policy_skip_counts_and_keeps_original_indices():
    ys = np.array(_data(200, d=2))
    ys[[5, 6, 150], 1] = [np.inf, np.nan, -np.inf]
    res = jg.fit(jg.welford(), ys, nan_policy="skip", chunk_rows=64)
    keep = np.isfinite(ys).all(1)
    assert res.n_skipped == 3 and res.n_rows == 197
    np.testing.assert_allclose(res.estimate.cov, np.cov(ys[keep].T, bias=True), rtol=1e-10)
    # a divergence after skipped rows is reported at its index in the data as given
    zs = np.zeros((12, 1))
    zs[1] = np.nan
    cov_est = jg.gradient_ascent(optax.sgd(0.5), "covariance")
    assert int(jg.fit(cov_est, zs, nan_policy="skip").diverged_at) == 3


def test_integer_and_csv_errors(tmp_path):
    res = jg.fit(jg.welford(), np.arange(20).reshape(10, 2))
    assert res.estimate.cov.dtype == jnp.float32
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y,z\n1,2,3\n3,,4\n")
    with pytest.raises(ValueError, match=r"CSV row 1 \(line 3\) column 1 is empty"):
        jg.fit(jg.welford(), bad)
    bad.write_text("1,2\n3,abc\n")
    with pytest.raises(ValueError, match="column 1 is not a number: 'abc'"):
        jg.fit(jg.welford(), bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("x,y\n")
    with pytest.raises(ValueError, match="empty"):
        jg.fit(jg.welford(), empty)
    with pytest.raises(ValueError, match="unsupported file type"):
        jg.fit(jg.welford(), str(tmp_path / "ys.xlsx"))  # .parquet is read with pyarrow
    with pytest.raises(ValueError, match="have 3 columns, earlier rows 2"):
        jg.fit(jg.welford(), iter([np.ones((4, 2)), np.ones((4, 3))]))


@pytest.mark.parametrize("error", [RuntimeError("the source broke"), KeyboardInterrupt()])
def test_any_error_keeps_the_fit_of_every_earlier_row(error):
    """An exception from the user's iterator (or Ctrl-C) propagates as itself, with the
    fit of every row read before it attached: a KeyboardInterrupt stays one, so
    ``except Exception`` cannot swallow it."""
    ys = np.array(_data(90, d=2))

    def chunks():
        yield ys[:40]
        yield ys[40:70]
        raise error

    with pytest.raises(type(error)) as info:
        jg.fit(jg.welford(), chunks(), chunk_rows=32)
    res = info.value.result
    assert res.n_rows == 70
    np.testing.assert_allclose(res.estimate.cov, np.cov(ys[:70].T, bias=True), rtol=1e-10)
    # a width change is a ValueError carrying the rows before it; nothing read: None
    with pytest.raises(ValueError, match="have 3 columns") as info:
        jg.fit(jg.welford(), iter([ys[:10], np.ones((4, 3))]))
    assert info.value.result.n_rows == 10
    with pytest.raises(ValueError, match="must be 2-D") as info:
        jg.fit(jg.welford(), iter([np.ones(3)]))
    assert info.value.result is None


def test_state_of_another_estimator_or_width_is_refused():
    state = jg.fit(jg.welford(), _data(20, d=3)).state
    with pytest.raises(ValueError, match="state has a leaf of shape"):
        jg.fit(jg.welford(), _data(20, d=2), state=state)
    with pytest.raises(ValueError, match="does not belong to this estimator"):
        jg.fit(jg.gradient_ascent(optax.sgd(0.1)), _data(20, d=3), state=state)
    with pytest.raises(ValueError, match="init must be a jaxgauss Gaussian"):
        jg.fit(jg.welford(), _data(20, d=3), init=(jnp.zeros(3), jnp.eye(3)))


def test_integer_data_give_float32_with_x64():
    # The documented rule (docs/streams.md): float64 only for float64 data (tests run with x64 enabled).
    assert jg.fit(jg.welford(), np.arange(6).reshape(3, 2)).estimate.mean.dtype == jnp.float32


@pytest.mark.slow  # quick-suite budget
@pytest.mark.parametrize("name", ["sgd", "welford"])
def test_a_traced_piece_longer_than_a_chunk_is_not_held_in_memory(monkeypatch, name):
    """A snapshot every 3·70 = 210 rows of a stream read in chunks of 64: the traced
    piece does not fit a chunk, so untraced blocks run and the snapshots are taken
    between them. The buffer stays below a chunk, and the trace equals the one
    compiled scan of the whole array; a trace_every past the stream's end (1400: the
    same blocks of 14 updates, so the same programs) gives an empty trace without
    holding the stream."""
    from jaxgauss._feeder import Feeder

    est = STREAMERS[name]()
    ys = np.asarray(_data(1001, d=3, seed=7))
    held = []
    push = Feeder.push

    def spy(self, rows):
        push(self, rows)
        held.append(self.n_pending)

    truth = jg.Gaussian(jnp.zeros(3), jnp.eye(3))
    kw = dict(batch_size=3, trace_every=70, truth=truth)
    whole = jg.fit(est, ys, **kw)
    monkeypatch.setattr(Feeder, "push", spy)
    res = jg.fit(est, (ys[i : i + s] for i, s in _ragged(1001)), chunk_rows=64, **kw)
    assert max(held) < 64
    np.testing.assert_array_equal(res.trace.rows, [210, 420, 630, 840])
    np.testing.assert_array_equal(res.trace.rows, whole.trace.rows)
    np.testing.assert_allclose(res.trace.estimate.cov, whole.trace.estimate.cov, rtol=1e-10)
    np.testing.assert_allclose(res.trace.kl, whole.trace.kl, rtol=1e-10)
    np.testing.assert_allclose(res.estimate.cov, whole.estimate.cov, rtol=1e-10)

    held.clear()
    res = jg.fit(est, iter(np.array_split(ys, 20)), chunk_rows=64, batch_size=3, trace_every=1400)
    assert max(held) < 64 and res.trace.rows.shape == (0,) and res.n_rows == 1001
    np.testing.assert_allclose(res.estimate.cov, whole.estimate.cov, rtol=1e-10)


def test_a_batch_larger_than_memory_is_refused_up_front():
    """One update needs all of its batch's rows at once: a batch_size whose rows
    cannot fit is refused before anything is read, naming batch_size."""
    chunks = iter([np.ones((4, 3))])
    with pytest.raises(ValueError, match="smaller batch_size"):
        jg.fit(jg.welford(), chunks, batch_size=10**13)


def _two_rows_before_a_boundary(x: np.ndarray) -> np.ndarray:
    """A copy of ``x`` whose data start two rows before a 64-byte boundary: fit hands
    its rows from the third on to the device without a copy, the two first apart."""
    buf = np.empty(x.nbytes + 128, np.uint8)
    start = (-(buf.ctypes.data + 2 * x.strides[0])) % 64
    out = buf[start : start + x.nbytes].view(x.dtype).reshape(x.shape)
    out[:] = x
    return out


# Every bad position in every layout compiles its own programs (~1.5 s a case): one
# case of each position and layout runs quick, the full matrix with -m slow.
QUICK_SCREEN = {("aligned-after-2", 1), ("numpy", 37), ("device", 40_001), ("numpy", 69_999)}


@pytest.mark.parametrize(
    "layout, bad, batch_size",
    [
        pytest.param(
            layout, bad, b, marks=() if (layout, bad) in QUICK_SCREEN else pytest.mark.slow
        )
        for layout in ("numpy", "aligned-after-2", "device")
        for bad, b in ((1, 1), (37, 1), (40_001, 3), (69_999, 1))
    ],
)
def test_a_whole_array_screened_by_the_engine_raises_with_the_rows_before_it(
    layout, bad, batch_size
):
    """A whole array of a moment estimator reaches the compiled scan unscreened (the
    engine reads a bad row off the rejected update of its block): the DataError still
    names the first non-finite row, inside the head rows before an aligned start, a
    piece, a block or the tail, and its result equals a fit of exactly the rows
    before it."""
    x = np.random.default_rng(bad).standard_normal((70_000, 4)).astype(np.float32) + 5
    x[bad, 1] = np.inf if bad % 2 else np.nan
    x[-1, 0] = np.nan  # a later bad row is never reached
    data = {"numpy": x, "device": jnp.asarray(x)}.get(layout)
    data = _two_rows_before_a_boundary(x) if data is None else data
    with pytest.raises(jg.DataError) as err:
        jg.fit(jg.welford(), data, batch_size=batch_size)
    got, want = err.value.result, jg.fit(jg.welford(), x[:bad], batch_size=batch_size)
    assert err.value.row == bad and got.n_rows == bad
    assert f"data row {bad} is not finite" in str(err.value)
    # float32 rounding of different block boundaries: absolute 1e-6 on entries of ~1
    np.testing.assert_allclose(got.estimate.cov, want.estimate.cov, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.estimate.mean, want.estimate.mean, rtol=1e-6)


@pytest.mark.parametrize(
    "est", [jg.welford(), pytest.param(jg.exponential(5000.0), marks=pytest.mark.slow)]
)
def test_an_aligned_array_fits_as_one_pass(est):
    """The rows handed to the device without a copy (after two head rows) give the
    fit of the same rows copied, to rounding, for an order-dependent estimator too."""
    x = np.random.default_rng(3).standard_normal((90_001, 4)).astype(np.float32) + 1e3
    got = jg.fit(est, _two_rows_before_a_boundary(x))
    want = jg.fit(est, jnp.asarray(x))
    np.testing.assert_allclose(got.estimate.cov, want.estimate.cov, rtol=2e-4)
    np.testing.assert_allclose(got.estimate.mean, want.estimate.mean, rtol=1e-6)
    assert got.n_rows == want.n_rows == x.shape[0]


def test_a_small_shape_fitted_again_and_again_gets_its_own_program():
    """After ``REPEATS`` fits of one small shape, a rowwise estimator's fit of it runs
    as one update in a program of its own instead of the shared tail program's loop:
    the same estimate to rounding, the same bad-row error and partial result."""
    from jaxgauss import _feeder

    x = np.random.default_rng(5).standard_normal((999, 3)).astype(np.float32) + 7
    est = jg.exponential(300.0)  # order-dependent: the rows must stay in order
    first = jg.fit(est, x, batch_size=2)
    for _ in range(_feeder.REPEATS):
        again = jg.fit(est, x, batch_size=2)
    key = [k for k in _feeder._SEEN if k[0].estimator is est and k[1] == x.shape]
    assert _feeder._SEEN[key[0]] > _feeder.REPEATS  # the last fit took the own program
    np.testing.assert_allclose(again.estimate.cov, first.estimate.cov, rtol=1e-5)
    np.testing.assert_allclose(again.estimate.mean, first.estimate.mean, rtol=1e-6)
    assert again.n_rows == first.n_rows == 999
    bad = x.copy()
    bad[500, 2] = np.nan
    with pytest.raises(jg.DataError) as err:
        jg.fit(est, bad, batch_size=2)
    want = jg.fit(est, x[:500], batch_size=2)
    assert err.value.row == 500 and err.value.result.n_rows == 500
    np.testing.assert_allclose(err.value.result.estimate.cov, want.estimate.cov, rtol=1e-5)
