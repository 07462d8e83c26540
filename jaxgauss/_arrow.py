"""File input through Apache Arrow (the optional extra ``jaxgauss[arrow]``).

Why a second CSV reader: the line-by-line reader in ``streams`` decodes, sniffs and
checks every line in Python, a few hundred thousand rows per second. Arrow's
streaming CSV reader parses in C++, block by block, in bounded memory. The rules
stay those of ``streams.read_csv_chunks``: the first line is read by the same
Python functions (byte-order mark, sniffed delimiter, header), Arrow is configured
to refuse everything those rules refuse (no null values, float64 columns, exactly
the first line's width), and as soon as Arrow refuses a block, the Python reader
takes over at that block's first row. It yields the good rows before the bad line
and raises the same message (row, line, column, byte offset), or reads on where
Arrow is stricter than the rules (a space before a quote, a blank line of spaces).

Parquet, Feather and Arrow IPC files are read batch by batch, never whole.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

TABLE_SUFFIXES = (".parquet", ".feather", ".arrow", ".ipc")


def pyarrow() -> Any:
    """The ``pyarrow`` module, or None when the extra is not installed."""
    try:
        import pyarrow
        import pyarrow.csv  # noqa: F401
    except ImportError:
        return None
    return pyarrow


def need_pyarrow(path: str) -> Any:
    pa = pyarrow()
    if pa is None:
        raise ValueError(
            f"reading {path} needs pyarrow: pip install 'jaxgauss[arrow]' "
            "(or convert it to .npy or .csv)"
        )
    return pa


class _Rows:
    """Regroups column batches into C-ordered float64 chunks of exactly ``size`` rows
    (the last one shorter), filled in place column by column."""

    def __init__(self, size: int, width: int):
        self.size, self.width = size, width
        self.buf = np.empty((size, width), np.float64)
        self.n = 0

    def add(self, columns: Sequence[np.ndarray]) -> Iterator[np.ndarray]:
        m, start = len(columns[0]), 0
        while start < m:
            take = min(self.size - self.n, m - start)
            for j, col in enumerate(columns):
                self.buf[self.n : self.n + take, j] = col[start : start + take]
            self.n += take
            start += take
            if self.n == self.size:
                yield self.flush()

    def flush(self) -> np.ndarray:
        out, self.n = self.buf[: self.n], 0
        self.buf = np.empty((self.size, self.width), np.float64)
        return out


def read_csv(path: str, chunk_rows: int, python_reader) -> Iterator[np.ndarray]:
    """``streams.read_csv_chunks`` of a file path through Arrow's streaming reader,
    handing over to ``python_reader(path, chunk_rows, skip=rows)`` (the Python reader
    resuming after ``rows`` data rows) at the first block Arrow refuses."""
    from jaxgauss import streams

    pa = pyarrow()
    import pyarrow.csv as pcsv

    f, name = streams._open_binary(path)
    try:
        first = next(streams._decoded_lines(f, name), None)
    finally:
        f.close()
    if first is None:
        raise ValueError(f"{name} has no rows")
    line_no, line = first
    delimiter = streams._sniff_delimiter(line)
    cells = streams._cells(line, delimiter)
    header = streams._is_header(cells, line, line_no, name)
    width = len(cells)
    names = [f"c{j}" for j in range(width)]
    # About one chunk's bytes per Arrow block: fewer, larger calls into C++.
    block = int(min(max(len(line.encode()) * chunk_rows * 1.25, 1 << 20), 1 << 26))
    read = pcsv.ReadOptions(
        column_names=names, skip_rows=line_no if header else 0, block_size=block
    )
    parse = pcsv.ParseOptions(delimiter=delimiter, quote_char='"')
    convert = pcsv.ConvertOptions(
        column_types=dict.fromkeys(names, pa.float64()),
        null_values=[],
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    rows, done = _Rows(chunk_rows, width), 0
    try:
        stream = pa.input_stream(path, compression="detect")
        reader = pcsv.open_csv(stream, read, parse, convert)
        try:
            for batch in reader:
                cols = [c.to_numpy() for c in batch.columns]
                for chunk in rows.add(cols):
                    done += chunk.shape[0]
                    yield chunk
        finally:
            stream.close()
    except (pa.ArrowException, OSError, ValueError):
        pass  # the Python reader reads on, or names the bad line
    else:
        if rows.n:
            yield rows.flush()
        return
    if rows.n:
        done += rows.n
        yield rows.flush()
    yield from python_reader(path, chunk_rows, skip=done)


def _table_batches(path: str, chunk_rows: int, columns: Sequence[str] | None) -> Iterator[Any]:
    """Record batches of a Parquet, Feather or Arrow IPC file, selecting ``columns``."""
    pa = need_pyarrow(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if path.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            file = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f"{path} is not a readable Parquet file: {e}") from None
        schema = file.schema_arrow
        _check_columns(path, schema, columns)
        yield schema
        yield from file.iter_batches(batch_size=chunk_rows, columns=columns)
        return
    import pyarrow.ipc as ipc

    source = pa.memory_map(path)
    try:
        try:
            reader = ipc.open_file(source)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        except pa.ArrowInvalid:
            source.seek(0)
            try:
                reader = ipc.open_stream(source)
            except (pa.ArrowException, OSError) as e:
                raise ValueError(f"{path} is not a readable Arrow IPC/Feather file: {e}") from None
            batches = iter(reader)
        _check_columns(path, reader.schema, columns)
        yield reader.schema
        for batch in batches:
            yield batch if columns is None else batch.select(list(columns))
    finally:
        source.close()


def _check_columns(path: str, schema: Any, columns: Sequence[str] | None) -> None:
    """Every selected column exists and holds numbers (integers, floats, booleans)."""
    import pyarrow.types as pt

    names = list(schema.names)
    if columns is not None:
        missing = [c for c in columns if c not in names]
        if missing:
            raise ValueError(f"{path} has no column {missing[0]!r}; its columns: {names}")
        if not columns:
            raise ValueError(f"{path}: columns= selects no column")
    chosen = names if columns is None else list(columns)
    if not chosen:
        raise ValueError(f"{path} has no columns")
    for col in chosen:
        t = schema.field(col).type
        if not (pt.is_integer(t) or pt.is_floating(t) or pt.is_boolean(t)):
            raise ValueError(
                f"{path}: column {col!r} holds {t}, not numbers; choose numeric columns "
                "with jaxgauss.streams.read_table_chunks(path, columns=[...])"
            )


def read_table(
    path: str, chunk_rows: int, columns: Sequence[str] | None = None
) -> Iterator[np.ndarray]:
    """Chunks of exactly ``chunk_rows`` float64 rows (the last shorter) from a
    Parquet, Feather or Arrow IPC file, one record batch in memory at a time. A null
    cell is an error naming its 0-based row and column, as an empty CSV cell is."""
    path = os.fspath(path)
    batches = _table_batches(path, chunk_rows, columns)
    schema = next(batches)
    names = list(schema.names) if columns is None else list(columns)
    rows, row = _Rows(chunk_rows, len(names)), 0
    for batch in batches:
        nulls = [
            (int(np.flatnonzero(~np.asarray(col.is_valid()))[0]), j)
            for j, col in enumerate(batch.columns)
            if col.null_count
        ]
        if nulls:
            first, j = min(nulls)
            yield from rows.add(
                [c.to_numpy(zero_copy_only=False) for c in batch.slice(0, first).columns]
            )
            if rows.n:
                yield rows.flush()
            raise ValueError(
                f"{path}: row {row + first} column {j} ({names[j]!r}) is null (a missing value)"
            )
        yield from rows.add([c.to_numpy(zero_copy_only=False) for c in batch.columns])
        row += batch.num_rows
    if rows.n:
        yield rows.flush()
