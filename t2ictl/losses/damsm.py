"""DAMSM matching losses of AttnGAN (Xu et al. 2018): word-level attention matching and sentence-level matching.

Word level, for caption i and image j: every word attends over the image's regions (the word-region dot products are
first normalised with a softmax over the caption's words, then scaled by gamma1 and normalised over the regions, in
AttnGAN's order); each word is compared by cosine with its attended region context; the caption-image score is
log(sum over real words of exp(gamma2 * cosine)). Sentence level: the cosine of the global image feature and the
sentence feature. Either score matrix, times gamma3, is read as logits twice: images choosing their caption and
captions choosing their image, cross-entropy against the matching pair, averaged over the batch. Pairs (i, j), i != j,
of the same class (class id >= 0) are masked out of the softmax as AttnGAN does, since they are not true mismatches.
All B x B pairs are computed at once with padding words masked; shapes stay static (XLA-friendly).
"""

from __future__ import annotations

import tensorflow as tf

from t2ictl import replicas

_MASKED = -1e9


def same_class_mask(class_ids, batch: int) -> tf.Tensor:
    """[B, B] bool: other examples of the same (known) class."""
    if class_ids is None:
        return tf.zeros([batch, batch], tf.bool)
    ids = tf.cast(class_ids, tf.int64)
    same = tf.equal(ids[:, None], ids[None, :]) & (ids[:, None] >= 0)
    return same & ~tf.eye(batch, dtype=tf.bool)


def _both_ways(scores, class_ids) -> tuple[tf.Tensor, tf.Tensor]:
    """(images choosing captions, captions choosing images) cross-entropies of scores [images, captions]."""
    batch = tf.shape(scores)[0]
    scores = tf.where(same_class_mask(class_ids, batch), _MASKED, scores)
    targets = tf.range(batch)
    image_to_text = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, scores)
    text_to_image = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, tf.transpose(scores))
    return tf.reduce_mean(image_to_text), tf.reduce_mean(text_to_image)


def _cosine(a, b, axis=-1):
    dot = tf.reduce_sum(a * b, axis=axis)
    return dot / tf.maximum(tf.norm(a, axis=axis) * tf.norm(b, axis=axis), 1e-8)


def word_scores(words, lengths, regions, gamma1: float, gamma2: float) -> tf.Tensor:
    """[captions, images] word-level matching scores (before gamma3)."""
    words = tf.cast(words, tf.float32)  # [B, T, D]
    regions = tf.cast(regions, tf.float32)  # [B, R, D]
    steps = tf.shape(words)[1]
    real = tf.sequence_mask(lengths, steps, dtype=tf.float32)  # [B, T]
    dots = tf.einsum("itd,jrd->ijrt", words, regions)  # caption i, image j, region r, word t
    dots = dots + _MASKED * (1.0 - real)[:, None, None, :]
    over_words = tf.nn.softmax(dots, axis=-1)
    over_regions = tf.nn.softmax(gamma1 * tf.transpose(over_words, [0, 1, 3, 2]), axis=-1)  # [i, j, t, r]
    context = tf.einsum("ijtr,jrd->ijtd", over_regions, regions)
    cosine = _cosine(words[:, None], context)  # [i, j, t]
    summed = tf.reduce_sum(tf.exp(gamma2 * cosine) * real[:, None, :], axis=-1)
    return tf.math.log(tf.maximum(summed, 1e-30))


def word_loss(words, lengths, regions, gamma1: float, gamma2: float, gamma3: float,
              class_ids=None) -> tuple[tf.Tensor, tf.Tensor]:
    """(image->text, text->image) word-level DAMSM losses of captions' words [B,T,D] and images' regions [B,R,D],
    over the global batch under tf.distribute."""
    words, lengths, regions, class_ids = _global(words, lengths, regions, class_ids)
    scores = word_scores(words, lengths, regions, gamma1, gamma2)
    return _both_ways(gamma3 * tf.transpose(scores), class_ids)


def sentence_loss(image_global, sentence, gamma3: float, class_ids=None) -> tuple[tf.Tensor, tf.Tensor]:
    """(image->text, text->image) sentence-level DAMSM losses of global image [B,D] and sentence [B,D] features,
    over the global batch under tf.distribute."""
    image_global, sentence, class_ids = _global(image_global, sentence, class_ids)
    image = tf.cast(image_global, tf.float32)
    text = tf.cast(sentence, tf.float32)
    scores = _cosine(image[:, None, :], text[None, :, :])  # [images, captions]
    return _both_ways(gamma3 * scores, class_ids)


def _global(*tensors):
    """Every replica's rows of each tensor (None stays None); the losses above are the same in any row order."""
    return [None if t is None else replicas.gather(t) for t in tensors]


def generated_image_loss(image_encoder, images, words, mask, sentence, gammas: tuple[float, float, float],
                         class_ids=None, word_scale: float = 1.0) -> tuple[tf.Tensor, tf.Tensor]:
    """(word, sentence) DAMSM losses of generated images against their captions, both directions summed, as the
    generator losses of AttnGAN, DM-GAN and SSA-GAN take them from the frozen pretrained encoders.

    The word-level attention is not blind to the words' scale, so words are divided by `word_scale` (the exported
    text encoder's calibration, see training/pretrain.py) to match the features the encoders were pretrained with."""
    gamma1, gamma2, gamma3 = gammas
    features = image_encoder(images, training=False)
    lengths = tf.cast(tf.reduce_sum(mask, axis=1), tf.int32)
    words = tf.cast(words, tf.float32) / word_scale
    w_image_to_text, w_text_to_image = word_loss(words, lengths, features["regions"], gamma1, gamma2, gamma3,
                                                 class_ids)
    s_image_to_text, s_text_to_image = sentence_loss(features["global"], sentence, gamma3, class_ids)
    return w_image_to_text + w_text_to_image, s_image_to_text + s_text_to_image
