"""Small PNG charts drawn with pillow alone: accuracy vs T, spike rasters, membrane traces, maps, images.

Used by the ``mst-ref demo`` command and the tutorials, where a picture says more than a table. Every
function validates its numbers (``ValueError`` naming what was wrong), creates the parent folder if
needed, writes one PNG and returns its :class:`~pathlib.Path`. Text uses pillow's built-in font
(``ImageFont.load_default()``), so no font files are needed.

Layout of the charts with axes (line chart, raster, traces): a title line, a legend row when there are
labelled series, the plot box with ticks and tick labels on the left and bottom, and the axis labels.
Colours cycle through :data:`PALETTE` (the "tab10" colours) in the order the series are given.
"""

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["PALETTE", "colormap", "line_chart_png", "raster_png", "traces_png", "heatmap_png", "image_png"]

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
WHITE, BLACK = (255, 255, 255), (0, 0, 0)
WIDTH, HEIGHT = 640, 420  # size of the charts with axes, in pixels
LEFT, RIGHT, BOTTOM = 70, 20, 46  # margins around the plot box (top depends on the legend)
# viridis at 0, 1/4, 1/2, 3/4, 1: heat maps interpolate linearly between these
_COLORMAP = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], float)


def _font():
    return ImageFont.load_default()


def _text_size(draw, text):
    left, top, right, bottom = draw.textbbox((0, 0), text, font=_font())
    return right - left, bottom - top


def _out_path(path):
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png; got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _finite(name, values, ndim):
    """``values`` as a float64 array of ``ndim`` dimensions, non-empty and finite, or ValueError."""
    try:
        a = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers; got {type(values).__name__}") from None
    if a.ndim != ndim or a.size == 0:
        raise ValueError(f"{name} must be a non-empty {ndim}-D array; got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite; got {int((~np.isfinite(a)).sum())} NaN/inf values")
    return a


def _ticks(lo, hi, count=6):
    """Round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) covering [lo, hi]."""
    raw = (hi - lo) / count
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def _label(value):
    return f"{round(value, 10):g}"


def _padded_range(lo, hi):
    if hi - lo < 1e-12 * max(1.0, abs(lo)):
        return lo - 0.5 * max(1.0, abs(lo)), hi + 0.5 * max(1.0, abs(hi))
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


