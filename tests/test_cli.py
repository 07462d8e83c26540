"""The ``jaxgauss`` command end to end, as a user runs it (subprocesses)."""

import json
import subprocess
import sys

import numpy as np
import pytest

COMMANDS = ["demo", "fit", "sweep", "bench"]


def _jaxgauss(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "jaxgauss", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command):
    out = _jaxgauss(command, "--help")
    assert out.returncode == 0 and "usage: jaxgauss " + command in out.stdout


def test_demo_end_to_end(tmp_path):
    out = _jaxgauss("demo", "--steps", "2000", "--out", str(tmp_path / "demo"), "--seed", "3")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "Why the question's gradient ascent does not converge" in text
    for method in ["question: SGD α=0.002 on Σ", "natural gradient 1/t", "Welford", "Adam"]:
        assert method in text
    assert (tmp_path / "demo" / "demo.png").stat().st_size > 10_000
    assert (
        "| 1-D N(0,1) | natural gradient 1/t | 0.001 |"
        in (tmp_path / "demo" / "demo.md").read_text()
    )


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    ys = rng.normal(size=(500, 3)) @ np.diag([1.0, 2.0, 3.0]) + 5.0
    np.save(tmp_path / "ys.npy", ys)
    np.savetxt(tmp_path / "ys.csv", ys, delimiter=",", header="a,b,c", comments="", fmt="%.17g")
    return ys


@pytest.mark.parametrize("name", ["ys.npy", "ys.csv"])
def test_fit_writes_json_that_matches_numpy(tmp_path, table, name):
    result = tmp_path / "result.json"
    args = ["fit", str(tmp_path / name), "--out", str(result), "--float64", "--chunk", "64"]
    out = _jaxgauss(*args)
    assert out.returncode == 0, out.stderr
    assert "n = 500 rows" in out.stdout
    got = json.loads(result.read_text())
    assert got["n"] == 500 and got["method"] == "welford" and got["diverged_at"] == -1
    np.testing.assert_allclose(got["mean"], table.mean(0), rtol=1e-12)
    np.testing.assert_allclose(got["cov"], np.cov(table.T, bias=True), rtol=1e-10)


def test_fit_checkpoint_and_resume(tmp_path, table):
    np.save(tmp_path / "a.npy", table[:200])
    np.save(tmp_path / "b.npy", table[200:])
    first = _jaxgauss(
        "fit", str(tmp_path / "a.npy"), "--checkpoint", str(tmp_path / "ck"), "--float64"
    )
    assert first.returncode == 0, first.stderr
    result = tmp_path / "r.json"
    args = ["fit", str(tmp_path / "b.npy"), "--resume", str(tmp_path / "ck.npz"), "--float64"]
    second = _jaxgauss(*args, "--out", str(result))
    assert second.returncode == 0, second.stderr
    np.testing.assert_allclose(
        json.loads(result.read_text())["cov"], np.cov(table.T, bias=True), rtol=1e-10
    )


def test_fit_bad_input_is_one_line_and_exit_2(tmp_path, table):
    bad = table.copy()
    bad[123, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    (tmp_path / "text.csv").write_text("a,b\n1,2\n3,x\n")
    np.save(tmp_path / "flat.npy", np.ones(5))
    cases = {
        ("fit", str(tmp_path / "nan.npy")): "row 123 is not finite",
        ("fit", str(tmp_path / "text.csv")): "column 1 is not a number: 'x'",
        ("fit", str(tmp_path / "flat.npy")): "2-D",
        ("fit", str(tmp_path / "missing.npy")): "no such file",
        ("fit", str(tmp_path / "nan.npy"), "--method", "sgd"): "needs --lr",
    }
    for args, message in cases.items():
        out = _jaxgauss(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
    skip = _jaxgauss("fit", str(tmp_path / "nan.npy"), "--nan-policy", "skip", "--quiet")
    assert skip.returncode == 0 and "n = 499 rows (1 skipped)" in skip.stdout
