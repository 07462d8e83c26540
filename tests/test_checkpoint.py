"""checkpoint: round trips of every estimator's state, continuing a fit from a loaded
state, the mismatch and not-a-checkpoint errors, atomic writes, no pickle."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxgauss as jg

D = 3

ESTIMATORS = {
    "welford": lambda: jg.welford(),
    "natural": lambda: jg.natural_gradient(jg.schedules.robbins_monro(0.5, power=0.7)),
    "exponential": lambda: jg.exponential(10.0),
    "adam-cholesky": lambda: jg.gradient_ascent(optax.adam(0.05), "cholesky"),
    "adam-precision": lambda: jg.gradient_ascent(optax.adam(0.05), "precision"),
    "averaged-sgd": lambda: jg.averaged(jg.gradient_ascent(optax.sgd(0.01), "cholesky"), start=5),
}


def _init(dtype, d=D):
    return jg.Gaussian(jnp.zeros(d, dtype), jnp.eye(d, dtype=dtype))


def _data(n, dtype, d=D):
    truth = jg.Gaussian(jnp.arange(d, dtype=dtype), jnp.diag(jnp.arange(1, d + 1, dtype=dtype)))
    return jg.streams.sample(jax.random.key(1), truth, n)


def _assert_same_tree(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def _updated(est, dtype):
    """A state after one update on 8 rows: one compiled update, not a fit's programs
    (nor each operation's own, run op by op)."""
    return jax.jit(est.update)(est.init(_init(dtype)), _data(8, dtype))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("method", list(ESTIMATORS))
def test_round_trip(tmp_path, method, dtype):
    est = ESTIMATORS[method]()
    state = _updated(est, dtype)
    path = jg.checkpoint.save(tmp_path / method, state, name=method)
    _assert_same_tree(jg.checkpoint.load(path, est.init(_init(dtype)), name=method), state)


@pytest.mark.parametrize("method", list(ESTIMATORS))
def test_fit_save_load_continue_equals_one_fit(tmp_path, method):
    # The checkpoint property: save after the first half, load into a fresh template,
    # continue over the second half, and get bit for bit the state of one fit over all
    # rows. block_rows divides the half so that rowwise estimators cut the same blocks.
    est = ESTIMATORS[method]()
    ys = _data(40, jnp.float64)
    first = jg.fit(est, ys[:20], block_rows=10)
    path = jg.checkpoint.save(tmp_path / method, first.state, name=method)
    loaded = jg.checkpoint.load(path, est.init(_init(jnp.float64)), name=method)
    resumed = jg.fit(est, ys[20:], state=loaded, block_rows=10)
    whole = jg.fit(est, ys, block_rows=10)
    _assert_same_tree(resumed.state, whole.state)
    _assert_same_tree(resumed.estimate, whole.estimate)


def test_eval_shape_template(tmp_path):
    est = ESTIMATORS["adam-cholesky"]()
    state = _updated(est, jnp.float64)
    path = jg.checkpoint.save(tmp_path / "adam", state)
    like = jax.eval_shape(est.init, _init(jnp.float64))
    _assert_same_tree(jg.checkpoint.load(path, like), state)


def test_any_pytree_round_trips(tmp_path):
    state = (
        optax.EmptyState(),
        {"b": jnp.array([True, False]), "h": jnp.ones((2, 2), jnp.bfloat16)},
        [jnp.int32(7), jnp.zeros((0, 3)), np.float32(1.5)],
    )
    path = jg.checkpoint.save(tmp_path / "tree", state)
    _assert_same_tree(jg.checkpoint.load(path, state), jax.tree_util.tree_map(jnp.asarray, state))
    meta = jg.checkpoint.info(path)
    assert meta["n_leaves"] == 5 and meta["name"] is None


def test_info(tmp_path):
    state = jg.welford().init(_init(jnp.float64))
    config = {"method": "welford", "dtype": "float64", "d": D}
    path = jg.checkpoint.save(tmp_path / "w", state, name="welford", config=config, rows=17)
    meta = jg.checkpoint.info(path)
    assert meta == {
        "format_version": 1,
        "version": jg.__version__,
        "jax_version": jax.__version__,
        "name": "welford",
        "n_leaves": 5,
        "treedef": str(jax.tree_util.tree_structure(state)),
        "config": config,
        "rows": 17,
    }


def test_suffix_and_overwrite(tmp_path):
    est = jg.welford()
    a = _updated(est, jnp.float64)
    b = est.update(a, _data(8, jnp.float64))
    assert jg.checkpoint.save(tmp_path / "run", a) == tmp_path / "run.npz"
    assert jg.checkpoint.save(tmp_path / "run.npz", b) == tmp_path / "run.npz"
    like = est.init(_init(jnp.float64))
    _assert_same_tree(jg.checkpoint.load(tmp_path / "run", like), b)  # what save was given
    _assert_same_tree(jg.checkpoint.load(str(tmp_path / "run.npz"), like), b)
    assert [p.name for p in tmp_path.iterdir()] == ["run.npz"]  # no temporary files left


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    est = jg.welford()
    old = _updated(est, jnp.float64)
    path = jg.checkpoint.save(tmp_path / "run", old)

    def crash(file, **entries):
        file.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        jg.checkpoint.save(path, est.update(old, _data(8, jnp.float64)))
    assert [p.name for p in tmp_path.iterdir()] == ["run.npz"]
    _assert_same_tree(jg.checkpoint.load(path, est.init(_init(jnp.float64))), old)


def test_no_pickle(tmp_path):
    state = _updated(ESTIMATORS["adam-precision"](), jnp.float64)
    path = jg.checkpoint.save(tmp_path / "adam", state, name="adam")
    with np.load(path, allow_pickle=False) as npz:
        entries = {key: npz[key] for key in npz.files}
    leaves = jax.tree_util.tree_leaves(state)
    for i, leaf in enumerate(leaves):
        np.testing.assert_array_equal(entries[f"leaf_{i}"], leaf)
    assert str(entries["format"]) == "jaxgauss-checkpoint"
    assert str(entries["name"]) == "adam" and int(entries["n_leaves"]) == len(leaves)


def _saved(tmp_path, method, dtype=jnp.float64, d=D, name=None):
    state = ESTIMATORS[method]().init(_init(dtype, d))
    return jg.checkpoint.save(tmp_path / method, state, name=name)


def test_wrong_dimension(tmp_path):
    path = _saved(tmp_path, "welford", d=3)
    like = jg.welford().init(_init(jnp.float64, d=2))
    msg = r"leaf 0 \(\.mean\) has shape \(3,\), the template has \(2,\): .*different dimension"
    with pytest.raises(ValueError, match=msg):
        jg.checkpoint.load(path, like)


def test_wrong_dtype(tmp_path):
    path = _saved(tmp_path, "welford", dtype=jnp.float32)
    with pytest.raises(ValueError, match="leaf 0 .* dtype float32, the template has float64"):
        jg.checkpoint.load(path, jg.welford().init(_init(jnp.float64)))


def test_wrong_estimator_leaf_count(tmp_path):
    path = _saved(tmp_path, "welford", name="welford")
    like = jg.exponential(10.0).init(_init(jnp.float64))
    with pytest.raises(ValueError, match=r"5 leaves \(saved as 'welford'\), the template has 4"):
        jg.checkpoint.load(path, like)


def test_wrong_estimator_structure(tmp_path):
    # scheduled sgd's state (Params(mean, chol), schedule count, count) has exactly the
    # leaves of a MomentsState (mean, cov, count, origin): only the structure tells them apart.
    path = _saved(tmp_path, "exponential")
    like = jg.gradient_ascent(optax.sgd(optax.constant_schedule(0.1))).init(_init(jnp.float64))
    with pytest.raises(ValueError, match="structure .*MomentsState.*GradientAscentState"):
        jg.checkpoint.load(path, like)


def test_wrong_estimator_name(tmp_path):
    # exponential and natural_gradient(step) have identical states: only the name differs.
    path = _saved(tmp_path, "exponential", name="exponential")
    like = ESTIMATORS["natural"]().init(_init(jnp.float64))
    jg.checkpoint.load(path, like)
    with pytest.raises(ValueError, match="not saved as 'natural' .saved as 'exponential'"):
        jg.checkpoint.load(path, like, name="natural")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        jg.checkpoint.load(tmp_path / "nothing", jg.welford().init(_init(jnp.float64)))
    with pytest.raises(FileNotFoundError):
        jg.checkpoint.info(tmp_path / "nothing.npz")


def test_not_a_checkpoint(tmp_path):
    like = jg.welford().init(_init(jnp.float64))
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    plain = tmp_path / "plain.npz"
    np.savez(plain, mean=np.zeros(3))
    array = tmp_path / "array.npy"
    np.save(array, np.zeros(3))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(_saved(tmp_path, "welford").read_bytes()[:200])
    for path in [text, plain, array, truncated, tmp_path]:
        with pytest.raises(ValueError, match="not a .*jaxgauss checkpoint"):
            jg.checkpoint.load(path, like)
        with pytest.raises(ValueError, match="not a .*jaxgauss checkpoint"):
            jg.checkpoint.info(path)


def test_newer_format_is_refused(tmp_path):
    path = _saved(tmp_path, "welford")
    with np.load(path, allow_pickle=False) as npz:
        entries = {key: npz[key] for key in npz.files}
    np.savez(path, **{**entries, "format_version": np.array(2)})
    with pytest.raises(ValueError, match="format 2.*reads format 1"):
        jg.checkpoint.info(path)


def test_unstorable_leaves_are_refused(tmp_path):
    with pytest.raises(ValueError, match="typed PRNG key.*key_data"):
        jg.checkpoint.save(tmp_path / "key", (jnp.zeros(2), jax.random.key(0)))
    with pytest.raises(ValueError, match="leaf 0 is not a numeric array"):
        jg.checkpoint.save(tmp_path / "obj", [np.array([{}], dtype=object)])
    with pytest.raises(ValueError, match="name must be a string"):
        jg.checkpoint.save(tmp_path / "w", jnp.zeros(2), name=3)
    assert list(tmp_path.iterdir()) == []


def test_config_mismatch_names_both(tmp_path):
    # The same state layout read through another parameterisation would be silently
    # wrong (a Cholesky factor taken as a precision factor): the config tells them apart.
    est = ESTIMATORS["adam-cholesky"]()
    saved = {"method": "adam", "parameterization": "cholesky", "lr": 0.05, "dtype": "float64"}
    path = jg.checkpoint.save(tmp_path / "a", est.init(_init(jnp.float64)), config=saved)
    like = est.init(_init(jnp.float64))
    jg.checkpoint.load(path, like, config=saved)
    other = {**saved, "parameterization": "precision"}
    msg = "saved with .*parameterization=cholesky.*this run has .*parameterization=precision"
    with pytest.raises(ValueError, match=msg):
        jg.checkpoint.load(path, like, config=other)
    plain = jg.checkpoint.save(tmp_path / "plain", like)
    with pytest.raises(ValueError, match="saved with no recorded settings"):
        jg.checkpoint.load(plain, like, config=saved)
    with pytest.raises(ValueError, match="config must be a JSON"):
        jg.checkpoint.save(tmp_path / "bad", like, config={"f": object()})


def _rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as npz:
        entries = {key: npz[key] for key in npz.files}
    np.savez(path, **{**entries, **changes})


def test_short_dtypes_entry(tmp_path):
    path = _saved(tmp_path, "welford")
    _rewrite(path, dtypes=np.array(["float64"]))
    with pytest.raises(ValueError, match="'dtypes' entry names 1 dtypes for 5 leaves"):
        jg.checkpoint.load(path, jg.welford().init(_init(jnp.float64)))


def test_decompression_bomb_is_refused_before_inflating(tmp_path):
    # A ~70 kB file whose leaf_0 inflates to 64 MiB: its declared shape is checked
    # against the template's (3,) before any of its data are read.
    import tracemalloc
    import zipfile

    path = _saved(tmp_path, "welford")
    with np.load(path, allow_pickle=False) as npz:
        entries = {key: npz[key] for key in npz.files if key != "leaf_0"}
    np.savez(path, **entries)
    header = {"descr": "<f8", "fortran_order": False, "shape": (2**23,)}
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("leaf_0.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, header)
            for _ in range(64):
                f.write(bytes(2**20))
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    with pytest.raises(
        ValueError, match=r"leaf 0 \(\.mean\) has shape \(8388608,\), the template has \(3,\)"
    ):
        jg.checkpoint.load(path, jg.welford().init(_init(jnp.float64)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * 2**20, peak


def test_files_that_cannot_be_checkpoints(tmp_path):
    import os

    like = jg.welford().init(_init(jnp.float64))
    (tmp_path / "noise.npz").write_bytes(np.random.default_rng(0).bytes(1000))
    (tmp_path / "empty.npz").write_bytes(b"")
    os.mkfifo(tmp_path / "fifo.npz")
    cases = {
        "noise.npz": "no zip signature",  # not "pickled (object) data"
        "empty.npz": "it is empty",
        "fifo.npz": "not a regular file",  # refused at once, not a hang
    }
    for name, message in cases.items():
        with pytest.raises(ValueError, match=message):
            jg.checkpoint.load(tmp_path / name, like)


def test_stale_temporary_files_are_removed_by_the_next_save(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".run.npz.{int(dead.stdout)}-0123456789abcdef.tmp"
    stale.write_bytes(b"PK half")
    live = tmp_path / f".run.npz.{os.getpid()}-fedcba9876543210.tmp"  # a save in progress
    live.write_bytes(b"PK half")
    jg.checkpoint.save(tmp_path / "run", jnp.zeros(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "run.npz"])


def test_a_leaf_stored_in_another_dtype_than_recorded_is_named_altered(tmp_path):
    """Issue 25 (smaller): a leaf rewritten as float32 while the checkpoint records
    float64 read "has dtype float64, the template has float64"."""
    path = _saved(tmp_path, "welford")
    with np.load(path, allow_pickle=False) as npz:
        leaf = npz["leaf_0"]
    _rewrite(path, leaf_0=leaf.astype(np.float32))
    with pytest.raises(ValueError, match=r"leaf 0 .* stored as float32 although the checkpoint"):
        jg.checkpoint.load(path, jg.welford().init(_init(jnp.float64)))


def test_a_negative_count_is_refused(tmp_path):
    """Issue 25 (smaller): a checkpoint whose count was set negative was accepted."""
    path = _saved(tmp_path, "welford")
    template = jg.welford().init(_init(jnp.float64))
    index = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(template)[0]]
    leaf = f"leaf_{index.index('.count')}"
    with np.load(path, allow_pickle=False) as npz:
        count = npz[leaf]
    _rewrite(path, **{leaf: -np.abs(count) - 1})
    with pytest.raises(ValueError, match=r"\(\.count\) holds a negative count"):
        jg.checkpoint.load(path, template)
