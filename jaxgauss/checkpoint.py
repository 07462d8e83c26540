"""Save and load estimator states as portable ``.npz`` files.

A checkpoint holds the leaves of any state pytree (``FitResult.state`` of any
estimator, optax states inside included) as arrays ``leaf_0``, …, ``leaf_{k-1}``,
plus metadata entries (0-d or 1-d string and integer arrays, readable by ``np.load``
with ``allow_pickle=False``):

| entry | meaning |
| --- | --- |
| ``format`` | ``"jaxgauss-checkpoint"``: what marks the file as a checkpoint |
| ``format_version`` | the layout's version (1) |
| ``version``, ``jax_version`` | the jaxgauss and JAX versions that wrote it |
| ``name`` | the estimator's name, when given to ``save`` (absent otherwise) |
| ``n_leaves`` | k |
| ``treedef`` | ``str`` of the state's tree structure, checked on loading |
| ``dtypes`` | each leaf's dtype name (so that e.g. bfloat16 leaves come back) |

Nothing is pickled: the structure is not stored as an object but rebuilt from a
template state of the same estimator (``est.init(g0)``), which ``load`` checks the
file against.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["save", "load", "info"]

_MARK = "jaxgauss-checkpoint"
_FORMAT_VERSION = 1


def _npz_path(path: str | os.PathLike) -> Path:
    """``path`` with ``.npz`` appended unless it already ends in it."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def save(path: str | os.PathLike, state: Any, *, name: str | None = None) -> Path:
    """Write the estimator state ``state`` (any pytree of arrays) to a ``.npz`` file.

    ``.npz`` is appended to ``path`` unless it already ends in it (as ``np.savez``
    does); ``load`` and ``info`` accept the same ``path``. The file is written to a
    temporary file in the same folder, flushed to disk and then renamed over
    ``path``, so a crash leaves either the previous checkpoint or the new one, never
    a partial file.

    Args:
      path: where to write.
      state: the state, e.g. ``FitResult.state``. Its leaves are copied to the host.
      name: the estimator's name (e.g. "welford", "sgd"), stored for ``info`` and
        checked by ``load(..., name=...)``.

    Returns:
      The path written.

    Raises:
      ValueError: ``name`` is not a string; a leaf is not a numeric or boolean array
        (a typed PRNG key: store ``jax.random.key_data(key)`` instead).

    Example:
      >>> import tempfile, jax.numpy as jnp, jaxgauss as jg
      >>> est = jg.welford()
      >>> res = jg.fit(est, jnp.array([[1.0], [3.0]]))
      >>> folder = tempfile.TemporaryDirectory()
      >>> path = jg.checkpoint.save(f"{folder.name}/run", res.state, name="welford")
      >>> path.name, jg.checkpoint.info(path)["n_leaves"]
      ('run.npz', 4)
      >>> like = est.init(jg.Gaussian(jnp.zeros(1), jnp.eye(1)))
      >>> state = jg.checkpoint.load(path, like, name="welford")
      >>> jg.fit(est, jnp.array([[2.0]]), state=state).estimate.mean.tolist()  # of 1, 3, 2
      [2.0]
      >>> folder.cleanup()
    """
    from jaxgauss import __version__  # here: the package imports this module

    if name is not None and not isinstance(name, str):
        raise ValueError(f"name must be a string or None, got {name!r}")
    leaves, treedef = jax.tree_util.tree_flatten(state)
    for i, leaf in enumerate(leaves):
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            raise ValueError(
                f"leaf {i} is a typed PRNG key, which a checkpoint cannot store: keep "
                "jax.random.key_data(key) in the state instead"
            )
    arrays = [np.asarray(x) for x in jax.device_get(leaves)]
    for i, arr in enumerate(arrays):
        if arr.dtype.hasobject:
            raise ValueError(f"leaf {i} is not a numeric array (dtype {arr.dtype})")
    entries = {f"leaf_{i}": arr for i, arr in enumerate(arrays)}
    entries.update(
        format=np.array(_MARK),
        format_version=np.array(_FORMAT_VERSION),
        version=np.array(__version__),
        jax_version=np.array(jax.__version__),
        n_leaves=np.array(len(arrays)),
        treedef=np.array(str(treedef)),
        dtypes=np.array([str(arr.dtype) for arr in arrays], dtype=str),
    )
    if name is not None:
        entries["name"] = np.array(name)

    path = _npz_path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        with open(tmp, "xb") as f:
            np.savez(f, **entries)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _existing(path: str | os.PathLike) -> Path:
    """``path`` if it exists, else the ``.npz`` path ``save(path, ...)`` wrote."""
    path = Path(path)
    return path if path.exists() else _npz_path(path)


