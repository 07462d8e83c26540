"""streams: the file readers on hostile but realistic files (no JAX compile here).

Every bad file is a ValueError naming the file and, for text, the row and line;
everything before a bad CSV line is still yielded, so a fit keeps it. The CSV tests
run on both readers, the pure-Python one and Arrow's (where pyarrow is installed):
the same files must give the same rows and the same messages."""

import gzip
import io
import os

import numpy as np
import pytest

import jaxgauss as jg
from jaxgauss import _arrow, _csv

ROWS = np.array([[1.0, 2.5], [-3.0, 4e-3], [5.0, 6.0]])


@pytest.fixture(params=["python", "arrow"])
def engine(request, monkeypatch):
    """Which CSV reader path-based reads use; "arrow" also checks Arrow was used."""
    if request.param == "python":
        monkeypatch.setattr(_arrow, "pyarrow", lambda: None)
        yield "python"
        return
    pytest.importorskip("pyarrow")
    real, calls = _arrow.read_csv, []

    def spy(*args):
        calls.append(args[0])
        return real(*args)

    monkeypatch.setattr(_arrow, "read_csv", spy)
    yield "arrow"
    assert calls, "the Arrow reader was not used"


def _read(path, chunk_rows=2):
    chunks, _, _ = jg.streams.read_chunks(str(path), chunk_rows)
    return np.concatenate(list(chunks))


@pytest.mark.parametrize(
    "name, text",
    [
        ("plain.csv", "1,2.5\n-3,4e-3\n5,6\n"),
        ("header.csv", "a,b\n1,2.5\n-3,4e-3\n5,6\n"),
        ("bom.csv", "\ufeffa,b\r\n1,2.5\r\n-3,4e-3\r\n5,6\r\n"),
        ("semicolon.csv", "a;b\n1;2.5\n-3;4e-3\n5;6\n"),
        ("tabs.tsv", "a\tb\n1\t2.5\n-3\t4e-3\n5\t6\n"),
        ("quoted.csv", '"a","b"\n"1","2.5"\n-3, "4e-3"\n 5 ,6\n\n'),
        ("UPPER.CSV", "1,2.5\n-3,4e-3\n5,6\n"),
    ],
)
def test_csv_dialects_read_the_same_rows(engine, tmp_path, name, text):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    np.testing.assert_array_equal(_read(path), ROWS)


def test_gzip_and_binary_stream(engine, tmp_path):
    text = b"a,b\n1,2.5\n-3,4e-3\n5,6\n"
    with gzip.open(tmp_path / "t.csv.gz", "wb") as f:
        f.write(text)
    np.testing.assert_array_equal(_read(tmp_path / "t.csv.gz"), ROWS)
    chunks = jg.streams.read_csv_chunks(io.BytesIO(text), chunk_rows=2)
    np.testing.assert_array_equal(np.concatenate(list(chunks)), ROWS)
    (tmp_path / "bad.csv.gz").write_bytes(gzip.compress(text)[:-6])  # truncated
    with pytest.raises(ValueError, match=r"bad\.csv\.gz: could not be read"):
        _read(tmp_path / "bad.csv.gz")


@pytest.mark.parametrize(
    "text, message",
    [
        # A '#' line mid-file is not silently dropped (it would shift every later row).
        (
            "a,b\n1,2\n# note\n3,4\n",
            r"row 1 \(line 3\) column 0 is not a number: '# note' \(only the first",
        ),
        ("1,2\n3,x\n", r"row 1 \(line 2\) column 1 is not a number: 'x'"),
        (
            "1,2,\n3,4,\n",
            r"row 0 \(line 1\) ends with a delimiter: an empty last column \(column 2\)",
        ),
        ("1,2\n3,,4\n", r"row 1 \(line 2\) column 1 is empty"),
        ("1,2\n3,4,5\n", r"row 1 \(line 2\) has 3 columns, earlier rows 2"),
        ("1,x\n3,4\n", r"row 0 \(line 1\) column 1 is not a number: 'x'"),
        (
            "1,2\n3,4\r5,6\n",
            r"row 1 \(line 2\) holds a carriage return \(\\r\) that does not end it",
        ),
        ("\n\n", "has no rows"),
    ],
)
def test_bad_csv_lines_are_named(engine, tmp_path, text, message):
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        _read(path)


