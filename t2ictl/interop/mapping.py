"""What every generator import shares: torch parameters onto Keras variables, torch Adam moments onto Keras Adam,
and a run directory that an import which fails leaves as it found it.

A mapping is a list of pairs (Keras variable, torch key, transform from the torch array, torch shape).
"""

from __future__ import annotations

import contextlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from t2ictl import fileio, recipes, runs
from t2ictl.errors import UserError
from t2ictl.interop import damsm
from t2ictl.torch_files import StateDict, read_checkpoint


def read_state(path: Path, what: str) -> StateDict:
    """A file that holds one state dict (the trainers' netG / netD saves)."""
    data = read_checkpoint(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a state dict (the file holds a {type(data).__name__})")
    return StateDict(data, path, what)


def conv(variable, key: str) -> tuple:
    """A convolution kernel: torch [out, in, kh, kw] -> Keras [kh, kw, in, out]."""
    height, width, channels_in, channels_out = variable.shape
    return variable, key, lambda a: np.transpose(a, (2, 3, 1, 0)), (channels_out, channels_in, height, width)


def dense(variable, key: str) -> tuple:
    """A linear layer's weight: torch [out, in] -> Keras [in, out]."""
    return variable, key, lambda a: a.T, tuple(variable.shape[::-1])


def pointwise(variable, key: str, dims: int) -> tuple:
    """A 1x1 convolution (Conv1d: dims 1, Conv2d: dims 2) computed by a Keras Dense: [out, in, 1..] -> [in, out]."""
    channels_in, channels_out = variable.shape
    return variable, key, lambda a: a.reshape(channels_out, channels_in).T, (channels_out, channels_in) + (1,) * dims


def same(variable, key: str) -> tuple:
    return variable, key, lambda a: a, tuple(variable.shape)


def batch_norm(layer, prefix: str, transform=None) -> list[tuple]:
    """A BatchNorm's scale, shift and running statistics (its num_batches_tracked has no Keras counterpart)."""
    shape = tuple(layer.gamma.shape)
    transform = transform or (lambda a: a)
    return [(variable, f"{prefix}.{name}", transform, shape) for variable, name in (
        (layer.gamma, "weight"), (layer.beta, "bias"), (layer.moving_mean, "running_mean"),
        (layer.moving_variance, "running_var"))]


def load_weights(pairs: list[tuple], state: StateDict, model: str, ignored: str = r"(?!)") -> None:
    """Assign every pair from the state dict; a parameter nothing takes (and `ignored` does not match) is an error."""
    for variable, key, transform, shape in pairs:
        variable.assign(transform(state(key, shape)))
    unused = [key for key in state.unused() if not re.fullmatch(ignored, key)]
    if unused:
        raise UserError(f"{state.path}: parameter {unused[0]} of {state.what} has no place in {model}'s model; is "
                        "this the right file for the recipe's sizes?")


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


@contextlib.contextmanager
def new_training_run(run_dir: Path, overwrite: bool):
    """The RunDir to import into, refused if it holds a training checkpoint and not overwrite; a directory this
    import created is removed again on failure."""
    run = runs.RunDir(Path(run_dir))
    if run.has_checkpoint("train") and not overwrite:
        raise UserError(f"{run.path} already holds a training checkpoint; pass --overwrite or another --run-dir")
    created = not run.path.exists()
    try:
        yield run
    except BaseException:
        if created:
            shutil.rmtree(run.path, ignore_errors=True)
        raise


def clear_training_checkpoints(run: runs.RunDir) -> None:
    """Called once the files have been read: the imported step must be the latest checkpoint, not an earlier one."""
    shutil.rmtree(run.checkpoints("train"), ignore_errors=True)


def backbone_recipe(name: str, backbone: str) -> str:
    """The recipe to import a `backbone` model into: `cub` names `cub-attngan` for AttnGAN (its data and the
    backbone's settings, e.g. COCO's DAMSM weight 50), else the recipe as given."""
    known = recipes.available_recipes()
    sibling = f"{name}-{backbone}"
    if name in known and sibling in known and recipes.load_recipe(name).model.backbone != backbone:
        return sibling
    return name


@dataclass
class DamsmFiles:
    """The released DAMSM files a generator was trained with."""

    text: Path
    captions: Path
    image: Path | None

    def recipe(self, name: str, overrides: list[str]) -> tuple[recipes.Recipe, "damsm.DamsmCaptions", StateDict]:
        """The recipe with the encoders' sizes, and what the captions and text encoder files hold."""
        captions = damsm.read_captions(self.captions)
        text_state = damsm.text_encoder_state(self.text)
        return recipes.load_recipe(name, overrides + damsm.recipe_overrides(text_state)), captions, text_state


def build_imported_phase(run: runs.RunDir, recipe: recipes.Recipe, files: DamsmFiles, captions, text_state,
                         record: dict, overwrite: bool):
    """Write the run's recipe, vocabulary, encoders and imported.json (`record` plus the DAMSM sources), and return
    its GAN phase, built, for the generator's weights to be loaded into."""
    text = damsm.load_text_encoder(text_state, captions.vocab, recipe.data.max_words)
    image = None if files.image is None else damsm.load_image_encoder(files.image, recipe.data.image_size,
                                                                      recipe.pretrain.text_dim)
    if overwrite:
        clear_training_checkpoints(run)
    source = damsm.write_run(run, recipe, text, image, captions.vocab, files.text, files.captions, files.image)
    fileio.write_json(run.path / "imported.json", {**record, **source})
    return built_gan_phase(run, recipe, captions.vocab)


def built_gan_phase(run: runs.RunDir, recipe: recipes.Recipe, vocab):
    """The GAN phase of a run whose recipe and encoders are written, built (no data: the weights come from files)."""
    from t2ictl.training import gan, loop

    loop.prepare_runtime(recipe.runtime)
    phase = gan.GANPhase(recipe, vocab, {"multi_label": recipe.data.dataset == "coco"}, None, run, run.encoders)
    loop.build(phase)
    return phase
