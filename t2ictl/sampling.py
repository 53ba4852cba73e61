"""Sampling: captions to images with a generator and the frozen text encoder, and captioned PNG grids.

Noise is a pure function of (seed, count, truncation), computed with stateless TensorFlow ops so that the exported
SavedModel draws exactly the same noise in its graph. Truncation t > 0 draws from the standard normal truncated to
[-t, t] by inverting the CDF (exact, no rejection loop); t = 0 means no truncation.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import tensorflow as tf

from t2ictl import fileio
from t2ictl.data.vocab import PAD_ID, GraphTokenizer, Vocabulary, tokenize
from t2ictl.errors import UserError
from t2ictl.font import ADVANCE, GLYPH_HEIGHT, render, wrap
from t2ictl.models.text_encoder import text_features


def noise(count, dim: int, seed, truncation=0.0) -> tf.Tensor:
    """[count, dim] float32 noise; same (seed, count, dim, truncation), same values, in Python or in a graph."""
    stateless_seed = tf.stack([tf.cast(seed, tf.int64), tf.constant(0x7431, tf.int64)])
    shape = tf.stack([tf.cast(count, tf.int32), dim])
    truncation = tf.cast(truncation, tf.float32)
    plain = tf.random.stateless_normal(shape, seed=stateless_seed)
    # inverse-CDF sampling of the standard normal restricted to [-T, T]: Phi(x) = (1 + erf(x / sqrt 2)) / 2
    edge = 0.5 * (1.0 + tf.math.erf(-tf.maximum(truncation, 1e-3) / np.sqrt(2.0)))
    uniform = tf.random.stateless_uniform(shape, seed=stateless_seed, minval=0.0, maxval=1.0)
    truncated = np.sqrt(2.0) * tf.math.erfinv(2.0 * (edge + uniform * (1.0 - 2.0 * edge)) - 1.0)
    return tf.where(truncation > 0.0, truncated, plain)


def tokenize_captions(captions: list[str], vocab: Vocabulary, max_words: int) -> tuple[np.ndarray, list[list[str]]]:
    """Token ids [N, max_words] (first max_words words) and the unknown words of each caption."""
    tokens = np.full((len(captions), max_words), PAD_ID, np.int32)
    unknown = []
    for row, caption in enumerate(captions):
        words, unknown_words = tokenize(caption, vocab.tokenizer), vocab.unknown_words(caption)
        if not words:
            raise UserError(f"caption {caption!r} has no words")
        if len(unknown_words) == len(words):
            raise UserError(f"caption {caption!r} has only words the model does not know")
        if vocab.tokenizer != "clip":
            ids = vocab.encode(caption)[:max_words]
            tokens[row, : len(ids)] = ids
        unknown.append(unknown_words)
    if vocab.tokenizer == "clip":  # BPE runs in the graph only
        tokens = GraphTokenizer(vocab, max_words).ids(tf.constant(captions))[0].numpy()
    return tokens, unknown


def to_uint8(images) -> tf.Tensor:
    """[-1, 1] floats to uint8 pixels (round half up, clipped)."""
    return tf.cast(tf.clip_by_value(tf.round((tf.cast(images, tf.float32) + 1.0) * 127.5), 0, 255), tf.uint8)


class Sampler:
    def __init__(self, generator, text_encoder, vocab: Vocabulary, max_words: int, noise_dim: int):
        self.generator, self.text_encoder = generator, text_encoder
        self.vocab, self.max_words, self.noise_dim = vocab, max_words, noise_dim
        # traced once for any batch: eagerly, Keras's per-layer overhead (the LSTM's above all) costs more than a
        # small generator's arithmetic
        self.images_from_tokens = tf.function(self._images_from_tokens, input_signature=[
            tf.TensorSpec([None, max_words], tf.int32), tf.TensorSpec([None, noise_dim], tf.float32)])

    def _images_from_tokens(self, tokens, z) -> tf.Tensor:
        out = self.generator(text_features(self.text_encoder, tokens).generator_inputs(z), training=False)
        return to_uint8(out["images"][-1])

    def sample(self, captions: list[str], per_caption: int, seed: int, truncation: float = 0.0,
               batch_size: int = 64) -> np.ndarray:
        """uint8 images [len(captions), per_caption, S, S, 3]; noise row r*per_caption+k goes to caption r."""
        tokens, _ = tokenize_captions(captions, self.vocab, self.max_words)
        tokens = np.repeat(tokens, per_caption, axis=0).astype(np.int32)
        z = noise(len(tokens), self.noise_dim, seed, truncation)
        chunks = [self.images_from_tokens(tokens[i:i + batch_size], z[i:i + batch_size]).numpy()
                  for i in range(0, len(tokens), batch_size)]
        images = np.concatenate(chunks)
        return images.reshape(len(captions), per_caption, *images.shape[1:])


MIN_TILE = 96  # pixels; smaller images are upscaled to at least this, so that a grid shown at 1:1 is legible
TEXT_SCALE = 2  # font pixels to grid pixels
CAPTION_TOP, LINE_HEIGHT = 4, GLYPH_HEIGHT + 2  # in font pixels; the top margin ties a caption to the row below


def upscale_factor(size: int) -> int:
    """The integer factor that brings a size-pixel image to at least MIN_TILE pixels (1 if it is already there)."""
    return max(1, math.ceil(MIN_TILE / size))


def caption_band_height(lines: int, text_scale: int = TEXT_SCALE) -> int:
    """Grid pixels above a row of images that hold its caption of so many lines (0 for none)."""
    return text_scale * (CAPTION_TOP + lines * LINE_HEIGHT) if lines else 0


def grid(images: np.ndarray, captions: list[str] | None = None, pad: int = 2, scale: int | None = None,
         text_scale: int = TEXT_SCALE) -> np.ndarray:
    """[rows, cols, H, W, 3] uint8 -> one uint8 [rows * (band + H*scale + pad) + pad, cols * (W*scale + pad) + pad, 3]
    image on a white background: each image upscaled by nearest neighbour (scale: upscale_factor(H) unless given;
    1 gives the raw tiles), and, when captions are given (one a row), each caption wrapped to at most two lines in
    a band above its row, all bands as high as the one that needs most lines."""
    rows, cols, height, width, _ = images.shape
    scale = scale or upscale_factor(height)
    tiles = images.repeat(scale, axis=2).repeat(scale, axis=3)
    height, width = height * scale, width * scale
    canvas_width = cols * (width + pad) + pad
    lines = caption_lines(captions, rows, (canvas_width - 2 * pad) // (ADVANCE * text_scale))
    band = caption_band_height(max(map(len, lines)), text_scale)
    canvas = np.full((rows * (band + height + pad) + pad, canvas_width, 3), 255, np.uint8)
    for r in range(rows):
        top = pad + r * (band + height + pad)
        for number, line in enumerate(lines[r]):  # the last line just above the images
            y = top + band - text_scale * (len(lines[r]) - number) * LINE_HEIGHT
            draw_text(canvas, line, y, pad, text_scale)
        for c in range(cols):
            x = pad + c * (width + pad)
            canvas[top + band:top + band + height, x:x + width] = tiles[r, c]
    return canvas


def caption_lines(captions: list[str] | None, rows: int, width: int) -> list[list[str]]:
    """Each row's caption wrapped to lines of at most width characters; no lines without captions."""
    if captions is None:
        return [[] for _ in range(rows)]
    if len(captions) != rows:
        raise ValueError(f"{len(captions)} captions for a grid of {rows} rows")
    return [wrap(caption, max(1, width)) for caption in captions]


