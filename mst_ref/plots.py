"""Small PNG charts drawn with pillow alone: accuracy vs T, spike rasters, membrane traces, maps, images.

Used by the ``mst-ref`` commands and the tutorials, where a picture says more than a table. Every
function validates its numbers (``ValueError`` naming what was wrong), creates the parent folder if
needed, writes one PNG and returns its :class:`~pathlib.Path`.

What every picture has, so that it reads at 100% zoom without the code next to it:

- a title saying what is shown (the caller writes it: which quantity, site, block, head, images);
- labelled axes, with units where the quantity has one;
- for colours, a colour bar with 4-9 tick values and its own label;
- text in pillow's scalable built-in font at 13 px (no font files needed), so letters do not run
  together; the bitmap font is the fallback when pillow lacks FreeType;
- lines of one width whatever their slope: a segment colours the pixels whose centres lie within half
  the width of it (pillow's own wide lines are thinner when sloped).

Layout of the charts with axes (line chart, raster, traces): a title line, a legend row when there are
labelled series, the plot box with ticks and tick labels on the left and bottom, and the axis labels.
Colours cycle through :data:`PALETTE` (the "tab10" colours) in the order the series are given; heat
maps use viridis (:func:`colormap`).
"""

import functools
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["PALETTE", "colormap", "line_chart_png", "xy_chart_png", "raster_png", "traces_png", "heatmap_png", "image_png",
           "image_panels_png", "overlay_grid_png"]

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
WHITE, BLACK, GRID = (255, 255, 255), (0, 0, 0), (232, 232, 232)
WIDTH, HEIGHT = 720, 460  # size of the charts with axes, in pixels
LEFT, RIGHT, BOTTOM = 84, 24, 54  # margins around the plot box (top depends on the legend)
FONT_PX = 13
LINE = 2  # width of data lines, in pixels
# viridis at 0, 1/4, 1/2, 3/4, 1: heat maps interpolate linearly between these
_COLORMAP = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], float)


@functools.lru_cache(maxsize=None)
def _font():
    try:
        return ImageFont.load_default(size=FONT_PX)  # scalable (FreeType); pillow >= 10.1
    except (TypeError, ValueError, OSError, ImportError):
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
    raw = (hi - lo) / count if hi > lo else max(abs(lo), 1.0)
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


def _band(draw, p, q, color, width=LINE, caps=True):
    """The pixels whose centres lie within width/2 (+ 1/4 px) of the segment p-q: a line of one
    perpendicular width whatever its slope; ``caps``: round ends (joints of a polyline need them)."""
    (x0, y0), (x1, y1) = p, q
    r = width / 2 + 0.25
    cols = np.arange(math.floor(min(x0, x1) - r), math.ceil(max(x0, x1) + r) + 1)
    rows = np.arange(math.floor(min(y0, y1) - r), math.ceil(max(y0, y1) + r) + 1)
    c, w = np.meshgrid(cols, rows)  # (rows, cols) pixel centres
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    # position along the segment, u in [0, 1] between p and q; distance to the nearest point on it
    u = ((c - x0) * dx + (w - y0) * dy) / length2 if length2 > 0 else np.zeros(c.shape)
    inside = np.ones(c.shape, bool) if caps else (u >= 0) & (u <= 1)
    u = np.clip(u, 0, 1)
    near = np.hypot(c - (x0 + u * dx), w - (y0 + u * dy)) <= r
    keep = near & inside
    draw.point(list(zip(c[keep].tolist(), w[keep].tolist())), fill=color)


def _polyline(draw, points, color, width=LINE):
    """Connected segments; round ends make the joints seamless where the slope changes."""
    for p, q in zip(points, points[1:]):
        _band(draw, p, q, color, width)


def _dashed(draw, p, q, color, width=LINE):
    """A dashed segment: 6 px on, 4 px off."""
    length = max(1.0, math.dist(p, q))
    for s in np.arange(0.0, length, 10.0):
        e = min(s + 6.0, length)
        _band(draw, (p[0] + (q[0] - p[0]) * s / length, p[1] + (q[1] - p[1]) * s / length),
              (p[0] + (q[0] - p[0]) * e / length, p[1] + (q[1] - p[1]) * e / length), color, width, caps=False)


