"""Synthetic truths and streams, and readers that feed real data in chunks."""

from __future__ import annotations

import functools
import itertools
import math
import os
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgauss import _arrow, _csv
from jaxgauss.gaussian import Gaussian, spectral

__all__ = [
    "random_truth",
    "sample",
    "read_chunks",
    "read_csv_chunks",
    "read_table_chunks",
    "open_npy",
    "file_kind",
    "DEFAULT_CHUNK_ROWS",
]

DEFAULT_CHUNK_ROWS = 65_536


# Eager draws of up to this many entries are cut from a draw of a power of two of
# entries (at least 256), see ``_normal``.
_POOLED_ENTRIES = 1 << 16


@functools.partial(jax.jit, static_argnames=("size", "dtype"))
def _flat_normal(key: jax.Array, size: int, dtype: Any) -> jax.Array:
    return jax.random.normal(key, (size,), dtype)


def _normal(key: jax.Array, shape: tuple[int, ...], dtype: Any) -> jax.Array:
    """``jax.random.normal(key, shape, dtype)``, the same numbers.

    Called eagerly with the partitionable threefry (JAX's default), entry i of a draw
    does not depend on its shape, so a small draw is the first entries of a flat draw
    of a power of two of entries: one compiled threefry program (~0.3 s to compile)
    per size class and dtype serves every shape, not one per shape. A traced key
    (under ``jit`` or ``vmap``) draws as asked, at its own size.
    """
    size = math.prod(shape)
    if (
        isinstance(key, jax.core.Tracer)
        or size > _POOLED_ENTRIES
        or not jax.config.jax_threefry_partitionable
        or "threefry" not in str(jax.random.key_impl(key))
    ):
        return jax.random.normal(key, shape, dtype)
    pooled = max(256, 1 << (size - 1).bit_length())
    return _flat_normal(key, pooled, jnp.dtype(dtype))[:size].reshape(shape)


def random_truth(key: jax.Array, d: int, condition: float = 1.0, dtype=None) -> Gaussian:
    """A random Gaussian in dimension ``d`` with condition number ``condition``.

    The mean is drawn from N(0, I); the covariance is Q diag(λ) Qᵀ with Q a
    Haar-random rotation and λ log-spaced in [1, condition].

    Args:
      key: a JAX PRNG key.
      d: dimension.
      condition: ratio of the largest to the smallest eigenvalue, ≥ 1.
      dtype: float dtype (default: JAX's default float, float32 unless x64 is on).

    Example:
      >>> import jax, jaxgauss as jg
      >>> truth = jg.streams.random_truth(jax.random.key(0), 3, condition=100.0)
      >>> round(float(jax.numpy.linalg.cond(truth.cov)))
      100
    """
    if d < 1:
        raise ValueError(f"dimension d must be >= 1, got {d}")
    if not condition >= 1.0:
        raise ValueError(f"condition must be >= 1, got {condition}")
    dtype = dtype or jnp.zeros(()).dtype
    k_rot, k_mean = jax.random.split(key)
    cov = _rotated_spectrum(_normal(k_rot, (d, d), dtype), jnp.asarray(condition, dtype))
    return Gaussian(_normal(k_mean, (d,), dtype), cov)


@jax.jit
def _rotated_spectrum(z: jax.Array, condition: jax.Array) -> jax.Array:
    """Q diag(λ) Qᵀ (symmetrised), Q the Haar rotation from the normal draws ``z``
    (d, d) and λ log-spaced in [1, condition]: one compiled call per d and dtype."""
    q, r = jnp.linalg.qr(z)
    q = q * jnp.sign(jnp.diagonal(r))  # sign fix makes Q Haar-distributed
    eig = jnp.logspace(0.0, jnp.log10(condition), z.shape[0], dtype=z.dtype)
    cov = (q * eig) @ q.T
    return 0.5 * (cov + cov.T)


