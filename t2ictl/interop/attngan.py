"""AttnGAN's and DM-GAN's released generators and their trainers' discriminators as a t2ictl training run.

The files are state dicts: the generator G_NET (`bird_AttnGAN2.pth`, `coco_AttnGAN2.pth`, `bird_DMGAN.pth`,
`coco_DMGAN.pth`, a trainer's `netG_epoch_N.pth`; all hold the generator's running average, which the trainers save in
place of its weights) and one discriminator per stage (`netD0.pth`, `netD1.pth`, `netD2.pth`). Our AttnGAN and DM-GAN
are the official ones in NHWC, so the import is a mapping:
- kernels: convolutions [out, in, kh, kw] -> [kh, kw, in, out]; linear layers and 1x1 convolutions computed as Keras
  Dense layers transposed;
- the first stage's linear layer and its BatchNorm1d fill two [C, 4, 4] (NCHW) maps, the halves of a GLU: each half's
  outputs are reordered to [4, 4, C];
- BatchNorms keep their running statistics (the official sampling runs in eval mode);
- DM-GAN's spectrally normalised discriminator convolutions: `weight_bar` is the kernel, `weight_u` the power
  iteration's vector; `weight_v` is recomputed from u by the first power iteration, as the official forward does.
The files hold no optimizer state: the imported run trains on with fresh Adam moments. The official attention (and
DM-GAN's memory reading) masks padding across the batch; the import turns on the backbone's `batch_shared_mask` so
that the run draws what the released model draws for the same batch.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from t2ictl.errors import UserError
from t2ictl.interop import damsm, mapping
from t2ictl.interop.mapping import batch_norm, conv, dense, pointwise, read_state, same
from t2ictl.torch_files import StateDict

NAMES = {"attngan": "AttnGAN", "dmgan": "DM-GAN"}
FIRST_STAGE = 64  # INIT_STAGE_G's four up blocks from 4x4
IGNORED = r".*num_batches_tracked|.*\.module\.weight_v"


def generator_kind(netg: StateDict) -> str:
    keys = netg.arrays
    if "ca_net.fc.weight" not in keys or "h_net1.fc.0.weight" not in keys:
        raise UserError(f"{netg.path}: no ca_net.fc.weight and h_net1.fc.0.weight; not AttnGAN's or DM-GAN's G_NET")
    return "dmgan" if any(".M_w." in k for k in keys) else "attngan"


def generator_sizes(netg: StateDict) -> dict:
    """stages, gf, z, condition and text sizes and residual blocks of a G_NET state dict."""
    keys = netg.arrays
    stages = sum(1 for k in keys if re.fullmatch(r"img_net\d\.img\.0\.weight", k))
    condition_dim, text_dim = keys["ca_net.fc.weight"].shape[0] // 4, keys["ca_net.fc.weight"].shape[1]
    residual = {int(m.group(1)) for k in keys for m in [re.match(r"h_net2\.residual\.(\d+)\.", k)] if m}
    if stages == 0 or any(f"h_net1.upsample{i}.1.weight" not in keys for i in range(1, 5)):
        raise UserError(f"{netg.path}: not a G_NET with a 64-px first stage (img_net1 and h_net1.upsample1-4)")
    return {"stages": stages, "gf_dim": keys["img_net1.img.0.weight"].shape[1], "condition_dim": condition_dim,
            "z_dim": keys["h_net1.fc.0.weight"].shape[1] - condition_dim, "text_dim": text_dim,
            "residual_blocks": len(residual) or None}  # None: one stage, no residual blocks to count


def recipe_overrides(kind: str, sizes: dict, netds: list[StateDict]) -> list[str]:
    stages = sizes["stages"]
    extra = [FIRST_STAGE * 2**k for k in range(stages - 1)]
    overrides = [f'model.backbone="{kind}"', f"data.image_size={FIRST_STAGE * 2 ** (stages - 1)}",
                 f"data.extra_sizes={extra}", "model.batch_shared_mask=true"]
    overrides += [f"model.{key}={sizes[key]}" for key in ("stages", "gf_dim", "z_dim", "condition_dim",
                                                          "residual_blocks") if sizes[key] is not None]
    if netds:
        first = "img_code_s16.0.module.weight_bar" if kind == "dmgan" else "img_code_s16.0.weight"
        if first not in netds[0].arrays:
            raise UserError(f"{netds[0].path}: no {first}; not {NAMES[kind]}'s D_NET64")
        overrides.append(f"model.df_dim={netds[0].arrays[first].shape[0]}")
    return overrides


# ------------------------------------------------------------------------------------------------------ generator

def generator_pairs(backbone, kind: str) -> list[tuple]:
    """(Keras variable, torch key, transform, torch shape) for G_NET."""
    generator = backbone.generator
    ca = generator.get_layer("ca").fc
    pairs = [dense(ca.kernel, "ca_net.fc.weight"), same(ca.bias, "ca_net.fc.bias")]
    fc = generator.get_layer("fc")
    channels = fc.kernel.shape[1] // 32

    def hwc(rows):  # the GLU's two halves, each numbered (c, h, w) -> (h, w, c), as Reshape((4, 4, C)) reads them
        return rows.reshape(2, channels, 16, -1).transpose(0, 2, 1, 3).reshape(32 * channels, -1)

    pairs.append((fc.kernel, "h_net1.fc.0.weight", lambda a: hwc(a).T, tuple(fc.kernel.shape[::-1])))
    pairs += batch_norm(generator.get_layer("fc_bn"), "h_net1.fc.1", lambda a: hwc(a[:, None])[:, 0])
    for index in range(4):
        pairs += _up_block(generator, f"stage_0_up_{index}", f"h_net1.upsample{index + 1}")
    pairs.append(conv(generator.get_layer("stage_0_rgb").kernel, "img_net1.img.0.weight"))
    for stage in range(1, len(backbone.sizes)):
        prefix = f"h_net{stage + 1}"
        fusion = generator.get_layer(f"stage_{stage}_fusion")
        pairs += _memory(fusion, prefix) if kind == "dmgan" else [
            pointwise(fusion.attention.project.kernel, f"{prefix}.att.conv_context.weight", 2)]
        for index in range(backbone.config.residual_blocks):
            ours, theirs = f"stage_{stage}_residual_{index}", f"{prefix}.residual.{index}.block"
            pairs += [conv(generator.get_layer(f"{ours}_conv_1").kernel, f"{theirs}.0.weight"),
                      *batch_norm(generator.get_layer(f"{ours}_bn_1"), f"{theirs}.1"),
                      conv(generator.get_layer(f"{ours}_conv_2").kernel, f"{theirs}.3.weight"),
                      *batch_norm(generator.get_layer(f"{ours}_bn_2"), f"{theirs}.4")]
        pairs += _up_block(generator, f"stage_{stage}_up", f"{prefix}.upsample")
        pairs.append(conv(generator.get_layer(f"stage_{stage}_rgb").kernel, f"img_net{stage + 1}.img.0.weight"))
    return pairs


def _up_block(generator, ours: str, theirs: str) -> list[tuple]:
    """upBlock: Upsample, conv3x3 (.1), BatchNorm (.2), GLU."""
    return [conv(generator.get_layer(f"{ours}_conv").kernel, f"{theirs}.1.weight"),
            *batch_norm(generator.get_layer(f"{ours}_bn"), f"{theirs}.2")]


def _memory(fusion, prefix: str) -> list[tuple]:
    """DM-GAN's memory writing, addressing and response gate (linear A, B; Conv1d M_w, M_r, key, value; Conv2d gate)."""
    pairs = [dense(fusion.word_gate.kernel, f"{prefix}.A.weight"),
             dense(fusion.image_gate.kernel, f"{prefix}.B.weight")]
    for layer, name in ((fusion.write_words, "M_w"), (fusion.write_image, "M_r"), (fusion.key, "key"),
                        (fusion.value, "value")):
        pairs += [pointwise(layer.kernel, f"{prefix}.{name}.0.weight", 1), same(layer.bias, f"{prefix}.{name}.0.bias")]
    return pairs + [pointwise(fusion.response.kernel, f"{prefix}.response_gate.0.weight", 2),
                    same(fusion.response.bias, f"{prefix}.response_gate.0.bias")]


