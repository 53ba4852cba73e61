"""What an experiment shows: every finished run's scores gathered into results.json, a table per metric (mean ± std
over seeds, change against the first arm, paired t-test and its 95% interval), with two or more varied keys each
key's effect at every setting of the others and their interactions, the same as Markdown, and a chart."""

from __future__ import annotations

import itertools
import json
import math
import time
from pathlib import Path

from t2ictl import fileio, recipes
from t2ictl.experiment import chart
from t2ictl.experiment.grid import Grid, pretrain_folder, run_folder
from t2ictl.experiment.runner import SCORE_FILE
from t2ictl.experiment.statistics import paired, smallest_detectable, summarize

LOWER_IS_BETTER = {"FID"}
RESULTS = "results.json"


def collect(grid: Grid, out: Path) -> list[dict]:
    """One record per finished run (scored): arm, seed, metrics, and the full protocol it ran under."""
    records = []
    for run in grid.runs:
        folder = run_folder(out, run)
        if not (folder / SCORE_FILE).exists():
            continue
        scored = json.loads((folder / SCORE_FILE).read_text())
        records.append({
            "arm": run.arm.index, "arm_name": run.arm.name, "seed": run.seed, "run_dir": str(folder),
            "pretrain_dir": str(pretrain_folder(out, run)), "images_per_step": run.images_per_step,
            "metrics": {row["metric"]: row["value"] for row in scored["results"]},
            "score_protocol": scored.get("protocol", {}),
            "recipe": recipes.recipe_to_dict(recipes.load_recipe(str(folder / "recipe.toml"))),
        })
    return records


def metric_names(records: list[dict]) -> list[str]:
    names: list[str] = []
    for record in records:
        names += [name for name in record["metrics"] if name not in names]
    return names


def values_by_arm(grid: Grid, records: list[dict], metric: str) -> dict[int, dict[int, float]]:
    """{arm: {seed: value}} of one metric over the finished runs."""
    return {arm.index: {r["seed"]: r["metrics"][metric] for r in records
                        if r["arm"] == arm.index and metric in r["metrics"]} for arm in grid.arms}


def arm_table(grid: Grid, records: list[dict], metric: str) -> list[dict]:
    """Rows per arm: the summary over seeds and the paired comparison with arm 1."""
    by_arm = values_by_arm(grid, records, metric)
    baseline = by_arm[grid.arms[0].index]
    rows = []
    for arm in grid.arms:
        values = by_arm[arm.index]
        if not values:
            continue
        row = {"arm": arm.index, "name": arm.name, "values": values, "summary": summarize(list(values.values()))}
        row["baseline"] = arm.index == grid.arms[0].index
        row["paired"] = None if row["baseline"] else paired(values, baseline)
        rows.append(row)
    return rows


def arm_with(grid: Grid, changes: dict[int, str], start: tuple[str, ...] | None = None) -> int:
    """The arm whose overrides are `start` (arm 1's by default) with the positions in `changes` set to new values."""
    overrides = list(grid.arms[0].overrides if start is None else start)
    for position, value in changes.items():
        overrides[position] = value
    return next(arm.index for arm in grid.arms if arm.overrides == tuple(overrides))


def contrasts(grid: Grid) -> list[tuple[str, int, int]]:
    """With two or more varied keys: (label, arm, reference arm) for each value of a key against that key's first
    value, every other key held where it is (a 2 x 2 grid gives the framework's effect at each pretraining length)."""
    if not grid.arms or len(grid.arms[0].overrides) < 2:
        return []
    pairs = []
    for position, reference_value in enumerate(grid.arms[0].overrides):
        for arm in grid.arms:
            if arm.overrides[position] == reference_value:
                continue
            held = ", ".join(o for i, o in enumerate(arm.overrides) if i != position)
            label = f"{arm.overrides[position]} vs {reference_value.split('=', 1)[1]}, at {held}"
            pairs.append((label, arm.index, arm_with(grid, {position: reference_value}, arm.overrides)))
    return pairs


