"""Adversarial losses of the backbones, each a plain function of logits: hinge and the matching-aware gradient
penalty (DF-GAN, SSA-GAN, GALIP), sigmoid cross-entropy and the conditioning-augmentation KL term (AttnGAN, DM-GAN)."""

from __future__ import annotations

import tensorflow as tf
from keras import ops


def hinge_real(logits) -> tf.Tensor:
    """mean(relu(1 - logits)): the discriminator's hinge on pairs it must call real."""
    return ops.mean(ops.relu(1.0 - ops.cast(logits, "float32")))


def hinge_fake(logits) -> tf.Tensor:
    """mean(relu(1 + logits)): the discriminator's hinge on pairs it must call fake (generated or mismatched)."""
    return ops.mean(ops.relu(1.0 + ops.cast(logits, "float32")))


def matching_aware_penalty(image_grads, sentence_grads, weight: float, power: float) -> tf.Tensor:
    """weight * mean over the batch of ||(image grad, sentence grad)||_2 ^ power.

    The power is taken of the squared norm (power / 2), which is the same value without the sqrt, whose gradient
    is undefined at a zero norm."""
    batch = ops.shape(image_grads)[0]
    flat = ops.concatenate([ops.reshape(ops.cast(image_grads, "float32"), (batch, -1)),
                            ops.reshape(ops.cast(sentence_grads, "float32"), (batch, -1))], axis=1)
    squared_norm = ops.sum(ops.square(flat), axis=1)
    return weight * ops.mean(ops.power(squared_norm, power / 2.0))


def bce(logits, target: float) -> tf.Tensor:
    """Mean sigmoid cross-entropy of logits against a constant label (nn.BCELoss after the sigmoid)."""
    logits = ops.cast(logits, "float32")
    return ops.mean(ops.binary_crossentropy(ops.full_like(logits, target), logits, from_logits=True))


def kl_divergence(mu, logvar) -> tf.Tensor:
    """AttnGAN's KL_loss: -0.5 x mean(1 + logvar - mu^2 - exp(logvar)) over batch and channels."""
    return -0.5 * ops.mean(1.0 + logvar - ops.square(mu) - ops.exp(logvar))