# -------------------------------------------------------------------------------------------------- discriminators

def discriminator_blocks(size: int, kind: str) -> list[tuple[str, str, str | None]]:
    """(our block, the official conv's key prefix, its BatchNorm's or None) of D_NET64 / D_NET128 / D_NET256."""
    if kind == "dmgan":  # encode_image_by_16times: SN conv, LReLU, four times; no BatchNorm anywhere
        first = [("down_0", "img_code_s16.0", None), ("down_1", "img_code_s16.2", None),
                 ("down_2", "img_code_s16.4", None), ("down_3", "img_code_s16.6", None)]
    else:  # conv, LReLU, then (conv, BN, LReLU) three times
        first = [("down_0", "img_code_s16.0", None), ("down_1", "img_code_s16.2", "img_code_s16.3"),
                 ("down_2", "img_code_s16.5", "img_code_s16.6"), ("down_3", "img_code_s16.8", "img_code_s16.9")]
    norm = kind != "dmgan"
    downs = {128: ["img_code_s32"], 256: ["img_code_s32", "img_code_s64"]}.get(size, [])
    backs = {128: ["img_code_s32_1"], 256: ["img_code_s64_1", "img_code_s64_2"]}.get(size, [])
    return (first + [(f"down_{4 + i}", f"{k}.0", f"{k}.1" if norm else None) for i, k in enumerate(downs)]
            + [(f"back_{i}", f"{k}.0", f"{k}.1" if norm else None) for i, k in enumerate(backs)])


