"""GALIP's checkpoints (tobran/GALIP `state_epoch_XXX.pth`) with the CLIP they froze as a t2ictl training run.

The checkpoint has DF-GAN's layout (netG, netD, netC, both Adam states, the epoch). GALIP conditions on CLIP's text
embedding and runs CLIP's ViT inside its generator and discriminator, so the run takes both towers from OpenAI's
`ViT-B-32.pt` (a TorchScript archive, read without running it): the text tower becomes the run's text encoder, with
CLIP's BPE vocabulary (bpe_simple_vocab_16e6.txt.gz) as its vocabulary, and the ViT is the backbone's `model.clip`.
The mapping uses DF-GAN's conventions (dfgan.py); besides:
- fc_code fills a [64, 7, 7] map (NCHW): its outputs are reordered to [7, 7, 64];
- netG holds the frozen ViT's weights again (mapping.CLIP_ViT.*): they are CLIP's, taken from the .pt;
- the D blocks whose channels stay keep an unused conv_s in the file.
The run keeps the official architecture where our GALIP departs from it (model.clip_text, final_size 224, no tanh,
the official CLIP input); the contrastive loss of the GAN phase reads the fakes with the same frozen CLIP.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np

from t2ictl import fileio, recipes, runs
from t2ictl.data import clip_bpe
from t2ictl.data.vocab import Vocabulary
from t2ictl.errors import UserError
from t2ictl.interop import damsm, dfgan, mapping
from t2ictl.interop.mapping import conv, same
from t2ictl.torch_files import StateDict, read_torchscript_state

CONTEXT = 77  # CLIP's context length
FINAL_SIZE = 224  # models/GALIP.py NetG: the last G block resizes to CLIP's input size
IGNORED_G = r"mapping\.CLIP_ViT\..*"
IGNORED_D = r"DBlocks\.\d+\.conv_s\.(weight|bias)"


def default_bpe_file() -> Path | None:
    """The BPE file of an installed `clip` package (openai-clip, clip-anytorch), found without importing it."""
    spec = importlib.util.find_spec("clip")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"
    return path if path.is_file() else None


def generator_sizes(netg: StateDict, grid: int) -> dict:
    keys = netg.arrays
    for key in ("fc_code.weight", "to_rgb.1.weight", "mapping.fc_prompt.weight", "GBlocks.0.c1.weight"):
        if key not in keys:
            raise UserError(f"{netg.path}: netG has no parameter {key}; not GALIP's NetG")
    blocks = len({k.split(".")[1] for k in keys if k.startswith("GBlocks.")})
    mappers = len({k.split(".")[2] for k in keys if k.startswith("mapping.FBlocks.")})
    z_dim = keys["fc_code.weight"].shape[1]
    return {"nf": keys["to_rgb.1.weight"].shape[1], "z_dim": z_dim, "image_size": 2 ** (blocks + 2),
            "mapper_channels": keys["fc_code.weight"].shape[0] // (grid * grid), "mapper_blocks": mappers,
            "mapper_mid_channels": keys["mapping.FBlocks.0.conv1.weight"].shape[0],
            "text_dim": keys["GBlocks.0.fuse1.affine0.fc_gamma.linear1.weight"].shape[1] - z_dim}


def recipe_overrides(sizes: dict, clip_file: Path, text_dim: int) -> list[str]:
    return ['model.backbone="galip"', f'model.clip="{Path(clip_file).resolve()}"', "model.clip_text=true",
            f"model.final_size={FINAL_SIZE}", "model.rgb_tanh=false", 'model.clip_input="official"',
            *(f"model.{key}={sizes[key]}" for key in ("nf", "z_dim", "mapper_channels", "mapper_mid_channels",
                                                     "mapper_blocks")),
            f"data.image_size={sizes['image_size']}", f"data.max_words={CONTEXT}", f"pretrain.text_dim={text_dim}"]


def generator_pairs(backbone) -> list[tuple]:
    generator, c = backbone.generator, backbone.config
    grid = backbone.vision.spec.grid
    pairs = dfgan.projection_pairs(generator.get_layer("project"), c.mapper_channels, grid, key="fc_code")
    for index in range(c.mapper_blocks):
        pairs += dfgan.block_pairs(generator.get_layer(f"mapper_block_{index}"), f"mapping.FBlocks.{index}",
                                   (("conv_1", "conv1"), ("conv_2", "conv2")))
    for ours, theirs in (("to_clip", "mapping.conv_fuse"), ("from_clip", "mapping.conv")):
        layer = generator.get_layer(ours)
        pairs += [conv(layer.kernel, f"{theirs}.weight"), same(layer.bias, f"{theirs}.bias")]
    prompts = generator.get_layer("prompts")
    pairs += [mapping.dense(prompts.kernel, "mapping.fc_prompt.weight"), same(prompts.bias, "mapping.fc_prompt.bias")]
    index = 0
    while any(layer.name == f"block_{index}" for layer in generator.layers):
        pairs += dfgan.block_pairs(generator.get_layer(f"block_{index}"), f"GBlocks.{index}")
        index += 1
    rgb = generator.get_layer("to_rgb")
    return pairs + [conv(rgb.kernel, "to_rgb.1.weight"), same(rgb.bias, "to_rgb.1.bias")]


def discriminator_pairs(backbone) -> list[tuple]:
    discriminator, pairs = backbone.discriminator, []
    names = [(f"block_{i}", f"DBlocks.{i}") for i in range(2)] + [("main", "main")]
    for ours, theirs in names:
        block = discriminator.get_layer(ours)
        pairs += [conv(block.conv_1.kernel, f"{theirs}.conv_r.0.weight"),
                  conv(block.conv_2.kernel, f"{theirs}.conv_r.2.weight"),
                  (block.gamma, f"{theirs}.gamma", lambda a: a.reshape(()), (1,))]
        if block.takes_clip_map:
            pairs.append((block.beta, f"{theirs}.beta", lambda a: a.reshape(()), (1,)))
        if block.shortcut is not None:
            pairs += [conv(block.shortcut.kernel, f"{theirs}.conv_s.weight"),
                      same(block.shortcut.bias, f"{theirs}.conv_s.bias")]
    return pairs


def import_checkpoint(checkpoint_file: Path, clip_file: Path, bpe_file: Path | None, run_dir: Path,
                      recipe_name: str, overrides: list[str], overwrite: bool = False) -> dict:
    """Write a training run from a GALIP checkpoint and the CLIP it was trained with."""
    from t2ictl.models.clip_text import clip_text_from_openai_state

    bpe_file = bpe_file or default_bpe_file()
    if bpe_file is None:
        raise UserError("no CLIP BPE vocabulary: pass --bpe bpe_simple_vocab_16e6.txt.gz (it comes with the clip "
                        "package, openai-clip or clip-anytorch)")
    with mapping.new_training_run(run_dir, overwrite) as run:
        official = dfgan.read_dfgan(checkpoint_file, "GALIP")
        vocab = Vocabulary.clip(clip_bpe.read_merges(bpe_file))
        state = read_torchscript_state(clip_file)
        if "visual.positional_embedding" not in state:
            raise UserError(f"{clip_file}: no visual.positional_embedding; not OpenAI's CLIP (ViT-B-32.pt)")
        sizes = generator_sizes(official.generator, math.isqrt(state["visual.positional_embedding"].shape[0] - 1))
        text = clip_text_from_openai_state(state, str(clip_file))
        text_dim = text.get_layer("clip_text").embed_dim
        if text_dim != sizes["text_dim"]:
            raise UserError(f"{checkpoint_file}: the generator reads {sizes['text_dim']}-d sentences, the CLIP "
                            f"{clip_file} gives {text_dim}-d ones")
        recipe = recipes.load_recipe(mapping.backbone_recipe(recipe_name, "galip"),
                                     overrides + recipe_overrides(sizes, clip_file, text_dim))
        if overwrite:
            mapping.clear_training_checkpoints(run)
        record = {"kind": "clip", "clip": damsm.file_record(clip_file), "bpe": damsm.file_record(bpe_file)}
        damsm.write_encoders_run(run, recipe, text, None, vocab, record)
        fileio.write_json(run.path / "imported.json", {"checkpoint": damsm.file_record(checkpoint_file),
                                                      "epoch": official.epoch, **record})
        return _load(run, recipe, vocab, official, checkpoint_file)


def _load(run: runs.RunDir, recipe: recipes.Recipe, vocab: Vocabulary, official: dfgan.Official,
          checkpoint_file: Path) -> dict:
    from t2ictl.training import loop

    phase = mapping.built_gan_phase(run, recipe, vocab)
    backbone = phase.backbone
    g_pairs, d_pairs, c_pairs = generator_pairs(backbone), discriminator_pairs(backbone), dfgan.head_pairs(backbone)
    mapping.load_weights(g_pairs, official.generator, "GALIP", IGNORED_G)
    mapping.load_weights(d_pairs, official.discriminator, "GALIP", IGNORED_D)
    mapping.load_weights(c_pairs, official.head, "GALIP")
    phase.ema_generator.set_weights(backbone.generator.get_weights())  # GALIP keeps no average: start it at netG
    # the frozen CLIP's parameters are among netG.parameters(): at their places in the order, without moments
    step = dfgan.load_optimizers(phase, official, g_pairs, d_pairs + c_pairs, checkpoint_file)
    saved = loop.write_checkpoint(phase, run, step)
    return {"run": run, "recipe": recipe, "step": step, "epoch": official.epoch, "checkpoint": saved,
            "adam": official.optimizers is not None,
            "parameters": sum(int(np.prod(v.shape)) for v, *_ in g_pairs + d_pairs + c_pairs)}
