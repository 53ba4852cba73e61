"""DF-GAN's checkpoints (`state_epoch_XXX.pth` of tobran/DF-GAN) as a t2ictl training run.

The file holds `{'model': {'netG', 'netD', 'netC'}, 'optimizers': {'optimizer_G', 'optimizer_D'}, 'epoch'}`. Our
DF-GAN is the official one in NHWC, so the import is a mapping:
- kernels: convolutions [out, in, kh, kw] -> [kh, kw, in, out], linear layers transposed;
- NetG's first linear layer fills a [8 nf, 4, 4] (NCHW) map: its outputs are reordered to [4, 4, 8 nf];
- a D block whose channels stay the same has a `conv_s` in the file that the official forward never uses (left out);
- Adam: torch's `exp_avg` / `exp_avg_sq` / `step` are Keras' momentum / velocity / iterations (torch numbers an
  optimizer's parameters in the order it was given them: NetG's, then NetD's and NetC's).
The imported run keeps the official architecture: the embedded recipe's departures (d_gate_init, project_condition)
are off, and the released text encoder's features are not rescaled.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from t2ictl import fileio, recipes, runs
from t2ictl.console import console
from t2ictl.errors import UserError
from t2ictl.interop import damsm
from t2ictl.torch_files import StateDict, read_checkpoint


@dataclass(frozen=True)
class Official:
    """The parts of a DF-GAN checkpoint."""

    generator: StateDict
    discriminator: StateDict
    head: StateDict
    optimizers: dict | None
    epoch: int | None


def read_dfgan(path: Path) -> Official:
    data = read_checkpoint(path)
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or not {"netG", "netD", "netC"} <= set(model):
        raise UserError(f"{path}: not a DF-GAN checkpoint (no {{'model': {{'netG', 'netD', 'netC'}}}})")
    optimizers = data.get("optimizers")
    epoch = data.get("epoch")
    return Official(StateDict(model["netG"], path, "netG"), StateDict(model["netD"], path, "netD"),
                    StateDict(model["netC"], path, "netC"), optimizers if isinstance(optimizers, dict) else None,
                    int(epoch) if isinstance(epoch, (int, np.integer)) else None)


def generator_sizes(netg: StateDict) -> dict:
    """nf, z_dim and the image size of a NetG state dict."""
    for key in ("fc.weight", "to_rgb.1.weight"):
        if key not in netg.arrays:
            raise UserError(f"{netg.path}: netG has no parameter {key}; not DF-GAN's NetG")
    blocks = {int(m.group(1)) for k in netg.arrays for m in [re.match(r"GBlocks\.(\d+)\.", k)] if m}
    nf = netg.arrays["to_rgb.1.weight"].shape[1]
    return {"nf": nf, "z_dim": netg.arrays["fc.weight"].shape[1], "image_size": 4 * 2 ** len(blocks)}


def recipe_overrides(official: Official, has_image_encoder: bool) -> list[str]:
    sizes = generator_sizes(official.generator)
    overrides = ['model.backbone="dfgan"', f"model.nf={sizes['nf']}", f"model.z_dim={sizes['z_dim']}",
                 f"data.image_size={sizes['image_size']}", "model.d_gate_init=0.0", "model.project_condition=false"]
    return overrides + ([] if has_image_encoder else ["contrastive.enabled=false"])


def conv(variable, key: str) -> tuple:
    """A convolution kernel: torch [out, in, kh, kw] -> Keras [kh, kw, in, out]."""
    height, width, channels_in, channels_out = variable.shape
    return variable, key, lambda a: np.transpose(a, (2, 3, 1, 0)), (channels_out, channels_in, height, width)


def dense(variable, key: str) -> tuple:
    """A linear layer's weight: torch [out, in] -> Keras [in, out]."""
    return variable, key, lambda a: a.T, tuple(variable.shape[::-1])


def same(variable, key: str) -> tuple:
    return variable, key, lambda a: a, tuple(variable.shape)


