"""``jaxgauss fit FILE --group-by COLUMN [--weights COLUMN] [--max-groups N]``.

Group labels in a CSV file are often strings ("sensor-17", "setosa"), which the
numeric readers refuse, and are not known before the file has been read. This module
reads such a file itself: the label column as text, mapped to group ids in order of
first appearance, the other columns as numbers. The number of groups comes from a
first pass over the file, or, with ``--max-groups N``, from that bound in a single
pass (an error names the row of the (N+1)-th label).
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterator

import numpy as np

from jaxgauss._csv import is_number
from jaxgauss.streams import DEFAULT_CHUNK_ROWS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The grouped-fit options of ``jaxgauss fit``."""
    parser.add_argument(
        "--group-by",
        metavar="COLUMN",
        help="fit one Gaussian per value of this column (a header name, or a 0-based index); "
        "labels may be text in a .csv file; the output has one entry per group",
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
        help="read a .csv file in one pass with at most N groups (default: a first pass "
        "over the file finds the labels)",
    )


def wanted(args: argparse.Namespace) -> bool:
    return args.group_by is not None or args.weights is not None


def run(args: argparse.Namespace, est, config: dict) -> int:
    """``jaxgauss fit`` with ``--group-by`` or ``--weights``: one file, no checkpoints."""
    import json

    if len(args.file) != 1 or args.file[0] == "-":
        raise ValueError("--group-by and --weights read one file (not stdin or several)")
    if args.resume or args.checkpoint:
        raise ValueError("--resume and --checkpoint do not combine with --group-by or --weights")
    args.file = args.file[0]
    result = report(args, *fit_table(args, with_weights(args, est, config)))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.out}")
    return 0


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


class _Table:
    """A CSV file's header and the positions of the label and weight columns."""

    def __init__(self, path: str, group_by: str | None, weights: str | None):
        self.path = path
        with open(path) as f:
            first = next((ln for ln in f if ln.strip()), None)
        if first is None:
            raise ValueError(f"{path} has no rows")
        cells = [c.strip() for c in first.rstrip("\r\n").split(",")]
        self.width = len(cells)
        by_name = any(c is not None and not _is_index(c) for c in (group_by, weights))
        self.header = by_name or not all(
            is_number(c) for i, c in enumerate(cells) if str(i) != group_by
        )
        names = cells if self.header else []
        self.group = None if group_by is None else self._column(group_by, names, "--group-by")
        self.weight = None if weights is None else self._column(weights, names, "--weights")
        if self.group is not None and self.group == self.weight:
            raise ValueError("--group-by and --weights name the same column")
        self.data_columns = [i for i in range(self.width) if i not in (self.group, self.weight)]
        if not self.data_columns:
            raise ValueError(f"{path} has no data columns besides the group and weight columns")

    def _column(self, spec: str, names: list[str], flag: str) -> int:
        if spec in names:
            return names.index(spec)
        if _is_index(spec) and 0 <= int(spec) < self.width:
            return int(spec)
        known = f"; columns: {', '.join(names)}" if names else ""
        raise ValueError(
            f"{flag} {spec!r} is neither a column name nor an index below {self.width}{known}"
        )

    def lines(self) -> Iterator[tuple[int, str]]:
        with open(self.path) as f:
            lines = ((n, ln) for n, ln in enumerate(f, start=1) if ln.strip())
            if self.header:
                next(lines, None)
            yield from lines

    def chunks(self, chunk_rows: int) -> Iterator[tuple[np.ndarray, list[str], np.ndarray | None]]:
        """(rows, labels, weights) chunks; a bad cell is a ValueError naming its row,
        line and column."""
        lines, row = self.lines(), 0
        while block := list(itertools.islice(lines, chunk_rows)):
            cells = [ln.rstrip("\r\n").split(",") for _, ln in block]
            for i, c in enumerate(cells):
                if len(c) != self.width:
                    raise ValueError(
                        f"{self.path}: row {row + i} (line {block[i][0]}) has {len(c)} columns, "
                        f"the header {self.width}"
                    )
            labels = [c[self.group].strip() for c in cells] if self.group is not None else []
            numeric = [i for i in range(self.width) if i != self.group]
            try:
                values = np.array([[float(c[j]) for j in numeric] for c in cells], np.float64)
            except ValueError:
                for i, c in enumerate(cells):
                    for j in numeric:
                        if not is_number(c[j]):
                            raise ValueError(
                                f"{self.path}: row {row + i} (line {block[i][0]}), column {j}: "
                                f"{c[j].strip()!r} is not a number"
                            ) from None
                raise
            rows = values[:, [numeric.index(j) for j in self.data_columns]]
            w = None if self.weight is None else values[:, numeric.index(self.weight)]
            row += len(block)
            yield rows, labels, w


