"""Data-parallel ``fit`` and ``sweep`` across real processes on JAX's distributed
runtime (gloo collectives over 127.0.0.1), compared with one process.

One spawned group of processes runs a case's checks (tests/distributed_worker.py)
and writes JSON, because joining the runtime costs seconds per process.
"""

import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest

import jaxgauss as jg

WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
N, D = 512, 3  # shards of 256 or 128 rows: one compiled shape per fit
BAD_ROW = 300  # global row of the NaN in bad.npy (rows 256..383 of the files)


def test_devices_are_checked():
    ys = np.zeros((4, 2))
    for devices, message in [([], "non-empty list"), (["cpu"], "jax devices"), (3, "list")]:
        with pytest.raises(ValueError, match=message):
            jg.fit(jg.welford(), ys, devices=devices)
    with pytest.raises(ValueError, match="trace_every"):
        jg.fit(jg.welford(), ys, devices=jax.devices(), trace_every=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(
    folder, processes: int, local_devices: int, checks: list[str], timeout: float = 300
) -> list[dict]:
    """Run the worker's ``checks`` in ``processes`` processes; end every one of them."""
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, str(port), str(processes), str(i), str(local_devices)]
            + [folder, ",".join(checks)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        for i in range(processes)
    ]
    try:
        deadline = time.monotonic() + timeout
        logs = [p.communicate(timeout=max(1, deadline - time.monotonic()))[0] for p in procs]
        for p, log in zip(procs, logs):
            assert p.returncode == 0, log.decode()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    out = []
    for i in range(processes):
        with open(os.path.join(folder, f"result-{i}.json")) as f:
            out.append(json.load(f))
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distributed")
    ys = np.random.default_rng(0).normal(size=(N, D)) * [1.0, 2.0, 0.5] + [50.0, 0.0, -3.0]
    np.save(folder / "data.npy", ys)
    for i, (a, b) in enumerate([(0, 256), (256, 384), (384, N)]):
        np.save(folder / f"part{i}.npy", ys[a:b])
    bad = ys[256:384].copy()
    bad[BAD_ROW - 256] = np.nan
    np.save(folder / "bad.npy", bad)
    return str(folder), ys


def _reordered(ys: np.ndarray, shards: int, local_batch: int) -> np.ndarray:
    """The rows in the order a single-device fit sees them: batch k is every shard's
    k-th local batch in shard order, the shorter last batch their remainders."""
    parts = np.split(ys, shards)
    m = parts[0].shape[0]
    full = m // local_batch * local_batch
    batches = [
        np.concatenate([p[k : k + local_batch] for p in parts]) for k in range(0, full, local_batch)
    ]
    return np.concatenate(batches + [np.concatenate([p[full:] for p in parts])])


