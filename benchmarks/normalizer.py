"""The running normaliser's ratios (issue 27): ``jg.normalizer`` against baselines and
a peer timed beside it.

Run from a checkout: ``python -m benchmarks.normalizer`` (``--quick`` for tiny sizes,
a smoke test; ``--out`` and ``--name`` choose where the results go). Writes
``benchmarks/results/normalizer.json`` and ``normalizer.md``.

Every case pairs a jaxgauss call with a baseline on the same float32 batch (256 rows
× 10⁵ features; x64 disabled), in one process, warmed up and timed in interleaved
rounds by ``benchmarks.engine.time_pair`` (medians):

1. a jitted ``norm.update(state, x)`` against a jitted one-pass column sum of the same
   batch, ``ones @ x`` (a gemv: XLA:CPU's ``jnp.sum(x, 0)`` is far slower). Target ≥ 0.5×.
2. a jitted ``norm.normalize(state, x)`` against a jitted ``(x − m) * s``. Target ≥ 0.5×.
3. the peer, for information: stable-baselines3's ``RunningMeanStd.update`` (NumPy,
   float64 moments of the float32 batch; ported, not imported) against the jitted
   ``update``.
4. the peer's normalisation, ``(x − mean) / sqrt(var + 1e-8)`` in NumPy, against the
   jitted ``normalize``, for information.

The machine is usually shared: read the ratios and the load averages, not rows/s.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxgauss as jg
from benchmarks.engine import arguments, time_pair, write
from jaxgauss.bench import machine_info


class Size(NamedTuple):
    rows: int
    features: int
    min_rounds: int
    max_rounds: int
    case_budget_s: float


FULL = Size(256, 100_000, 5, 9, 20.0)
QUICK = Size(32, 1000, 2, 2, 1.0)


class RunningMeanStd:
    """stable-baselines3's ``common/running_mean_std.py`` RunningMeanStd (NumPy)."""

    def __init__(self, epsilon=1e-4, shape=()):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = epsilon

    def update(self, arr):
        batch_mean, batch_var, batch_count = np.mean(arr, 0), np.var(arr, 0), arr.shape[0]
        delta = batch_mean - self.mean
        tot_count = self.count + batch_count
        new_mean = self.mean + delta * batch_count / tot_count
        m_2 = self.var * self.count + batch_var * batch_count
        m_2 = m_2 + np.square(delta) * self.count * batch_count / tot_count
        self.mean, self.var, self.count = new_mean, m_2 / tot_count, tot_count


def _cases(size: Size):
    rng = np.random.default_rng(0)
    host = (rng.normal(size=(size.rows, size.features)) * 3 + 100).astype(np.float32)
    x = jnp.asarray(host)
    norm = jg.normalizer()
    state = jax.jit(norm.update)(norm.init(jnp.zeros(size.features, jnp.float32)), x)
    update, normalize = jax.jit(norm.update), jax.jit(norm.normalize)
    colsum = jax.jit(lambda a: jnp.ones(a.shape[0], a.dtype) @ a)
    m, s = jnp.asarray(host[0]), jnp.full(size.features, 0.5, jnp.float32)
    affine = jax.jit(lambda a, m, s: (a - m) * s)
    rms = RunningMeanStd(shape=(size.features,))
    rms.update(host)
    return [
        ("update", "jitted norm.update(state, x)", lambda: update(state, x),
         "jitted ones @ x", lambda: colsum(x), 0.5),
        ("normalize", "jitted norm.normalize(state, x)", lambda: normalize(state, x),
         "jitted (x - m) * s", lambda: affine(x, m, s), 0.5),
        ("update vs peer", "jitted norm.update(state, x)", lambda: update(state, x),
         "NumPy RunningMeanStd.update(x)", lambda: rms.update(host), None),
        ("normalize vs peer", "jitted norm.normalize(state, x)", lambda: normalize(state, x),
         "NumPy (x - mean) / sqrt(var + 1e-8)",
         lambda: (host - rms.mean) / np.sqrt(rms.var + 1e-8), None),
    ]  # fmt: skip


def run(size: Size = FULL, log=print, note: str = "") -> dict:
    start, load_before = time.perf_counter(), os.getloadavg()
    cases = []
    for case, ours_label, ours, base_label, base, target in _cases(size):
        ours_s, base_s, rounds, _ = time_pair(ours, base, size)
        ratio = base_s / ours_s
        result = "info" if target is None else ("pass" if ratio >= target else "miss")
        cases.append(
            {
                "case": case,
                "ours": ours_label,
                "baseline": base_label,
                "rows": size.rows,
                "features": size.features,
                "rounds": rounds,
                "ours_seconds": ours_s,
                "baseline_seconds": base_s,
                "ratio": ratio,
                "ratio_kind": "baseline time / ours (higher: ours faster)",
                "target": None if target is None else f">= {target}x",
                "result": result,
            }
        )
        log(f"{case:<20} ours {ours_s * 1e3:8.2f} ms  baseline {base_s * 1e3:8.2f} ms  "
            f"ratio {ratio:5.2f}  {result}")  # fmt: skip
    return {
        "settings": {
            **size._asdict(),
            "quick": size == QUICK,
            "dtype": "float32",
            "x64": bool(jax.config.jax_enable_x64),
        },  # fmt: skip
        "note": note,
        "machine": machine_info([]),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "seconds": time.perf_counter() - start,
        "cases": cases,
        "ratios": {c["case"]: c["ratio"] for c in cases},
    }


def markdown(result: dict) -> str:
    s, m, load = result["settings"], result["machine"], result["load_average"]
    v = m["versions"]
    lines = [
        "# The running normaliser (issue 27): `jg.normalizer` beside its baselines",
        "",
        f"`python -m benchmarks.normalizer{' --quick' if s['quick'] else ''}` on {m['cpu']} "
        f"({m['cpu_count']} CPUs), {m['platform']}; JAX backend {m['backend']}, x64 "
        f"{'enabled' if s['x64'] else 'disabled'}; jax {v['jax']}, jaxlib {v['jaxlib']}, "
        f"numpy {v['numpy']}. A float32 batch of {s['rows']} × {s['features']:,}; each pair "
        "warmed up, then timed in interleaved rounds; medians. Ratio: the baseline's time "
        f"over ours (above 1: ours is faster). Whole run {result['seconds']:.0f} s.",
        "",
        f"Load average before {', '.join(f'{x:.1f}' for x in load['before'])}; after "
        f"{', '.join(f'{x:.1f}' for x in load['after'])} (a shared machine: read the ratios).",
        *(["", f"Note: {result['note']}"] if result["note"] else []),
        "",
        "| case | ours | ms | baseline | ms | ratio | target | result |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for c in result["cases"]:
        lines.append(
            f"| {c['case']} | `{c['ours']}` | {c['ours_seconds'] * 1e3:.2f} | "
            f"`{c['baseline']}` | {c['baseline_seconds'] * 1e3:.2f} | {c['ratio']:.2f}× | "
            f"{c['target'] or '—'} | {c['result']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = arguments("normalizer", __doc__).parse_args(argv)
    jax.config.update("jax_enable_x64", False)
    result = run(QUICK if args.quick else FULL, log=lambda s: print(s, flush=True), note=args.note)
    for path in write(result, args.out, args.name, render=markdown):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
