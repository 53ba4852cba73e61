"""The order of the two phases: `train` runs pretraining first when the run has no encoders, in one runtime."""

from __future__ import annotations

from pathlib import Path

from t2ictl import runs
from t2ictl.console import console
from t2ictl.errors import UserError
from t2ictl.recipes import Recipe
from t2ictl.runs import RunDir, open_run
from t2ictl.training import distribute, gan, pretrain


def pretrain_and_train(recipe: Recipe, data_dir: Path, manifest: dict, run: RunDir,
                       resume: bool) -> dict[str, float]:
    """Phase 2 in `run`, preceded by phase 1 when neither train.encoders nor the run has encoders yet."""
    encoders = run.encoders_for(recipe)
    if recipe.train.encoders and not encoders.is_dir():
        raise UserError(f"train.encoders points at {encoders}, which does not exist; pass a pretraining run "
                        "directory (t2ictl pretrain --run-dir DIR) or leave it empty to pretrain in this run")
    strategy = distribute.make_strategy(recipe.runtime.strategy)  # each phase seeds and sets precision itself
    if not recipe.train.encoders and not (encoders / runs.ENCODERS_INFO).exists():
        console.print(f"no pretrained encoders in {encoders}: running phase 1 (pretrain) first")
        open_run(run.path, recipe, data_dir, "pretrain", resume)
        pretrain.pretrain(recipe, data_dir, manifest, run, strategy)
    return gan.train(recipe, data_dir, manifest, run, strategy)
