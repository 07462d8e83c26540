"""One look for every jaxgauss figure: the demo, the sweep heatmap, the benchmarks.

A reader should recognise a method by its colour in every picture the project
draws, so colours belong to method *families* (the registry's names plus "question",
the classic constant-step SGD on Σ): warm colours for the methods that fail, cool ones
for the fixes. A starting scale Σ₀ is a line style, the Cramér–Rao reference is a
black line labelled on the plot, and a run the guard stopped is a cross where it
stopped. Legends sit outside the axes, in space the layout reserves for them, so no
text is cut at the canvas edge (``tests/test_plot.py`` checks it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

__all__ = [
    "FAMILY_COLORS",
    "START_STYLES",
    "RC",
    "DPI",
    "pyplot",
    "family_color",
    "start_style",
    "label_line",
    "reference_line",
    "save",
]

# Failing families warm, fixes cool; "natural" and "welford" compute the same running
# MLE and share a hue.
FAMILY_COLORS = {
    "question": "#d62728",
    "sgd": "#ff7f0e",
    "adam": "#9467bd",
    "exponential": "#8c564b",
    "fisher-sgd": "#1f77b4",
    "averaged-sgd": "#17becf",
    "natural": "#2ca02c",
    "welford": "#2ca02c",
    "student-t": "#1f77b4",
    "mixture": "#9467bd",
}
START_STYLES = {1.0: "-", 1e-3: "--", 1e2: ":"}
REFERENCE_COLOR = "black"
DPI = 120
RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.grid.which": "major",
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "lines.linewidth": 1.6,
}


@contextlib.contextmanager
def pyplot() -> Iterator:
    """matplotlib's pyplot with a headless backend and the shared style, or an
    ImportError naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            'figures need matplotlib: pip install "jaxgauss[plot]" (or pip install matplotlib)'
        ) from err
    with plt.rc_context(RC):
        yield plt


def family_color(family: str, fallback: int = 0) -> str:
    """The colour of a method family; unknown families take matplotlib's cycle."""
    return FAMILY_COLORS.get(family, f"C{fallback % 10}")


def start_style(scale: float) -> str:
    """The line style of a starting scale Σ₀ = scale·I."""
    return START_STYLES.get(scale, "-.")


def label_line(
    ax, x: np.ndarray, y: np.ndarray, text: str, at: float, below: bool = False, **kw
) -> None:
    """Write ``text`` along the curve (x, y) from its point at the fraction ``at``
    of its samples, above it (or ``below``), rotated to follow it on screen (log
    axes too)."""
    i = int(np.clip(at * (len(x) - 1), 0, len(x) - 2))
    p0, p1 = ax.transData.transform([(x[i], y[i]), (x[i + 1], y[i + 1])])
    angle = np.degrees(np.arctan2(p1[1] - p0[1], p1[0] - p0[0]))
    ax.annotate(
        text,
        (x[i], y[i]),
        xytext=(0, -4 if below else 4),
        textcoords="offset points",
        rotation=angle,
        rotation_mode="anchor",
        ha="left",
        va="top" if below else "bottom",
        fontsize=8,
        **kw,
    )


def reference_line(
    ax,
    x: np.ndarray,
    y: np.ndarray,
    text: str,
    at: float = 0.55,
    color=REFERENCE_COLOR,
    ls="-",
    below: bool = False,
) -> None:
    """A reference the methods are judged against (the Cramér–Rao line, efficiency 1,
    a noise floor): thin, behind the data, labelled on the plot. Call it after the
    axes' size and limits are final: the label's angle is measured on screen."""
    ax.plot(x, y, color=color, ls=ls, lw=1.0, zorder=1)
    label_line(ax, x, y, text, at, below=below, color=color)


def save(fig, path: str) -> str:
    """Write ``fig`` as a PNG at the shared resolution, close it, return ``path``."""
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
