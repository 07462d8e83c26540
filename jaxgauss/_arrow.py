"""File input through Apache Arrow (the optional extra ``jaxgauss[arrow]``).

Why a second CSV reader: the line-by-line reader in ``_csv`` decodes, sniffs and
checks every line in Python, a few hundred thousand rows per second. Arrow parses
in C++. The rules stay those of ``streams.read_csv_chunks``: the first line is read
by the same functions (``_csv.dialect``: byte-order mark, sniffed delimiter,
header), and Arrow is configured to refuse everything those rules refuse (no null
values, float64 columns, exactly the first line's width).

The file is cut into byte ranges of whole lines (``RANGE_BYTES``), each parsed by
Arrow's multi-threaded reader while the rows of the one before are used, so memory
stays bounded. A line end is a row end only outside quotes, so from the first range
that holds a quote (or a line longer than a range) on, Arrow's streaming reader
reads on. As soon as Arrow refuses a range or block (or a range holds a carriage
return that is not a line end to the Python rules), the Python reader takes over at
its first row: it yields the good rows before the bad line and raises the same
message (row, line, column, byte offset, counted from the file's start), or reads on
where Arrow is stricter than the rules (a space before a quote, a line of spaces).

Parquet, Feather and Arrow IPC files are read batch by batch, never whole.
"""

from __future__ import annotations

import concurrent.futures
import os
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from jaxgauss import _csv

TABLE_SUFFIXES = (".parquet", ".feather", ".arrow", ".ipc")
RANGE_BYTES = 16 << 20  # bytes of whole lines per call of Arrow's multi-threaded reader
BLOCK_BYTES = 4 << 20  # its block: the bytes one of its threads parses


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


def read_csv(path: str, chunk_rows: int, labels: _csv.Labels | None = None) -> Iterator[np.ndarray]:
    """``streams.read_csv_chunks`` of a file path through Arrow, handing over to the
    Python reader (``_csv.read_python``, resuming after the rows already yielded) at
    the first range or block Arrow refuses (or, in a column of ``labels``, an empty
    cell, which the Python reader names)."""
    pa = pyarrow()
    found = _csv.dialect(path, None if labels is None else labels.column)
    rows, done = _Rows(chunk_rows, found.width), 0
    try:
        for batch in _csv_batches(path, found, chunk_rows):
            for chunk in rows.add(_numpy_columns(batch, labels, empty_label=False)):
                done += chunk.shape[0]
                yield chunk
    except (pa.ArrowException, OSError, EOFError, ValueError, zlib.error):
        pass  # the Python reader reads on, or names the bad line
    else:
        if rows.n:
            yield rows.flush()
        return
    if rows.n:
        done += rows.n
        yield rows.flush()
    yield from _csv.read_python(path, chunk_rows, skip=done, labels=labels)


def _numpy_columns(batch: Any, labels: _csv.Labels | None, empty_label: bool) -> list:
    """A record batch's columns as NumPy arrays, the column of ``labels`` (if any)
    encoded; an empty label is a ValueError unless ``empty_label``."""
    text = None if labels is None else labels.column
    out = [
        None if j == text else c.to_numpy(zero_copy_only=False) for j, c in enumerate(batch.columns)
    ]
    if labels is not None:
        out[text] = labels.encode(*_factorized(batch.column(text), empty_label))
    return out


def _factorized(column: Any, empty_label: bool) -> tuple[list, np.ndarray]:
    """An Arrow column's distinct values in order of first appearance (Arrow's
    dictionary encoding keeps that order) and each row's index among them."""
    import pyarrow.compute as pc

    if pyarrow().types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if not empty_label and pc.any(pc.equal(column, "")).as_py():
        raise ValueError("an empty label")
    codes = pc.dictionary_encode(column)
    return codes.dictionary.to_pylist(), codes.indices.to_numpy()


