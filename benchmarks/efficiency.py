"""Statistical efficiency of each estimator against the number of rows and the
condition number of the true covariance.

efficiency(n) = mean over seeds of KL(truth ‖ estimate after n rows)
              / mean over seeds of KL(truth ‖ batch MLE of the same n rows).

1 matches the maximum-likelihood estimate (the Cramér–Rao bound, to first order);
larger is worse. Every method sees the same S streams per condition number (common
random numbers): the rows are drawn once, each method runs over them as a ``vmap``
over seeds of ``fit``'s scan (``jaxgauss.engine.scan_batches``) with a snapshot every
10·d rows (the moment estimators, like ``fit``'s blocked path, apply those 10·d rows
as one update), and the KL divergences and the batch MLE are computed afterwards in
float64. Condition numbers up to 10⁴ run in float32; above, in float64, where float32
iterates can lose positive definiteness. A run that diverged keeps its last valid
estimate (``fit``'s guard) and is counted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxgauss as jg
from jaxgauss import bench
from jaxgauss.engine import init_carry, scan_batches
from jaxgauss.schedules import robbins_monro

DIM = 5
SEEDS = 16
MAX_ROWS = 100_000
CONDITIONS = (1.0, 1e2, 1e4, 1e6)
FLOAT32_MAX_CONDITION = 1e4


class Method(NamedTuple):
    """An estimator of the benchmark: ``name`` and a builder of no arguments."""

    name: str
    make: Callable[[], jg.Estimator]


def _methods() -> tuple[Method, ...]:
    return (
        Method("welford()", jg.welford),
        Method("natural_gradient()", jg.natural_gradient),
        Method(
            "averaged SGD, robbins_monro(0.1, power=0.6, offset=10), cholesky",
            lambda: jg.averaged(
                jg.gradient_ascent(
                    optax.sgd(robbins_monro(0.1, power=0.6, offset=10.0)), "cholesky"
                ),
                start=100,
            ),
        ),
        Method("Adam(0.01), cholesky", lambda: jg.gradient_ascent(optax.adam(0.01), "cholesky")),
        Method(
            "the question: sgd(0.002), covariance",
            lambda: jg.gradient_ascent(optax.sgd(0.002), "covariance"),
        ),
        Method(
            # make_method's "fisher-sgd": step c/(t + 1) with c = 1 (the running moments
            # with N(0, I) counted as one row), taken exactly in (μ, Σ) by the retraction.
            "Fisher-preconditioned SGD, step 1/(t + 1), retracted, cholesky",
            lambda: jg.methods.make_method("fisher-sgd", "cholesky")(1.0),
        ),
    )


def row_counts(d: int, max_rows: int) -> list[int]:
    """Log-spaced n: 10·d × {1, 2, 5} × 10^k up to ``max_rows`` (snapshot multiples).

    Example:
      >>> row_counts(5, 1000)
      [50, 100, 250, 500, 1000]
    """
    unit = 10 * d
    counts = [unit * m * 10**k for k in range(12) for m in (1, 2, 5)]
    return [n for n in counts if n <= max_rows]


@partial(jax.jit, static_argnames=("est", "every"))
def _snapshots(est: jg.Estimator, ys: jax.Array, every: int) -> tuple[jg.Gaussian, jax.Array]:
    """Estimates every ``every`` rows (S, m, …) and the first rejected row (S,) of
    ``est`` on each seed's rows ``ys`` (S, n, d), from N(0, I)."""
    d = ys.shape[-1]
    g0 = jg.Gaussian.standard(d, ys.dtype)

    # Moment estimators apply ``every`` rows per step, as ``fit``'s blocked path does.
    block = every if est.rowwise else 1

    def one(y):
        carry, trace = scan_batches(
            est, init_carry(est.init(g0)), y[:, None, :], trace_every=every, block=block
        )
        return trace.estimate, carry.diverged_at

    return jax.vmap(one)(ys)


