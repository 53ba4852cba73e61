"""The supervised contrastive and DAMSM losses against plain NumPy loops written from the papers' formulas."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from t2ictl.losses import damsm, mode_seeking, supcon


def _normalise(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def supcon_reference(features, labels, temperature):
    """Khosla et al. L^sup_out, one anchor at a time; labels are class ids or multi-hot rows ("any" shared label)."""
    z = _normalise(np.asarray(features, np.float64))
    labels = np.asarray(labels)
    n = len(z)
    losses = []
    for i in range(n):
        others = [a for a in range(n) if a != i]
        if labels.ndim == 1:
            positives = [p for p in others if labels[p] == labels[i] and labels[i] >= 0]
        else:
            positives = [p for p in others if np.any((labels[p] > 0) & (labels[i] > 0))]
        if not positives:
            continue
        denominator = sum(np.exp(z[i] @ z[a] / temperature) for a in others)
        losses.append(-np.mean([np.log(np.exp(z[i] @ z[p] / temperature) / denominator) for p in positives]))
    return float(np.mean(losses)) if losses else 0.0


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_supcon_matches_loop_single_label(temperature):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(12, 8)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1, 2, 3, 3, 0, 5, -1, 4])  # class 5, -1 and 4 have no positive
    got = supcon.supcon_from_labels(features, labels, temperature).numpy()
    np.testing.assert_allclose(got, supcon_reference(features, labels, temperature), rtol=1e-5)


def test_supcon_matches_loop_multi_label():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(10, 6)).astype(np.float32)
    labels = (rng.random((10, 5)) < 0.3).astype(np.float32)
    labels[3] = 0  # an image without any label: no positives, no NaN
    got = supcon.supcon_from_labels(features, labels, 0.2, rule="any").numpy()
    np.testing.assert_allclose(got, supcon_reference(features, labels, 0.2), rtol=1e-5)


def test_multi_label_rules():
    labels = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 0], [0, 0, 1]], np.float32)
    exact = supcon.positive_weights(labels, "exact").numpy()
    assert exact[0, 2] == 1 and exact[0, 1] == 0 and exact[0, 0] == 0
    jaccard = supcon.positive_weights(labels, "jaccard").numpy()
    np.testing.assert_allclose(jaccard[0, 1], 0.5)  # {a, b} vs {a}: 1 shared of 2
    assert jaccard[0, 3] == 0
    anyone = supcon.positive_weights(labels, "any").numpy()
    assert anyone[0, 1] == 1 and anyone[1, 3] == 0


def test_example_index_makes_own_pair_positive():
    weights = supcon.positive_weights(np.array([-1, -1, 2]), example_index=np.array([7, 7, 8])).numpy()
    np.testing.assert_array_equal(weights, [[0, 1, 0], [1, 0, 0], [0, 0, 0]])


def test_supcon_without_any_positive_is_zero_and_has_zero_gradient():
    features = tf.Variable(np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = supcon.supcon_from_labels(features, np.arange(4), 0.1)
    grad = tape.gradient(loss, features)
    assert loss.numpy() == 0.0
    assert np.all(np.isfinite(grad.numpy())) and np.all(grad.numpy() == 0)


def test_supcon_pulls_positives_together():
    """One gradient step on the features lowers the loss and raises the cosine of a positive pair."""
    rng = np.random.default_rng(3)
    features = tf.Variable(rng.normal(size=(8, 4)).astype(np.float32))
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])

    def cosine01():
        z = _normalise(features.numpy())
        return z[0] @ z[1]

    before, cos_before = None, cosine01()
    for _ in range(20):
        with tf.GradientTape() as tape:
            loss = supcon.supcon_from_labels(features, labels, 0.5)
        before = loss.numpy() if before is None else before
        features.assign_sub(0.5 * tape.gradient(loss, features))
    assert supcon.supcon_from_labels(features, labels, 0.5).numpy() < before
    assert cosine01() > cos_before


def test_supcon_xla_and_float16_agree_with_eager():
    rng = np.random.default_rng(4)
    features = rng.normal(size=(16, 8)).astype(np.float32)
    labels = rng.integers(0, 4, size=16)
    eager = supcon.supcon_from_labels(features, labels, 0.1).numpy()
    compiled = tf.function(lambda f, y: supcon.supcon_from_labels(f, y, 0.1), jit_compile=True)
    np.testing.assert_allclose(compiled(features, labels).numpy(), eager, rtol=1e-5)
    half = supcon.supcon_from_labels(features.astype(np.float16), labels, 0.1)
    assert half.dtype == tf.float32
    np.testing.assert_allclose(half.numpy(), eager, rtol=2e-2)


# --- DAMSM -------------------------------------------------------------------------------------------------------


def _softmax(x):
    e = np.exp(x - np.max(x))
    return e / e.sum()


def _cos(a, b):
    return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


def word_scores_reference(words, lengths, regions, gamma1, gamma2):
    """AttnGAN's words_loss inner loop: caption i (its real words only) against every image j."""
    batch = len(words)
    scores = np.zeros((batch, batch))
    for i in range(batch):
        w = words[i, : lengths[i]].astype(np.float64)  # [T_i, D]
        for j in range(batch):
            r = regions[j].astype(np.float64)  # [R, D]
            attn = np.stack([_softmax(r[k] @ w.T) for k in range(len(r))])  # per region, softmax over words
            attn = np.stack([_softmax(gamma1 * attn[:, t]) for t in range(len(w))])  # per word, over regions
            context = attn @ r  # [T_i, D]
            scores[i, j] = np.log(sum(np.exp(gamma2 * _cos(w[t], context[t])) for t in range(len(w))))
    return scores


