"""Figures (matplotlib is an optional extra: ``pip install "jaxgauss[plot]"``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from jaxgauss._sweep import SweepResult

__all__ = ["require_matplotlib", "plot_kl_traces", "plot_sweep_heatmap"]


def require_matplotlib():
    """Import matplotlib with a headless backend, or raise ImportError naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            'figures need matplotlib: pip install "jaxgauss[plot]" (or pip install matplotlib)'
        ) from err
    return plt


def plot_kl_traces(panels: Sequence[dict], path: str) -> str:
    """Error against step on log-log axes, one panel per problem, with the
    Cramér–Rao line KL ≈ (d + d(d+1)/2) / (2n) that the batch MLE attains.

    Args:
      panels: dicts with "title", "d", and "curves": a list of (label, rows, kl).
      path: where to write the PNG.

    Returns:
      ``path``.
    """
    plt = require_matplotlib()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 7), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        n_max = 1
        colors = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(panel["curves"]), 2)))
        for color, (label, rows, kl) in zip(colors, panel["curves"]):
            rows, kl = np.asarray(rows), np.asarray(kl, dtype=np.float64)
            keep = np.isfinite(kl) & (kl > 0)
            ax.loglog(rows[keep], kl[keep], label=label, lw=1.3, color=color)
            n_max = max(n_max, int(rows.max()))
        d = panel["d"]
        n = np.logspace(0, np.log10(n_max), 100)
        ax.loglog(n, (d + d * (d + 1) / 2) / (2 * n), "k--", lw=2, label="Cramér–Rao (batch MLE)")
        ax.set_xlabel("data rows n")
        ax.set_ylabel("KL(truth ‖ estimate)")
        ax.set_title(panel["title"])
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_sweep_heatmap(results: Mapping[str, SweepResult], path: str) -> str:
    """Median efficiency KL(truth ‖ estimate) / KL(truth ‖ MLE) over learning rate ×
    method, on a log colour scale (1 matches the batch MLE; lower is better).

    Each cell is the median over the seeds that did not diverge; a cell where some
    seeds diverged is hatched and says how many, one where all did is grey.

    Args:
      results: method name → ``SweepResult`` of a sweep over one array grid of
        learning rates, the same for every method.
      path: where to write the PNG.

    Returns:
      ``path``.
    """
    plt = require_matplotlib()
    from matplotlib.colors import LogNorm

    names = list(results)
    lrs = np.asarray(results[names[0]].grid)
    stats = [results[n].stats() for n in names]
    median = np.array([s[0] for s in stats])
    n_div = np.array([s[3] for s in stats])
    n_seeds = results[names[0]].final_kl.shape[1]
    fig, ax = plt.subplots(figsize=(2.5 + 0.8 * len(lrs), 1.8 + 0.55 * len(names)))
    ax.set_facecolor("0.75")  # cells where every seed diverged stay grey
    norm = LogNorm() if np.isfinite(median).any() else None
    image = ax.imshow(np.ma.masked_invalid(median), cmap="YlOrRd", norm=norm, aspect="auto")
    for i, j in np.ndindex(median.shape):
        if n_div[i, j]:
            ax.add_patch(
                plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="xx", ec="red", lw=0)
            )
        label = f"{median[i, j]:.3g}" if np.isfinite(median[i, j]) else ""
        if n_div[i, j]:
            label += f"\n{n_div[i, j]}/{n_seeds} div"
        dark = np.isfinite(median[i, j]) and norm(median[i, j]) > 0.6
        ax.text(j, i, label, ha="center", va="center", fontsize=7, color="w" if dark else "k")
    ax.set_xticks(range(len(lrs)), [f"{lr:.2g}" for lr in lrs], rotation=45)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("learning rate")
    ax.set_title("median KL(est) / KL(MLE) over seeds (hatched: some diverged)", fontsize=9)
    if norm is not None:
        fig.colorbar(image, ax=ax, label="median efficiency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
