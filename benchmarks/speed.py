"""Speed: ``jaxgauss.fit`` against peers, side by side in one process on the same data.

For each dimension d the same float32 rows are timed through jaxgauss's own cases
(``jaxgauss.bench.CASES``) and through every peer (``benchmarks.peers.PEERS``), with
the timing helper ``jaxgauss.bench.time_call`` (a warm-up call, then the median of
repeats, ``block_until_ready``). Slow implementations are timed on fewer rows; the
unit is data rows per second. A blocked ``fit`` is also broken down into the layers
it is made of (``breakdown``), which explains where its time goes. The speed targets
(``TARGETS``) are evaluated on the ratios of one run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import peers as P
from jaxgauss import Gaussian, bench, fit, welford
from jaxgauss.engine import default_block_rows, init_carry, scan_batches

SKIPPED = "skipped (not installed)"


class Target(NamedTuple):
    """jaxgauss case ``case`` must run at least ``at_least`` times as many rows/s as
    peer ``peer`` in dimension ``d``."""

    case: str
    peer: str
    d: int
    at_least: float


TARGETS: tuple[Target, ...] = (
    *(Target(c, P.NUMPY_WELFORD, 10, 20) for c in ("welford", "natural_gradient(0.01)")),
    *(Target(c, P.RIVER, 10, 150) for c in ("welford", "natural_gradient(0.01)")),
    Target("gradient_ascent(sgd, precision)", P.NUMPY_QUESTION, 10, 15),
    Target("gradient_ascent(sgd, precision)", P.TORCH, 10, 300),
    *(Target(f"welford, batch_size={b}", P.NP_COV, d, 1.0) for b in (64, 1024) for d in (10, 100)),
    *(
        Target(c, gram, d, 0.5)
        for c in ("welford", "exponential(1000)", "natural_gradient(0.01)")
        for d in (10, 100)
        for gram in (P.GRAM, P.XLA_GRAM)  # the goal is set against the faster one
    ),
)


def time_peer(peer: P.Peer, rows: np.ndarray, repeats: int) -> dict:
    """Time one peer on ``rows``; a JSON-ready dict (``status`` says if it was skipped)."""
    n, d = rows.shape
    try:
        run = peer.setup(rows)
    except ImportError:
        return {"name": peer.name, "d": d, "rows": n, "status": SKIPPED}
    timings = {"default": bench.time_call(run, repeats)}
    limit = peer.one_thread() if peer.one_thread else None
    if limit is not None:
        with limit:
            timings["1"] = bench.time_call(run, repeats)
    threads, timing = min(timings.items(), key=lambda item: item[1].seconds)
    result = {
        "name": peer.name,
        "d": d,
        "rows": n,
        "status": "ok",
        "rows_per_s": n / timing.seconds,
        "seconds": timing.seconds,
        "repeats": repeats,
    }
    if limit is not None:
        result["threads"] = threads
    return result


def breakdown(data: jax.Array, repeats: int) -> dict:
    """Nanoseconds per row of ``fit(welford(), data)`` and of the layers below it.

    * fit: the public call (input checks, slicing, the compiled scan);
    * guarded scan: ``scan_batches`` with ``fit``'s block (the divergence guard and
      one update per block), jitted;
    * update scan: ``lax.scan`` of ``welford().update`` over the same blocks, no guard;
    * Gram scan: ``lax.scan`` of only ``g += blockᵀ block`` over the same blocks,
      the floor of any blocked update at this block size;
    * XLA X.T @ X: one jitted Gram matrix of all rows.
    """
    d = data.shape[1]
    block = min(default_block_rows(d), data.shape[0])  # tiny smoke runs: one block
    n = data.shape[0] // block * block
    x = data[:n]
    est = welford()
    state0 = est.init(Gaussian.standard(d, x.dtype))
    batches, blocks = x.reshape(n, 1, d), x.reshape(-1, block, d)

    guarded = jax.jit(lambda b: scan_batches(est, init_carry(state0), b, block=block)[0])
    updates = jax.jit(lambda b: jax.lax.scan(lambda s, y: (est.update(s, y), None), state0, b)[0])
    grams = jax.jit(
        lambda b: jax.lax.scan(lambda g, y: (g + y.T @ y, None), jnp.zeros((d, d), x.dtype), b)[0]
    )
    gram = jax.jit(lambda x: x.T @ x)
    layers: dict[str, Callable] = {
        "fit": lambda: fit(est, x).estimate,
        "guarded scan": lambda: guarded(batches),
        "update scan": lambda: updates(blocks),
        "Gram scan": lambda: grams(blocks),
        "XLA X.T @ X": lambda: gram(x),
    }
    ns = {name: bench.time_call(f, repeats).seconds / n * 1e9 for name, f in layers.items()}
    return {"d": d, "rows": n, "block_rows": block, "ns_per_row": ns}


OVERHEAD_ROWS, OVERHEAD_REPEATS = 1000, 101


def overhead(d: int = 10, repeats: int = OVERHEAD_REPEATS) -> dict:
    """The fixed cost of one ``fit`` call: ``fit(welford(), rows)`` of 1 000 rows after
    warm-up against one bare jitted call on the same rows (``jax.jit(lambda a: a.T @ a)``),
    for NumPy rows (as a live stream hands them over) and rows already on the device;
    interleaved, medians of ``repeats``. Target: ≤ 0.5 ms and ≤ 10× the bare call."""
    rows = np.asarray(bench.make_data(d, OVERHEAD_ROWS))
    on_device = jnp.asarray(rows)
    est, gram = welford(), jax.jit(lambda a: a.T @ a)
    calls = {
        "fit, NumPy rows": lambda: fit(est, rows).estimate,
        "fit, device rows": lambda: fit(est, on_device).estimate,
        "jit(a.T @ a), NumPy rows": lambda: gram(rows),
        "jit(a.T @ a), device rows": lambda: gram(on_device),
    }
    times: dict[str, list[float]] = {k: [] for k in calls}
    for f in calls.values():
        jax.block_until_ready(f())
    for _ in range(repeats):
        for k, f in calls.items():
            times[k].append(bench.time_call(f, 1).seconds)
    ms = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    return {
        "d": d,
        "rows": OVERHEAD_ROWS,
        "repeats": repeats,
        "ms": ms,
        "ratio_numpy": ms["fit, NumPy rows"] / ms["jit(a.T @ a), NumPy rows"],
        "ratio_device": ms["fit, device rows"] / ms["jit(a.T @ a), device rows"],
    }


def _rate(entries: Iterable[dict], name: str, d: int) -> float | None:
    for e in entries:
        if e["name"] == name and e["d"] == d and e.get("status", "ok") == "ok":
            return e["rows_per_s"]
    return None


def evaluate_targets(cases: list[dict], peers: list[dict]) -> list[dict]:
    """Each target's measured ratio and "pass" / "miss" ("not measured" when the
    dimension was not run or the peer was skipped)."""
    out = []
    for t in TARGETS:
        ours, theirs = _rate(cases, t.case, t.d), _rate(peers, t.peer, t.d)
        ratio = None if ours is None or theirs is None else ours / theirs
        result = "not measured" if ratio is None else ("pass" if ratio >= t.at_least else "miss")
        out.append({**t._asdict(), "ratio": ratio, "result": result})
    return out


def run(
    dims: Iterable[int] = bench.DEFAULT_DIMS,
    rows: int = bench.DEFAULT_ROWS,
    repeats: int = bench.DEFAULT_REPEATS,
    log: Callable[[str], None] = print,
) -> dict:
    """Time jaxgauss's cases and every peer in each dimension; a JSON-ready dict."""
    dims = list(dims)
    cases, peers, layers = [], [], []
    for d in dims:
        sizes = [bench.case_rows(rows, d, c.cost) for c in bench.CASES]
        sizes += [bench.case_rows(rows, d, p.cost) for p in P.PEERS]
        data = bench.make_data(d, max(sizes))
        for case in bench.CASES:
            r = bench.time_case(case, data[: bench.case_rows(rows, d, case.cost)], repeats)
            cases.append(r)
            log(f"d={d:<4} jaxgauss {r['name']:<34} {r['rows_per_s']:10.3g} rows/s")
        host = np.asarray(data)
        for peer in P.PEERS:
            r = time_peer(peer, host[: bench.case_rows(rows, d, peer.cost)], repeats)
            peers.append(r)
            rate = f"{r['rows_per_s']:10.3g} rows/s" if r["status"] == "ok" else r["status"]
            log(f"d={d:<4} peer     {r['name']:<34} {rate}")
        if d >= 10:
            layers.append(breakdown(data[: bench.case_rows(rows, d, 0)], repeats))
    fixed = overhead()
    log(
        f"fit of {fixed['rows']} rows: {fixed['ms']['fit, NumPy rows']:.3f} ms, "
        f"{fixed['ratio_numpy']:.1f}x one jitted a.T @ a"
    )
    return {
        "machine": bench.machine_info(["river", "torch", "threadpoolctl"]),
        "settings": {"dims": dims, "rows": rows, "repeats": repeats, "dtype": "float32"},
        "jaxgauss": cases,
        "peers": peers,
        "breakdown": layers,
        "overhead": fixed,
        "targets": evaluate_targets(cases, peers),
        "load_average": list(os.getloadavg()),
    }


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}"