def _csv_options(found: _csv.Dialect, quoted: bool, block: int, skip: int = 0) -> tuple:
    """Arrow's read, parse and convert options that refuse what the CSV rules refuse:
    no null values, float64 columns (text in a column of labels), exactly the first
    line's width."""
    import pyarrow.csv as pcsv

    pa = pyarrow()
    names = [f"c{j}" for j in range(found.width)]
    read = pcsv.ReadOptions(column_names=names, skip_rows=skip, block_size=block)
    parse = pcsv.ParseOptions(delimiter=found.delimiter, quote_char='"' if quoted else False)
    convert = pcsv.ConvertOptions(
        column_types={
            n: pa.string() if j == found.text else pa.float64() for j, n in enumerate(names)
        },
        null_values=[],
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    return read, parse, convert


class _Unsafe(Exception):
    """A range of lines that may not be a range of rows (a quote in it)."""


class _Ranges:
    """Consecutive byte ranges of whole lines of a CSV file's data (header lines and
    a byte-order mark dropped), about ``RANGE_BYTES`` each, parsed by Arrow's
    multi-threaded reader. Each range is read into the same buffer (fresh 16 MB
    buffers cost more in page faults than the copies). A line end is a row end only
    outside quotes, so a range holding a quote raises ``_Unsafe``, as does a line
    longer than a range; ``start`` is then that range's byte offset in the
    decompressed file, where Arrow's streaming reader takes over."""

    def __init__(self, f: Any, found: _csv.Dialect, size: int | None):
        self.f, self.start, self.end = f, 0, 0  # the unread tail is buf[:end]
        self.room = RANGE_BYTES if size is None else min(RANGE_BYTES, size + 1)
        self.buf = bytearray(2 * self.room)
        self.skip = found.line_no if found.header else 0  # header lines still to drop
        self.options = _csv_options(found, quoted=False, block=BLOCK_BYTES)

    def _next(self) -> tuple[int, int] | None:
        """The next range's bounds in ``buf`` (None at the end of the file)."""
        buf, tail = self.buf, self.end
        with memoryview(buf) as view:
            self.end = tail + self.f.readinto(view[tail : tail + self.room])
        if self.end == 0:
            return None
        cut = buf.rfind(b"\n", 0, self.end) + 1 if self.end > tail else self.end
        if not cut or self.end - cut > self.room:
            raise _Unsafe  # a line longer than a range
        pos = len(_csv.BOM) if self.start == 0 and buf.startswith(_csv.BOM) else 0
        while self.skip and pos < cut:
            pos = buf.find(b"\n", pos, cut) + 1 or cut
            self.skip -= 1
        self.start += pos
        if buf.find(b'"', pos, cut) >= 0:
            raise _Unsafe
        self.start += cut - pos
        if buf.find(b"\r", pos, cut) >= 0 and _lone_return(buf, pos, cut):
            raise ValueError("a carriage return alone")  # a line end to Arrow, not to Python
        return pos, cut

    def parse(self) -> Any:
        """The next range as an Arrow table (None at the end of the file)."""
        import pyarrow.csv as pcsv

        while (bounds := self._next()) is not None:
            pos, cut = bounds
            if cut > pos:
                with memoryview(self.buf) as view:
                    table = pcsv.read_csv(pyarrow().py_buffer(view[pos:cut]), *self.options)
            self.buf[: self.end - cut] = self.buf[cut : self.end]
            self.end -= cut
            if cut > pos:
                return table
        return None


def _lone_return(buf: bytearray, start: int, stop: int) -> bool:
    """Whether ``buf[start:stop]`` holds a carriage return not followed by a line feed
    (a few ms for 16 MB, a third of ``bytes.count``'s time)."""
    a = np.frombuffer(buf, np.uint8, stop - start, start)
    cr = a == 13
    return bool(cr[-1]) or np.count_nonzero(cr) != np.count_nonzero(cr[:-1] & (a[1:] == 10))


def _csv_batches(path: str, found: _csv.Dialect, chunk_rows: int) -> Iterator[Any]:
    """Record batches of a CSV file's data rows: ranges of whole lines through the
    multi-threaded reader, the next range parsed in a second thread while the rows
    of one are used; from the first range that may not be whole rows on, Arrow's
    streaming reader."""
    f, _ = _csv.open_binary(path)
    ranges = _Ranges(f, found, None if path.lower().endswith(".gz") else os.path.getsize(path))
    pool = concurrent.futures.ThreadPoolExecutor(1)
    ahead = None
    try:
        try:
            ahead = pool.submit(ranges.parse)
            while (table := ahead.result()) is not None:
                ahead = pool.submit(ranges.parse)
                yield from table.to_batches()
            return
        except _Unsafe:
            pass
        import pyarrow.csv as pcsv

        f.seek(ranges.start)
        # About one chunk's bytes per Arrow block: fewer, larger calls into C++.
        block = int(min(max(found.width * 16 * chunk_rows * 1.25, 1 << 20), 1 << 26))
        options = _csv_options(found, quoted=True, block=block, skip=ranges.skip)
        yield from pcsv.open_csv(pyarrow().PythonFile(f, mode="r"), *options)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        f.close()


def _table_batches(path: str, chunk_rows: int, columns: Sequence[str] | None) -> Iterator[Any]:
    """The schema of a Parquet, Feather or Arrow IPC file, then its record batches,
    selecting ``columns`` (the caller checks them against the schema first)."""
    pa = need_pyarrow(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if path.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            file = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f"{path} is not a readable Parquet file: {e}") from None
        yield file.schema_arrow
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
        yield reader.schema
        for batch in batches:
            yield batch if columns is None else batch.select(list(columns))
    finally:
        source.close()


def table_names(path: str) -> list[str]:
    """The column names of a Parquet, Feather or Arrow IPC file."""
    batches = _table_batches(os.fspath(path), 1, None)
    try:
        return list(next(batches).names)
    finally:
        batches.close()


def _check_columns(
    path: str, schema: Any, columns: Sequence[str] | None, text: int | None = None
) -> None:
    """Every selected column exists and holds numbers (integers, floats, booleans),
    but the one of labels (``text``, its index among them), which may hold anything."""
    import pyarrow.types as pt

    names = list(schema.names)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(
            f"{path} has more than one column named {twice[0]!r}: give its columns "
            "distinct names to read them"
        )
    if columns is not None:
        missing = [c for c in columns if c not in names]
        if missing:
            raise ValueError(f"{path} has no column {missing[0]!r}; its columns: {names}")
        if not columns:
            raise ValueError(f"{path}: columns= selects no column")
    chosen = names if columns is None else list(columns)
    if not chosen:
        raise ValueError(f"{path} has no columns")
    for j, col in enumerate(chosen):
        t = schema.field(col).type
        if j != text and not (pt.is_integer(t) or pt.is_floating(t) or pt.is_boolean(t)):
            raise ValueError(
                f"{path}: column {col!r} holds {t}, not numbers; choose numeric columns "
                "with jaxgauss.streams.read_table_chunks(path, columns=[...])"
            )


def read_table(
    path: str,
    chunk_rows: int,
    columns: Sequence[str] | None = None,
    labels: _csv.Labels | None = None,
) -> Iterator[np.ndarray]:
    """Chunks of exactly ``chunk_rows`` float64 rows (the last shorter) from a
    Parquet, Feather or Arrow IPC file, one record batch in memory at a time, the
    column of ``labels`` (if any) encoded. A null cell is an error naming its 0-based
    row and column, as an empty CSV cell is."""
    path = os.fspath(path)
    batches = _table_batches(path, chunk_rows, columns)
    schema = next(batches)
    _check_columns(path, schema, columns, None if labels is None else labels.column)
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
            yield from rows.add(_numpy_columns(batch.slice(0, first), labels, empty_label=True))
            if rows.n:
                yield rows.flush()
            raise ValueError(
                f"{path}: row {row + first} column {j} ({names[j]!r}) is null (a missing value)"
            )
        yield from rows.add(_numpy_columns(batch, labels, empty_label=True))
        row += batch.num_rows
    if rows.n:
        yield rows.flush()