def interactions(grid: Grid) -> list[tuple[str, tuple[int, int], tuple[int, int]]]:
    """For two keys changed together, the other keys at their first values: (label, (arm, its reference) with the
    second key changed, the same with it at its first value). Their difference says whether one key's effect depends
    on the other (is the framework's lead smaller after a longer pretraining?)."""
    first = grid.arms[0].overrides if grid.arms else ()
    values = [list(dict.fromkeys(arm.overrides[i] for arm in grid.arms)) for i in range(len(first))]  # grid order
    rows = []
    for i, j in itertools.combinations(range(len(first)), 2):
        for changed in values[i][1:]:
            for held in values[j][1:]:
                label = (f"interaction of {changed} and {held} (the change of either where the other is changed, "
                         "minus where it is not)")
                rows.append((label, (arm_with(grid, {i: changed, j: held}), arm_with(grid, {j: held})),
                             (arm_with(grid, {i: changed}), arm_with(grid, {}))))
    return rows


def contrast_table(grid: Grid, records: list[dict], metric: str) -> list[dict]:
    """Rows per contrast, then per interaction: the paired comparison over the seeds every arm in it finished (None
    where they share no seed)."""
    by_arm = values_by_arm(grid, records, metric)
    rows = [{"contrast": label, "arms": [arm, reference], "paired": paired(by_arm[arm], by_arm[reference])}
            for label, arm, reference in contrasts(grid)]
    for label, (a, b), (c, d) in interactions(grid):
        effect = {seed: by_arm[a][seed] - by_arm[b][seed] for seed in by_arm[a].keys() & by_arm[b].keys()}
        reference = {seed: by_arm[c][seed] - by_arm[d][seed] for seed in by_arm[c].keys() & by_arm[d].keys()}
        rows.append({"contrast": label, "arms": [a, b, c, d], "paired": paired(effect, reference)})
    return rows


def budget_line(grid: Grid, steps: dict[int, int]) -> str:
    images = sorted({run.images_per_step for run in grid.runs})
    step_counts = sorted(set(steps.values()))
    per_step = " / ".join(str(i) for i in images)
    counted = " / ".join(str(s) for s in step_counts) if step_counts else "?"
    return (f"equal budget: {per_step} images per step in every arm (framework on: B + B label-paired; off: one "
            f"batch of 2B), {counted} GAN steps per run")


def comparison_cells(p) -> list[str]:
    """The change, its 95% interval and p of a paired comparison, as table cells."""
    if p is None:
        return ["(baseline)"] * 3
    change = f"{p.relative:+.1%}" if not math.isnan(p.relative) else f"{p.difference:+.4g}"
    interval = "" if math.isnan(p.low) else f"[{p.low:+.4g}, {p.high:+.4g}]"
    return [change, interval, "" if math.isnan(p.p_value) else f"{p.p_value:.3f}"]


def text_rows(rows: list[dict], names: bool = True) -> list[list[str]]:
    table = []
    for row in rows:
        s = row["summary"]
        spread = "" if math.isnan(s.std) else f" ± {s.std:.2g}"
        arm = f"{row['arm']}: {row['name']}" if names else str(row["arm"])
        if row["paired"] is None and not row["baseline"]:
            cells = ["no seed in common with arm 1", "", ""]
        else:
            cells = comparison_cells(row["paired"])
        table.append([arm, str(s.n), f"{s.mean:.4g}{spread}", *cells])
    return table


def contrast_rows(rows: list[dict]) -> list[list[str]]:
    table = []
    for row in rows:
        arms = row["arms"]
        which = (f"arm {arms[0]} vs {arms[1]}" if len(arms) == 2 else
                 f"arms ({arms[0]} - {arms[1]}) - ({arms[2]} - {arms[3]})")
        p = row["paired"]
        cells = ["0", "", "no seed finished in all of these arms", "", ""] if p is None else [
            str(p.n), f"{p.difference:+.4g}", *comparison_cells(p)]
        table.append([f"{row['contrast']} ({which})", *cells])
    return table


