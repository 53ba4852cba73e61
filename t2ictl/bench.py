"""What `t2ictl bench` measures: images/s as the median of several timed windows after warm-up, peak memory, and for
the train step the model FLOPs per image (counted by TensorFlow's graph profiler on the traced step: forward,
backward and optimizer, both networks) and the FLOP/s achieved.

The train benchmark runs the recipe's GAN phase exactly as `t2ictl train` does (same phase, same compiled step, same
strategy, precision and XLA settings) on a synthetic batch held in memory, with freshly initialised encoders: it
measures the model, not the input pipeline, which `bench data` measures on its own.
"""

from __future__ import annotations

import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from t2ictl.recipes import Recipe


@dataclass
class Measurement:
    images_per_second: float
    seconds_per_window: list[float]
    images_per_window: int
    peak_memory_mb: float
    flops_per_image: float | None = None

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds_per_window)

    @property
    def flops_per_second(self) -> float | None:
        return None if self.flops_per_image is None else self.flops_per_image * self.images_per_second


# Images in each dataset's training split as the papers' code reads it (CUB: the 150 training classes; COCO: train2014;
# flowers: StackGAN's split; shapes: `prepare`'s default 5,000 at 80%), for a schedule's cost without prepared data
TRAIN_IMAGES = {"cub": 8855, "coco": 82783, "flowers": 7034, "shapes": 4000, "shapes-multi": 4000}


@dataclass(frozen=True)
class ScheduleCost:
    """What one epoch and the recipe's GAN schedule take at a measured train-step rate (a projection)."""

    train_images: int
    steps_per_epoch: int
    epoch_seconds: float
    epochs: int

    @property
    def schedule_seconds(self) -> float:
        return self.epoch_seconds * self.epochs


def schedule_cost(recipe: Recipe, measured: Measurement, steps_per_window: int, train_images: int) -> ScheduleCost:
    from t2ictl.data import pipeline

    manifest = {"splits": {"train": {"examples": train_images}}}
    steps = pipeline.steps_per_epoch(manifest, recipe.data, paired=recipe.contrastive.enabled)
    seconds_per_step = measured.median_seconds / steps_per_window
    return ScheduleCost(train_images, steps, steps * seconds_per_step, recipe.train.epochs)


def timed(run_window, images_per_window: int, warmup: int, repeats: int) -> Measurement:
    """Call run_window() `warmup` times, then time it `repeats` times; images/s from the median window."""
    for _ in range(warmup):
        run_window()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_window()
        seconds.append(time.perf_counter() - start)
    return Measurement(images_per_window / statistics.median(seconds), seconds, images_per_window, peak_memory_mb())


def peak_memory_mb() -> float:
    """Peak device memory on a GPU, else the process's peak resident set size."""
    if tf.config.list_logical_devices("GPU"):
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_batch(recipe: Recipe, vocab_size: int, num_classes: int, seed: int = 0) -> dict:
    """One training batch with the pipeline's structure and shapes (paired when contrastive is on)."""
    rng = np.random.default_rng(seed)
    size, words, batch = recipe.data.image_size, recipe.data.max_words, recipe.data.batch_size
    class_id = rng.integers(0, num_classes, batch).astype(np.int32)

    def branch():
        row = {"image": rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32),
               "tokens": rng.integers(2, vocab_size, (batch, words)).astype(np.int32),
               "lengths": np.full(batch, words, np.int32), "class_id": class_id,
               "labels": np.eye(num_classes, dtype=np.float32)[class_id],
               "example_key": rng.integers(0, 2**40, batch)}
        for extra in recipe.data.extra_sizes:
            row[f"image_{extra}"] = rng.uniform(-1, 1, (batch, extra, extra, 3)).astype(np.float32)
        return row

    return {"a": branch(), "b": branch()} if recipe.contrastive.enabled else branch()


@dataclass
class TrainStep:
    """The recipe's GAN train step, compiled as `t2ictl train` compiles it, fed a synthetic in-memory batch."""

    phase: object
    batch: dict
    run_steps: object  # run_steps(n) -> the last step's losses as floats: n train steps, waiting for the device

    @property
    def images_per_step(self) -> int:
        return self.phase.images_per_step


