"""Tests for ``jaxgauss.sweep``: each cell against ``fit`` on the same stream and the
MLE reference against ``jaxgauss.mle``; one compilation for the whole grid; chunking,
padding and device count change nothing; divergence stays in its own cell; the
``jaxgauss sweep`` command end to end."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxgauss as jg
from jaxgauss import SweepResult, grid_product, sweep
from jaxgauss.methods import METHODS, make_method

ROOT = Path(__file__).resolve().parents[1]
F64 = jnp.float64


def _truth(d=2, condition=10.0):
    return jg.streams.random_truth(jax.random.key(7), d, condition, dtype=F64)


def _stream(key, seeds, s, truth, n):
    """Seed s's rows as the docstring defines them: row t from fold_in(key_s, t)."""
    key_s = jax.random.split(key, seeds)[s]
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key_s, jnp.arange(n))
    return jax.vmap(lambda k: jg.streams.sample(k, truth, 1)[0])(keys)


def _sgd_cov(lr):
    return jg.gradient_ascent(optax.sgd(lr), "covariance")


def _leaves(res):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(res)]


def test_each_cell_is_fit_on_the_shared_stream():
    # Reference: fit (same guarded scan, unbatched) on the stream rebuilt from the
    # documented key scheme, and jg.mle of the same rows. Tolerance 1e-12: vmapped and
    # unbatched float64 programs may round differently, nothing more.
    truth, key, n, seeds = _truth(), jax.random.key(3), 120, 2
    grid = np.array([0.002, 0.02, 0.002])  # a repeated value: the same streams give the same cells
    res = sweep(_sgd_cov, grid, truth=truth, n_steps=n, seeds=seeds, key=key, trace_every=40)
    estimators = {lr: _sgd_cov(lr) for lr in grid}  # one fit compilation per value
    for s in range(seeds):
        ys = _stream(key, seeds, s, truth, n)
        np.testing.assert_allclose(res.mle_kl[s], jg.kl_divergence(truth, jg.mle(ys)), rtol=1e-10)
        for k, lr in enumerate(grid):
            ref = jg.fit(estimators[lr], ys, truth=truth, trace_every=40)
            np.testing.assert_allclose(res.estimate.cov[k, s], ref.estimate.cov, rtol=1e-12)
            np.testing.assert_allclose(
                res.final_kl[k, s], jg.kl_divergence(truth, ref.estimate), rtol=1e-12
            )
            np.testing.assert_allclose(res.trace.kl[k, s], ref.trace.kl, rtol=1e-12)
    np.testing.assert_array_equal(res.trace.rows, [40, 80, 120])
    np.testing.assert_array_equal(res.final_kl[0], res.final_kl[2])
    np.testing.assert_allclose(res.efficiency, res.final_kl / res.mle_kl, rtol=1e-15)
    assert res.diverged_at.shape == (3, 2) and np.all(res.diverged_at == -1)
    assert res.estimate.mean.shape == (3, 2, 2) and res.estimate.cov.dtype == F64


def test_one_compilation_for_any_grid_of_the_same_shape():
    calls = []

    def make(h):
        calls.append(h)
        return jg.gradient_ascent(optax.sgd(h), "precision")

    truth = _truth()
    a = sweep(make, np.geomspace(1e-3, 1e-1, 32), truth=truth, n_steps=50, seeds=3)
    traced = len(calls)
    assert traced <= 2  # the init program and the chunk program, whatever K is
    assert all(isinstance(h, jax.core.Tracer) for h in calls)
    b = sweep(make, np.geomspace(2e-3, 2e-1, 32), truth=truth, n_steps=50, seeds=3)
    assert len(calls) == traced  # no retrace, so no recompilation
    assert not np.array_equal(a.final_kl, b.final_kl)