def test_rows_before_a_bad_line_are_yielded_first(engine, tmp_path):
    # A change of width in the third chunk: the rows before the bad line come out,
    # including the good head of the chunk that holds it.
    lines = [f"{i},{i}" for i in range(7)] + ["7,7,7"] + ["8,8"]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    chunks = jg.streams.read_csv_chunks(str(tmp_path / "t.csv"), chunk_rows=3)
    got = [next(chunks) for _ in range(3)]
    assert [c.shape[0] for c in got] == [3, 3, 1]
    with pytest.raises(ValueError, match=r"row 7 \(line 8\) has 3 columns, earlier rows 2"):
        next(chunks)


def test_non_utf8_bytes_name_file_and_offset(engine, tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(b"a,b\n1,2\n3,\xe94\n")
    with pytest.raises(
        ValueError, match=r"latin\.csv: line 3 is not UTF-8 text: byte offset 10 is b'\\xe9'"
    ):
        _read(path)


def test_npy_files_that_are_not_arrays(tmp_path):
    np.save(tmp_path / "ok.npy", ROWS)
    data = (tmp_path / "ok.npy").read_bytes()
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "short.npy").write_bytes(data[:-5])
    np.savez(tmp_path / "arch.npz", x=ROWS)
    os.rename(tmp_path / "arch.npz", tmp_path / "arch.npy")
    (tmp_path / "noise.npy").write_bytes(np.random.default_rng(0).bytes(300))
    np.save(tmp_path / "obj.npy", np.array([{}, 1], dtype=object), allow_pickle=True)
    cases = {
        "empty.npy": r"empty \(0 bytes\)",
        "short.npy": r"truncated: 171 bytes, its header \(\(3, 2\), float64\) needs 176",
        "arch.npy": r"zip archive \(an \.npz file\?\)",
        "noise.npy": "no NumPy header",
        "obj.npy": r"Python objects \(pickled data\)",
    }
    for name, message in cases.items():
        with pytest.raises(ValueError, match=message):
            _read(tmp_path / name)
    os.mkfifo(tmp_path / "fifo.npy")
    with pytest.raises(ValueError, match="not a regular file"):
        _read(tmp_path / "fifo.npy")


def test_big_endian_npy_is_read_natively(tmp_path):
    np.save(tmp_path / "be.npy", ROWS.astype(">f8"))
    got = _read(tmp_path / "be.npy")
    assert got.dtype.isnative
    np.testing.assert_array_equal(got, ROWS)


def test_unsupported_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"unsupported file type .*\.xlsx"):
        jg.streams.read_chunks(str(tmp_path / "t.xlsx"))


def test_arrow_csv_many_blocks_no_hand_over(tmp_path, monkeypatch):
    # A clean file is read by Arrow alone (the Python reader would raise here), in
    # chunks of exactly chunk_rows rows whatever Arrow's own block size.
    pytest.importorskip("pyarrow")
    rows = np.random.default_rng(0).normal(size=(5000, 3)).round(6)
    text = "a;b;c\n" + "\n".join(";".join(map(str, r)) for r in rows) + "\n"
    with gzip.open(tmp_path / "t.csv.gz", "wt") as f:
        f.write(text)

    def refuse(*args, **kwargs):
        raise AssertionError("handed over to the Python reader")

    monkeypatch.setattr(_csv, "read_python", refuse)
    chunks = list(jg.streams.read_csv_chunks(str(tmp_path / "t.csv.gz"), chunk_rows=1024))
    assert [c.shape[0] for c in chunks] == [1024] * 4 + [904]
    assert all(c.flags.c_contiguous and c.dtype == np.float64 for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), rows)


