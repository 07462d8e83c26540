"""Nothing silently wrong: float64 data far from 0 in float32, small covariances next
to large means, all rows skipped, steps out of range, counters near 2³¹, the XLA
scheduler workaround, wide data and sweeps too large for memory."""

import json
import os
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxgauss as jg
from jaxgauss import _memory, _xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}

# NIST StRD univariate "Mavro" (filter transmittance, 50 rows), certified values.
MAVRO = [
    2.00180, 2.00170, 2.00180, 2.00190, 2.00180, 2.00170, 2.00150, 2.00140, 2.00150, 2.00150,
    2.00170, 2.00180, 2.00180, 2.00190, 2.00190, 2.00210, 2.00200, 2.00160, 2.00140, 2.00130,
    2.00130, 2.00150, 2.00150, 2.00160, 2.00150, 2.00140, 2.00130, 2.00140, 2.00150, 2.00140,
    2.00150, 2.00160, 2.00150, 2.00160, 2.00190, 2.00200, 2.00200, 2.00210, 2.00220, 2.00230,
    2.00240, 2.00250, 2.00270, 2.00260, 2.00260, 2.00260, 2.00270, 2.00260, 2.00250, 2.00240,
]  # fmt: skip
MAVRO_MEAN, MAVRO_STD = 2.00185600000000, 0.000429123454003053


def _offset_rows(offset, n=2000, seed=0):
    """float64 rows offset + z A with a known spread (3 correlated columns)."""
    a = np.array([[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.0, 0.3, 2.0]])
    return offset + np.random.default_rng(seed).standard_normal((n, 3)) @ a


def _rel_err(actual, reference):
    """Normwise relative error max |Δ| / max |reference|, in float64."""
    actual = np.asarray(actual, np.float64)
    return np.max(np.abs(actual - reference)) / np.max(np.abs(reference))


# --- 4. float64 data in float32 ----------------------------------------------------


