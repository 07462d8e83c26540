"""``jaxgauss distance A B``: files and checkpoints, every metric, against the float64
NumPy values of the same rows; and its errors."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

import jaxgauss as jg


def _frechet64(x, y):
    """The float64 Fréchet distance of two row sets (eigh square roots, NumPy)."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    c1, c2 = np.cov(x.T, bias=True), np.cov(y.T, bias=True)
    w, v = np.linalg.eigh(c1)
    root = (v * np.sqrt(np.maximum(w, 0))) @ v.T
    cross = np.sqrt(np.maximum(np.linalg.eigvalsh(root @ c2 @ root), 0)).sum()
    diff = x.mean(0) - y.mean(0)
    return diff @ diff + np.trace(c1) + np.trace(c2) - 2 * cross


@pytest.fixture
def files(tmp_path):
    """Two float32 .npy files of 4000 rows × 6 features with a mean of 10⁴."""
    rng = np.random.default_rng(0)
    x = (1e4 + rng.normal(size=(4000, 6))).astype(np.float32)
    y = (1e4 + 0.2 + 1.2 * rng.normal(size=(4000, 6))).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return tmp_path / "x.npy", tmp_path / "y.npy", x, y


@pytest.mark.slow
def test_files_in_float32_give_the_float64_frechet_distance(cli, files):
    """float32 fits of rows near 10⁴, compared in one frame: within 1e-4 relative of
    the float64 value of the same float32 rows (rounding the two means to float32
    alone, spacing 10⁻³ at 10⁴, would cost about 10⁻³ relative here)."""
    a, b, x, y = files
    out = cli("distance", a, b, "--json")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["metric"] == "frechet" and record["dtype"] == "float32" and record["d"] == 6
    ref = _frechet64(x, y)
    assert abs(record["distance"] - ref) <= 1e-4 * ref, (record["distance"], ref)
    plain = cli("distance", a, b)
    assert float(plain.stdout) == pytest.approx(record["distance"], rel=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["bhattacharyya", "hellinger", "kl"])
def test_other_metrics_equal_the_functions_of_the_fits(cli, files, metric):
    """The float32 fits' values within 1e-4 relative of the float64 closed forms of the
    same rows (float32 moments in one frame are right to ~1e-6 here)."""
    a, b, x, y = files
    out = cli("distance", a, b, "--metric", metric, "--json")
    assert out.returncode == 0, out.stderr
    g1 = jg.mle(jnp.asarray(x, jnp.float64))
    g2 = jg.mle(jnp.asarray(y, jnp.float64))
    fn = {
        "bhattacharyya": jg.bhattacharyya_distance,
        "hellinger": jg.hellinger_distance,
        "kl": jg.kl_divergence,
    }[metric]
    assert json.loads(out.stdout)["distance"] == pytest.approx(float(fn(g1, g2)), rel=1e-4)


@pytest.mark.slow
def test_a_checkpoint_is_the_fit_it_saved(cli, files, tmp_path):
    a, b, _, _ = files
    ck = tmp_path / "x.npz"
    assert cli("fit", a, "--checkpoint", ck, "--quiet").returncode == 0
    from_files = json.loads(cli("distance", a, b, "--json").stdout)["distance"]
    out = cli("distance", ck, b, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["distance"] == pytest.approx(from_files, rel=1e-6)


@pytest.mark.slow
def test_errors_are_one_line_and_exit_2(cli, files, tmp_path):
    a, _, _, _ = files
    out = cli("distance", a, tmp_path / "missing.npy")
    assert out.returncode == 2 and "no such file" in out.stderr
    np.save(tmp_path / "z.npy", np.ones((10, 3), np.float32) + np.arange(3))
    out = cli("distance", a, tmp_path / "z.npy")
    assert out.returncode == 2 and "dimension 6 and B 3" in out.stderr
    assert cli("distance", "--help").returncode == 0
