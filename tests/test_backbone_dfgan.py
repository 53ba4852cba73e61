"""DF-GAN backbone: architecture, initialisation, hinge + MA-GP losses, gradients, determinism, a short training run."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from t2ictl import recipes
from t2ictl.errors import UserError
from t2ictl.losses import damsm
from t2ictl.losses.adversarial import matching_aware_penalty
from t2ictl.models.backbones import backbone_class, config_class
from t2ictl.models.backbones.base import Encoders
from t2ictl.models.backbones.dfgan import DFGAN, DFGANConfig
from t2ictl.models.backbones.diffaugment import cutout, translate
from t2ictl.models.backbones.layers import discriminator_widths, generator_widths
from t2ictl.models.image_encoder import build_image_encoder
from t2ictl.models.text_encoder import TextFeatures, build_text_encoder
from t2ictl.training.gan import build_optimizers

SIZE, NF, TEXT_DIM, WORDS, BATCH = 32, 4, 8, 5, 4


def make_backbone(seed: int = 0, **config) -> DFGAN:
    keras.utils.set_random_seed(seed)
    backbone = DFGAN(DFGANConfig(nf=NF, **config), SIZE, TEXT_DIM, WORDS)
    backbone.build()
    return backbone


@pytest.fixture(scope="module")
def fresh() -> DFGAN:
    """A backbone as built (read only)."""
    return make_backbone()


@pytest.fixture(scope="module")
def trained() -> DFGAN:
    """A backbone whose weights have all left their start (read only)."""
    backbone = make_backbone()
    for model, seed in ((backbone.generator, 5), (backbone.discriminator, 6), (backbone.discriminator_head, 7)):
        perturb(model, seed)
    return backbone


def perturb(model: keras.Model, seed: int, scale: float = 0.05) -> None:
    """Move every weight off its start, so that zero-initialised layers (the affine outputs, D's residual gammas)
    pass signal and gradients like they do after some training."""
    rng = np.random.default_rng(seed)
    model.set_weights([w + scale * rng.standard_normal(w.shape).astype(w.dtype) for w in model.get_weights()])


def text_batch(seed: int = 1, batch: int = BATCH) -> TextFeatures:
    rng = np.random.default_rng(seed)
    words = tf.constant(rng.standard_normal((batch, WORDS, TEXT_DIM)), tf.float32)
    sentence = tf.constant(rng.standard_normal((batch, TEXT_DIM)), tf.float32)
    return TextFeatures(words, sentence, tf.ones((batch, WORDS)))


def noise_batch(seed: int = 2, batch: int = BATCH, dim: int = 100) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).standard_normal((batch, dim)), tf.float32)


def real_batch(seed: int = 3, batch: int = BATCH) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).uniform(-1, 1, (batch, SIZE, SIZE, 3)), tf.float32)


def generate(generator: keras.Model, noise, text: TextFeatures, training: bool = False) -> dict:
    return generator(text.generator_inputs(noise), training=training)


def logits_of(backbone: DFGAN, images, sentence) -> np.ndarray:
    return backbone.judge(backbone.discriminator(images), sentence).numpy().reshape(-1)


# ---------------------------------------------------------------------------------------------------------------------
# config and architecture


def test_registry_and_defaults_follow_the_official_code():
    assert backbone_class("dfgan") is DFGAN and config_class("dfgan") is DFGANConfig
    c = DFGANConfig()
    assert (c.backbone, c.nf, c.z_dim) == ("dfgan", 32, 100)
    assert (c.g_lr, c.d_lr, c.beta_1, c.beta_2) == (1e-4, 4e-4, 0.0, 0.9)
    assert (c.gp_weight, c.gp_power, c.damsm_weight) == (2.0, 6.0, 0.0)  # DF-GAN has no DAMSM term
    assert "damsm_weight" in c.departures
    c.validate()
    assert c.image_sizes(64) == [64]
    assert DFGAN(DFGANConfig(z_dim=17), 64, 256, 18).noise_dim == 17


@pytest.mark.parametrize("key, value, message", [
    ("nf", 0, "nf: must be a positive integer, got 0"),
    ("z_dim", -3, "z_dim: must be a positive integer, got -3"),
    ("g_lr", 0.0, "g_lr: must be positive"),
    ("d_lr", -1e-4, "d_lr: must be positive"),
    ("gp_power", 0.0, "gp_power: must be positive"),
    ("beta_1", 1.0, r"beta_1: must be in \[0, 1\)"),
    ("beta_2", -0.1, r"beta_2: must be in \[0, 1\)"),
    ("gp_weight", -2.0, "gp_weight: must be zero or positive"),
    ("damsm_weight", -0.1, "damsm_weight: must be zero or positive"),
    ("gamma3", 0.0, "gamma3: must be positive"),
    ("augment", ["translation", "colour"], r"augment: unknown \['colour'\]"),
])
def test_config_validation_names_the_key(key, value, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        DFGANConfig(**{key: value}).validate()


def test_recipe_model_section_reaches_the_config():
    assert recipes.recipe_from_dict({"model": {"backbone": "dfgan", "nf": 16}}).model == DFGANConfig(nf=16)
    with pytest.raises(UserError, match="model.nf: must be a positive integer, got 0"):
        recipes.recipe_from_dict({"model": {"backbone": "dfgan", "nf": 0}})


@pytest.mark.parametrize("size", [48, 4, 0])
def test_image_size_must_be_a_power_of_two(size):
    with pytest.raises(UserError, match="data.image_size: DF-GAN needs a power of two"):
        DFGAN(DFGANConfig(), size, 256, 18)


def test_channel_widths_follow_get_G_and_get_D_in_out_chs():
    assert generator_widths(256) == [8, 8, 8, 8, 4, 2, 1]  # six G blocks, 4 -> 256
    assert generator_widths(64) == [8, 8, 4, 2, 1]
    assert generator_widths(32) == [8, 4, 2, 1]
    assert discriminator_widths(256) == [1, 2, 4, 8, 8, 8, 8]
    assert discriminator_widths(128) == [1, 2, 4, 8, 8, 8]


def expected_parameter_counts(nf: int, size: int, text_dim: int, z_dim: int = 100) -> tuple[int, int, int]:
    """G, D and head parameters counted layer by layer from the official NetG / NetD / NetC (D without the 1x1
    shortcut conv the official D_Block builds but does not use when its channels stay the same)."""
    condition = z_dim + text_dim
    levels = int(math.log2(size)) - 1
    g_channels = [nf * min(2**i, 8) for i in range(levels)][::-1]
    affine = lambda c: 2 * (condition * c + c + c * c + c)  # noqa: E731  gamma and beta MLPs
    g = z_dim * 16 * 8 * nf + 16 * 8 * nf
    for cin, cout in zip(g_channels[:-1], g_channels[1:]):
        g += 9 * cin * cout + cout + 9 * cout * cout + cout + 2 * affine(cin) + 2 * affine(cout)
        g += cin * cout + cout if cin != cout else 0
    g += 9 * nf * 3 + 3
    d_channels = g_channels[::-1]
    d = 9 * 3 * nf + nf
    for cin, cout in zip(d_channels[:-1], d_channels[1:]):
        d += 16 * cin * cout + 9 * cout * cout + 1 + (cin * cout + cout if cin != cout else 0)
    head = 9 * (8 * nf + text_dim) * 2 * nf + 16 * 2 * nf
    return g, d, head


@pytest.mark.parametrize("size", [32, 64])
def test_parameter_counts_match_the_official_layers(size):
    backbone = DFGAN(DFGANConfig(nf=NF), size, TEXT_DIM, WORDS)
    counts = (backbone.build_generator().count_params(), backbone.build_discriminator().count_params(),
              backbone.build_discriminator_head().count_params())
    assert counts == expected_parameter_counts(NF, size, TEXT_DIM)


def test_discriminator_features_logits_and_trackables(fresh):
    backbone = fresh
    text = text_batch()
    out = generate(backbone.generator, noise_batch(), text)
    assert list(out) == ["images"] and len(out["images"]) == 1
    images = out["images"][0]
    features = backbone.discriminator(images)
    assert features.shape == (BATCH, 4, 4, 8 * NF)
    logits = backbone.judge(features, text.sentence)
    assert logits.shape == (BATCH, 1) and logits.dtype == tf.float32
    assert backbone.discriminator_variables == (backbone.discriminator.trainable_variables
                                                + backbone.discriminator_head.trainable_variables)
    assert set(backbone.trackables()) == {"generator", "discriminator", "discriminator_head"}


def test_initialisation_follows_the_official_code(fresh):
    backbone = fresh
    by_path = {w.path: w.numpy() for w in backbone.generator.weights}
    gamma_biases = [v for p, v in by_path.items() if p.endswith("gamma_out/bias")]
    beta_biases = [v for p, v in by_path.items() if p.endswith("beta_out/bias")]
    out_kernels = [v for p, v in by_path.items() if p.endswith("_out/kernel")]
    assert len(gamma_biases) == len(beta_biases) == 2 * 2 * (len(generator_widths(SIZE)) - 1)
    assert all(np.all(v == 1.0) for v in gamma_biases) and all(np.all(v == 0.0) for v in beta_biases)
    assert all(np.all(v == 0.0) for v in out_kernels)
    # every affine is the identity at the start, whatever the condition
    block = backbone.generator.get_layer("block_0")
    x = tf.random.normal((2, 8, 8, 8 * NF))
    condition = tf.random.normal((2, 100 + TEXT_DIM))
    np.testing.assert_allclose(block.fuse_1.first(x, condition).numpy(), x.numpy(), atol=1e-6)
    gammas = [w.numpy() for w in backbone.discriminator.weights if w.path.endswith("gamma")]
    assert len(gammas) == len(discriminator_widths(SIZE)) - 1 and all(g == 0.0 for g in gammas)
    # PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the RGB conv has fan_in 3 * 3 * nf
    rgb = backbone.generator.get_layer("to_rgb").kernel.numpy()
    bound = 1 / math.sqrt(9 * NF)
    assert np.abs(rgb).max() <= bound and np.abs(rgb).max() > 0.5 * bound


def test_closed_gates_leave_the_discriminator_affine_and_open_gates_do_not():
    """With the official zero gates D is an affine map of the image (RGB conv, 1x1 shortcuts, average pools), so at
    the start it sees only pooled colour; d_gate_init = 1 opens the non-linear residual branches."""
    x1, x2 = tf.random.normal((2, SIZE, SIZE, 3), seed=1), tf.random.normal((2, SIZE, SIZE, 3), seed=2)

    def nonlinearity(d_gate_init: float) -> float:
        d = make_backbone(d_gate_init=d_gate_init).discriminator
        f = lambda x: d(x, training=True).numpy()  # noqa: E731
        zero = f(tf.zeros_like(x1))
        return float(np.abs((f(x1 + x2) - zero) - (f(x1) - zero) - (f(x2) - zero)).max() / np.abs(f(x1) - zero).max())

    assert nonlinearity(0.0) < 1e-4
    assert nonlinearity(1.0) > 1e-2
    gammas = [w.numpy() for w in make_backbone(d_gate_init=1.0).discriminator.weights if w.path.endswith("gamma")]
    assert gammas and all(g == 1.0 for g in gammas)


# ---------------------------------------------------------------------------------------------------------------------
# determinism and conditioning


def test_words_and_mask_do_not_reach_the_image(trained):
    backbone = trained
    text, noise = text_batch(), noise_batch()
    first = generate(backbone.generator, noise, text)["images"][0].numpy()
    no_words = TextFeatures(tf.zeros_like(text.words), text.sentence, tf.zeros_like(text.mask))
    np.testing.assert_array_equal(generate(backbone.generator, noise, no_words)["images"][0].numpy(), first)


def test_project_condition_puts_the_sentence_into_the_first_map():
    """Every affine starts as the identity, so a fresh official generator ignores the sentence; with
    project_condition the first 4x4 map is made from (noise, sentence) and the sentence shapes the image at once."""
    text, noise = text_batch(), noise_batch()
    other_text = TextFeatures(text.words, text_batch(seed=9).sentence, text.mask)

    def sentence_effect(project_condition: bool) -> float:
        generator = make_backbone(project_condition=project_condition).generator
        images = [generate(generator, noise, t)["images"][0].numpy() for t in (text, other_text)]
        return float(np.abs(images[0] - images[1]).mean())

    assert sentence_effect(False) == 0.0
    assert sentence_effect(True) > 1e-3


def test_the_projection_head_adds_features_dot_projected_sentence():
    backbone = make_backbone(projection_head=True)
    perturb(backbone.discriminator_head, seed=4)
    text, features = text_batch(), backbone.discriminator(real_batch())
    project = backbone.discriminator_head.get_layer("project_sentence")
    kernel = project.get_weights()[0]
    with_projection = backbone.judge(features, text.sentence).numpy()
    project.set_weights([np.zeros_like(kernel)])
    without = backbone.judge(features, text.sentence).numpy()
    embedded = text.sentence.numpy() @ kernel
    expected = np.einsum("bhwc,bc->b", features.numpy(), embedded)[:, None] / 16.0  # the mean over the 4x4 map
    np.testing.assert_allclose(with_projection - without, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        make_backbone().discriminator_head.get_layer("project_sentence")


def test_translation_shifts_each_image_by_whole_pixels_with_zero_fill():
    images = tf.constant(np.random.default_rng(0).uniform(0.5, 1, (6, 16, 16, 3)), tf.float32)
    shifted = translate(images, tf.random.Generator.from_seed(1)).numpy()
    shifts = []
    for image, out in zip(images.numpy(), shifted):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if np.array_equal(out, shift_with_zeros(image, dy, dx))]
        assert len(matches) == 1  # a shift of at most 16 / 8 = 2 pixels each way
        shifts += matches
    assert len(set(shifts)) > 1  # each image has its own shift


def shift_with_zeros(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(image)
    size = image.shape[0]
    out[max(dy, 0):size + min(dy, 0), max(dx, 0):size + min(dx, 0)] = \
        image[max(-dy, 0):size + min(-dy, 0), max(-dx, 0):size + min(-dx, 0)]
    return out


def test_cutout_zeroes_one_square_of_half_the_size_clipped_at_the_border():
    images = tf.ones((64, 16, 16, 3))
    cut = cutout(images, tf.random.Generator.from_seed(2)).numpy()
    for out in cut:
        rows, cols = np.nonzero(out[..., 0] == 0)
        assert (out[..., 0] == 0).sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert rows.max() - rows.min() + 1 <= 8 and cols.max() - cols.min() + 1 <= 8
        assert (out == 0).all(axis=-1).sum() == (out == 0).any(axis=-1).sum()  # every channel alike
    assert max((out[..., 0] == 0).sum() for out in cut) == 64  # whole 8 x 8 squares away from the border


def test_the_discriminator_sees_augmented_real_and_generated_images():
    backbone = make_backbone(augment=["cutout"])
    text, real = text_batch(), real_batch()
    fake = generate(backbone.generator, noise_batch(), text)["images"]
    plain = make_backbone()
    assert set(backbone.trackables()) == set(plain.trackables()) | {"augment_noise"}
    before = backbone.augment_noise.state.numpy().copy()
    backbone.discriminator_loss({SIZE: real}, fake, text)
    backbone.generator_loss({"images": fake}, text, class_ids=tf.fill([BATCH], -1))
    assert not np.array_equal(backbone.augment_noise.state.numpy(), before)
    augmented = backbone.augmented(real).numpy()
    assert (augmented == 0).all(axis=-1).any() and not (real.numpy() == 0).all(axis=-1).any()


# ---------------------------------------------------------------------------------------------------------------------
# losses


def test_hinge_terms_match_numpy(trained):
    backbone = trained
    text, real = text_batch(), real_batch()
    fake = generate(backbone.generator, noise_batch(), text)["images"]
    terms = backbone.discriminator_loss({SIZE: real}, fake, text)
    assert set(terms) == {"loss", "real", "fake", "mismatch", "ma_gp"}
    assert all(v.dtype == tf.float32 and v.shape == () for v in terms.values())
    real_logits = logits_of(backbone, real, text.sentence)
    fake_logits = logits_of(backbone, fake[-1], text.sentence)
    # official pairing: sentence i meets image i + 1, the last sentence the first image
    mismatched_images = tf.gather(real, [(i + 1) % BATCH for i in range(BATCH)])
    mismatched_logits = logits_of(backbone, mismatched_images, text.sentence)
    expected = {"real": np.maximum(0, 1 - real_logits).mean(), "fake": np.maximum(0, 1 + fake_logits).mean(),
                "mismatch": np.maximum(0, 1 + mismatched_logits).mean()}
    for key, value in expected.items():
        np.testing.assert_allclose(terms[key].numpy(), value, rtol=1e-5, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(terms["loss"].numpy(), expected["real"] + (expected["fake"] + expected["mismatch"]) / 2
                               + terms["ma_gp"].numpy(), rtol=1e-5)
    g_terms = backbone.generator_loss({"images": fake}, text, class_ids=tf.fill([BATCH], -1))
    np.testing.assert_allclose(g_terms["loss"].numpy(), -fake_logits.mean(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weight, power", [(2.0, 6.0), (0.5, 2.0)])
def test_ma_gp_matches_per_pair_gradients(trained, weight, power):
    backbone = DFGAN(DFGANConfig(nf=NF, gp_weight=weight, gp_power=power), SIZE, TEXT_DIM, WORDS)
    backbone.generator, backbone.discriminator = trained.generator, trained.discriminator
    backbone.discriminator_head = trained.discriminator_head
    text, real = text_batch(), real_batch()
    fake = generate(backbone.generator, noise_batch(), text)["images"]
    penalty = backbone.discriminator_loss({SIZE: real}, fake, text)["ma_gp"].numpy()
    norms = []
    for i in range(BATCH):  # one pair at a time: the gradient of D(x_i, s_i) alone
        image, sentence = real[i:i + 1], text.sentence[i:i + 1]
        with tf.GradientTape() as tape:
            tape.watch([image, sentence])
            logit = backbone.judge(backbone.discriminator(image), sentence)[0, 0]
        grad_image, grad_sentence = tape.gradient(logit, [image, sentence])
        flat = np.concatenate([grad_image.numpy().ravel(), grad_sentence.numpy().ravel()]).astype(np.float64)
        norms.append(np.sqrt(np.sum(flat**2)))
    expected = weight * np.mean(np.array(norms) ** power)
    assert expected > 0
    np.testing.assert_allclose(penalty, expected, rtol=1e-4)


def test_matching_aware_penalty_formula():
    rng = np.random.default_rng(0)
    image_grads, sentence_grads = rng.standard_normal((3, 4, 4, 3)), rng.standard_normal((3, 5))
    norms = np.sqrt((image_grads**2).sum(axis=(1, 2, 3)) + (sentence_grads**2).sum(axis=1))
    value = matching_aware_penalty(tf.constant(image_grads, tf.float32), tf.constant(sentence_grads, tf.float32),
                                   2.0, 6.0)
    np.testing.assert_allclose(value.numpy(), 2.0 * np.mean(norms**6), rtol=1e-5)


def test_the_penalty_is_differentiated_through_its_own_gradient(trained):
    """MA-GP is a gradient norm: its own gradient (second order) must reach every kernel and gamma of D."""
    backbone = trained
    text, real = text_batch(), real_batch()
    fake = generate(backbone.generator, noise_batch(), text, training=True)
    d_vars = backbone.discriminator_variables
    with tf.GradientTape() as tape:
        terms = backbone.discriminator_loss({SIZE: real}, fake["images"], text)
    for var, grad in zip(d_vars, tape.gradient(terms["ma_gp"], d_vars)):
        if var.path.endswith(("kernel", "gamma")):
            assert grad is not None and np.abs(grad.numpy()).sum() > 0, var.path




# ---------------------------------------------------------------------------------------------------------------------
# a short training run


def test_discriminator_learns_to_separate_real_from_fake():
    """40 alternating D / G steps as the official loop, on one fixed batch with the default learning rates.

    At PyTorch's initial scale the logits start near 1e-3, so the changes are small but steady: D's hinge on real and
    fake pairs falls, D scores the real images above the generated ones, and the matching pairs above the mismatched
    ones (a margin the generator cannot take away, it sees real images only)."""
    backbone = make_backbone(seed=0)
    text, real, noise = text_batch(), real_batch(), noise_batch()
    mismatched = tf.gather(real, [(i + 1) % BATCH for i in range(BATCH)])
    g_vars, d_vars = backbone.generator.trainable_variables, backbone.discriminator_variables
    g_optimizer, d_optimizer = build_optimizers(backbone)

    @tf.function
    def step():
        with tf.GradientTape() as g_tape:
            fake = generate(backbone.generator, noise, text, training=True)
            with g_tape.stop_recording():
                with tf.GradientTape() as d_tape:
                    d_terms = backbone.discriminator_loss({SIZE: real}, [tf.stop_gradient(fake["images"][-1])],
                                                          text)
                d_optimizer.apply_gradients(zip(d_tape.gradient(d_terms["loss"], d_vars), d_vars))
            g_loss = backbone.generator_loss(fake, text, None)["loss"]
        g_optimizer.apply_gradients(zip(g_tape.gradient(g_loss, g_vars), g_vars))
        return d_terms["real"] + d_terms["fake"]

    def margins() -> tuple[float, float]:
        fake = generate(backbone.generator, noise, text)["images"][-1]
        real_logits = logits_of(backbone, real, text.sentence).mean()
        return (float(real_logits - logits_of(backbone, fake, text.sentence).mean()),
                float(real_logits - logits_of(backbone, mismatched, text.sentence).mean()))

    fake_margin, match_margin = margins()
    hinge = [float(step()) for _ in range(40)]
    assert d_optimizer.iterations.numpy() == g_optimizer.iterations.numpy() == 40
    assert np.mean(hinge[-10:]) < hinge[0] - 0.005
    fake_margin_after, match_margin_after = margins()
    assert fake_margin_after > fake_margin + 0.005
    assert match_margin_after > match_margin + 0.003


def test_the_damsm_option_adds_attngans_word_and_sentence_terms_to_the_generator_loss(fresh):
    text, noise, class_ids = text_batch(), noise_batch(), tf.constant([0, 0, 2, 1])
    assert set(fresh.generator_loss(generate(fresh.generator, noise, text), text, class_ids)) == {"loss"}
    keras.utils.set_random_seed(3)
    encoders = Encoders(build_text_encoder(20, WORDS, 8, TEXT_DIM), build_image_encoder("small", SIZE, TEXT_DIM,
                                                                                        width=4), 2.0)
    assert not DFGAN(DFGANConfig(nf=NF), SIZE, TEXT_DIM, WORDS, encoders).uses_image_encoder
    backbone = DFGAN(DFGANConfig(nf=NF, damsm_weight=0.7, gamma1=4.0), SIZE, TEXT_DIM, WORDS, encoders)
    backbone.build()
    assert backbone.uses_image_encoder
    with tf.GradientTape() as tape:
        out = generate(backbone.generator, noise, text, training=True)
        g = backbone.generator_loss(out, text, class_ids)
        matching = g["damsm_words"] + g["damsm_sentence"]
    regions = encoders.image(out["images"][-1], training=False)
    w0, w1 = damsm.word_loss(text.words / 2.0, tf.fill([BATCH], WORDS), regions["regions"], 4.0, 5.0, 10.0, class_ids)
    s0, s1 = damsm.sentence_loss(regions["global"], text.sentence, 10.0, class_ids)
    adversarial = -float(tf.reduce_mean(backbone.judge(backbone.discriminator(out["images"][-1], training=True),
                                                       text.sentence)))
    np.testing.assert_allclose(float(g["adversarial"]), adversarial, rtol=1e-5)
    np.testing.assert_allclose(float(g["damsm_words"]), float(w0 + w1), rtol=1e-4)
    np.testing.assert_allclose(float(g["loss"]), adversarial + 0.7 * float(w0 + w1 + s0 + s1), rtol=1e-4)
    grads = tape.gradient(matching, backbone.generator.trainable_variables)
    assert any(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads if g is not None)
