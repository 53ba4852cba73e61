"""`t2ictl import galip`: a GALIP checkpoint in the official layout (the layout formula of tests/numpy_galip.py, equal
to the official one at ViT-B/32's sizes, tests/fixtures/galip_vit_b32.txt) with a CLIP TorchScript archive becomes a
run whose text encoder is CLIP's text tower with CLIP's BPE, and whose generator, CLIP features, discriminator and
head compute what NumPy's NetG, CLIP_IMG_ENCODER, NetD and NetC compute; the exported model draws NetG's pixels."""

from __future__ import annotations

import collections
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import restored_gan_phase, sentence_inputs
from numpy_galip import clip_image_features, clip_text, galip_layout, net_c, net_d, net_g
from test_backbone_galip import openai_state
from torch_format import Tensor, script_modules, write_zip
from typer.testing import CliRunner

from t2ictl import runs
from t2ictl.cli import app

FIXTURES = Path(__file__).parent / "fixtures"
NF, Z_DIM, TEXT_DIM, WIDTH, GRID, PATCH, LAYERS, SIZE = 2, 8, 16, 32, 7, 8, 12, 32
TEXT_WIDTH, CODE, MID, MAPPERS = 64, 8, 4, 2
CAPTIONS = ["the red bird with black wings", "a yellow bird"]


def test_the_layout_formula_is_the_official_layout():
    official = collections.defaultdict(list)
    for line in (FIXTURES / "galip_vit_b32.txt").read_text().splitlines():
        if line[:1] != "#":
            net, name, *shape = line.split()
            official[net].append((name, tuple(map(int, shape))))
    assert galip_layout(64, 100, 512, 768, 7, 32, 12, 256) == dict(official)


def clip_archive_state(vocab_size: int, rng) -> dict[str, np.ndarray]:
    """A CLIP state dict of OpenAI's names: a 12-block ViT on a 7 x 7 grid and a 2-block text tower."""
    state = openai_state(width=WIDTH, depth=LAYERS, patch=PATCH, grid=GRID, embed=16, seed=7)
    normal = lambda *shape, s=0.2: (s * rng.standard_normal(shape)).astype("float32")  # noqa: E731
    state |= {"token_embedding.weight": normal(vocab_size, TEXT_WIDTH), "positional_embedding": normal(77, TEXT_WIDTH),
              "text_projection": normal(TEXT_WIDTH, TEXT_DIM), "ln_final.weight": 1 + normal(TEXT_WIDTH),
              "ln_final.bias": normal(TEXT_WIDTH), "logit_scale": np.array(4.6, np.float32)}
    for i in range(2):
        b, w = f"transformer.resblocks.{i}", TEXT_WIDTH
        state |= {f"{b}.attn.in_proj_weight": normal(3 * w, w), f"{b}.attn.in_proj_bias": normal(3 * w),
                  f"{b}.attn.out_proj.weight": normal(w, w), f"{b}.attn.out_proj.bias": normal(w),
                  f"{b}.mlp.c_fc.weight": normal(4 * w, w), f"{b}.mlp.c_fc.bias": normal(4 * w),
                  f"{b}.mlp.c_proj.weight": normal(w, 4 * w), f"{b}.mlp.c_proj.bias": normal(w),
                  f"{b}.ln_1.weight": 1 + normal(w), f"{b}.ln_1.bias": normal(w),
                  f"{b}.ln_2.weight": 1 + normal(w), f"{b}.ln_2.bias": normal(w)}
    return state