def generator_pairs(backbone) -> list[tuple]:
    """(Keras variable, torch key, transform, torch shape) for NetG."""
    generator, channels = backbone.generator, 8 * backbone.config.nf

    def hwc(rows):  # fc outputs numbered (c, h, w) -> (h, w, c), as Reshape((4, 4, C)) reads them
        return rows.reshape(channels, 4, 4, -1).transpose(1, 2, 0, 3).reshape(16 * channels, -1)

    project = generator.get_layer("project")
    pairs = [(project.kernel, "fc.weight", lambda a: hwc(a).T, tuple(project.kernel.shape[::-1])),
             (project.bias, "fc.bias", lambda a: hwc(a[:, None])[:, 0], tuple(project.bias.shape))]
    for index in range(_count_blocks(generator)):
        block, prefix = generator.get_layer(f"block_{index}"), f"GBlocks.{index}"
        for ours, theirs in ((block.conv_1, "c1"), (block.conv_2, "c2"), (block.shortcut, "c_sc")):
            if ours is not None:
                pairs += [conv(ours.kernel, f"{prefix}.{theirs}.weight"), same(ours.bias, f"{prefix}.{theirs}.bias")]
        for fuse, theirs in ((block.fuse_1, "fuse1"), (block.fuse_2, "fuse2")):
            for affine, affine_name in ((fuse.first, "affine0"), (fuse.second, "affine1")):
                for part in ("gamma", "beta"):
                    for layer, linear in ((getattr(affine, f"{part}_hidden"), "linear1"),
                                          (getattr(affine, f"{part}_out"), "linear2")):
                        key = f"{prefix}.{theirs}.{affine_name}.fc_{part}.{linear}"
                        pairs += [dense(layer.kernel, f"{key}.weight"), same(layer.bias, f"{key}.bias")]
    rgb = generator.get_layer("to_rgb")
    return pairs + [conv(rgb.kernel, "to_rgb.1.weight"), same(rgb.bias, "to_rgb.1.bias")]


def discriminator_pairs(backbone) -> list[tuple]:
    """(Keras variable, torch key, transform, torch shape) for NetD."""
    discriminator = backbone.discriminator
    rgb = discriminator.get_layer("from_rgb")
    pairs = [conv(rgb.kernel, "conv_img.weight"), same(rgb.bias, "conv_img.bias")]
    for index in range(_count_blocks(discriminator)):
        block, prefix = discriminator.get_layer(f"block_{index}"), f"DBlocks.{index}"
        pairs += [conv(block.down.kernel, f"{prefix}.conv_r.0.weight"),
                  conv(block.conv.kernel, f"{prefix}.conv_r.2.weight"),
                  (block.gamma, f"{prefix}.gamma", lambda a: a.reshape(()), (1,))]
        if block.shortcut is not None:
            pairs += [conv(block.shortcut.kernel, f"{prefix}.conv_s.weight"),
                      same(block.shortcut.bias, f"{prefix}.conv_s.bias")]
    return pairs


def head_pairs(backbone) -> list[tuple]:
    """(Keras variable, torch key, transform, torch shape) for NetC."""
    head = backbone.discriminator_head
    return [conv(head.get_layer("joint_conv").kernel, "joint_conv.0.weight"),
            conv(head.get_layer("to_logit").kernel, "joint_conv.2.weight")]


def _count_blocks(model) -> int:
    return sum(1 for layer in model.layers if re.fullmatch(r"block_\d+", layer.name))


def load_weights(pairs: list[tuple], state: StateDict) -> None:
    for variable, key, transform, shape in pairs:
        variable.assign(transform(state(key, shape)))
    unused = [k for k in state.unused() if not re.fullmatch(r"DBlocks\.\d+\.conv_s\.(weight|bias)", k)]
    if unused:
        raise UserError(f"{state.path}: parameter {unused[0]} of {state.what} has no place in DF-GAN's model; "
                        "are the recipe's sizes the file's?")


def load_adam(optimizer, pairs: list[tuple], keys: list[str], state, name: str, path: Path) -> int:
    """Set Keras Adam's moments from a torch Adam state dict whose parameters are `keys` in order; returns its step."""
    try:
        by_index, group = state["state"], state["param_groups"][0]
    except (KeyError, IndexError, TypeError):
        raise UserError(f"{path}: {name} is not a torch Adam state dict") from None
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    index_of = {key: group["params"][i] for i, key in enumerate(keys) if i < len(group["params"])}
    steps = set()
    for variable, key, transform, shape in pairs:
        entry = by_index.get(index_of.get(key))
        if entry is None:
            continue  # torch keeps no moments for a parameter that never had a gradient
        slot = inner._get_variable_index(variable)
        for moments, field in ((inner._momentums, "exp_avg"), (inner._velocities, "exp_avg_sq")):
            if entry[field].shape != shape:
                raise UserError(f"{path}: {name}'s {field} of {key} has shape {list(entry[field].shape)}, not "
                                f"{list(shape)}")
            moments[slot].assign(transform(np.asarray(entry[field], np.float32)))
        steps.add(int(np.asarray(entry["step"])))
    if len(steps) > 1:
        raise UserError(f"{path}: {name}'s parameters are at different steps {sorted(steps)[:3]}")
    step = steps.pop() if steps else 0
    inner.iterations.assign(step)
    return step