@pytest.mark.slow  # quick-suite budget: covered quickly by simpler cases
def test_a_diverging_value_stays_in_its_own_cell():
    truth = _truth(3)
    kwargs = dict(truth=truth, n_steps=200, seeds=3, trace_every=20)
    res = sweep(_sgd_cov, np.array([1e-3, 50.0, 1e-2]), **kwargs)
    # Without the diverging value (the same grid length: the same compiled program)
    alone = sweep(_sgd_cov, np.array([1e-3, 1e-2, 1e-2]), **kwargs)
    diverged_at = np.asarray(res.diverged_at)
    assert np.all(diverged_at[1] >= 0) and np.all(diverged_at[[0, 2]] == -1)
    for leaf in _leaves(res):
        if leaf.dtype.kind == "f":
            assert np.all(np.isfinite(leaf))
    for got, want in ((res.final_kl, alone.final_kl), (res.trace.kl, alone.trace.kl)):
        np.testing.assert_array_equal(np.asarray(got)[[0, 2]], np.asarray(want)[[0, 2]])
    assert res.best() == 1e-2
    assert "3" in res.summary().splitlines()[2].split()[-1]


@pytest.mark.slow  # quick-suite budget: covered quickly by simpler cases
def test_chunked_equals_one_call():
    calls = []

    def make(h):
        calls.append(h)
        return jg.gradient_ascent(optax.adam(h), "precision")

    kwargs = dict(truth=_truth(), n_steps=360, seeds=3, trace_every=30, batch_size=2)
    one = sweep(make, np.array([0.01, 0.1]), **kwargs)
    calls.clear()
    chunked = sweep(make, np.array([0.01, 0.1]), chunk_steps=120, **kwargs)
    assert len(calls) == 1  # three chunks, one chunk program (the init program is cached)
    ragged = sweep(make, np.array([0.01, 0.1]), chunk_steps=240, **kwargs)  # 240 + 120 rows
    for other in (chunked, ragged):
        np.testing.assert_array_equal(other.trace.rows, one.trace.rows)
        for name in ("final_kl", "diverged_at", "efficiency"):
            # The estimator's arithmetic is the same; the MLE reference merges chunks
            # (rounding only).
            np.testing.assert_allclose(getattr(other, name), getattr(one, name), rtol=1e-12)
        np.testing.assert_array_equal(other.trace.kl, one.trace.kl)
        np.testing.assert_array_equal(other.estimate.cov, one.estimate.cov)


@pytest.mark.slow  # two more sweep programs; each_cell and chunked run quick
def test_dict_grid_from_grid_product():
    grid = grid_product(lr=[0.003, 0.03], momentum=[0.0, 0.5, 0.9])
    np.testing.assert_array_equal(grid["momentum"], [0.0, 0.5, 0.9] * 2)

    def make(h):
        return jg.gradient_ascent(optax.sgd(h["lr"], momentum=h["momentum"]), "precision")

    res = sweep(make, grid, truth=_truth(), n_steps=300, seeds=4)
    ref = sweep(
        lambda lr: jg.gradient_ascent(optax.sgd(lr), "precision"),
        grid["lr"][::3],
        truth=_truth(),
        n_steps=300,
        seeds=4,
    )
    np.testing.assert_allclose(
        res.final_kl[::3], ref.final_kl, rtol=1e-12
    )  # momentum 0 is plain sgd
    best = res.best()
    assert set(best) == {"lr", "momentum"} and best["lr"] in (0.003, 0.03)
    assert res.summary().splitlines()[0].split()[:2] == ["lr", "momentum"]


