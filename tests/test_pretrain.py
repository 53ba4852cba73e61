"""Phase 1: DAMSM + supervised contrastive pretraining over two weight-sharing branches, on the embedded shapes."""

import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_recipe

from t2ictl.data import pipeline
from t2ictl.errors import UserError
from t2ictl.evaluation.representation import class_separation, retrieval_metrics
from t2ictl.runs import RunDir, load_encoders, open_run
from t2ictl.training import loop
from t2ictl.training.pretrain import PretrainPhase, pretrain


def manifest_of(data_dir):
    return json.loads((data_dir / "manifest.json").read_text())


def make_phase(data_dir, run_path, *overrides) -> PretrainPhase:
    recipe = tiny_recipe(data_dir, *overrides)
    run = open_run(run_path, recipe, data_dir, "pretrain", resume=False)
    steps = pipeline.steps_per_epoch(manifest_of(data_dir), recipe.data, recipe.contrastive.enabled)
    loop.prepare_runtime(recipe.runtime)
    phase = PretrainPhase(recipe, run.vocab(), manifest_of(data_dir), data_dir, run, steps)
    loop.build(phase)
    return phase


def first_batch(phase: PretrainPhase) -> dict:
    return next(iter(pipeline.train_dataset(phase.data_dir, phase.recipe.data, phase.vocab, paired=phase.paired,
                                            seed=0)))


def test_gradients_reach_every_encoder_weight_through_both_branches(shapes_data, tmp_path):
    from t2ictl.training.branches import merge_branches

    phase = make_phase(shapes_data, tmp_path / "run")
    batch = first_batch(phase)
    variables = phase.text_encoder.trainable_variables + phase.image_encoder.trainable_variables
    images = {branch: tf.Variable(batch[branch]["image"]) for branch in ("a", "b")}
    with tf.GradientTape(persistent=True) as tape:
        paired = {branch: dict(batch[branch], image=images[branch]) for branch in ("a", "b")}
        terms = phase.losses(merge_branches(paired, True), training=True)
    assert float(terms["supcon"]) > 0 and np.isfinite(float(terms["loss"]))
    for variable, grad in zip(variables, tape.gradient(terms["loss"], variables)):
        assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0, variable.path
    # the contrastive term alone reaches both branches' pixels and both encoders
    for branch, grad in zip("ab", tape.gradient(terms["supcon"], [images["a"], images["b"]])):
        assert float(tf.reduce_max(tf.abs(grad))) > 0, branch
    for encoder in (phase.text_encoder, phase.image_encoder):
        grads = tape.gradient(terms["supcon"], encoder.trainable_variables)
        assert sum(float(tf.reduce_sum(tf.abs(g))) for g in grads if g is not None) > 0, encoder.name


def test_the_two_branches_share_one_set_of_weights(shapes_data, tmp_path):
    phase = make_phase(shapes_data, tmp_path / "run")
    batch = first_batch(phase)
    swapped = {"a": batch["b"], "b": batch["a"]}
    from t2ictl.training.branches import merge_branches

    one = phase.losses(merge_branches(batch, True), training=False)
    two = phase.losses(merge_branches(swapped, True), training=False)
    # swapping the branches permutes the rows of one merged batch: every loss term is the same
    for key in one:
        np.testing.assert_allclose(float(one[key]), float(two[key]), rtol=1e-4)


def test_retrieval_metrics_match_a_direct_count():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(12, 6))
    sentence = image + rng.normal(scale=0.8, size=image.shape)
    labels = np.eye(3)[rng.integers(0, 3, 12)]
    metrics = retrieval_metrics(image, sentence, labels)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    similarity = unit(sentence) @ unit(image).T
    hits = sum(int(np.argmax(similarity[i]) == i) for i in range(12))
    assert metrics["text_to_image_r1"] == pytest.approx(hits / 12)
    assert metrics["chance_r1"] == pytest.approx(1 / 12)


def pretrain_run(data_dir, run_path, *overrides):
    recipe = tiny_recipe(data_dir, *overrides)
    run = open_run(run_path, recipe, data_dir, "pretrain", resume=False)
    return pretrain(recipe, data_dir, manifest_of(data_dir), run), run


@pytest.fixture(scope="module")
def trained_pair(shapes_data, tmp_path_factory):
    """Short pretraining with the contrastive loss on and off: same seed, data, steps and images per step (the plain
    run takes unpaired batches of twice the size)."""
    root = tmp_path_factory.mktemp("pretrain")
    on, run_on = pretrain_run(shapes_data, root / "on", "pretrain.epochs=10")
    off, _ = pretrain_run(shapes_data, root / "off", "pretrain.epochs=10", "contrastive.enabled=false",
                          "data.batch_size=32")
    return on, off, run_on


