"""Supervised contrastive loss (Khosla et al. 2020, L^sup_out) with positives defined by labels.

For L2-normalised features z and temperature tau, anchor i with positives P(i) (weights w_ip) loses

    -1 / sum_p w_ip * sum_p w_ip * log( exp(z_i.z_p / tau) / sum_{a != i} exp(z_i.z_a / tau) )

and the loss is the mean over anchors that have at least one positive (a row without positives adds nothing, so it
cannot produce NaN). Positives come from labels: equal class ids (>= 0; -1 means no label) for single-label data; for
multi-hot labels the rule is a parameter: "any" shared label, "exact" label set, or "jaccard" overlap as a soft weight.
Rows of the same example (equal `example_index`: an image and its own caption, or an unlabelled image and its second
view) are positives of each other as well. Shapes are static and there is no data-dependent control flow, so the
functions compile with XLA; the math is float32 whatever the input dtype.
"""

from __future__ import annotations

import tensorflow as tf

RULES = ("any", "exact", "jaccard")
_MASKED = -1e9  # logit of the anchor against itself: finite, so 0 * masked stays 0


def positive_weights(labels, rule: str = "any", example_index=None) -> tf.Tensor:
    """[N, N] float32 weights of positives, zero on the diagonal."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 1:
        ids = tf.cast(labels, tf.int64)
        weights = tf.cast(tf.equal(ids[:, None], ids[None, :]) & (ids[:, None] >= 0), tf.float32)
    else:
        hot = tf.cast(labels > 0, tf.float32)
        shared = tf.matmul(hot, hot, transpose_b=True)
        count = tf.reduce_sum(hot, axis=1)
        union = count[:, None] + count[None, :] - shared
        if rule == "any":
            weights = tf.cast(shared > 0, tf.float32)
        elif rule == "exact":
            weights = tf.cast((shared == count[:, None]) & (shared == count[None, :]) & (count[:, None] > 0),
                              tf.float32)
        else:
            weights = tf.math.divide_no_nan(shared, union)
    if example_index is not None:
        index = tf.convert_to_tensor(example_index)
        weights = tf.maximum(weights, tf.cast(tf.equal(index[:, None], index[None, :]), tf.float32))
    return weights * (1.0 - tf.eye(tf.shape(weights)[0]))


def supervised_contrastive_loss(features, weights, temperature: float) -> tf.Tensor:
    """Scalar SupCon loss of features [N, D] with positive weights [N, N] (diagonal ignored)."""
    z = tf.math.l2_normalize(tf.cast(features, tf.float32), axis=1, epsilon=1e-12)
    count = tf.shape(z)[0]
    self_mask = tf.eye(count)
    logits = tf.matmul(z, z, transpose_b=True) / temperature + _MASKED * self_mask
    log_prob = logits - tf.reduce_logsumexp(logits, axis=1, keepdims=True)
    weights = tf.cast(weights, tf.float32) * (1.0 - self_mask)
    total = tf.reduce_sum(weights, axis=1)
    per_anchor = -tf.reduce_sum(weights * log_prob, axis=1) / tf.maximum(total, 1e-12)
    has_positive = tf.cast(total > 0, tf.float32)
    return tf.reduce_sum(per_anchor * has_positive) / tf.maximum(tf.reduce_sum(has_positive), 1.0)


def supcon_from_labels(features, labels, temperature: float, rule: str = "any", example_index=None) -> tf.Tensor:
    """SupCon over `features` with positives from class ids [N] or multi-hot labels [N, C]."""
    return supervised_contrastive_loss(features, positive_weights(labels, rule, example_index), temperature)