def draw_text(canvas: np.ndarray, text: str, y: int, x: int, text_scale: int) -> None:
    """Black text on the canvas with its top left corner at (y, x), cut at the canvas's right edge."""
    ink = render(text, text_scale)[:, :canvas.shape[1] - x]
    canvas[y:y + ink.shape[0], x:x + ink.shape[1]][ink] = 0


def write_grid(path: Path, images: np.ndarray, captions: list[str] | None = None, scale: int | None = None
               ) -> np.ndarray:
    """Write grid(images, captions, scale=scale) as a PNG file and return it."""
    picture = grid(images, captions, scale=scale)
    fileio.write_bytes(Path(path), tf.io.encode_png(picture).numpy())
    return picture


class ExportedSampler:
    """The Sampler interface over a model written by `t2ictl export`."""

    def __init__(self, folder: Path):
        import json

        folder = Path(folder)
        info_file = folder / "assets.extra" / "model.json"
        if not info_file.exists():
            raise UserError(f"{folder} is not a model written by `t2ictl export` ({info_file} missing)")
        self.model = tf.saved_model.load(str(folder))
        info = json.loads(info_file.read_text())
        self.vocab = Vocabulary.load(folder / "assets.extra" / "vocab.json")
        self.max_words, self.noise_dim = info["max_words"], info["noise_dim"]

    def sample(self, captions: list[str], per_caption: int, seed: int, truncation: float = 0.0) -> np.ndarray:
        tokenize_captions(captions, self.vocab, self.max_words)  # the same checks as in-process sampling
        repeated = tf.constant([c for c in captions for _ in range(per_caption)])
        images = self.model.signatures["serving_default"](
            captions=repeated, seed=tf.constant(seed, tf.int64), truncation=tf.constant(truncation, tf.float32)
        )["images"].numpy()
        return images.reshape(len(captions), per_caption, *images.shape[1:])
