"""SSA-GAN backbone: official layout and defaults, the mask resize and the masked affine against references, losses."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import alternating_gan_step

from t2ictl.losses import damsm
from t2ictl.losses.adversarial import hinge_fake
from t2ictl.models.backbones import backbone_class, config_class
from t2ictl.models.backbones.base import Encoders
from t2ictl.models.backbones.layers import discriminator_widths, generator_widths
from t2ictl.models.backbones.ssagan import SSAGAN, AlignedBilinearResize, MaskedAffine, SSAGANConfig
from t2ictl.models.image_encoder import build_image_encoder
from t2ictl.models.text_encoder import TextFeatures, build_text_encoder

SIZE, TEXT_DIM, WORDS, BATCH = 32, 8, 5, 4
SMALL = {"nf": 4, "affine_hidden": 8}


def make_backbone(seed: int = 0, **config) -> SSAGAN:
    keras.utils.set_random_seed(seed)
    encoders = Encoders(build_text_encoder(20, WORDS, 8, TEXT_DIM),
                        build_image_encoder("small", SIZE, TEXT_DIM, width=4), 3.0)
    backbone = SSAGAN(SSAGANConfig(**{**SMALL, **config}), SIZE, TEXT_DIM, WORDS, encoders)
    backbone.build()
    return backbone


@pytest.fixture(scope="module")
def trained() -> SSAGAN:
    backbone = make_backbone()
    rng = np.random.default_rng(5)
    for model in (backbone.generator, backbone.discriminator, backbone.discriminator_head):
        for weight in model.trainable_weights:  # move the zero-initialised gammas and affine outputs off zero
            weight.assign(weight.numpy() + 0.05 * rng.standard_normal(weight.shape).astype("float32"))
    return backbone


def text_batch(seed: int = 1) -> TextFeatures:
    rng = np.random.default_rng(seed)
    return TextFeatures(tf.constant(rng.standard_normal((BATCH, WORDS, TEXT_DIM)), tf.float32),
                        tf.constant(rng.standard_normal((BATCH, TEXT_DIM)), tf.float32), tf.ones((BATCH, WORDS)))


def noise_batch(seed: int = 2) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).standard_normal((BATCH, 100)), tf.float32)


def generate(backbone, noise, text: TextFeatures, training: bool = False) -> dict:
    return backbone.generator(text.generator_inputs(noise), training=training)


def test_registry_and_defaults_follow_the_official_code():
    assert backbone_class("ssagan") is SSAGAN and config_class("ssagan") is SSAGANConfig
    c = SSAGANConfig()
    assert (c.nf, c.z_dim, c.g_lr, c.d_lr, c.beta_1, c.beta_2) == (64, 100, 1e-4, 4e-4, 0.0, 0.9)  # cfg, main.py
    assert (c.gp_weight, c.gp_power, c.damsm_weight, c.affine_hidden) == (2.0, 6.0, 0.05, 256)
    assert (c.gamma1, c.gamma2, c.gamma3) == (5.0, 5.0, 10.0)  # miscc/config.py


def test_widths_follow_netg_and_netd_at_256_px():
    assert [8] + generator_widths(256) == [8, 8, 8, 8, 8, 4, 2, 1]  # block0 .. block6
    assert discriminator_widths(256, SSAGAN.d_width_cap) == [1, 2, 4, 8, 16, 16, 16]  # conv_img, block0 .. block5


def test_aligned_bilinear_resize_matches_tensorflow_align_corners():
    x = tf.constant(np.random.default_rng(0).standard_normal((2, 4, 4, 1)), tf.float32)
    expected = tf.compat.v1.image.resize_bilinear(x, (8, 8), align_corners=True)
    np.testing.assert_allclose(AlignedBilinearResize(8)(x).numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_masked_affine_matches_the_formula():
    rng = np.random.default_rng(1)
    layer = MaskedAffine(3, TEXT_DIM, 6)
    x = rng.standard_normal((BATCH, 4, 4, 3)).astype("float32")
    sentence = rng.standard_normal((BATCH, TEXT_DIM)).astype("float32")
    mask = rng.uniform(size=(BATCH, 4, 4, 1)).astype("float32")
    start = layer(x, sentence, mask, training=True).numpy()
    normalised = (x - x.mean(axis=(0, 1, 2))) / np.sqrt(x.var(axis=(0, 1, 2)) + 1e-5)
    np.testing.assert_allclose(start, normalised, rtol=1e-3, atol=1e-4)  # gamma, beta start at zero: plain BN
    for weight in layer.trainable_weights:
        weight.assign(rng.standard_normal(weight.shape).astype("float32"))
    mlp = lambda hidden, out: np.maximum(sentence @ hidden.kernel.numpy() + hidden.bias.numpy(), 0) @ \
        out.kernel.numpy() + out.bias.numpy()  # noqa: E731
    gamma = mlp(layer.gamma_hidden, layer.gamma_out)[:, None, None]
    beta = mlp(layer.beta_hidden, layer.beta_out)[:, None, None]
    expected = (1 + gamma * mask) * normalised + beta * mask
    np.testing.assert_allclose(layer(x, sentence, mask, training=True).numpy(), expected, rtol=1e-3, atol=1e-3)


def test_the_generator_also_returns_its_last_mask(trained):
    out = generate(trained, noise_batch(), text_batch())
    assert out["mask"].shape == (BATCH, SIZE, SIZE, 1)  # the last block's mask, predicted at 16 px and resized
    mask = out["mask"].numpy()
    assert mask.min() >= 0.0 and mask.max() <= 1.0 and mask.std() > 0


def test_mismatched_pairs_and_the_generator_loss_follow_main_py(trained):
    text, noise = text_batch(), noise_batch()
    real = {SIZE: tf.random.stateless_uniform((BATCH, SIZE, SIZE, 3), (1, 2), -1, 1)}
    out = generate(trained, noise, text, training=True)
    terms = trained.discriminator_loss(real, out["images"], text)
    features = trained.discriminator(real[SIZE], training=True)
    wrong = trained.judge(features[:-1], text.sentence[1:])
    assert wrong.shape == (BATCH - 1, 1)
    np.testing.assert_allclose(float(terms["mismatch"]), float(hinge_fake(wrong)), rtol=1e-5)
    class_ids = tf.constant([0, 0, 2, 1])
    g = trained.generator_loss(out, text, class_ids)
    regions = trained.encoders.image(out["images"][-1], training=False)
    w0, w1 = damsm.word_loss(text.words / 3.0, tf.fill([BATCH], WORDS), regions["regions"], 5.0, 5.0, 10.0, class_ids)
    s0, s1 = damsm.sentence_loss(regions["global"], text.sentence, 10.0, class_ids)
    adversarial = -float(tf.reduce_mean(trained.judge(trained.discriminator(out["images"][-1], training=True),
                                                      text.sentence)))
    np.testing.assert_allclose(float(g["adversarial"]), adversarial, rtol=1e-5)
    np.testing.assert_allclose(float(g["loss"]), adversarial + 0.05 * float(w0 + w1 + s0 + s1), rtol=1e-4)




def test_discriminator_loss_falls_in_a_short_overfit_run():
    backbone = make_backbone()
    text, noise = text_batch(), noise_batch()
    real = {SIZE: tf.random.stateless_uniform((BATCH, SIZE, SIZE, 3), (5, 6), -1, 1)}
    step = alternating_gan_step(backbone, real, noise, text)

    def losses():
        d_terms, g_terms = step()
        return d_terms["real"] + d_terms["fake"], g_terms["damsm_words"] + g_terms["damsm_sentence"]

    history = np.array([[float(v) for v in losses()] for _ in range(20)])
    assert np.all(np.isfinite(history))
    hinge, damsm_terms = history.T
    assert np.mean(hinge[-5:]) < hinge[0] - 0.05, hinge
    assert np.mean(damsm_terms[-5:]) < damsm_terms[0], damsm_terms
