"""The grid of an experiment: its arms (the product of the --vary lists), seeds, and the steps that run them.

Every arm gets the same budget: the same images per optimisation step and the same number of steps. An arm with the
framework on feeds B + B label-paired images a step; an arm without it gets data.batch_size = 2B, so both see 2B
images a step and an epoch has as many steps. One pretraining serves every arm whose pretraining recipe is the same
(no varied key of theirs touches phase 1); the baseline arm, without the framework in both phases, has its own.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from t2ictl import recipes
from t2ictl.errors import UserError

# Keys that only the GAN phase reads: arms differing in these share one pretraining.
GAN_ONLY_PREFIXES = ("model.", "train.", "contrastive.gan_", "contrastive.shared_noise")


@dataclass(frozen=True)
class Arm:
    index: int  # from 1, in the order of the grid
    overrides: tuple[str, ...]  # the varied key=value pairs of this arm

    @property
    def name(self) -> str:
        return ", ".join(self.overrides) or "recipe as is"

    @property
    def folder(self) -> str:
        text = "+".join(self.overrides) or "recipe"
        return "".join(c if c.isalnum() or c in "._=+-" else "_" for c in text)


@dataclass(frozen=True)
class Run:
    """One arm at one seed: its pretraining (possibly shared) and its GAN run."""
    arm: Arm
    seed: int
    pretrain_overrides: tuple[str, ...]
    train_overrides: tuple[str, ...]
    pretrain_key: str
    images_per_step: int

    @property
    def label(self) -> str:
        return f"arm {self.arm.index} seed {self.seed}"


@dataclass
class Grid:
    recipe: str
    arms: list[Arm]
    seeds: list[int]
    runs: list[Run] = field(default_factory=list)


def split_values(text: str) -> list[str]:
    """V1,V2,... split at the commas outside brackets and quotes (a value may be a TOML list or string)."""
    values, depth, quote, current = [], 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(current.strip())
            current = ""
            continue
        current += char
    values.append(current.strip())
    return [v for v in values if v]


def parse_vary(options: list[str]) -> list[tuple[str, list[str]]]:
    varied = []
    for option in options:
        key, sep, values = option.partition("=")
        key = key.strip()
        if not sep or "." not in key or not split_values(values):
            raise UserError(f"--vary {option!r}: write section.key=V1,V2 (e.g. contrastive.enabled=true,false)")
        if key in {k for k, _ in varied}:
            raise UserError(f"--vary {key} is given twice; list all its values in one --vary")
        if len(set(split_values(values))) < len(split_values(values)):
            raise UserError(f"--vary {option!r}: a value is listed twice, which would make two arms of one run")
        if key == "runtime.seed":
            raise UserError("--vary runtime.seed: seeds are --seeds 0,1,2, which pairs the arms seed by seed")
        varied.append((key, split_values(values)))
    return varied


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in split_values(text)]
    except ValueError:
        raise UserError(f"--seeds {text!r}: give whole numbers separated by commas, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {text!r}: give distinct seeds, e.g. 0,1,2")
    return seeds


def parse_slice(text: str | None) -> tuple[int, int]:
    if text is None:
        return 1, 1
    part, sep, total = text.partition("/")
    if not (sep and part.isdigit() and total.isdigit() and 1 <= int(part) <= int(total)):
        raise UserError(f"--only {text!r}: write I/N with 1 <= I <= N, e.g. --only 2/4")
    return int(part), int(total)


def is_gan_only(override: str) -> bool:
    return override.split("=", 1)[0].strip().startswith(GAN_ONLY_PREFIXES)


def build_grid(recipe: str, sets: list[str], varied: list[tuple[str, list[str]]], seeds: list[int]) -> Grid:
    """Every arm at every seed, with the overrides of its two phases, each checked by resolving the recipe."""
    combos = itertools.product(*[[f"{key}={value}" for value in values] for key, values in varied])
    arms = [Arm(i + 1, tuple(combo)) for i, combo in enumerate(combos)]
    grid = Grid(recipe, arms, seeds)
    for seed in seeds:  # seed by seed, so that an unfinished grid holds whole pairs of arms
        for arm in arms:
            grid.runs.append(_run(recipe, sets, arm, seed))
    return grid


def _run(recipe: str, sets: list[str], arm: Arm, seed: int) -> Run:
    chosen = [*sets, *arm.overrides, f"runtime.seed={seed}"]
    resolved = resolve(recipe, chosen, arm)
    budget = [] if resolved.contrastive.enabled else [f"data.batch_size={2 * resolved.data.batch_size}"]
    phase1 = [*(o for o in (*sets, *arm.overrides) if not is_gan_only(o)), f"runtime.seed={seed}", *budget]
    resolve(recipe, phase1, arm)
    key = pretrain_key(recipe, phase1)
    return Run(arm, seed, tuple(phase1), tuple(chosen + budget), key, 2 * resolved.data.batch_size)


def resolve(recipe: str, overrides: list[str], arm: Arm) -> recipes.Recipe:
    try:
        return recipes.load_recipe(recipe, overrides)
    except UserError as exc:
        raise UserError(f"arm {arm.index} ({arm.name}): {exc}") from None


def pretrain_key(recipe: str, phase1_overrides: list[str]) -> str:
    """A digest of the recipe and the overrides phase 1 runs with: equal digests, one pretraining. (Not of the
    resolved recipe, whose keys grow with t2ictl's versions: an experiment must find its pretrainings again.)"""
    text = json.dumps([recipe, sorted(o.replace(" ", "") for o in phase1_overrides)])
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def my_runs(grid: Grid, part: int, parts: int) -> list[Run]:
    """The runs of slice part/parts: every parts-th run, so that each slice holds every arm where it can."""
    return [run for i, run in enumerate(grid.runs) if i % parts == part - 1]


def run_folder(out: Path, run: Run) -> Path:
    return Path(out) / "runs" / run.arm.folder / f"seed-{run.seed}"


def pretrain_folder(out: Path, run: Run) -> Path:
    return Path(out) / "pretrain" / f"seed-{run.seed}-{run.pretrain_key}"