def import_checkpoint(checkpoint_file: Path, text_file: Path, captions_file: Path, image_file: Path | None,
                      run_dir: Path, recipe_name: str, overrides: list[str], overwrite: bool = False) -> dict:
    """Write a training run from a DF-GAN checkpoint and the DAMSM files it was trained with; a run directory this
    import created is removed again when the file does not fit."""
    run = runs.RunDir(Path(run_dir))
    if run.has_checkpoint("train") and not overwrite:
        raise UserError(f"{run.path} already holds a training checkpoint; pass --overwrite or another --run-dir")
    created = not run.path.exists()
    try:
        return _import_checkpoint(run, checkpoint_file, text_file, captions_file, image_file, recipe_name, overrides,
                                  overwrite)
    except BaseException:
        if created:
            shutil.rmtree(run.path, ignore_errors=True)
        raise


def _import_checkpoint(run: runs.RunDir, checkpoint_file: Path, text_file: Path, captions_file: Path,
                       image_file: Path | None, recipe_name: str, overrides: list[str], overwrite: bool) -> dict:
    from t2ictl.training import gan, loop

    official = read_dfgan(checkpoint_file)
    captions = damsm.read_captions(captions_file)
    text_state = damsm.text_encoder_state(text_file)
    recipe = recipes.load_recipe(recipe_name, overrides + damsm.recipe_overrides(text_state)
                                 + recipe_overrides(official, image_file is not None))
    text = damsm.load_text_encoder(text_state, captions.vocab, recipe.data.max_words)
    image = None if image_file is None else damsm.load_image_encoder(image_file, recipe.data.image_size,
                                                                     recipe.pretrain.text_dim)
    if overwrite:  # the imported step must be the latest checkpoint, not one an earlier training left
        shutil.rmtree(run.checkpoints("train"), ignore_errors=True)
    source = damsm.write_run(run, recipe, text, image, captions.vocab, text_file, captions_file, image_file)
    fileio.write_json(run.path / "imported.json", {"checkpoint": damsm.file_record(checkpoint_file),
                                                  "epoch": official.epoch, **source})

    loop.prepare_runtime(recipe.runtime)
    phase = gan.GANPhase(recipe, captions.vocab, {"multi_label": recipe.data.dataset == "coco"}, None, run,
                         run.encoders)
    phase.build()
    backbone = phase.backbone
    g_pairs, d_pairs, c_pairs = generator_pairs(backbone), discriminator_pairs(backbone), head_pairs(backbone)
    load_weights(g_pairs, official.generator)
    load_weights(d_pairs, official.discriminator)
    load_weights(c_pairs, official.head)
    phase.ema_generator.set_weights(backbone.generator.get_weights())  # DF-GAN keeps no average: start it at netG
    step = 0
    if official.optimizers is not None:
        g_keys = list(official.generator.arrays)
        d_keys = list(official.discriminator.arrays) + list(official.head.arrays)
        step = load_adam(phase.g_optimizer, g_pairs, g_keys, official.optimizers.get("optimizer_G"), "optimizer_G",
                         checkpoint_file)
        d_step = load_adam(phase.d_optimizer, d_pairs + c_pairs, d_keys, official.optimizers.get("optimizer_D"),
                           "optimizer_D", checkpoint_file)
        if d_step != step:
            console.print(f"note: optimizer_G is at step {step}, optimizer_D at {d_step}", markup=False)
    saved = loop.write_checkpoint(phase, run, step)
    return {"run": run, "recipe": recipe, "step": step, "epoch": official.epoch, "checkpoint": saved,
            "adam": official.optimizers is not None, "image": image is not None,
            "parameters": sum(int(np.prod(v.shape)) for v, *_ in g_pairs + d_pairs + c_pairs)}