def sample(key: jax.Array, truth: Gaussian, n: int, allow_singular: bool = False) -> jax.Array:
    """``n`` independent draws from ``truth``, shape (n, ..., d) for a ``truth`` with
    leading axes (...) (each batch member draws its own), in the truth's dtype.

    A draw is μ + L z with z ~ N(0, I) and L the Cholesky factor of Σ.

    Args:
      key: a JAX PRNG key.
      truth: the Gaussian, mean (..., d), cov (..., d, d).
      n: number of draws.
      allow_singular: a Python bool (static). True: L = V diag(√sᵢ) from the
        eigendecomposition Σ = V diag(s) Vᵀ, eigenvalues at or below
        ``jaxgauss.gaussian.rank_tolerance`` set to zero, so a singular Σ (an MLE of n ≤ d
        rows) gives draws on its support (as ``scipy.stats.multivariate_normal.rvs``).
        The default gives NaN for a Σ that is not positive definite.

    Example:
      >>> import jax, jaxgauss as jg
      >>> g = jg.Gaussian(jax.numpy.zeros(2), jax.numpy.eye(2))
      >>> jg.streams.sample(jax.random.key(0), g, 5).shape
      (5, 2)
    """
    if allow_singular:
        chol = spectral(truth.cov).factor
    else:
        chol = jnp.linalg.cholesky(truth.cov)
    z = _normal(key, (n,) + jnp.shape(truth.mean), truth.mean.dtype)
    if jnp.ndim(truth.mean) == 1:
        return truth.mean + z @ chol.T
    return truth.mean + jnp.einsum("...ij,n...j->n...i", chol, z)


def _is_paths(data: Any) -> bool:
    """A non-empty list or tuple of file paths."""
    return (
        isinstance(data, (list, tuple))
        and bool(data)
        and all(isinstance(p, (str, os.PathLike)) for p in data)
    )


def _is_array_like(data: Any) -> bool:
    return isinstance(data, (np.ndarray, jax.Array, list, tuple)) or hasattr(data, "__array__")


def file_kind(path: str) -> str | None:
    """ "npy", "csv", "table" or None (unsupported) from a file name,
    case-insensitively: ``.npy``; ``.csv``, ``.txt``, ``.tsv`` and their
    gzip-compressed ``.gz`` forms; ``.parquet``, ``.feather``, ``.arrow``, ``.ipc``
    (read with pyarrow, the extra ``jaxgauss[arrow]``)."""
    name = path.lower()
    if name.endswith(".npy"):
        return "npy"
    if name.endswith((".csv", ".txt", ".tsv", ".csv.gz", ".txt.gz", ".tsv.gz")):
        return "csv"
    if name.endswith(_arrow.TABLE_SUFFIXES):
        return "table"
    return None


