"""`t2ictl experiment`: a grid of arms x seeds, each pretrained, trained and scored with one protocol, and compared."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from t2ictl.commands import common
from t2ictl.console import console, table
from t2ictl.errors import UserError

def experiment(
    recipe: str = typer.Option(..., "--recipe", "-r", help="The recipe every arm starts from (name or .toml)."),
    vary: Optional[List[str]] = typer.Option(None, "--vary", help="A recipe key and its values, KEY=V1,V2 "
                                             "(repeatable; the arms are the product of all lists, the first value "
                                             "of each list making arm 1, the baseline of the comparisons)."),
    seeds: str = typer.Option("0,1,2", "--seeds", help="Seeds (runtime.seed) every arm runs with, paired across "
                              "arms."),
    out: Path = typer.Option(..., "--out", help="The experiment folder: runs, shared pretrainings, logs, results."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a recipe value in every arm: "
                                             "section.key=value (repeatable)."),
    data: Optional[Path] = common.DataOption,
    only: Optional[str] = typer.Option(None, "--only", help="Run slice I/N of the grid's runs (I from 1) into the "
                                       "shared --out, so N machines or cluster jobs split it; slices that share a "
                                       "pretraining take turns on it."),
    plan: bool = typer.Option(False, "--plan", help="Print the commands of the grid (this slice's), finished ones "
                              "marked '# done', and stop."),
    num: int = typer.Option(2000, "--num", min=10, help="Generated images per run for the scores (FID, IS, "
                            "R-precision; caption consistency reads up to 1,000)."),
    inception: Optional[str] = typer.Option(None, "--inception", help="The FID network for every run, in any "
                                            "`t2ictl score --inception` form [default: on the embedded data, its "
                                            "evaluation classifier (fitted once); else score's default]."),
    encoders: Optional[Path] = typer.Option(None, "--encoders", help="One DAMSM encoder pair for every run's "
                                            "R-precision [default: on the embedded data, the evaluation pair "
                                            "(fitted once); else each run's own, which the framework changes]."),
) -> None:
    """Run the grid of --vary lists x --seeds: each run's pretraining (shared where no varied key touches phase 1),
    GAN training and scores, each as its own `t2ictl` command logged to OUT/logs/. An interrupted experiment run
    again resumes its runs and skips what is finished. Every arm trains on the same budget: arms without the
    framework get data.batch_size = 2B, so every step sees 2B images and every run as many steps. Then the finished
    runs are compared: OUT/results.json (every figure and its protocol), OUT/results.md (mean ± std per arm, change
    against arm 1, paired t-test over seeds and its 95% interval; with two or more --vary keys, also each key's
    change with the others held, and how much one key's change depends on another), OUT/results.png (seeds as points)."""
    from t2ictl.experiment import grid as grids

    varied = grids.parse_vary(vary or [])
    part, parts = grids.parse_slice(only)
    grid = grids.build_grid(recipe, set_ or [], varied, grids.parse_seeds(seeds))
    first = grids.resolve(recipe, list(grid.runs[0].train_overrides), grid.arms[0])
    data_dir, manifest = common.resolve_data(first, data)
    from t2ictl.experiment import report, runner  # TensorFlow starts here, once the grid is checked

    out, data_dir = out.resolve(), data_dir.resolve()
    scoring, steps = _plan(grid, recipe, data_dir, out, manifest, part, parts, num, inception, encoders)
    fixed = {"recipe": recipe, "sets": set_ or [], "data": str(data_dir), "num": num,
             "inception": scoring.inception, "encoders": str(scoring.encoders or "")}
    if plan:
        for step in steps:
            console.print(runner.shell_line(step) + ("  # done" if step.done() else ""), markup=False,
                          soft_wrap=True)
        return
    _keep_setup(out, fixed)
    console.print(f"experiment: {len(grid.arms)} arm(s) x {len(grid.seeds)} seed(s)"
                  + (f", slice {part}/{parts}" if parts > 1 else "") + f", {len(steps)} steps; logs in {out}/logs")
    failures = runner.execute_all(steps, out)
    records = report.collect(grid, out)
    setup = {**fixed, "vary": [f"{k}={','.join(v)}" for k, v in varied], "seeds": grid.seeds}
    written = report.write(grid, records, out, setup) if records else None
    _print(grid, records, written)
    if failures:
        for step, reason in failures:
            console.print(f"failed: {step.label}: {reason}", markup=False)
        raise UserError(f"{len(failures)} step(s) failed (logs in {out}/logs); run the same command again to resume")


def _plan(grid, recipe, data_dir, out, manifest, part, parts, num, inception, encoders):
    from t2ictl.evaluation import shapes_network
    from t2ictl.experiment import grid as grids
    from t2ictl.experiment import runner

    steps = []
    evaluator = None
    if manifest["dataset"] in shapes_network.DATASETS and (inception is None or encoders is None):
        evaluator = _evaluator_folder(data_dir, out)
        steps.append(runner.evaluator_step(data_dir, evaluator))
    elif encoders is None:
        console.print("note: R-precision uses each run's own DAMSM encoders, which the framework trains; pass "
                      "--encoders (e.g. released ones from `t2ictl import damsm`) to score every arm alike",
                      markup=False)
    scoring = runner.Scoring(data_dir, num, inception or (str(evaluator) if evaluator else None),
                             encoders.resolve() if encoders else (evaluator / "damsm" if evaluator else None),
                             evaluator)
    seen = set()
    for run in grids.my_runs(grid, part, parts):
        for step in runner.run_steps(recipe, data_dir, out, run, scoring):
            if step.folder not in seen or step.kind == "score":
                steps.append(step)
                seen.add(step.folder)
    return scoring, steps


def _keep_setup(out: Path, fixed: dict) -> None:
    """Record what every run of OUT shares (recipe, --set, data, scoring); refuse another into the same OUT, whose
    finished runs would be taken for its own. Other --vary values and seeds extend the grid."""
    import json

    from t2ictl import fileio

    record = out / "experiment.json"
    if record.exists():
        before = json.loads(record.read_text())
        changed = next((key for key in fixed if before.get(key) != fixed[key]), None)
        if changed:
            raise UserError(f"{out} holds an experiment with {changed} = {before.get(changed)!r}, not "
                            f"{fixed[changed]!r}; use another --out")
        return
    fileio.write_json(record, fixed)


def _evaluator_folder(data_dir: Path, out: Path) -> Path:
    """DATA/evaluator where the data folder is writable (so experiments on it share one), else OUT/evaluator."""
    import os

    from t2ictl.evaluation import shapes_network

    target = shapes_network.folder(data_dir)
    return target if os.access(target if target.exists() else data_dir, os.W_OK) else out / "evaluator"


def _print(grid, records, written) -> None:
    from t2ictl.experiment import report

    finished = len(records)
    console.print(f"{finished} of {len(grid.runs)} runs finished and scored")
    if not written:
        return
    console.print(written["budget"], markup=False)
    console.print(report.caveat(len(grid.seeds)), markup=False)
    for arm in grid.arms:
        console.print(f"arm {arm.index}: {arm.name}", markup=False)
    for metric in report.metric_names(records):
        direction = "lower is better" if metric in report.LOWER_IS_BETTER else "higher is better"
        rows = report.text_rows(report.arm_table(grid, records, metric), names=False)
        console.print(table(f"{metric} ({direction})", report.COLUMNS, rows))
