"""SSA-GAN's trained models (wtliao/text2image `netG_XXX.pth`, `netD_XXX.pth`) as a t2ictl training run.

The files are state dicts (saved through DataParallel: the `module.` prefix is dropped). Our SSA-GAN is the official
one in NHWC, so the import is a mapping, with DF-GAN's conventions (dfgan.py) for the first linear layer, the
condition MLPs and NetD, plus:
- the semantic mask predictors: `conv_mask` on the 4x4 map and `block{i}.conv_mask` after block i (conv3x3, BatchNorm,
  ReLU, conv1x1);
- each affine's BatchNorm has no scale and shift of its own: only its running statistics are in the file;
- NetD holds the head as `COND_DNET`.
The files hold no optimizer state: the imported run trains on with fresh Adam moments.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from t2ictl.errors import UserError
from t2ictl.interop import damsm, dfgan, mapping
from t2ictl.interop.mapping import batch_norm, conv, dense, read_state, same
from t2ictl.models.backbones.ssagan import SSAGANConfig
from t2ictl.torch_files import StateDict

IGNORED = r".*num_batches_tracked|" + r"block\d+\.conv_s\.(weight|bias)"  # conv_s: unused where channels stay


def generator_sizes(netg: StateDict) -> dict:
    keys = netg.arrays
    for key in ("fc.weight", "conv_img.2.weight", "block0.affine0.fc_gamma.linear1.weight"):
        if key not in keys:
            raise UserError(f"{netg.path}: no parameter {key}; not SSA-GAN's NetG")
    blocks = {int(m.group(1)) for k in keys for m in [re.match(r"block(\d+)\.c1\.", k)] if m}
    hidden, text_dim = keys["block0.affine0.fc_gamma.linear1.weight"].shape
    return {"nf": keys["conv_img.2.weight"].shape[1], "z_dim": keys["fc.weight"].shape[1],
            "image_size": 4 * 2 ** (len(blocks) - 1), "affine_hidden": hidden, "text_dim": text_dim}


def recipe_overrides(sizes: dict) -> list[str]:
    return ['model.backbone="ssagan"', f"model.nf={sizes['nf']}", f"model.z_dim={sizes['z_dim']}",
            f"model.affine_hidden={sizes['affine_hidden']}", f"data.image_size={sizes['image_size']}",
            *dfgan.official_rules(SSAGANConfig)]


def _mask_predictor(layer, prefix: str) -> list[tuple]:
    return [conv(layer.conv.kernel, f"{prefix}.0.weight"), same(layer.conv.bias, f"{prefix}.0.bias"),
            *batch_norm(layer.norm, f"{prefix}.1"),
            conv(layer.out.kernel, f"{prefix}.3.weight"), same(layer.out.bias, f"{prefix}.3.bias")]


def _affine(affine, prefix: str) -> list[tuple]:
    norm = affine.norm
    pairs = [same(norm.moving_mean, f"{prefix}.batch_norm2d.running_mean"),
             same(norm.moving_variance, f"{prefix}.batch_norm2d.running_var")]
    for part in ("gamma", "beta"):
        for layer, linear in ((getattr(affine, f"{part}_hidden"), "linear1"), (getattr(affine, f"{part}_out"),
                                                                               "linear2")):
            key = f"{prefix}.fc_{part}.{linear}"
            pairs += [dense(layer.kernel, f"{key}.weight"), same(layer.bias, f"{key}.bias")]
    return pairs


def generator_pairs(backbone) -> list[tuple]:
    """(Keras variable, torch key, transform, torch shape) for NetG."""
    generator = backbone.generator
    pairs = dfgan.projection_pairs(generator.get_layer("project"), 8 * backbone.config.nf)
    pairs += _mask_predictor(generator.get_layer("mask_initial"), "conv_mask")
    index = 0
    while any(layer.name == f"block_{index}" for layer in generator.layers):
        block, prefix = generator.get_layer(f"block_{index}"), f"block{index}"
        for ours, theirs in ((block.conv_1, "c1"), (block.conv_2, "c2"), (block.shortcut, "c_sc")):
            if ours is not None:
                pairs += [conv(ours.kernel, f"{prefix}.{theirs}.weight"), same(ours.bias, f"{prefix}.{theirs}.bias")]
        pairs += [(block.gamma, f"{prefix}.gamma", lambda a: a.reshape(()), (1,)),
                  *_affine(block.affine_1, f"{prefix}.affine0"), *_affine(block.affine_2, f"{prefix}.affine2")]
        if any(layer.name == f"mask_after_{index}" for layer in generator.layers):
            pairs += _mask_predictor(generator.get_layer(f"mask_after_{index}"), f"{prefix}.conv_mask")
        index += 1
    rgb = generator.get_layer("to_rgb")
    return pairs + [*batch_norm(generator.get_layer("rgb_bn"), "conv_img.0"), conv(rgb.kernel, "conv_img.2.weight"),
                    same(rgb.bias, "conv_img.2.bias")]


def import_generator(generator_file: Path, discriminator_file: Path | None, files: mapping.DamsmFiles, run_dir: Path,
                     recipe_name: str, overrides: list[str], overwrite: bool = False) -> dict:
    """Write a training run from SSA-GAN's NetG (and, optionally, NetD) files and the DAMSM files."""
    with mapping.new_training_run(run_dir, overwrite) as run:
        netg = read_state(generator_file, "NetG")
        netd = None if discriminator_file is None else read_state(discriminator_file, "NetD")
        sizes = generator_sizes(netg)
        recipe, captions, text_state = files.recipe(mapping.backbone_recipe(recipe_name, "ssagan"),
                                                    overrides + recipe_overrides(sizes))
        if recipe.pretrain.text_dim != sizes["text_dim"]:
            raise UserError(f"{generator_file}: the generator reads {sizes['text_dim']}-d sentences, the text "
                            f"encoder {files.text} gives {recipe.pretrain.text_dim}-d ones")
        epoch = re.search(r"_(\d+)\.pth$", Path(generator_file).name)
        record = {"generator": damsm.file_record(generator_file), "backbone": "ssagan",
                  "discriminator": None if netd is None else damsm.file_record(discriminator_file),
                  "epoch": int(epoch.group(1)) if epoch else None}
        phase = mapping.build_imported_phase(run, recipe, files, captions, text_state, record, overwrite)
        return _load(phase, netg, netd) | {"run": run, "recipe": recipe, "epoch": record["epoch"]}


def _load(phase, netg: StateDict, netd: StateDict | None) -> dict:
    from t2ictl.training import loop

    backbone = phase.backbone
    pairs = generator_pairs(backbone)
    mapping.load_weights(pairs, netg, "SSA-GAN", IGNORED)
    phase.ema_generator.set_weights(backbone.generator.get_weights())  # SSA-GAN keeps no average: start it at NetG
    if netd is not None:
        d_pairs = dfgan.discriminator_pairs(backbone, "block{}") + dfgan.head_pairs(backbone, "COND_DNET.")
        mapping.load_weights(d_pairs, netd, "SSA-GAN", IGNORED)
        pairs = pairs + d_pairs
    saved = loop.write_checkpoint(phase, phase.run, 0)
    return {"checkpoint": saved, "discriminator": netd is not None,
            "parameters": sum(int(np.prod(v.shape)) for v, *_ in pairs)}
