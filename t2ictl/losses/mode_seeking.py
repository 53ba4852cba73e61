"""Mode seeking (MSGAN, Mao et al. 2019): a conditional generator that ignores its noise is penalised.

Two images of the same condition from different noise should differ in proportion to their noise: the ratio
mean|G(c, z_a) - G(c, z_b)| / mean|z_a - z_b| is pushed up by minimising its inverse.
"""

from __future__ import annotations

import tensorflow as tf
from keras import ops

EPSILON = 1e-5  # the official code's eps: keeps the inverse finite for a fully collapsed generator


def mode_seeking_ratio(images_a, images_b, noise_a, noise_b) -> tf.Tensor:
    """mean |images_a - images_b| / mean |noise_a - noise_b| over the batch (float32)."""
    image_gap = ops.mean(ops.abs(ops.cast(images_a, "float32") - ops.cast(images_b, "float32")))
    noise_gap = ops.mean(ops.abs(ops.cast(noise_a, "float32") - ops.cast(noise_b, "float32")))
    return image_gap / noise_gap


def mode_seeking_loss(images_a, images_b, noise_a, noise_b) -> tf.Tensor:
    """1 / (ratio + eps): the generator's term, large when it draws the same image for any noise."""
    return 1.0 / (mode_seeking_ratio(images_a, images_b, noise_a, noise_b) + EPSILON)