def _cross_entropies(logits, masked):
    logits = np.where(masked, -1e9, logits)
    rows = [-np.log(_softmax(logits[k])[k]) for k in range(len(logits))]
    return float(np.mean(rows))


def test_word_scores_match_loop_and_ignore_padding():
    rng = np.random.default_rng(5)
    words = rng.normal(size=(3, 5, 4)).astype(np.float32)
    lengths = np.array([5, 2, 3])
    regions = rng.normal(size=(3, 6, 4)).astype(np.float32)
    got = damsm.word_scores(words, lengths, regions, 4.0, 5.0).numpy()
    np.testing.assert_allclose(got, word_scores_reference(words, lengths, regions, 4.0, 5.0), rtol=1e-4)
    words[1, 2:] = 100.0  # padding positions must not matter
    np.testing.assert_allclose(damsm.word_scores(words, lengths, regions, 4.0, 5.0).numpy(), got, rtol=1e-5)


def test_word_and_sentence_losses_match_loop_with_class_mask():
    rng = np.random.default_rng(6)
    words = rng.normal(size=(4, 3, 4)).astype(np.float32)
    lengths = np.array([3, 3, 2, 1])
    regions = rng.normal(size=(4, 5, 4)).astype(np.float32)
    class_ids = np.array([0, 1, 0, 2])
    masked = (class_ids[:, None] == class_ids[None, :]) & ~np.eye(4, dtype=bool)
    scores = 10.0 * word_scores_reference(words, lengths, regions, 4.0, 5.0)  # [captions, images]
    image_to_text, text_to_image = damsm.word_loss(words, lengths, regions, 4.0, 5.0, 10.0, class_ids)
    np.testing.assert_allclose(image_to_text.numpy(), _cross_entropies(scores.T, masked), rtol=1e-4)
    np.testing.assert_allclose(text_to_image.numpy(), _cross_entropies(scores, masked), rtol=1e-4)

    image, sentence = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    cosines = 10.0 * np.array([[_cos(image[i], sentence[j]) for j in range(4)] for i in range(4)])
    got_i2t, got_t2i = damsm.sentence_loss(image.astype(np.float32), sentence.astype(np.float32), 10.0, class_ids)
    np.testing.assert_allclose(got_i2t.numpy(), _cross_entropies(cosines, masked), rtol=1e-5)
    np.testing.assert_allclose(got_t2i.numpy(), _cross_entropies(cosines.T, masked), rtol=1e-5)


def test_damsm_compiles_with_xla():
    rng = np.random.default_rng(7)
    words = rng.normal(size=(4, 6, 8)).astype(np.float32)
    lengths = np.array([6, 4, 3, 1])
    regions = rng.normal(size=(4, 9, 8)).astype(np.float32)
    eager = damsm.word_loss(words, lengths, regions, 4.0, 5.0, 10.0)
    compiled = tf.function(lambda w, n, r: damsm.word_loss(w, n, r, 4.0, 5.0, 10.0), jit_compile=True)
    np.testing.assert_allclose([t.numpy() for t in compiled(words, lengths, regions)],
                               [t.numpy() for t in eager], rtol=1e-4)


def test_mode_seeking_matches_its_formula_and_punishes_a_collapsed_generator():
    rng = np.random.default_rng(0)
    images_a, images_b = rng.uniform(-1, 1, (2, 4, 8, 8, 3)).astype(np.float32)
    noise_a, noise_b = rng.standard_normal((2, 4, 16)).astype(np.float32)
    ratio = np.abs(images_a - images_b).mean() / np.abs(noise_a - noise_b).mean()
    np.testing.assert_allclose(mode_seeking.mode_seeking_ratio(images_a, images_b, noise_a, noise_b), ratio,
                               rtol=1e-5)
    np.testing.assert_allclose(mode_seeking.mode_seeking_loss(images_a, images_b, noise_a, noise_b),
                               1.0 / (ratio + mode_seeking.EPSILON), rtol=1e-5)
    collapsed = mode_seeking.mode_seeking_loss(images_a, images_a, noise_a, noise_b)
    assert float(collapsed) == pytest.approx(1.0 / mode_seeking.EPSILON)


def test_mode_seeking_pushes_images_of_different_noise_apart():
    images_b = tf.zeros((2, 4, 4, 3))
    images_a = tf.Variable(tf.fill((2, 4, 4, 3), 0.1))
    noise_a, noise_b = tf.ones((2, 8)), -tf.ones((2, 8))
    with tf.GradientTape() as tape:
        loss = mode_seeking.mode_seeking_loss(images_a, images_b, noise_a, noise_b)
    assert float(tf.reduce_max(tape.gradient(loss, images_a))) < 0  # descent moves images_a away from images_b
