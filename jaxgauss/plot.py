"""Figures (matplotlib is an optional extra: ``pip install "jaxgauss[plot]"``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from jaxgauss import _style

if TYPE_CHECKING:
    from jaxgauss._sweep import SweepResult

__all__ = ["plot_story", "plot_sweep_heatmap"]


def _quartiles(x: np.ndarray) -> np.ndarray:
    """25 %, 50 % and 75 % points over axis 0 of ``x`` (S, m), ignoring NaN, by
    NumPy's linear interpolation (``np.nanpercentile``, whose per-column loop is
    slow), NaN where a column has no value: (3, m)."""
    s = np.sort(x, axis=0)  # NaN last
    k = np.isfinite(x).sum(0)
    pos = np.array([0.25, 0.5, 0.75])[:, None] * np.maximum(k - 1, 0)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, np.maximum(k - 1, 0))
    cols = np.arange(x.shape[1])
    out = s[lo, cols] + (s[hi, cols] - s[lo, cols]) * (pos - lo)
    return np.where(k > 0, out, np.nan)


def _median_band(kl: np.ndarray, rows: np.ndarray, diverged_at: np.ndarray) -> np.ndarray:
    """Quartiles (3, m) over seeds of ``kl`` (S, m), each seed only up to the row
    where the guard stopped it; NaN where fewer than half the seeds still run."""
    live = (diverged_at[:, None] < 0) | (rows[None, :] <= diverged_at[:, None])
    kl = np.where(live & np.isfinite(kl), kl, np.nan)
    enough = live.sum(0) * 2 >= kl.shape[0]
    return np.where(enough, _quartiles(kl), np.nan)


def _draw_run(ax, run, color: str) -> None:
    rows = np.asarray(run.rows)
    diverged_at = np.asarray(run.diverged_at)
    q1, q2, q3 = _median_band(np.asarray(run.trace_kl, np.float64), rows, diverged_at)
    style = _style.start_style(run.start)
    ax.fill_between(rows, q1, q3, color=color, alpha=0.15, lw=0)
    ax.plot(rows, q2, color=color, ls=style)
    stopped = diverged_at >= 0
    if stopped.any():
        # the rejected row, 1-based, at the KL of the last valid estimate
        x, y = diverged_at[stopped] + 1, np.asarray(run.kl)[stopped]
        ax.plot(x, y, "x", color=color, ms=9, mew=2.2, zorder=5)
        first, last = x.min(), x.max()
        where = f"row {first}" if first == last else f"rows {first}–{last}"
        ax.annotate(
            f"stopped: {stopped.sum()}/{len(stopped)} seeds, {where}",
            (np.median(x), np.median(y)),
            xytext=(9, 3),
            textcoords="offset points",
            color=color,
            fontsize=7.5,
            va="bottom",
        )


def _story_layout(plt, n_panels: int, title: str | None):
    """The story figure and its axes (flat), at most two panels a row: returns
    ``(fig, axes, height)`` with the height in inches."""
    ncols = 2 if n_panels > 2 else n_panels
    nrows = -(-n_panels // ncols)
    top = 0.45 + (0.35 if title else 0.0)
    height = 4.1 * nrows + 1.1 + top
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, height))
    # A fixed layout (constrained layout would cost a second full draw): the
    # legend gets the bottom 1.25 inches, each title 0.45 inch above its panel.
    fig.subplots_adjust(
        left=0.08, right=0.98, top=1 - top / height, bottom=1.25 / height, hspace=0.45
    )
    return fig, np.atleast_1d(axes).ravel(), height


def _run_colors(
    panels: Sequence[dict], family: Mapping[str, str]
) -> tuple[dict[str, str], list[list[str]]]:
    """The colour of every run, panel by panel, from its method's family and the
    number of methods met before it; and each method's colour where first met."""
    methods: dict[str, str] = {}
    colors = []
    for panel in panels:
        panel_colors = []
        for run in panel["runs"]:
            color = _style.family_color(family.get(run.method, ""), len(methods))
            methods.setdefault(run.method, color)
            panel_colors.append(color)
        colors.append(panel_colors)
    return methods, colors