def _is_index(spec: str) -> bool:
    return spec.isdigit()


def _labels_first_pass(table: _Table) -> dict[str, int]:
    ids: dict[str, int] = {}
    for _, ln in table.lines():
        ids.setdefault(ln.rstrip("\r\n").split(",")[table.group].strip(), len(ids))
    return ids


def fit_table(args: argparse.Namespace, est, state=None):
    """Fit the file of ``args`` with its group and weight columns.

    Returns:
      (FitResult, labels): labels[k] is group k's label (None when ungrouped).
    """
    from jaxgauss._fit import fit

    chunk_rows = args.chunk or DEFAULT_CHUNK_ROWS
    if args.max_groups is not None and args.max_groups < 1:
        raise ValueError(f"--max-groups must be >= 1, got {args.max_groups}")
    if not args.file.endswith((".csv", ".txt")):
        return _fit_npy(args, est, state)
    table = _Table(args.file, args.group_by, args.weights)
    ungrouped = table.group is None
    if ungrouped:
        ids: dict[str, int] = {}
        n_groups = None
    elif args.max_groups is None:
        ids = _labels_first_pass(table)
        n_groups = max(len(ids), 1)
    else:
        ids, n_groups = {}, args.max_groups

    def stream():
        row = 0
        for rows, labels, w in table.chunks(chunk_rows):
            groups = None
            if not ungrouped:
                groups = np.empty(len(labels), np.int64)
                for i, label in enumerate(labels):
                    k = ids.setdefault(label, len(ids))
                    if k >= n_groups:
                        raise ValueError(
                            f"row {row + i} has label {label!r}, group {k + 1}, past "
                            f"--max-groups {n_groups}"
                        )
                    groups[i] = k
            row += len(labels) or rows.shape[0]
            yield np.column_stack([rows] + [x for x in (groups, w) if x is not None])

    d = len(table.data_columns)
    extra = iter(range(d, d + 2))
    g_col = None if ungrouped else next(extra)
    w_col = None if table.weight is None else next(extra)
    res = fit(
        est,
        stream(),
        state=state,
        groups=g_col,
        n_groups=n_groups,
        weights=w_col,
        batch_size=args.batch_size,
        chunk_rows=chunk_rows,
        nan_policy=args.nan_policy,
        progress=not args.quiet,
    )
    if ungrouped:
        return res, None
    labels = list(ids)
    if len(labels) < n_groups:  # --max-groups: only the groups seen
        res = _first_groups(res, len(labels))
    return res, labels


def _first_groups(res, n: int):
    import jax

    cut = lambda x: x[:n]  # noqa: E731
    return res._replace(
        estimate=jax.tree_util.tree_map(cut, res.estimate),
        state=jax.tree_util.tree_map(cut, res.state),
        diverged_at=res.diverged_at[:n],
        n_rows=res.n_rows[:n],
    )


def _fit_npy(args: argparse.Namespace, est, state):
    """A .npy file: group ids and weights are numeric columns given by index."""
    from jaxgauss._fit import fit

    for flag, spec in (("--group-by", args.group_by), ("--weights", args.weights)):
        if spec is not None and not _is_index(spec):
            raise ValueError(f"{flag} of a .npy file must be a 0-based column index, got {spec!r}")
    group = None if args.group_by is None else int(args.group_by)
    n_groups = args.max_groups
    if group is not None and n_groups is None:
        ids = np.load(args.file, mmap_mode="r")[:, group]
        n_groups = int(np.nanmax(ids)) + 1 if ids.size else 1
    res = fit(
        est,
        args.file,
        state=state,
        groups=group,
        n_groups=n_groups,
        weights=None if args.weights is None else int(args.weights),
        batch_size=args.batch_size,
        chunk_rows=args.chunk,
        nan_policy=args.nan_policy,
        progress=not args.quiet,
    )
    return res, None if group is None else [str(k) for k in range(n_groups)]


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
        return {"method": args.method, "file": args.file, "weights": args.weights,
                "n_skipped": res.n_skipped, "dtype": str(mean.dtype)} | groups[0]  # fmt: skip
    return {
        "method": args.method,
        "file": args.file,
        "group_by": args.group_by,
        "weights": args.weights,
        "n": int(np.sum(n_rows)),
        "n_skipped": res.n_skipped,
        "dtype": str(mean.dtype),
        "groups": groups,
    }