def test_best_and_summary_on_a_known_result():
    eff = np.array([[2.0, 3.0, 4.0], [1.5, 1.5, 9.0], [1.0, 1.0, 1.0]])
    diverged = np.array([[-1, -1, -1], [-1, -1, -1], [-1, 5, -1]])
    res = SweepResult(
        grid=np.array([0.1, 0.2, 0.3]),
        final_kl=jnp.asarray(eff),
        diverged_at=jnp.asarray(diverged),
        estimate=None,
        mle_kl=jnp.ones(3),
        efficiency=jnp.asarray(eff),
        trace=None,
    )
    assert res.best_index() == 1 and res.best() == 0.2  # 0.3 is better but diverged once
    median, q25, q75, n_div = res.stats()
    np.testing.assert_allclose(median, [3.0, 1.5, 1.0])  # over the non-diverged seeds
    np.testing.assert_allclose(q25, [2.5, 1.5, 1.0])
    np.testing.assert_array_equal(n_div, [0, 0, 1])
    lines = str(res).splitlines()
    assert lines[0].split() == ["value", "median", "eff", "25%", "75%", "diverged/3"]
    assert lines[2].split() == ["0.2", "1.5", "1.5", "5.25", "0"]
    all_div = res._replace(diverged_at=jnp.zeros((3, 3), jnp.int32))
    with pytest.raises(ValueError, match="every grid value diverged"):
        all_div.best()
    assert all_div.summary().splitlines()[1].split() == ["0.1", "-", "-", "-", "3"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(grid=np.ones((2, 2))), "1-D"),
        (dict(grid=[]), "1-D"),
        (dict(grid={"a": [1.0, 2.0], "b": [1.0]}), "equal lengths"),
        (dict(grid=[0.1, np.nan]), "non-finite"),
        (dict(n_steps=2), "must exceed the dimension d = 2"),
        (dict(key=0), "key must be one PRNG key"),
        (dict(n_steps=101, batch_size=2), "multiple of batch_size"),
        (dict(seeds=0), "seeds"),
        (dict(trace_every=-1), "trace_every"),
        (dict(chunk_steps=50, trace_every=20), "multiple of batch_size × trace_every"),
        (dict(truth=jg.Gaussian(jnp.zeros(2), -jnp.eye(2))), "truth.cov is not positive definite"),
        (dict(init=jg.Gaussian(jnp.zeros(3), jnp.eye(3))), "init has dimension 3"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    args = dict(grid=[0.1], truth=_truth(), n_steps=100)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sweep(_sgd_cov, args.pop("grid"), **args)


# Each method compiles its own sweep program (~2.5 s): with -m slow. The quick run
# sweeps sgd and adam here, the online-EM methods in their own tests, and checks every
# method under jit and vmap in test_protocol.py.
@pytest.mark.slow
def test_every_method_runs():
    truth = _truth()
    # sgd and adam run in the CLI test; the online-EM methods' estimates are not one
    # Gaussian, so they need a score of their own (test_student_t_sweeps_with_a_score)
    for name in set(METHODS) - {"sgd", "adam", "student-t", "mixture"}:
        grid = np.array(METHODS[name].swept_hyperparameter().grid)  # the method's range
        if name == "welford":  # prior weight 0: the reference itself
            grid = np.array([0.0, 1.0])
        res = sweep(make_method(name, "cholesky"), grid, truth=truth, n_steps=60, seeds=2)
        assert np.all(np.isfinite(res.final_kl)), name
        if name == "welford":  # efficiency 1 to rounding
            np.testing.assert_allclose(res.efficiency[0], 1.0, rtol=1e-9)


def test_make_method_is_cached_and_names_what_is_wrong():
    assert make_method("sgd", "precision") is make_method("sgd", "precision")
    with pytest.raises(ValueError, match="unknown method 'lbfgs'"):
        make_method("lbfgs")
    with pytest.raises(ValueError, match="parameterization"):
        make_method("sgd", "log")


def _run(code, env=None, timeout=120):
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


MULTI = """
    import jax, numpy as np, optax, jaxgauss as jg
    jax.config.update("jax_enable_x64", True)
    truth = jg.streams.random_truth(jax.random.key(7), 2, 10.0, dtype=np.float64)
    make = lambda lr: jg.gradient_ascent(optax.sgd(lr), "covariance")
    out = {"devices": np.array(len(jax.devices()))}
    for k, s in ((3, 2), (1, 3)):  # meshes (k, s) = (2, 2) and (1, 4), both padded
        r = jg.sweep(make, np.geomspace(1e-3, 5.0, k), truth=truth, n_steps=80, seeds=s,
                     trace_every=20, chunk_steps=40)
        for name in ("final_kl", "diverged_at", "mle_kl"):
            out[f"{k}x{s}_{name}"] = np.asarray(getattr(r, name))
        out[f"{k}x{s}_trace"] = np.asarray(r.trace.kl)
        out[f"{k}x{s}_cov"] = np.asarray(r.estimate.cov)
    np.savez("{path}", **out)
"""


@pytest.mark.slow
def test_four_devices_give_the_numbers_of_one(tmp_path):
    results = {}
    for n in (1, 4):
        path = tmp_path / f"d{n}.npz"
        flags = f"--xla_force_host_platform_device_count={n}"
        _run(MULTI.replace("{path}", str(path)), env={"XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"})
        results[n] = dict(np.load(path))
    assert results[1].pop("devices") == 1 and results[4].pop("devices") == 4
    assert results[4]["3x2_diverged_at"].max() >= 0  # lr 5.0 diverges
    for name, want in results[1].items():
        np.testing.assert_allclose(results[4][name], want, rtol=1e-6, err_msg=name)


@pytest.mark.slow
def test_memory_stays_flat_for_4096_configurations():
    # A proxy of the K × S = 4096 × 10⁵ sweep (its peak is in benchmarks/results/sweep.md):
    # memory depends on K × S and the chunk, not on the stream length.
    out = _run(
        """
        import jax, numpy as np, optax, jaxgauss as jg
        truth = jg.streams.random_truth(jax.random.key(0), 2, 10.0)
        make = lambda lr: jg.gradient_ascent(optax.sgd(lr), "precision")
        res = jg.sweep(make, np.geomspace(1e-4, 1e-2, 256), truth=truth, n_steps=4000, seeds=16,
                       chunk_steps=1000)
        assert res.final_kl.shape == (256, 16)
        # VmHWM: this process's own peak (ru_maxrss would include the forked pytest
        # parent's pages, which Linux keeps counting across exec).
        print(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")))
        """,
        env={"JAX_PLATFORMS": "cpu"},  # host memory; a GPU runtime alone takes ~3 GB of it
    )
    assert int(out.split()[-1]) * 1024 < 2e9


@pytest.mark.slow  # the sweep command's whole run; its help and bad-input cases run quick
def test_command_line_end_to_end(tmp_path, capsys):
    # Through cli.main in this process (the console entry itself runs in test_cli.py).
    from jaxgauss.cli import main

    args = ["sweep", "--method", "sgd", "adam", "--num-lr", "3", "--lr-max", "5"]
    args += ["--seeds", "2", "--steps", "100", "--dim", "2", "--parameterization", "covariance"]
    assert main(args + ["--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr()
    assert "chunk 20/20" in out.err
    assert "sgd (covariance)" in out.out and "adam (covariance)" in out.out
    assert "best: " in out.out
    data = np.load(tmp_path / "out" / "sweep.npz")
    assert data["efficiency"].shape == (2, 3, 2)
    assert np.all(data["diverged_at"][:, -1] >= 0)  # lr 5 diverges for both
    assert json.loads(str(data["settings"]))["steps"] == 100
    assert (tmp_path / "out" / "heatmap.png").stat().st_size > 0

    assert main(["sweep", "--method", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err


def test_make_estimator_must_return_an_estimator():
    truth = jg.Gaussian(jnp.zeros(2), jnp.eye(2))
    with pytest.raises(ValueError, match="must return a jaxgauss Estimator, got tuple"):
        jg.sweep(lambda lr: (lr, lr), [0.1], truth=truth, n_steps=10, seeds=1)


def _location_error(truth, estimate):
    """Squared Mahalanobis error of the estimate's location: a score that reads any
    estimate with a ``mean`` (a ``StudentT`` as well as a ``Gaussian``)."""
    return jg.mahalanobis(truth, estimate.mean)


@pytest.mark.slow  # quick-suite budget: covered quickly by simpler cases
def test_student_t_sweeps_with_a_score():
    """Online EM in a sweep: κ of the step (t + 500)^−κ × seeds in one call, scored by
    the location error; on Gaussian data the t location is an unbiased estimate of
    the mean, so its error stays within a few times the sample mean's."""
    truth = _truth()
    make = make_method("student-t", dof=4.0)
    res = sweep(
        make, np.array([0.6, 0.9]), truth=truth, n_steps=600, seeds=4, score=_location_error
    )
    assert res.final_kl.shape == (2, 4) and np.all(res.diverged_at == -1)
    assert np.all(np.isfinite(res.efficiency))
    assert np.median(res.efficiency) < 10
