"""``jaxgauss fit FILE --group-by COLUMN [--weights COLUMN] [--max-groups N]``.

Group labels are often text ("sensor-17", "setosa") and are not known before the file
has been read. This module only numbers them: the file, of any kind ``fit`` reads, is
read by ``fit``'s readers and rules (``jaxgauss.streams.read_labelled_chunks``), the
label column read as labels and replaced by group ids in order of first appearance,
and the ids and the weights are columns ``fit`` splits off (``groups=``,
``weights=``). The number of groups comes from a first pass over the file, or, with
``--max-groups N``, from that bound in a single pass (an error names the row of the
(N+1)-th label).

A label is text: a CSV cell as pandas' ``read_csv`` reads it (quotes removed, spaces
kept; ``1`` and ``1.0`` are two labels), a value of a Parquet or Arrow column as
Python prints it, a number of a ``.npy`` column as NumPy prints it; an integral
number prints without ".0" (the ids of a float ``.npy`` file are "0", "1", ...).
"""

from __future__ import annotations

import argparse
import collections
import sys
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from jaxgauss._csv import Labels
from jaxgauss.streams import DEFAULT_CHUNK_ROWS, file_columns, file_kind, read_labelled_chunks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The grouped-fit options of ``jaxgauss fit``."""
    parser.add_argument(
        "--group-by",
        metavar="COLUMN",
        help="fit one Gaussian per value of this column (a header name, or a 0-based index); "
        "labels may be text; the output has one entry per group",
    )
    parser.add_argument(
        "--weights",
        metavar="COLUMN",
        help="per-row reliability weights (>= 0; 0 masks the row) from this column",
    )
    parser.add_argument(
        "--max-groups",
        type=int,
        metavar="N",
        help="read the file in one pass with at most N groups (default: a first pass "
        "over the file finds the labels)",
    )


def wanted(args: argparse.Namespace) -> bool:
    return args.group_by is not None or args.weights is not None


def with_weights(args: argparse.Namespace, est, given: dict):
    """The estimator a grouped or weighted fit needs: a moment method rebuilt with
    ``weighted=True`` when there are weights, or when groups are batched per group
    (every method but ``welford``, whose grouped update needs none). ``given``: the
    method's resolved settings."""
    from jaxgauss.estimators.moments import exponential, natural_gradient, welford

    if args.weights is None and args.method == "welford":
        return est
    moments = {
        "welford": lambda: welford(prior_weight=given["prior_weight"], weighted=True),
        "natural": lambda: natural_gradient(given["learning_rate"], weighted=True),
        "exponential": lambda: exponential(given["half_life"], weighted=True),
    }
    return moments[args.method]() if args.method in moments else est


class GroupIds:
    """Group ids of labels in order of first appearance: the ``encode`` of ``Labels``."""

    def __init__(self):
        self.ids: dict[str, int] = {}

    def __call__(self, uniques: Any, inverse: np.ndarray) -> np.ndarray:
        known = [self.ids.setdefault(_label_text(u), len(self.ids)) for u in uniques]
        return np.array(known, np.float64)[inverse]


