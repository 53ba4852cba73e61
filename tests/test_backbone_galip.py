"""GALIP backbone and its frozen CLIP ViT: loading, architecture, frozen weights, losses, a short training run."""

from __future__ import annotations

import math
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import alternating_gan_step

from t2ictl import recipes
from t2ictl.errors import UserError
from t2ictl.models import clip
from t2ictl.models.backbones import backbone_class, config_class
from t2ictl.models.backbones.galip import GALIP, GALIPConfig, NearestResize, scaled_blocks
from t2ictl.models.text_encoder import TextFeatures

SIZE, NF, TEXT_DIM, WORDS, BATCH = 32, 4, 8, 5, 4
SMALL = {"clip": "tiny", "nf": NF, "mapper_channels": 8, "mapper_mid_channels": 4, "mapper_blocks": 2}


def make_backbone(seed: int = 0, **config) -> GALIP:
    keras.utils.set_random_seed(seed)
    backbone = GALIP(GALIPConfig(**{**SMALL, **config}), SIZE, TEXT_DIM, WORDS)
    backbone.build()
    return backbone


def perturb(model: keras.Model, seed: int, scale: float = 0.05) -> None:
    """Move every trainable weight off its start (zero-initialised gammas, betas and affine outputs pass signal and
    gradients after some training); the frozen CLIP weights are left alone."""
    rng = np.random.default_rng(seed)
    for weight in model.trainable_weights:
        weight.assign(weight.numpy() + scale * rng.standard_normal(weight.shape).astype("float32"))


@pytest.fixture(scope="module")
def trained() -> GALIP:
    backbone = make_backbone()
    for model, seed in ((backbone.generator, 5), (backbone.discriminator, 6), (backbone.discriminator_head, 7),
                        (backbone.sentence_projection, 8)):
        perturb(model, seed)
    return backbone


def text_batch(seed: int = 1, batch: int = BATCH) -> TextFeatures:
    rng = np.random.default_rng(seed)
    words = tf.constant(rng.standard_normal((batch, WORDS, TEXT_DIM)), tf.float32)
    sentence = tf.constant(rng.standard_normal((batch, TEXT_DIM)), tf.float32)
    return TextFeatures(words, sentence, tf.ones((batch, WORDS)))


def noise_batch(seed: int = 2, batch: int = BATCH) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).standard_normal((batch, 100)), tf.float32)


def real_batch(seed: int = 3, batch: int = BATCH) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).uniform(-1, 1, (batch, SIZE, SIZE, 3)), tf.float32)


def generate(generator, noise, text: TextFeatures, training: bool = False) -> dict:
    return generator(text.generator_inputs(noise), training=training)


def logits_of(backbone: GALIP, images, sentence) -> np.ndarray:
    maps, _ = backbone.clip_features(images)
    return backbone.judge(backbone.discriminator(maps), sentence).numpy()[:, 0]


def clip_weights(backbone: GALIP) -> list[np.ndarray]:
    return [w.numpy().copy() for w in backbone.vision.weights]


# ---------------------------------------------------------------------------------------------------------------------
# registry and config


def test_registry_and_official_defaults():
    assert backbone_class("galip") is GALIP and config_class("galip") is GALIPConfig
    c = GALIPConfig()
    assert (c.backbone, c.nf, c.z_dim, c.g_lr, c.d_lr) == ("galip", 64, 100, 1e-4, 4e-4)
    assert (c.beta_1, c.beta_2, c.gp_weight, c.gp_power, c.sim_weight) == (0.0, 0.9, 2.0, 6.0, 4.0)
    assert (c.mapper_channels, c.mapper_mid_channels, c.mapper_blocks) == (64, 32, 4)
    c.validate()
    assert GALIP(GALIPConfig(z_dim=17, clip="tiny"), 64, 256, 18).noise_dim == 17
    recipe = recipes.recipe_from_dict({"model": {"backbone": "galip", "clip": "tiny", "nf": 8}})
    assert recipe.model == GALIPConfig(clip="tiny", nf=8)


