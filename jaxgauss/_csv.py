"""The CSV rules both text readers share, and the pure-Python reader.

Each rule is one small function and each message is written in one place, so the
Arrow reader (``jaxgauss._arrow``) and the line-by-line reader here read the first
line, sniff the delimiter, detect a header and name a bad line the same way. The
rules themselves are documented in ``jaxgauss.streams.read_csv_chunks``.

A column of group labels (``jaxgauss fit --group-by``) is read by every reader as
text, the way pandas' ``read_csv`` and the ``csv`` module read a cell: a double quote
opens a quoted cell only at the cell's start, quotes are removed (``""`` is one
quote) and spaces are kept, inside quotes or not. Each chunk's labels are handed to
the ``Labels.encode`` of the reader's caller, which puts a number for each in its
place: the numbers of every reader's chunks are read by the same rules whether a
file has labels or not.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

DELIMITERS = (",", "\t", ";")
# The longest line read (64 MiB, ~2.7 million numbers of 24 characters, far more
# columns than a d x d covariance allows): a longer one, such as a file without line
# ends, is an error naming it instead of a read of the whole file into memory.
MAX_LINE_BYTES = 1 << 26
BOM = b"\xef\xbb\xbf"


class Dialect(NamedTuple):
    """What the first non-blank line of a CSV file says about the rest.

    Attributes:
      name: the file's name, for messages.
      line_no: the first non-blank line's 1-based number.
      delimiter: the sniffed delimiter.
      header: whether that line is a header (then data start on the next line).
      width: its number of cells.
      names: the header's cells (empty without a header).
      text: the index of the column of text labels, if any (see ``Labels``).
    """

    name: str
    line_no: int
    delimiter: str
    header: bool
    width: int
    names: tuple[str, ...] = ()
    text: int | None = None


class Labels(NamedTuple):
    """A column read as labels, not as numbers, and what replaces them.

    Attributes:
      column: the column's 0-based index.
      encode: ``encode(uniques, inverse)`` -> the numbers (float64, one a row) that
        replace a chunk's labels: ``uniques`` are the chunk's distinct labels in
        order of first appearance, ``inverse`` (m,) the index of each row's label
        among them.
    """

    column: int
    encode: Callable[[Any, np.ndarray], np.ndarray]


def factorize(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """The distinct entries of ``values`` (a list or a 1-D array) in order of first
    appearance, and the index of each value among them."""
    uniques, first, inverse = np.unique(np.asarray(values), return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return uniques[order], rank[inverse.ravel()]


def open_binary(source: Any) -> tuple[Any, str]:
    """A binary file object for ``source`` (a path, gzip-decompressed for ``.gz``, or
    an open binary file such as ``sys.stdin.buffer``) and a name for messages."""
    if not isinstance(source, (str, os.PathLike)):
        return source, getattr(source, "name", "<stream>")
    path = os.fspath(source)
    if path.lower().endswith(".gz"):
        return gzip.open(path, "rb"), path
    return open(path, "rb"), path


def decoded_lines(f: Any, name: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of every non-blank line, decoded as UTF-8 with a leading
    byte-order mark dropped; bytes that are not UTF-8 are a ValueError naming the
    file, line and byte offset."""
    offset = 0
    try:
        for line_no, raw in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), start=1):
            if len(raw) > MAX_LINE_BYTES:
                raise ValueError(
                    f"{name}: line {line_no} is longer than {MAX_LINE_BYTES:,} bytes: not a "
                    "line of numbers (a file without line ends, or not a CSV file)"
                )
            text_start = len(BOM) if line_no == 1 and raw.startswith(BOM) else 0
            try:
                text = raw[text_start:].decode("utf-8")
            except UnicodeDecodeError as e:
                bad = text_start + e.start
                raise ValueError(
                    f"{name}: line {line_no} is not UTF-8 text: byte offset "
                    f"{offset + bad} is {raw[bad : bad + 1]!r}"
                ) from None
            offset += len(raw)
            if text.strip():
                yield line_no, text
    except (OSError, EOFError) as e:  # a damaged or truncated .gz
        raise ValueError(f"{name}: could not be read: {e}") from None


