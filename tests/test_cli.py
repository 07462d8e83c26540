"""The ``jaxgauss`` command end to end, as a user runs it: through ``cli.main`` in this
process (the ``cli`` fixture), and in processes of its own for the console entry,
standard input, signals and a closed stdout."""

import json
import re
import subprocess
import sys
import time

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


def test_every_subcommand_has_help(cli):
    out = _jaxgauss("--help")  # the console entry itself, in a process of its own
    assert out.returncode == 0 and "usage: jaxgauss" in out.stdout
    for command in COMMANDS:
        out = cli(command, "--help")
        assert out.returncode == 0 and "usage: jaxgauss " + command in out.stdout


@pytest.mark.slow  # the whole main job, as .ci/run's first command also runs it
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
def test_fit_writes_json_that_matches_numpy(tmp_path, table, name, cli):
    result = tmp_path / "result.json"
    args = ["fit", str(tmp_path / name), "--out", str(result), "--float64", "--chunk", "64"]
    out = cli(*args)
    assert out.returncode == 0, out.stderr
    assert "n = 500 rows" in out.stdout
    got = json.loads(result.read_text())
    assert got["n"] == 500 and got["method"] == "welford" and got["diverged_at"] == -1
    np.testing.assert_allclose(got["mean"], table.mean(0), rtol=1e-12)
    np.testing.assert_allclose(got["cov"], np.cov(table.T, bias=True), rtol=1e-10)


def test_fit_checkpoint_and_resume(tmp_path, table, cli):
    np.save(tmp_path / "a.npy", table[:200])
    np.save(tmp_path / "b.npy", table[200:])
    first = cli("fit", str(tmp_path / "a.npy"), "--checkpoint", str(tmp_path / "ck"), "--float64")
    assert first.returncode == 0, first.stderr
    result = tmp_path / "r.json"
    args = ["fit", str(tmp_path / "b.npy"), "--resume", str(tmp_path / "ck.npz"), "--float64"]
    second = cli(*args, "--out", str(result))
    assert second.returncode == 0, second.stderr
    got = json.loads(result.read_text())
    np.testing.assert_allclose(got["cov"], np.cov(table.T, bias=True), rtol=1e-10)
    # The count is cumulative (not 300), and both parts are said.
    assert (got["n"], got["n_this_run"], got["n_resumed"]) == (500, 300, 200)
    assert "n = 500 rows (0 skipped, 300 in this run, 200 from" in second.stdout


