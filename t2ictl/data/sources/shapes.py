"""The embedded default dataset: coloured shapes drawn procedurally, no download.

Single-object variant (CUB-like): one shape per image; the class is shape x colour (4 x 5 = 20 classes). Each image also
has a size (small or large), a horizontal position (left, centre, right) and a background (white, grey, black), so
captions carry more than the label and a model has to read them. Every image gets ten captions from varied templates
and synonyms, in varied word order.

Multi-object variant (COCO-like): one or two shapes, each in its own half of the image; labels are multi-hot over the
same 20 shape x colour categories and captions name every object left to right.

Everything about example i (attributes, captions, pixels) comes from a generator seeded with (seed, i): the same seed
gives the same dataset, and images are drawn lazily when the record writer asks for them. The split is random (80%
train, 20% test) rather than class-disjoint, so held-out captions ask for classes the generator has seen and the caption
consistency figure (evaluation/consistency.py reads generated images back) is meaningful.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from t2ictl.data.sources.base import ExampleRef, Source
from t2ictl.errors import UserError

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {  # RGB
    "red": (215, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 40),
    "purple": (140, 55, 190),
}
BACKGROUNDS = {"white": (245, 245, 245), "grey": (128, 128, 128), "black": (15, 15, 15)}
SIZES = ("small", "large")
POSITIONS = ("left", "centre", "right")

SHAPE_WORDS = {"circle": ("circle", "disc", "round shape"), "square": ("square", "box", "square shape"),
               "triangle": ("triangle", "triangular shape", "triangle"), "diamond": ("diamond", "rhombus",
                                                                                    "diamond shape")}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")}
POSITION_PHRASES = {"left": ("on the left", "at the left side", "to the left"),
                    "centre": ("in the middle", "in the center", "at the centre"),
                    "right": ("on the right", "at the right side", "to the right")}
SINGLE_TEMPLATES = (
    "a {size} {colour} {shape} {position} on a {background} background",
    "a {colour} {shape} that is {size}, {position}, on {background}",
    "{position} there is a {size} {colour} {shape}",
    "this picture shows a {colour} {shape} {position} of a {background} image",
    "a {background} background with a {size} {colour} {shape} {position}",
    "the {shape} is {colour} and {size} and sits {position}",
    "{size} {colour} {shape}, {background} background",
    "an image of one {colour} {shape} {position}",
    "a {colour} {shape} drawn {position} over {background}",
    "there is a {size} {shape} in {colour} {position}",
)
MULTI_TEMPLATES = (
    "{objects} on a {background} background",
    "a {background} image with {objects}",
    "from left to right: {objects}",
    "{objects}",
    "this picture shows {objects} over {background}",
)


@dataclass(frozen=True)
class Geometry:
    """Half-extents (small, large) and the uniform position jitter of a single object, as fractions of the image."""

    small_radius: tuple[float, float] = (0.16, 0.19)
    large_radius: tuple[float, float] = (0.26, 0.30)
    jitter_x: float = 0.02
    jitter_y: float = 0.04


# The shape is what a model learns last; this geometry keeps it learnable in the embedded job's budget
# (benchmarks/shape_learnability.py, BENCHMARKS.md: a small CNN classifier reads the shape of 32 px images at 0.80
# after 400 steps, against 0.53 with the earlier radii 0.12-0.16 / 0.22-0.27 and jitter 0.04 / 0.12).
GEOMETRY = Geometry()


@dataclass(frozen=True)
class MultiGeometry:
    """The multi-object layout: up to `slots` objects, one per vertical strip of the image, with their half-extents and
    uniform jitter as fractions of the image."""

    slots: int = 2
    radius: tuple[float, float] = (0.16, 0.2)
    jitter_x: float = 0.02
    jitter_y: float = 0.05


MULTI_GEOMETRY = MultiGeometry()
CAPTIONS_PER_IMAGE = 10
SUPERSAMPLE = 3  # shapes are drawn at 3x and averaged down, for smooth edges


def class_names() -> list[str]:
    return [f"{colour} {shape}" for shape in SHAPES for colour in COLOURS]


def class_index(shape: str, colour: str) -> int:
    return SHAPES.index(shape) * len(COLOURS) + list(COLOURS).index(colour)


# -- drawing --------------------------------------------------------------------------------------------------------


def shape_mask(shape: str, size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    """Boolean [size, size] mask of a shape centred at (cx, cy) with half-extent `radius`, in pixel units."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx * dx + dy * dy <= radius * radius
    if shape == "square":
        return (np.abs(dx) <= radius * 0.85) & (np.abs(dy) <= radius * 0.85)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= radius
    # triangle, apex up: base at cy + r, apex at cy - r
    height_from_top = dy + radius
    return (dy <= radius) & (height_from_top >= 0) & (np.abs(dx) <= height_from_top / 2.0)