def _dashed_path(draw, points, color, width=LINE):
    """A dashed polyline whose 6-on, 4-off pattern runs on along the whole path (not per segment)."""
    pts = np.asarray(points, dtype=float)  # (n, 2)
    if len(pts) < 2:
        return
    cum = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])  # (n,) arc length

    def at(d):  # the point at arc length d
        return (float(np.interp(d, cum, pts[:, 0])), float(np.interp(d, cum, pts[:, 1])))

    for start in np.arange(0.0, cum[-1], 10.0):
        end = min(start + 6.0, cum[-1])
        inner = [tuple(p) for p, c in zip(pts, cum) if start < c < end]  # vertices inside the dash
        dash = [at(start), *inner, at(end)]
        for p, q in zip(dash, dash[1:]):
            _band(draw, p, q, color, width, caps=len(dash) > 2)


def _vertical_text(image, text, center_x, center_y):
    """Paste ``text`` rotated by 90 degrees (reading upwards), centred at (center_x, center_y)."""
    probe = ImageDraw.Draw(image)
    w, h = _text_size(probe, text)
    label = Image.new("RGB", (w + 4, h + 6), WHITE)
    ImageDraw.Draw(label).text((2, 1), text, fill=BLACK, font=_font())
    label = label.rotate(90, expand=True)
    image.paste(label, (int(center_x - label.width / 2), int(center_y - label.height / 2)))


def _colorbar(image, x, y, height, lo, hi, label):
    """A vertical viridis bar (max at the top) at (x, y), its ticks and tick values, and its label."""
    draw = ImageDraw.Draw(image)
    bar = colormap(np.linspace(1, 0, height))[:, None, :].repeat(16, axis=1)  # (height, 16, 3)
    image.paste(Image.fromarray(bar), (x, y))
    draw.rectangle((x - 1, y - 1, x + 16, y + height), outline=BLACK)
    span = hi - lo if hi > lo else 1.0
    widest = 0
    for v in _ticks(lo, hi, 8) if hi > lo else [lo]:
        row = y + (height - 1) * (1 - (v - lo) / span) if hi > lo else y + height / 2
        draw.line([(x + 16, row), (x + 21, row)], fill=BLACK)
        text = f"{round(v, 10):.3g}"
        draw.text((x + 24, row), text, fill=BLACK, font=_font(), anchor="lm")
        widest = max(widest, _text_size(draw, text)[0])
    if label:
        _vertical_text(image, label, x + 24 + widest + 14, y + height / 2)
    return x + 24 + widest + 28  # the first free column to the right


def _colorbar_width(label, lo, hi):
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widest = max(_text_size(probe, f"{round(v, 10):.3g}")[0] for v in (_ticks(lo, hi, 8) if hi > lo else [lo]))
    return 24 + widest + (28 if label else 8)