class _Axes:
    """A canvas with a plot box and the data -> pixel mapping of its two axes."""

    def __init__(self, title, legend, xlim, ylim, width=WIDTH, height=HEIGHT):
        self.image = Image.new("RGB", (width, height), WHITE)
        self.draw = ImageDraw.Draw(self.image)
        self.draw.text((width // 2, 6), title, fill=BLACK, font=_font(), anchor="ma")
        top, x = 24, LEFT  # the legend: a row (or more) of colour swatches + labels under the title
        for label, color, dashed in legend:
            w = 26 + _text_size(self.draw, label)[0] + 14
            if x + w > width - RIGHT:
                top, x = top + 14, LEFT
            self._segment((x, top + 6), (x + 20, top + 6), color, dashed)
            self.draw.text((x + 26, top), label, fill=BLACK, font=_font())
            x += w
        self.box = (LEFT, top + (22 if legend else 8), width - RIGHT, height - BOTTOM)  # x0, y0, x1, y1
        self.xlim, self.ylim = xlim, ylim

    def px(self, x, y):
        """Pixel (column, row) of the data point (x, y); y grows upwards."""
        x0, y0, x1, y1 = self.box
        (a, b), (c, d) = self.xlim, self.ylim
        return x0 + (x - a) / (b - a) * (x1 - x0), y1 - (y - c) / (d - c) * (y1 - y0)

    def _segment(self, p, q, color, dashed=False, width=2):
        if not dashed:
            self.draw.line([p, q], fill=color, width=width)
            return
        length = max(1.0, math.dist(p, q))
        for s in np.arange(0.0, length, 10.0):  # 6 px on, 4 px off
            e = min(s + 6.0, length)
            self.draw.line([(p[0] + (q[0] - p[0]) * s / length, p[1] + (q[1] - p[1]) * s / length),
                            (p[0] + (q[0] - p[0]) * e / length, p[1] + (q[1] - p[1]) * e / length)],
                           fill=color, width=width)

    def frame(self, xticks, yticks, xlabel, ylabel, grid=True):
        """Box, ticks (value, label) with labels, light grid lines and the axis labels."""
        x0, y0, x1, y1 = self.box
        for value, text in xticks:
            c = self.px(value, self.ylim[0])[0]
            if grid:
                self.draw.line([(c, y0), (c, y1)], fill=(235, 235, 235))
            self.draw.line([(c, y1), (c, y1 + 4)], fill=BLACK)
            self.draw.text((c, y1 + 6), text, fill=BLACK, font=_font(), anchor="ma")
        for value, text in yticks:
            r = self.px(self.xlim[0], value)[1]
            if grid:
                self.draw.line([(x0, r), (x1, r)], fill=(235, 235, 235))
            self.draw.line([(x0 - 4, r), (x0, r)], fill=BLACK)
            self.draw.text((x0 - 6, r), text, fill=BLACK, font=_font(), anchor="rm")
        self.draw.rectangle(self.box, outline=BLACK)
        self.draw.text(((x0 + x1) // 2, y1 + 22), xlabel, fill=BLACK, font=_font(), anchor="ma")
        w, h = _text_size(self.draw, ylabel)  # the y label, written sideways
        label = Image.new("RGB", (w + 2, h + 4), WHITE)
        ImageDraw.Draw(label).text((1, 0), ylabel, fill=BLACK, font=_font())
        self.image.paste(label.rotate(90, expand=True), (4, int((y0 + y1 - w) / 2)))

    def save(self, path):
        self.image.save(path)
        return path


def _value_ticks(lo, hi):
    return [(v, _label(v)) for v in _ticks(lo, hi)]


def line_chart_png(path, x, series, title, xlabel, ylabel, logx=False):
    """Lines, one per series, sharing the x values; point markers too when there are at most 40 points.

    Parameters
    ----------
    path : str or Path, ending in .png
    x : (n,) numbers, > 0 when ``logx``
    series : dict of {str: (n,) numbers}, label -> y values (finite), drawn in PALETTE order
    title, xlabel, ylabel : str
    logx : bool, log-scaled x axis; ticks at the x values when there are at most 12, else 1-2-5 steps
    """
    path = _out_path(path)
    x = _finite("x", x, 1)
    if not isinstance(series, dict) or not series:
        raise ValueError("series must be a non-empty dict {label: y values}")
    ys = {str(k): _finite(f"series[{k!r}]", v, 1) for k, v in series.items()}
    for label, y in ys.items():
        if y.shape != x.shape:
            raise ValueError(f"series[{label!r}] has {y.size} values but x has {x.size}")
    if logx and (x <= 0).any():
        raise ValueError(f"logx needs x > 0; got min {x.min()}")
    xs = np.log10(x) if logx else x
    all_y = np.concatenate(list(ys.values()))
    legend = [(label, PALETTE[i % len(PALETTE)], False) for i, label in enumerate(ys)]
    ax = _Axes(title, legend, _padded_range(xs.min(), xs.max()), _padded_range(all_y.min(), all_y.max()))
    if logx:
        decades = range(math.floor(xs.min()), math.ceil(xs.max()) + 1)
        values = [m * 10.0**k for k in decades for m in ((1, 2, 5) if len(decades) <= 4 else (1,))]
        values = np.unique(x) if np.unique(x).size <= 12 else values  # the x values, or 1-2-5 steps
        xticks = [(math.log10(v), _label(v)) for v in values if ax.xlim[0] <= math.log10(v) <= ax.xlim[1]]
    else:
        xticks = _value_ticks(*ax.xlim)
    ax.frame(xticks, _value_ticks(*ax.ylim), xlabel, ylabel)
    for i, y in enumerate(ys.values()):
        color = PALETTE[i % len(PALETTE)]
        points = [ax.px(a, b) for a, b in zip(xs, y)]
        if len(points) > 1:
            ax.draw.line(points, fill=color, width=2, joint="curve")
        for c, r in points if len(points) <= 40 else points[:1]:  # markers, unless they would crowd
            ax.draw.ellipse((c - 3, r - 3, c + 3, r + 3), fill=color)
    return ax.save(path)


def raster_png(path, spikes, title):
    """Spike raster: one row per neuron (neuron 0 at the top), time steps left to right.

    Parameters
    ----------
    path : str or Path
    spikes : (T, n) bool or 0/1 ndarray; pass ``out != 0`` for IF outputs of 0 or lambda
    title : str
    """
    path = _out_path(path)
    s = _finite("spikes", spikes, 2)
    if not np.isin(s, (0.0, 1.0)).all():
        raise ValueError("spikes must be bool or 0/1 values; for IF outputs pass `out != 0`")
    T, n = s.shape
    ax = _Axes(title, [], (0.0, float(T)), (0.0, float(n)))
    ax.frame([(v + 0.5, _label(v)) for v in _ticks(0, T - 1) if v == int(v)] if T > 1 else [(0.5, "0")],
             [(n - v - 0.5, _label(v)) for v in _ticks(0, n - 1) if v == int(v)] if n > 1 else [(0.5, "0")],
             "time step t", "neuron", grid=False)
    for t, i in zip(*np.nonzero(s)):  # a filled cell: columns [t, t+1), rows [n-1-i, n-i) in data units
        (c0, r0), (c1, r1) = ax.px(t, n - i), ax.px(t + 1, n - 1 - i)
        ax.draw.rectangle((c0 + (c1 - c0 > 3), r0 + (r1 - r0 > 3), max(c0, c1 - 1), max(r0, r1 - 1)),
                          fill=PALETTE[0])
    return ax.save(path)


def traces_png(path, traces, threshold, title):
    """Membrane potentials over time, one line per neuron, with the firing threshold dashed.

    Parameters
    ----------
    path : str or Path
    traces : (T, n) numbers, v of neuron i after step t in column i
    threshold : float, lambda, drawn as a dashed red line
    title : str
    """
    path = _out_path(path)
    v = _finite("traces", traces, 2)
    lam = float(_finite("threshold", [threshold], 1)[0])
    T, n = v.shape
    legend = [(f"neuron {i}", PALETTE[i % len(PALETTE)], False) for i in range(min(n, 8))]
    legend.append(("threshold", (214, 39, 40), True))
    lo, hi = min(v.min(), lam, 0.0), max(v.max(), lam)
    ax = _Axes(title, legend, _padded_range(1.0, float(max(T, 2))), _padded_range(lo, hi))
    ax.frame(_value_ticks(*ax.xlim), _value_ticks(*ax.ylim), "time step t", "membrane potential v")
    t = np.arange(1, T + 1)
    for i in range(n):
        points = [ax.px(a, b) for a, b in zip(t, v[:, i])]
        ax.draw.line(points if T > 1 else points * 2, fill=PALETTE[i % len(PALETTE)], width=2)
    ax._segment(ax.px(ax.xlim[0], lam), ax.px(ax.xlim[1], lam), (214, 39, 40), dashed=True)
    return ax.save(path)


def colormap(u):
    """(...,) values in [0, 1] -> (..., 3) uint8 viridis colours."""
    pos = np.clip(u, 0, 1) * (len(_COLORMAP) - 1)
    k = np.minimum(pos.astype(int), len(_COLORMAP) - 2)
    frac = (pos - k)[..., None]
    return np.round(_COLORMAP[k] * (1 - frac) + _COLORMAP[k + 1] * frac).astype(np.uint8)


def heatmap_png(path, matrix, row_labels, col_labels, title):
    """Matrix as coloured cells (viridis, min dark to max yellow), with a colour bar and its range.

    Parameters
    ----------
    path : str or Path
    matrix : (R, C) numbers; row 0 at the top, column 0 at the left
    row_labels, col_labels : R and C strings, or None for 0, 1, ...; long axes label every k-th
    title : str
    """
    path = _out_path(path)
    m = _finite("matrix", matrix, 2)
    R, C = m.shape
    rows = [str(s) for s in row_labels] if row_labels is not None else [str(i) for i in range(R)]
    cols = [str(s) for s in col_labels] if col_labels is not None else [str(j) for j in range(C)]
    if len(rows) != R or len(cols) != C:
        raise ValueError(f"need {R} row labels and {C} column labels; got {len(rows)} and {len(cols)}")
    cell = max(2, min(40, 480 // max(R, C)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = 12 + max(_text_size(probe, s)[0] for s in rows)
    x0, y0 = left, 30
    image = Image.new("RGB", (x0 + C * cell + 110, max(y0 + R * cell + 40, 200)), WHITE)
    draw = ImageDraw.Draw(image)
    draw.text((image.width // 2, 6), title, fill=BLACK, font=_font(), anchor="ma")
    lo, hi = m.min(), m.max()
    cells = colormap((m - lo) / (hi - lo) if hi > lo else np.zeros_like(m))  # (R, C, 3)
    image.paste(Image.fromarray(cells).resize((C * cell, R * cell), Image.NEAREST), (x0, y0))
    draw.rectangle((x0 - 1, y0 - 1, x0 + C * cell, y0 + R * cell), outline=BLACK)
    widest = 6 + max(_text_size(probe, t)[0] for t in cols)  # label every k-th row / column, no overlaps
    every_r, every_c = max(1, math.ceil(14 / cell)), max(1, math.ceil(widest / cell))
    for i in range(0, R, every_r):
        draw.text((x0 - 6, y0 + i * cell + cell // 2), rows[i], fill=BLACK, font=_font(), anchor="rm")
    for j in range(0, C, every_c):
        draw.text((x0 + j * cell + cell // 2, y0 + R * cell + 4), cols[j], fill=BLACK, font=_font(),
                  anchor="ma")
    bar_x, bar_h = x0 + C * cell + 20, max(R * cell, 120)  # colour bar: max at the top
    bar = colormap(np.linspace(1, 0, bar_h))[:, None, :].repeat(14, axis=1)  # (bar_h, 14, 3)
    image.paste(Image.fromarray(bar), (bar_x, y0))
    draw.rectangle((bar_x - 1, y0 - 1, bar_x + 14, y0 + bar_h), outline=BLACK)
    draw.text((bar_x + 20, y0), f"{hi:.3g}", fill=BLACK, font=_font())
    draw.text((bar_x + 20, y0 + bar_h - 10), f"{lo:.3g}", fill=BLACK, font=_font())
    image.save(path)
    return path


def image_png(path, image, title, scale=8):
    """An image enlarged ``scale`` times (nearest neighbour), under a title line.

    Parameters
    ----------
    path : str or Path
    image : (H, W) or (H, W, 3) uint8 (shown as is) or floats (scaled: min -> 0, max -> 255)
    title : str
    scale : int >= 1

    Notes
    -----
    The picture's top-left corner is at pixel (4, 22); the canvas is at least 160 pixels wide.
    """
    path = _out_path(path)
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or not 1 <= scale <= 64:
        raise ValueError(f"scale must be an integer in 1..64; got {scale!r}")
    a = np.asarray(image)
    if a.dtype != np.uint8:
        f = _finite("image", a, a.ndim if a.ndim in (2, 3) else 2)
        lo, hi = f.min(), f.max()
        a = np.round((f - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(f)).astype(np.uint8)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3) or a.size == 0:
        raise ValueError(f"image must be (H, W) or (H, W, 3); got shape {a.shape}")
    picture = Image.fromarray(a).convert("RGB")
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    canvas = Image.new("RGB", (max(picture.width + 8, 160), picture.height + 26), WHITE)
    draw = ImageDraw.Draw(canvas)
    draw.text((canvas.width // 2, 6), title, fill=BLACK, font=_font(), anchor="ma")
    canvas.paste(picture, (4, 22))
    canvas.save(path)
    return path
