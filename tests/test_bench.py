"""Smoke tests of the benchmarks on tiny sizes, so that they cannot rot: ``jaxgauss
bench`` (the installed package), ``python -m benchmarks`` (speed against peers, with
missing peers skipped) and the efficiency benchmark. Timings are not checked; the
peers' arithmetic is, against jaxgauss on the same rows."""

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxgauss as jg
from jaxgauss import bench, cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def benchmarks(monkeypatch):
    """The checkout's ``benchmarks`` package, importable whatever the working directory."""
    monkeypatch.syspath_prepend(str(ROOT))
    import benchmarks

    return benchmarks


def test_time_call_reports_median_and_compile():
    calls = []
    timing = bench.time_call(lambda: calls.append(1) or jnp.ones(2), repeats=3)
    assert len(calls) == 4  # one warm-up call, then the timed ones
    assert timing.repeats == 3 and timing.seconds >= 0 and timing.compile_seconds >= 0
    with pytest.raises(ValueError, match="repeats"):
        bench.time_call(lambda: None, repeats=0)


def test_case_rows_scales_with_cost_and_dimension():
    assert bench.case_rows(2**20, 10, 0) == 2**20
    assert bench.case_rows(2**20, 20, 0) == 2**19
    assert bench.case_rows(2**20, 10, 4) == 2**16
    assert bench.case_rows(1000, 100, 10) == 64