def test_cli_float32_fit_of_1e8_offset_csv_keeps_float32_accuracy(tmp_path, cli):
    ys = _offset_rows(1e8)
    path = tmp_path / "big_mean.csv"
    np.savetxt(path, ys, delimiter=",", fmt="%.17g")
    ys = np.loadtxt(path, delimiter=",")  # the values the CLI reads
    out = tmp_path / "r.json"
    proc = cli("fit", str(path), "--quiet", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    got = json.loads(out.read_text())
    assert got["dtype"] == "float32"
    # float32 keeps ~1e-5 relative accuracy whatever the offset (before: exactly 0)
    assert _rel_err(got["cov"], np.cov(ys.T, bias=True)) < 1e-5


def test_cli_covariance_below_float32_range_is_an_error_not_zero(tmp_path, cli):
    path = tmp_path / "tiny.csv"
    np.savetxt(path, 3e-20 * _offset_rows(0.0, n=50), delimiter=",", fmt="%.17g")
    proc = cli("fit", str(path), "--quiet")
    assert proc.returncode == 2, proc.stderr
    assert "float64" in proc.stderr and "Traceback" not in proc.stderr


def test_float32_fit_continuation_and_merge_with_1e6_offset():
    ys = _offset_rows(1e6, n=2048)  # halves of 1024 rows: one compiled shape
    reference = np.cov(ys.T, bias=True)
    est = jg.welford()
    with jax.enable_x64(False):  # float64 NumPy rows, float32 estimator
        whole = jg.fit(est, ys)
        a, b = jg.fit(est, ys[:1024]).state, jg.fit(est, ys[1024:]).state
        cont = jg.fit(est, ys[1024:], state=a)
        merged = jg.merge(a, b)
    assert whole.estimate.cov.dtype == jnp.float32
    assert not np.array_equal(a.origin, b.origin)  # two frames merged
    for cov in (whole.estimate.cov, cont.estimate.cov, est.estimate(merged).cov):
        assert _rel_err(cov, reference) < 1e-5  # before: 1.3e-3
    assert _rel_err(est.estimate(merged).mean, ys.mean(0)) < 1e-6


def test_float32_fit_of_a_large_float64_array_with_1e8_offset():
    """A chunk too large to stay on the host (here 100 000 × 3 entries) is still
    centred in float64 before the cast to float32."""
    ys = _offset_rows(1e8, n=100_000)
    with jax.enable_x64(False):
        res = jg.fit(jg.welford(), ys)
    assert res.estimate.cov.dtype == jnp.float32
    assert _rel_err(res.estimate.cov, np.cov(ys.T, bias=True)) < 1e-5


def test_checkpoint_carries_the_origin(tmp_path):
    ys = _offset_rows(1e6, n=600)
    est = jg.welford()
    with jax.enable_x64(False):
        first = jg.fit(est, ys[:300])
        path = jg.checkpoint.save(tmp_path / "ck.npz", first.state, name="welford")
        like = est.init(jg.Gaussian.standard(3, jnp.float32))
        state = jg.checkpoint.load(path, like, name="welford")
        second = jg.fit(est, ys[300:], state=state)
    np.testing.assert_array_equal(state.origin, first.state.origin)
    assert _rel_err(second.estimate.cov, np.cov(ys.T, bias=True)) < 1e-5


def _location_and_spread(estimate):
    """(location, scatter) of a Gaussian, StudentT or Mixture estimate, float64, the
    mixture's components in the order of their first coordinate."""
    if isinstance(estimate, jg.Mixture):
        order = np.argsort(np.asarray(estimate.means)[:, 0])
        return (
            np.asarray(estimate.means, np.float64)[order],
            np.asarray(estimate.covs, np.float64)[order],
        )
    spread = estimate.scale if isinstance(estimate, jg.StudentT) else estimate.cov
    return np.asarray(estimate.mean, np.float64), np.asarray(spread, np.float64)


OFFSET_ESTIMATORS = {
    "welford": lambda: jg.welford(),
    "natural": lambda: jg.natural_gradient(),
    "exponential": lambda: jg.exponential(300.0),
    "rolling": lambda: jg.rolling(500),
    "student_t": lambda: jg.student_t(4.0),
    "mixture": lambda: jg.gaussian_mixture(2, key=jax.random.key(0)),
}


# The latent models compile EM programs of their own (3-5 s each): slow.
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=[pytest.mark.slow] if n in ("student_t", "mixture") else [])
        for n in OFFSET_ESTIMATORS
    ],
)
def test_float32_accuracy_with_an_offset_for_every_moment_keeping_estimator(name):
    """Issue 25, case 7: a float32 fit of float64 rows + c equals the fit of the rows
    themselves, shifted by c, for every estimator that keeps moments, as welford's
    does (the state keeps its locations relative to the first row, ``fit``
    subtracts it in float64). Before, only welford and the moment estimators had
    that frame: student_t at c = 1e5 moved by 0.12 (scale 1), rolling(500) at 1e6
    had a relative covariance error of 1.3e-2, the mixture's covariances at 1e7 grew
    by 7 %. Tolerances: the estimate's location is a float32 number near c, so it
    is exact to an ulp of c; the spreads to 1e-3 relative (float32 rounding of rows
    in two frames, amplified by the EM iterations; well above the ~1e-6 seen)."""
    rng = np.random.default_rng(1)
    y = rng.standard_t(5, size=(3000, 2)) @ np.array([[1.0, 0.0], [0.5, 1.0]])
    if name == "mixture":
        y[::2] += 6.0  # two clusters
    est = OFFSET_ESTIMATORS[name]()
    offset = 1e5 if name == "student_t" else 1e7
    with jax.enable_x64(False):
        plain = _location_and_spread(jg.fit(est, y).estimate)
        moved = _location_and_spread(jg.fit(est, y + offset).estimate)
    ulp = float(np.spacing(np.float32(offset)))
    np.testing.assert_allclose(moved[0] - offset, plain[0], atol=ulp + 1e-4)
    assert _rel_err(moved[1], plain[1]) < 1e-3


# --- 5. small covariance entries next to a large mean --------------------------------


