"""Caption consistency on the embedded single-object `shapes` data: does the image show the shape and colour asked?

Generated images for held-out captions are read back with the pixel-level reader below (no learned model, so the
figure cannot be gamed by the generator); the same reader on the real held-out images gives the ceiling.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from t2ictl.data import pipeline
from t2ictl.data.sources import shapes
from t2ictl.data.vocab import Vocabulary
from t2ictl.recipes import Recipe


def held_out(data_dir: Path, recipe: Recipe, vocab: Vocabulary, count: int, split: str = "test"
             ) -> tuple[list[str], np.ndarray]:
    """First captions and real uint8 images of up to `count` examples of the split."""
    captions, images = [], []
    for batch in pipeline.eval_dataset(data_dir, recipe.data, vocab, split=split, caption="first"):
        captions += [c.decode("utf-8") for c in batch["caption"].numpy()]
        images.append(np.round((batch["image"].numpy() + 1.0) * 127.5).clip(0, 255).astype(np.uint8))
        if len(captions) >= count:
            break
    return captions[:count], np.concatenate(images)[:count]


def agreement(captions: list[str], images: np.ndarray) -> dict[str, float]:
    asked = [parse_caption(c) for c in captions]
    seen = [analyze(image) for image in images]
    shape = np.mean([a["shape"] == s["shape"] for a, s in zip(asked, seen)])
    colour = np.mean([a["colour"] == s["colour"] for a, s in zip(asked, seen)])
    both = np.mean([a["shape"] == s["shape"] and a["colour"] == s["colour"] for a, s in zip(asked, seen)])
    return {"shape_accuracy": float(shape), "colour_accuracy": float(colour), "both_accuracy": float(both)}


def shapes_consistency(sampler, data_dir: Path, recipe: Recipe, vocab: Vocabulary, count: int = 200,
                       seed: int = 0, split: str = "test") -> dict[str, float]:
    """Agreement of generated images with their captions, and of the real images (the ceiling)."""
    if recipe.data.dataset != "shapes":
        return {}
    captions, real = held_out(data_dir, recipe, vocab, count, split)
    generated = sampler.sample(captions, per_caption=1, seed=seed)[:, 0]
    result = agreement(captions, generated)
    result.update({f"real_{k}": v for k, v in agreement(captions, real).items()})
    return result


_SHAPE_BY_WORD = {word: shape for shape, words in shapes.SHAPE_WORDS.items() for phrase in words
                  for word in phrase.split() if word not in ("shape", "triangular")} | {"triangular": "triangle"}


def parse_caption(caption: str) -> dict:
    """The shape and colour a single-object caption asks for (None where it names none)."""
    words = re.findall(r"[a-z]+", caption.lower())
    colour = next((w for w in words if w in shapes.COLOURS), None)
    shape = next((_SHAPE_BY_WORD[w] for w in words if w in _SHAPE_BY_WORD), None)
    return {"shape": shape, "colour": colour}


def analyze(image: np.ndarray) -> dict:
    """The shape and colour of the single object in a uint8 [H, W, 3] image, read from its pixels.

    The background is the median border colour; the object is every pixel far from it. Its colour is the nearest palette
    colour to the object's median pixel; its shape comes from how much of its bounding box it fills and how wide it is
    halfway down and near the bottom (square: full box; triangle: narrow middle; circle vs diamond: fill ratio).
    """
    pixels = image.astype(np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = np.median(border, axis=0)
    foreground = np.linalg.norm(pixels - background, axis=-1) > 60
    if foreground.sum() < 4:
        return {"shape": None, "colour": None}
    median = np.median(pixels[foreground], axis=0)
    colour = min(shapes.COLOURS, key=lambda name: np.linalg.norm(median - np.array(shapes.COLOURS[name])))
    rows, cols = np.nonzero(foreground)
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    height, width = bottom - top + 1, right - left + 1
    fill = foreground.sum() / float(height * width)
    row_width = foreground.sum(axis=1)
    middle = row_width[top + height // 2] / width
    if fill > 0.88:
        shape = "square"
    elif middle < 0.72:
        shape = "triangle"
    elif fill > 0.66:
        shape = "circle"
    else:
        shape = "diamond"
    return {"shape": shape, "colour": colour}