def render(objects: list[dict], background: str, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [S, S, 3] image of `objects` (shape, colour, cx, cy, radius as fractions of the image)."""
    big = image_size * SUPERSAMPLE
    canvas = np.empty((big, big, 3), np.float32)
    canvas[:] = np.array(BACKGROUNDS[background], np.float32) + rng.normal(0, 4, 3)
    for obj in objects:
        mask = shape_mask(obj["shape"], big, obj["cx"] * big, obj["cy"] * big, obj["radius"] * big)
        colour = np.array(COLOURS[obj["colour"]], np.float32) + rng.normal(0, 8, 3)
        canvas[mask] = colour
    small = canvas.reshape(image_size, SUPERSAMPLE, image_size, SUPERSAMPLE, 3).mean(axis=(1, 3))
    small += rng.normal(0, 3, small.shape)  # a little sensor noise, so flat colours are not trivially exact
    return np.clip(np.round(small), 0, 255).astype(np.uint8)


def encode_png(image: np.ndarray) -> bytes:
    import tensorflow as tf

    return tf.io.encode_png(image).numpy()


# -- one example -----------------------------------------------------------------------------------------------------


def single_object(rng: np.random.Generator, geometry: Geometry = GEOMETRY, fixed: dict | None = None
                  ) -> tuple[list[dict], dict]:
    """One object with random attributes; `fixed` names attributes to keep (the rest are drawn as the data draws
    them, so the same seed without `fixed` gives the same example)."""
    fixed = fixed or {}
    shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
    size, position = rng.choice(SIZES), rng.choice(POSITIONS)
    background = rng.choice(list(BACKGROUNDS))
    shape, colour = fixed.get("shape") or shape, fixed.get("colour") or colour
    size, position = fixed.get("size") or size, fixed.get("position") or position
    background = fixed.get("background") or background
    radius = rng.uniform(*(geometry.small_radius if size == "small" else geometry.large_radius))
    cx = {"left": 0.28, "centre": 0.5, "right": 0.72}[position] + rng.uniform(-geometry.jitter_x, geometry.jitter_x)
    cx = float(np.clip(cx, radius, 1 - radius))
    cy = float(np.clip(0.5 + rng.uniform(-geometry.jitter_y, geometry.jitter_y), radius, 1 - radius))
    objects = [{"shape": str(shape), "colour": str(colour), "cx": cx, "cy": cy, "radius": float(radius)}]
    attributes = {"shape": str(shape), "colour": str(colour), "size": str(size), "position": str(position),
                  "background": str(background)}
    return objects, attributes


def multi_object(rng: np.random.Generator, geometry: MultiGeometry = MULTI_GEOMETRY, fixed: dict | None = None
                 ) -> tuple[list[dict], dict]:
    """One to `geometry.slots` objects, each in its own vertical strip; `fixed` may name the background and the
    objects' (colour, shape) pairs left to right."""
    fixed = fixed or {}
    count = int(rng.integers(1, geometry.slots + 1))
    count = len(fixed["objects"]) if fixed.get("objects") else count
    if count > geometry.slots:  # a caption of the data before 2026-12-07, which drew up to three objects
        raise UserError(f"a caption names {count} objects and shapes-multi draws at most {geometry.slots}: the data "
                        "was prepared by an earlier t2ictl; prepare it again with `t2ictl prepare shapes-multi "
                        "--overwrite`")
    strips = sorted(rng.choice(geometry.slots, size=count, replace=False))
    background = fixed.get("background") or str(rng.choice(list(BACKGROUNDS)))
    objects = []
    for index, strip in enumerate(strips):
        radius = float(rng.uniform(*geometry.radius))
        shape, colour = str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS)))  # drawn even when fixed: same stream
        if fixed.get("objects"):
            colour, shape = fixed["objects"][index]
        cx = (strip + 0.5) / geometry.slots + float(rng.uniform(-geometry.jitter_x, geometry.jitter_x))
        cy = 0.5 + float(rng.uniform(-geometry.jitter_y, geometry.jitter_y))
        objects.append({"shape": shape, "colour": colour, "cx": cx, "cy": cy, "radius": radius})
    return objects, {"background": background}