def test_tfp_running_covariance_case_float32():
    # Ported from TensorFlow Probability's running-covariance tests (seed 17, 100 × 10
    # uniform·10): rtol 1e-5, atol 1e-6 against NumPy (before: entry [2, 3] off by 6.3e-7).
    x = np.random.RandomState(17).rand(100, 10) * 10
    res = jg.fit(jg.welford(), x.astype(np.float32))
    np.testing.assert_allclose(res.estimate.cov, np.cov(x.T, bias=True), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch_size", [1, 50])
def test_nist_mavro_float64(batch_size):
    x = np.asarray(MAVRO)[:, None]
    res = jg.fit(jg.welford(ddof=1), x, batch_size=batch_size)
    np.testing.assert_allclose(np.sqrt(res.estimate.cov[0, 0]), MAVRO_STD, rtol=1e-13)
    np.testing.assert_allclose(res.estimate.mean[0], MAVRO_MEAN, rtol=1e-15)


# --- 6. all rows skipped ---------------------------------------------------------------


def test_all_rows_skipped_is_an_error():
    rows = np.full((5, 2), np.nan)
    with pytest.raises(ValueError, match="no finite rows") as err:
        jg.fit(jg.welford(), rows, nan_policy="skip")
    assert err.value.result.n_skipped == 5
    state = jg.fit(jg.welford(), np.ones((3, 2))).state
    with pytest.raises(ValueError, match="no finite rows") as err:
        jg.fit(jg.welford(), rows, nan_policy="skip", state=state)
    assert int(err.value.result.state.count) == 3  # the continued state is kept


# --- 8. natural_gradient steps outside (0, 1] --------------------------------------------


@pytest.mark.parametrize("rate", [1.5, 0.0, -0.1, np.array([0.5, 2.0]), jnp.array(1.5)])
def test_static_rate_out_of_range_is_refused(rate):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        jg.natural_gradient(rate)


def test_guard_rejects_a_scheduled_step_out_of_range():
    ys = np.random.default_rng(0).standard_normal((40, 2))
    schedule = lambda k: jnp.where(k < 17, 0.1, 1.5)  # noqa: E731  (row 17 on: a = 1.5)
    res = jg.fit(jg.natural_gradient(schedule), ys)
    assert int(res.diverged_at) == 17  # before: -1, with an indefinite Σ
    kept = jg.fit(jg.natural_gradient(schedule), ys[:17])
    np.testing.assert_allclose(res.estimate.cov, kept.estimate.cov, rtol=1e-12)


@pytest.mark.slow  # quick-suite budget: covered quickly by simpler cases
def test_sweep_reports_traced_rates_out_of_range_and_never_picks_them():
    truth = jg.Gaussian(jnp.zeros(2), jnp.eye(2))
    sw = jg.sweep(
        jg.natural_gradient, np.array([0.05, 1.5, -0.2]), truth=truth, n_steps=40, seeds=2
    )
    assert np.all(np.asarray(sw.diverged_at[1:]) == 0) and np.all(np.asarray(sw.diverged_at[0]) < 0)
    assert sw.best() == pytest.approx(0.05)


def test_best_and_stats_ignore_nan_efficiency():
    eff = np.array([[np.nan, np.nan], [2.0, 3.0], [np.nan, 1.0]])
    res = jg.SweepResult(
        np.array([0.1, 0.2, 0.3]), eff, np.full((3, 2), -1), None, np.ones(2), eff, None
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no All-NaN warnings either
        median, _, _, _ = res.stats()
    assert np.isnan(median[0]) and median[1] == 2.5
    assert res.best() == 0.2  # 0.3 has a NaN seed: never best
    all_nan = res._replace(efficiency=np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="NaN"):
        all_nan.best()


# --- 9. counters near 2³¹ ----------------------------------------------------------------


def test_counter_passes_2_to_31_with_x64():
    ys = np.random.default_rng(1).standard_normal((10, 2))
    est = jg.welford()
    start = est.init(jg.Gaussian(jnp.ones(2), jnp.eye(2)))._replace(count=jnp.asarray(2**31 - 5))
    res = jg.fit(est, ys, state=start)
    assert res.state.count.dtype == jnp.int64 and int(res.state.count) == 2**31 + 5
    n = 2**31 - 5  # the old mean keeps weight n / (n + 10): before, the count wrapped negative
    np.testing.assert_allclose(res.estimate.mean, (n * 1.0 + ys.sum(0)) / (n + 10), rtol=1e-14)
    merged = jg.merge(res.state, res.state._replace(prior_weight=jnp.zeros(())))
    assert int(merged.count) == 2 * (2**31 + 5)


def test_int32_counters_refuse_to_wrap():
    ys = np.zeros((10, 2), np.float32)
    est = jg.welford()
    with jax.enable_x64(False):
        start = est.init(jg.Gaussian.standard(2, jnp.float32))
        assert start.count.dtype == jnp.int32
        near = start._replace(count=jnp.asarray(2**31 - 5, jnp.int32))
        with pytest.raises(ValueError, match="int32 counter") as err:
            jg.fit(est, ys, state=near)
        assert int(err.value.result.state.count) == 2**31 - 5  # nothing applied, nothing lost
        half = start._replace(count=jnp.asarray(1_600_000_000, jnp.int32))
        with pytest.raises(ValueError, match="int32 counter"):
            jg.merge(half, half)


# --- 13. the XLA scheduler workaround ----------------------------------------------------


@pytest.mark.slow  # quick-suite budget: covered quickly by simpler cases
def test_import_sets_the_flag_keeping_user_flags():
    flags = "--xla_force_host_platform_device_count=2"
    code = "import os, jaxgauss, jax; print(os.environ['XLA_FLAGS']); print(len(jax.devices()))"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**ENV, "XLA_FLAGS": flags},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    line, devices = proc.stdout.split("\n")[:2]
    assert line.split() == [flags, _xla_flags.FLAG] and devices == "2"


def test_flag_kept_once_not_added_for_old_jaxlib_and_warns_when_late():
    env = {"XLA_FLAGS": f"--{_xla_flags.NAME}=true"}  # the user's own choice stays
    assert _xla_flags.apply(env, version=(0, 10, 2), started=False) == "present"
    assert env["XLA_FLAGS"] == f"--{_xla_flags.NAME}=true"
    env = {}
    assert _xla_flags.apply(env, version=(0, 10, 2), started=False) == "set"
    assert _xla_flags.apply(env, version=(0, 10, 2), started=False) == "present"
    assert env["XLA_FLAGS"].count(_xla_flags.NAME) == 1
    env = {}
    assert _xla_flags.apply(env, version=(0, 4, 1), started=False) == "unknown"
    assert env == {}  # an unknown flag would abort XLA
    with pytest.warns(RuntimeWarning, match="XLA_FLAGS"):
        assert _xla_flags.apply(env, version=(0, 10, 2), started=True) == "late"
    assert env == {}


# --- 14. wide data -----------------------------------------------------------------------


def test_cli_wide_csv_beyond_memory_exits_2_with_the_estimate(tmp_path, cli, monkeypatch):
    path = tmp_path / "wide.csv"
    np.savetxt(path, np.random.default_rng(0).standard_normal((3, 20_000)), delimiter=",")
    monkeypatch.setattr(_memory, "available_memory", lambda: 2**30)
    proc = cli("fit", str(path), "--quiet")  # before: exit 139
    assert proc.returncode == 2, proc.stderr
    assert "needs about" in proc.stderr and "GiB" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_default_init_is_not_factored_and_user_init_is_checked(monkeypatch):
    def no_host_cholesky(*_):
        raise AssertionError("the host Cholesky must not run")

    monkeypatch.setattr(np.linalg, "cholesky", no_host_cholesky)
    ys = np.random.default_rng(0).standard_normal((4, 300))
    assert jg.fit(jg.welford(), ys).n_rows == 4
    bad = jg.Gaussian(jnp.zeros(300), jnp.eye(300).at[7, 7].set(-1.0))
    with pytest.raises(ValueError, match="not positive definite"):
        jg.fit(jg.welford(), ys, init=bad)


def test_fit_refuses_what_cannot_fit(monkeypatch):
    # d = 2000: ~150 MB of state copies, above the 64 MiB below which nothing is checked
    monkeypatch.setattr(_memory, "available_memory", lambda: 10**6)
    with pytest.raises(ValueError, match="needs about"):
        jg.fit(jg.welford(), np.zeros((2, 2000)))
    jg.fit(jg.welford(), np.zeros((2, 40)))  # a small fit is not refused


def test_cli_large_covariance_goes_to_npy_beside_the_json(tmp_path, cli):
    ys = np.random.default_rng(0).standard_normal((5, 600))
    path, out = tmp_path / "w.npy", tmp_path / "r.json"
    np.save(path, ys)
    proc = cli("fit", str(path), "--quiet", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    got = json.loads(out.read_text())
    assert "cov" not in got
    cov = np.load(tmp_path / got["cov_file"])
    np.testing.assert_allclose(cov, np.cov(ys.T, bias=True), rtol=1e-4, atol=1e-5)


# --- 15. sweeps without a memory estimate -------------------------------------------------


def test_sweep_too_large_is_refused_with_the_estimate():
    truth = jg.Gaussian(jnp.zeros(2), jnp.eye(2))
    make = lambda lr: jg.gradient_ascent(optax.sgd(lr), "precision")  # noqa: E731
    with pytest.raises(ValueError, match="needs about .* seeds per call"):
        jg.sweep(make, [0.003, 0.03], truth=truth, n_steps=500, seeds=10**9)
