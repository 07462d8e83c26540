"""The accelerator targets, measured in one prepared run on a GPU (float32).

* blocked moment estimators (``welford``, ``natural_gradient()``, ``exponential``)
  against the same device's jitted ``X.T @ X`` at d = 10 and 100;
* a sweep of 65 536 configurations (4096 learning rates × 16 seeds) × 10⁵ rows at d = 2
  ("precision"), timed after its compilation;
* per-row gradient ascent on one stream ("precision", d = 10), with the scan unrolled
  1, 4, 16 and 64 steps per loop iteration (``ScanPlan.unroll``).

Each time is ``jaxgauss.bench.time_call``'s: a warm-up call, then the median of
repeats, ``block_until_ready``. ``python -m benchmarks.gpu_targets [--quick]`` writes
``benchmarks/results/gpu_targets.{json,md}``; ``--quick`` shrinks every size (a smoke
test that runs on a CPU).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxgauss as jg
from jaxgauss._engine import ScanPlan, run_scan
from jaxgauss.bench import machine_info, time_call

RESULTS = Path(__file__).resolve().parent / "results"


def moments_vs_gram(d: int, n: int, repeats: int) -> dict:
    """Rows/s of each blocked moment fit and of the device's own Gram, side by side."""
    x = jax.random.normal(jax.random.key(d), (n, d), jnp.float32) + 3.0
    gram = jax.jit(lambda a: a.T @ a)
    row = {"d": d, "rows": n, "gram": n / time_call(lambda: gram(x), repeats).seconds}
    for name, est in (
        ("welford", jg.welford()),
        ("natural_gradient()", jg.natural_gradient()),
        ("exponential", jg.exponential(1e5)),
    ):
        seconds = time_call(lambda est=est: jg.fit(est, x).state.cov, repeats).seconds
        row[name] = n / seconds
        row[f"{name} / gram"] = row[name] / row["gram"]
    return row


def sweep_time(num_lr: int, seeds: int, n_steps: int) -> dict:
    """Seconds of one sweep after its compilation (the second of two calls)."""
    truth = jg.streams.random_truth(jax.random.key(0), 2, 10.0)
    make = jg.methods.make_method("sgd", "precision")
    grid = np.geomspace(1e-4, 1e-1, num_lr)
    timing = time_call(
        lambda: jg.sweep(make, grid, truth=truth, n_steps=n_steps, seeds=seeds).final_kl,
        repeats=1,
    )
    configs = num_lr * seeds
    return {
        "configurations": configs,
        "rows": n_steps,
        "seconds": timing.seconds,
        "first_call_seconds": timing.first,
        "config_updates_per_s": configs * n_steps / timing.seconds,
    }


def per_row_gradient(n: int, unrolls: tuple[int, ...], repeats: int) -> list[dict]:
    """Rows/s of per-row "precision" gradient ascent on one stream, by unroll."""
    est = jg.gradient_ascent(optax.sgd(0.01), "precision")
    x = jax.random.normal(jax.random.key(1), (n, 10), jnp.float32)
    carry = jg.engine.init_carry(est.init(jg.Gaussian.standard(10, jnp.float32)))
    out = []
    for unroll in unrolls:
        plan = ScanPlan(est, unroll=unroll)
        timing = time_call(lambda plan=plan: run_scan(plan, carry, x, None)[0].state, repeats)
        out.append({"unroll": unroll, "rows_per_s": n / timing.seconds})
    return out


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"# Accelerator targets ({m['device_kind']}, backend {m['backend']}, "
        f"jax {m['versions']['jax']}, float32)",
        "",
        "| d | rows | device X.T@X rows/s | estimator | rows/s | / Gram (target ≥ 0.5) |",
        "| ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in result["moments"]:
        for name in ("welford", "natural_gradient()", "exponential"):
            lines.append(
                f"| {r['d']} | {r['rows']:,} | {r['gram']:.3g} | {name} | {r[name]:.3g} | "
                f"{r[f'{name} / gram']:.2f} |"
            )
    s = result["sweep"]
    lines += [
        "",
        f"Sweep: {s['configurations']:,} configurations × {s['rows']:,} rows (d = 2, "
        f'"precision"): {s["seconds"]:.2f} s after compilation (target ≤ 10 s; first call '
        f"{s['first_call_seconds']:.1f} s), {s['config_updates_per_s']:.3g} config-updates/s.",
        "",
        '| per-row gradient ascent ("precision", d = 10): unroll | rows/s |',
        "| ---: | ---: |",
    ]
    lines += [f"| {r['unroll']} | {r['rows_per_s']:.3g} |" for r in result["per_row"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--out", default=str(RESULTS), help="folder for the results")
    args = parser.parse_args(argv)
    quick = args.quick
    result = {
        "machine": machine_info(),
        "moments": [
            moments_vs_gram(10, 2**14 if quick else 2**24, 2 if quick else 5),
            moments_vs_gram(100, 2**12 if quick else 2**22, 2 if quick else 5),
        ],
        "sweep": sweep_time(16 if quick else 4096, 4 if quick else 16, 500 if quick else 100_000),
        "per_row": per_row_gradient(
            2**10 if quick else 2**16, (1, 4) if quick else (1, 4, 16, 64), 2 if quick else 3
        ),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_targets.json").write_text(json.dumps(result, indent=2))
    (out / "gpu_targets.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