def _entry(path: Path, npz: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    """One array of the checkpoint, with any failure to read it as a ValueError."""
    try:
        return npz[key]
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable jaxgauss checkpoint: entry {key!r}: {e}") from e


@contextlib.contextmanager
def _opened(path: str | os.PathLike) -> Iterator[tuple[Path, np.lib.npyio.NpzFile, dict]]:
    """The resolved path, the open ``.npz`` file and its metadata; closes the file."""
    path = _existing(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a jaxgauss checkpoint (not an .npz file: {e})") from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is not a jaxgauss checkpoint (a .npy array, not an .npz file)")
    with npz:
        if "format" not in npz.files or str(_entry(path, npz, "format")) != _MARK:
            raise ValueError(
                f"{path} is an .npz file but not a jaxgauss checkpoint (no 'format' mark)"
            )
        meta = {
            "format_version": int(_entry(path, npz, "format_version")),
            "version": str(_entry(path, npz, "version")),
            "jax_version": str(_entry(path, npz, "jax_version")),
            "name": str(_entry(path, npz, "name")) if "name" in npz.files else None,
            "n_leaves": int(_entry(path, npz, "n_leaves")),
            "treedef": str(_entry(path, npz, "treedef")),
        }
        if meta["format_version"] > _FORMAT_VERSION:
            raise ValueError(
                f"{path} has checkpoint format {meta['format_version']}, written by jaxgauss "
                f"{meta['version']}; this jaxgauss reads format {_FORMAT_VERSION}: upgrade it"
            )
        yield path, npz, meta


def info(path: str | os.PathLike) -> dict:
    """The metadata of a checkpoint, without a template and without reading the leaves.

    Args:
      path: the checkpoint (as given to or returned by ``save``).

    Returns:
      A dict with keys "format_version", "version" (jaxgauss's), "jax_version",
      "name" (None if none was given), "n_leaves" and "treedef".

    Raises:
      FileNotFoundError: no file at ``path`` (nor at ``path`` + ".npz").
      ValueError: the file is not a jaxgauss checkpoint, or of a newer format.

    Example:
      >>> import tempfile, jax.numpy as jnp, jaxgauss as jg
      >>> folder = tempfile.TemporaryDirectory()
      >>> state = jg.welford().init(jg.Gaussian(jnp.zeros(2), jnp.eye(2)))
      >>> meta = jg.checkpoint.info(jg.checkpoint.save(f"{folder.name}/w", state, name="welford"))
      >>> meta["name"], meta["n_leaves"], "WelfordState" in meta["treedef"]
      ('welford', 4, True)
      >>> folder.cleanup()
    """
    with _opened(path) as (_, _, meta):
        return meta


def load(path: str | os.PathLike, like: Any, *, name: str | None = None) -> Any:
    """Read a checkpoint written by ``save`` into the structure of the template ``like``.

    The file must match the template leaf by leaf: the same number of leaves, the
    same tree structure (as ``str`` of the treedef), and for every leaf the same shape
    and dtype. Build the template as the run was built, e.g. ``est.init(g0)`` for the
    same estimator, dimension and precision; its values are not used, so
    ``jax.eval_shape(est.init, g0)`` serves as well.

    Args:
      path: the checkpoint (as given to or returned by ``save``).
      like: a template state of the same structure, shapes and dtypes.
      name: if given, the estimator name the checkpoint must have been saved with
        (the only way to tell apart estimators whose states look alike, such as
        ``exponential`` and ``natural_gradient`` with a step).

    Returns:
      The state, with ``like``'s structure and JAX arrays (on the default device) as
      leaves; pass it to ``fit(..., state=...)`` to continue the run.

    Raises:
      FileNotFoundError: no file at ``path`` (nor at ``path`` + ".npz").
      ValueError: the file is not a jaxgauss checkpoint or of a newer format; its
        name, leaf count, structure or a leaf's shape or dtype differs from the
        template (the message names the first difference).

    Example:
      >>> import tempfile, jax.numpy as jnp, jaxgauss as jg
      >>> folder = tempfile.TemporaryDirectory()
      >>> state = jg.welford().init(jg.Gaussian(jnp.zeros(2), jnp.eye(2)))
      >>> path = jg.checkpoint.save(f"{folder.name}/w", state)
      >>> jg.checkpoint.load(path, jg.welford().init(jg.Gaussian(jnp.zeros(3), jnp.eye(3))))
      Traceback (most recent call last):
      ...
      ValueError: leaf 0 (.mean) has shape (2,), the template has (3,): saved from a different dimension or estimator?
      >>> folder.cleanup()
    """
    with _opened(path) as (path, npz, meta):
        template, treedef = jax.tree_util.tree_flatten_with_path(like)
        saved_as = f" (saved as {meta['name']!r})" if meta["name"] is not None else ""
        if name is not None and meta["name"] != name:
            raise ValueError(f"{path} was not saved as {name!r}{saved_as}")
        if meta["n_leaves"] != len(template):
            raise ValueError(
                f"{path} holds {meta['n_leaves']} leaves{saved_as}, the template has "
                f"{len(template)}: saved from a different estimator?"
            )
        if meta["treedef"] != str(treedef):
            raise ValueError(
                f"{path} holds a state of structure {meta['treedef']}{saved_as}, the template "
                f"has {treedef}: saved from a different estimator or optimizer?"
                + (
                    f" (saved with jax {meta['jax_version']}, this is jax {jax.__version__})"
                    if meta["jax_version"] != jax.__version__
                    else ""
                )
            )
        dtypes = _entry(path, npz, "dtypes").tolist()
        leaves = []
        for i, (key_path, spec) in enumerate(template):
            arr = _entry(path, npz, f"leaf_{i}")
            where = f"leaf {i} ({jax.tree_util.keystr(key_path)})"
            spec = spec if hasattr(spec, "shape") and hasattr(spec, "dtype") else np.asarray(spec)
            if arr.shape != tuple(spec.shape):
                raise ValueError(
                    f"{where} has shape {arr.shape}, the template has {tuple(spec.shape)}: "
                    "saved from a different dimension or estimator?"
                )
            if dtypes[i] != str(spec.dtype):
                raise ValueError(
                    f"{where} has dtype {dtypes[i]}, the template has {spec.dtype}: build the "
                    "template in the precision of the saved run (float32 or float64 data)"
                )
            # Dtypes numpy has no name for (bfloat16) come back as raw bytes: reinterpret.
            leaves.append(jnp.asarray(arr if arr.dtype == spec.dtype else arr.view(spec.dtype)))
    return jax.tree_util.tree_unflatten(treedef, leaves)
