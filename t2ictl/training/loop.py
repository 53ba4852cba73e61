"""The one training loop both phases share.

A phase supplies models, optimizers and the body of one step; the loop owns the distribution strategy, the compiled
step, checkpoints (keep-N, exact resume), TensorBoard scalars, the progress bar and the end-of-epoch evaluation.

Exact resume: the checkpoint holds the step counter with every model and optimizer variable, and the input pipeline is
a pure function of (seed, step), so a run stopped at step N and resumed continues with the batch it would have seen.
"""

from __future__ import annotations

import abc
import math
import time
from dataclasses import dataclass
from typing import Callable

import tensorflow as tf

from t2ictl.console import console, progress, table
from t2ictl.errors import UserError
from t2ictl.runs import RunDir


class Phase(abc.ABC):
    """What a training phase gives the loop."""

    name: str
    images_per_step: int  # images one global step consumes, for images/s
    step: tf.Variable  # the steps completed, set by `build` before Phase.build: the key of per-step random draws

    @abc.abstractmethod
    def build(self) -> None:
        """Create models and optimizers (called inside the strategy scope)."""

    @abc.abstractmethod
    def trackables(self) -> dict:
        """The objects a checkpoint saves: models, optimizers, any state variables."""

    @abc.abstractmethod
    def train_step(self, batch) -> dict:
        """One optimisation step on one replica's batch; returns scalar losses to report."""

    def after_step(self) -> None:
        """Updates made once per step in cross-replica context after every replica's step (e.g. weight EMA)."""
        return None  # a body AutoGraph can convert (a docstring alone makes it warn)

    def report(self, step: int) -> None:
        """Periodic eager reporting every schedule.report_every steps (e.g. sample grids)."""

    def evaluate(self) -> dict[str, float]:
        """End-of-epoch metrics (run eagerly, outside the compiled step)."""
        return {}

    def export(self) -> None:
        """Write the phase's artefacts into the run directory when training ends."""


@dataclass(frozen=True)
class Schedule:
    total_steps: int
    steps_per_epoch: int
    log_every: int
    checkpoint_every: int
    keep_checkpoints: int
    report_every: int = 0  # 0: never call Phase.report
    eval_every: int = 1  # epochs between Phase.evaluate calls (and the checkpoint with them); the last step always


DatasetFn = Callable[[int, tf.distribute.InputContext], tf.data.Dataset]


def prepare_runtime(runtime, strategy: tf.distribute.Strategy | None = None) -> tf.distribute.Strategy:
    """Seed and precision policy of a recipe's [runtime], set before a phase builds its models, and the strategy:
    `strategy` when one phase follows another in the same process (a multi-worker strategy can be made only once),
    else a new one. Every phase starts from the seed, so its weights do not depend on what ran before it."""
    import keras

    from t2ictl.training import distribute

    keras.utils.set_random_seed(runtime.seed)
    distribute.set_precision(distribute.resolve_precision(runtime.precision))
    return strategy or distribute.make_strategy(runtime.strategy)


def run(phase: Phase, dataset_fn: DatasetFn, run_dir: RunDir, schedule: Schedule,
        strategy: tf.distribute.Strategy | None = None, jit_compile: bool = False) -> dict[str, float]:
    """Train `phase` up to schedule.total_steps, resuming from the latest checkpoint in the run directory."""
    from t2ictl.training import distribute

    strategy = strategy or tf.distribute.get_strategy()
    step = build(phase, strategy)
    entries = checkpoint_entries(phase, step)
    checkpoint = tf.train.Checkpoint(**entries)
    _restore(checkpoint, entries, run_dir.checkpoints(phase.name))
    _check_workers_agree(strategy, step)
    manager = _checkpoint_manager(checkpoint, run_dir.checkpoints(phase.name), schedule, strategy)
    start = int(step.numpy())
    metrics: dict[str, float] = {}
    console.print(f"{phase.name}: replicas: {strategy.num_replicas_in_sync}, "
                  f"{phase.images_per_step} images per global step, precision {distribute.precision_in_use()}")
    if start < schedule.total_steps:
        dataset = strategy.distribute_datasets_from_function(lambda context: dataset_fn(start, context))
        metrics = _train(phase, strategy, iter(dataset), step, manager, run_dir, schedule, jit_compile)
    else:
        console.print(f"{phase.name}: already at step {start} of {schedule.total_steps}; nothing to train")
    phase.export()
    return metrics


