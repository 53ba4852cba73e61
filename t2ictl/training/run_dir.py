"""The run directory: everything a run needs and makes, so it can be resumed, exported and scored from it alone.

  recipe.toml              the resolved recipe (defaults filled, overrides applied)
  vocab.json               the vocabulary of the prepared data the run was trained on
  checkpoints/<phase>/     tf.train checkpoints (keep-N) with the step, models and optimizer state
  logs/<phase>/            TensorBoard events
  encoders/                the pretrained text and image encoders (.keras) the GAN phase loads
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import tensorflow as tf

from t2ictl import fileio, recipes
from t2ictl.data.vocab import Vocabulary
from t2ictl.errors import UserError

RECIPE = "recipe.toml"
VOCAB = "vocab.json"
# Keys that may change when a run is resumed (to extend it): how long it trains and how often it logs, saves, reports.
RESUMABLE_CHANGES = {"pretrain.epochs", "pretrain.log_every", "pretrain.checkpoint_every", "pretrain.eval_examples",
                     "train.epochs", "train.log_every", "train.checkpoint_every", "train.sample_every",
                     "train.sample_captions", "train.keep_checkpoints", "pretrain.keep_checkpoints", "train.eval_every"}


@dataclasses.dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def recipe_file(self) -> Path:
        return self.path / RECIPE

    @property
    def vocab_file(self) -> Path:
        return self.path / VOCAB

    @property
    def encoders(self) -> Path:
        return self.path / "encoders"

    def checkpoints(self, phase: str) -> Path:
        return self.path / "checkpoints" / phase

    def logs(self, phase: str) -> Path:
        return self.path / "logs" / phase

    def has_checkpoint(self, phase: str) -> bool:
        return tf.train.latest_checkpoint(str(self.checkpoints(phase))) is not None

    def vocab(self) -> Vocabulary:
        return Vocabulary.load(self.vocab_file)

    def recipe(self) -> recipes.Recipe:
        if not self.recipe_file.exists():
            raise UserError(f"{self.path} is not a t2ictl run ({RECIPE} missing)")
        return recipes.load_recipe(str(self.recipe_file))


def default_run_dir(recipe: recipes.Recipe) -> Path:
    return Path("runs") / recipe.name


def open_run(path: Path, recipe: recipes.Recipe, data_dir: Path, phase: str, resume: bool) -> RunDir:
    """Create the run directory, or check that resuming it continues the same recipe on the same data."""
    run = RunDir(Path(path))
    data_vocab = Vocabulary.load(data_dir / VOCAB)
    if run.has_checkpoint(phase):
        if not resume:
            raise UserError(f"{run.path} already holds a {phase} checkpoint; pass --resume to continue it or "
                            "--run-dir for a new run")
        _check_same_recipe(run, recipe)
        if run.vocab().words != data_vocab.words:
            raise UserError(f"the vocabulary of {data_dir} differs from the one {run.path} was trained with; "
                            "point --data at the data the run was made from")
    elif resume and not run.path.exists():
        raise UserError(f"nothing to resume: {run.path} does not exist")
    run.path.mkdir(parents=True, exist_ok=True)
    fileio.write_text(run.recipe_file, recipes.recipe_to_toml(recipe))
    if not run.vocab_file.exists():
        shutil.copyfile(data_dir / VOCAB, run.vocab_file)
    elif run.vocab().words != data_vocab.words:
        raise UserError(f"{run.path} was made with another vocabulary than {data_dir}; use another --run-dir")
    return run


def _check_same_recipe(run: RunDir, recipe: recipes.Recipe) -> None:
    before = _flatten(recipes.recipe_to_dict(run.recipe()))
    after = _flatten(recipes.recipe_to_dict(recipe))
    changed = sorted(k for k in before.keys() | after.keys()
                     if before.get(k) != after.get(k) and k not in RESUMABLE_CHANGES and k != "name")
    if changed:
        key = changed[0]
        raise UserError(f"cannot resume {run.path} with a different recipe: {key} was {before.get(key)!r}, now "
                        f"{after.get(key)!r}")


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
