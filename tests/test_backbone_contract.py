"""The contract every backbone keeps with the GAN phase, sampling and export (models/backbones/base.py), run over
every registered backbone: shapes and ranges in and out, the same seed and noise giving the same weights and images,
a checkpoint restoring the same function, gradients to every trainable weight, float32 outputs under mixed precision.
Each backbone's own test file keeps only what is particular to it."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from t2ictl.models.backbones import BACKBONES, backbone_class, config_class
from t2ictl.models.backbones.base import AdamSettings, Encoders
from t2ictl.models.image_encoder import build_image_encoder
from t2ictl.models.text_encoder import TextFeatures, build_text_encoder

SIZE, TEXT_DIM, WORDS, BATCH = 32, 8, 5, 4
SMALL_CONFIGS = {
    "dfgan": {"nf": 4},
    "attngan": {"stages": 2, "gf_dim": 4, "df_dim": 4, "residual_blocks": 1},
    "dmgan": {"stages": 2, "gf_dim": 4, "df_dim": 4, "residual_blocks": 1},
    "ssagan": {"nf": 4, "affine_hidden": 8},
    "galip": {"clip": "tiny", "nf": 4, "mapper_channels": 8, "mapper_mid_channels": 4, "mapper_blocks": 1},
}
NAMES = sorted(SMALL_CONFIGS)


def test_every_registered_backbone_is_under_the_contract():
    from t2ictl.models.backbones.configs import AUGMENTATION_NAMES, CONFIGS
    from t2ictl.models.backbones.diffaugment import AUGMENTATIONS

    assert set(SMALL_CONFIGS) == set(BACKBONES) == set(CONFIGS)
    # the recipe loader reads the config classes without importing the backbones: both name the same class
    assert all(backbone_class(name).config_class is config_class(name) for name in BACKBONES)
    assert tuple(AUGMENTATIONS) == AUGMENTATION_NAMES


def tiny_encoders() -> Encoders:
    keras.utils.set_random_seed(11)
    return Encoders(build_text_encoder(20, WORDS, 8, TEXT_DIM), build_image_encoder("small", SIZE, TEXT_DIM, width=4),
                    2.0)


def make_backbone(name: str, seed: int = 0):
    encoders = tiny_encoders()
    keras.utils.set_random_seed(seed)
    backbone = backbone_class(name)(config_class(name)(**SMALL_CONFIGS[name]), SIZE, TEXT_DIM, WORDS, encoders)
    backbone.build()
    return backbone


def all_weights(backbone) -> list[np.ndarray]:
    return [w.numpy() for model in backbone.trackables().values() for w in model.weights]


def perturb(backbone, seed: int = 5, scale: float = 0.05) -> None:
    """Move every trainable weight off its start, so that zero-initialised layers (affine outputs, residual gammas)
    pass signal and gradients as they do after some training."""
    rng = np.random.default_rng(seed)
    for model in backbone.trackables().values():
        for weight in model.trainable_weights:
            weight.assign(weight.numpy() + scale * rng.standard_normal(weight.shape).astype("float32"))


@pytest.fixture(scope="module", params=NAMES)
def trained(request):
    backbone = make_backbone(request.param)
    perturb(backbone)
    return backbone


def text_batch(seed: int = 1) -> TextFeatures:
    rng = np.random.default_rng(seed)
    lengths = np.array([5, 3, 2, 4])
    mask = (np.arange(WORDS)[None] < lengths[:, None]).astype("float32")
    words = rng.standard_normal((BATCH, WORDS, TEXT_DIM)).astype("float32") * mask[..., None]
    sentence = rng.standard_normal((BATCH, TEXT_DIM)).astype("float32")
    return TextFeatures(tf.constant(words), tf.constant(sentence), tf.constant(mask))


def noise_batch(backbone, seed: int = 2) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).standard_normal((BATCH, backbone.noise_dim)), tf.float32)


def real_batches(backbone, seed: int = 3) -> dict[int, tf.Tensor]:
    rng = np.random.default_rng(seed)
    return {size: tf.constant(rng.uniform(-1, 1, (BATCH, size, size, 3)), tf.float32)
            for size in backbone.config.image_sizes(SIZE)}


def images_of(generator, noise, text: TextFeatures) -> list[np.ndarray]:
    return [x.numpy() for x in generator(text.generator_inputs(noise), training=False)["images"]]


def losses_of(backbone, noise, text: TextFeatures, class_ids=None) -> tuple[dict, dict]:
    generated = backbone.generator(text.generator_inputs(noise), training=True)
    fakes = [tf.stop_gradient(x) for x in generated["images"]]
    return (backbone.discriminator_loss(real_batches(backbone), fakes, text),
            backbone.generator_loss(generated, text, class_ids))


# ---------------------------------------------------------------------------------------------------------------------
# the generator


def test_images_come_at_every_size_smallest_first_in_range(trained):
    out = trained.generator(text_batch().generator_inputs(noise_batch(trained)), training=False)
    sizes = trained.config.image_sizes(SIZE)
    assert sizes[-1] == SIZE and sizes == sorted(sizes)
    assert [tuple(x.shape) for x in out["images"]] == [(BATCH, s, s, 3) for s in sizes]
    for images in out["images"]:
        assert images.dtype == tf.float32
        assert np.all(np.abs(images.numpy()) <= 1.0) and np.std(images.numpy()) > 0.01
    assert set(trained.generator.input) <= set(text_batch().generator_inputs(noise_batch(trained)))


def test_same_noise_same_images_and_noise_and_sentence_both_matter(trained):
    text, noise = text_batch(), noise_batch(trained)
    first = images_of(trained.generator, noise, text)[-1]
    np.testing.assert_array_equal(images_of(trained.generator, noise, text)[-1], first)
    assert np.abs(images_of(trained.generator, noise_batch(trained, seed=8), text)[-1] - first).mean() > 1e-4
    other = TextFeatures(text.words, text_batch(seed=9).sentence, text.mask)
    assert np.abs(images_of(trained.generator, noise, other)[-1] - first).mean() > 1e-4


def test_a_fresh_generator_given_the_weights_is_the_same_function(trained):
    """The GAN phase's EMA copy and a run reopened for sampling are both build_generator() plus set_weights."""
    text, noise = text_batch(), noise_batch(trained)
    copy = trained.build_generator()
    assert [w.path for w in copy.weights] == [w.path for w in trained.generator.weights]
    copy.set_weights(trained.generator.get_weights())
    np.testing.assert_allclose(images_of(copy, noise, text)[-1], images_of(trained.generator, noise, text)[-1],
                               atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# seeds and checkpoints


@pytest.mark.parametrize("name", NAMES)
def test_the_same_seed_builds_the_same_weights_and_another_seed_others(name):
    first = all_weights(make_backbone(name, seed=0))
    again = all_weights(make_backbone(name, seed=0))
    other = all_weights(make_backbone(name, seed=1))
    assert len(first) == len(again) == len(other)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(a.shape == b.shape and np.abs(a - b).max() > 0 for a, b in zip(first, other))


def test_a_checkpoint_of_the_trackables_restores_the_same_losses_and_images(trained, tmp_path):
    path = tf.train.Checkpoint(**trained.trackables()).write(str(tmp_path / "ckpt"))
    restored = make_backbone(trained.config.backbone, seed=7)
    tf.train.Checkpoint(**restored.trackables()).read(path).assert_existing_objects_matched()
    text, noise = text_batch(), noise_batch(trained)
    for a, b in zip(images_of(restored.generator, noise, text), images_of(trained.generator, noise, text)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # training=True draws no randomness of its own (no dropout): the losses repeat exactly
    for ours, theirs in zip(losses_of(restored, noise, text), losses_of(trained, noise, text)):
        assert set(ours) == set(theirs)
        for key in ours:
            np.testing.assert_allclose(float(ours[key]), float(theirs[key]), rtol=1e-4, atol=1e-6, err_msg=key)


def test_trackables_hold_the_generator_and_every_discriminator_variable(trained):
    trackables = trained.trackables()
    assert trackables["generator"] is trained.generator
    tracked = {id(v) for model in trackables.values() for v in model.trainable_variables}
    d_vars = trained.discriminator_variables
    assert d_vars and {id(v) for v in d_vars} <= tracked
    assert not {id(v) for v in d_vars} & {id(v) for v in trained.generator.trainable_variables}
    g_settings, d_settings = trained.optimizer_settings()
    assert isinstance(g_settings, AdamSettings) and isinstance(d_settings, AdamSettings)
    assert g_settings.learning_rate > 0 and d_settings.learning_rate > 0


# ---------------------------------------------------------------------------------------------------------------------
# losses and gradients


def test_loss_dicts_hold_a_finite_scalar_loss_and_reach_every_weight(trained):
    text, noise = text_batch(), noise_batch(trained)
    g_vars, d_vars = trained.generator.trainable_variables, trained.discriminator_variables
    assert len(g_vars) > 0 and len(d_vars) > 0
    with tf.GradientTape(persistent=True) as tape:
        d_terms, g_terms = losses_of(trained, noise, text, class_ids=tf.constant([0, 0, 2, -1]))
    for terms in (d_terms, g_terms):
        assert "loss" in terms
        for key, value in terms.items():
            assert value.shape == () and value.dtype == tf.float32 and np.isfinite(value.numpy()), key
    for loss, variables in ((g_terms["loss"], g_vars), (d_terms["loss"], d_vars)):
        for variable, grad in zip(variables, tape.gradient(loss, variables)):
            assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0, variable.path
    # the discriminator's loss takes the fakes as given: no gradient flows back into the generator
    assert all(grad is None for grad in tape.gradient(d_terms["loss"], g_vars))
    del tape


@pytest.mark.parametrize("name", NAMES)
def test_mixed_precision_computes_in_float16_and_returns_float32(name):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        backbone = make_backbone(name)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    models = list(backbone.trackables().values())
    assert all(any(layer.compute_dtype == "float16" for layer in model.layers) for model in models)
    text, noise = text_batch(), noise_batch(backbone)
    assert all(images.dtype == np.float32 for images in images_of(backbone.generator, noise, text))
    d_terms, g_terms = losses_of(backbone, noise, text)
    for key, value in {**d_terms, **{f"g_{k}": v for k, v in g_terms.items()}}.items():
        assert value.dtype == tf.float32 and np.isfinite(value.numpy()), key
