"""Figures: the demo's story figure and the sweep heatmap are laid out so that nothing
is cut, and their statistics match NumPy.

The demo figure is drawn from synthetic rows with the demo's own panels, names and
legend (no JAX run: the end-to-end run is tests/test_cli.py's), so the layout test is
fast and checks exactly what ``jaxgauss demo`` draws.
"""

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")

from jaxgauss import _style, demo  # noqa: E402
from jaxgauss._sweep import SweepResult  # noqa: E402
from jaxgauss.plot import _median_band, _quartiles, plot_sweep_heatmap  # noqa: E402

N, S = 2000, 16


def _fake_rows() -> list[demo.DemoRow]:
    """A row for every (problem, method, start) the demo runs: KL ≈ c/n with noise,
    and the runs the real demo sees stopped by the guard stopped at rows 0–2."""
    rng = np.random.default_rng(0)
    rows = np.arange(4, N + 1, 4)
    out = []
    for problem, d in ((demo.ONE_D, 1), (demo.FIVE_D, 5)):
        for program in demo._programs(N):
            for method, _, starts in program.runs:
                for start in starts:
                    kl = (1 + d * d) / rows * rng.lognormal(0, 0.5, (S, rows.size))
                    stop = d == 5 and (start == 1e-3 and method == demo.QUESTION)
                    diverged = rng.integers(0, 3, S) if stop else np.full(S, -1)
                    out.append(
                        demo.DemoRow(
                            problem, method, start, np.zeros((S, d)), np.tile(np.eye(d), (S, 1, 1)),
                            kl[:, -1], np.ones(S), diverged, rows, kl, np.ones((S, rows.size)),
                            np.zeros(S),
                        )
                    )  # fmt: skip
    return out


@pytest.fixture
def drawn(monkeypatch):
    """Figures as ``_style.save`` receives them, drawn, before they are closed."""
    figures = []
    save = _style.save

    def keep(fig, path):
        fig.canvas.draw()
        figures.append((fig, _text_boxes(fig, fig.canvas.get_renderer())))
        return save(fig, path)

    monkeypatch.setattr(_style, "save", keep)
    return figures


def _text_boxes(fig, renderer):
    """(name, bbox in pixels) of every visible, non-empty text artist of ``fig``;
    tick labels through their axes' tight box, which holds only the ticks drawn
    (matplotlib keeps label objects for ticks outside the view)."""
    ticks = {
        label
        for ax in fig.axes
        for axis in (ax.xaxis, ax.yaxis)
        for tick in axis.get_major_ticks() + axis.get_minor_ticks()
        for label in (tick.label1, tick.label2)
    }
    texts = [
        (t.get_text(), t.get_window_extent(renderer))
        for t in fig.findobj(matplotlib.text.Text)
        if t.get_visible() and t.get_text().strip() and t not in ticks
    ]
    axes = [(f"axes {i}", ax.get_tightbbox(renderer)) for i, ax in enumerate(fig.axes)]
    return texts + [(name, box) for name, box in axes if box is not None]


def _assert_inside_canvas(fig, boxes):
    width, height = fig.canvas.get_width_height()
    assert boxes
    for text, box in boxes:
        # one pixel of slack for antialiasing at the edge
        assert box.x0 >= -1 and box.y0 >= -1, (text, box)
        assert box.x1 <= width + 1 and box.y1 <= height + 1, (text, box)


@pytest.mark.slow  # quick-suite budget: covered quickly by simpler cases
def test_demo_figure_has_every_text_inside_the_canvas_and_one_legend(tmp_path, drawn):
    rows = _fake_rows()
    path = demo.write_figure(rows, str(tmp_path / "demo.png"), N)
    assert (tmp_path / "demo.png").stat().st_size > 10_000 and path.endswith("demo.png")
    ((fig, boxes),) = drawn
    _assert_inside_canvas(fig, boxes)
    # one shared legend, none per panel, no entry twice
    assert len(fig.legends) == 1
    assert all(ax.get_legend() is None for ax in fig.axes)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(labels) == len(set(labels))
    # every family drawn has its own colour
    methods = {r.method for p in demo.story_panels(rows) for r in p["runs"]}
    assert {demo.LEGEND[m] for m in methods} <= set(labels)
    assert len({_style.FAMILY_COLORS[demo.FAMILY[m]] for m in methods}) == len(methods)
    # the Cramér–Rao line is labelled in every panel; the stopped runs are marked
    texts = [t for t, _ in boxes]
    assert texts.count("Cramér–Rao (batch MLE)") == len(demo.story_panels(rows))
    assert any(t.startswith("stopped: 16/16 seeds") for t in texts)


def test_heatmap_has_every_text_inside_the_canvas(tmp_path, drawn):
    rng = np.random.default_rng(1)
    eff = rng.lognormal(1, 1, (5, 4))
    div = np.where(rng.random((5, 4)) < 0.2, 3, -1)
    result = SweepResult(np.geomspace(1e-3, 1.0, 5), eff, div, None, np.ones(4), eff, None)
    plot_sweep_heatmap({"sgd": result, "fisher-sgd": result}, str(tmp_path / "h.png"))
    ((fig, boxes),) = drawn
    _assert_inside_canvas(fig, boxes)


def test_quartiles_match_numpy_nanpercentile():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(16, 40))
    x[rng.random(x.shape) < 0.3] = np.nan
    x[:, 5] = np.nan
    got = _quartiles(x)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        want = np.nanpercentile(x, [25, 50, 75], axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-12)  # the same interpolation, to rounding
    assert np.isnan(got[:, 5]).all()


def test_median_band_drops_stopped_seeds_and_stops_with_half_of_them():
    rows = np.arange(1, 6)
    kl = np.tile(np.arange(1.0, 6.0)[:, None], (1, 5))  # seed s has KL s + 1 at every row
    diverged_at = np.array([-1, -1, 1, 2, 3])  # valid up to rows 1, 2 and 3
    q = _median_band(kl, rows, diverged_at)
    np.testing.assert_array_equal(q[1, :3], [3.0, 3.0, 2.0])  # [1..5], [1,2,4,5], [1,2,5]
    assert np.isnan(q[:, 3:]).all()  # 2 of 5 seeds left: no median drawn
