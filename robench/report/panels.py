"""A figure of one panel per strategy, three to a row: the page's confusion and reliability figures."""

from __future__ import annotations

import math

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 120


def panel_grid(count: int, width: float, height: float) -> tuple[Figure, list[Axes]]:
    """A figure of ``count`` panels of ``width`` x ``height`` inches, in rows of at most three."""
    cols = min(3, count)
    rows = math.ceil(count / cols)
    fig = Figure(figsize=(width * cols, height * rows + 0.6), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(rows, cols, index + 1) for index in range(count)]