def read_chunks(
    data: Any, chunk_rows: int | None = None
) -> tuple[Iterator[Any], int | None, int | None]:
    """Turn any supported data source into an iterator of 2-D row chunks.

    Sources:
      * an array (NumPy, JAX, nested lists): one chunk, or chunks of ``chunk_rows``
        rows when given (NumPy arrays are sliced, not copied);
      * a path (str or ``os.PathLike``) to a ``.npy`` file (see ``open_npy``),
        memory-mapped so files larger than RAM stream through, to a ``.csv``,
        ``.tsv`` or ``.txt`` file, optionally gzip-compressed (``.csv.gz``; see
        ``read_csv_chunks``), or to a ``.parquet``, ``.feather``, ``.arrow`` or
        ``.ipc`` file (all its columns; see ``read_table_chunks``); suffixes in any
        case; chunks of ``chunk_rows`` rows (default 65 536);
      * a list or tuple of paths: the files one after another, in that order;
      * any other iterable (a generator, ``iter(list_of_arrays)``, a DataLoader): its
        items are the chunks, each (m, d).

    Non-native byte order (a big-endian ``.npy`` file) is converted chunk by chunk.

    Returns:
      (chunks, total rows or None when unknown, the chunk size to regroup rows into
      before computing: None for a whole array given without ``chunk_rows``).

    Example:
      >>> import numpy as np, jaxgauss as jg
      >>> chunks, n, size = jg.streams.read_chunks(np.zeros((5, 2)), chunk_rows=2)
      >>> [c.shape for c in chunks], n, size
      ([(2, 2), (2, 2), (1, 2)], 5, 2)
    """
    rows = chunk_rows or DEFAULT_CHUNK_ROWS
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        kind = file_kind(path)
        if kind == "npy":
            arr = open_npy(path)
            return _slices(arr, rows), (arr.shape[0] if arr.ndim else None), rows
        if kind == "csv":
            return read_csv_chunks(path, rows), None, rows
        if kind == "table":
            return read_table_chunks(path, rows), None, rows
        raise _unsupported(path)
    if _is_paths(data):  # files one after another, in the order given
        parts = [read_chunks(p, chunk_rows) for p in data]
        return itertools.chain.from_iterable(c for c, _, _ in parts), None, rows
    if _is_array_like(data):
        arr = data if isinstance(data, jax.Array) else _native(np.asarray(data))
        total = arr.shape[0] if arr.ndim else None
        if chunk_rows is None or arr.ndim == 0:
            return iter([arr]), total, None
        return _slices(arr, chunk_rows), total, chunk_rows
    if isinstance(data, Iterable):
        return iter(data), None, rows
    raise ValueError(
        f"data must be an array, a .npy/.csv path or an iterable of chunks, got {type(data).__name__}"
    )


def _unsupported(path: str) -> ValueError:
    return ValueError(
        f"unsupported file type {path!r}: use a .npy, .csv, .tsv or .txt file (or .csv.gz), "
        "or with pyarrow a .parquet, .feather or .arrow file"
    )


def file_columns(path: str, text: int | None = None) -> tuple[tuple[str, ...], int]:
    """The column names of the file at ``path`` (empty where it has none: a ``.npy``
    file, a CSV file without a header) and its number of columns, as ``read_chunks``
    reads it. ``text``: the index of a CSV column of labels (not a number to the
    header rule, see ``read_labelled_chunks``)."""
    kind = file_kind(path)
    if kind == "npy":
        arr = open_npy(path)
        return (), arr.shape[1] if arr.ndim == 2 else 1
    if kind == "csv":
        found = _csv.dialect(path, text)
        return found.names, found.width
    if kind == "table":
        names = _arrow.table_names(path)
        return tuple(names), len(names)
    raise _unsupported(path)


def read_labelled_chunks(
    path: str, chunk_rows: int, labels: _csv.Labels | None
) -> Iterator[np.ndarray]:
    """The chunks ``read_chunks`` reads from the file at ``path``, by the same readers
    and rules, with the column ``labels.column`` read as labels and replaced by
    ``labels.encode`` of them: how ``jaxgauss fit --group-by`` reads a file.

    Labels are text in a CSV file (read as pandas' ``read_csv`` reads a cell: quotes
    removed, spaces kept; an empty cell is an error naming its line), the values of
    any type in a Parquet, Feather or Arrow file (a null is an error naming its row),
    numbers in a ``.npy`` file (whose chunks become float32, or float64 for float64
    data, as ``fit`` would compute them anyway). ``labels`` None: ``read_chunks``.
    """
    kind = file_kind(path)
    if kind == "csv":
        return _read_csv(path, chunk_rows, "auto", labels)
    if kind == "table":
        return _arrow.read_table(path, chunk_rows, labels=labels)
    if kind == "npy" and labels is not None:
        return _encoded(_slices(open_npy(path), chunk_rows), labels)
    return read_chunks(path, chunk_rows)[0]


