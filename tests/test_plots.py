"""Tests for mst_ref.plots: PNGs are written at the documented sizes and the data lands where it should."""

import numpy as np
import pytest
from PIL import Image

from mst_ref import plots
from mst_ref.plots import (HEIGHT, LEFT, PALETTE, RIGHT, WIDTH, heatmap_png, image_png, line_chart_png,
                           raster_png, traces_png)

RED = (214, 39, 40)  # the threshold line


def pixels(path):
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        return np.asarray(im).astype(int)  # (H, W, 3)


def where_color(a, color):
    """(rows, cols) of the pixels exactly of ``color``."""
    return np.nonzero((a == np.array(color)).all(axis=-1))


def box_top(a):
    """First row of the plot box: the box's left edge is the first black pixel in column LEFT."""
    return int(np.nonzero((a[:, LEFT] == 0).all(axis=-1))[0].min())


def column_of(x, xlim):
    """Pixel column of data x, from the documented layout (plot box from LEFT to WIDTH - RIGHT)."""
    return LEFT + (x - xlim[0]) / (xlim[1] - xlim[0]) * (WIDTH - RIGHT - LEFT)


def test_line_chart_draws_each_series_where_its_values_are(tmp_path):
    x = [0, 1, 2, 3]
    path = line_chart_png(tmp_path / "sub" / "line.png", x, {"up": [0, 1, 2, 3], "down": [3, 2, 1, 0],
                                                             "flat": [1.5] * 4}, "t", "x", "y")
    assert path == tmp_path / "sub" / "line.png" and path.stat().st_size > 1000
    a = pixels(path)
    assert a.shape == (HEIGHT, WIDTH, 3)
    top = box_top(a)
    rows_up, cols_up = where_color(a[top:], PALETTE[0])
    rows_down, cols_down = where_color(a[top:], PALETTE[1])
    rows_flat, _ = where_color(a[top:], PALETTE[2])
    # x spans [0, 3] padded by 5% each side: x = 0 at this column, the marker has radius 3
    assert abs(cols_up.min() + 3 - column_of(0, (-0.15, 3.15))) <= 1.5
    assert abs(cols_up.max() - 3 - column_of(3, (-0.15, 3.15))) <= 1.5
    start, end = rows_up[cols_up < LEFT + 60].mean(), rows_up[cols_up > WIDTH - RIGHT - 60].mean()
    assert start > end + 200  # rising: lower on the left
    left, right = cols_down < LEFT + 60, cols_down > WIDTH - RIGHT - 60
    assert rows_down[left].mean() < rows_down[right].mean() - 200  # falling
    assert np.ptp(rows_flat) <= 7  # horizontal (one marker's height)
    # the flat line at 1.5 sits halfway between the rising curve's ends (y in [-0.15, 3.15])
    assert abs(rows_flat.mean() - (start + end) / 2) <= 3
    legend_rows, _ = where_color(a[:top], PALETTE[0])
    assert legend_rows.size > 0  # the legend swatch of 'up'


def test_line_chart_logx_uses_log_positions(tmp_path):
    T = [1, 2, 4, 8, 16, 32, 64]
    a = pixels(line_chart_png(tmp_path / "acc.png", T, {"snn": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]},
                              "acc", "T", "accuracy", logx=True))
    rows, cols = where_color(a[box_top(a):], PALETTE[0])
    # equal ratios of x -> equal pixel steps: the markers are evenly spaced, so is a straight line
    fit = np.polyfit(cols, rows, 1)
    assert fit[0] < 0 and np.abs(np.polyval(fit, cols) - rows).max() <= 5


def test_raster_draws_a_cell_per_spike(tmp_path):
    T, n = 10, 4
    spikes = np.zeros((T, n), bool)
    spikes[0, 0] = spikes[9, 3] = spikes[2, 1] = True
    a = pixels(raster_png(tmp_path / "r.png", spikes, "raster"))
    assert a.shape == (HEIGHT, WIDTH, 3)
    top, bottom = box_top(a), HEIGHT - plots.BOTTOM
    rows, cols = where_color(a, PALETTE[0])

    def center(t, i):  # neuron 0 at the top, time left to right
        return (int(top + (i + 0.5) / n * (bottom - top)), int(column_of(t + 0.5, (0, T))))

    for t in range(T):
        for i in range(n):
            r, c = center(t, i)
            assert tuple(a[r, c]) == (PALETTE[0] if spikes[t, i] else (255, 255, 255)), (t, i)
    cell = (bottom - top) / n * (WIDTH - RIGHT - LEFT) / T
    assert 3 * 0.7 * cell <= rows.size <= 3 * cell  # three filled cells (a 1-pixel gap between cells)


