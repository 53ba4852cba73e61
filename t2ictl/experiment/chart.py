"""The experiment's chart as a PNG: one panel per metric, the arms side by side, each seed a point and the mean a bar.
Drawn with NumPy and the grid font: no plotting library."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from t2ictl import fileio
from t2ictl.font import ADVANCE, GLYPH_HEIGHT, render

PLOT_HEIGHT, LEFT, TOP, BOTTOM, ARM_WIDTH, GAP = 110, 44, 16, 14, 40, 12
INK, AXIS, POINT, MEAN = (0, 0, 0), (150, 150, 150), (40, 80, 200), (210, 40, 40)
SCALE = 2  # every base pixel drawn as 2 x 2, for screens


def write_chart(path: Path, panels: list[tuple[str, list[tuple[str, list[float]]]]], title: str) -> np.ndarray:
    """panels: (metric, [(arm label, values over seeds)]). Returns the uint8 [H, W, 3] picture it wrote."""
    drawn = [_panel(metric, arms) for metric, arms in panels]
    height = max(p.shape[0] for p in drawn)
    row = np.concatenate([np.pad(p, ((0, height - p.shape[0]), (0, GAP), (0, 0)), constant_values=255)
                          for p in drawn], axis=1)
    heading = np.full((GLYPH_HEIGHT + 8, row.shape[1], 3), 255, np.uint8)
    _text(heading, title, 4, 4)
    picture = np.concatenate([heading, row], axis=0).repeat(SCALE, axis=0).repeat(SCALE, axis=1)
    fileio.write_bytes(Path(path), tf.io.encode_png(picture).numpy())
    return picture


def _panel(metric: str, arms: list[tuple[str, list[float]]]) -> np.ndarray:
    width = max(LEFT + ARM_WIDTH * len(arms), LEFT + len(metric) * ADVANCE) + 4
    canvas = np.full((TOP + PLOT_HEIGHT + BOTTOM, width, 3), 255, np.uint8)
    _text(canvas, metric, 2, LEFT)
    values = [v for _, vs in arms for v in vs]
    low, high = min(values), max(values)
    pad = (high - low) * 0.1 or abs(high) * 0.05 or 1.0
    low, high = low - pad, high + pad

    def y_of(value: float) -> int:
        return TOP + int(round((high - value) / (high - low) * (PLOT_HEIGHT - 1)))

    canvas[TOP:TOP + PLOT_HEIGHT, LEFT - 2] = AXIS
    canvas[TOP + PLOT_HEIGHT - 1, LEFT - 2:] = AXIS
    _text(canvas, f"{high:.3g}", TOP, 1)
    _text(canvas, f"{low:.3g}", TOP + PLOT_HEIGHT - GLYPH_HEIGHT, 1)
    for index, (label, points) in enumerate(arms):
        centre = LEFT + ARM_WIDTH * index + ARM_WIDTH // 2
        mean_y = y_of(float(np.mean(points)))
        canvas[mean_y:mean_y + 2, centre - 12:centre + 12] = MEAN
        for k, value in enumerate(points):
            x, y = centre - 6 + 6 * (k % 3), y_of(value)
            canvas[max(y - 1, 0):y + 2, x - 1:x + 2] = POINT
        _text(canvas, label, TOP + PLOT_HEIGHT + 3, centre - len(label) * ADVANCE // 2)
    return canvas


def _text(canvas: np.ndarray, text: str, y: int, x: int) -> None:
    ink = render(text)[:, :max(canvas.shape[1] - x, 0)]
    canvas[y:y + ink.shape[0], x:x + ink.shape[1]][ink] = INK