def sniff_delimiter(line: str) -> str:
    """The delimiter of a CSV file from its first line: whichever of ``,``, tab and
    ``;`` occurs most often there (``,`` for a single column)."""
    counts = [line.count(c) for c in DELIMITERS]
    return DELIMITERS[counts.index(max(counts))] if max(counts) else ","


def cells(line: str, delimiter: str, text: int | None = None) -> list[str]:
    """The cells of one line, double quotes removed, surrounding spaces stripped. With
    a column of labels (``text``, its index) the line is split as pandas splits it
    (a quote opens a quoted cell only at its start) and the label keeps its spaces."""
    line = line.rstrip("\r\n")
    if text is None:
        split = csv.reader([line], delimiter=delimiter, skipinitialspace=True)
        return [c.strip() for c in next(split)]
    split = csv.reader([line], delimiter=delimiter)
    return [c if j == text else c.strip() for j, c in enumerate(next(split))]


def unreadable(error: csv.Error) -> str:
    """Why the csv module could not split a line, as the end of a sentence naming
    it: a cell longer than its field limit, or a carriage return inside the line."""
    if "field larger than field limit" in str(error):
        return (
            f"holds a cell of more than {csv.field_size_limit():,} characters: not a number "
            "(is a quote left open?)"
        )
    return (
        "holds a carriage return (\\r) that does not end it: lines must end in \\n or "
        "\\r\\n (a lone \\r does not end a line: convert such a file first)"
    )


def is_number(cell: str) -> bool:
    """Whether a cell is a number by the CSV rules (Python's ``float``, without the
    ``_`` digit separators no CSV parser reads)."""
    try:
        float(cell)
        return "_" not in cell
    except ValueError:
        return False


def is_header(
    line_cells: list[str], line: str, line_no: int, name: str, text: int | None = None
) -> bool:
    """A first line with no number in it is a header; one with only numbers is data;
    a mix is an error naming its first non-number. A column of labels (``text``)
    does not count."""
    numbers = [is_number(c) for j, c in enumerate(line_cells) if j != text]
    if all(numbers):
        return False
    if not any(numbers):
        return True
    raise line_error(line, line_cells, 0, line_no, None, name, text)


def first_line(
    f: Any, name: str, text: int | None = None
) -> tuple[Dialect, Iterator[tuple[int, str]]]:
    """The ``Dialect`` of the binary file ``f``, from its first non-blank line, and
    its decoded data lines (the first line included unless it is a header).
    ``text``: the index of a column of labels, if any."""
    lines = decoded_lines(f, name)
    first = next(lines, None)
    if first is None:
        raise ValueError(f"{name} has no rows")
    line_no, line = first
    delimiter = sniff_delimiter(line)
    try:
        line_cells = cells(line, delimiter, text)
    except csv.Error as e:
        raise ValueError(f"{name}: line {line_no} {unreadable(e)}") from None
    header = is_header(line_cells, line, line_no, name, text)
    if not header:
        lines = itertools.chain([first], lines)
    names = tuple(line_cells) if header else ()
    return Dialect(name, line_no, delimiter, header, len(line_cells), names, text), lines


def dialect(path: str, text: int | None = None) -> Dialect:
    """The ``Dialect`` of the CSV file at ``path`` (read from its first line only)."""
    f, name = open_binary(path)
    try:
        return first_line(f, name, text)[0]
    finally:
        f.close()


def _where(row: int, line_no: int, name: str) -> str:
    return f"{name + ': ' if name else ''}CSV row {row} (line {line_no})"


def line_error(
    line: str,
    line_cells: list[str],
    row: int,
    line_no: int,
    width: int | None,
    name: str = "",
    text: int | None = None,
) -> ValueError | None:
    """What is wrong with one data line (None if nothing): the one place for the
    CSV readers' messages. The column of labels (``text``) may hold any text but
    none."""
    where = _where(row, line_no, name)
    if len(line_cells) > 1 and line_cells[-1] == "" and all(line_cells[:-1]):
        return ValueError(
            f"{where} ends with a delimiter: an empty last column (column {len(line_cells) - 1}); "
            "remove the trailing delimiters"
        )
    for col, cell in enumerate(line_cells):
        if not cell:
            return ValueError(f"{where} column {col} is empty")
        if col != text and not is_number(cell):
            hint = (
                " (only the first line may be a header; comment lines are not allowed)"
                if line.lstrip().startswith("#")
                else ""
            )
            return ValueError(f"{where} column {col} is not a number: {cell!r}{hint}")
    if width is not None and len(line_cells) != width:
        return ValueError(f"{where} has {len(line_cells)} columns, earlier rows {width}")
    return None


