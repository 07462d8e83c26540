"""Sweep throughput: ``jaxgauss.sweep`` against a Python loop over ``jaxgauss.fit``.

Run from a checkout: ``python -m benchmarks.bench_sweep``. Writes
``benchmarks/results/sweep.json`` and ``benchmarks/results/sweep.md``.

Both sides run ``gradient_ascent(optax.sgd(lr), parameterization)`` over K learning
rates × S seeds, in float32, and are timed in the same process after a warm-up, with
``block_until_ready``, as the median of repeats. Compilation is reported apart, as the
first call's extra time over a steady call (tracing plus XLA compilation).

* sweep: one call of ``jaxgauss.sweep`` for all K × S configurations. Its time includes
  drawing the streams inside the program and the running-MLE reference.
* loop: one cached ``jaxgauss.fit`` call per configuration, the data drawn beforehand
  (not timed). The learning rate lives in the optimizer state
  (``optax.inject_hyperparams``) so that one compiled ``fit`` serves every value. The
  loop is timed on the first ``LOOP_CONFIGS`` configurations only (it is slow) and
  reported per configuration-update like the sweep.

The peak memory of a K × S = 4096 × 10⁵-row sweep at d = 2 is measured in a
subprocess (its own ``VmHWM``, from /proc/self/status).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxgauss as jg
from jaxgauss.bench import machine_info, time_call

RESULTS = Path(__file__).resolve().parent / "results"
NUM_GRID, NUM_SEEDS = 256, 16
LOOP_CONFIGS = 16
SWEEP_TARGET, SWEEP_TARGET_D = 10.0, 10  # sweep config-updates/s ≥ 10× the loop's at d = 10
REPEATS = 5
# Rows per stream for each (d, parameterization): about a second per sweep call here.
CASES = [
    (2, "precision", 20_000),
    (2, "cholesky", 5_000),
    (10, "precision", 2_000),
    (10, "cholesky", 500),
]


def bench_case(d: int, parameterization: str, n_steps: int) -> dict:
    truth = jg.streams.random_truth(jax.random.key(1), d, 10.0)
    lrs = np.geomspace(1e-4, 1e-2, NUM_GRID)
    configs = NUM_GRID * NUM_SEEDS

    def make(lr):
        return jg.gradient_ascent(optax.sgd(lr), parameterization)

    def run_sweep():
        return jg.sweep(make, lrs, truth=truth, n_steps=n_steps, seeds=NUM_SEEDS).final_kl

    sweep = time_call(run_sweep, REPEATS)

    est = jg.gradient_ascent(
        optax.inject_hyperparams(optax.sgd)(learning_rate=0.0), parameterization
    )
    g0 = jg.Gaussian.standard(d)
    state0 = est.init(g0)
    keys = jax.random.split(jax.random.key(0), NUM_SEEDS)
    data = [jax.block_until_ready(jg.streams.sample(k, truth, n_steps)) for k in keys]
    loop_cells = [(k, s) for k in range(NUM_GRID) for s in range(NUM_SEEDS)][:LOOP_CONFIGS]

    def with_lr(lr):
        hyper = dict(state0.opt_state.hyperparams, learning_rate=jnp.asarray(lr, jnp.float32))
        return state0._replace(opt_state=state0.opt_state._replace(hyperparams=hyper))

    states = {k: with_lr(lrs[k]) for k, _ in loop_cells}

    def run_loop():
        return [jg.fit(est, data[s], state=states[k]).estimate for k, s in loop_cells]

    one_fit = time_call(lambda: jg.fit(est, data[0], state=states[0]).estimate, 1)
    loop = time_call(run_loop, 3)

    sweep_rate = configs * n_steps / sweep.seconds
    loop_rate = LOOP_CONFIGS * n_steps / loop.seconds
    return {
        "d": d,
        "parameterization": parameterization,
        "grid": NUM_GRID,
        "seeds": NUM_SEEDS,
        "n_steps": n_steps,
        "sweep_seconds": sweep.seconds,
        "sweep_compile_seconds": sweep.compile_seconds,
        "sweep_config_updates_per_s": sweep_rate,
        "loop_configs_timed": LOOP_CONFIGS,
        "loop_seconds": loop.seconds,
        "loop_compile_seconds": one_fit.compile_seconds,
        "loop_config_updates_per_s": loop_rate,
        "speedup": sweep_rate / loop_rate,
    }


MEMORY_SCRIPT = """
    import time, jax, numpy as np, optax, jaxgauss as jg
    truth = jg.streams.random_truth(jax.random.key(1), 2, 10.0)
    make = lambda lr: jg.gradient_ascent(optax.sgd(lr), "precision")
    start = time.perf_counter()
    res = jg.sweep(make, np.geomspace(1e-4, 1e-2, 256), truth=truth, n_steps=100_000, seeds=16)
    jax.block_until_ready(res.final_kl)
    # VmHWM, not ru_maxrss: Linux keeps the forked parent's pages in ru_maxrss across exec.
    hwm = next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM"))
    print(time.perf_counter() - start, hwm)
