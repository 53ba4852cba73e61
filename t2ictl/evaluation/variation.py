"""Sample variation on the embedded `shapes` data: how much images of one caption differ, against real ones.

Where a caption leaves freedom (the jitter of position and size, and any attribute it does not name) the generator
should draw varied images. The spread of a set of images is the mean over pixels and channels of their per-pixel
standard deviation (0-255 units); real images of a caption are drawn by the dataset's own renderer with every
attribute the caption names fixed and the rest drawn as the data draws them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from t2ictl.data.sources import shapes
from t2ictl.data.vocab import Vocabulary
from t2ictl.evaluation.consistency import READERS, asked_attributes, held_out
from t2ictl.recipes import Recipe

FULLY_NAMED = {False: {"shape", "colour", "size", "position", "background"}, True: {"objects", "background"}}


def spread(images: np.ndarray) -> float:
    """Mean per-pixel standard deviation over a set of uint8 images [N, H, W, 3]."""
    return float(np.mean(np.std(images.astype(np.float64), axis=0)))


def real_images_like(caption: str, multi_object: bool, image_size: int, count: int, seed: int) -> np.ndarray:
    """uint8 [count, S, S, 3]: real images that fit the caption."""
    fixed = asked_attributes(caption, multi_object)
    images = []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        if multi_object:
            objects, attributes = shapes.multi_object(rng, fixed=fixed)
        else:
            objects, attributes = shapes.single_object(rng, fixed=fixed)
        images.append(shapes.render(objects, attributes["background"], image_size, rng))
    return np.stack(images)


def sample_variation(sampler, captions: list[str], multi_object: bool, image_size: int, per_caption: int = 8,
                     seed: int = 0) -> dict[str, float]:
    """The spread of per_caption samples of each caption against that of as many real images of it, as means over
    the captions and their ratio; `jitter_` figures keep the captions that name every attribute, where only the
    jitter of position and size is left free."""
    generated = sampler.sample(captions, per_caption=per_caption, seed=seed)
    fake = np.array([spread(images) for images in generated])
    real = np.array([spread(real_images_like(c, multi_object, image_size, per_caption, seed + i))
                     for i, c in enumerate(captions)])
    named = np.array([set(asked_attributes(c, multi_object)) == FULLY_NAMED[multi_object] for c in captions])
    result = {"variation": float(fake.mean()), "real_variation": float(real.mean()),
              "variation_ratio": float(fake.mean() / max(real.mean(), 1e-9))}
    if named.any():
        result["jitter_variation_ratio"] = float(fake[named].mean() / max(real[named].mean(), 1e-9))
    return result


def shapes_variation(sampler, data_dir: Path, recipe: Recipe, vocab: Vocabulary, count: int = 40,
                     seed: int = 0) -> dict[str, float]:
    """sample_variation over the first `count` held-out captions of the embedded data ({} for other data)."""
    if recipe.data.dataset not in READERS:
        return {}
    captions, _ = held_out(data_dir, recipe, vocab, count)
    return sample_variation(sampler, captions, recipe.data.dataset == "shapes-multi", recipe.data.image_size,
                            seed=seed)
