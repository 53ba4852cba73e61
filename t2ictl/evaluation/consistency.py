"""Caption consistency on the embedded `shapes` data: does the image show the shapes and colours the caption asks?

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
    """Single objects: the share of images whose object has the shape, the colour, and both, that the caption asks."""
    asked = [parse_caption(c) for c in captions]
    seen = [analyze(image) for image in images]
    shape = np.mean([a["shape"] == s["shape"] for a, s in zip(asked, seen)])
    colour = np.mean([a["colour"] == s["colour"] for a, s in zip(asked, seen)])
    both = np.mean([a["shape"] == s["shape"] and a["colour"] == s["colour"] for a, s in zip(asked, seen)])
    return {"shape_accuracy": float(shape), "colour_accuracy": float(colour), "both_accuracy": float(both)}


def multi_agreement(captions: list[str], images: np.ndarray) -> dict[str, float]:
    """Several objects, matched left to right: an object is right when its colour and shape both are; a missing
    object counts wrong and an extra one against the caption (object accuracy = right / max(asked, seen))."""
    right = total = count_right = all_right = 0
    for caption, image in zip(captions, images):
        asked, seen = parse_objects(caption), [(o["colour"], o["shape"]) for o in objects_in(image)]
        hits = sum(a == s for a, s in zip(asked, seen))
        right, total = right + hits, total + max(len(asked), len(seen))
        count_right += len(asked) == len(seen)
        all_right += len(asked) == len(seen) == hits
    count = max(len(captions), 1)
    return {"object_accuracy": right / max(total, 1), "count_accuracy": count_right / count,
            "caption_accuracy": all_right / count}


READERS = {"shapes": agreement, "shapes-multi": multi_agreement}


def shapes_consistency(sampler, data_dir: Path, recipe: Recipe, vocab: Vocabulary, count: int = 200,
                       seed: int = 0, split: str = "test") -> dict[str, float]:
    """Agreement of generated images with their captions, and of the real images (the ceiling)."""
    reader = READERS.get(recipe.data.dataset)
    if reader is None:
        return {}
    captions, real = held_out(data_dir, recipe, vocab, count, split)
    generated = sampler.sample(captions, per_caption=1, seed=seed)[:, 0]
    result = reader(captions, generated)
    result.update({f"real_{k}": v for k, v in reader(captions, real).items()})
    return result


_SHAPE_BY_WORD = {word: shape for shape, words in shapes.SHAPE_WORDS.items() for phrase in words
                  for word in phrase.split() if word not in ("shape", "triangular")} | {"triangular": "triangle"}


def parse_caption(caption: str) -> dict:
    """The shape and colour a single-object caption asks for (None where it names none)."""
    words = re.findall(r"[a-z]+", caption.lower())
    colour = next((w for w in words if w in shapes.COLOURS), None)
    shape = next((_SHAPE_BY_WORD[w] for w in words if w in _SHAPE_BY_WORD), None)
    return {"shape": shape, "colour": colour}


_SIZE_BY_WORD = {word: size for size, words in shapes.SIZE_WORDS.items() for word in words}
_POSITION_BY_WORD = {"left": "left", "right": "right", "middle": "centre", "center": "centre", "centre": "centre"}


def asked_attributes(caption: str, multi_object: bool) -> dict:
    """Every attribute the caption fixes: background, and the objects (multi) or shape, colour, size and position."""
    words = re.findall(r"[a-z]+", caption.lower())
    asked = {"background": next((w for w in words if w in shapes.BACKGROUNDS), None)}
    if multi_object:
        asked["objects"] = parse_objects(caption)
    else:
        asked |= parse_caption(caption)
        asked["size"] = next((_SIZE_BY_WORD[w] for w in words if w in _SIZE_BY_WORD), None)
        asked["position"] = next((_POSITION_BY_WORD[w] for w in words if w in _POSITION_BY_WORD), None)
    return {key: value for key, value in asked.items() if value}


def parse_objects(caption: str) -> list[tuple[str, str]]:
    """The (colour, shape) pairs a caption names, in its order (a colour word, then the next shape word)."""
    pairs, colour = [], None
    for word in re.findall(r"[a-z]+", caption.lower()):
        if word in shapes.COLOURS:
            colour = word
        elif word in _SHAPE_BY_WORD and colour is not None:
            pairs.append((colour, _SHAPE_BY_WORD[word]))
            colour = None
    return pairs


def analyze(image: np.ndarray) -> dict:
    """The shape and colour of the single object in a uint8 [H, W, 3] image, read from its pixels: the object is every
    pixel far from the background (the median border colour)."""
    pixels, mask = foreground(image)
    if mask.sum() < 4:
        return {"shape": None, "colour": None}
    return {"shape": shape_of(mask), "colour": colour_of(pixels, mask)}


def objects_in(image: np.ndarray, min_fraction: float = 0.005) -> list[dict]:
    """Every object (a connected foreground region of at least min_fraction of the image) left to right, each with
    its shape, colour and centre column."""
    from scipy import ndimage

    pixels, mask = foreground(image)
    regions, count = ndimage.label(mask)
    found = []
    for index in range(1, count + 1):
        region = regions == index
        if region.sum() >= max(4, min_fraction * mask.size):
            found.append({"shape": shape_of(region), "colour": colour_of(pixels, region),
                          "cx": float(np.nonzero(region)[1].mean())})
    return sorted(found, key=lambda o: o["cx"])


def foreground(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float pixels and the boolean mask of those far (> 60 in RGB) from the median border colour."""
    pixels = image.astype(np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = np.median(border, axis=0)
    return pixels, np.linalg.norm(pixels - background, axis=-1) > 60


def colour_of(pixels: np.ndarray, mask: np.ndarray) -> str:
    """The palette colour nearest the median pixel of the mask."""
    median = np.median(pixels[mask], axis=0)
    return min(shapes.COLOURS, key=lambda name: np.linalg.norm(median - np.array(shapes.COLOURS[name])))


def shape_of(mask: np.ndarray) -> str:
    """The shape of one object's mask, from how much of its bounding box it fills and how wide it is halfway down
    (square: full box; triangle: narrow middle; circle vs diamond: fill ratio)."""
    rows, cols = np.nonzero(mask)
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    height, width = bottom - top + 1, right - left + 1
    fill = mask.sum() / float(height * width)
    middle = mask.sum(axis=1)[top + height // 2] / width
    if fill > 0.88:
        return "square"
    if middle < 0.72:
        return "triangle"
    return "circle" if fill > 0.66 else "diamond"
