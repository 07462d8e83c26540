"""``jaxgauss fit FILE --group-by COLUMN`` end to end (issue 25, cases 6 and 12).

The grouped command reads a file through ``fit``'s own readers and rules: every file
kind ``fit`` reads, labels by the CSV's quoting rules (as pandas reads them), and a
bad line or row reported, and its partial result kept, as ``fit`` does. Each result
is checked against pandas' ``groupby(label)`` mean and ``cov(ddof=0)`` (float64:
the same sums in another order, so 1e-12)."""

import csv
import json

import numpy as np
import pytest

from jaxgauss import _arrow

pd = pytest.importorskip("pandas")


@pytest.fixture(params=["python", "arrow"])
def engine(request, monkeypatch):
    """Which CSV reader the command uses."""
    if request.param == "python":
        monkeypatch.setattr(_arrow, "pyarrow", lambda: None)
    else:
        pytest.importorskip("pyarrow")
    return request.param


def _frame(n=60, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.choice(["north", "south east", "  padded", "x,y", 'say "hi"'], n)
    x = rng.normal(size=(n, 2)) * [1.0, 3.0] + [0.0, 10.0]
    return pd.DataFrame({"a": x[:, 0], "site": labels, "b": x[:, 1]})


def _grouped(cli, path, *flags):
    out = path.parent / "out.json"
    res = cli("fit", path, *flags, "--float64", "--quiet", "--out", out)
    assert res.returncode == 0, res.stderr
    return {g["label"]: g for g in json.loads(out.read_text())["groups"]}


def _assert_equals_pandas(groups, frame, label="site"):
    keys = frame[label].map(lambda v: v if isinstance(v, str) else f"{v:g}")
    expected = frame.drop(columns=label).groupby(keys)
    assert sorted(groups) == sorted(expected.groups), (sorted(groups), sorted(expected.groups))
    means, covs = expected.mean(), expected.cov(ddof=0)
    for key, g in groups.items():
        assert g["n"] == len(expected.groups[key])
        np.testing.assert_allclose(g["mean"], means.loc[key].to_numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(g["cov"], covs.loc[key].to_numpy(), rtol=0, atol=1e-12)


def test_labels_follow_the_csv_quoting_rules_as_pandas_reads_them(cli, tmp_path, engine):
    """Case 6: "a",1 and a,2 are one group a; quotes are removed, not kept; spaces
    are kept inside quotes and out (pandas' read_csv defaults), so "  sensor A" is
    not "sensor A"; a quoted comma and a doubled quote are read."""
    text = (
        'a,site,b\n1,"a",2\n3,a,4\n5,"  sensor A",6\n7,"sensor A",9\n'
        '1,  sensor A,2\n2,"x,y",3\n4,"say ""hi""",5\n6,a ,7\n'
    )
    path = tmp_path / "labels.csv"
    path.write_text(text)
    groups = _grouped(cli, path, "--group-by", "site")
    assert list(groups) == ["a", "  sensor A", "sensor A", "x,y", 'say "hi"', "a "]
    _assert_equals_pandas(groups, pd.read_csv(path))


@pytest.mark.parametrize(
    "name, write",
    [
        ("plain.csv", lambda f, p: f.to_csv(p, index=False)),
        ("UPPER.CSV", lambda f, p: f.to_csv(p, index=False)),
        ("tabs.tsv", lambda f, p: f.to_csv(p, sep="\t", index=False)),
        ("semicolons.csv", lambda f, p: f.to_csv(p, sep=";", index=False)),
        ("quote_all.csv", lambda f, p: f.to_csv(p, index=False, quoting=csv.QUOTE_ALL)),
        ("bom.csv", lambda f, p: f.to_csv(p, index=False, encoding="utf-8-sig")),
        ("packed.csv.gz", lambda f, p: f.to_csv(p, index=False, compression="gzip")),
        ("table.parquet", lambda f, p: f.to_parquet(p)),
        ("table.feather", lambda f, p: f.to_feather(p)),
    ],
)
def test_group_by_a_name_reads_every_text_and_table_kind(cli, tmp_path, name, write):
    """Case 12: --group-by NAME on every kind fit reads (suffixes in any case; pandas'
    QUOTE_ALL headers, a byte-order mark, ; and tab delimiters, labels with commas)."""
    if name.startswith("table"):
        pytest.importorskip("pyarrow")
    frame = _frame()
    write(frame, tmp_path / name)
    _assert_equals_pandas(_grouped(cli, tmp_path / name, "--group-by", "site"), frame)


def test_group_by_an_index_of_a_npy_file_and_a_name_is_refused_by_the_rule(cli, tmp_path):
    """Case 12: a .npy column of numeric labels (any numbers, not only 0..K-1) by
    index; a name is refused by the rule, never with a hint of allow_pickle."""
    rng = np.random.default_rng(1)
    x = np.column_stack(
        [rng.normal(size=40), rng.choice([7.0, -1.0, 2.5], 40), rng.normal(size=40)]
    )
    path = tmp_path / "rows.npy"
    np.save(path, x)
    groups = _grouped(cli, path, "--group-by", "1")
    frame = pd.DataFrame({"a": x[:, 0], "site": x[:, 1], "b": x[:, 2]})
    _assert_equals_pandas(groups, frame)
    assert list(groups) == [f"{v:g}" for v in dict.fromkeys(x[:, 1])]
    res = cli("fit", path, "--group-by", "site")
    assert res.returncode == 2
    assert "the columns of a .npy file have no names; give a 0-based column index" in res.stderr
    assert "pickle" not in res.stderr


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--group-by", "site"], "names a column of a header line: give a file without one"),
        (["--group-by", "0", "--weights", "w"], "has no header line; give a 0-based column index"),
    ],
)
def test_a_name_in_a_file_without_a_header_is_refused_by_the_rule(cli, tmp_path, flags, message):
    (tmp_path / "rows.csv").write_text("north,1,2\nsouth,2,3\n")
    res = cli("fit", tmp_path / "rows.csv", *flags)
    assert res.returncode == 2 and message in res.stderr, res.stderr