def test_fit_bad_input_is_one_line_and_exit_2(tmp_path, table, cli):
    bad = table.copy()
    bad[123, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    (tmp_path / "text.csv").write_text("a,b\n1,2\n3,x\n")
    np.save(tmp_path / "flat.npy", np.ones(5))
    (tmp_path / "empty.npy").write_bytes(b"")
    big = table.copy()
    big[7, 0] = 1e39
    np.save(tmp_path / "big.npy", big)
    cases = {
        ("fit", str(tmp_path / "nan.npy")): "row 123 is not finite",
        ("fit", str(tmp_path / "text.csv")): "column 1 is not a number: 'x'",
        ("fit", str(tmp_path / "flat.npy")): "2-D",
        ("fit", str(tmp_path / "missing.npy")): "no such file",
        ("fit", str(tmp_path / "nan.npy"), "--method", "sgd"): "needs --lr",
        ("fit", str(tmp_path / "empty.npy")): "empty (0 bytes)",
        ("fit", str(tmp_path / "flat.npy"), "--lr", "0.1"): "welford does not take --lr",
        ("fit", str(tmp_path / "flat.npy"), "--out", ""): "--out must name",
        ("sweep", "--out", str(tmp_path / "flat.npy")): "is a file, not a folder",
        ("demo", "--out", str(tmp_path / "flat.npy")): "is a file, not a folder",
    }
    for args, message in cases.items():
        out = cli(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
    # In float32, as a user's process runs without --float64.
    big = cli("fit", str(tmp_path / "big.npy"))
    assert big.returncode == 2 and "Traceback" not in big.stderr, big.stderr
    assert "overflows float32 (|x| > 3.4e+38); pass --float64" in big.stderr
    skip = cli("fit", str(tmp_path / "nan.npy"), "--nan-policy", "skip", "--quiet")
    assert skip.returncode == 0 and "n = 499 rows (1 skipped)" in skip.stdout


def _csv_text(rows):
    return "".join(f"{a!r},{b!r}\n" for a, b in rows.tolist())


@pytest.mark.slow  # quick-suite budget: covered quickly by simpler cases
def test_fit_keeps_every_row_before_a_bad_cell_and_resumes(tmp_path, cli):
    # Item 1 of the hostile-input review: a bad cell at row 200 000 of 300 000 must not
    # lose the 200 000 rows before it. The checkpoint keeps them; resuming on the rows
    # after the bad one (here from standard input, a pipe: nothing may probe it
    # twice) equals one clean pass over the good rows.
    rows = np.random.default_rng(1).normal(size=(300_000, 2)) * [1.0, 3.0] + [2.0, -1.0]
    bad = 200_000
    lines = _csv_text(rows).splitlines(keepends=True)
    lines[bad] = "1.0,oops\n"
    (tmp_path / "f.csv").write_text("x,y\n" + "".join(lines))
    ck, part, full = tmp_path / "ck.npz", tmp_path / "part.json", tmp_path / "full.json"
    first = cli(
        "fit", str(tmp_path / "f.csv"), "--checkpoint", str(ck), "--out", str(part), "--float64"
    )
    assert first.returncode == 2, first.stderr
    assert f"CSV row {bad} (line {bad + 2}) column 1 is not a number: 'oops'" in first.stderr
    assert "Traceback" not in first.stderr and ck.exists()
    got = json.loads(part.read_text())
    assert got["partial"] and got["stopped_at_row"] == bad and got["n"] == bad
    np.testing.assert_allclose(got["mean"], rows[:bad].mean(0), rtol=1e-12)

    rest = "".join(lines[bad + 1 :])
    second = subprocess.run(
        [sys.executable, "-m", "jaxgauss", "fit", "-", "--resume", str(ck), "--float64"]
        + ["--out", str(full), "--quiet"],
        input=rest,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 0, second.stderr
    good = np.delete(rows, bad, axis=0)
    got = json.loads(full.read_text())
    assert got["n"] == len(good) and not got["partial"]
    np.testing.assert_allclose(got["mean"], good.mean(0), rtol=1e-12)
    np.testing.assert_allclose(got["cov"], np.cov(good.T, bias=True), rtol=1e-10)


def test_outputs_are_safe(tmp_path, table, cli):
    # Item 2 and 3: the checkpoint is written before --out and stdout, so a bad --out
    # path or a closed stdout does not cost it; no output may be an input.
    data = tmp_path / "ys.npy"
    before = data.read_bytes()
    (tmp_path / "link.npy").symlink_to(data)
    linked = cli("fit", str(data), "--out", str(tmp_path / "link.npy"))
    assert linked.returncode == 2 and "same file as FILE" in linked.stderr
    assert data.read_bytes() == before

    ck = tmp_path / "ck.npz"
    bad_out = cli(
        "fit", str(data), "--checkpoint", str(ck), "--out", str(tmp_path / "no" / "r.json")
    )
    assert bad_out.returncode == 2 and "--out" in bad_out.stderr and ck.exists()
    ck.unlink()

    # stdout closed before anything is printed (`| head -0`): quiet, checkpoint kept.
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxgauss", "fit", str(data), "--checkpoint", str(ck), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=300) == 141 and stderr == "", stderr
    assert ck.exists()


def test_resume_is_checked_against_the_run(tmp_path, table, cli):
    # Item 7 (another parameterisation must not read the factor as its own), item 18
    # (a state of d = 3 continued with 2 columns) and item 12 (a gradient checkpoint
    # after a short final batch warns).
    ck = tmp_path / "ck.npz"
    first = cli(
        "fit", str(tmp_path / "ys.npy"), "--method", "sgd", "--lr", "0.01",
        "--batch-size", "64", "--checkpoint", str(ck), "--quiet",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "the last 52 rows were one shorter update" in first.stderr  # 500 = 7 * 64 + 52
    np.save(tmp_path / "two.npy", table[:, :2])
    cases = {
        ("ys.npy", "--parameterization", "precision"): (
            "saved with d=3 dtype=float32 learning_rate=0.01 method=sgd parameterization=cholesky; "
            "this run has d=3 dtype=float32 learning_rate=0.01 method=sgd parameterization=precision"
        ),
        (
            "ys.npy",
            "--lr",
            "0.02",
        ): "learning_rate=0.01 method=sgd parameterization=cholesky; this run has",
        ("two.npy",): "two.npy has 2 columns, the resumed state has d = 3",
    }
    for (name, *extra), message in cases.items():
        args = ["fit", str(tmp_path / name), "--method", "sgd", "--resume", str(ck)]
        out = cli(*args, *(extra if "--lr" in extra else [*extra, "--lr", "0.01"]))
        assert out.returncode == 2 and message in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


def test_ctrl_c_keeps_the_rows_done(tmp_path):
    # Ctrl-C mid-fit: exit status 130, and the checkpoint holds the rows done so far.
    # The rows come through standard input and the writer stops after 2 000 of them,
    # so the signal lands while the fit waits for more (not after it has finished).
    import signal

    from jaxgauss import checkpoint

    rows = np.random.default_rng(2).normal(size=(2_000, 2))
    ck = tmp_path / "ck.npz"
    # A process started in the background of a shell inherits SIGINT ignored, and Python
    # then keeps it ignored: the child restores Python's own handler before the command.
    run_cli = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv[0] = 'jaxgauss'; runpy.run_module('jaxgauss', run_name='__main__')"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", run_cli, "fit", "-", "--chunk", "256", "--checkpoint", str(ck)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        proc.stdin.write("".join(f"{a:.17g},{b:.17g}\n" for a, b in rows).encode())
        proc.stdin.flush()
        seen = b""
        while b" rows " not in seen:  # the first progress line: the fit is running
            byte = proc.stderr.read(1)
            assert byte, seen
            seen += byte
        proc.send_signal(signal.SIGINT)
        # The signal may reach another thread while the main one blocks reading stdin:
        # one more line wakes the read so the interrupt is handled with stdin still open
        # (closing it first would end the stream and let the fit finish normally).
        time.sleep(0.5)
        try:
            proc.stdin.write(b"0.5,0.5\n")
            proc.stdin.flush()
        except BrokenPipeError:  # it had already stopped: nothing to wake
            pass
        proc.wait(timeout=120)
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        err = proc.stderr.read()
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert b"interrupted" in err and b"Traceback" not in err
    done = checkpoint.info(ck)["rows"]
    assert 0 < done <= 2_001


@pytest.mark.parametrize(
    "method, message",
    [
        # issue 25, case 13: "--dof 4" was an unrecognised argument after "needs --dof"
        (["student-t", "--dof", "4"], "estimates a StudentT, not a Gaussian.*jaxgauss.sweep"),
        (["mixture", "--components", "2"], "estimates a Mixture, not a Gaussian"),
        (["sgd", "--dof", "4"], "method sgd does not take --dof"),
        (["student-t", "--dof", "4", "--power", "0.7"], "--power is what the sweep"),
    ],
)
def test_sweep_takes_a_methods_fixed_hyperparameters_and_says_what_it_cannot_sweep(
    cli, tmp_path, method, message
):
    """The sweep command has the registry's hyperparameter options (what a method
    holds fixed while its swept one varies), refuses one a method does not take or
    the swept one itself, and refuses in one line the methods whose estimate it cannot
    score by KL (Student-t, mixtures) instead of a traceback."""
    res = cli("sweep", "--method", *method, "--steps", "100", "--out", tmp_path / "s")
    assert res.returncode == 2 and re.search(message, res.stderr), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_a_process_id_that_cannot_exist_is_named_before_joining(cli, tmp_path):
    """Issue 25 (smaller): --num-processes 1 --process-id 1 waited out the join and
    reported an init time-out; the ids are checked before anything joins."""
    np.save(tmp_path / "a.npy", np.zeros((4, 2)))
    res = cli(
        "fit", tmp_path / "a.npy", "--coordinator", "127.0.0.1:1",
        "--num-processes", "1", "--process-id", "1",
    )  # fmt: skip
    assert res.returncode == 2
    assert "--process-id must be >= 0 and below --num-processes 1, got 1" in res.stderr


@pytest.mark.slow  # three estimators' programs (a mixture's EM among them)
def test_fit_options_of_issue_28_equal_the_python_fits(cli, tmp_path):
    """``--covariance-type``, ``--dof auto`` and ewm's ``--alpha``/``--no-adjust``/
    ``--bias`` come from the registry and give the Python fits' numbers (float64: the
    same programs on the same rows, so to rounding)."""
    import json

    import jax

    import jaxgauss as jg

    rows = np.random.default_rng(0).standard_t(5, size=(800, 3))
    np.save(tmp_path / "rows.npy", rows)
    cases = {
        ("--method", "mixture", "--components", "2", "--covariance-type", "diag"): (
            jg.gaussian_mixture(2, key=jax.random.key(0), covariance_type="diag"),
            "covs",
        ),
        ("--method", "student-t", "--dof", "auto"): (jg.student_t(None), "dof"),
        ("--method", "ewm", "--alpha", "0.06", "--no-adjust", "--bias"): (
            jg.ewm(alpha=0.06, adjust=False, bias=True),
            "cov",
        ),
    }
    for args, (est, field) in cases.items():
        out = tmp_path / "out.json"
        res = cli("fit", tmp_path / "rows.npy", "--quiet", "--float64", *args, "--out", out)
        assert res.returncode == 0, res.stderr
        expected = getattr(jg.fit(est, rows).estimate, field)
        np.testing.assert_allclose(json.loads(out.read_text())[field], expected, rtol=1e-10)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--method", "mixture", "--components", "2", "--covariance-type", "ful"],
            "invalid choice",
        ),
        (["--method", "student-t", "--dof", "many"], "expected a number or auto"),
        (["--method", "ewm"], "exactly one of"),
        (["--method", "ewm", "--alpha", "0.5", "--span", "3"], "exactly one of"),
        (["--method", "ewm", "--alpha", "1.5"], r"--alpha alpha must be in \(0, 1\]"),
    ],
)
def test_fit_refuses_bad_new_options(cli, tmp_path, args, message):
    np.save(tmp_path / "rows.npy", np.zeros((4, 2)))
    res = cli("fit", tmp_path / "rows.npy", "--quiet", *args)
    assert res.returncode == 2 and re.search(message, res.stderr), res.stderr
