"""A cross-entropy label classifier on the framework's features, the ablation against SupCon: softmax cross-entropy
over the classes for single-label data (rows without a label left out), sigmoid cross-entropy over the multi-hot
labels for multi-label data (an image with no category then targets all zeros)."""

from __future__ import annotations

import tensorflow as tf


def label_classifier_loss(logits, class_ids, multi_hot, multi_label: bool) -> tf.Tensor:
    """Scalar loss of logits [N, C] against class ids [N] (-1: no label) or multi-hot labels [N, C]."""
    logits = tf.cast(logits, tf.float32)
    if multi_label:
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(tf.cast(multi_hot, tf.float32), logits))
    ids = tf.cast(class_ids, tf.int32)
    labelled = tf.cast(ids >= 0, tf.float32)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.maximum(ids, 0), logits)
    return tf.reduce_sum(losses * labelled) / tf.maximum(tf.reduce_sum(labelled), 1.0)