def run_condition(
    condition: float,
    d: int,
    seeds: int,
    max_rows: int,
    methods: Iterable[Method],
    estimators: dict,
) -> list[dict]:
    """Efficiency of every method against n for one condition number.

    ``estimators`` caches each (method, dtype)'s estimator so that conditions of one
    dtype reuse its compilation."""
    dtype = np.float32 if condition <= FLOAT32_MAX_CONDITION else np.float64
    counts = row_counts(d, max_rows)
    every = 10 * d
    with jax.enable_x64(dtype == np.float64):
        k_truth, k_rows = jax.random.split(jax.random.key(0))
        truth = jg.streams.random_truth(k_truth, d, condition, dtype=dtype)
        keys = jax.random.split(k_rows, seeds)
        ys = jax.vmap(lambda k: jg.streams.sample(k, truth, counts[-1]))(keys)
        with jax.enable_x64(True):
            ys64 = jnp.asarray(ys, jnp.float64)
            mle_kl = np.stack(
                [
                    jg.gaussian.kl_divergence_float64(truth, jax.vmap(jg.mle)(ys64[:, :n]))
                    for n in counts
                ],
                axis=1,
            )
        picks = np.asarray(counts) // every - 1
        results = []
        for method in methods:
            est = estimators.setdefault((method.name, dtype), method.make())
            snaps, diverged_at = _snapshots(est, ys, every)
            picked = jax.tree_util.tree_map(lambda x: x[:, picks], snaps)
            kl = jg.gaussian.kl_divergence_float64(truth, picked)  # (S, len(counts))
            results.append(
                {
                    "method": method.name,
                    "condition": condition,
                    "dtype": np.dtype(dtype).name,
                    "n": counts,
                    "efficiency": (kl.mean(0) / mle_kl.mean(0)).tolist(),
                    "mean_kl": kl.mean(0).tolist(),
                    "mle_kl": mle_kl.mean(0).tolist(),
                    "diverged": int(np.sum(np.asarray(diverged_at) >= 0)),
                }
            )
    return results


def run(
    d: int = DIM,
    seeds: int = SEEDS,
    max_rows: int = MAX_ROWS,
    conditions: Iterable[float] = CONDITIONS,
    log: Callable[[str], None] = print,
) -> dict:
    """The efficiency of every method for every condition number; a JSON-ready dict."""
    if max_rows < 10 * d:
        raise ValueError(f"max_rows must be at least 10·d = {10 * d}, got {max_rows}")
    methods = _methods()
    estimators: dict = {}
    results = []
    for condition in conditions:
        for r in run_condition(condition, d, seeds, max_rows, methods, estimators):
            results.append(r)
            log(
                f"condition {condition:<8g} {r['method']:<66} efficiency at n = {r['n'][-1]}: "
                f"{r['efficiency'][-1]:.3g} ({r['diverged']}/{seeds} diverged)"
            )
    return {
        "machine": bench.machine_info(),
        "settings": {
            "d": d,
            "seeds": seeds,
            "max_rows": max_rows,
            "conditions": list(conditions),
            "float32_max_condition": FLOAT32_MAX_CONDITION,
        },
        "results": results,
    }


def _cell(r: dict, i: int) -> str:
    return f"{r['efficiency'][i]:.3g}"


def markdown(result: dict, png: str | None = None) -> str:
    """The efficiency tables: one per condition number (methods × n), and a summary at
    the largest n (methods × condition number)."""
    s, results = result["settings"], result["results"]
    m = result["machine"]
    methods = list(dict.fromkeys(r["method"] for r in results))
    conditions = list(dict.fromkeys(r["condition"] for r in results))
    lines = [
        "# Statistical efficiency",
        "",
        f"`python -m benchmarks efficiency`: d = {s['d']}, {s['seeds']} seeds, a random truth "
        "(random rotation, eigenvalues log-spaced in [1, condition]), every estimator started "
        "at N(0, I) and run over the same streams. efficiency = mean KL(truth ‖ estimate) / "
        "mean KL(truth ‖ batch MLE of the same rows) over seeds (KL and MLE in float64): 1 is "
        "the MLE's accuracy, larger is worse. Runs in float32 up to condition "
        f"{s['float32_max_condition']:g}, float64 above. Diverged runs (the guard rejected an "
        "update) keep their last valid estimate and are counted. Backend "
        f"{m['backend']} ({m['device_kind']}), jax {m['versions']['jax']}.",
        "",
    ]
    if png:
        lines += [f"![efficiency against n and condition number]({png})", ""]
    last = {c: [r for r in results if r["condition"] == c] for c in conditions}
    lines += [
        f"## At the largest n ({results[0]['n'][-1]:,} rows)",
        "",
        "| estimator | " + " | ".join(f"condition {c:g}" for c in conditions) + " |",
        "| --- | " + " | ".join("---:" for _ in conditions) + " |",
    ]
    for name in methods:
        cells = []
        for c in conditions:
            r = next(r for r in last[c] if r["method"] == name)
            div = f" ({r['diverged']}/{s['seeds']} diverged)" if r["diverged"] else ""
            cells.append(_cell(r, -1) + div)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for c in conditions:
        rows = last[c]
        lines += [
            "",
            f"## Condition number {c:g} ({rows[0]['dtype']}): efficiency against n",
            "",
            "| estimator | " + " | ".join(f"{n:,}" for n in rows[0]["n"]) + " |",
            "| --- | " + " | ".join("---:" for _ in rows[0]["n"]) + " |",
        ]
        for r in rows:
            cells = " | ".join(_cell(r, i) for i in range(len(r["n"])))
            lines.append(f"| {r['method']} | {cells} |")
        mle = " | ".join(f"{k:.3g}" for k in rows[0]["mle_kl"])
        lines.append(f"| *mean KL of the batch MLE* | {mle} |")
    return "\n".join(lines) + "\n"


