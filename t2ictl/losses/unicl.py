"""A UniCL-style image-text-label contrastive loss (Yang et al. 2022, "Unified Contrastive Learning in Image-Text-Label
Space"): image i against every text of the batch, and text j against every image, where every pair that shares a label
(and each image with its own caption) is a positive.

For L2-normalised image features u, text features v, logits s_ij = u_i.v_j / tau and positive weights w_ij (w_ii = 1):

    L = mean_i [-sum_j w_ij log softmax_j(s_ij) / sum_j w_ij] + mean_j [-sum_i w_ij log softmax_i(s_ij) / sum_i w_ij]

Unlike SupCon it has no image-image or text-text pairs: it aligns the two modalities only.
"""

from __future__ import annotations

import tensorflow as tf


def unicl_loss(image_features, text_features, weights, temperature: float) -> tf.Tensor:
    """Scalar loss of image and text features [N, D] whose rows are pairs, positives weighted by `weights` [N, N]
    (its diagonal is set to one: an image and its own caption)."""
    u = tf.math.l2_normalize(tf.cast(image_features, tf.float32), axis=1, epsilon=1e-12)
    v = tf.math.l2_normalize(tf.cast(text_features, tf.float32), axis=1, epsilon=1e-12)
    logits = tf.matmul(u, v, transpose_b=True) / temperature
    count = tf.shape(logits)[0]
    weights = tf.linalg.set_diag(tf.cast(weights, tf.float32), tf.ones([count]))
    image_to_text = _direction(logits, weights)
    text_to_image = _direction(tf.transpose(logits), tf.transpose(weights))
    return image_to_text + text_to_image


def _direction(logits, weights) -> tf.Tensor:
    log_prob = tf.nn.log_softmax(logits, axis=1)
    return tf.reduce_mean(-tf.reduce_sum(weights * log_prob, axis=1) / tf.reduce_sum(weights, axis=1))