def test_raster_takes_0_1_numbers_and_refuses_other_values(tmp_path):
    raster_png(tmp_path / "ok.png", np.eye(3), "eye")
    with pytest.raises(ValueError, match="out != 0"):
        raster_png(tmp_path / "bad.png", np.eye(3) * 0.5, "lambda-valued")


def test_traces_put_higher_potentials_higher_and_dash_the_threshold(tmp_path):
    traces = np.column_stack([np.full(20, 0.2), np.full(20, 0.8)])  # (T, 2)
    a = pixels(traces_png(tmp_path / "v.png", traces, 1.0, "membranes"))
    top = box_top(a)
    low, _ = where_color(a[top:], PALETTE[0])
    high, _ = where_color(a[top:], PALETTE[1])
    red_rows, red_cols = where_color(a[top:], RED)
    assert np.ptp(low) <= 2 and np.ptp(high) <= 2 and np.ptp(red_rows) <= 2
    # y spans [0, 1] padded by 5%: 0.2, 0.8 and 1.0 are 0.6 and 0.2 of the range apart
    assert red_rows.mean() < high.mean() < low.mean()
    assert abs((low.mean() - high.mean()) / (high.mean() - red_rows.mean()) - 3) < 0.1
    assert 0.5 < np.unique(red_cols).size / (WIDTH - RIGHT - LEFT) < 0.75  # dashed: 6 on, 4 off


def test_heatmap_colours_cells_by_value(tmp_path):
    m = np.array([[0.0, 1.0], [2.0, 3.0]])
    a = pixels(heatmap_png(tmp_path / "h.png", m, ["r0", "r1"], ["c0", "c1"], "map"))
    cell = 40  # min(40, 480 // 2), wider than a line of text and than the labels "c0", "c1"
    x0 = where_color(a, tuple(plots.colormap(np.array([0.0]))[0]))[1].min()  # the grid's left edge
    centers = {}
    for value in range(4):
        color = plots.colormap(np.array([value / 3]))[0]
        rows, cols = where_color(a[:, :x0 + 2 * cell], tuple(color))  # the colour bar lies further right
        assert rows.size == cell * cell
        centers[value] = (np.median(rows), np.median(cols))
    assert centers[0][0] == centers[1][0] and centers[0][1] + cell == centers[1][1]  # right of (0, 0)
    assert centers[0][1] == centers[2][1] and centers[0][0] + cell == centers[2][0]  # below (0, 0)
    assert tuple(plots.colormap(np.array([1.0]))[0]) == (253, 231, 37)  # viridis' yellow at the max


def test_image_png_scales_and_places_pixels(tmp_path):
    image = np.zeros((5, 6, 3), np.uint8)
    image[..., 2] = 50
    image[2, 3] = (255, 0, 0)
    a = pixels(image_png(tmp_path / "i.png", image, "img", scale=4))
    assert a.shape == (5 * 4 + 26, 160, 3)
    rows, cols = where_color(a, (255, 0, 0))
    assert rows.size == 16 and (rows.min(), cols.min()) == (22 + 2 * 4, 4 + 3 * 4)
    gray = pixels(image_png(tmp_path / "g.png", np.array([[0.0, 1.0], [2.0, 3.0]]), "g", scale=1))
    assert [tuple(gray[22 + r, 4 + c]) for r in range(2) for c in range(2)] == [
        (0, 0, 0), (85, 85, 85), (170, 170, 170), (255, 255, 255)]  # floats: min -> 0, max -> 255


@pytest.mark.parametrize("call, message", [
    (lambda p: line_chart_png(p, [1, 2], {"a": [1, np.nan]}, "t", "x", "y"), "finite"),
    (lambda p: line_chart_png(p, [1, 2], {"a": [1, 2, 3]}, "t", "x", "y"), "3 values but x has 2"),
    (lambda p: line_chart_png(p, [0, 2], {"a": [1, 2]}, "t", "x", "y", logx=True), "x > 0"),
    (lambda p: line_chart_png(p, [1, 2], {}, "t", "x", "y"), "non-empty dict"),
    (lambda p: line_chart_png(p, ["a", "b"], {"a": [1, 2]}, "t", "x", "y"), "must be numbers"),
    (lambda p: raster_png(p, np.zeros(5), "t"), "2-D"),
    (lambda p: traces_png(p, np.zeros((3, 2)), np.inf, "t"), "threshold must be finite"),
    (lambda p: heatmap_png(p, np.zeros((2, 3)), ["a"], None, "t"), "2 row labels and 3 column"),
    (lambda p: image_png(p, np.zeros((4, 4, 2), np.uint8), "t"), r"\(H, W\) or \(H, W, 3\)"),
    (lambda p: image_png(p, np.zeros((4, 4)), "t", scale=0), "scale"),
    (lambda p: image_png(p.with_suffix(".jpg"), np.zeros((4, 4)), "t"), r"\.png"),
])
def test_bad_inputs_raise_value_error_naming_the_problem(tmp_path, call, message):
    with pytest.raises(ValueError, match=message):
        call(tmp_path / "x.png")
    assert not list(tmp_path.iterdir())  # nothing written


