"""Pictures of traced gates: a gate-by-time heatmap and Karpathy's saturation scatter.

Both are drawn with matplotlib (the ``gates`` extra: ``pip install
"keras-lstm-variants[gates]"``) on a figure of a fixed size in pixels, made for the card
TensorBoard shows, and returned as a uint8 RGB array for ``tf.summary.image`` (which stores it
as a PNG). The ``*_figure`` functions return the matplotlib ``Figure`` itself. Without
matplotlib, :func:`heatmap_image` and :func:`saturation_image` fall back to plain NumPy
rasters (:func:`heatmap`, :func:`saturation_plot`: no labels) and say so once in the log.

Sizes (pixels, width x height): heatmap :data:`HEATMAP_WIDTH` x (:data:`HEATMAP_MARGIN` +
:data:`HEATMAP_PANEL` per gate), e.g. 360 x 388 for the four LSTM gates; scatter
:data:`SCATTER_SIZE` x :data:`SCATTER_SIZE`.
"""

import logging

import numpy as np

logger = logging.getLogger("keras_lstm_variants")

#: Figure sizes in pixels (at :data:`DPI`).
DPI = 100
HEATMAP_WIDTH = 360
HEATMAP_PANEL = 84
HEATMAP_MARGIN = 52
SCATTER_SIZE = 300
#: Font sizes (points at :data:`DPI`): TensorBoard scales a card's image to the card (about
#: 330 px wide in the Images tab, 200-300 px in Time Series), so text is drawn large.
TITLE, LABEL, TICK = 10, 9, 8
#: Colour of masked steps (heatmap) and of the dots (scatter).
MASKED_COLOR = (176, 176, 176)
DOT_COLOR = (31, 119, 180)

_warned = []


def matplotlib_available():
    """True when matplotlib imports; else logs once that the pictures fall back to NumPy."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if not _warned:
            _warned.append(True)
            logger.warning(
                "matplotlib is not installed: GateStatistics writes unlabelled NumPy images "
                "(no gate names, axes or colour bars). For labelled images: "
                'pip install "keras-lstm-variants[gates]" (or pip install matplotlib).'
            )
        return False
    return True


def heatmap_size(gates):
    """``(height, width)`` in pixels of the heatmap of ``gates`` gates."""
    return HEATMAP_MARGIN + HEATMAP_PANEL * gates, HEATMAP_WIDTH


def _limits(values, bounds):
    """Colour limits: the gate's range, or the observed range where a bound is open."""
    low, high = bounds
    finite = values[np.isfinite(values)]
    if low is None:
        low = float(finite.min()) if finite.size else 0.0
    if high is None:
        high = float(finite.max()) if finite.size else 1.0
    if high <= low:
        high = low + 1.0
    return low, high


def _range_text(bounds):
    low, high = bounds
    if low is None and high is None:
        return "unbounded: colours span the observed values"
    if low is None or high is None:
        return (
            f"range ({'-inf' if low is None else f'{low:g}'}, "
            f"{'inf' if high is None else f'{high:g}'}): colours span the observed values"
        )
    return f"range {low:g} to {high:g}"


# ------------------------------------------------------------------------ matplotlib
def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _axes(figure, left, top, width, height):
    """Axes at a fixed place given in pixels from the figure's top left corner.

    A fixed layout (rather than matplotlib's constrained layout, which took most of the
    drawing time) keeps every picture the same, and fast.
    """
    total_width, total_height = figure.bbox.width, figure.bbox.height
    return figure.add_axes(
        (
            left / total_width,
            1 - (top + height) / total_height,
            width / total_width,
            height / total_height,
        )
    )


