"""Whether generated `shapes` images follow the caption's background, size and position.

`t2ictl score` and the training run's evaluation read shape and colour back from the pixels. This reads the other
three attributes a caption may fix, for each held-out caption that names them (the first caption of up to 1,000 test
images, one image each, seed 0): the background is the palette colour nearest the median border pixel, the size is
large when the object's extent exceeds 0.45 of the image, and the position is the third of the image that holds the
object's centre column. It prints the same figures for the real test images, which bound the reader.

    python benchmarks/attribute_probe.py --data data/shapes RUN [RUN ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from t2ictl import startup

startup.start_tensorflow()  # before anything imports TensorFlow, so that its start-up notices stay quiet

from rich.console import Console
from rich.table import Table

from t2ictl import runs
from t2ictl.data.sources import shapes
from t2ictl.evaluation.consistency import asked_attributes, foreground, held_out

ATTRIBUTES = ("background", "size", "position")
LARGE_EXTENT = 0.45  # small objects span 0.32-0.38 of the image, large ones 0.52-0.60 (shapes.Geometry)
SIDE = 0.4  # a centre column left of this fraction is "left", right of 1 - SIDE "right"


def read(image: np.ndarray) -> dict:
    """The background, size and position of a uint8 [S, S, 3] image with one object."""
    pixels, mask = foreground(image)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    median = np.median(border, axis=0)
    seen = {"background": min(shapes.BACKGROUNDS,
                              key=lambda name: np.linalg.norm(median - np.array(shapes.BACKGROUNDS[name])))}
    if mask.sum() >= 4:
        rows, cols = np.nonzero(mask)
        extent = max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) / image.shape[0]
        seen["size"] = "large" if extent > LARGE_EXTENT else "small"
        centre = cols.mean() / image.shape[1]
        seen["position"] = "left" if centre < SIDE else "right" if centre > 1 - SIDE else "centre"
    return seen


def accuracies(captions: list[str], images: np.ndarray) -> dict[str, tuple[float, int]]:
    """Per attribute: the share of images that follow it, over the captions that name it, and their number."""
    asked = [asked_attributes(caption, multi_object=False) for caption in captions]
    seen = [read(image) for image in images]
    result = {}
    for key in ATTRIBUTES:
        hits = [s.get(key) == a[key] for a, s in zip(asked, seen) if key in a]
        result[key] = (float(np.mean(hits)), len(hits))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the prepared `shapes` data")
    parser.add_argument("--count", type=int, default=1000, help="held-out captions")
    parser.add_argument("runs", type=Path, nargs="+", help="trained `shapes` runs")
    args = parser.parse_args()
    table = Table("images", *(f"{key} (captions)" for key in ATTRIBUTES))
    real_row = None
    for run in args.runs:
        sampler, recipe, _ = runs.open_generator(runs.RunDir(run))
        captions, real = held_out(args.data, recipe, sampler.vocab, args.count, "test")
        generated = sampler.sample(captions, per_caption=1, seed=0)[:, 0]
        table.add_row("/".join(run.parts[-2:]), *(f"{a:.3f} ({n})" for a, n in accuracies(captions, generated).values()))
        real_row = real_row or [f"{a:.3f} ({n})" for a, n in accuracies(captions, real).values()]
    table.add_row("real test images", *real_row)
    Console().print(table)


if __name__ == "__main__":
    main()