def random_galip(clip_state: dict, rng) -> dict[str, collections.OrderedDict]:
    nets = {}
    for net, params in galip_layout(NF, Z_DIM, TEXT_DIM, WIDTH, GRID, PATCH, LAYERS, SIZE, CODE, MID,
                                    MAPPERS).items():
        state = collections.OrderedDict()
        for name, shape in params:
            if name.startswith("mapping.CLIP_ViT."):  # the frozen ViT again, as the official netG holds it
                state[name] = clip_state["visual." + name[len("mapping.CLIP_ViT."):]]
            elif name.endswith(("gamma", "beta")) and shape == (1,):
                state[name] = rng.uniform(0.2, 1.0, shape).astype(np.float32)
            elif len(shape) > 1:
                state[name] = (rng.uniform(-1, 1, shape) * np.sqrt(3.0 / np.prod(shape[1:]))).astype(np.float32)
            else:
                state[name] = rng.uniform(-0.2, 0.2, shape).astype(np.float32)
            if "linear2" in name:  # the official start (gamma 1, beta 0) hides the condition
                state[name] = (0.05 * rng.standard_normal(shape) + (name.endswith("fc_gamma.linear2.bias"))
                               ).astype(np.float32)
        nets[net] = state
    nets["netG"]["to_rgb.1.weight"] *= 0.3  # no tanh: keep the images mostly inside [-1, 1]
    return nets


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("galip")
    merges = json.loads((FIXTURES / "clip_bpe_tiny.json").read_text())["merges"]
    (folder / "bpe.txt.gz").write_bytes(gzip.compress(("#version: test\n" + "\n".join(merges)).encode()))
    rng = np.random.default_rng(31)
    clip_state = clip_archive_state(2 * 256 + len(merges) + 2, rng)
    write_zip(folder / "ViT-B-32.pt", script_modules({k: v.astype(np.float16) for k, v in clip_state.items()}),
              name="ViT-B-32")
    clip_state = {k: v.astype(np.float16).astype(np.float64) for k, v in clip_state.items()}  # what the file holds
    nets = random_galip(clip_state, rng)
    write_zip(folder / "state_epoch_009.pth", {"model": {k: {n: Tensor(a) for n, a in v.items()}
                                                         for k, v in nets.items()}, "epoch": 9})
    run_dir = folder / "run"
    result = CliRunner().invoke(app, ["import", "galip", "--checkpoint", str(folder / "state_epoch_009.pth"),
                                      "--clip", str(folder / "ViT-B-32.pt"), "--bpe", str(folder / "bpe.txt.gz"),
                                      "--recipe", "shapes", "--run-dir", str(run_dir), "--set",
                                      "runtime.precision=float32"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    vit = {k[len("visual."):]: v for k, v in clip_state.items() if k.startswith("visual.")}
    return {"run": run_dir, "nets": nets, "clip": clip_state, "vit": vit}


def test_the_run_keeps_the_official_architecture(imported):
    recipe = runs.RunDir(imported["run"]).recipe()
    model = recipe.model
    assert (model.backbone, model.nf, model.z_dim, model.mapper_channels, model.mapper_mid_channels,
            model.mapper_blocks) == ("galip", NF, Z_DIM, CODE, MID, MAPPERS)
    assert (model.clip_text, model.final_size, model.rgb_tanh, model.clip_input) == (True, 224, False, "official")
    assert (recipe.data.image_size, recipe.data.max_words, recipe.contrastive.enabled) == (SIZE, 77, True)
    assert runs.RunDir(imported["run"]).vocab().tokenizer == "clip"


def test_the_generator_equals_numpy_netg(imported):
    sampler, _, _ = runs.open_generator(runs.RunDir(imported["run"]))
    rng = np.random.default_rng(32)
    noise, sentence = rng.standard_normal((2, Z_DIM)), rng.standard_normal((2, TEXT_DIM))
    image = sampler.generator(sentence_inputs(noise, sentence, 77), training=False)["images"][-1].numpy()
    expected = net_g(imported["nets"]["netG"], imported["vit"], noise, sentence, GRID, 1, LAYERS)
    assert image.shape == (2, 224, 224, 3)
    np.testing.assert_allclose(image, expected.transpose(0, 2, 3, 1), atol=2e-4)


def test_clip_features_discriminator_and_head_equal_numpy(imported):
    phase = restored_gan_phase(imported["run"])
    rng = np.random.default_rng(33)
    real, sentence = rng.uniform(-1, 1, (2, 3, SIZE, SIZE)), rng.standard_normal((2, TEXT_DIM))
    maps, embedding = phase.backbone.clip_features(real.transpose(0, 2, 3, 1).astype(np.float32))
    expected_maps, expected_embedding = clip_image_features(imported["vit"], real, GRID, PATCH, 1, LAYERS)
    np.testing.assert_allclose(maps.numpy(), expected_maps.transpose(0, 1, 3, 4, 2), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(embedding.numpy(), expected_embedding, rtol=1e-4, atol=1e-4)
    features = phase.backbone.discriminator(maps, training=False).numpy()
    expected_features = net_d(imported["nets"]["netD"], expected_maps)
    np.testing.assert_allclose(features, expected_features.transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)
    logits = phase.backbone.discriminator_head([features, sentence.astype(np.float32)], training=False)
    np.testing.assert_allclose(logits.numpy().reshape(-1), net_c(imported["nets"]["netC"], expected_features,
                                                                 sentence), rtol=1e-4, atol=1e-4)


def test_the_exported_model_draws_netg_of_clip_text(imported, tmp_path):
    from t2ictl.data.vocab import GraphTokenizer
    from t2ictl.export import export_run

    run = runs.RunDir(imported["run"])
    tokens = GraphTokenizer(run.vocab(), 77).ids(tf.constant(CAPTIONS))[0].numpy()  # as OpenAI's: test_clip_bpe
    sentence = clip_text(imported["clip"], tokens, heads=1)
    export_run(imported["run"], tmp_path / "model")
    model = tf.saved_model.load(str(tmp_path / "model"))
    noise = np.random.default_rng(34).standard_normal((2, Z_DIM)).astype(np.float32)
    got = model.signatures["with_noise"](captions=tf.constant(CAPTIONS), noise=tf.constant(noise))["images"].numpy()
    image = net_g(imported["nets"]["netG"], imported["vit"], noise.astype(np.float64), sentence, GRID, 1, LAYERS)
    grey = (np.clip(image.transpose(0, 2, 3, 1), -1, 1) + 1) * 127.5
    assert np.abs(got.astype(np.float64) - grey).max() <= 1.0