@pytest.mark.parametrize(
    "bad, message",
    [
        ("4000, 5", None),  # a space before a number: both read it
        ('4000, "5"', None),  # a space before a quote: Arrow refuses, Python reads on
        ("   ", None),  # a line of spaces is blank
        ("4000,x", r"row 4000 \(line 4002\) column 1 is not a number: 'x'"),
        ("# mid-file", r"row 4000 \(line 4002\) column 0 is not a number: '# mid-file'"),
    ],
)
def test_arrow_hands_over_mid_file(tmp_path, bad, message):
    # Past Arrow's first blocks, a line it refuses: the Python reader takes over at
    # that block's first row and reads on, or names the line as it does alone.
    pytest.importorskip("pyarrow")
    lines = ["x,y", *(f"{i},{i % 7}" for i in range(4000)), bad, *(f"{i},0" for i in range(50))]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    both = {}
    for engine in ("auto", "python"):
        got = []
        chunks = jg.streams.read_csv_chunks(str(tmp_path / "t.csv"), 512, engine=engine)
        if message is None:
            got = list(chunks)
        else:
            with pytest.raises(ValueError, match=message):
                for c in chunks:
                    got.append(c)
        both[engine] = np.concatenate(got)
    np.testing.assert_array_equal(both["auto"], both["python"])
    assert both["auto"].shape[0] == (4000 if message else 4051 - (bad.strip() == ""))


def _tables(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    x = np.random.default_rng(1).normal(size=(300, 2))
    table = pa.table({"name": [f"r{i}" for i in range(300)], "x": x[:, 0], "y": x[:, 1]})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=64)
    feather.write_feather(table, tmp_path / "t.feather", chunksize=100)
    with pa.OSFile(str(tmp_path / "t.arrow"), "wb") as sink:  # IPC stream format
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=70)
    return x, ["t.parquet", "t.feather", "t.arrow"]


def test_parquet_feather_ipc_columns_by_name(tmp_path):
    x, names = _tables(tmp_path)
    for name in names:
        path = str(tmp_path / name)
        chunks = list(jg.streams.read_table_chunks(path, 128, columns=["y", "x"]))
        assert [c.shape for c in chunks] == [(128, 2), (128, 2), (44, 2)], name
        np.testing.assert_array_equal(np.concatenate(chunks), x[:, ::-1])
        with pytest.raises(ValueError, match=r"column 'name' holds string, not numbers"):
            _read(path)
        with pytest.raises(
            ValueError, match=r"has no column 'z'; its columns: \['name', 'x', 'y'\]"
        ):
            next(jg.streams.read_table_chunks(path, columns=["x", "z"]))