def test_short_pretraining_retrieves_far_above_chance(trained_pair):
    on, off, _ = trained_pair
    for metrics in (on, off):
        assert metrics["text_to_image_r5"] > 4 * 5 * metrics["chance_r1"], metrics  # 4x the chance of R@5


def test_contrastive_learning_clusters_same_label_image_text_features(trained_pair):
    on, off, _ = trained_pair
    # Fisher's ratio of between- to within-class scatter over the pool of image and sentence features of the held-out
    # split, the representation the default pool (contrastive.pretrain_features = "both") trains (measured 0.64 vs 0.27)
    assert on["joint_class_separation"] > 1.5 * off["joint_class_separation"], (on, off)


def test_an_image_pool_clusters_same_class_images_tightly(shapes_data, trained_pair, tmp_path):
    _, off, _ = trained_pair
    image_pool, _ = pretrain_run(shapes_data, tmp_path / "image-pool", "pretrain.epochs=10",
                                 'contrastive.pretrain_features="image"')
    # image features alone (measured 4.2 vs 1.25)
    assert image_pool["class_separation"] > 2 * off["class_separation"], (image_pool, off)
    assert image_pool["intra_class_cosine"] > off["intra_class_cosine"] + 0.1


def test_class_separation_matches_a_direct_computation():

    rng = np.random.default_rng(1)
    features = rng.normal(size=(9, 4))
    labels = np.eye(3)[[0, 0, 0, 1, 1, 1, 2, 2, 2]]
    groups = [features[0:3], features[3:6], features[6:9]]
    centre = features.mean(axis=0)
    between = sum(3 * np.sum((g.mean(axis=0) - centre) ** 2) for g in groups)
    within = sum(np.sum((g - g.mean(axis=0)) ** 2) for g in groups)
    assert class_separation(features, labels) == pytest.approx(between / within)


def test_the_run_holds_encoders_the_gan_phase_can_load(trained_pair):
    *_, run = trained_pair
    encoders, info = load_encoders(run.encoders)
    text = encoders.text
    assert info["text_dim"] == 32 and info["contrastive"] is True
    out = text(tf.constant([[5, 6, 7] + [0] * 15]), training=False)
    assert out["sentence"].shape == (1, 32) and out["words"].shape == (1, 18, 32)


def weights_of(phase_run: RunDir) -> list[np.ndarray]:
    encoders, _ = load_encoders(phase_run.encoders)
    return encoders.text.get_weights() + encoders.image.get_weights()


def test_interrupted_and_resumed_pretraining_ends_in_the_same_weights(shapes_data, short_run, tmp_path):
    straight = short_run  # pretrained unbroken with the same recipe and seed
    recipe = tiny_recipe(shapes_data)
    steps = pipeline.steps_per_epoch(manifest_of(shapes_data), recipe.data, True)
    first = tiny_recipe(shapes_data, "pretrain.epochs=1")  # stop after epoch 1 of 2, as an interrupt would
    run = open_run(tmp_path / "resumed", first, shapes_data, "pretrain", resume=False)
    pretrain(first, shapes_data, manifest_of(shapes_data), run)
    assert tf.train.latest_checkpoint(str(run.checkpoints("pretrain"))).endswith(f"-{steps}")
    run = open_run(tmp_path / "resumed", recipe, shapes_data, "pretrain", resume=True)
    pretrain(recipe, shapes_data, manifest_of(shapes_data), run)
    for a, b in zip(weights_of(straight), weights_of(run)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_resuming_with_another_vocabulary_is_refused(shapes_data, tmp_path):
    import shutil

    recipe = tiny_recipe(shapes_data, "pretrain.epochs=1")
    run = open_run(tmp_path / "run", recipe, shapes_data, "pretrain", resume=False)
    pretrain(recipe, shapes_data, manifest_of(shapes_data), run)
    other = tmp_path / "other-data"
    shutil.copytree(shapes_data, other)
    vocab = json.loads((other / "vocab.json").read_text())
    vocab["words"].append("zebra")
    vocab["counts"]["zebra"] = 1
    (other / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(UserError, match="vocabulary"):
        open_run(tmp_path / "run", recipe, other, "pretrain", resume=True)