def train_step(recipe: Recipe, vocab_size: int = 1000, num_classes: int = 20) -> TrainStep:
    from t2ictl.data.vocab import Vocabulary
    from t2ictl.models.image_encoder import build_image_encoder
    from t2ictl.models.text_encoder import build_text_encoder
    from t2ictl.runs import RunDir, save_encoders
    from t2ictl.training import gan, loop

    strategy = loop.prepare_runtime(recipe.runtime)
    c = recipe.pretrain
    vocab = Vocabulary.build([" ".join(f"w{i}" for i in range(vocab_size - 2))])
    with tempfile.TemporaryDirectory() as folder:
        encoders = Path(folder) / "encoders"
        save_encoders(encoders, build_text_encoder(vocab_size, recipe.data.max_words, c.embedding_dim, c.text_dim),
                      build_image_encoder(c.image_trunk, recipe.data.image_size, c.text_dim, "none", "auto",
                                          c.small_trunk_width), recipe)
        phase = gan.GANPhase(recipe, vocab, {"multi_label": False}, Path(folder), RunDir(Path(folder)), encoders)
        step_counter = loop.build(phase, strategy)
    batch = synthetic_batch(recipe, vocab_size, num_classes)
    iterator = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch).repeat()))
    compiled = loop.compiled_step(phase, strategy, step_counter, recipe.runtime.xla)

    def run_steps(count: int) -> dict[str, float]:
        for _ in range(count):
            losses = compiled(iterator)
        return {name: float(value) for name, value in losses.items()}  # float() waits for the device

    return TrainStep(phase, batch, run_steps)


def bench_train(recipe: Recipe, steps: int = 5, warmup: int = 2, repeats: int = 5) -> Measurement:
    step = train_step(recipe)
    measurement = timed(lambda: step.run_steps(steps), steps * step.images_per_step, warmup, repeats)
    flops = step_flops(step.phase, step.batch)
    measurement.flops_per_image = None if flops is None else flops / step.images_per_step
    return measurement


def step_flops(phase, batch) -> float | None:
    """Floating-point operations of one replica's train step, from the graph profiler (None if it counts none)."""
    from tensorflow.python.profiler import model_analyzer, option_builder

    graph = tf.function(phase.train_step).get_concrete_function(
        tf.nest.map_structure(tf.convert_to_tensor, batch)).graph
    options = option_builder.ProfileOptionBuilder(option_builder.ProfileOptionBuilder.float_operation())
    options = options.with_empty_output().build()
    total = model_analyzer.profile(graph, options=options).total_float_ops
    return float(total) or None


def bench_data(recipe: Recipe, data_dir: Path, vocab, batches: int = 20, warmup: int = 1, repeats: int = 5
               ) -> Measurement:
    from t2ictl.data import pipeline
    from t2ictl.training.branches import images_per_step

    dataset = pipeline.train_dataset(data_dir, recipe.data, vocab, paired=recipe.contrastive.enabled,
                                     seed=recipe.runtime.seed)
    iterator = iter(dataset)
    images = images_per_step(recipe)

    def window():
        for _ in range(batches):
            next(iterator)

    return timed(window, batches * images, warmup, repeats)


def bench_sample(sampler, batch: int = 32, batches: int = 5, warmup: int = 1, repeats: int = 5) -> Measurement:
    from t2ictl.sampling import noise

    tokens = np.ones((batch, sampler.max_words), np.int32) * 2
    z = noise(batch, sampler.noise_dim, 0)

    def window():
        for _ in range(batches):
            sampler.images_from_tokens(tokens, z).numpy()

    return timed(window, batch * batches, warmup, repeats)


def bench_score(network, batch: int = 50, batches: int = 4, warmup: int = 1, repeats: int = 5,
                eager: bool = False) -> Measurement:
    """Images/s through the Inception network at 299 px; eager=True runs the same network op by op for comparison."""
    images = np.random.default_rng(0).integers(0, 256, (batch, 299, 299, 3)).astype(np.uint8)
    forward = network.eager if eager else network

    def window():
        for _ in range(batches):
            forward(images)

    return timed(window, batch * batches, warmup, repeats)
