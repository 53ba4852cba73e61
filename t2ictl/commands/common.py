"""Options and resolution steps several commands share: recipe + overrides, data folder, run directory."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from t2ictl import recipes
from t2ictl.errors import UserError

RECIPE_HELP = "A recipe name (see `t2ictl recipes`) or a path to a .toml file; with --resume, defaults to the run's."
DATA_HELP = "Prepared data folder [default: the recipe's data.dir, else data/DATASET]."
RUN_DIR_HELP = "Run directory [default: runs/RECIPE]."
SET_HELP = "Override a recipe value: section.key=value (repeatable), e.g. --set data.batch_size=16."
RESUME_HELP = "Continue the run in --run-dir from its latest checkpoint (exact step, optimizer state)."

STRATEGY_HELP = ("Distribution: default (one device), mirrored (all local GPUs), multiworker (the machines in "
                 "TF_CONFIG) [default: the recipe's runtime.strategy].")
PRECISION_HELP = ("float32, mixed_float16 (loss scaling), mixed_bfloat16, or auto (bfloat16 where the GPU or CPU "
                  "computes it natively, float16 on older tensor-core GPUs, else float32) [default: the recipe's "
                  "runtime.precision].")
XLA_HELP = "Compile the train step with XLA (--xla) or not (--no-xla) [default: the recipe's runtime.xla]."

RecipeOption = typer.Option(None, "--recipe", "-r", help=RECIPE_HELP)
StrategyOption = typer.Option(None, "--strategy", help=STRATEGY_HELP)
PrecisionOption = typer.Option(None, "--precision", help=PRECISION_HELP)
XlaOption = typer.Option(None, "--xla/--no-xla", help=XLA_HELP, show_default=False)
DataOption = typer.Option(None, "--data", help=DATA_HELP)
RunDirOption = typer.Option(None, "--run-dir", help=RUN_DIR_HELP)
SetOption = typer.Option(None, "--set", help=SET_HELP)
ResumeOption = typer.Option(False, "--resume", help=RESUME_HELP)


def runtime_overrides(strategy: Optional[str], precision: Optional[str], xla: Optional[bool]) -> list[str]:
    """The --strategy/--precision/--xla flags as recipe overrides (validated with the recipe)."""
    overrides = []
    if strategy is not None:
        overrides.append(f'runtime.strategy="{strategy}"')
    if precision is not None:
        overrides.append(f'runtime.precision="{precision}"')
    if xla is not None:
        overrides.append(f"runtime.xla={'true' if xla else 'false'}")
    return overrides


def resolve_recipe(recipe: Optional[str], run_dir: Optional[Path], overrides: Optional[List[str]],
                   resume: bool) -> recipes.Recipe:
    if recipe is None:
        saved = run_dir / "recipe.toml" if run_dir else None
        if resume and saved is not None and saved.exists():
            return recipes.load_recipe(str(saved), overrides or [])
        raise UserError("pass --recipe NAME (see `t2ictl recipes`), or --resume with the --run-dir of a run")
    return recipes.load_recipe(recipe, overrides or [])


def resolve_data(recipe: recipes.Recipe, data: Optional[Path]) -> tuple[Path, dict]:
    from t2ictl.data.prepare import load_manifest

    data_dir = data or recipe.data.path
    if not data_dir.is_dir():
        raise UserError(f"data folder {data_dir} does not exist; run `t2ictl prepare {recipe.data.dataset}` "
                        "or pass --data DIR")
    manifest = load_manifest(data_dir)
    if manifest["dataset"] != recipe.data.dataset:
        raise UserError(f"{data_dir} holds {manifest['dataset']} but the recipe trains on {recipe.data.dataset}; "
                        "pass the matching --data or --set data.dataset=...")
    return data_dir, manifest