# colour family (jaxgauss._style) of each method name in efficiency.json
FAMILY = {
    "welford()": "welford",
    "natural_gradient()": "natural",
    "averaged SGD, robbins_monro(0.1, power=0.6, offset=10), cholesky": "averaged-sgd",
    "Adam(0.01), cholesky": "adam",
    "the question: sgd(0.002), covariance": "question",
    "Fisher-preconditioned SGD, step 1/(t + 1), retracted, cholesky": "fisher-sgd",
}


def plot(result: dict, path: Path) -> Path:
    """Efficiency against n, one panel per condition number, and against the condition
    number at the largest n; log axes, in the shared jaxgauss figure style."""
    from jaxgauss import _style

    results = result["results"]
    methods = list(dict.fromkeys(r["method"] for r in results))
    conditions = list(dict.fromkeys(r["condition"] for r in results))
    colors = {name: _style.family_color(FAMILY.get(name, ""), i) for i, name in enumerate(methods)}
    # welford() and natural_gradient() coincide: dash one so both stay visible
    dashes = {name: "--" if FAMILY.get(name) == "welford" else "-" for name in methods}
    with _style.pyplot() as plt:
        fig, axes = plt.subplots(
            1, len(conditions) + 1, figsize=(3.6 * (len(conditions) + 1), 4.4), squeeze=False
        )
        fig.subplots_adjust(left=0.05, right=0.99, top=0.9, bottom=0.27, wspace=0.3)
        for ax, c in zip(axes[0], conditions):
            for r in (r for r in results if r["condition"] == c):
                ax.loglog(
                    r["n"], r["efficiency"], "o", ls=dashes[r["method"]], ms=3,
                    color=colors[r["method"]],
                )  # fmt: skip
            dtype = "float32" if c <= FLOAT32_MAX_CONDITION else "float64"
            ax.set_title(f"condition {c:g} ({dtype})", loc="left")
            ax.set_xlabel("rows n")
        axes[0][0].set_ylabel("efficiency (KL / KL of the MLE)")
        ax = axes[0][-1]
        for name in methods:
            rs = [r for r in results if r["method"] == name]
            ax.loglog(
                [r["condition"] for r in rs], [r["efficiency"][-1] for r in rs], "o",
                ls=dashes[name], ms=3, color=colors[name], label=name,
            )  # fmt: skip
        ax.set_title(f"at n = {results[0]['n'][-1]:,}", loc="left")
        ax.set_xlabel("condition number")
        fig.legend(
            *ax.get_legend_handles_labels(), loc="lower center", bbox_to_anchor=(0.5, 0), ncol=2
        )
        for ax in axes[0]:
            lo, hi = ax.get_xlim()
            x = np.geomspace(lo, hi, 50)
            _style.reference_line(ax, x, np.ones_like(x), "batch MLE (Cramér–Rao)", at=0.02)
        return Path(_style.save(fig, str(path)))


def write(result: dict, out: Path) -> list[Path]:
    """Write ``efficiency.json``, ``efficiency.md`` and (with matplotlib)
    ``efficiency.png`` to ``out``; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "efficiency.json"]
    paths[0].write_text(json.dumps(result, indent=2) + "\n")
    try:
        paths.append(plot(result, out / "efficiency.png"))
        png = "efficiency.png"
    except ImportError:
        png = None
    md = out / "efficiency.md"
    md.write_text(markdown(result, png))
    return [*paths, md]