def _numeric_labels(tmp_path, bad_line):
    """A CSV file with numeric labels (so fit reads it too), one line bad."""
    lines = ["g,a,b", "0,1,2", "1,2,3", "0,3,5", bad_line, "1,4,4"]
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("1,2", "bad.csv: CSV row 3 (line 5) has 2 columns, earlier rows 3"),
        ("1,2,oops", "bad.csv: CSV row 3 (line 5) column 2 is not a number: 'oops'"),
        ("0,nan,1", "bad.csv: row 3 is not finite (NaN or inf); pass --nan-policy skip"),
    ],
)
def test_a_bad_line_is_reported_and_kept_as_fit_does(cli, tmp_path, bad_line, message):
    """Case 12: a short row, a bad cell and a NaN row: fit's message (file and line,
    no traceback, no err.result), exit 2, and the rows before it written to --out
    marked partial; --nan-policy skip skips the NaN row as fit does."""
    path = _numeric_labels(tmp_path, bad_line)
    out = tmp_path / "out.json"
    plain = cli("fit", path, "--quiet")
    grouped = cli("fit", path, "--group-by", "g", "--quiet", "--out", out)
    assert plain.returncode == grouped.returncode == 2
    assert message in plain.stderr and message in grouped.stderr, grouped.stderr
    assert ".result" not in grouped.stderr and "Traceback" not in grouped.stderr
    assert "the fit of the 3 rows before row 3 was kept" in grouped.stderr
    doc = json.loads(out.read_text())
    assert doc["partial"] and doc["stopped_at_row"] == 3 and message in doc["error"]
    assert {g["label"]: g["n"] for g in doc["groups"]} == {"0": 2, "1": 1}
    if "nan" in bad_line:
        assert cli("fit", path, "--group-by", "g", "--nan-policy", "skip").returncode == 0