"""


def bench_memory() -> dict:
    """Peak RSS of the 4096 × 10⁵-row sweep at d = 2 ("precision"), in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MEMORY_SCRIPT)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {
        "configs": 4096,
        "n_steps": 100_000,
        "d": 2,
        "parameterization": "precision",
        "seconds_with_compile": float(out[0]),
        "peak_rss_mb": int(out[1]) / 1024,
    }


def _loads(loads) -> str:
    return ", ".join(f"{x:.1f}" for x in loads)


def _markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Sweep throughput",
        "",
        f"`python -m benchmarks.bench_sweep` on {m['cpu']} ({m['cpu_count']} CPUs), backend "
        f"{m['backend']} ({m['device_kind']}), jax {m['versions']['jax']}, float32. K × S = {NUM_GRID} × {NUM_SEEDS} "
        "configurations of `gradient_ascent(optax.sgd(lr), parameterization)`; the loop is "
        f"one cached `jaxgauss.fit` per configuration (timed on {LOOP_CONFIGS}). Medians of "
        "repeats after a warm-up. Compile = the first call's extra time over a steady call "
        "(tracing and XLA compilation), once per program. Load average (1, 5, 15 min) "
        f"before {_loads(result['load_before'])}, after {_loads(result['load_after'])}.",
        "",
        "| d | parameterization | rows | sweep config-updates/s | loop config-updates/s "
        "| speedup | sweep compile (s) | fit compile (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["cases"]:
        lines.append(
            f"| {r['d']} | {r['parameterization']} | {r['n_steps']} "
            f"| {r['sweep_config_updates_per_s']:.3g} | {r['loop_config_updates_per_s']:.3g} "
            f"| {r['speedup']:.0f}× | {r['sweep_compile_seconds']:.2f} "
            f"| {r['loop_compile_seconds']:.2f} |"
        )
    lines += ["", "| target | measured | result |", "| --- | ---: | --- |"]
    for r in result["cases"]:
        if r["d"] == SWEEP_TARGET_D:
            ok = "pass" if r["speedup"] >= SWEEP_TARGET else "miss"
            lines.append(
                f"| sweep ≥ {SWEEP_TARGET:g}× the loop, d = {r['d']}, {r['parameterization']} "
                f"| {r['speedup']:.1f}× | {ok} |"
            )
    mem = result["memory"]
    lines += [
        "",
        f"Peak RSS of one {mem['configs']} × {mem['n_steps']:,}-row sweep at d = {mem['d']} "
        f"({mem['parameterization']}): {mem['peak_rss_mb']:.0f} MB "
        f"({mem['seconds_with_compile']:.1f} s including compilation). This is host memory: "
        "on a GPU backend it is mostly the CUDA runtime's.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    # Load averages before and after: other processes on a small machine skew timings.
    result = {
        "machine": machine_info(),
        "load_before": os.getloadavg(),
        "cases": [],
        "memory": None,
    }
    for d, parameterization, n_steps in CASES:
        case = bench_case(d, parameterization, n_steps)
        print(
            f"d={d:>2} {parameterization:<10} sweep {case['sweep_config_updates_per_s']:.3g}/s  "
            f"loop {case['loop_config_updates_per_s']:.3g}/s  ({case['speedup']:.0f}×)",
            flush=True,
        )
        result["cases"].append(case)
    result["memory"] = bench_memory()
    print(f"4096 × 10⁵ sweep: peak RSS {result['memory']['peak_rss_mb']:.0f} MB")
    result["load_after"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sweep.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "sweep.md").write_text(_markdown(result))


if __name__ == "__main__":
    main()
