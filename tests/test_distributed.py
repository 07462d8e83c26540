"""Data-parallel ``fit`` and ``sweep`` across real processes on JAX's distributed
runtime (gloo collectives over 127.0.0.1), compared with one process.

One spawned group of processes runs a case's checks (tests/distributed_worker.py)
and writes JSON, because joining the runtime costs seconds per process.
"""

import contextlib
import json
import os
import signal
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
        pytest.param(2, DATA_CHECKS, marks=pytest.mark.slow),  # quick: the join test
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


# --- the command across processes: what they agree on, and how they stop together ------


def _command(args: list[str], port: int, n: int, i: int, heartbeat: int, init: int) -> list[str]:
    return [sys.executable, "-m", "jaxgauss", "fit", *args, "--quiet"] + [
        "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(n), "--process-id",
        str(i), "--heartbeat-timeout", str(heartbeat), "--init-timeout", str(init),
    ]  # fmt: skip


@contextlib.contextmanager
def _fit_processes(per_process: list[list[str]], heartbeat: int = 5, init: int = 60, ports=None):
    """``jaxgauss fit`` in one process per argument list, joined on 127.0.0.1 (or
    each on its own port of ``ports``); every one is ended on the way out."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    n = len(per_process)
    ports = ports or [_free_port()] * n
    procs = [
        subprocess.Popen(
            _command(args, ports[i], n, i, heartbeat, init),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i, args in enumerate(per_process)
    ]
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()


def _ends(procs, timeout: float) -> list[tuple[int, str, str]]:
    """Every process's (exit status, stdout, stderr), waiting at most ``timeout`` s in all."""
    deadline = time.monotonic() + timeout
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=max(1, deadline - time.monotonic()))
        out.append((p.returncode, stdout, stderr))
    return out


def _joined(proc) -> None:
    """Read ``proc``'s stderr until it says it joined (and agreed with the others)."""
    for line in proc.stderr:
        if "of 2," in line:
            return
    raise AssertionError(f"the process ended before joining: {proc.wait()}")


def _one_error(stderr: str) -> str:
    """The one line of an error on stderr (no traceback, no C++ stack trace)."""
    lines = [x for x in stderr.splitlines() if "error:" in x or "interrupted" in x]
    assert len(lines) == 1 and "Traceback" not in stderr and "***" not in stderr, stderr
    return lines[0]


