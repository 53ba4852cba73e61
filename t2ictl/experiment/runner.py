"""Running an experiment's steps: each a `t2ictl` command in its own process, resumed where it stopped, skipped when
done, and locked where slices of the grid share it (the evaluator, a pretraining).

A step's command is what `--plan` prints. Its output goes to OUT/logs/; the grid shows one progress bar. A child
process dies with the runner (Linux: PR_SET_PDEATHSIG), so a killed experiment leaves no run writing behind it, and
the lock (fcntl, released when its holder dies, and honoured over NFS) keeps two slices out of one folder.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shlex
import signal
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from t2ictl import fileio
from t2ictl.console import console, progress
from t2ictl.experiment.grid import Run, pretrain_folder, run_folder

SCORE_FILE = "score.json"
DONE_FILE = "finished.json"  # written by the runner when a GAN run's command exited 0


@dataclass(frozen=True)
class Step:
    kind: str  # evaluator | pretrain | train | score
    label: str
    argv: tuple[str, ...]  # t2ictl arguments, without --resume
    folder: Path  # what the step writes
    done_file: Path  # exists once the step is finished
    resumable_phase: str | None = None  # the phase whose checkpoint makes the step a --resume
    shared: bool = False  # other runs (and other slices) may need the same step
    needs: tuple[Path, ...] = ()  # folders of earlier steps this one reads
    still_valid: Callable[[], bool] | None = None  # a finished step that fails this check runs again

    def command(self) -> list[str]:
        resume = self.resumable_phase and (self.folder / "checkpoints" / self.resumable_phase).is_dir()
        return ["t2ictl", *self.argv, *(["--resume"] if resume else [])]

    def done(self) -> bool:
        return self.done_file.exists() and (self.still_valid is None or self.still_valid())


@dataclass(frozen=True)
class Scoring:
    """How every run is scored: one protocol for the whole grid."""
    data: Path
    num: int
    inception: str | None
    encoders: Path | None
    evaluator: Path | None = None  # the folder of the evaluator step, when the grid fits one


def run_steps(recipe: str, data: Path, out: Path, run: Run, scoring: Scoring) -> list[Step]:
    """The three steps of one run: its pretraining (shared by the runs with the same key), GAN training, scoring."""
    phase1, gan = pretrain_folder(out, run), run_folder(out, run)
    common = ["--recipe", recipe, "--data", str(data)]
    pretrain = Step("pretrain", f"pretrain seed {run.seed} ({run.pretrain_key})",
                    ("pretrain", *common, "--run-dir", str(phase1), *_sets(run.pretrain_overrides)),
                    phase1, phase1 / "encoders" / "encoders.json", "pretrain", shared=True)
    train = Step("train", f"train {run.label}",
                 ("train", *common, "--run-dir", str(gan),
                  *_sets((*run.train_overrides, f'train.encoders="{phase1.resolve()}"'))),
                 gan, gan / DONE_FILE, "train", needs=(phase1,))
    score_argv = ["score", "--run", str(gan), "--data", str(scoring.data), "--split", "test", "--num",
                  str(scoring.num), "--seed", "0", "--json", str(gan / SCORE_FILE)]
    if scoring.inception:
        score_argv += ["--inception", scoring.inception]
    if scoring.encoders:
        score_argv += ["--encoders", str(scoring.encoders)]
    score = Step("score", f"score {run.label}", tuple(score_argv), gan, gan / SCORE_FILE,
                 needs=(gan,) + ((scoring.evaluator,) if scoring.evaluator else ()),
                 still_valid=lambda: _scored_with_evaluator(gan / SCORE_FILE, scoring))
    return [pretrain, train, score]


def evaluator_step(data: Path, folder: Path) -> Step:
    """Fitting the evaluation networks; a classifier of another version or other data is fitted again."""
    from t2ictl.evaluation import shapes_network

    return Step("evaluator", "fit the evaluation networks", ("evaluator", "--data", str(data), "--to", str(folder)),
                folder, folder / "damsm" / "encoders" / "encoders.json", shared=True,
                still_valid=lambda: shapes_network.fitted(folder, data))


def _scored_with_evaluator(score_file: Path, scoring: Scoring) -> bool:
    """A score made with the grid's evaluation classifier as it is now (a refitted one invalidates it)."""
    if scoring.evaluator is None or scoring.inception != str(scoring.evaluator):
        return True
    import json

    from t2ictl.evaluation import shapes_network

    info_file = scoring.evaluator / shapes_network.INFO_FILE
    if not info_file.exists():
        return False
    used = json.loads(score_file.read_text()).get("protocol", {}).get("network_sha256")
    return used == json.loads(info_file.read_text())["sha256"]


def _sets(overrides) -> list[str]:
    return [part for override in overrides for part in ("--set", override)]


def shell_line(step: Step) -> str:
    return shlex.join(step.command())


# --------------------------------------------------------------------------------------------------------------------
# Execution


@contextmanager
def folder_lock(path: Path, waiting: str):
    """Hold an exclusive lock on `path` (created if missing), saying once if another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            console.print(waiting, markup=False)
            fcntl.lockf(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def execute(step: Step, log: Path) -> tuple[bool, str]:
    """Run the step unless it is done (checked again under its lock); (succeeded, last line of its output)."""
    lock = step.folder.parent / f".{step.folder.name}.lock"
    with folder_lock(lock, f"waiting for {step.label}: another process runs it"):
        if step.done():
            return True, "already done"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = step.command()
        with open(log, "a") as out:
            out.write(f"$ {shlex.join(command)}\n")
            out.flush()
            code = subprocess.call([sys.executable, "-m", "t2ictl", *command[1:]], stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                                   env={**os.environ, "COLUMNS": "120"})
        if code == 0 and step.kind == "train":
            fileio.write_json(step.done_file, {"command": command})
    return code == 0, _last_line(log)


def _last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def execute_all(steps: list[Step], out: Path) -> list[tuple[Step, str]]:
    """Run every step in order under one progress bar; a failed step skips the later steps of its run folder.
    Returns the failures."""
    failures: list[tuple[Step, str]] = []
    broken: set[Path] = set()
    with progress() as bar:
        task = bar.add_task("experiment", total=len(steps), unit="step", status="")
        for step in steps:
            bar.update(task, status=step.label)
            if {step.folder, *step.needs} & broken:
                failures.append((step, "skipped: a step it needs failed"))
                broken.add(step.folder)
            elif not step.done():
                succeeded, last = execute(step, Path(out) / "logs" / f"{_slug(step)}.log")
                if not succeeded:
                    failures.append((step, last))
                    broken.add(step.folder)
            bar.advance(task)
    return failures


def _slug(step: Step) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in step.label)