def _ratio(x: float | None) -> str:
    return "—" if x is None else (f"{x:.2f}×" if x < 10 else f"{x:.0f}×")


def markdown(result: dict) -> str:
    """The results as Markdown: throughput, targets, ratios to each peer, breakdown."""
    m, s = result["machine"], result["settings"]
    dims, cases, peers = s["dims"], result["jaxgauss"], result["peers"]
    v = m["versions"]
    head = " | ".join(f"d = {d}" for d in dims)
    rule = " | ".join("---:" for _ in dims)
    lines = [
        f"# Speed: jaxgauss against peers (backend {m['backend']})",
        "",
        f"`python -m benchmarks speed --dims {' '.join(map(str, dims))} --rows {s['rows']} "
        f"--repeats {s['repeats']}` on {m['cpu']} ({m['cpu_count']} CPUs, {m['platform']}), "
        f"JAX backend {m['backend']} ({m['device_kind']}); python {v['python']}, jax {v['jax']}, "
        f"jaxlib {v['jaxlib']}, numpy {v['numpy']}, river {v['river']}, torch {v['torch']}; "
        f"NumPy BLAS: {m['blas']}.",
        "",
        f"float32, the same rows for every implementation in a dimension. Rows per second "
        f"(data rows processed per second of wall time), median of {s['repeats']} calls after a "
        "warm-up call, waited for with `block_until_ready`; compile = the warm-up call's "
        "extra time. jaxgauss rows are one `jaxgauss.fit` call each, on the JAX backend's "
        "device (the data already there); the peers run on the CPU. Slow implementations are "
        "timed on fewer rows (the `rows` column). NumPy's BLAS and PyTorch are timed with their "
        "default threads and with one thread, keeping the faster. `natural_gradient()` with its "
        "default step is `welford()` itself, so the constant step 0.01 is timed instead.",
        "",
        "## Throughput (rows/s)",
        "",
        f"| implementation | {head} | rows at d = {dims[-1]} | compile (s) |",
        f"| --- | {rule} | ---: | ---: |",
    ]
    for c in bench.CASES:
        rates = " | ".join(_fmt(_rate(cases, c.name, d)) for d in dims)
        mine = [r for r in cases if r["name"] == c.name]
        compile_s = " / ".join(f"{r['compile_seconds']:.1f}" for r in mine)
        lines.append(f"| jaxgauss `fit`: {c.name} | {rates} | {mine[-1]['rows']:,} | {compile_s} |")
    for p in P.PEERS:
        mine = [r for r in peers if r["name"] == p.name]
        if all(r["status"] != "ok" for r in mine):
            lines.append(f"| {p.name} | {' | '.join(SKIPPED for _ in dims)} | — | — |")
            continue
        rates = " | ".join(
            _fmt(_rate(peers, p.name, d))
            + (" ¹" if any(r["d"] == d and r.get("threads") == "1" for r in mine) else "")
            for d in dims
        )
        lines.append(f"| {p.name} | {rates} | {mine[-1]['rows']:,} | — |")
    lines += ["", "¹ faster with one thread than with the library's default threads."]
    lines += [
        "",
        "## Targets",
        "",
        "| target | d | at least | measured | result |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for t in result["targets"]:
        short = f", short by {t['at_least'] / t['ratio']:.1f}×" if t["result"] == "miss" else ""
        lines.append(
            f"| `fit` {t['case']} vs {t['peer']} | {t['d']} | {t['at_least']:g}× "
            f"| {_ratio(t['ratio'])} | {t['result']}{short} |"
        )
    if any(t["result"] == "miss" for t in result["targets"]):
        lines += [
            "",
            "Why the misses: the breakdown at the end shows where a blocked `fit` spends its "
            "time; [profile.md](profile.md) has the profile behind it (HLO, per-layer timings) "
            "and the proposed fixes.",
        ]
    for d in dims:
        ok_peers = [p.name for p in P.PEERS if _rate(peers, p.name, d) is not None]
        lines += [
            "",
            f"## Ratios to each peer, d = {d} (jaxgauss rows/s ÷ peer rows/s)",
            "",
            "| jaxgauss `fit` | " + " | ".join(ok_peers) + " |",
            "| --- | " + " | ".join("---:" for _ in ok_peers) + " |",
        ]
        for c in bench.CASES:
            ours = _rate(cases, c.name, d)
            cells = " | ".join(_ratio(ours / _rate(peers, p, d)) for p in ok_peers)
            lines.append(f"| {c.name} | {cells} |")
    lines += _breakdown_markdown(result["breakdown"], peers)
    lines += _overhead_markdown(result.get("overhead"))
    if result.get("load_average"):
        load = ", ".join(f"{x:.1f}" for x in result["load_average"])
        lines += [
            "",
            f"Load average (1, 5, 15 min) at the end of the run: {load} on {m['cpu_count']} CPUs.",
        ]
    return "\n".join(lines) + "\n"


def _overhead_markdown(o: dict | None) -> list[str]:
    if not o:
        return []
    ok = o["ms"]["fit, NumPy rows"] <= 0.5 and o["ratio_numpy"] <= 10
    lines = [
        "",
        f"## Fixed cost of one `fit` call ({o['rows']:,} rows, d = {o['d']}, medians of "
        f"{o['repeats']} interleaved calls)",
        "",
        "| call | ms |",
        "| --- | ---: |",
    ]
    lines += [f"| {k} | {v:.3f} |" for k, v in o["ms"].items()]
    lines += [
        "",
        f"`fit` ÷ one bare jitted call on the same rows: {o['ratio_numpy']:.1f}× (NumPy rows), "
        f"{o['ratio_device']:.1f}× (device rows); target ≤ 0.5 ms and ≤ 10×: "
        f"{'pass' if ok else 'miss'}.",
    ]
    return lines


def _breakdown_markdown(layers: list[dict], peers: list[dict]) -> list[str]:
    if not layers:
        return []
    names = list(layers[0]["ns_per_row"])
    lines = [
        "",
        "## Where a blocked `fit` spends its time (welford, ns per row)",
        "",
        "Each layer is timed alone on the same rows: `fit` → its jitted, guarded scan "
        "(`scan_batches`) → a bare `lax.scan` of `welford().update` over the same "
        "blocks (`fit`'s, `default_block_rows(d)` rows: the block column) → a scan of only "
        "the Gram matrix of each block → one Gram matrix of all rows (XLA, and NumPy's BLAS).",
        "",
        "| d | block | " + " | ".join(names) + " | NumPy X.T @ X |",
        "| ---: | ---: | " + " | ".join("---:" for _ in names) + " | ---: |",
    ]
    for b in layers:
        ns = b["ns_per_row"]
        numpy_rate = _rate(peers, P.GRAM, b["d"])
        numpy_ns = None if numpy_rate is None else 1e9 / numpy_rate
        cells = " | ".join(f"{ns[k]:.1f}" for k in names)
        lines.append(f"| {b['d']} | {b['block_rows']} | {cells} | {_fmt(numpy_ns)} |")
    lines.append("")
    for b in layers:
        ns = b["ns_per_row"]
        lines.append(
            f"- d = {b['d']}: of `fit`'s {ns['fit']:.1f} ns/row, {ns['fit'] - ns['guarded scan']:.1f} "
            f"are outside the compiled scan (input checks, slicing), "
            f"{ns['guarded scan'] - ns['update scan']:.1f} the guard and the scan's regrouping of "
            "its input into blocks, "
            f"{ns['update scan'] - ns['Gram scan']:.1f} the update's work beyond its Gram matrix "
            f"(steps, weights, centring, the mean), and {ns['Gram scan']:.1f} the blocked Gram "
            f"matrices themselves, against {ns['XLA X.T @ X']:.1f} for one XLA Gram of all rows."
        )
    return lines


def write(result: dict, out: Path, name: str) -> list[Path]:
    """Write ``<out>/<name>.json`` and ``<out>/<name>.md``; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json", out / f"{name}.md"]
    paths[0].write_text(json.dumps(result, indent=2) + "\n")
    paths[1].write_text(markdown(result))
    return paths