def _label_text(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


class GroupedInput(NamedTuple):
    """What ``fit`` reads for ``--group-by`` and ``--weights``.

    Attributes:
      estimator: the estimator (see ``with_weights``).
      chunks: the file's chunks, labels replaced by group ids.
      options: ``fit``'s ``groups``, ``n_groups`` and ``weights``.
      ids: the labels' group ids (None without ``--group-by``).
    """

    estimator: Any
    chunks: Iterator[np.ndarray]
    options: dict
    ids: GroupIds | None


def grouped_input(args: argparse.Namespace, est, config: dict) -> GroupedInput:
    """The input of ``jaxgauss fit`` with ``--group-by`` or ``--weights``: one file,
    no checkpoints."""
    if len(args.file) != 1 or args.file[0] == "-":
        raise ValueError("--group-by and --weights read one file (not stdin or several)")
    if args.resume or args.checkpoint:
        raise ValueError("--resume and --checkpoint do not combine with --group-by or --weights")
    if args.max_groups is not None and args.max_groups < 1:
        raise ValueError(f"--max-groups must be >= 1, got {args.max_groups}")
    path, chunk_rows = args.file[0], args.chunk or DEFAULT_CHUNK_ROWS
    group, weight = _columns(path, args.group_by, args.weights)
    ids = None if group is None else GroupIds()
    labels = None if ids is None else Labels(group, ids)
    n_groups = args.max_groups
    if ids is not None and n_groups is None:
        _first_pass(read_labelled_chunks(path, chunk_rows, labels))
        n_groups = max(len(ids.ids), 1)
    chunks = read_labelled_chunks(path, chunk_rows, labels)
    if ids is not None and args.max_groups is not None:
        chunks = _bounded(chunks, group, ids, n_groups, path)
    options = {"groups": group, "n_groups": None if ids is None else n_groups, "weights": weight}
    return GroupedInput(with_weights(args, est, config), chunks, options, ids)


def _columns(path: str, group_by: str | None, weights: str | None) -> tuple[int | None, ...]:
    """The indices of the group and weight columns (None where not given)."""
    text = int(group_by) if group_by is not None and group_by.isdigit() else None
    try:
        names, width = file_columns(path, text)
    except ValueError as e:  # a first line of text labels and numbers: no header
        if text is None and group_by is not None and "CSV row 0 (line" in str(e):
            raise ValueError(
                f"{e}; --group-by {group_by!r} names a column of a header line: give a "
                "file without one the 0-based index of its label column"
            ) from None
        raise
    group = None if group_by is None else _column(path, group_by, names, width, "--group-by")
    weight = None if weights is None else _column(path, weights, names, width, "--weights")
    if group is not None and group == weight:
        raise ValueError("--group-by and --weights name the same column")
    if width - (group is not None) - (weight is not None) < 1:
        raise ValueError(f"{path} has no data columns besides the group and weight columns")
    return group, weight


def _column(path: str, spec: str, names: tuple[str, ...], width: int, flag: str) -> int:
    if spec in names:
        return names.index(spec)
    if spec.isdigit() and int(spec) < width:
        return int(spec)
    if not names and not spec.isdigit():
        unnamed = (
            "the columns of a .npy file have no names"
            if file_kind(path) == "npy"
            else f"{path} has no header line"
        )
        raise ValueError(f"{flag} {spec!r}: {unnamed}; give a 0-based column index (below {width})")
    known = f"; its columns: {', '.join(names)}" if names else ""
    raise ValueError(
        f"{flag} {spec!r} is neither a column name of {path} nor an index below {width}{known}"
    )


def _first_pass(chunks: Iterator[np.ndarray]) -> None:
    """Read the file once for its labels (numbered as they are read). A bad line ends
    it quietly: the fit meets the same error after the rows before it."""
    try:
        collections.deque(chunks, maxlen=0)
    except ValueError:
        pass


def _bounded(chunks, column: int, ids: GroupIds, n_groups: int, path: str):
    """The chunks up to the first row whose label is past ``--max-groups``, then an
    error naming it."""
    row = 0
    for chunk in chunks:
        past = np.flatnonzero(chunk[:, column] >= n_groups)
        if past.size:
            i, k = int(past[0]), int(chunk[past[0], column])
            if i:
                yield chunk[:i]
            raise ValueError(
                f"{path}: row {row + i} has label {list(ids.ids)[k]!r}, group {k + 1}, past "
                f"--max-groups {n_groups}"
            )
        row += chunk.shape[0]
        yield chunk


def finish(args: argparse.Namespace, res, ids: GroupIds | None, error: str | None) -> list[str]:
    """Print the per-group results, write ``--out`` (partial after an ``error``, as
    ``fit`` does) and print the error. Returns the outputs that failed."""
    import json

    labels = None
    if ids is not None:
        n_groups = np.shape(res.n_rows)[0]
        labels = list(ids.ids)[:n_groups]
        if len(labels) < n_groups:  # --max-groups: only the groups seen
            res = _first_groups(res, len(labels))
    document = report(args, res, labels) | {"partial": error is not None}
    stopped = int(np.sum(res.n_rows)) + res.n_skipped
    if error is not None:
        document |= {"stopped_at_row": stopped, "error": error}
    failures = []
    if args.out:
        try:
            with open(args.out, "w") as f:
                json.dump(document, f, indent=2)
            print(f"wrote {args.out}" + (" (partial)" if error else ""))
        except OSError as e:
            failures.append(f"--out {args.out}: {e}")
    if error is not None:
        kept = (
            f"row {stopped} was kept" if args.out else "it is printed above (pass --out to keep it)"
        )
        print(f"jaxgauss fit: error: {error}; the fit of the {stopped} rows before {kept}",
              file=sys.stderr)  # fmt: skip
    for failure in failures:
        print(f"jaxgauss fit: error: {failure}", file=sys.stderr)
    return failures


def _first_groups(res, n: int):
    import jax

    cut = lambda x: x[:n]  # noqa: E731
    return res._replace(
        estimate=jax.tree_util.tree_map(cut, res.estimate),
        state=jax.tree_util.tree_map(cut, res.state),
        diverged_at=res.diverged_at[:n],
        n_rows=res.n_rows[:n],
    )


def report(args: argparse.Namespace, res, labels) -> dict:
    """Print the per-group results and return the JSON document."""
    mean, cov = np.asarray(res.estimate.mean), np.asarray(res.estimate.cov)
    count = np.asarray(getattr(res.state, "count", np.zeros(len(labels or [0]))))
    if labels is None:
        labels, mean, cov = [None], mean[None], cov[None]
        n_rows, diverged, count = [res.n_rows], [int(res.diverged_at)], count[None]
    else:
        n_rows, diverged = np.asarray(res.n_rows).tolist(), np.asarray(res.diverged_at).tolist()
    groups = []
    with np.printoptions(precision=6, linewidth=120):
        print(f"method {args.method}, {len(labels)} group(s), {res.n_skipped} rows skipped")
        for k, label in enumerate(labels):
            entry = {"label": label, "n": int(n_rows[k]), "diverged_at": int(diverged[k])}
            if args.weights is not None:
                entry["weight"] = float(count[k])
            entry |= {"mean": mean[k].tolist(), "cov": cov[k].tolist()}
            groups.append(entry)
            print(f"group {label!r}: n = {n_rows[k]}, mean {mean[k]}")
    if args.group_by is None:  # weights only: the ungrouped document, plus the weight
        return {"method": args.method, "file": args.file[0], "weights": args.weights,
                "n_skipped": res.n_skipped, "dtype": str(mean.dtype)} | groups[0]  # fmt: skip
    return {
        "method": args.method,
        "file": args.file[0],
        "group_by": args.group_by,
        "weights": args.weights,
        "n": int(np.sum(n_rows)),
        "n_skipped": res.n_skipped,
        "dtype": str(mean.dtype),
        "groups": groups,
    }
