"""DiffAugment (Zhao et al., NeurIPS 2020): differentiable augmentations of every image a discriminator sees.

Real and generated images are augmented alike, so the discriminator cannot tell them apart by the augmentation and
the generator still learns the unaugmented distribution. Only the geometric policies are here: the colour policies
would change what the captions of the embedded data and of CUB name.
"""

from __future__ import annotations

import tensorflow as tf


def translate(images, noise: tf.random.Generator, ratio: float = 0.125) -> tf.Tensor:
    """Shift each image by a whole number of pixels, up to ratio x size each way, filling with zeros."""
    batch, size = tf.shape(images)[0], images.shape[1]
    limit = int(size * ratio + 0.5)
    shifts = noise.uniform([batch, 2], -limit, limit + 1, dtype=tf.int32)
    padded = tf.pad(images, [[0, 0], [limit, limit], [limit, limit], [0, 0]])
    rows = tf.range(size)[None, :] + limit - shifts[:, :1]  # [B, S]
    cols = tf.range(size)[None, :] + limit - shifts[:, 1:]
    gathered = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(gathered, cols, axis=2, batch_dims=1)


def cutout(images, noise: tf.random.Generator, ratio: float = 0.5) -> tf.Tensor:
    """Zero one square of ratio x size per image, centred anywhere in it."""
    batch, size = tf.shape(images)[0], images.shape[1]
    cut = int(size * ratio + 0.5)
    starts = noise.uniform([batch, 2], 0, size, dtype=tf.int32) - cut // 2
    rows = tf.range(size)[None, :] - starts[:, :1]  # [B, S]: offsets into the cut square
    cols = tf.range(size)[None, :] - starts[:, 1:]
    inside_rows = (rows >= 0) & (rows < cut)
    inside_cols = (cols >= 0) & (cols < cut)
    keep = tf.logical_not(inside_rows[:, :, None] & inside_cols[:, None, :])
    return images * tf.cast(keep, images.dtype)[..., None]


AUGMENTATIONS = {"translation": translate, "cutout": cutout}