def test_table_null_cell_is_named_after_rows_before_it(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    values = [float(i) for i in range(10)]
    table = pa.table({"a": values, "b": values[:7] + [None] + values[8:]})
    pq.write_table(table, tmp_path / "n.parquet")
    chunks = jg.streams.read_table_chunks(str(tmp_path / "n.parquet"), 3)
    assert [next(chunks).shape[0] for _ in range(3)] == [3, 3, 1]
    with pytest.raises(ValueError, match=r"row 7 column 1 \('b'\) is null \(a missing value\)"):
        next(chunks)


def test_tables_without_pyarrow_name_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(_arrow, "pyarrow", lambda: None)
    with pytest.raises(ValueError, match=r"needs pyarrow: pip install 'jaxgauss\[arrow\]'"):
        _read(tmp_path / "t.parquet")


def _outcome(path, engine, chunk_rows=7):
    """(the rows read before any error, the error's type and message or None)."""
    got, error = [], None
    try:
        for c in jg.streams.read_csv_chunks(str(path), chunk_rows, engine=engine):
            got.append(c)
    except Exception as e:  # the same exception, whatever it is, from both readers
        error = (type(e), str(e))
    return (np.concatenate(got) if got else np.zeros((0, 0))), error


_LINES = [f"{i},{i / 8}" for i in range(60)]


@pytest.mark.parametrize(
    "name, text",
    [
        ("clean.csv", "a,b\n" + "\n".join(_LINES) + "\n"),
        ("bom_no_header.csv", "\ufeff" + "\n".join(_LINES)),  # no final line end
        ("blanks.csv", "\n\na,b\n\n" + "\n\n".join(_LINES) + "\n\n"),
        ("crlf.csv", "a,b\r\n" + "\r\n".join(_LINES) + "\r\n"),
        ("late_error.csv", "a,b\n" + "\n".join(_LINES[:45] + ["45,x"] + _LINES[46:]) + "\n"),
        ("late_width.csv", "\n".join(_LINES[:50] + ["50,1,2"] + _LINES[51:]) + "\n"),
        ("late_spaces.csv", "\n".join(_LINES[:30] + ["   "] + _LINES[30:]) + "\n"),
        ("late_quotes.csv", "a,b\n" + "\n".join(_LINES[:40] + ['"40","5"'] + _LINES[41:]) + "\n"),
        ("quoted_newline.csv", "\n".join(_LINES[:33] + ['33,"4\n"'] + _LINES[34:]) + "\n"),
        ("lone_cr.csv", "\n".join(_LINES[:38] + ["38,1\r39,2"] + _LINES[40:]) + "\n"),
        ("long_line.csv", "\n".join(_LINES[:20] + ["20," + "0" * 300 + "1"] + _LINES[21:])),
        ("header_only.csv", "a,b\n"),
    ],
)
def test_arrow_byte_ranges_read_as_python_does(tmp_path, monkeypatch, name, text):
    # Ranges of a few lines each: every rule meets a range boundary somewhere. The
    # Arrow path (ranges, the streaming reader after a quote or a long line, the
    # Python reader after a refusal) gives the Python reader's rows and messages,
    # row and line numbers counted from the file's start; gzip too.
    pytest.importorskip("pyarrow")
    monkeypatch.setattr(_arrow, "RANGE_BYTES", 64)
    monkeypatch.setattr(_arrow, "BLOCK_BYTES", 32)
    path = tmp_path / name
    path.write_bytes(text.encode())
    with gzip.open(tmp_path / (name + ".gz"), "wb") as f:
        f.write(text.encode())
    for p in (path, tmp_path / (name + ".gz")):
        rows, error = _outcome(p, "python")
        for chunk_rows in (7, 1000):
            got, got_error = _outcome(p, "auto", chunk_rows)
            np.testing.assert_array_equal(got, rows)
            assert got_error == error, p
    assert (error is not None) == name.startswith(("late_error", "late_width", "lone_cr"))


def test_arrow_byte_ranges_are_parsed_without_the_python_reader(tmp_path, monkeypatch):
    # A clean file in many ranges is Arrow's alone: no hand-over, no streaming reader.
    pa = pytest.importorskip("pyarrow")
    import pyarrow.csv as pcsv

    monkeypatch.setattr(_arrow, "RANGE_BYTES", 256)
    monkeypatch.setattr(_arrow, "BLOCK_BYTES", 64)

    def refuse(*args, **kwargs):
        raise AssertionError("left the byte ranges")

    monkeypatch.setattr(_csv, "read_python", refuse)
    monkeypatch.setattr(pcsv, "open_csv", refuse)
    rows = np.random.default_rng(2).normal(size=(500, 4)).round(5)
    text = "a\tb\tc\td\n" + "\n".join("\t".join(map(str, r)) for r in rows) + "\n"
    (tmp_path / "t.tsv").write_text(text)
    chunks = list(jg.streams.read_csv_chunks(str(tmp_path / "t.tsv"), chunk_rows=128))
    assert [c.shape[0] for c in chunks] == [128] * 3 + [116]
    np.testing.assert_array_equal(np.concatenate(chunks), rows)
    assert pa is not None


def test_old_mac_line_ends_and_duplicate_parquet_columns_are_named(tmp_path):
    """Issue 25, case 15: a file with lone carriage-return line ends raised csv.Error
    (both readers), a Parquet file with two columns of one name a KeyError."""
    cr = tmp_path / "mac.csv"
    cr.write_bytes(b"a,b\r1,2\r3,4\r")
    with pytest.raises(ValueError, match=r"mac.csv: line 1 holds a carriage return.*lone \\r"):
        jg.fit(jg.welford(), str(cr))
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "twice.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array([1.0]), pa.array([2.0])], ["x", "x"]), path)
    with pytest.raises(ValueError, match="more than one column named 'x'"):
        jg.fit(jg.welford(), str(path))


def _labelled_outcome(path, engine, chunk_rows=7):
    """``_outcome`` of a read with column 0 as labels, and every row's label in the
    order the reader encoded them (each row's once)."""
    seen, ids = [], {}

    def encode(uniques, inverse):
        seen.extend(str(uniques[i]) for i in inverse)
        return np.array([ids.setdefault(str(u), len(ids)) for u in uniques], float)[inverse]

    labels = _csv.Labels(0, encode)
    if engine == "python":
        chunks = _csv.read_python(str(path), chunk_rows, labels=labels)
    else:
        chunks = jg.streams.read_labelled_chunks(str(path), chunk_rows, labels)
    got, error = [], None
    try:
        for c in chunks:
            got.append(c)
    except ValueError as e:
        error = str(e)
    rows = np.concatenate(got) if got else np.zeros((0, 3))
    assert len(seen) == rows.shape[0]
    return rows, seen, error


_LABELLED = [f"s{i % 3},{i},{i / 8}" for i in range(60)]


@pytest.mark.parametrize(
    "name, text",
    [
        ("clean.csv", "g,a,b\n" + "\n".join(_LABELLED) + "\n"),
        (
            "quoted.csv",
            'g,a,b\n"s0",0,0\n' + "\n".join(_LABELLED[1:30] + ['"x, ""y""",1,2']) + "\n",
        ),
        (
            "spaces.csv",
            "\n".join(_LABELLED[:30] + ["  s1,1,2", '" s1 ",3,4', "   "] + _LABELLED[30:]),
        ),
        ("late_error.csv", "g,a,b\n" + "\n".join(_LABELLED[:45] + ["s0,45,x"] + _LABELLED[46:])),
        ("late_empty.csv", "g,a,b\n" + "\n".join(_LABELLED[:45] + [",45,1"] + _LABELLED[46:])),
        ("late_width.csv", "g,a,b\n" + "\n".join(_LABELLED[:50] + ["s1,1"] + _LABELLED[51:])),
    ],
)
def test_labelled_csv_reads_alike_on_both_readers(tmp_path, monkeypatch, name, text):
    # A column of labels (--group-by): Arrow in byte ranges of a few lines, its
    # streaming reader after a quote and the Python reader after a refusal give the
    # Python reader's rows, labels (each row's once, in order) and messages.
    pytest.importorskip("pyarrow")
    monkeypatch.setattr(_arrow, "RANGE_BYTES", 64)
    monkeypatch.setattr(_arrow, "BLOCK_BYTES", 32)
    path = tmp_path / name
    path.write_text(text)
    rows, labels, error = _labelled_outcome(path, "python")
    for chunk_rows in (7, 1000):
        got, got_labels, got_error = _labelled_outcome(path, "auto", chunk_rows)
        np.testing.assert_array_equal(got, rows)
        assert (got_labels, got_error) == (labels, error)
    assert (error is not None) == name.startswith("late")
    if name == "spaces.csv":
        assert labels[30:32] == ["  s1", " s1 "]
    if name == "quoted.csv":
        assert labels[0] == "s0" and labels[-1] == 'x, "y"'
    if name == "late_empty.csv":
        assert error.endswith("CSV row 45 (line 47) column 0 is empty")


def test_a_line_too_long_and_a_cell_too_long_are_named(engine, tmp_path, monkeypatch):
    """Issue 25, case 15: a file without line ends was read as one line, into memory
    (a 5 GB file: MemoryError at 5.6 GB), and a cell longer than the csv module's
    field limit raised csv.Error. Lines longer than _csv.MAX_LINE_BYTES (64 MiB; set
    to 1 MiB here, so the file stays small) and cells longer than the limit are
    ValueErrors naming the file and line, whichever reader starts."""
    monkeypatch.setattr(_csv, "MAX_LINE_BYTES", 1 << 20)
    endless = tmp_path / "endless.csv"
    endless.write_bytes(b"1.5," * (1 << 19))  # 2 MiB, no line end
    with pytest.raises(ValueError, match=r"endless.csv: line 1 is longer than 1,048,576 bytes"):
        jg.fit(jg.welford(), str(endless))
    wide = tmp_path / "wide.csv"
    wide.write_text('a,b\n1,2\n3,"' + "x" * 200_000 + '"\n')  # a quote left open, say
    with pytest.raises(ValueError, match=r"wide.csv: CSV row 1 \(line 3\) holds a cell of more"):
        jg.fit(jg.welford(), str(wide))