@pytest.mark.parametrize("key, value, message", [
    ("clip", "", "clip: must name"),
    ("nf", 0, "nf: must be a positive integer, got 0"),
    ("mapper_blocks", 0, "mapper_blocks: must be a positive integer, got 0"),
    ("d_lr", -1e-4, "d_lr: must be positive"),
    ("align_temperature", 0.0, "align_temperature: must be positive"),
    ("beta_2", 1.0, r"beta_2: must be in \[0, 1\)"),
    ("sim_weight", -4.0, "sim_weight: must be zero or positive"),
])
def test_config_validation_names_the_key(key, value, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        GALIPConfig(**{key: value}).validate()
    with pytest.raises(UserError, match=f"model.{message}"):
        recipes.recipe_from_dict({"model": {"backbone": "galip", key: value}})


def test_block_numbers_scale_to_smaller_vits():
    assert scaled_blocks((1, 4, 8), 12) == [1, 4, 8]
    assert scaled_blocks(tuple(range(1, 9)), 12) == list(range(1, 9))
    assert scaled_blocks((1, 4, 8), 4) == [0, 1, 2]
    assert scaled_blocks(tuple(range(1, 9)), 4) == [0, 1, 2]


def test_nearest_resize_is_pytorchs_nearest():
    x = np.arange(2 * 7 * 7 * 3, dtype="float32").reshape(2, 7, 7, 3)
    out = NearestResize(8)(tf.constant(x)).numpy()
    index = [math.floor(i * 7 / 8) for i in range(8)]  # F.interpolate(mode="nearest")
    np.testing.assert_array_equal(out, x[:, index][:, :, index])
    np.testing.assert_array_equal(NearestResize(14)(tf.constant(x)).numpy(), x.repeat(2, axis=1).repeat(2, axis=2))


# ---------------------------------------------------------------------------------------------------------------------
# the CLIP ViT


def test_clip_vision_encode_and_bridge_agree():
    keras.utils.set_random_seed(0)
    vision = clip.build_vision(clip.TINY)
    assert vision.trainable_weights == [] and len(vision.weights) > 0
    images = real_batch()
    maps, embedding = vision(images)
    g, w = clip.TINY.grid, clip.TINY.width
    assert maps.shape == (BATCH, clip.TINY.layers, g, g, w) and embedding.shape == (BATCH, clip.TINY.embed_dim)
    chosen, _ = vision.encode(images, [1, 3])
    np.testing.assert_allclose(chosen[0].numpy(), maps[:, 1].numpy(), atol=1e-5)
    # without prompts, the bridge on the patch embedding is the encoder's last map
    patches = vision.patch_embedding(vision.preprocess(images))
    empty = tf.zeros((BATCH, 0, w))
    np.testing.assert_allclose(vision.map(patches, empty, []).numpy(), maps[:, -1].numpy(), atol=1e-4)
    # a prompt joins one block only, and changes what follows
    prompts = tf.random.normal((BATCH, 1, w))
    prompted = vision.map(patches, prompts, [2]).numpy()
    assert np.abs(prompted - maps[:, -1].numpy()).mean() > 1e-3
    # images of any size are resized to the ViT's input, [-1, 1] mapped to [0, 1] and normalised as CLIP
    _, big = vision(tf.zeros((2, 64, 64, 3)))
    assert big.shape == (2, clip.TINY.embed_dim)
    constant = vision.preprocess(tf.fill((1, 20, 20, 3), 0.5)).numpy()
    assert constant.shape == (1, clip.TINY.image_size, clip.TINY.image_size, 3)
    expected = (0.75 - np.array([0.48145466, 0.4578275, 0.40821073])) / np.array([0.26862954, 0.26130258, 0.27577711])
    np.testing.assert_allclose(constant[0, 10, 10], expected, rtol=1e-5)


def test_tiny_is_the_same_vit_in_every_load():
    keras.utils.set_random_seed(1)
    first = clip.load_clip_vision("tiny")
    keras.utils.set_random_seed(2)
    second = clip.load_clip_vision("tiny")
    for a, b in zip(first.weights, second.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert np.std(first.projection.numpy()) > 0.1


def test_weights_file_round_trip(tmp_path):
    keras.utils.set_random_seed(3)
    vision = clip.build_vision(clip.TINY)
    path = tmp_path / "tiny.weights.h5"
    clip.save_weights(vision, path)
    loaded = clip.load_clip_vision(str(path))
    assert loaded.spec == clip.TINY and loaded.trainable_weights == []
    assert clip.weight_names(loaded) == clip.weight_names(vision)
    assert "block_3/attention/query/kernel" in clip.weight_names(vision)
    for a, b in zip(vision.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    images = real_batch()
    np.testing.assert_allclose(loaded(images)[1].numpy(), vision(images)[1].numpy(), atol=1e-6)


def openai_state(width: int, depth: int, patch: int, grid: int, embed: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A random state dict with OpenAI CLIP's ViT names and PyTorch layouts."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape: (0.2 * rng.standard_normal(shape)).astype("float32")  # noqa: E731
    state = {"visual.conv1.weight": normal(width, 3, patch, patch), "visual.class_embedding": normal(width),
             "visual.positional_embedding": normal(grid * grid + 1, width), "visual.proj": normal(width, embed)}
    for norm in ("ln_pre", "ln_post"):
        state[f"visual.{norm}.weight"], state[f"visual.{norm}.bias"] = 1 + normal(width), normal(width)
    for i in range(depth):
        b = f"visual.transformer.resblocks.{i}"
        state.update({f"{b}.attn.in_proj_weight": normal(3 * width, width), f"{b}.attn.in_proj_bias": normal(3 * width),
                      f"{b}.attn.out_proj.weight": normal(width, width), f"{b}.attn.out_proj.bias": normal(width),
                      f"{b}.mlp.c_fc.weight": normal(4 * width, width), f"{b}.mlp.c_fc.bias": normal(4 * width),
                      f"{b}.mlp.c_proj.weight": normal(width, 4 * width), f"{b}.mlp.c_proj.bias": normal(width)})
        for norm in ("ln_1", "ln_2"):
            state[f"{b}.{norm}.weight"], state[f"{b}.{norm}.bias"] = 1 + normal(width), normal(width)
    return state


def openai_forward(state: dict, pixels: np.ndarray, heads: int,
                   prompts: dict[int, np.ndarray] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """OpenAI's VisionTransformer.forward written out in numpy on normalised pixels [B, S, S, 3]: the tokens after
    every block and the embedding. `prompts` {block: [B, W]}: GALIP's CLIP_Mapper, a token appended to the
    sequence of that block and dropped after it."""
    prompts = prompts or {}
    g = lambda name: state[f"visual.{name}"].astype(np.float64)  # noqa: E731

    def norm(x, name):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-5) * g(f"{name}.weight") + g(f"{name}.bias")

    conv = g("conv1.weight")
    width, patch = conv.shape[0], conv.shape[2]
    batch, size = pixels.shape[0], pixels.shape[1]
    grid = size // patch
    tiles = pixels.reshape(batch, grid, patch, grid, patch, 3)
    x = np.einsum("bikjlc,ockl->bijo", tiles, conv).reshape(batch, grid * grid, width)
    x = np.concatenate([np.broadcast_to(g("class_embedding"), (batch, 1, width)), x], axis=1)
    x = norm(x + g("positional_embedding"), "ln_pre")
    outputs, hd, depth = [], width // heads, len([k for k in state if k.endswith("attn.in_proj_bias")])
    for i in range(depth):
        b = f"transformer.resblocks.{i}"
        if i in prompts:
            x = np.concatenate([x, prompts[i][:, None].astype(np.float64)], axis=1)
        h = norm(x, f"{b}.ln_1")
        qkv = h @ g(f"{b}.attn.in_proj_weight").T + g(f"{b}.attn.in_proj_bias")
        q, k, v = (t.reshape(batch, -1, heads, hd).transpose(0, 2, 1, 3) for t in np.split(qkv, 3, axis=-1))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        attended = (weights @ v).transpose(0, 2, 1, 3).reshape(batch, -1, width)
        x = x + attended @ g(f"{b}.attn.out_proj.weight").T + g(f"{b}.attn.out_proj.bias")
        h = norm(x, f"{b}.ln_2") @ g(f"{b}.mlp.c_fc.weight").T + g(f"{b}.mlp.c_fc.bias")
        h = h / (1 + np.exp(-1.702 * h))
        x = x + h @ g(f"{b}.mlp.c_proj.weight").T + g(f"{b}.mlp.c_proj.bias")
        if i in prompts:
            x = x[:, :-1]
        outputs.append(x)
    return outputs, norm(x[:, 0], "ln_post") @ g("proj")


def test_openai_state_dict_converts_to_the_same_function(tmp_path):
    state = openai_state(width=128, depth=2, patch=4, grid=3, embed=16)
    path = tmp_path / "ViT-tiny.npz"
    np.savez(path, **state)
    vision = clip.load_clip_vision(str(path))
    assert vision.spec == clip.VisionSpec(width=128, layers=2, patch=4, image_size=12, embed_dim=16, heads=2)
    images = real_batch(batch=2)
    pixels = vision.preprocess(images).numpy().astype(np.float64)
    maps, embedding = vision(images)
    tokens, expected_embedding = openai_forward(state, pixels, heads=2)
    np.testing.assert_allclose(embedding.numpy(), expected_embedding, rtol=1e-3, atol=1e-3)
    for index, expected in enumerate(tokens):
        np.testing.assert_allclose(maps[:, index].numpy(), expected[:, 1:].reshape(2, 3, 3, 128), rtol=1e-3,
                                   atol=1e-3)
    # the bridge: the patch embedding in, a prompt token in block 1 only
    prompt = np.random.default_rng(5).standard_normal((2, 128)).astype("float32")
    patches = vision.patch_embedding(vision.preprocess(images))
    bridged = vision.map(patches, tf.constant(prompt[:, None]), [1]).numpy()
    prompted_tokens, _ = openai_forward(state, pixels, heads=2, prompts={1: prompt})
    np.testing.assert_allclose(bridged, prompted_tokens[-1][:, 1:].reshape(2, 3, 3, 128), rtol=1e-3, atol=1e-3)
    assert np.abs(bridged - maps[:, -1].numpy()).mean() > 1e-2
    del state["visual.transformer.resblocks.1.mlp.c_fc.bias"]
    np.savez(path, **state)
    with pytest.raises(UserError, match="visual.transformer.resblocks.1.mlp.c_fc.bias is missing"):
        clip.load_clip_vision(str(path))


def test_openais_torchscript_archive_reads_as_its_state_dict(tmp_path):
    from torch_format import script_modules, write_zip

    state = openai_state(width=64, depth=2, patch=4, grid=3, embed=16, seed=1)
    half = {k: v.astype(np.float16) for k, v in state.items()}  # the released ViT-B-32.pt holds float16 tensors
    write_zip(tmp_path / "ViT-tiny.pt", script_modules(half), name="ViT-tiny")
    np.savez(tmp_path / "ViT-tiny.npz", **{k: v.astype(np.float32) for k, v in half.items()})
    images = real_batch(batch=2)
    from_archive = clip.load_clip_vision(str(tmp_path / "ViT-tiny.pt"))
    np.testing.assert_array_equal(from_archive(images)[1].numpy(),
                                  clip.load_clip_vision(str(tmp_path / "ViT-tiny.npz"))(images)[1].numpy())


def test_saved_model_and_cached_handle_round_trip(tmp_path, monkeypatch):
    keras.utils.set_random_seed(4)
    vision = clip.build_vision(clip.TINY)
    folder = tmp_path / "clip_savedmodel"
    clip.save_saved_model(vision, folder)
    loaded = clip.load_clip_vision(str(folder))
    for a, b in zip(vision.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # the exported encode function: images -> (tokens of every block, embedding)
    exported = tf.saved_model.load(str(folder))
    maps, embedding = exported.encode(real_batch())
    assert maps.shape[1] == clip.TINY.layers
    np.testing.assert_allclose(embedding.numpy(), vision(real_batch())[1].numpy(), atol=1e-5)
    # a TF-Hub handle already in the cache loads without the network
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub"))
    handle = "http://127.0.0.1:9/clip/vit-tiny/1"
    shutil.copytree(folder, clip.hub_cache_folder(handle))
    cached = clip.load_clip_vision(handle)
    np.testing.assert_array_equal(cached.weights[0].numpy(), vision.weights[0].numpy())


def test_offline_uncached_handle_and_missing_files_are_user_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub"))
    handle = "http://127.0.0.1:9/clip/vit-b32/1"  # nothing listens on port 9: the download fails at once
    with pytest.raises(UserError, match=r"^model\.clip = 'http://127\.0\.0\.1:9/clip/vit-b32/1': cannot load the "
                                        r"TF-Hub handle \(offline and not in the cache"):
        clip.load_clip_vision(handle)
    missing = tmp_path / "vit_b32.weights.h5"
    with pytest.raises(UserError, match=f"model.clip = '{missing}': no such weights file"):
        clip.load_clip_vision(str(missing))
    with pytest.raises(UserError, match="no such folder, .npz or .weights.h5 file"):
        clip.load_clip_vision(str(tmp_path / "nowhere"))
    # the backbone loads CLIP when it builds, with the same message
    with pytest.raises(UserError, match="model.clip = .*no such weights file"):
        GALIP(GALIPConfig(clip=str(missing)), SIZE, TEXT_DIM, WORDS).build()


# ---------------------------------------------------------------------------------------------------------------------
# architecture


def test_clip_features_discriminator_shapes_and_the_frozen_vit_outside_every_optimizer(trained):
    backbone = trained
    text = text_batch()
    out = generate(backbone.generator, noise_batch(), text)
    assert list(out) == ["images"] and len(out["images"]) == 1
    images = out["images"][0]
    maps, embedding = backbone.clip_features(images)
    g, w = clip.TINY.grid, clip.TINY.width
    assert maps.shape == (BATCH, 3, g, g, w) and embedding.shape == (BATCH, clip.TINY.embed_dim)
    features = backbone.discriminator(maps)
    assert features.shape == (BATCH, g, g, 8 * NF)
    logits = backbone.judge(features, text.sentence)
    assert logits.shape == (BATCH, 1) and logits.dtype == tf.float32
    clip_ids = {id(v) for v in backbone.vision.weights}
    d_vars = backbone.discriminator_variables
    assert d_vars == (backbone.discriminator.trainable_variables + backbone.discriminator_head.trainable_variables
                      + backbone.sentence_projection.trainable_variables)
    assert not clip_ids & {id(v) for v in d_vars}
    assert not clip_ids & {id(v) for v in backbone.generator.trainable_variables}
    assert not clip_ids & {id(v) for v in backbone.generator.weights}  # used by the bridge, never averaged or saved
    assert set(backbone.trackables()) == {"generator", "discriminator", "discriminator_head", "sentence_projection"}
    # the mapper starts from a 7 x 7 grid of 8 channels; the G blocks resize 7 -> 8 -> 16 -> 32
    assert backbone.generator.get_layer("to_grid").output.shape == (None, g, g, 8)
    assert [backbone.generator.get_layer(f"block_{i}").size for i in range(3)] == [8, 16, 32]
    assert backbone.generator.get_layer("prompts").units == 3 * w  # blocks 1..8 of 12 -> 0, 1, 2 of 4


def test_a_generator_rebuilt_with_its_own_vit_load_and_words_unused(trained):
    backbone = trained
    text, noise = text_batch(), noise_batch()
    first = generate(backbone.generator, noise, text)["images"][0].numpy()
    # a run's generator rebuilt in another process (its own "tiny" load) from the checkpointed weights
    rebuilt = GALIP(backbone.config, SIZE, TEXT_DIM, WORDS).build_generator()
    rebuilt.set_weights(backbone.generator.get_weights())
    np.testing.assert_allclose(generate(rebuilt, noise, text)["images"][0].numpy(), first, atol=1e-5)
    no_words = TextFeatures(tf.zeros_like(text.words), text.sentence, tf.zeros_like(text.mask))
    np.testing.assert_array_equal(generate(backbone.generator, noise, no_words)["images"][0].numpy(), first)


def test_generator_exports_as_a_saved_model_with_its_frozen_vit(trained, tmp_path):
    """`t2ictl export` saves the generator inside a tf.Module: the ViT's variables must be reachable from it."""
    backbone = trained
    text, noise = text_batch(), noise_batch()
    module = tf.Module()
    module.generator = backbone.generator
    module.generate = tf.function(lambda z, sentence: module.generator(
        {"noise": z, "words": text.words, "sentence": sentence, "mask": text.mask})["images"][0],
        input_signature=[tf.TensorSpec([BATCH, 100]), tf.TensorSpec([BATCH, TEXT_DIM])])
    tf.saved_model.save(module, str(tmp_path / "generator"))
    loaded = tf.saved_model.load(str(tmp_path / "generator"))
    expected = generate(backbone.generator, noise, text)["images"][0].numpy()
    np.testing.assert_allclose(loaded.generate(noise, text.sentence).numpy(), expected, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# losses


def test_loss_terms_match_numpy(trained):
    backbone = trained
    text, real = text_batch(), real_batch()
    fake = generate(backbone.generator, noise_batch(), text)["images"]
    terms = backbone.discriminator_loss({SIZE: real}, fake, text)
    assert set(terms) == {"loss", "real", "fake", "mismatch", "ma_gp", "align"}
    assert all(v.dtype == tf.float32 and v.shape == () for v in terms.values())
    real_logits = logits_of(backbone, real, text.sentence)
    fake_logits = logits_of(backbone, fake[-1], text.sentence)
    # GALIP's pairing: image i meets sentence i + 1, the last image the first sentence
    rolled = tf.gather(text.sentence, [(i + 1) % BATCH for i in range(BATCH)])
    mismatched_logits = logits_of(backbone, real, rolled)
    expected = {"real": np.maximum(0, 1 - real_logits).mean(), "fake": np.maximum(0, 1 + fake_logits).mean(),
                "mismatch": np.maximum(0, 1 + mismatched_logits).mean()}
    # CLIP's symmetric InfoNCE between real embeddings and projected sentences
    _, real_embedding = backbone.vision(real)
    a = real_embedding.numpy() / np.linalg.norm(real_embedding.numpy(), axis=1, keepdims=True)
    projected = backbone.sentence_projection(text.sentence).numpy()
    b = projected / np.linalg.norm(projected, axis=1, keepdims=True)
    sim = a @ b.T / 0.07
    log_rows = sim - np.log(np.exp(sim).sum(axis=1, keepdims=True))
    log_cols = sim - np.log(np.exp(sim).sum(axis=0, keepdims=True))
    expected["align"] = -(np.diag(log_rows).mean() + np.diag(log_cols).mean()) / 2
    for key, value in expected.items():
        np.testing.assert_allclose(terms[key].numpy(), value, rtol=1e-4, atol=1e-5, err_msg=key)
    np.testing.assert_allclose(terms["loss"].numpy(), expected["real"] + (expected["fake"] + expected["mismatch"]) / 2
                               + terms["ma_gp"].numpy() + expected["align"], rtol=1e-4)
    g_terms = backbone.generator_loss({"images": fake}, text, class_ids=tf.fill([BATCH], -1))
    _, fake_embedding = backbone.vision(fake[-1])
    f = fake_embedding.numpy() / np.linalg.norm(fake_embedding.numpy(), axis=1, keepdims=True)
    cos = (f * b).sum(axis=1).mean()
    np.testing.assert_allclose(g_terms["clip_sim"].numpy(), cos, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g_terms["loss"].numpy(), -fake_logits.mean() - 4.0 * cos, rtol=1e-4, atol=1e-5)


def test_ma_gp_is_taken_at_the_clip_features(trained):
    backbone = trained
    text, real = text_batch(), real_batch()
    fake = generate(backbone.generator, noise_batch(), text)["images"]
    penalty = backbone.discriminator_loss({SIZE: real}, fake, text)["ma_gp"].numpy()
    maps, _ = backbone.clip_features(real)
    norms = []
    for i in range(BATCH):
        pair_maps, sentence = maps[i:i + 1], text.sentence[i:i + 1]
        with tf.GradientTape() as tape:
            tape.watch([pair_maps, sentence])
            logit = backbone.judge(backbone.discriminator(pair_maps), sentence)[0, 0]
        grad_maps, grad_sentence = tape.gradient(logit, [pair_maps, sentence])
        flat = np.concatenate([grad_maps.numpy().ravel(), grad_sentence.numpy().ravel()]).astype(np.float64)
        norms.append(np.sqrt(np.sum(flat**2)))
    expected = 2.0 * np.mean(np.array(norms) ** 6)
    assert expected > 0
    np.testing.assert_allclose(penalty, expected, rtol=1e-3)






# ---------------------------------------------------------------------------------------------------------------------
# a short training run


def test_discriminator_loss_falls_in_a_short_overfit_run():
    """20 alternating D / G steps as the official loop on one fixed batch: D's hinge on real and fake pairs and the
    sentence projection's InfoNCE fall, and the frozen ViT does not move (one mapper block: tracing is the cost)."""
    backbone = make_backbone(seed=0, mapper_blocks=1)
    text, real, noise = text_batch(), real_batch(), noise_batch()
    before = clip_weights(backbone)
    step = alternating_gan_step(backbone, {SIZE: real}, noise, text)

    def losses():
        d_terms, _ = step()
        return d_terms["real"] + d_terms["fake"], d_terms["align"], d_terms["loss"]

    history = np.array([[float(v) for v in losses()] for _ in range(20)])
    hinge, align, total = history.T
    assert np.all(np.isfinite(history))
    assert np.mean(hinge[-5:]) < hinge[0] - 0.05
    assert np.mean(align[-5:]) < align[0] - 0.05
    assert np.mean(total[-5:]) < total[0]
    for name, old, new in zip(clip.weight_names(backbone.vision), before, clip_weights(backbone)):
        np.testing.assert_array_equal(old, new, err_msg=name)