def single_captions(attributes: dict, rng: np.random.Generator) -> tuple[str, ...]:
    captions = []
    for template in rng.permutation(SINGLE_TEMPLATES)[:CAPTIONS_PER_IMAGE]:
        captions.append(str(template).format(
            size=rng.choice(SIZE_WORDS[attributes["size"]]), colour=attributes["colour"],
            shape=rng.choice(SHAPE_WORDS[attributes["shape"]]),
            position=rng.choice(POSITION_PHRASES[attributes["position"]]), background=attributes["background"]))
    return tuple(captions)


def multi_captions(objects: list[dict], background: str, rng: np.random.Generator) -> tuple[str, ...]:
    captions = []
    for index in range(CAPTIONS_PER_IMAGE):
        names = [f"a {o['colour']} {rng.choice(SHAPE_WORDS[o['shape']])}" for o in objects]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        template = MULTI_TEMPLATES[index % len(MULTI_TEMPLATES)]
        captions.append(template.format(objects=listed, background=background))
    return tuple(captions)


class ShapesSource(Source):
    captions_per_image = CAPTIONS_PER_IMAGE

    def __init__(self, multi_object: bool, count: int, seed: int, image_size: int):
        super().__init__()
        self.name = "shapes-multi" if multi_object else "shapes"
        self.multi_label = multi_object
        self.count, self.seed, self.image_size = count, seed, image_size

    def classes(self) -> list[str]:
        return class_names()

    def example(self, index: int) -> ExampleRef:
        rng = np.random.default_rng([self.seed, index])
        if self.multi_label:
            objects, attributes = multi_object(rng)
            captions = multi_captions(objects, attributes["background"], rng)
            labels = tuple(sorted({class_index(o["shape"], o["colour"]) for o in objects}))
        else:
            objects, attributes = single_object(rng)
            captions = single_captions(attributes, rng)
            labels = (class_index(attributes["shape"], attributes["colour"]),)
        pixels_seed = int(rng.integers(2**31))

        def load_image() -> bytes:
            return encode_png(render(objects, attributes["background"], self.image_size,
                                     np.random.default_rng(pixels_seed)))

        return ExampleRef(f"{self.name}-{self.seed}-{index:06d}", captions, labels, load_image,
                          origin=f"{self.name}#{index}")

    def splits(self) -> dict[str, list[ExampleRef]]:
        order = np.random.default_rng([self.seed, 2**31]).permutation(self.count)
        train_count = int(round(self.count * 0.8))
        return {"train": [self.example(int(i)) for i in sorted(order[:train_count])],
                "test": [self.example(int(i)) for i in sorted(order[train_count:])]}

    def describe(self) -> dict:
        return {"generator": "t2ictl.data.sources.shapes", "variant": self.name, "count": self.count,
                "seed": self.seed, "image_size": self.image_size,
                "split": "random 80% train / 20% test of the generated images",
                "classes": "shape x colour (20)", "crop": "whole image"}

    def fingerprint(self) -> str:
        source = Path(__file__).read_bytes()  # a change to the drawing code changes the data
        key = f"{self.name}:{self.count}:{self.seed}:{self.image_size}:".encode() + source
        return hashlib.sha256(key).hexdigest()


def open_source(inputs: list[Path], multi_object: bool = False, count: int | None = None, seed: int = 0,
                image_size: int = 64) -> ShapesSource:
    if inputs:
        raise UserError("shapes is generated, it reads no --source")
    return ShapesSource(multi_object, count or 5000, seed, image_size)
