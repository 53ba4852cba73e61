"""Caption consistency on the embedded single-object `shapes` data: does the image show the shape and colour asked?

Generated images for held-out captions are read back with the pixel-level reader of the shapes module (no learned
model, so the figure cannot be gamed by the generator); the same reader on the real held-out images gives the ceiling.
"""

from __future__ import annotations

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
    asked = [shapes.parse_caption(c) for c in captions]
    seen = [shapes.analyze(image) for image in images]
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
