"""Synthetic truths and streams, and readers that feed real data in chunks."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgauss.gaussian import Gaussian, _spectral

__all__ = ["random_truth", "sample", "read_chunks", "read_csv_chunks", "DEFAULT_CHUNK_ROWS"]

DEFAULT_CHUNK_ROWS = 65_536


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
    q, r = jnp.linalg.qr(jax.random.normal(k_rot, (d, d), dtype))
    q = q * jnp.sign(jnp.diagonal(r))  # sign fix makes Q Haar-distributed
    eig = jnp.logspace(0.0, jnp.log10(jnp.asarray(condition, dtype)), d, dtype=dtype)
    cov = (q * eig) @ q.T
    return Gaussian(jax.random.normal(k_mean, (d,), dtype), 0.5 * (cov + cov.T))


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
        chol = _spectral(truth.cov).factor
    else:
        chol = jnp.linalg.cholesky(truth.cov)
    z = jax.random.normal(key, (n,) + jnp.shape(truth.mean), truth.mean.dtype)
    if jnp.ndim(truth.mean) == 1:
        return truth.mean + z @ chol.T
    return truth.mean + jnp.einsum("...ij,n...j->n...i", chol, z)


def _is_array_like(data: Any) -> bool:
    return isinstance(data, (np.ndarray, jax.Array, list, tuple)) or hasattr(data, "__array__")


def read_chunks(
    data: Any, chunk_rows: int | None = None
) -> tuple[Iterator[Any], int | None, int | None]:
    """Turn any supported data source into an iterator of 2-D row chunks.

    Sources:
      * an array (NumPy, JAX, nested lists): one chunk, or chunks of ``chunk_rows``
        rows when given (NumPy arrays are sliced, not copied);
      * a path (str or ``os.PathLike``) to a ``.npy`` file, memory-mapped so files
        larger than RAM stream through, or to a ``.csv`` file (see
        ``read_csv_chunks``); chunks of ``chunk_rows`` rows (default 65 536);
      * any other iterable (a generator, ``iter(list_of_arrays)``, a DataLoader): its
        items are the chunks, each (m, d).

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
        if path.endswith(".npy"):
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            return _slices(arr, rows), (arr.shape[0] if arr.ndim else None), rows
        if path.endswith((".csv", ".txt")):
            return read_csv_chunks(path, rows), None, rows
        raise ValueError(f"unsupported file type {path!r}: use a .npy or .csv file")
    if _is_array_like(data):
        arr = data if isinstance(data, jax.Array) else np.asarray(data)
        total = arr.shape[0] if arr.ndim else None
        if chunk_rows is None or arr.ndim == 0:
            return iter([arr]), total, None
        return _slices(arr, chunk_rows), total, chunk_rows
    if isinstance(data, Iterable):
        return iter(data), None, rows
    raise ValueError(
        f"data must be an array, a .npy/.csv path or an iterable of chunks, got {type(data).__name__}"
    )


def _slices(arr: Any, rows: int) -> Iterator[Any]:
    if arr.ndim == 0 or arr.shape[0] == 0:
        yield arr
        return
    for start in range(0, arr.shape[0], rows):
        yield arr[start : start + rows]


def _csv_cell_error(line: str, row: int, line_no: int) -> ValueError:
    for col, cell in enumerate(line.rstrip("\r\n").split(",")):
        if not cell.strip():
            return ValueError(f"CSV row {row} (line {line_no}) column {col} is empty")
        if not _is_number(cell):
            return ValueError(
                f"CSV row {row} (line {line_no}) column {col} is not a number: {cell.strip()!r}"
            )
    return ValueError(f"CSV row {row} (line {line_no}) could not be read: {line.strip()!r}")


def read_csv_chunks(path: str, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[np.ndarray]:
    """Read a comma-separated file of numbers in chunks of ``chunk_rows`` rows (float64).

    A first line with no numbers is taken as a header and skipped; blank lines are
    ignored. "nan" and "inf" cells are read as such (``fit``'s ``nan_policy`` decides
    what happens to them); an empty or non-numeric cell, or a row with a different
    number of columns, is a ``ValueError`` naming its row, line and column.
    """
    with open(path) as f:
        lines = (ln for ln in enumerate(f, start=1) if ln[1].strip())
        first = next(lines, None)
        if first is None:
            raise ValueError(f"{path} has no rows")
        numbers = [_is_number(c) for c in first[1].split(",")]
        if all(numbers):
            pending: Iterable = itertools.chain([first], lines)
        elif any(numbers):
            raise _csv_cell_error(first[1], 0, first[0])
        else:
            pending = lines  # a header
        row = 0
        width = None
        while True:
            block = list(itertools.islice(pending, chunk_rows))
            if not block:
                return
            try:
                chunk = np.loadtxt(
                    [ln for _, ln in block], delimiter=",", ndmin=2, dtype=np.float64
                )
            except ValueError:
                for i, (line_no, ln) in enumerate(block):
                    try:
                        np.loadtxt([ln], delimiter=",", ndmin=2)
                    except ValueError:
                        raise _csv_cell_error(ln, row + i, line_no) from None
                raise ValueError(
                    f"{path}: rows {row}..{row + len(block) - 1} have different numbers of columns"
                ) from None
            if width is not None and chunk.shape[1] != width:
                raise ValueError(
                    f"CSV row {row} (line {block[0][0]}) has {chunk.shape[1]} columns, earlier rows {width}"
                )
            width = chunk.shape[1]
            row += len(block)
            yield chunk


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False