def build(phase: Phase, strategy: tf.distribute.Strategy | None = None) -> tf.Variable:
    """Build `phase` in the strategy's scope, with its step counter; the counter."""
    with (strategy or tf.distribute.get_strategy()).scope():
        phase.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        phase.build()
    return phase.step


def checkpoint_entries(phase: Phase, step: tf.Variable) -> dict:
    """What a checkpoint of a built phase holds: the step, the phase's trackables and its layers' random states."""
    from t2ictl.training import distribute

    trackables = phase.trackables()
    entries = {"step": step, **_random_states(trackables)}
    for name, trackable in trackables.items():
        entries.update(distribute.checkpoint_entries(name, trackable))
    return entries


def phase_checkpoint(phase: Phase, step: tf.Variable) -> tf.train.Checkpoint:
    return tf.train.Checkpoint(**checkpoint_entries(phase, step))


def write_checkpoint(phase: Phase, run_dir: RunDir, step: int) -> str:
    """Save a built phase (e.g. imported weights) as the checkpoint of `step` that `run` resumes from."""
    phase.step.assign(step)
    manager = tf.train.CheckpointManager(phase_checkpoint(phase, phase.step), str(run_dir.checkpoints(phase.name)),
                                         max_to_keep=None)
    return manager.save(checkpoint_number=step)


