"""`t2ictl train`: phase 2, the GAN with the supervised contrastive framework (pretraining first if needed)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from t2ictl.commands import common
from t2ictl.console import console, table


def train(
    recipe: Optional[str] = common.RecipeOption,
    data: Optional[Path] = common.DataOption,
    run_dir: Optional[Path] = common.RunDirOption,
    set_: Optional[List[str]] = common.SetOption,
    resume: bool = common.ResumeOption,
    strategy: Optional[str] = common.StrategyOption,
    precision: Optional[str] = common.PrecisionOption,
    xla: Optional[bool] = common.XlaOption,
) -> None:
    """Train the recipe's GAN backbone on the frozen pretrained encoders.

    The encoders come from train.encoders (another run) or this run's encoders/; when neither exists, the pretraining
    phase of the same recipe runs first in this run directory, so one command does both phases. Sample grids go to
    RUN/samples/, scalars and images to RUN/logs/ (TensorBoard).
    """
    overrides = (set_ or []) + common.runtime_overrides(strategy, precision, xla)
    resolved = common.resolve_recipe(recipe, run_dir, overrides, resume)  # before TensorFlow starts: fails at once
    from t2ictl import runs
    from t2ictl.runs import default_run_dir, open_run
    from t2ictl.training.phases import pretrain_and_train

    runs.check_backbone(resolved)
    data_dir, manifest = common.resolve_data(resolved, data)
    run = open_run(run_dir or default_run_dir(resolved), resolved, data_dir, "train", resume)
    metrics = pretrain_and_train(resolved, data_dir, manifest, run, resume)
    if metrics:
        console.print(table("training result (held-out captions)", ["metric", "value"], sorted(metrics.items())))
    console.print(f"run: {run.path}   sample with: t2ictl sample \"a caption\" --run {run.path}")
