"""Synthetic truths and streams, and readers that feed real data in chunks."""

from __future__ import annotations

import csv
import functools
import gzip
import itertools
import math
import os
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgauss import _arrow
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
        ``jaxgauss.rank_tolerance`` set to zero, so a singular Σ (an MLE of n ≤ d
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
        raise ValueError(
            f"unsupported file type {path!r}: use a .npy, .csv, .tsv or .txt file (or .csv.gz), "
            "or with pyarrow a .parquet, .feather or .arrow file"
        )
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


# --- CSV text: each rule in one small function, each message in one place ----------

_DELIMITERS = (",", "\t", ";")
_BOM = b"\xef\xbb\xbf"


def _open_binary(source: Any) -> tuple[Any, str]:
    """A binary file object for ``source`` (a path, gzip-decompressed for ``.gz``, or
    an open binary file such as ``sys.stdin.buffer``) and a name for messages."""
    if not isinstance(source, (str, os.PathLike)):
        return source, getattr(source, "name", "<stream>")
    path = os.fspath(source)
    if path.lower().endswith(".gz"):
        return gzip.open(path, "rb"), path
    return open(path, "rb"), path


def _decoded_lines(f: Any, name: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of every non-blank line, decoded as UTF-8 with a leading
    byte-order mark dropped; bytes that are not UTF-8 are a ValueError naming the
    file, line and byte offset."""
    offset = 0
    try:
        for line_no, raw in enumerate(f, start=1):
            text_start = len(_BOM) if line_no == 1 and raw.startswith(_BOM) else 0
            try:
                text = raw[text_start:].decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{name}: line {line_no} is not UTF-8 text: byte offset "
                    f"{offset + text_start + e.start} is {raw[text_start + e.start : text_start + e.start + 1]!r}"
                ) from None
            offset += len(raw)
            if text.strip():
                yield line_no, text
    except (OSError, EOFError) as e:  # a damaged or truncated .gz
        raise ValueError(f"{name}: could not be read: {e}") from None


def _sniff_delimiter(line: str) -> str:
    """The delimiter of a CSV file from its first line: whichever of ``,``, tab and
    ``;`` occurs most often there (``,`` for a single column)."""
    counts = [line.count(c) for c in _DELIMITERS]
    return _DELIMITERS[counts.index(max(counts))] if max(counts) else ","


def _cells(line: str, delimiter: str) -> list[str]:
    """The cells of one line, double quotes removed, surrounding spaces stripped."""
    return [
        c.strip()
        for c in next(csv.reader([line.rstrip("\r\n")], delimiter=delimiter, skipinitialspace=True))
    ]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return "_" not in cell  # Python reads "1_000"; no CSV parser does
    except ValueError:
        return False


def _is_header(cells: list[str], line: str, line_no: int, name: str) -> bool:
    """A first line with no number in it is a header; one with only numbers is data;
    a mix is an error naming its first non-number."""
    numbers = [_is_number(c) for c in cells]
    if all(numbers):
        return False
    if not any(numbers):
        return True
    raise _line_error(line, cells, 0, line_no, None, name)


def _line_error(
    line: str, cells: list[str], row: int, line_no: int, width: int | None, name: str = ""
) -> ValueError | None:
    """What is wrong with one data line (None if nothing): the one place for the
    CSV reader's messages."""
    where = f"{name + ': ' if name else ''}CSV row {row} (line {line_no})"
    if len(cells) > 1 and cells[-1] == "" and all(cells[:-1]):
        return ValueError(
            f"{where} ends with a delimiter: an empty last column (column {len(cells) - 1}); "
            "remove the trailing delimiters"
        )
    for col, cell in enumerate(cells):
        if not cell:
            return ValueError(f"{where} column {col} is empty")
        if not _is_number(cell):
            hint = (
                " (only the first line may be a header; comment lines are not allowed)"
                if line.lstrip().startswith("#")
                else ""
            )
            return ValueError(f"{where} column {col} is not a number: {cell!r}{hint}")
    if width is not None and len(cells) != width:
        return ValueError(f"{where} has {len(cells)} columns, earlier rows {width}")
    return None


def _parse_block(
    block: list[tuple[int, str]], delimiter: str, width: int | None, row: int, name: str
) -> tuple[np.ndarray, ValueError | None]:
    """The rows of ``block`` before its first bad line (all of them if none), and the
    error of that line (or None)."""
    texts = [ln for _, ln in block]
    try:
        chunk = np.loadtxt(
            texts, delimiter=delimiter, quotechar='"', comments=None, ndmin=2, dtype=np.float64
        )
        if width is None or chunk.shape[1] == width:
            return chunk, None
    except ValueError:
        pass
    # The slow path: line by line, up to the first bad line. It also reads what the
    # fast parser does not (a space before a quote).
    rows = []
    for i, (line_no, ln) in enumerate(block):
        cells = _cells(ln, delimiter)
        err = _line_error(ln, cells, row + i, line_no, width, name)
        if err is not None:
            return (np.array(rows, np.float64) if rows else None), err
        rows.append([float(c) for c in cells])
        width = len(cells)
    return np.array(rows, np.float64), None


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

    With pyarrow installed (``jaxgauss[arrow]``), a file path is parsed by Arrow's
    streaming CSV reader in C++, several times faster, by the same rules and with
    the same messages: at the first block Arrow refuses, this reader takes over at
    that block's first row. ``engine="python"`` forces the pure-Python reader.
    """
    if engine not in ("auto", "python"):
        raise ValueError(f"engine must be 'auto' or 'python', got {engine!r}")
    if engine == "auto" and isinstance(source, (str, os.PathLike)) and _arrow.pyarrow():
        return _arrow.read_csv(os.fspath(source), chunk_rows, _read_csv_python)
    return _read_csv_python(source, chunk_rows)


def _read_csv_python(source: Any, chunk_rows: int, skip: int = 0) -> Iterator[np.ndarray]:
    """``read_csv_chunks`` line by line in Python; the first ``skip`` data rows
    (already read by Arrow) are decoded but neither parsed nor yielded."""
    f, name = _open_binary(source)
    try:
        lines = _decoded_lines(f, name)
        first = next(lines, None)
        if first is None:
            raise ValueError(f"{name} has no rows")
        delimiter = _sniff_delimiter(first[1])
        if not _is_header(_cells(first[1], delimiter), first[1], first[0], name):
            lines = itertools.chain([first], lines)
        row, width = skip, None
        if skip:
            lines = itertools.islice(lines, skip, None)
        while block := list(itertools.islice(lines, chunk_rows)):
            chunk, err = _parse_block(block, delimiter, width, row, name)
            if chunk is not None and chunk.shape[0]:
                width = chunk.shape[1]
                row += chunk.shape[0]
                yield chunk
            if err is not None:
                raise err
    finally:
        if f is not source:
            f.close()


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
