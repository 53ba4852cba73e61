"""DF-GAN's checkpoints (`state_epoch_XXX.pth` of tobran/DF-GAN) as a t2ictl training run.

The file holds `{'model': {'netG', 'netD', 'netC'}, 'optimizers': {'optimizer_G', 'optimizer_D'}, 'epoch'}`. Our
DF-GAN is the official one in NHWC, so the import is a mapping:
- kernels: convolutions [out, in, kh, kw] -> [kh, kw, in, out], linear layers transposed;
- NetG's first linear layer fills a [8 nf, 4, 4] (NCHW) map: its outputs are reordered to [4, 4, 8 nf];
- a D block whose channels stay the same has a `conv_s` in the file that the official forward never uses (left out);
- Adam: torch's `exp_avg` / `exp_avg_sq` / `step` are Keras' momentum / velocity / iterations (torch numbers an
  optimizer's parameters in the order it was given them: NetG's, then NetD's and NetC's).
The imported run keeps the official architecture: the embedded recipe's departures (DFGANConfig.departures) are
at their official defaults, and the released text encoder's features are not rescaled.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from t2ictl.console import console
from t2ictl.errors import UserError
from t2ictl.interop import damsm, mapping
from t2ictl.interop.mapping import conv, dense, same
from t2ictl.models.backbones.dfgan import DFGANConfig
from t2ictl.torch_files import StateDict, read_checkpoint


@dataclass(frozen=True)
class Official:
    """The parts of a DF-GAN (or GALIP) checkpoint."""

    generator: StateDict
    discriminator: StateDict
    head: StateDict
    optimizers: dict | None
    epoch: int | None


def read_dfgan(path: Path, name: str = "DF-GAN") -> Official:
    """A state_epoch_XXX.pth of DF-GAN's layout (GALIP's too)."""
    data = read_checkpoint(path)
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or not {"netG", "netD", "netC"} <= set(model):
        raise UserError(f"{path}: not a {name} checkpoint (no {{'model': {{'netG', 'netD', 'netC'}}}})")
    optimizers = data.get("optimizers")
    epoch = data.get("epoch")
    return Official(StateDict(model["netG"], path, "netG"), StateDict(model["netD"], path, "netD"),
                    StateDict(model["netC"], path, "netC"), optimizers if isinstance(optimizers, dict) else None,
                    int(epoch) if isinstance(epoch, (int, np.integer)) else None)


UNUSED_D = r"DBlocks\.\d+\.conv_s\.(weight|bias)"  # a D block whose channels stay: its conv_s is never used


def generator_sizes(netg: StateDict) -> dict:
    """nf, z_dim and the image size of a NetG state dict."""
    for key in ("fc.weight", "to_rgb.1.weight"):
        if key not in netg.arrays:
            raise UserError(f"{netg.path}: netG has no parameter {key}; not DF-GAN's NetG")
    blocks = {int(m.group(1)) for k in netg.arrays for m in [re.match(r"GBlocks\.(\d+)\.", k)] if m}
    nf = netg.arrays["to_rgb.1.weight"].shape[1]
    return {"nf": nf, "z_dim": netg.arrays["fc.weight"].shape[1], "image_size": 4 * 2 ** len(blocks)}


def official_rules(config_class: type[DFGANConfig] = DFGANConfig) -> list[str]:
    """Overrides that put every departure of DFGANConfig back at the official default of `config_class` (DF-GAN's,
    or SSA-GAN's, whose official DAMSM weight is 0.05)."""
    defaults = config_class()
    return [f"model.{key}={json.dumps(getattr(defaults, key))}" for key in DFGANConfig.departures]


def recipe_overrides(official: Official, has_image_encoder: bool) -> list[str]:
    sizes = generator_sizes(official.generator)
    overrides = ['model.backbone="dfgan"', f"model.nf={sizes['nf']}", f"model.z_dim={sizes['z_dim']}",
                 f"data.image_size={sizes['image_size']}", *official_rules()]
    return overrides + ([] if has_image_encoder else ["contrastive.enabled=false"])


def projection_pairs(project, channels: int, grid: int = 4, key: str = "fc") -> list[tuple]:
    """NetG's first linear layer (with bias) onto `project`: a [C, g, g] map's outputs reordered to [g, g, C]."""
    def hwc(rows):  # outputs numbered (c, h, w) -> (h, w, c), as Reshape((g, g, C)) reads them
        return rows.reshape(channels, grid, grid, -1).transpose(1, 2, 0, 3).reshape(grid * grid * channels, -1)

    return [(project.kernel, f"{key}.weight", lambda a: hwc(a).T, tuple(project.kernel.shape[::-1])),
            (project.bias, f"{key}.bias", lambda a: hwc(a[:, None])[:, 0], tuple(project.bias.shape))]


def generator_pairs(backbone) -> list[tuple]:
    """(Keras variable, torch key, transform, torch shape) for NetG."""
    generator = backbone.generator
    pairs = projection_pairs(generator.get_layer("project"), 8 * backbone.config.nf)
    for index in range(_count_blocks(generator)):
        pairs += block_pairs(generator.get_layer(f"block_{index}"), f"GBlocks.{index}")
    rgb = generator.get_layer("to_rgb")
    return pairs + [conv(rgb.kernel, "to_rgb.1.weight"), same(rgb.bias, "to_rgb.1.bias")]


def block_pairs(block, prefix: str, convs=(("conv_1", "c1"), ("conv_2", "c2"))) -> list[tuple]:
    """A G block (GALIP's M block too): its convolutions, shortcut and the two fusion blocks' affine MLPs."""
    pairs = []
    for ours, theirs in (*convs, ("shortcut", "c_sc")):
        layer = getattr(block, ours)
        if layer is not None:
            pairs += [conv(layer.kernel, f"{prefix}.{theirs}.weight"), same(layer.bias, f"{prefix}.{theirs}.bias")]
    for fuse, theirs in ((block.fuse_1, "fuse1"), (block.fuse_2, "fuse2")):
        for affine, affine_name in ((fuse.first, "affine0"), (fuse.second, "affine1")):
            for part in ("gamma", "beta"):
                for layer, linear in ((getattr(affine, f"{part}_hidden"), "linear1"),
                                      (getattr(affine, f"{part}_out"), "linear2")):
                    key = f"{prefix}.{theirs}.{affine_name}.fc_{part}.{linear}"
                    pairs += [dense(layer.kernel, f"{key}.weight"), same(layer.bias, f"{key}.bias")]
    return pairs


def discriminator_pairs(backbone, block_key: str = "DBlocks.{}") -> list[tuple]:
    """(Keras variable, torch key, transform, torch shape) for NetD (SSA-GAN's names its blocks block{})."""
    discriminator = backbone.discriminator
    rgb = discriminator.get_layer("from_rgb")
    pairs = [conv(rgb.kernel, "conv_img.weight"), same(rgb.bias, "conv_img.bias")]
    for index in range(_count_blocks(discriminator)):
        block, prefix = discriminator.get_layer(f"block_{index}"), block_key.format(index)
        pairs += [conv(block.down.kernel, f"{prefix}.conv_r.0.weight"),
                  conv(block.conv.kernel, f"{prefix}.conv_r.2.weight"),
                  (block.gamma, f"{prefix}.gamma", lambda a: a.reshape(()), (1,))]
        if block.shortcut is not None:
            pairs += [conv(block.shortcut.kernel, f"{prefix}.conv_s.weight"),
                      same(block.shortcut.bias, f"{prefix}.conv_s.bias")]
    return pairs


def head_pairs(backbone, prefix: str = "") -> list[tuple]:
    """(Keras variable, torch key, transform, torch shape) for NetC (SSA-GAN's NetD holds it as COND_DNET.)."""
    head = backbone.discriminator_head
    return [conv(head.get_layer("joint_conv").kernel, f"{prefix}joint_conv.0.weight"),
            conv(head.get_layer("to_logit").kernel, f"{prefix}joint_conv.2.weight")]


def load_optimizers(phase, official: Official, g_pairs: list[tuple], d_pairs: list[tuple], path: Path) -> int:
    """Both Adam states of the file (if it has them) into the phase's optimizers; returns the generator's step.
    torch numbers an optimizer's parameters in the order it was given them: netG's; netD's, then netC's."""
    if official.optimizers is None:
        return 0
    g_keys = list(official.generator.arrays)
    d_keys = list(official.discriminator.arrays) + list(official.head.arrays)
    step = mapping.load_adam(phase.g_optimizer, g_pairs, g_keys, official.optimizers.get("optimizer_G"),
                             "optimizer_G", path)
    d_step = mapping.load_adam(phase.d_optimizer, d_pairs, d_keys, official.optimizers.get("optimizer_D"),
                               "optimizer_D", path)
    if d_step != step:
        console.print(f"note: optimizer_G is at step {step}, optimizer_D at {d_step}", markup=False)
    return step


def _count_blocks(model) -> int:
    return sum(1 for layer in model.layers if re.fullmatch(r"block_\d+", layer.name))


def import_checkpoint(checkpoint_file: Path, files: mapping.DamsmFiles, run_dir: Path, recipe_name: str,
                      overrides: list[str], overwrite: bool = False) -> dict:
    """Write a training run from a DF-GAN checkpoint and the DAMSM files it was trained with."""
    with mapping.new_training_run(run_dir, overwrite) as run:
        official = read_dfgan(checkpoint_file)
        recipe, captions, text_state = files.recipe(recipe_name, overrides + recipe_overrides(
            official, files.image is not None))
        record = {"checkpoint": damsm.file_record(checkpoint_file), "epoch": official.epoch}
        phase = mapping.build_imported_phase(run, recipe, files, captions, text_state, record, overwrite)
        return _load_checkpoint(phase, official, checkpoint_file) | {"run": run, "recipe": recipe,
                                                                     "image": files.image is not None}


def _load_checkpoint(phase, official: Official, checkpoint_file: Path) -> dict:
    from t2ictl.training import loop

    backbone = phase.backbone
    g_pairs, d_pairs, c_pairs = generator_pairs(backbone), discriminator_pairs(backbone), head_pairs(backbone)
    mapping.load_weights(g_pairs, official.generator, "DF-GAN")
    mapping.load_weights(d_pairs, official.discriminator, "DF-GAN", UNUSED_D)
    mapping.load_weights(c_pairs, official.head, "DF-GAN")
    phase.ema_generator.set_weights(backbone.generator.get_weights())  # DF-GAN keeps no average: start it at netG
    step = load_optimizers(phase, official, g_pairs, d_pairs + c_pairs, checkpoint_file)
    saved = loop.write_checkpoint(phase, phase.run, step)
    return {"step": step, "epoch": official.epoch, "checkpoint": saved, "adam": official.optimizers is not None,
            "parameters": sum(int(np.prod(v.shape)) for v, *_ in g_pairs + d_pairs + c_pairs)}