@pytest.fixture
def own_files(tmp_path):
    """Two processes' own files of 4 000 and 3 000 rows, and a FIFO nothing writes to:
    a process reading it waits for good (as one stuck in a slow read would)."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(4000, 2)), rng.normal(size=(3000, 2)) * 2 + 5
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    os.mkfifo(tmp_path / "never.csv")
    return tmp_path, np.concatenate([a, b])


def test_a_process_that_cannot_join_says_so_in_time(own_files):
    """Issue 25, case 10: a peer that never joins, or a wrong port, aborted with a core
    dump at 16-25 s; now each process says it could not join within --init-timeout."""
    folder, _ = own_files
    alone = [str(folder / "a.npy")]
    with _fit_processes([alone, alone], init=3, ports=[_free_port(), _free_port()]) as procs:
        started = time.monotonic()
        for rc, _, stderr in _ends(procs, 60):
            assert rc == 2
            assert "could not join the distributed runtime within --init-timeout 3 s" in (
                _one_error(stderr)
            )
        assert time.monotonic() - started < 30


def test_process_0_whose_port_is_taken_says_so_at_once(own_files):
    """Process 0 runs the runtime's service in a child process; a port already in use
    made the service abort process 0 from C++ (its log line, no error of ours); now
    the join fails at once with the address named."""
    folder, _ = own_files
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with _fit_processes([[str(folder / "a.npy")]] * 2, init=20, ports=[port, 1]) as procs:
            started = time.monotonic()
            rc, _, stderr = _ends(procs[:1], 60)[0]
            assert time.monotonic() - started < 15  # not the 20 s --init-timeout
    assert rc == 2
    # JAX's service raises ("Failed to start RPC server") or its process crashes
    assert f"(the runtime's service could not start on [::]:{port}" in _one_error(stderr)


@pytest.mark.parametrize("option", [["--group-by", "0"], ["--weights", "1"]])
def test_groups_and_weights_are_refused_with_several_processes(cli, own_files, option):
    """Issue 25 (smaller): --group-by with --coordinator fitted the whole file in every
    process and each wrote --out; it is refused before joining, as --weights."""
    folder, _ = own_files
    res = cli("fit", folder / "a.npy", *option, "--coordinator", "127.0.0.1:1")
    assert res.returncode == 2
    assert res.stderr.strip() == (
        "jaxgauss fit: error: --group-by and --weights run in one process: drop "
        "--coordinator (and the other options of several processes) or split the file by "
        "group yourself"
    )


@pytest.mark.slow  # two joined processes, three times
def test_per_process_files_are_a_mode_and_otherwise_refused(own_files):
    """Issue 25, case 1: each process given its own file split it as if shared (n =
    3500 of 7000, exit 0). Without --per-process-files different files (also of one
    name and size) are refused in both processes; with it each fits all its rows and
    the fits combine exactly."""
    folder, both = own_files
    a, b = str(folder / "a.npy"), str(folder / "b.npy")
    with _fit_processes([[a], [b]]) as procs:
        ends = _ends(procs, 120)
    assert [e[0] for e in ends] == [2, 2]
    message = _one_error(ends[0][2])
    assert message == _one_error(ends[1][2])
    assert "FILE: a.npy (64128 bytes, sampled content " in message
    assert "(process 0), b.npy (48128 bytes, sampled content " in message
    assert message.endswith("pass --per-process-files in every process")
    # Each machine's own file of one name and size (equal shards): told apart by content.
    for i, rows in enumerate([both[:3500], both[3500:]]):
        (folder / str(i)).mkdir()
        np.save(folder / str(i) / "part.npy", rows)
    parts = [[str(folder / str(i) / "part.npy")] for i in range(2)]
    with _fit_processes(parts) as procs:
        ends = _ends(procs, 120)
    assert [e[0] for e in ends] == [2, 2]
    assert "FILE: part.npy (56128 bytes, sampled content " in _one_error(ends[0][2])
    out = folder / "r.json"
    with _fit_processes(
        [[a, "--per-process-files", "--out", str(out)], [b, "--per-process-files"]]
    ) as procs:
        ends = _ends(procs, 120)
    assert [e[0] for e in ends] == [0, 0], ends
    got = json.loads(out.read_text())
    assert got["n"] == 7000
    np.testing.assert_allclose(got["mean"], both.mean(0), rtol=1e-5)
    np.testing.assert_allclose(got["cov"], np.cov(both.T, bias=True), rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra, named",
    [
        (["--method", "natural", "--lr", "0.01"], "--method: welford (process 0), natural (process 1); --learning-rate: not given (process 0), 0.01 (process 1)"),
        (["--float64"], "--float64: off (process 0), on (process 1)"),
    ],
    ids=["method", "float64"],
)  # fmt: skip
def test_processes_that_disagree_are_refused_before_data_moves(own_files, extra, named):
    """Issue 25, cases 2 and 10: another method (process 0 wrote a welford result, exit
    0) or --float64 in one process only (both aborted in a gloo collective mismatch)
    are refused in both processes with the same line naming the difference."""
    folder, _ = own_files
    a = str(folder / "a.npy")
    with _fit_processes([[a], [a, *extra]]) as procs:
        ends = _ends(procs, 120)
    assert [e[0] for e in ends] == [2, 2]
    assert _one_error(ends[0][2]) == _one_error(ends[1][2])
    assert named in _one_error(ends[0][2])


@pytest.mark.slow
@pytest.mark.parametrize(
    "victim, how, codes, says",
    [
        (1, signal.SIGINT, [2, 130], ["process 1 stopped: interrupted (Ctrl-C)", "interrupted"]),
        (1, signal.SIGTERM, [2, 2], ["process 1 stopped: terminated (signal 15)", "terminated"]),
        (1, signal.SIGKILL, [2, -9], ["process 1 stopped without a word", None]),
        (0, signal.SIGKILL, [-9, 2], [None, "process 0 stopped without a word"]),
    ],
    ids=["sigint", "sigterm", "killed", "process-0-killed"],
)
def test_a_stopped_process_stops_the_other(own_files, victim, how, codes, says):
    """Issue 25, cases 9 and 10: process 1 waits in a read (a FIFO), process 0 in a
    collective for it. Ctrl-C left both hanging, SIGTERM was swallowed by JAX's
    preemption notifier and a killed peer aborted the other in C++ (process 0 killed,
    which hosted the runtime: exit 134 and a stack trace in process 1, at once). Now
    the stopped process ends at once and the other within the heartbeat timeout, one
    line each."""
    folder, _ = own_files
    files = [str(folder / "a.npy"), str(folder / "never.csv")]
    heartbeat = 5
    with _fit_processes([files, files], heartbeat=heartbeat) as procs:
        _joined(procs[1])
        time.sleep(1)  # process 1 is in its read, process 0 in the collective
        procs[victim].send_signal(how)
        stopped = time.monotonic()
        ends = _ends(procs, heartbeat + 30)
        assert time.monotonic() - stopped < heartbeat + 10
    assert [e[0] for e in ends] == codes
    for (_, _, stderr), line in zip(ends, says):
        if line is not None:
            assert line in _one_error(stderr)


@pytest.mark.slow
def test_an_error_in_one_process_after_joining_stops_the_other(own_files, tmp_path):
    """Issue 25, case 9: an error in one process after joining left the other waiting
    in a collective (~300 s). Here process 0's --resume state was saved for float64
    rows and its own file is float32 (process 1's is float64): process 0 fails after
    joining, and process 1, waiting for it, stops with its line."""
    folder, both = own_files
    np.save(folder / "a32.npy", both[:4000].astype(np.float32))
    state = folder / "state.npz"
    save = ["fit", str(folder / "b.npy"), "--float64", "--checkpoint", str(state), "--quiet"]
    subprocess.run([sys.executable, "-m", "jaxgauss", *save], check=True, timeout=120)
    common = ["--per-process-files", "--float64", "--resume", str(state)]
    with _fit_processes(
        [[str(folder / "a32.npy"), *common], [str(folder / "b.npy"), *common]]
    ) as procs:
        ends = _ends(procs, 60)
    assert [e[0] for e in ends] == [2, 2]
    mine = _one_error(ends[0][2])
    assert "float32" in mine and "float64" in mine
    assert f"process 0 stopped: {mine.split('error: ', 1)[1]}" in _one_error(ends[1][2])


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