def _conv_block(model, ours: str, conv_key: str, norm_key: str | None, kind: str) -> list[tuple]:
    layer = model.get_layer(f"{ours}_conv")
    if kind == "dmgan":  # SpectralNorm(module): module.weight_bar, module.bias, module.weight_u
        return [conv(layer.kernel, f"{conv_key}.module.weight_bar"), same(layer.bias, f"{conv_key}.module.bias"),
                same(layer.u, f"{conv_key}.module.weight_u")]
    pairs = [conv(layer.kernel, f"{conv_key}.weight")]
    return pairs + (batch_norm(model.get_layer(f"{ours}_bn"), norm_key) if norm_key else [])


def discriminator_pairs(backbone, stage: int, kind: str) -> list[tuple]:
    """(Keras variable, torch key, transform, torch shape) for one stage's D_NET with its two D_GET_LOGITS heads."""
    model = backbone.discriminators[stage]
    pairs = [p for ours, conv_key, norm_key in discriminator_blocks(backbone.sizes[stage], kind)
             for p in _conv_block(model, ours, conv_key, norm_key, kind)]
    conditional, unconditional = backbone.conditional_heads[stage], backbone.unconditional_heads[stage]
    pairs += _conv_block(conditional, "joint", "COND_DNET.jointConv.0", "COND_DNET.jointConv.1", kind)
    for head, prefix in ((conditional, "COND_DNET"), (unconditional, "UNCOND_DNET")):
        logits = head.get_layer("logits")
        pairs += [conv(logits.kernel, f"{prefix}.outlogits.0.weight"), same(logits.bias, f"{prefix}.outlogits.0.bias")]
    return pairs


# ---------------------------------------------------------------------------------------------------------- import

def import_generator(kind: str, generator_file: Path, discriminator_files: list[Path], files: mapping.DamsmFiles,
                     run_dir: Path, recipe_name: str, overrides: list[str], overwrite: bool = False) -> dict:
    """Write a training run from a released AttnGAN or DM-GAN generator (and, optionally, its discriminators)."""
    with mapping.new_training_run(run_dir, overwrite) as run:
        netg = read_state(generator_file, "G_NET")
        found = generator_kind(netg)
        if found != kind:
            raise UserError(f"{generator_file}: a {NAMES[found]} generator; import it with `t2ictl import {found}`")
        sizes = generator_sizes(netg)
        netds = [read_state(path, f"netD{i}") for i, path in enumerate(discriminator_files)]
        if netds and len(netds) != sizes["stages"]:
            raise UserError(f"{generator_file}: the generator has {sizes['stages']} stages; give one --discriminator "
                            f"per stage (netD0.pth ...), not {len(netds)}")
        recipe, captions, text_state = files.recipe(mapping.backbone_recipe(recipe_name, kind),
                                                    overrides + recipe_overrides(kind, sizes, netds))
        if recipe.pretrain.text_dim != sizes["text_dim"]:
            raise UserError(f"{generator_file}: the generator reads {sizes['text_dim']}-d text features, the text "
                            f"encoder {files.text} gives {recipe.pretrain.text_dim}-d ones")
        epoch = re.search(r"epoch_(\d+)", Path(generator_file).name)
        record = {"generator": damsm.file_record(generator_file), "backbone": kind, "batch_shared_mask": True,
                  "discriminators": [damsm.file_record(path) for path in discriminator_files],
                  "epoch": int(epoch.group(1)) if epoch else None}
        phase = mapping.build_imported_phase(run, recipe, files, captions, text_state, record, overwrite)
        return _load(phase, kind, netg, netds) | {"run": run, "recipe": recipe, "epoch": record["epoch"]}


def _load(phase, kind: str, netg: StateDict, netds: list[StateDict]) -> dict:
    from t2ictl.training import loop

    backbone = phase.backbone
    g_pairs = generator_pairs(backbone, kind)
    mapping.load_weights(g_pairs, netg, NAMES[kind], IGNORED)
    phase.ema_generator.set_weights(backbone.generator.get_weights())  # the file's generator is the average
    d_pairs = []
    for stage, netd in enumerate(netds):
        pairs = discriminator_pairs(backbone, stage, kind)
        mapping.load_weights(pairs, netd, NAMES[kind], IGNORED)
        d_pairs += pairs
    saved = loop.write_checkpoint(phase, phase.run, 0)
    return {"checkpoint": saved, "discriminators": len(netds),
            "parameters": sum(int(np.prod(v.shape)) for v, *_ in g_pairs + d_pairs)}
