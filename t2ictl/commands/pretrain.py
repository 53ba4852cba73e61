"""`t2ictl pretrain`: phase 1, the DAMSM encoders with label-guided supervised contrastive learning."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from t2ictl.commands import common
from t2ictl.console import console, table


def pretrain(
    recipe: Optional[str] = common.RecipeOption,
    data: Optional[Path] = common.DataOption,
    run_dir: Optional[Path] = common.RunDirOption,
    set_: Optional[List[str]] = common.SetOption,
    resume: bool = common.ResumeOption,
    strategy: Optional[str] = common.StrategyOption,
    precision: Optional[str] = common.PrecisionOption,
    xla: Optional[bool] = common.XlaOption,
) -> None:
    """Pretrain the text and image encoders (DAMSM + supervised contrast over two weight-sharing branches).

    The run directory ends up with the encoders the GAN phase loads (encoders/). With contrastive.enabled = false
    this is plain DAMSM pretraining, the paper's baseline. With --set pretrain.init=RUN_DIR it starts from that
    run's encoders (e.g. released DAMSM ones from `t2ictl import damsm`), their vocabulary and sizes.
    """
    overrides = (set_ or []) + common.runtime_overrides(strategy, precision, xla)
    resolved = common.resolve_recipe(recipe, run_dir, overrides, resume)  # before TensorFlow starts: fails at once
    from t2ictl.runs import default_run_dir, init_overrides, open_run
    from t2ictl.training.pretrain import pretrain as run_pretraining

    if resolved.pretrain.init:  # the encoders' sizes and trunk, whatever the recipe says
        resolved = common.resolve_recipe(recipe, run_dir, overrides + init_overrides(Path(resolved.pretrain.init)),
                                         resume)
        console.print(f"phase 1 starts from the encoders in {resolved.pretrain.init}", markup=False)
    data_dir, manifest = common.resolve_data(resolved, data)
    run = open_run(run_dir or default_run_dir(resolved), resolved, data_dir, "pretrain", resume)
    metrics = run_pretraining(resolved, data_dir, manifest, run)
    if metrics:
        console.print(table("pretraining result (held-out split)", ["metric", "value"], sorted(metrics.items())))
    console.print(f"encoders written to {run.encoders}")