def _close(got: dict, want: jg.FitResult, rtol: float) -> None:
    np.testing.assert_allclose(got["mean"], want.estimate.mean, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(got["cov"], want.estimate.cov, rtol=rtol, atol=1e-12)
    assert got["n_rows"] == want.n_rows and got["diverged_at"] == int(want.diverged_at)


# The moment estimators' data paths (files, chunks, Chan's merge, a bad row, unequal
# shards): each process compiles a few programs in seconds.
DATA_CHECKS = ["welford", "natural_files", "data_error", "unequal"]
# Also a forgetting estimator, traced gradient steps and a sweep: each compiles its
# sharded programs (~20 s more per process on 2 cores).
ALL_CHECKS = DATA_CHECKS + ["exponential", "adam", "sweep"]


# Two processes of two devices each: the data paths in the quick run, everything with
# -m slow; and everything on two processes of one device each.
@pytest.mark.parametrize(
    "local_devices, checks",
    [
        (2, DATA_CHECKS),
        pytest.param(2, ALL_CHECKS, marks=pytest.mark.slow),
        pytest.param(1, ALL_CHECKS, marks=pytest.mark.slow),
    ],
    ids=["2-data", "2-all", "1-all"],
)
def test_two_processes_equal_one(data, local_devices, checks):
    folder, ys = data
    results = _spawn(folder, 2, local_devices, checks)
    shards = 2 * local_devices
    assert [r["devices"] for r in results] == [shards, shards]
    assert results[0] == results[1]  # every process gets the same result
    got = results[0]
    assert set(got) == {"devices", "processes", "batch", *checks}
    # float64 throughout; the shards' states combine with Chan's formula (rounding only).
    _close(got["welford"], jg.fit(jg.welford(), ys), 1e-10)
    _close(got["natural_files"], jg.fit(jg.natural_gradient(), ys), 1e-10)
    assert got["data_error"] == {"row": BAD_ROW, "result": None}
    assert "equal length" in got["unequal"] and "multiple of the number of devices" in got["batch"]
    if "exponential" in checks:
        _close(got["exponential"], jg.fit(jg.exponential(20.0), ys), 1e-10)
    if "adam" in checks:
        # Gradient steps: the same global batches in the same order, so the same updates.
        adam = jg.fit(
            jg.gradient_ascent(optax.adam(0.05)),
            _reordered(ys, shards, 2),
            batch_size=2 * shards,
            trace_every=4,
        )
        _close(got["adam"], adam, 1e-10)
        np.testing.assert_allclose(got["adam"]["trace_cov"], adam.trace.estimate.cov, rtol=1e-10)
        assert got["adam"]["trace_rows"] == np.asarray(adam.trace.rows).tolist()
    if "sweep" in checks:
        truth = jg.Gaussian(np.zeros(2), np.eye(2))
        sweep = jg.sweep(
            jg.methods.make_method("sgd", "cholesky"),
            np.array([0.01, 0.1]),
            truth=truth,
            n_steps=64,
            seeds=3,
        )
        np.testing.assert_allclose(got["sweep"], sweep.final_kl, rtol=1e-10)


@pytest.mark.slow  # three processes, one killed; the quick run starts two in [2-data]
def test_a_dead_peer_ends_the_others(data):
    """Through the CLI: kill process 1 once it has joined; process 0, waiting for it in
    a collective, must exit non-zero within 60 s plus the heartbeat timeout."""
    folder, _ = data
    port, heartbeat = _free_port(), 5
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "jaxgauss", "fit", os.path.join(folder, "data.npy"), "--quiet"]
            + ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
            + ["--process-id", str(i), "--heartbeat-timeout", str(heartbeat)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        for i in range(2)
    ]
    try:
        for line in procs[1].stderr:
            if b"process 1 of 2" in line:
                break
        procs[1].kill()
        killed = time.monotonic()
        rc = procs[0].wait(timeout=60 + heartbeat)
        assert rc != 0 and time.monotonic() - killed < 60 + heartbeat
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            p.stderr.close()


FOUR_DEVICES = """
import json, sys
import jax
import numpy as np
import jaxgauss as jg

rng = np.random.default_rng(0)
x = rng.standard_normal((4000, 2)) @ np.array([[3.0, 1.0], [0.0, 2.0]]) + [1.0, -2.0]
out = {}
with jax.enable_x64(True):  # case 3: a known mean, float64
    for name, est in [
        ("natural", jg.natural_gradient(0.05, known_mean=0.0)),
        ("exponential", jg.exponential(50.0, known_mean=0.0)),
    ]:
        out[name] = [np.asarray(jg.fit(est, x, devices=d).estimate.cov).tolist()
                     for d in (None, jax.devices())]
x32 = x.astype(np.float32)
x32[1500] = 1e10  # case 4: float32, an outlier in the second shard
est = jg.natural_gradient(0.1)
out["outlier"] = [np.asarray(jg.fit(est, x32, devices=d).estimate.cov).tolist()
                  for d in (None, jax.devices())]
json.dump(out, sys.stdout)
"""


@pytest.mark.slow
def test_four_devices_equal_one_for_known_means_and_float32_outliers():
    """Issue 25, cases 3 and 4: natural_gradient and exponential with a known mean
    were wrong across devices (the shard's shift moved a mean that must not move), and
    in float32 the shard fold's K = 1 − W rounded to 0 past a 1e10 outlier (cov₀₀ 1.30
    against 46.8). Four host devices now equal one device."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run(
        [sys.executable, "-c", FOUR_DEVICES], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    for name in ("natural", "exponential"):
        one, four = out[name]
        np.testing.assert_allclose(four, one, rtol=1e-12)
    one, four = out["outlier"]
    # float32, entries of ~1e2 built from a 1e20 square: relative rounding of a few ulps
    np.testing.assert_allclose(four, one, rtol=1e-5)
