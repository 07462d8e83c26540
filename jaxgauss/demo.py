"""``jaxgauss demo``: the question's setup, why it fails, and what fixes it.

Runs a 1-D stream from N(0, 1) (the question) and a 5-D correlated one through every
estimator family, compares each final estimate with the batch MLE of the same rows,
prints a table and the reasons in plain words, and draws error against step.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgauss import schedules, streams
from jaxgauss._fit import fit
from jaxgauss.estimators import (
    Estimator,
    averaged,
    gradient_ascent,
    make_method,
    natural_gradient,
    welford,
)
from jaxgauss.gaussian import Gaussian, kl_divergence

__all__ = ["DemoRow", "run_demo", "format_table"]

ALPHA = 0.002  # the question's constant step
QUESTION = "question: SGD α=0.002 on Σ"
FISHER = "question's SGD on Σ + Fisher metric, a=1/(t+1)"
FIVE_D_CONDITION = 10.0
FIVE_D = f"5-D, condition {FIVE_D_CONDITION:g}"


class DemoRow(NamedTuple):
    problem: str
    method: str
    start: float
    mean: np.ndarray
    cov: np.ndarray
    kl: float
    efficiency: float
    diverged_at: int
    rows: np.ndarray
    trace_kl: np.ndarray
    trace_var: np.ndarray


def _methods(steps: int) -> list[tuple[str, Estimator, tuple[float, ...]]]:
    """(label, estimator, starting scales Σ₀ = s·I) for every row of the table."""
    all_starts = (1.0, 1e-3, 1e2)
    return [
        (QUESTION, gradient_ascent(optax.sgd(ALPHA), "covariance"), all_starts),
        (
            "SGD 1/t on Σ",
            gradient_ascent(optax.sgd(schedules.robbins_monro(1.0)), "covariance"),
            all_starts,
        ),
        (
            FISHER,
            make_method("fisher-sgd", "covariance")(1.0),
            all_starts,
        ),
        ("Adam 0.01 on Cholesky", gradient_ascent(optax.adam(0.01), "cholesky"), (1.0,)),
        (
            "averaged SGD on Cholesky",
            # the constants of tests/test_efficiency.py: η₀ = 0.02, offset 100, power 0.6,
            # the first 10 % of updates left out of the average
            averaged(
                gradient_ascent(optax.sgd(schedules.robbins_monro(0.02, 0.6, 100.0)), "cholesky"),
                start=steps // 10,
            ),
            (1.0,),
        ),
        ("natural gradient 1/t", natural_gradient(), all_starts),
        ("Welford (exact MLE)", welford(), (1.0,)),
    ]


def _run_problem(title, truth, n, seed) -> list[DemoRow]:
    d = truth.mean.shape[0]
    ys = streams.sample(jax.random.key(seed), truth, n)
    # The yardstick in float64 (NumPy), so that efficiency shows float32 rounding too.
    ys64 = np.asarray(ys, np.float64)
    ref = Gaussian(ys64.mean(0), np.atleast_2d(np.cov(ys64.T, bias=True)))
    truth64 = Gaussian(*(np.asarray(x, np.float64) for x in truth))
    mle_kl = _kl64(truth64, ref)
    # Snapshot every row, then keep ~200 log-spaced ones for the log-log figure.
    keep = np.unique(np.geomspace(1, n, 200).astype(int)) - 1
    rows = []
    for label, est, starts in _methods(n):
        for s in starts:
            init = Gaussian(jnp.zeros(d), s * jnp.eye(d))
            res = fit(est, ys, init, trace_every=1)
            kl = float(kl_divergence(truth, res.estimate))
            snaps = Gaussian(res.trace.estimate.mean[keep], res.trace.estimate.cov[keep])
            rows.append(
                DemoRow(
                    title,
                    label,
                    s,
                    np.asarray(res.estimate.mean),
                    np.asarray(res.estimate.cov),
                    kl,
                    kl / mle_kl,
                    int(res.diverged_at),
                    np.asarray(res.trace.rows)[keep],
                    np.asarray(kl_divergence(truth, snaps)),
                    np.asarray(jnp.trace(res.trace.estimate.cov, axis1=-2, axis2=-1)) / d,
                )
            )
    return rows


def _kl64(p: Gaussian, q: Gaussian) -> float:
    with jax.enable_x64(True):
        return float(kl_divergence(Gaussian(*map(jnp.asarray, p)), Gaussian(*map(jnp.asarray, q))))


def format_table(rows: list[DemoRow]) -> str:
    """A Markdown table of the demo's rows."""
    lines = [
        "| problem | method | Σ₀ | final μ | final Σ (1-D) / tr Σ/d | KL(truth‖est) | efficiency vs MLE | diverged at |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        d = r.mean.shape[0]
        mu = f"{r.mean[0]:.3f}" if d == 1 else f"‖μ‖={np.linalg.norm(r.mean):.3f}"
        sig = f"{r.cov[0, 0]:.4g}" if d == 1 else f"{np.trace(r.cov) / d:.4g}"
        div = "—" if r.diverged_at < 0 else str(r.diverged_at)
        lines.append(
            f"| {r.problem} | {r.method} | {r.start:g} | {mu} | {sig} | {r.kl:.3g} | "
            f"{r.efficiency:.3g} | {div} |"
        )
    return "\n".join(lines)


def _explain(rows: list[DemoRow], n: int) -> str:
    q = {r.start: r for r in rows if r.method == QUESTION and r.mean.size == 1}
    tail = q[1.0].trace_var[-max(1, len(q[1.0].trace_var) // 10) :]
    nat = [r for r in rows if r.method.startswith("natural")]
    fisher = [r for r in rows if r.method == FISHER]
    fisher_div = [f"{r.problem} from Σ₀ = {r.start:g}" for r in fisher if r.diverged_at >= 0]
    lines = [
        "Why the question's gradient ascent does not converge:",
        f"  1. A constant step leaves a noise floor: from Σ₀ = 1, Σ still wanders with std "
        f"{tail.std():.3f} over the last 10% of {n} steps (theory √(α/2) = {np.sqrt(ALPHA / 2):.3f}); "
        "a step must shrink like 1/t (Robbins–Monro) for the noise to average out.",
        f"  2. The Euclidean gradient scales like Σ⁻²: from Σ₀ = 0.001 the first steps move Σ by "
        f"~1000·r², so it jumped to Σ = {q[1e-3].trace_var.max():.3g} and crawls back; from Σ₀ = 100 "
        f"the steps are 10⁴ times too small, Σ = {q[100.0].cov[0, 0]:.3g} after {n} steps.",
        "  3. Nothing keeps Σ positive definite: a step −½α(Σ⁻¹ − Σ⁻¹rrᵀΣ⁻¹) with small r and "
        "small Σ makes it negative, after which Σ⁻¹ and the log-likelihood are meaningless "
        "(fit's guard stops there and reports the row"
        + "".join(
            f"; {r.problem} from Σ₀ = {r.start:g}: rejected at row {r.diverged_at}"
            for r in rows
            if r.method == QUESTION and r.diverged_at >= 0
        )
        + ").",
        "The fix: take the natural gradient (the step preconditioned by the Fisher metric) in "
        "the expectation parameters, μ ← μ + a·r, Σ ← (1−a)Σ + a(1−a)·rrᵀ with a = 1/t. It is "
        "scale-free, a convex combination (always SPD), and exactly the running MLE: efficiency "
        + ", ".join(f"{r.efficiency:.3f}" for r in nat)
        + " from every start in this run (1 = the Cramér–Rao limit of the batch MLE).",
        "Staying with gradient ascent: the question's own update, with the Euclidean gradient "
        "preconditioned by the inverse Fisher metric (Σ g_μ, 2 Σ G_Σ Σ) and a step 1/(t+1), "
        "becomes μ += a·r, Σ ← (1−a)Σ + a·rrᵀ (jg.fisher_preconditioner, method fisher-sgd): "
        "efficiency "
        + ", ".join(f"{r.efficiency:.3g}" for r in fisher if r.diverged_at < 0)
        + ". The step 1/(t+1) weighs Σ₀ as one pseudo-row, a bias of order Σ₀/n"
        + (
            "; stopped by the guard: "
            + ", ".join(fisher_div)
            + " (in float32 the first steps from a tiny Σ₀ have condition ~10⁵, more than "
            "float32 solves keep positive definite; use float64 or natural_gradient())."
            if fisher_div
            else "."
        ),
    ]
    return "\n".join(lines)


def run_demo(out: str = "jaxgauss-demo", steps: int = 100_000, seed: int = 0) -> list[DemoRow]:
    """Run the demo, print the table and the explanation, write ``out/demo.png`` and
    ``out/demo.md``. Returns the table's rows."""
    if steps < 100:
        raise ValueError(f"--steps must be at least 100, got {steps}")
    os.makedirs(out, exist_ok=True)
    question = Gaussian(jnp.zeros(1), jnp.eye(1))
    five = streams.random_truth(jax.random.key(seed + 1), 5, condition=FIVE_D_CONDITION)
    rows = _run_problem("1-D N(0,1)", question, steps, seed)
    rows += _run_problem(FIVE_D, five, steps, seed + 2)
    table = format_table(rows)
    print(
        f"{steps} rows per stream, seed {seed}, float32; efficiency = KL(truth‖estimate) / "
        "KL(truth‖batch MLE of the same rows)\n"
    )
    print(table)
    print()
    print(_explain(rows, steps))
    with open(os.path.join(out, "demo.md"), "w") as f:
        f.write(table + "\n\n" + _explain(rows, steps) + "\n")
    panels = []
    for title, d in (("1-D N(0,1)", 1), (FIVE_D, 5)):
        curves = [
            (f"{r.method}, Σ₀={r.start:g}", r.rows, r.trace_kl) for r in rows if r.problem == title
        ]
        panels.append({"title": title, "d": d, "curves": curves})
    try:
        from jaxgauss.plot import plot_kl_traces

        path = plot_kl_traces(panels, os.path.join(out, "demo.png"))
        print(f"\nwrote {path} and {os.path.join(out, 'demo.md')}")
    except ImportError as err:
        print(f"\nno figure: {err}")
    return rows