@pytest.mark.slow  # the whole harness end to end: run by .ci/run (-m slow)
def test_jaxgauss_bench_command(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert (
        cli.main(["bench", "--dims", "2", "--rows", "2048", "--repeats", "1", "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert [r["name"] for r in result["results"]] == [c.name for c in bench.CASES]
    assert all(r["rows_per_s"] > 0 and r["d"] == 2 for r in result["results"])
    assert result["machine"]["backend"] and result["machine"]["versions"]["jax"]
    for case in bench.CASES:
        assert f"| {case.name} | 2 |" in printed
    assert cli.main(["bench", "--rows", "0"]) == 2


@pytest.mark.slow  # the whole harness end to end: run by .ci/run (-m slow)
def test_speed_harness_with_missing_peers(benchmarks, monkeypatch, tmp_path):
    from benchmarks import __main__ as entry
    from benchmarks import peers, speed

    # Missing peers: an import of a module mapped to None raises ImportError.
    monkeypatch.setitem(sys.modules, "river", None)
    monkeypatch.setitem(sys.modules, "torch", None)
    # Two cases keep the test short; every peer runs.
    names = ("welford", "gradient_ascent(sgd, precision)")
    monkeypatch.setattr(bench, "CASES", tuple(c for c in bench.CASES if c.name in names))
    argv = ["speed", "--dims", "10", "--rows", "1024", "--repeats", "1"]
    assert entry.main([*argv, "--out", str(tmp_path), "--name", "tiny"]) == 0

    result = json.loads((tmp_path / "tiny.json").read_text())
    status = {p["name"]: p["status"] for p in result["peers"]}
    assert status[peers.RIVER] == status[peers.TORCH] == speed.SKIPPED
    assert all(s == "ok" for name, s in status.items() if name not in (peers.RIVER, peers.TORCH))
    targets = {(t["case"], t["peer"], t["d"]): t["result"] for t in result["targets"]}
    assert targets[("welford", peers.NUMPY_WELFORD, 10)] in ("pass", "miss")
    assert targets[("welford", peers.RIVER, 10)] == "not measured"
    assert result["breakdown"][0]["d"] == 10
    md = (tmp_path / "tiny.md").read_text()
    assert speed.SKIPPED in md and "## Targets" in md and "## Where a blocked" in md


@pytest.mark.slow  # the benchmarks' own peers (torch, river, NumPy)
def test_peers_compute_what_jaxgauss_computes(benchmarks, key):
    from benchmarks import peers

    rows = _rows(key, 200)
    mean, cov = peers.numpy_welford(rows)()
    np.testing.assert_allclose(cov, np.cov(rows, rowvar=False, bias=True), rtol=1e-4, atol=1e-5)

    question = jg.fit(jg.gradient_ascent(optax.sgd(peers.LEARNING_RATE), "covariance"), rows)
    mean, cov = peers.numpy_question(rows)()
    np.testing.assert_allclose(mean, question.estimate.mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cov, question.estimate.cov, rtol=1e-4, atol=1e-5)

    precision = jg.fit(jg.gradient_ascent(optax.sgd(peers.LEARNING_RATE), "precision"), rows)
    looped = peers.jax_jit_loop(rows)()
    np.testing.assert_allclose(looped.cov, precision.estimate.cov, rtol=1e-5, atol=1e-6)

    # float32 sums of 200 products in different orders (BLAS and XLA)
    np.testing.assert_allclose(peers.xla_gram(rows)(), peers.numpy_gram(rows)(), rtol=1e-5)


def test_torch_peer_matches_cholesky_gradient_ascent(benchmarks, key):
    pytest.importorskip("torch")
    from benchmarks import peers

    rows = _rows(key, 100)
    mean, raw = (t.numpy() for t in peers.torch_sgd(rows)())
    chol = np.tril(raw, -1) + np.diag(np.exp(np.diag(raw)))
    res = jg.fit(jg.gradient_ascent(optax.sgd(peers.LEARNING_RATE), "cholesky"), rows)
    np.testing.assert_allclose(mean, res.estimate.mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(chol @ chol.T, res.estimate.cov, rtol=1e-4, atol=1e-5)


def test_river_peer_matches_the_sample_mean(benchmarks, key):
    pytest.importorskip("river")
    from benchmarks import peers

    rows = _rows(key, 50)
    mu = peers.river_gaussian(rows)()
    np.testing.assert_allclose([mu[i] for i in range(3)], rows.mean(0), rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # the whole harness end to end: run by .ci/run (-m slow)
def test_efficiency_benchmark(benchmarks, monkeypatch, tmp_path):
    from benchmarks import efficiency

    methods = efficiency._methods()
    assert len({m.name for m in methods}) == len(methods) >= 5
    # Two methods (each compiles once per dtype) keep the test short.
    monkeypatch.setattr(efficiency, "_methods", lambda: (methods[0], methods[-1]))
    result = efficiency.run(d=2, seeds=2, max_rows=100, conditions=[1.0, 1e6], log=lambda s: None)
    by = {(r["method"], r["condition"]): r for r in result["results"]}
    assert {r["dtype"] for r in result["results"]} == {"float32", "float64"}
    assert by[("welford()", 1e6)]["n"] == [20, 40, 100]
    # In float64 welford is the batch MLE to rounding: efficiency 1.
    np.testing.assert_allclose(by[("welford()", 1e6)]["efficiency"], 1.0, rtol=1e-6)
    paths = efficiency.write(result, tmp_path)
    assert {p.name for p in paths} >= {"efficiency.json", "efficiency.md"}
    assert "| welford() |" in (tmp_path / "efficiency.md").read_text()


def _rows(key, n):
    """n float32 rows of a random 3-D Gaussian."""
    k_truth, k_rows = jax.random.split(key)
    return np.asarray(
        jg.streams.sample(k_rows, jg.streams.random_truth(k_truth, 3, 5.0), n), np.float32
    )


@pytest.mark.slow  # a fresh process that compiles about ten programs (~10 s)
def test_engine_benchmark_quick(tmp_path):
    pytest.importorskip("pandas")
    import subprocess

    cmd = [sys.executable, "-m", "benchmarks.engine", "--quick", "--out", str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "engine.json").read_text())
    cases = result["cases"]
    assert sorted({c["group"] for c in cases}) == [1, 2, 3, 4, 5]
    assert len(cases) == len(result["ratios"]) == 10
    assert all(r is not None and r > 0 for r in result["ratios"].values())
    assert all(c["result"] in ("pass", "miss", "information") for c in cases)
    assert sum(c["target"] is not None for c in cases) == 9
    assert result["settings"]["quick"] and not result["settings"]["x64"]
    assert set(result["load_average"]) == {"before", "after"}
    assert "| ratio | target | result |" in (tmp_path / "engine.md").read_text()


@pytest.mark.slow  # a fresh process (~5 s)
def test_normalizer_benchmark_quick(tmp_path):
    import subprocess

    cmd = [sys.executable, "-m", "benchmarks.normalizer", "--quick", "--out", str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "normalizer.json").read_text())
    assert [c["case"] for c in result["cases"]] == [
        "update",
        "normalize",
        "update vs peer",
        "normalize vs peer",
    ]
    assert all(r > 0 for r in result["ratios"].values())
    assert all(c["result"] in ("pass", "miss", "info") for c in result["cases"])
    assert result["settings"]["quick"] and not result["settings"]["x64"]
    assert "| ratio | target | result |" in (tmp_path / "normalizer.md").read_text()