def parse_block(
    block: list[tuple[int, str]],
    delimiter: str,
    width: int | None,
    row: int,
    name: str,
    labels: Labels | None = None,
) -> tuple[np.ndarray | None, ValueError | None]:
    """The rows of ``block`` before its first bad line (all of them if none), and the
    error of that line (or None); a column of ``labels`` holds their numbers."""
    if labels is not None:
        chunk = _labelled_block(block, delimiter, width, labels)
        if chunk is not None:
            return chunk, None
    else:
        try:
            chunk = np.loadtxt(
                [ln for _, ln in block], delimiter=delimiter, quotechar='"', comments=None,
                ndmin=2, dtype=np.float64,
            )  # fmt: skip
            if width is None or chunk.shape[1] == width:
                return chunk, None
        except ValueError:
            pass
    # The slow path: line by line, up to the first bad line. It also reads what the
    # fast parser does not (a space before a quote, labels).
    text = None if labels is None else labels.column
    rows, texts, err = [], [], None
    for i, (line_no, ln) in enumerate(block):
        try:
            line_cells = cells(ln, delimiter, text)
        except csv.Error as e:
            err = ValueError(f"{_where(row + i, line_no, name)} {unreadable(e)}")
        else:
            err = line_error(ln, line_cells, row + i, line_no, width, name, text)
        if err is not None:
            break
        rows.append([0.0 if j == text else float(c) for j, c in enumerate(line_cells)])
        if text is not None:
            texts.append(line_cells[text])
        width = len(line_cells)
    return _chunk(rows, texts, labels), err


def _labelled_block(
    block: list[tuple[int, str]], delimiter: str, width: int, labels: Labels
) -> np.ndarray | None:
    """The fast path of a block with labels: its rows when no line holds a quote (its
    cells are then what lies between delimiters) and every line is good, else None
    (the slow path decides)."""
    texts, col = [ln for _, ln in block], labels.column
    if any('"' in ln or ln.count(delimiter) != width - 1 for ln in texts):
        return None
    names = [ln.split(delimiter, col + 1)[col].rstrip("\r\n") for ln in texts]
    numbers = [j for j in range(width) if j != col]
    if not (all(names) and numbers):
        return None
    try:
        values = np.loadtxt(
            texts, delimiter=delimiter, usecols=numbers, comments=None, ndmin=2, dtype=np.float64
        )
    except ValueError:
        return None
    if values.shape != (len(texts), len(numbers)):  # a carriage return alone, say
        return None
    chunk = np.empty((len(texts), width))
    chunk[:, numbers] = values
    chunk[:, col] = labels.encode(*factorize(names))
    return chunk


def _chunk(rows: list, texts: list, labels: Labels | None) -> np.ndarray | None:
    """Parsed rows as an array, the column of ``labels`` (if any) encoded."""
    if not rows:
        return None
    chunk = np.array(rows, np.float64)
    if labels is not None:
        chunk[:, labels.column] = labels.encode(*factorize(texts))
    return chunk


def read_python(
    source: Any, chunk_rows: int, skip: int = 0, labels: Labels | None = None
) -> Iterator[np.ndarray]:
    """``jaxgauss.streams.read_csv_chunks`` line by line in Python. The first ``skip``
    data rows (already read by Arrow) are decoded but neither parsed nor yielded, so
    row and line numbers in messages still count from the file's start. A column of
    ``labels`` is read as text and encoded; every row then has the first line's width."""
    f, name = open_binary(source)
    try:
        found, lines = first_line(f, name, None if labels is None else labels.column)
        row, width = skip, None if labels is None else found.width
        if skip:
            lines = itertools.islice(lines, skip, None)
        while block := list(itertools.islice(lines, chunk_rows)):
            chunk, err = parse_block(block, found.delimiter, width, row, name, labels)
            if chunk is not None and chunk.shape[0]:
                width = chunk.shape[1]
                row += chunk.shape[0]
                yield chunk
            if err is not None:
                raise err
    finally:
        if f is not source:
            f.close()