def _draw_panel(ax, panel: dict, colors: Sequence[str]) -> list[tuple]:
    """Draw one panel's runs in ``colors`` on log-log axes with its titles; returns
    its reference lines ``(n, kl, label, style)`` to label once the figure is laid out."""
    n_max = 1
    for run, color in zip(panel["runs"], colors):
        _draw_run(ax, run, color)
        n_max = max(n_max, int(np.max(run.rows)))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1, n_max)
    ax.set_title(panel["title"], loc="left", pad=16)
    ax.annotate(
        panel["subtitle"],
        (0, 1),
        xycoords="axes fraction",
        xytext=(0, 4),
        textcoords="offset points",
        fontsize=8,
        color="0.3",
    )
    ax.set_xlabel("rows seen n")
    ax.set_ylabel("KL(truth ‖ estimate)")
    d = panel["d"]
    n = np.logspace(0, np.log10(n_max), 50)
    cramer_rao = (d + d * (d + 1) / 2) / (2 * n)
    lines = [(n, cramer_rao, "Cramér–Rao (batch MLE)", {"below": True})]
    if "floor" in panel:
        value, text = panel["floor"]
        lines.append((n, np.full_like(n, value), text, {"color": "0.45", "ls": "-."}))
    return lines


def _legend_handles(
    methods: Mapping[str, str],
    starts: set,
    n_seeds: int,
    family: Mapping[str, str],
    legend: Mapping[str, str],
) -> list:
    """The legend's entries: the methods in family order, the starting scales in
    line-style order, then the band, the guard's cross and the Cramér–Rao line."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    order = list(_style.FAMILY_COLORS)
    ranked = sorted(
        methods, key=lambda m: order.index(family[m]) if family.get(m) in order else len(order)
    )
    handles = [Line2D([], [], color=methods[m], label=legend.get(m, m)) for m in ranked]
    handles += [
        Line2D([], [], color="0.4", ls=_style.start_style(s), label=f"Σ₀ = {s:g}·I")
        for s in sorted(
            starts,
            key=lambda s: list(_style.START_STYLES).index(s) if s in _style.START_STYLES else 99,
        )
    ]
    handles += [
        Patch(color="0.4", alpha=0.25, label=f"median of {n_seeds} seeds, band 25–75 %"),
        Line2D(
            [], [], color="0.4", marker="x", ls="", mew=2, label="guard stopped a run (Σ not SPD)"
        ),
        Line2D([], [], color=_style.REFERENCE_COLOR, lw=1, label="Cramér–Rao line (batch MLE)"),
    ]
    return handles


def plot_story(
    panels: Sequence[dict],
    path: str,
    family: Mapping[str, str],
    legend: Mapping[str, str] | None = None,
    title: str | None = None,
) -> str:
    """Small multiples of KL(truth ‖ estimate) against rows seen, log-log, one panel
    per point of an argument, with the Cramér–Rao line
    KL ≈ (d + d(d+1)/2) / (2n) that the batch MLE attains.

    Every run is the median over its seeds with the interquartile range as a band;
    a seed the guard stopped is a cross at the rejected row, and the median stops
    where fewer than half the seeds still run. Colour is the method's family
    (``family[method]``, see ``jaxgauss._style``), line style its starting scale; one
    legend below the panels explains both.

    Args:
      panels: dicts with "title", "subtitle", "d", "runs" (objects with ``method``,
        ``start``, ``rows`` (m,), ``trace_kl`` (S, m), ``kl`` (S,) final and
        ``diverged_at`` (S,), like ``jaxgauss.demo.DemoRow``) and optionally
        "floor": (value, label) for a labelled horizontal line.
      path: where to write the PNG.
      family: method name -> colour family.
      legend: method name -> its legend entry (default: the name).
      title: a headline above the panels.

    Returns:
      ``path``.
    """
    with _style.pyplot() as plt:
        fig, axes, height = _story_layout(plt, len(panels), title)
        methods, colors = _run_colors(panels, family)
        references = [
            (ax, *line)
            for ax, panel, panel_colors in zip(axes, panels, colors)
            for line in _draw_panel(ax, panel, panel_colors)
        ]
        if title:
            fig.suptitle(title, x=0.02, y=1 - 0.1 / height, ha="left", va="top", fontsize=12)
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        runs = [run for panel in panels for run in panel["runs"]]
        starts = {run.start for run in runs}
        n_seeds = max((np.shape(run.trace_kl)[0] for run in runs), default=0)
        handles = _legend_handles(methods, starts, n_seeds, family, legend or {})
        fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=4)
        for ax, x, y, text, kw in references:
            ax.get_ylim()  # settles the autoscaled limits the label's angle depends on
            # n < 10 holds no snapshot, so the labels sit there, clear of the data
            _style.reference_line(ax, x, y, text, at=0.02, **kw)
        return _style.save(fig, path)


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
    with _style.pyplot() as plt:
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
        for i, label in enumerate(ax.get_yticklabels()):
            label.set_color(_style.family_color(names[i], i))  # the method's colour everywhere
        ax.grid(False)
        ax.set_xlabel("learning rate")
        ax.set_title("median KL(est) / KL(MLE) over seeds (hatched: some diverged)", fontsize=9)
        if norm is not None:
            fig.colorbar(image, ax=ax, label="median efficiency")
        fig.tight_layout()
        return _style.save(fig, path)