def render(figure):
    """The figure drawn by Agg, as a uint8 RGB array ``(height, width, 3)``."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def heatmap_figure(trace, ranges, sequence=0, title=None, figure=None):
    """One panel per gate of one probe sequence: units (y) by time step (x).

    Args:
        trace: ``{gate: (batch, time, units)}`` of the gates to draw, in panel order (top to
            bottom); NaN marks masked steps.
        ranges: ``{gate: (low, high)}``, each bound a number or ``None`` (open: the colour
            bar then spans the observed values).
        sequence: which sequence of the batch.
        title: the figure's title (e.g. the layer's path).
        figure: a figure this function returned before, for the same gates and shapes: its
            panels, axes and colour bars are reused and only what the values change is drawn
            anew (building a figure takes about as long as rendering it). Otherwise a new one.
    """
    gates = list(trace)
    panels = [np.asarray(trace[gate][sequence], np.float64) for gate in gates]  # (time, units)
    key = (tuple(gates), tuple(panel.shape for panel in panels), title)
    parts = getattr(figure, "_klv_heatmap", None)
    if parts is None or parts["key"] != key:
        figure, parts = _heatmap_frame(gates, panels[0].shape, title)
        parts["key"] = key
        figure._klv_heatmap = parts
    masked = np.isnan(panels[0]).all(axis=1)
    for gate, values, image, bar, spans in zip(
        gates, panels, parts["images"], parts["bars"], parts["spans"], strict=True
    ):
        low, high = _limits(values, ranges[gate])
        image.set_data(np.ma.masked_invalid(values.T))
        image.set_clim(low, high)
        bar.set_ticks([low, high])
        bar.ax.set_ylabel("observed" if None in ranges[gate] else "", fontsize=TICK, labelpad=1)
        while spans:
            spans.pop().remove()
        masked = np.isnan(values).all(axis=1)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], masked.astype(int), [0]])))
        for start, stop in zip(edges[::2], edges[1::2], strict=True):  # runs of masked steps
            spans.append(
                image.axes.axvspan(
                    start - 0.5,
                    stop - 0.5,
                    facecolor="none",
                    edgecolor="white",
                    hatch="///",
                    linewidth=0,  # hatched: masked, even in grey print
                )
            )
    heading = f"{title}: " if title else ""
    heading += f"sequence {sequence}"
    if masked.any():
        heading += f", {int(masked.sum())} masked (hatched)"
    figure.suptitle(heading, fontsize=LABEL)
    return figure


def _heatmap_frame(gates, shape, title):
    """The parts of a heatmap that its values do not change: panels, labels, colour bars."""
    import matplotlib
    from matplotlib.ticker import MaxNLocator

    time, units = shape
    height, width = heatmap_size(len(gates))
    figure = _figure(width, height)
    # Each panel: its title (18 px), the image (units by time), a colour bar on the right.
    left, right, top = 40, 50, 22
    colormap = matplotlib.colormaps["viridis"].with_extremes(bad=np.array(MASKED_COLOR) / 255)
    parts = {"images": [], "bars": [], "spans": []}
    for k, gate in enumerate(gates):
        ax = _axes(
            figure, left, top + k * HEATMAP_PANEL + 18, width - left - right, HEATMAP_PANEL - 24
        )
        image = ax.imshow(
            np.zeros((units, time)),
            aspect="auto",
            interpolation="antialiased",
            origin="lower",
            cmap=colormap,
            extent=(-0.5, time - 0.5, -0.5, units - 0.5),
        )
        ax.set_title(gate, loc="left", fontsize=TITLE, fontweight="bold", pad=2)
        ax.set_ylabel("unit", fontsize=LABEL, labelpad=1)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=2, integer=True))
        ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
        ax.tick_params(labelsize=TICK, length=2, pad=1, labelbottom=k == len(gates) - 1)
        position = ax.get_position()
        bar_axes = figure.add_axes(
            (position.x1 + 6 / width, position.y0, 9 / width, position.height)
        )
        bar = figure.colorbar(image, cax=bar_axes)
        bar.ax.tick_params(labelsize=TICK, length=2, pad=1)
        parts["images"].append(image)
        parts["bars"].append(bar)
        parts["spans"].append([])
    ax.set_xlabel("time step", fontsize=LABEL, labelpad=1)
    return figure, parts


def saturation_figure(left, right, gate, thresholds, title=None, corners=None, figure=None):
    """Karpathy, Johnson & Fei-Fei 2015 (fig. 4): one dot per unit at its saturated fractions.

    Args:
        left, right: ``(units,)`` fractions of steps each unit spends below the lower
            threshold and above the upper one (NaN: left out).
        gate: the gate's name.
        thresholds: ``(low, high)`` saturation thresholds, for the axis titles.
        title: prefix of the title (e.g. the layer's path).
        corners: optional ``(bottom_right, top_left)`` short meanings to print in the corners.
        figure: a figure this function returned before for the same ``gate``, ``thresholds``
            and ``corners``, to reuse (see :func:`heatmap_figure`); otherwise a new one.
    """
    left, right = np.asarray(left, np.float64), np.asarray(right, np.float64)
    keep = ~(np.isnan(left) | np.isnan(right))
    points = np.round(np.stack([left[keep], right[keep]], axis=1), 2).reshape(-1, 2)
    key = (gate, tuple(thresholds), tuple(corners or ()))
    parts = getattr(figure, "_klv_scatter", None)
    if parts is None or parts["key"] != key:
        figure, parts = _saturation_frame(gate, thresholds, corners)
        parts["key"] = key
        figure._klv_scatter = parts
    where, count = np.unique(points, axis=0, return_counts=True)
    parts["dots"].set_offsets(where.reshape(-1, 2))
    parts["dots"].set_sizes(24 * np.sqrt(count))
    while parts["counts"]:
        parts["counts"].pop().remove()
    ax = parts["dots"].axes
    for (x, y), n in zip(where, count, strict=True):
        if n > 1:
            parts["counts"].append(
                ax.annotate(
                    f"{n}",
                    (x, y),
                    xytext=(5, 3),
                    textcoords="offset points",
                    fontsize=TICK,
                    color="0.2",
                    annotation_clip=False,
                    zorder=4,
                )
            )
    heading = f"{title}: " if title else ""
    ax.set_title(f"{heading}{gate} (n = {int(keep.sum())} units)", fontsize=TITLE, pad=3)
    return figure


def _saturation_frame(gate, thresholds, corners):
    """The parts of a scatter that its values do not change: axes, titles, diagonal."""
    figure = _figure(SCATTER_SIZE, SCATTER_SIZE)
    side = SCATTER_SIZE - 60
    ax = _axes(figure, 48, 22, side, side)
    ax.plot([0, 1], [1, 0], color="0.6", linestyle="--", linewidth=1, zorder=1)
    dots = ax.scatter(
        np.zeros(0),
        np.zeros(0),
        color=np.array(DOT_COLOR) / 255,
        alpha=0.5,
        edgecolors="none",
        clip_on=False,
        zorder=3,
    )
    if corners:  # what the two saturated corners mean, over the diagonal, under the dots
        box = {"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1}
        for (x, y, ha, va), text in zip(
            [(0.98, 0.02, "right", "bottom"), (0.02, 0.98, "left", "top")], corners, strict=True
        ):
            ax.text(
                x,
                y,
                text,
                ha=ha,
                va=va,
                fontsize=TICK,
                color="0.35",
                transform=ax.transAxes,
                bbox=box,
                zorder=2,
            )
    margin = 0.06  # dots on 0 and 1 stay whole, off the frame
    ax.set_xlim(-margin, 1 + margin)
    ax.set_ylim(-margin, 1 + margin)
    ax.set_aspect("equal")
    ax.set_xticks([0, 0.5, 1], ["0", "0.5", "1"])
    ax.set_yticks([0, 0.5, 1], ["0", "0.5", "1"])
    ax.tick_params(labelsize=TICK, length=2, pad=1)
    ax.grid(color="0.93", linewidth=0.6, zorder=0)
    ax.set_xlabel(f"fraction of steps < {thresholds[0]:g}", fontsize=LABEL, labelpad=1)
    ax.set_ylabel(f"fraction of steps > {thresholds[1]:g}", fontsize=LABEL, labelpad=1)
    return figure, {"dots": dots, "counts": []}


# ----------------------------------------------------------------- NumPy fallback
#: Viridis at 9 evenly spaced points (matplotlib's table), interpolated to 256 colours.
_VIRIDIS = np.array(
    [
        [68, 1, 84],
        [71, 44, 122],
        [59, 81, 139],
        [44, 113, 142],
        [33, 144, 141],
        [39, 173, 129],
        [92, 200, 99],
        [170, 220, 50],
        [253, 231, 37],
    ],
    dtype=np.float64,
)
COLORMAP = np.stack(
    [np.interp(np.linspace(0, 8, 256), np.arange(9), _VIRIDIS[:, k]) for k in range(3)], axis=1
).astype(np.uint8)


def colorize(values, low, high):
    """``values`` as uint8 RGB: :data:`COLORMAP` from ``low`` to ``high``, NaN grey."""
    scaled = np.clip((np.nan_to_num(values, nan=low) - low) / (high - low), 0.0, 1.0)
    image = COLORMAP[np.round(scaled * 255).astype(int)]
    image[np.isnan(values)] = MASKED_COLOR
    return image


def upscale(image, rows, cols):
    """Nearest-neighbour upscaling: each pixel becomes a ``rows`` x ``cols`` block."""
    return np.repeat(np.repeat(image, rows, axis=0), cols, axis=1)


def heatmap(trace, ranges, sequence=0, width=512, band=64):
    """The unlabelled fallback: a band of unit rows per gate (top to bottom), time across.

    Bands are separated by white lines; each colour spans the gate's range (open bounds: the
    observed values); masked steps are grey.
    """
    gates = list(trace)
    time, units = trace[gates[0]].shape[1:]
    cols, rows = max(1, width // time), max(1, band // units)
    separator = np.full((2, time * cols, 3), 255, np.uint8)
    bands = []
    for gate in gates:
        values = np.asarray(trace[gate][sequence], np.float64).T
        image = colorize(values, *_limits(values, ranges[gate]))
        bands += [upscale(image, rows, cols), separator]
    return np.concatenate(bands[:-1], axis=0)


def saturation_plot(left, right, size=256, dot=2):
    """The unlabelled fallback scatter on a white square: one dot per unit.

    x grows to the right with the left-saturated fraction, y grows upwards with the
    right-saturated fraction, both from 0 to 1 inside a black border (with a margin of
    ``dot + 2`` pixels, so dots on the edges stay whole); the grey diagonal x + y = 1 bounds
    the triangle every unit lies in.
    """
    canvas = np.full((size, size, 3), 255, np.uint8)
    margin = dot + 2
    span = size - 1 - 2 * margin
    diagonal = margin + np.arange(span + 1)
    canvas[diagonal, diagonal] = (200, 200, 200)  # rows grow downwards: this is x + y = 1
    canvas[[0, -1], :] = canvas[:, [0, -1]] = 0
    for x, y in zip(left, right, strict=True):
        if np.isnan(x) or np.isnan(y):
            continue
        col, row = margin + round(x * span), margin + round((1 - y) * span)
        canvas[row - dot : row + dot + 1, col - dot : col + dot + 1] = DOT_COLOR
    return canvas


# ------------------------------------------------------------------------ images
def heatmap_image(trace, ranges, sequence=0, title=None, figures=None):
    """:func:`heatmap_figure` rendered, or the :func:`heatmap` fallback without matplotlib.

    ``figures``: an optional dict in which the figure is kept under ``"heatmap"``, to be
    reused by the next call with the same dict (one dict per tag).
    """
    if not matplotlib_available():
        return heatmap(trace, ranges, sequence)
    figures = {} if figures is None else figures
    figures["heatmap"] = heatmap_figure(trace, ranges, sequence, title, figures.get("heatmap"))
    return render(figures["heatmap"])


def saturation_image(left, right, gate, thresholds, title=None, corners=None, figures=None):
    """:func:`saturation_figure` rendered, or :func:`saturation_plot` without matplotlib.

    ``figures``: as for :func:`heatmap_image`, keyed ``"saturation"``.
    """
    if not matplotlib_available():
        return saturation_plot(left, right)
    figures = {} if figures is None else figures
    figures["saturation"] = saturation_figure(
        left, right, gate, thresholds, title, corners, figures.get("saturation")
    )
    return render(figures["saturation"])
