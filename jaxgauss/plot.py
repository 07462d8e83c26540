"""Figures (matplotlib is an optional extra: ``pip install "jaxgauss[plot]"``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["require_matplotlib", "plot_kl_traces"]


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
