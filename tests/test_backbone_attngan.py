"""AttnGAN and DM-GAN backbones: official layout and defaults, attention and memory against NumPy, losses, training."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import alternating_gan_step

from t2ictl.errors import UserError
from t2ictl.losses import damsm
from t2ictl.losses.adversarial import bce, kl_divergence
from t2ictl.models.backbones import backbone_class, config_class
from t2ictl.models.backbones.attngan import AttnGAN, AttnGANConfig, WordAttention, discriminator_widths
from t2ictl.models.backbones.base import Encoders
from t2ictl.models.backbones.dmgan import DMGAN, MemoryRefinement, SpectralConv2D
from t2ictl.models.image_encoder import build_image_encoder
from t2ictl.models.text_encoder import TextFeatures, build_text_encoder

SIZE, TEXT_DIM, WORDS, BATCH = 32, 8, 5, 4
SMALL = {"stages": 2, "gf_dim": 4, "df_dim": 4, "residual_blocks": 1}
LENGTHS = [5, 3, 2, 4]  # real words per caption; the rest is padding


def tiny_encoders(word_scale: float = 2.0) -> Encoders:
    keras.utils.set_random_seed(11)
    return Encoders(build_text_encoder(20, WORDS, 8, TEXT_DIM), build_image_encoder("small", SIZE, TEXT_DIM, width=4),
                    word_scale)


def make_backbone(name: str = "attngan", seed: int = 0, **config):
    keras.utils.set_random_seed(seed)
    backbone = backbone_class(name)(config_class(name)(**{**SMALL, **config}), SIZE, TEXT_DIM, WORDS, tiny_encoders())
    backbone.build()
    return backbone


def perturb(models, seed: int, scale: float = 0.05) -> None:
    rng = np.random.default_rng(seed)
    for model in models:
        for weight in model.trainable_weights:
            weight.assign(weight.numpy() + scale * rng.standard_normal(weight.shape).astype("float32"))


@pytest.fixture(scope="module", params=["attngan", "dmgan"])
def trained(request):
    backbone = make_backbone(request.param)
    perturb([backbone.generator] + backbone.discriminators + backbone.conditional_heads
            + backbone.unconditional_heads, seed=5)
    return backbone


def text_batch(seed: int = 1) -> TextFeatures:
    rng = np.random.default_rng(seed)
    mask = (np.arange(WORDS)[None] < np.array(LENGTHS)[:, None]).astype("float32")
    words = rng.standard_normal((BATCH, WORDS, TEXT_DIM)).astype("float32") * mask[..., None]
    sentence = rng.standard_normal((BATCH, TEXT_DIM)).astype("float32")
    return TextFeatures(tf.constant(words), tf.constant(sentence), tf.constant(mask))


def noise_batch(backbone, seed: int = 2) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).standard_normal((BATCH, backbone.noise_dim)), tf.float32)


def generate(backbone, noise, text: TextFeatures, training: bool = False) -> dict:
    return backbone.generator(text.generator_inputs(noise), training=training)


# ---------------------------------------------------------------------------------------------------------------------
# configuration and layout


def test_registry_and_defaults_follow_the_official_configs():
    assert backbone_class("attngan") is AttnGAN and backbone_class("dmgan") is DMGAN
    attn, dm = AttnGANConfig(), config_class("dmgan")()
    # bird_attn2.yml / config.py: 3 branches, GF 32, DF 64, Z 100, CONDITION 100, R_NUM 2, lr 2e-4, lambda 5
    assert (attn.stages, attn.gf_dim, attn.df_dim, attn.z_dim, attn.condition_dim, attn.residual_blocks) == \
        (3, 32, 64, 100, 100, 2)
    assert (attn.g_lr, attn.d_lr, attn.beta_1, attn.beta_2, attn.damsm_weight) == (2e-4, 2e-4, 0.5, 0.999, 5.0)
    assert (attn.gamma1, attn.gamma2, attn.gamma3, attn.kl_weight) == (4.0, 5.0, 10.0, 1.0)
    assert (dm.gf_dim, dm.df_dim) == (64, 32)  # bird_DMGAN.yml / coco_DMGAN.yml
    assert attn.image_sizes(256) == [64, 128, 256]


@pytest.mark.parametrize("key, value, message", [
    ("stages", 0, "stages: must be a positive integer"),
    ("g_lr", 0.0, "g_lr: must be positive"),
    ("beta_1", 1.0, r"beta_1: must be in \[0, 1\)"),
    ("damsm_weight", -1.0, "damsm_weight: must be zero or positive"),
])
def test_config_validation_names_the_key(key, value, message):
    with pytest.raises(ValueError, match=message):
        AttnGANConfig(**{key: value}).validate()


@pytest.mark.parametrize("size, stages", [(48, 1), (32, 4), (16, 3)])
def test_image_size_and_stages_are_checked(size, stages):
    with pytest.raises(UserError, match="data.image_size"):
        AttnGAN(AttnGANConfig(stages=stages), size, TEXT_DIM, WORDS)


def test_discriminator_widths_follow_d_net64_128_256():
    assert discriminator_widths(64) == [1, 2, 4, 8]  # encode_image_by_16times
    assert discriminator_widths(128) == [1, 2, 4, 8, 16, 8]  # + downBlock 16, Block3x3 8
    assert discriminator_widths(256) == [1, 2, 4, 8, 16, 32, 16, 8]  # + downBlock 16, 32, Block3x3 16, 8
    assert discriminator_widths(32) == [1, 2, 4, 8]  # three down blocks and one conv3x3 block up to 8 df


def test_generator_widths_and_parameter_count_of_the_first_stage():
    """A 1-stage 64-px AttnGAN at gf 2 against the official layer sizes counted by hand."""
    backbone = AttnGAN(AttnGANConfig(stages=1, gf_dim=2, df_dim=2), 64, TEXT_DIM, WORDS)
    generator = backbone.build_generator()
    gf, c, z = 2, 100, 100
    ngf = 16 * gf
    ca = TEXT_DIM * 4 * c + 4 * c
    fc = (c + z) * ngf * 16 * 2 + 2 * (ngf * 16 * 2)  # no bias; BN scale and shift
    ups = sum(9 * (ngf >> i) * 2 * (ngf >> (i + 1)) + 2 * 2 * (ngf >> (i + 1)) for i in range(4))
    rgb = 9 * gf * 3
    assert generator.count_params() - sum(int(np.prod(w.shape)) for w in generator.non_trainable_weights) == \
        ca + fc + ups + rgb


# ---------------------------------------------------------------------------------------------------------------------
# the generator


def test_conditioning_augmentation_outputs_and_the_noise_layout(trained):
    text = text_batch()
    out = generate(trained, noise_batch(trained), text)
    assert trained.noise_dim == 100 + out["mu"].shape[-1]  # z, then CA's epsilon
    assert out["mu"].shape == (BATCH, 100) and out["logvar"].shape == (BATCH, 100)


def test_the_ca_epsilon_part_of_the_noise_matters(trained):
    text, noise = text_batch(), noise_batch(trained)
    first = generate(trained, noise, text)["images"][-1].numpy()
    z_only = noise.numpy().copy()
    z_only[:, 100:] += 1.0  # the CA epsilon part of the noise
    assert np.abs(generate(trained, tf.constant(z_only), text)["images"][-1].numpy() - first).mean() > 1e-4


def test_padding_words_do_not_reach_the_image_and_real_words_do(trained):
    """Each example masks its own padding (the official attention's mask.repeat mixes examples' masks)."""
    text, noise = text_batch(), noise_batch(trained)
    before = generate(trained, noise, text)["images"][-1].numpy()
    words = text.words.numpy().copy()
    words[1, LENGTHS[1]:] = 50.0  # padding of example 1
    padded = generate(trained, noise, TextFeatures(tf.constant(words), text.sentence, text.mask))["images"][-1]
    np.testing.assert_allclose(padded.numpy(), before, atol=1e-5)
    words[1, 0] += 3.0  # a real word of example 1
    real = generate(trained, noise, TextFeatures(tf.constant(words), text.sentence, text.mask))["images"][-1].numpy()
    assert np.abs(real[1] - before[1]).mean() > 1e-5
    np.testing.assert_allclose(real[0], before[0], atol=1e-5)  # other examples untouched


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_word_attention_matches_numpy():
    rng = np.random.default_rng(0)
    text = text_batch()
    features = rng.standard_normal((BATCH, 3, 3, 6)).astype("float32")
    layer = WordAttention(6)
    out = layer(tf.constant(features), text.words, text.mask).numpy()
    context = text.words.numpy() @ layer.project.kernel.numpy()  # conv1x1 without bias: [B, T, C]
    scores = np.einsum("bhwc,btc->bhwt", features, context)
    scores = np.where(text.mask.numpy()[:, None, None, :] > 0, scores, -np.inf)
    expected = np.einsum("bhwt,btc->bhwc", softmax(scores), context)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_the_batch_shared_mask_is_the_official_repeat_of_the_mask_over_pixels():
    rng = np.random.default_rng(2)
    text = text_batch()
    features = rng.standard_normal((BATCH, 3, 2, 6)).astype("float32")
    layer = WordAttention(6, batch_shared_mask=True)
    out = layer(tf.constant(features), text.words, text.mask).numpy()
    context = text.words.numpy() @ layer.project.kernel.numpy()
    pixels = 3 * 2  # the official attn.view(batch * queryL, sourceL) rows, masked by mask.repeat(queryL, 1)
    scores = np.einsum("bqc,btc->bqt", features.reshape(BATCH, pixels, 6), context).reshape(BATCH * pixels, -1)
    repeated = np.tile(text.mask.numpy(), (pixels, 1))
    weights = softmax(np.where(repeated > 0, scores, -np.inf)).reshape(BATCH, pixels, -1)
    expected = np.einsum("bqt,btc->bqc", weights, context).reshape(BATCH, 3, 2, 6)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    layer.batch_shared_mask = False  # the captions' lengths differ: masking each with its own padding differs
    assert np.abs(out - layer(tf.constant(features), text.words, text.mask).numpy()).max() > 1e-3


def test_memory_refinement_matches_the_dm_gan_equations():
    rng = np.random.default_rng(1)
    text = text_batch()
    features = rng.standard_normal((BATCH, 3, 3, 6)).astype("float32")
    layer = MemoryRefinement(6)
    out = layer(tf.constant(features), text.words, text.mask).numpy()
    w = {name: (d.kernel.numpy(), None if d.bias is None else d.bias.numpy()) for name, d in (
        ("A", layer.word_gate), ("B", layer.image_gate), ("M_w", layer.write_words), ("M_r", layer.write_image),
        ("key", layer.key), ("value", layer.value), ("r", layer.response))}
    relu = lambda x: np.maximum(x, 0)  # noqa: E731
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    words, mean = text.words.numpy(), features.mean(axis=(1, 2))
    gate = sigmoid(words @ w["A"][0] + (mean @ w["B"][0])[:, None, :])
    written_words = relu(words @ w["M_w"][0] + w["M_w"][1])
    written_image = relu(mean @ w["M_r"][0] + w["M_r"][1])[:, None]
    memory = written_words * gate + written_image * (1 - gate)
    key, value = relu(memory @ w["key"][0] + w["key"][1]), relu(memory @ w["value"][0] + w["value"][1])
    scores = np.where(text.mask.numpy()[:, None, None, :] > 0, np.einsum("bhwc,btc->bhwt", features, key), -np.inf)
    read = np.einsum("bhwt,btc->bhwc", softmax(scores), value)
    response = sigmoid(np.concatenate([features, read], -1) @ w["r"][0] + w["r"][1])
    refined = features * (1 - response) + read * response
    np.testing.assert_allclose(out, np.concatenate([refined, refined], -1), rtol=1e-4, atol=1e-5)


def test_spectral_conv_divides_by_the_top_singular_value():
    keras.utils.set_random_seed(3)
    layer = SpectralConv2D(5, 3)
    x = tf.constant(np.random.default_rng(3).standard_normal((2, 6, 6, 4)), tf.float32)
    for _ in range(60):  # one power iteration per training call converges to the top singular vector
        layer(x, training=True)
    kernel = layer.kernel.numpy()
    sigma = np.linalg.svd(kernel.reshape(-1, 5), compute_uv=False)[0]
    expected = tf.nn.conv2d(x, kernel / sigma, 1, "SAME").numpy() + layer.bias.numpy()
    np.testing.assert_allclose(layer(x, training=False).numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer(x, training=True).numpy(), expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# losses


def test_bce_and_kl_match_numpy():
    logits = np.array([[-2.0], [0.5], [3.0]], "float32")
    sigmoid = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(float(bce(logits, 1.0)), -np.log(sigmoid).mean(), rtol=1e-5)
    np.testing.assert_allclose(float(bce(logits, 0.0)), -np.log(1 - sigmoid).mean(), rtol=1e-5)
    mu, logvar = np.array([[0.3, -1.0]], "float32"), np.array([[0.2, -0.5]], "float32")
    expected = np.mean(0.5 * (mu**2 + np.exp(logvar) - 1 - logvar))
    np.testing.assert_allclose(float(kl_divergence(mu, logvar)), expected, rtol=1e-5)


def test_loss_terms_match_the_official_formulas(trained):
    text, noise = text_batch(), noise_batch(trained)
    out = generate(trained, noise, text, training=False)
    real = {16: tf.random.stateless_uniform((BATCH, 16, 16, 3), (1, 2), -1, 1),
            32: tf.random.stateless_uniform((BATCH, 32, 32, 3), (3, 4), -1, 1)}
    # DM-GAN's spectral norms take a power iteration on every training call: replay the loss's calls from the same state
    models = trained.discriminators + trained.conditional_heads + trained.unconditional_heads
    state = [(v, v.numpy()) for model in models for v in model.non_trainable_variables]
    d_terms = trained.discriminator_loss(real, out["images"], text)
    for variable, value in state:
        variable.assign(value)
    expected_d = 0.0
    for stage, size in enumerate((16, 32)):
        features, real_c, real_u = (t.numpy() for t in trained.stage_logits(stage, real[size], text.sentence))
        _, fake_c, fake_u = (t.numpy() for t in trained.stage_logits(stage, out["images"][stage], text.sentence))
        wrong_c = trained.conditional_heads[stage]([tf.constant(features[:-1]), text.sentence[1:]],
                                                   training=True).numpy()
        on = lambda logits, label: float(bce(logits, label))  # noqa: E731
        expected_d += (on(real_u, 1) + on(real_c, 1)) / 2 + (on(fake_u, 0) + on(fake_c, 0) + on(wrong_c, 0)) / 3
    np.testing.assert_allclose(float(d_terms["loss"]), expected_d, rtol=1e-4)

    class_ids = tf.constant([3, 3, 1, -1])
    g_terms = trained.generator_loss(out, text, class_ids)
    regions = trained.encoders.image(out["images"][-1], training=False)
    w0, w1 = damsm.word_loss(text.words / 2.0, tf.constant(LENGTHS), regions["regions"], 4.0, 5.0, 10.0, class_ids)
    s0, s1 = damsm.sentence_loss(regions["global"], text.sentence, 10.0, class_ids)
    np.testing.assert_allclose(float(g_terms["damsm_words"]), float(w0 + w1), rtol=1e-4)
    np.testing.assert_allclose(float(g_terms["damsm_sentence"]), float(s0 + s1), rtol=1e-4)
    expected_g = (float(g_terms["adversarial"]) + 5.0 * float(w0 + w1 + s0 + s1)
                  + float(kl_divergence(out["mu"], out["logvar"])))
    np.testing.assert_allclose(float(g_terms["loss"]), expected_g, rtol=1e-4)






@pytest.mark.parametrize("name", ["attngan", "dmgan"])
def test_losses_fall_in_a_short_overfit_run(name):
    """20 D / G steps on one fixed batch: the discriminators' loss and the generator's DAMSM terms fall."""
    backbone = make_backbone(name)
    text, noise = text_batch(), noise_batch(backbone)
    real = {16: tf.random.stateless_uniform((BATCH, 16, 16, 3), (5, 6), -1, 1),
            32: tf.random.stateless_uniform((BATCH, 32, 32, 3), (7, 8), -1, 1)}
    step = alternating_gan_step(backbone, real, noise, text)

    def losses():
        d_terms, g_terms = step()
        return d_terms["loss"], g_terms["damsm_words"] + g_terms["damsm_sentence"]

    history = np.array([[float(v) for v in losses()] for _ in range(20)])
    assert np.all(np.isfinite(history))
    d_loss, damsm_terms = history.T
    assert np.mean(d_loss[-5:]) < d_loss[0] - 0.05, d_loss
    assert np.mean(damsm_terms[-5:]) < 0.8 * damsm_terms[0], damsm_terms