COLUMNS = ["arm", "seeds", "mean ± std", "vs arm 1", "95% CI of the difference", "p (paired t)"]
CONTRAST_COLUMNS = ["one key changed, the others held", "seeds", "difference", "relative", "95% CI", "p (paired t)"]


def caveat(seeds: int) -> str:
    if seeds < 2:
        return "one seed: no spread and no test; nothing here separates an effect from chance"
    return (f"{seeds} seeds: the paired t-test has {seeds - 1} degree(s) of freedom, so only a mean difference "
            f"{smallest_detectable(seeds):.1f} standard errors from zero reaches p < 0.05; a p above that says "
            "little either way")


def markdown(grid: Grid, records: list[dict], budget: str) -> str:
    lines = [f"# Experiment: recipe {grid.recipe}, seeds {', '.join(map(str, grid.seeds))}", "", budget, "",
             caveat(len(grid.seeds)), ""]
    if contrasts(grid):
        tests = len(grid.arms) - 1 + len(contrasts(grid)) + len(interactions(grid))
        note = (f"Each metric below has {tests} tests, none corrected for the others: where nothing differs, "
                "about one in twenty still reaches p < 0.05.")
        lines += [note, ""]
    for metric in metric_names(records):
        direction = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
        lines += [f"## {metric} ({direction})", "", "| " + " | ".join(COLUMNS) + " |",
                  "|" + " --- |" * len(COLUMNS)]
        lines += ["| " + " | ".join(row) + " |" for row in text_rows(arm_table(grid, records, metric))]
        lines.append("")
        within = contrast_rows(contrast_table(grid, records, metric))
        if within:
            lines += ["| " + " | ".join(CONTRAST_COLUMNS) + " |", "|" + " --- |" * len(CONTRAST_COLUMNS)]
            lines += ["| " + " | ".join(row) + " |" for row in within]
            lines.append("")
    return "\n".join(lines)


def gan_steps(records: list[dict]) -> dict[int, int]:
    """The GAN steps each finished run took (its latest checkpoint's step), by arm."""
    import tensorflow as tf

    steps = {}
    for record in records:
        latest = tf.train.latest_checkpoint(str(Path(record["run_dir"]) / "checkpoints" / "train"))
        if latest:
            steps[record["arm"]] = int(latest.rsplit("-", 1)[-1])
    return steps


def write(grid: Grid, records: list[dict], out: Path, setup: dict) -> dict:
    """results.json, results.md and results.png in `out`; returns what was written."""
    out = Path(out)
    budget = budget_line(grid, gan_steps(records))
    summary = {metric: [{"arm": row["arm"], "name": row["name"], "mean": row["summary"].mean,
                         "std": row["summary"].std, "n": row["summary"].n,
                         "paired_vs_arm_1": None if row["paired"] is None else vars(row["paired"])}
                        for row in arm_table(grid, records, metric)] for metric in metric_names(records)}
    within = {metric: [{"contrast": row["contrast"], "arms": row["arms"],
                        **(vars(row["paired"]) if row["paired"] is not None else {"n": 0})}
                       for row in contrast_table(grid, records, metric)] for metric in metric_names(records)}
    fileio.write_json(out / RESULTS, {"experiment": {**setup, "budget": budget,
                                                     "arms": [{"arm": a.index, "overrides": list(a.overrides)}
                                                              for a in grid.arms]},
                                      "summary": summary, "contrasts": within, "runs": records,
                                      "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    fileio.write_text(out / "results.md", markdown(grid, records, budget))
    panels = [(metric, [(f"{row['arm']}", list(row["values"].values())) for row in arm_table(grid, records, metric)])
              for metric in metric_names(records)]
    if panels:
        chart.write_chart(out / "results.png", panels, f"{grid.recipe}: arms 1-{len(grid.arms)}, seeds as points")
    return {"budget": budget, "summary": summary, "contrasts": within}