class _Axes:
    """A canvas with a plot box and the data -> pixel mapping of its two axes."""

    def __init__(self, title, legend, xlim, ylim, width=WIDTH, height=HEIGHT):
        self.image = Image.new("RGB", (width, height), WHITE)
        self.draw = ImageDraw.Draw(self.image)
        self.draw.text((width // 2, 6), title, fill=BLACK, font=_font(), anchor="ma")
        top, x = 28, LEFT  # the legend: a row (or more) of colour swatches + labels under the title
        for label, color, dashed in legend:
            w = 30 + _text_size(self.draw, label)[0] + 18
            if x + w > width - RIGHT:
                top, x = top + 18, LEFT
            (_dashed if dashed else _band)(self.draw, (x, top + 8), (x + 24, top + 8), color)
            self.draw.text((x + 30, top + 8), label, fill=BLACK, font=_font(), anchor="lm")
            x += w
        self.box = (LEFT, top + (26 if legend else 8), width - RIGHT, height - BOTTOM)  # x0, y0, x1, y1
        self.xlim, self.ylim = xlim, ylim

    def px(self, x, y):
        """Pixel (column, row) of the data point (x, y); y grows upwards."""
        x0, y0, x1, y1 = self.box
        (a, b), (c, d) = self.xlim, self.ylim
        return x0 + (x - a) / (b - a) * (x1 - x0), y1 - (y - c) / (d - c) * (y1 - y0)

    def frame(self, xticks, yticks, xlabel, ylabel, grid=True):
        """Box, ticks (value, label) with labels, light grid lines and the axis labels."""
        x0, y0, x1, y1 = self.box
        for value, text in xticks:
            c = self.px(value, self.ylim[0])[0]
            if grid:
                self.draw.line([(c, y0), (c, y1)], fill=GRID)
            self.draw.line([(c, y1), (c, y1 + 5)], fill=BLACK)
            self.draw.text((c, y1 + 7), text, fill=BLACK, font=_font(), anchor="ma")
        widest = 0
        for value, text in yticks:
            r = self.px(self.xlim[0], value)[1]
            if grid:
                self.draw.line([(x0, r), (x1, r)], fill=GRID)
            self.draw.line([(x0 - 5, r), (x0, r)], fill=BLACK)
            self.draw.text((x0 - 8, r), text, fill=BLACK, font=_font(), anchor="rm")
            widest = max(widest, _text_size(self.draw, text)[0])
        self.draw.rectangle(self.box, outline=BLACK)
        self.draw.text(((x0 + x1) // 2, y1 + 28), xlabel, fill=BLACK, font=_font(), anchor="ma")
        _vertical_text(self.image, ylabel, max(12, x0 - 8 - widest - 14), (y0 + y1) / 2)

    def save(self, path):
        self.image.save(path)
        return path


def _value_ticks(lo, hi):
    return [(v, _label(v)) for v in _ticks(lo, hi)]


def line_chart_png(path, x, series, title, xlabel, ylabel, logx=False, dashed=(), ylim=None):
    """Lines, one per series, sharing the x values; point markers too when there are at most 40 points.

    Parameters
    ----------
    path : str or Path, ending in .png
    x : (n,) numbers, > 0 when ``logx``
    series : dict of {str: (n,) numbers}, label -> y values (finite), coloured in PALETTE order
    title, xlabel, ylabel : str
    logx : bool, log-scaled x axis; ticks at the x values when there are at most 12, else 1-2-5 steps
    dashed : collection of str, labels of series drawn dashed (references, bounds); they are drawn
        after the solid ones, so a bound stays visible where a curve lies on it
    ylim : (lo, hi) or None, the y range (default: the data's, padded by 5%)
    """
    path = _out_path(path)
    x = _finite("x", x, 1)
    if not isinstance(series, dict) or not series:
        raise ValueError("series must be a non-empty dict {label: y values}")
    ys = {str(k): _finite(f"series[{k!r}]", v, 1) for k, v in series.items()}
    for label, y in ys.items():
        if y.shape != x.shape:
            raise ValueError(f"series[{label!r}] has {y.size} values but x has {x.size}")
    dashed = {str(d) for d in dashed}
    if dashed - set(ys):
        raise ValueError(f"dashed names series that do not exist: {sorted(dashed - set(ys))}")
    if logx and (x <= 0).any():
        raise ValueError(f"logx needs x > 0; got min {x.min()}")
    xs = np.log10(x) if logx else x
    all_y = np.concatenate(list(ys.values()))
    legend = [(label, PALETTE[i % len(PALETTE)], label in dashed) for i, label in enumerate(ys)]
    yl = _padded_range(all_y.min(), all_y.max()) if ylim is None else tuple(float(v) for v in ylim)
    ax = _Axes(title, legend, _padded_range(xs.min(), xs.max()), yl)
    if logx:
        decades = range(math.floor(xs.min()), math.ceil(xs.max()) + 1)
        values = [m * 10.0**k for k in decades for m in ((1, 2, 5) if len(decades) <= 4 else (1,))]
        values = np.unique(x) if np.unique(x).size <= 12 else values  # the x values, or 1-2-5 steps
        xticks = [(math.log10(v), _label(v)) for v in values if ax.xlim[0] <= math.log10(v) <= ax.xlim[1]]
    else:
        xticks = _value_ticks(*ax.xlim)
    ax.frame(xticks, _value_ticks(*ax.ylim), xlabel, ylabel)
    order = [i for i, k in enumerate(ys) if k not in dashed] + [i for i, k in enumerate(ys) if k in dashed]
    labels, values = list(ys), list(ys.values())
    for i in order:
        color = PALETTE[i % len(PALETTE)]
        points = [ax.px(a, b) for a, b in zip(xs, values[i])]
        if labels[i] in dashed:
            _dashed_path(ax.draw, points, color)
            continue
        _polyline(ax.draw, points, color)
        for c, r in points if len(points) <= 40 else points[:1]:  # markers, unless they would crowd
            ax.draw.ellipse((c - 3, r - 3, c + 3, r + 3), fill=color)
    return ax.save(path)



def xy_chart_png(path, series, title, xlabel, ylabel, logx=False, point_labels=None):
    """Lines, one per series, each with its own x values (e.g. accuracy against energy per neuron).

    Parameters
    ----------
    path : str or Path, ending in .png
    series : dict of {str: ((n,) numbers, (n,) numbers)}, label -> (x, y), coloured in PALETTE order
    title, xlabel, ylabel : str
    logx : bool, log-scaled x axis (x > 0), ticks at 1-2-5 steps
    point_labels : dict of {str: list of str} or None, a short text beside each point of a series
        (e.g. its T)
    """
    path = _out_path(path)
    if not isinstance(series, dict) or not series:
        raise ValueError("series must be a non-empty dict {label: (x values, y values)}")
    xy = {str(k): (_finite(f"series[{k!r}] x", v[0], 1), _finite(f"series[{k!r}] y", v[1], 1))
          for k, v in series.items()}
    for label, (x, y) in xy.items():
        if x.shape != y.shape:
            raise ValueError(f"series[{label!r}] has {x.size} x values but {y.size} y values")
        if logx and (x <= 0).any():
            raise ValueError(f"logx needs x > 0; series[{label!r}] has min {x.min()}")
    xy = {k: (np.log10(x) if logx else x, y) for k, (x, y) in xy.items()}
    all_x = np.concatenate([x for x, _ in xy.values()])
    all_y = np.concatenate([y for _, y in xy.values()])
    legend = [(label, PALETTE[i % len(PALETTE)], False) for i, label in enumerate(xy)]
    ax = _Axes(title, legend, _padded_range(all_x.min(), all_x.max()), _padded_range(all_y.min(), all_y.max()))
    if logx:
        decades = range(math.floor(ax.xlim[0]), math.ceil(ax.xlim[1]) + 1)
        values = [m * 10.0**k for k in decades for m in (1, 2, 5)]
        xticks = [(math.log10(v), _label(v)) for v in values if ax.xlim[0] <= math.log10(v) <= ax.xlim[1]]
    else:
        xticks = _value_ticks(*ax.xlim)
    ax.frame(xticks, _value_ticks(*ax.ylim), xlabel, ylabel)
    for i, (label, (x, y)) in enumerate(xy.items()):
        color = PALETTE[i % len(PALETTE)]
        points = [ax.px(a, b) for a, b in zip(x, y)]
        _polyline(ax.draw, points, color)
        texts = (point_labels or {}).get(label, [])
        for j, (c, r) in enumerate(points):
            ax.draw.ellipse((c - 3, r - 3, c + 3, r + 3), fill=color)
            if j < len(texts):  # above the point, or below it near the top of the box
                above = r - 4 > ax.box[1] + FONT_PX
                ax.draw.text((c + 5, r - 4 if above else r + 4), str(texts[j]), fill=color, font=_font(),
                             anchor="ld" if above else "la")
    return ax.save(path)

def raster_png(path, spikes, title, xlabel="time step t", ylabel="neuron"):
    """Spike raster: one row per neuron (neuron 0 at the top), time steps left to right.

    Parameters
    ----------
    path : str or Path
    spikes : (T, n) bool or 0/1 ndarray; pass ``out != 0`` for IF outputs of 0 or lambda
    title, xlabel, ylabel : str
    """
    path = _out_path(path)
    s = _finite("spikes", spikes, 2)
    if not np.isin(s, (0.0, 1.0)).all():
        raise ValueError("spikes must be bool or 0/1 values; for IF outputs pass `out != 0`")
    T, n = s.shape
    ax = _Axes(title, [], (0.0, float(T)), (0.0, float(n)))
    ax.frame([(v + 0.5, _label(v)) for v in _ticks(0, T - 1) if v == int(v)] if T > 1 else [(0.5, "0")],
             [(n - v - 0.5, _label(v)) for v in _ticks(0, n - 1) if v == int(v)] if n > 1 else [(0.5, "0")],
             xlabel, ylabel, grid=False)
    for t, i in zip(*np.nonzero(s)):  # a filled cell: columns [t, t+1), rows [n-1-i, n-i) in data units
        (c0, r0), (c1, r1) = ax.px(t, n - i), ax.px(t + 1, n - 1 - i)
        ax.draw.rectangle((c0 + (c1 - c0 > 3), r0 + (r1 - r0 > 3), max(c0, c1 - 1), max(r0, r1 - 1)),
                          fill=PALETTE[0])
    return ax.save(path)


def traces_png(path, traces, threshold, title, labels=None, xlabel="time step t",
               ylabel="membrane potential v"):
    """Membrane potentials over time, one line per neuron, with the firing threshold dashed.

    Parameters
    ----------
    path : str or Path
    traces : (T, n) numbers, v of neuron i at step t (1-based on the x axis) in column i
    threshold : float, lambda, drawn as a dashed red line
    title, xlabel, ylabel : str
    labels : n strings for the legend, or None for "neuron 0", "neuron 1", ...
    """
    path = _out_path(path)
    v = _finite("traces", traces, 2)
    lam = float(_finite("threshold", [threshold], 1)[0])
    T, n = v.shape
    names = [f"neuron {i}" for i in range(n)] if labels is None else [str(s) for s in labels]
    if len(names) != n:
        raise ValueError(f"need {n} labels, one per trace; got {len(names)}")
    legend = [(names[i], PALETTE[i % len(PALETTE)], False) for i in range(min(n, 8))]
    legend.append((f"threshold lambda = {lam:.3g}", (214, 39, 40), True))
    lo, hi = min(v.min(), lam, 0.0), max(v.max(), lam)
    ax = _Axes(title, legend, _padded_range(1.0, float(max(T, 2))), _padded_range(lo, hi))
    ax.frame(_value_ticks(*ax.xlim), _value_ticks(*ax.ylim), xlabel, ylabel)
    t = np.arange(1, T + 1)
    for i in range(n):
        points = [ax.px(a, b) for a, b in zip(t, v[:, i])]
        _polyline(ax.draw, points if T > 1 else points * 2, PALETTE[i % len(PALETTE)])
    _dashed(ax.draw, ax.px(ax.xlim[0], lam), ax.px(ax.xlim[1], lam), (214, 39, 40))
    return ax.save(path)


def colormap(u):
    """(...,) values in [0, 1] -> (..., 3) uint8 viridis colours."""
    pos = np.clip(u, 0, 1) * (len(_COLORMAP) - 1)
    k = np.minimum(pos.astype(int), len(_COLORMAP) - 2)
    frac = (pos - k)[..., None]
    return np.round(_COLORMAP[k] * (1 - frac) + _COLORMAP[k + 1] * frac).astype(np.uint8)


def heatmap_png(path, matrix, row_labels, col_labels, title, xlabel="column", ylabel="row",
                colorbar_label="value"):
    """Matrix as coloured cells (viridis, min dark to max yellow), every row and column labelled, with a
    colour bar carrying tick values.

    Parameters
    ----------
    path : str or Path
    matrix : (R, C) numbers; row 0 at the top, column 0 at the left
    row_labels, col_labels : R and C strings, or None for 0, 1, ...
    title, xlabel, ylabel, colorbar_label : str

    Notes
    -----
    Cells are at least as tall as a line of text and as wide as the widest column label, so that
    every row and column keeps its label; the cells' top-left corner is at pixel (x0, 34).
    """
    path = _out_path(path)
    m = _finite("matrix", matrix, 2)
    R, C = m.shape
    rows = [str(s) for s in row_labels] if row_labels is not None else [str(i) for i in range(R)]
    cols = [str(s) for s in col_labels] if col_labels is not None else [str(j) for j in range(C)]
    if len(rows) != R or len(cols) != C:
        raise ValueError(f"need {R} row labels and {C} column labels; got {len(rows)} and {len(cols)}")
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_h = _text_size(probe, "Ag")[1]
    cell_h = max(text_h + 4, min(40, 480 // max(R, 1)))
    cell_w = max(6 + max(_text_size(probe, t)[0] for t in cols), min(40, 480 // max(C, 1)))
    lo, hi = m.min(), m.max()
    x0, y0 = 34 + 12 + max(_text_size(probe, s)[0] for s in rows), 34
    grid_w, grid_h = C * cell_w, R * cell_h
    bar_h = max(grid_h, 140)
    width = max(x0 + grid_w + 24 + _colorbar_width(colorbar_label, lo, hi),
                _text_size(probe, title)[0] + 20)
    image = Image.new("RGB", (width, y0 + bar_h + 50), WHITE)
    draw = ImageDraw.Draw(image)
    draw.text((image.width // 2, 8), title, fill=BLACK, font=_font(), anchor="ma")
    cells = colormap((m - lo) / (hi - lo) if hi > lo else np.zeros_like(m))  # (R, C, 3)
    image.paste(Image.fromarray(cells).resize((grid_w, grid_h), Image.NEAREST), (x0, y0))
    draw.rectangle((x0 - 1, y0 - 1, x0 + grid_w, y0 + grid_h), outline=BLACK)
    for i in range(R):
        draw.text((x0 - 6, y0 + i * cell_h + cell_h / 2), rows[i], fill=BLACK, font=_font(), anchor="rm")
    for j in range(C):
        draw.text((x0 + j * cell_w + cell_w / 2, y0 + grid_h + 4), cols[j], fill=BLACK, font=_font(),
                  anchor="ma")
    draw.text((x0 + grid_w / 2, y0 + grid_h + 8 + text_h + 4), xlabel, fill=BLACK, font=_font(), anchor="ma")
    _vertical_text(image, ylabel, 14, y0 + grid_h / 2)
    _colorbar(image, x0 + grid_w + 24, y0, bar_h, lo, hi, colorbar_label)
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
    The picture's top-left corner is at pixel (4, 22); the canvas is at least 160 pixels wide and as
    wide as the title.
    """
    path = _out_path(path)
    _check_scale(scale)
    picture = Image.fromarray(_as_uint8(image)).convert("RGB")
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    probe = ImageDraw.Draw(picture)
    canvas = Image.new("RGB", (max(picture.width + 8, 160, _text_size(probe, title)[0] + 12), picture.height + 26),
                       WHITE)
    draw = ImageDraw.Draw(canvas)
    draw.text((canvas.width // 2, 4), title, fill=BLACK, font=_font(), anchor="ma")
    canvas.paste(picture, (4, 22))
    canvas.save(path)
    return path


def _check_scale(scale):
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or not 1 <= scale <= 64:
        raise ValueError(f"scale must be an integer in 1..64; got {scale!r}")


def _as_uint8(image):
    a = np.asarray(image)
    if a.dtype != np.uint8:
        f = _finite("image", a, a.ndim if a.ndim in (2, 3) else 2)
        lo, hi = f.min(), f.max()
        a = np.round((f - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(f)).astype(np.uint8)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3) or a.size == 0:
        raise ValueError(f"image must be (H, W) or (H, W, 3); got shape {a.shape}")
    return a


def image_panels_png(path, panels, titles, title, colorbar, scale=6):
    """An image and maps side by side: uint8 panels are shown as they are (the input image), float
    panels in viridis on one shared scale, explained by a colour bar with ticks.

    Parameters
    ----------
    path : str or Path
    panels : list of (H, W) arrays, all the same size; uint8 or floats
    titles : one short caption per panel
    title : str, what the whole picture shows
    colorbar : (lo, hi, label), the range of the float panels' colours and what they measure
    scale : int, enlargement (nearest neighbour)
    """
    path = _out_path(path)
    _check_scale(scale)
    if not panels or len(titles) != len(panels):
        raise ValueError(f"need one title per panel; got {len(panels)} panels and {len(titles)} titles")
    lo, hi, label = colorbar
    lo, hi = float(lo), float(hi)
    arrays = []
    for k, p in enumerate(panels):
        a = np.asarray(p)
        if a.ndim != 2 or a.shape != np.asarray(panels[0]).shape:
            raise ValueError(f"panels must be (H, W) arrays of one size; panel {k} has shape {a.shape}")
        if a.dtype == np.uint8:
            arrays.append(np.repeat(a[..., None], 3, axis=2))
        else:
            f = _finite(f"panel {k}", a, 2)
            arrays.append(colormap((f - lo) / (hi - lo) if hi > lo else np.zeros_like(f)))
    h, w = arrays[0].shape[:2]
    pw, ph, gap = w * scale, h * scale, 16
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pw_text = max(_text_size(probe, t)[0] for t in titles) + 8
    slot = max(pw, pw_text)
    grid_w = len(arrays) * slot + (len(arrays) - 1) * gap
    width = max(8 + grid_w + 24 + _colorbar_width(label, lo, hi), _text_size(probe, title)[0] + 20)
    canvas = Image.new("RGB", (width, ph + 60), WHITE)
    draw = ImageDraw.Draw(canvas)
    draw.text((canvas.width // 2, 6), title, fill=BLACK, font=_font(), anchor="ma")
    for k, (a, t) in enumerate(zip(arrays, titles)):
        left = 8 + k * (slot + gap)
        draw.text((left + slot / 2, 28), t, fill=BLACK, font=_font(), anchor="ma")
        canvas.paste(Image.fromarray(a).resize((pw, ph), Image.NEAREST), (int(left + (slot - pw) / 2), 48))
    _colorbar(canvas, 8 + grid_w + 24, 48, ph, lo, hi, label)
    canvas.save(path)
    return path


def overlay_grid_png(path, images, heats, row_labels, col_titles, title, colorbar, scale=6, alpha=0.6):
    """A grid of maps overlaid on their images: one row per image, one column per condition.

    Parameters
    ----------
    path : str or Path
    images : list of (H, W) uint8 arrays, one per row (shown in grey in the first column and under
        every map of the row)
    heats : list of lists of (h, w) float arrays, ``heats[row][col]``; each is enlarged to (H, W)
        (nearest neighbour; H and W must be multiples of h and w) and drawn in viridis on the shared
        scale of ``colorbar``, mixed with the image: ``alpha * colour + (1 - alpha) * grey``
    row_labels : one short label per row (drawn above its first panel)
    col_titles : one title per map column
    title : str, what the whole picture shows
    colorbar : (lo, hi, label)
    scale : int, enlargement of the (H, W) panels
    alpha : float in (0, 1], weight of the map's colour
    """
    path = _out_path(path)
    _check_scale(scale)
    if not images or len(heats) != len(images) or len(row_labels) != len(images):
        raise ValueError("need one list of maps and one label per image")
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1]; got {alpha}")
    lo, hi, label = float(colorbar[0]), float(colorbar[1]), colorbar[2]
    rows = []
    for r, (img, maps) in enumerate(zip(images, heats)):
        img = np.asarray(img)
        if img.dtype != np.uint8 or img.ndim != 2:
            raise ValueError(f"images[{r}] must be a (H, W) uint8 array; got {img.dtype} {img.shape}")
        if len(maps) != len(col_titles):
            raise ValueError(f"row {r} has {len(maps)} maps for {len(col_titles)} column titles")
        grey = np.repeat(img[..., None], 3, axis=2).astype(np.float64)  # (H, W, 3)
        row = [grey.astype(np.uint8)]
        for c, m in enumerate(maps):
            f = _finite(f"heats[{r}][{c}]", m, 2)
            if img.shape[0] % f.shape[0] or img.shape[1] % f.shape[1]:
                raise ValueError(f"map {f.shape} does not tile image {img.shape}")
            big = np.kron(f, np.ones((img.shape[0] // f.shape[0], img.shape[1] // f.shape[1])))  # (H, W)
            colour = colormap((big - lo) / (hi - lo) if hi > lo else np.zeros_like(big)).astype(np.float64)
            row.append(np.clip(alpha * colour + (1 - alpha) * grey, 0, 255).astype(np.uint8))
        rows.append(row)
    h, w = rows[0][0].shape[:2]
    pw, ph, gap = w * scale, h * scale, 12
    titles = ["image"] + list(col_titles)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    slot = max(pw, max(_text_size(probe, t)[0] for t in titles + list(row_labels)) + 8)
    grid_w = len(titles) * slot + (len(titles) - 1) * gap
    row_h = ph + 22
    width = max(8 + grid_w + 24 + _colorbar_width(label, lo, hi), _text_size(probe, title)[0] + 20)
    canvas = Image.new("RGB", (width, 48 + len(rows) * (row_h + gap)), WHITE)
    draw = ImageDraw.Draw(canvas)
    draw.text((canvas.width // 2, 6), title, fill=BLACK, font=_font(), anchor="ma")
    for k, t in enumerate(titles):
        draw.text((8 + k * (slot + gap) + slot / 2, 28), t, fill=BLACK, font=_font(), anchor="ma")
    for r, row in enumerate(rows):
        top = 48 + r * (row_h + gap)
        draw.text((8, top), row_labels[r], fill=BLACK, font=_font())
        for k, a in enumerate(row):
            left = 8 + k * (slot + gap)
            canvas.paste(Image.fromarray(a).resize((pw, ph), Image.NEAREST), (int(left + (slot - pw) / 2), top + 18))
    _colorbar(canvas, 8 + grid_w + 24, 66, min(ph * len(rows), 360), lo, hi, label)
    canvas.save(path)
    return path