def _check_workers_agree(strategy: tf.distribute.Strategy, step: tf.Variable) -> None:
    """Every worker of a multi-worker run must start from the same step. A worker that restored another checkpoint
    (or none) would train other weights than the chief's with the same averaged gradients, silently."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return

    def spread():
        context = tf.distribute.get_replica_context()
        local = tf.cast(step, tf.float64)
        return context.all_reduce("sum", tf.abs(local - context.all_reduce("mean", local)))

    if float(strategy.experimental_local_results(strategy.run(spread))[0]) > 0:
        raise UserError(f"the workers restored different checkpoints (this one is at step {int(step.numpy())}); give "
                        "every worker the same --run-dir on a shared file system so that all resume from the chief's")


def _random_states(trackables: dict) -> dict:
    """The seed-generator states of Keras layers (dropout), which checkpoints of a model leave out; a resumed run needs
    them to draw the same dropout masks as an uninterrupted one."""
    import keras

    states = {}
    for name, model in trackables.items():
        if isinstance(model, keras.Model):
            seeds = [v for v in model.variables if v.path.endswith("seed_generator_state")]
            states.update({f"{name}_random_state_{i}": v for i, v in enumerate(seeds)})
    return states


def _checkpoint_manager(checkpoint, folder, schedule: Schedule, strategy) -> tf.train.CheckpointManager:
    """Keep-N checkpoints in `folder`; a non-chief worker of a multi-worker run takes part in every save (the save
    is collective) but writes into a scratch folder of its own that is removed again, so only the chief's files count.
    """
    from t2ictl.training import distribute

    if not distribute.is_chief(strategy):
        folder = folder.parent / f".{folder.name}-worker-{strategy.cluster_resolver.task_id}"
    return tf.train.CheckpointManager(checkpoint, str(folder), max_to_keep=schedule.keep_checkpoints)


def _save(manager: tf.train.CheckpointManager, step: int, chief: bool) -> None:
    manager.save(checkpoint_number=step)
    if not chief:
        tf.io.gfile.rmtree(manager.directory)


def _restore(checkpoint: tf.train.Checkpoint, entries: dict, folder) -> None:
    """Restore the latest checkpoint in `folder` into `checkpoint` (made of `entries`). A float16 loss scale that a
    checkpoint of another precision lacks starts afresh, and says so."""
    from t2ictl.training import distribute

    latest = tf.train.latest_checkpoint(str(folder))
    if latest is None:
        return
    try:
        saved = {name.split("/")[0] for name, _ in tf.train.list_variables(latest)}
        fresh = sorted(k for k in entries if k not in saved and k.endswith(distribute.LOSS_SCALE_ENTRIES))
        if fresh:  # restored without them (the save counter, which only numbers files, then starts afresh too)
            checkpoint = tf.train.Checkpoint(**{k: v for k, v in entries.items() if k not in fresh})
        checkpoint.restore(latest).assert_existing_objects_matched()
    except Exception as exc:  # a damaged file surfaces as OpError, IndexError, ValueError... all mean "unreadable"
        message = (getattr(exc, "message", None) or str(exc) or type(exc).__name__).splitlines()[0]
        raise UserError(f"cannot restore checkpoint {latest}: {message}; remove it (the previous one is kept) "
                        "or start a new --run-dir") from None
    console.print(f"resumed from {latest} at step {int(entries['step'].numpy())}")
    if fresh:
        console.print("the checkpoint was written without float16 loss scaling: the loss scale starts afresh")


def compiled_step(phase: Phase, strategy, step: tf.Variable, jit_compile: bool):
    def replica_step(batch):
        return phase.train_step(batch)

    @tf.function(jit_compile=False, autograph=False)
    def train_step(iterator):
        per_replica = strategy.run(tf.function(replica_step, jit_compile=jit_compile, autograph=False),
                                   args=(next(iterator),))
        phase.after_step()
        step.assign_add(1)
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in per_replica.items()}

    return train_step


def _train(phase, strategy, iterator, step, manager, run_dir, schedule, jit_compile) -> dict[str, float]:
    from t2ictl.training import distribute

    train_step = compiled_step(phase, strategy, step, jit_compile)
    chief = distribute.is_chief(strategy)
    writer = tf.summary.create_file_writer(str(run_dir.logs(phase.name))) if chief else tf.summary.create_noop_writer()
    start = int(step.numpy())
    metrics: dict[str, float] = {}
    window_start, window_steps = time.perf_counter(), 0
    with progress() as bar, writer.as_default():
        task = bar.add_task(phase.name, total=schedule.total_steps * phase.images_per_step, unit="img",
                            completed=start * phase.images_per_step, status="compiling")
        try:
            for current in range(start + 1, schedule.total_steps + 1):
                losses = train_step(iterator)
                window_steps += 1
                bar.advance(task, phase.images_per_step)
                if current % schedule.log_every == 0 or current == schedule.total_steps:
                    values = {k: float(v) for k, v in losses.items()}
                    _check_finite(values, current)
                    elapsed = time.perf_counter() - window_start
                    rate = window_steps * phase.images_per_step / max(elapsed, 1e-9)
                    _log_scalars(values | {"images_per_second": rate}, current)
                    bar.update(task, status=_status(current, schedule.total_steps, values))
                    window_start, window_steps = time.perf_counter(), 0
                evaluate = _evaluates(current, schedule)
                if evaluate or current % schedule.checkpoint_every == 0:
                    _save(manager, current, chief)  # before the reports, so that a failing report loses no steps
                if chief and schedule.report_every and current % schedule.report_every == 0:
                    phase.report(current)
                if evaluate:
                    metrics = _end_epoch(phase, current, schedule, bar)
        except KeyboardInterrupt:
            _save(manager, int(step.numpy()), chief)
            raise
    return metrics


def _evaluates(current: int, schedule: Schedule) -> bool:
    """Whether step `current` ends an epoch that is evaluated: every eval_every-th epoch, and the last step."""
    if current == schedule.total_steps:
        return True
    return current % (schedule.steps_per_epoch * schedule.eval_every) == 0


def _end_epoch(phase: Phase, current: int, schedule: Schedule, bar) -> dict[str, float]:
    metrics = phase.evaluate()
    if metrics:
        _log_scalars({f"eval/{k}": v for k, v in metrics.items()}, current)
        epoch = math.ceil(current / schedule.steps_per_epoch)
        bar.console.print(table(f"{phase.name} epoch {epoch} (step {current})", ["metric", "value"],
                                sorted(metrics.items())))
    return metrics


def _log_scalars(values: dict[str, float], step: int) -> None:
    for key, value in values.items():
        tf.summary.scalar(key, value, step=step)


def _status(current: int, total: int, values: dict[str, float]) -> str:
    shown = " ".join(f"{k} {v:.3f}" for k, v in values.items())
    return f"step {current}/{total} {shown}"


def _check_finite(values: dict[str, float], step: int) -> None:
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise UserError(f"loss {bad[0]} became {values[bad[0]]} at step {step}; lower the learning rate or check "
                        "the data (the last good checkpoint is kept)")