def band_thickness(a, color, col):
    """Rows of ``color`` in pixel column ``col`` (the vertical extent of a line there)."""
    return int(((a[:, col] == np.array(color)).all(axis=-1)).sum())


def test_lines_have_one_width_whatever_their_slope(tmp_path):
    # a flat line and a 45-degree line (in pixels): the perpendicular width is the same
    x = np.arange(2.0)
    a = pixels(line_chart_png(tmp_path / "w.png", x, {"flat": [0.5, 0.5], "slope": [0.0, 1.0]}, "t", "x", "y"))
    col = LEFT + 80  # away from the markers at the ends and from the crossing in the middle
    flat = band_thickness(a, PALETTE[0], col)
    top = box_top(a)
    rows, cols = where_color(a[top:], PALETTE[1])
    slope = abs(np.polyfit(cols, rows, 1)[0])  # rows per column of the sloped line
    # vertical extent of a band of width w at slope s is w * sqrt(1 + s^2): compare perpendicular widths
    perpendicular = band_thickness(a, PALETTE[1], WIDTH - RIGHT - 80) / np.sqrt(1 + slope ** 2)
    assert flat >= 2 and abs(perpendicular - flat) <= 1.0, (flat, perpendicular)


def test_dashed_series_are_drawn_on_top_of_curves(tmp_path):
    x = np.arange(5.0)
    a = pixels(line_chart_png(tmp_path / "d.png", x, {"bound": [1.0] * 5, "curve": [1.0] * 5}, "t", "x", "y",
                              dashed={"bound"}))
    top = box_top(a)
    assert where_color(a[top:], PALETTE[0])[0].size > 100  # the bound (first, dashed) is visible over the curve
    with pytest.raises(ValueError, match="dashed names"):
        line_chart_png(tmp_path / "e.png", x, {"a": x}, "t", "x", "y", dashed={"b"})


def test_heatmap_labels_every_row_and_column_and_ticks_its_colour_bar(tmp_path):
    R, C = 40, 12  # the analyze heat map's shape: many sites, several T
    m = np.arange(R * C, dtype=float).reshape(R, C)
    path = heatmap_png(tmp_path / "big.png", m, [f"site {i}" for i in range(R)], [f"T={2 ** j}" for j in range(C)],
                       "map", xlabel="T", ylabel="site", colorbar_label="error")
    a = pixels(path)
    cells = np.nonzero((a.max(-1) - a.min(-1) > 40).any(axis=1))[0]  # rows with colour
    probe = Image.new("RGB", (1, 1))
    from PIL import ImageDraw
    text_h = ImageDraw.Draw(probe).textbbox((0, 0), "Ag", font=plots._font())[3]
    assert a.shape[0] >= R * (text_h + 2)  # every row at least a line of text tall
    # the column labels fit their cells: the grid is at least as wide as the labels laid end to end
    widths = [ImageDraw.Draw(probe).textbbox((0, 0), f"T={2 ** j}", font=plots._font())[2] for j in range(C)]
    assert a.shape[1] >= C * max(widths)
    # the colour bar: a column of viridis from yellow (top) to purple, with black tick marks to its right
    yellow = where_color(a, tuple(plots.colormap(np.array([1.0]))[0]))
    bar_col = yellow[1].max()
    ticks = np.nonzero((a[cells.min():cells.max(), bar_col + 4] == 0).all(axis=-1))[0]
    assert len(ticks) >= 4  # at least four ticks, not just the two ends


def test_image_panels_share_one_colour_scale(tmp_path):
    image = np.zeros((4, 4), np.uint8)
    image[1, 1] = 255
    low, high = np.zeros((4, 4)), np.full((4, 4), 0.5)
    a = pixels(plots.image_panels_png(tmp_path / "p.png", [image, low, high], ["img", "low", "high"],
                                      "panels", colorbar=(0.0, 0.5, "probability"), scale=5))
    assert where_color(a, (255, 255, 255))[0].size > 0
    purple, yellow = tuple(plots.colormap(np.array([0.0]))[0]), tuple(plots.colormap(np.array([1.0]))[0])
    assert where_color(a, purple)[0].size >= 16 * 25 and where_color(a, yellow)[0].size >= 16 * 25
    with pytest.raises(ValueError, match="one title per panel"):
        plots.image_panels_png(tmp_path / "q.png", [image], [], "t", colorbar=(0, 1, "x"))
