"""The ablation losses of contrastive.loss against NumPy loops written from their formulas, and both phases training
with each of them."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import manifest_of, tiny_recipe

from t2ictl.losses import supcon
from t2ictl.losses.label_classifier import label_classifier_loss
from t2ictl.losses.unicl import unicl_loss


def unicl_reference(images, texts, labels, temperature):
    """UniCL's bidirectional loss one anchor at a time: image i's positives are the texts whose label is i's (its own
    caption always), and the same from each text."""
    u = images / np.linalg.norm(images, axis=1, keepdims=True)
    v = texts / np.linalg.norm(texts, axis=1, keepdims=True)
    n = len(u)
    s = u @ v.T / temperature

    def positive(i, j):
        return i == j or (labels[i] >= 0 and labels[i] == labels[j])

    i2t = t2i = 0.0
    for i in range(n):
        positives = [j for j in range(n) if positive(i, j)]
        i2t += -np.mean([s[i, j] - np.log(np.sum(np.exp(s[i]))) for j in positives])
        t2i += -np.mean([s[j, i] - np.log(np.sum(np.exp(s[:, i]))) for j in positives])
    return (i2t + t2i) / n


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_unicl_matches_its_loop(temperature):
    rng = np.random.default_rng(0)
    images, texts = rng.normal(size=(10, 6)), rng.normal(size=(10, 6))
    labels = np.array([0, 1, 0, 2, 1, -1, 3, 0, 2, 4])  # -1, 3 and 4: only their own caption
    weights = supcon.positive_weights(labels)
    got = unicl_loss(images.astype(np.float32), texts.astype(np.float32), weights, temperature).numpy()
    np.testing.assert_allclose(got, unicl_reference(images, texts, labels, temperature), rtol=1e-5)


def test_unicl_falls_when_pairs_that_share_a_label_align():
    rng = np.random.default_rng(1)
    labels = np.array([0, 0, 1, 1, 2, 2])
    centres = rng.normal(size=(3, 8))
    aligned = centres[labels] + 0.05 * rng.normal(size=(6, 8))
    random = rng.normal(size=(6, 8))
    weights = supcon.positive_weights(labels)
    loss = lambda a, b: float(unicl_loss(a.astype(np.float32), b.astype(np.float32), weights, 0.1))  # noqa: E731
    assert loss(aligned, aligned) < loss(random, rng.normal(size=(6, 8))) - 1.0


def test_label_classifier_matches_cross_entropy_by_hand():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(5, 4))
    ids = np.array([0, 3, -1, 1, 3])
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = -np.mean([np.log(probabilities[i, ids[i]]) for i in range(5) if ids[i] >= 0])
    got = label_classifier_loss(logits.astype(np.float32), ids, np.zeros((5, 4)), multi_label=False).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    hot = (rng.random((5, 4)) < 0.4).astype(np.float64)
    sigmoid = 1 / (1 + np.exp(-logits))
    expected = -np.mean(hot * np.log(sigmoid) + (1 - hot) * np.log(1 - sigmoid))
    got = label_classifier_loss(logits.astype(np.float32), ids, hot, multi_label=True).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_unicl_gradients_reach_both_modalities():
    rng = np.random.default_rng(3)
    images = tf.Variable(rng.normal(size=(6, 4)).astype(np.float32))
    texts = tf.Variable(rng.normal(size=(6, 4)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = unicl_loss(images, texts, supcon.positive_weights(np.array([0, 0, 1, 1, 2, 2])), 0.2)
    for grad in tape.gradient(loss, [images, texts]):
        assert float(tf.reduce_max(tf.abs(grad))) > 1e-4


def _pretrain_phase(data_dir, run_path, *overrides):
    from t2ictl.data import pipeline
    from t2ictl.runs import open_run
    from t2ictl.training import loop
    from t2ictl.training.pretrain import PretrainPhase

    recipe = tiny_recipe(data_dir, *overrides)
    run = open_run(run_path, recipe, data_dir, "pretrain", resume=False)
    loop.prepare_runtime(recipe.runtime)
    phase = PretrainPhase(recipe, run.vocab(), manifest_of(data_dir), data_dir, run,
                          pipeline.steps_per_epoch(manifest_of(data_dir), recipe.data, True))
    loop.build(phase)
    return phase


def _paired_batch(phase):
    from t2ictl.data import pipeline

    return next(iter(pipeline.train_dataset(phase.data_dir, phase.recipe.data, phase.vocab, paired=True, seed=0)))


@pytest.mark.parametrize("loss", ["unicl", "classifier"])
def test_pretraining_with_an_ablation_loss_reaches_both_encoders_through_both_branches(shapes_data, tmp_path, loss):
    from t2ictl.training.branches import merge_branches

    phase = _pretrain_phase(shapes_data, tmp_path / "run", f'contrastive.loss="{loss}"')
    batch = _paired_batch(phase)
    images = {branch: tf.Variable(batch[branch]["image"]) for branch in ("a", "b")}
    with tf.GradientTape(persistent=True) as tape:
        paired = {branch: dict(batch[branch], image=images[branch]) for branch in ("a", "b")}
        terms = phase.losses(merge_branches(paired, True), training=True)
    assert "supcon" not in terms and float(terms[loss]) > 0
    for branch, grad in zip("ab", tape.gradient(terms[loss], [images["a"], images["b"]])):
        assert float(tf.reduce_max(tf.abs(grad))) > 0, branch
    trained = [phase.text_encoder, phase.image_encoder] + ([phase.label_head] if loss == "classifier" else [])
    for model in trained:
        grads = tape.gradient(terms[loss], model.trainable_variables)
        assert sum(float(tf.reduce_sum(tf.abs(g))) for g in grads if g is not None) > 0, model.name
    assert (phase.label_head is not None) == (loss == "classifier")


def _gan_phase(data_dir, encoders_run, *overrides):
    from t2ictl.runs import RunDir
    from t2ictl.training import gan, loop

    recipe = tiny_recipe(data_dir, *overrides, f'train.encoders="{encoders_run}"')
    run = RunDir(encoders_run)
    loop.prepare_runtime(recipe.runtime)
    phase = gan.GANPhase(recipe, run.vocab(), manifest_of(data_dir), data_dir, run, run.encoders)
    loop.build(phase)
    return phase


def test_gan_phase_with_the_label_head_real_features_and_shared_noise(shapes_data, short_run):
    phase = _gan_phase(shapes_data, short_run.path, 'contrastive.loss="classifier"',
                       'contrastive.gan_features="generated_and_real"', "contrastive.shared_noise=true")
    noise = phase.draw_noise(8).numpy()
    np.testing.assert_array_equal(noise[:4], noise[4:])
    head_before = [w.numpy().copy() for w in phase.label_head.weights]
    report = phase.train_step(_paired_batch(phase))
    assert np.isfinite(float(report["classifier"])) and float(report["d_label_head"]) > 0
    # the discriminator's step trained the head on the real images' features
    assert max(np.abs(w.numpy() - b).max() for w, b in zip(phase.label_head.weights, head_before)) > 0
    assert "label_head" in phase.trackables()


def test_gan_phase_with_unicl_over_generated_and_real_images(shapes_data, short_run):
    phase = _gan_phase(shapes_data, short_run.path, 'contrastive.loss="unicl"',
                       'contrastive.gan_features="generated_and_real"')
    noise = phase.draw_noise(8).numpy()
    assert np.abs(noise[:4] - noise[4:]).max() > 0.1  # each branch its own noise
    batch = _paired_batch(phase)
    from t2ictl.models.text_encoder import text_features
    from t2ictl.training.branches import merge_branches

    merged = merge_branches(batch, True)
    text = text_features(phase.encoders.text, merged["tokens"])
    images = tf.Variable(tf.zeros([32, 32, 32, 3]))
    with tf.GradientTape() as tape:
        loss = phase.contrastive_loss(images, merged, text, phase.real_features(merged["image"]))
    assert float(loss) > 0
    assert float(tf.reduce_max(tf.abs(tape.gradient(loss, images)))) > 0
    assert np.isfinite(float(phase.train_step(batch)["unicl"]))