def _encoded(chunks: Iterator[np.ndarray], labels: _csv.Labels) -> Iterator[np.ndarray]:
    """Numeric chunks with the column of ``labels`` encoded."""
    for chunk in chunks:
        floating = np.issubdtype(chunk.dtype, np.floating)
        out = chunk.astype(np.promote_types(chunk.dtype, np.float32) if floating else np.float32)
        out[:, labels.column] = labels.encode(*_csv.factorize(chunk[:, labels.column]))
        yield out


def _native(arr: np.ndarray) -> np.ndarray:
    """``arr`` in the machine's byte order (JAX refuses big-endian arrays)."""
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def _slices(arr: Any, rows: int) -> Iterator[Any]:
    if arr.ndim == 0 or arr.shape[0] == 0:
        yield arr
        return
    for start in range(0, arr.shape[0], rows):
        chunk = arr[start : start + rows]
        yield _native(chunk) if isinstance(chunk, np.ndarray) else chunk


def open_npy(path: str) -> np.ndarray:
    """Memory-map the ``.npy`` file at ``path`` read-only, after checking its header.

    Every way a file can fail to be a readable array is a ``ValueError`` naming the
    file: empty (0 bytes), a zip archive (an ``.npz`` renamed ``.npy``), no NumPy
    header, a damaged header, Python objects (pickled data, never loaded), or fewer
    bytes than the header's shape and dtype need (a truncated copy). Not a regular
    file (a FIFO) is refused too: memory-mapping needs one.

    Example:
      >>> import tempfile, numpy as np, jaxgauss as jg
      >>> folder = tempfile.TemporaryDirectory()
      >>> np.save(f"{folder.name}/a.npy", np.zeros((4, 2)))
      >>> jg.streams.open_npy(f"{folder.name}/a.npy").shape
      (4, 2)
      >>> open(f"{folder.name}/b.npy", "wb").close()
      >>> jg.streams.open_npy(f"{folder.name}/b.npy")
      Traceback (most recent call last):
      ...
      ValueError: .../b.npy is empty (0 bytes), not a .npy array
      >>> folder.cleanup()
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if not os.path.isfile(path):
        raise ValueError(
            f"{path} is not a regular file (a pipe or device): a .npy file is memory-mapped; "
            "stream CSV text through a pipe instead"
        )
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        magic = f.read(6)
        if not magic:
            raise ValueError(f"{path} is empty (0 bytes), not a .npy array")
        if magic.startswith(b"PK"):
            raise ValueError(f"{path} is a zip archive (an .npz file?), not a .npy array")
        if magic != b"\x93NUMPY":
            raise ValueError(f"{path} is not a .npy array (no NumPy header)")
        f.seek(0)
        try:
            version = np.lib.format.read_magic(f)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read(f)
        except (ValueError, EOFError, SyntaxError) as e:
            raise ValueError(f"{path} has a damaged .npy header: {e}") from None
        offset = f.tell()
    if dtype.hasobject:
        raise ValueError(f"{path} holds Python objects (pickled data), which are never loaded")
    need = offset + math.prod(shape) * dtype.itemsize
    if size < need:
        raise ValueError(
            f"{path} is truncated: {size:,} bytes, its header ({shape}, {dtype}) needs {need:,}"
        )
    if math.prod(shape) == 0:
        return np.zeros(shape, dtype)
    return np.load(path, mmap_mode="r", allow_pickle=False)


def read_csv_chunks(
    source: Any, chunk_rows: int = DEFAULT_CHUNK_ROWS, *, engine: str = "auto"
) -> Iterator[np.ndarray]:
    r"""Read delimited numbers in chunks of ``chunk_rows`` rows (float64).

    Rules (the same for every reader of text tables in jaxgauss):

    * ``source`` is a path (``.gz`` is decompressed) or an open binary file (such as
      ``sys.stdin.buffer``); the text is UTF-8, a leading byte-order mark is dropped,
      and other bytes are an error naming the line and byte offset.
    * The delimiter is sniffed from the first line: whichever of ``,``, tab and ``;``
      occurs most often there.
    * Only the first non-blank line may be a header (a line with no number in it);
      any later line that is not numbers, ``#`` lines included, is an error naming
      its row and line. Blank lines are ignored.
    * Cells may be double-quoted (``"1.5"``) and surrounded by spaces. "nan" and
      "inf" are read as such (``fit``'s ``nan_policy`` decides what happens to them).
    * An empty or non-numeric cell, a trailing delimiter or a row with a different
      number of columns is a ``ValueError`` naming its 0-based data row, its 1-based
      line and its column. The rows before it are yielded first, so a ``fit`` keeps
      them (``DataError``-free: the error's ``.result``).

    Example:
      >>> import io, jaxgauss as jg
      >>> text = io.BytesIO(b'\xef\xbb\xbfa;b\n"1";2\n3;4\n')
      >>> next(jg.streams.read_csv_chunks(text)).tolist()
      [[1.0, 2.0], [3.0, 4.0]]

    With pyarrow installed (``jaxgauss[arrow]``), a file path is parsed by Arrow in
    C++, by the same rules and with the same messages: byte ranges of whole lines (a
    few MB each, so memory stays bounded) go through Arrow's multi-threaded reader,
    from the first range that holds a quote on (a quoted cell may hold a line end)
    through its streaming reader, and at the first range or block Arrow refuses, the
    pure-Python reader takes over at its first row. ``engine="python"`` forces the
    pure-Python reader.
    """
    if engine not in ("auto", "python"):
        raise ValueError(f"engine must be 'auto' or 'python', got {engine!r}")
    return _read_csv(source, chunk_rows, engine, None)


def _read_csv(
    source: Any, chunk_rows: int, engine: str, labels: _csv.Labels | None
) -> Iterator[np.ndarray]:
    if engine == "auto" and isinstance(source, (str, os.PathLike)) and _arrow.pyarrow():
        return _arrow.read_csv(os.fspath(source), chunk_rows, labels)
    return _csv.read_python(source, chunk_rows, labels=labels)


def read_table_chunks(
    path: str | os.PathLike, chunk_rows: int = DEFAULT_CHUNK_ROWS, columns: list[str] | None = None
) -> Iterator[np.ndarray]:
    """Read a Parquet, Feather or Arrow IPC file in chunks of ``chunk_rows`` float64 rows.

    Needs pyarrow (``pip install 'jaxgauss[arrow]'``). One record batch is in memory
    at a time, so files larger than RAM stream through. ``columns`` selects columns
    by name, in that order (None: all); each must hold numbers (integers, floats or
    booleans), otherwise a ``ValueError`` names it. A null (missing) cell is a
    ``ValueError`` naming its 0-based row and column, as an empty CSV cell is; the
    rows before it are yielded first.

    Example:
      >>> import tempfile, numpy as np, pyarrow as pa, pyarrow.parquet as pq
      >>> import jaxgauss as jg
      >>> folder = tempfile.TemporaryDirectory()
      >>> table = pa.table({"id": ["a", "b", "c"], "x": [1.0, 2.0, 3.0], "y": [4, 5, 6]})
      >>> pq.write_table(table, f"{folder.name}/t.parquet")
      >>> chunks = jg.streams.read_table_chunks(f"{folder.name}/t.parquet", 2, ["y", "x"])
      >>> [c.tolist() for c in chunks]
      [[[4.0, 1.0], [5.0, 2.0]], [[6.0, 3.0]]]
      >>> res = jg.fit(jg.welford(), jg.streams.read_table_chunks(f"{folder.name}/t.parquet", columns=["x"]))
      >>> float(res.estimate.mean[0])
      2.0
      >>> folder.cleanup()
    """
    return _arrow.read_table(os.fspath(path), chunk_rows, columns)
