"""`t2ictl bench`: how fast training, the input pipeline, sampling and scoring run on this machine."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from t2ictl.commands import common
from t2ictl.console import console, table
from t2ictl.errors import UserError


class Target(str, Enum):
    train = "train"
    data = "data"
    sample = "sample"
    score = "score"


def bench(
    target: Target = typer.Argument(..., help="train: one GAN step (D + G, and SupCon when on) on a synthetic batch; "
                                    "data: the training input pipeline; sample: the generator of --run; score: the "
                                    "Inception network at 299 px, compiled and eager."),
    recipe: Optional[str] = common.RecipeOption,
    data: Optional[Path] = common.DataOption,
    run: Optional[Path] = typer.Option(None, "--run", help="For `sample`: the training run whose generator to time."),
    set_: Optional[List[str]] = common.SetOption,
    strategy: Optional[str] = common.StrategyOption,
    precision: Optional[str] = common.PrecisionOption,
    xla: Optional[bool] = common.XlaOption,
    inception: Optional[str] = typer.Option(None, "--inception", help="For `score`: the network (as in `t2ictl "
                                            "score`) [default: Keras InceptionV3 with random weights: the same "
                                            "computation, no download]."),
    batch: int = typer.Option(50, "--batch", min=1, help="For `sample` and `score`: images per batch."),
    steps: int = typer.Option(5, "--steps", min=1, help="Steps (or batches) per timed window."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Timed windows; the median is reported."),
    warmup: int = typer.Option(2, "--warmup", min=0, help="Untimed windows first (tracing, compilation, caches)."),
) -> None:
    """Measure images/s (median of --repeats windows after --warmup), peak memory and, for train, model FLOPs per
    image, the FLOP/s achieved, and what one epoch and the recipe's GAN schedule take at that rate (for --data's
    training images, else the paper split's: CUB 8,855, COCO 82,783). Speeds belong in BENCHMARKS.md, not in tests."""
    from t2ictl import bench as benchmarks
    from t2ictl.training import distribute

    overrides = (set_ or []) + common.runtime_overrides(strategy, precision, xla)
    rows = []
    if target is Target.train:
        resolved = common.resolve_recipe(recipe or "shapes", None, overrides, False)
        images = _train_images(resolved, data)
        m = benchmarks.bench_train(resolved, steps=steps, warmup=warmup, repeats=repeats)
        rows.append(("train step", resolved.model.backbone, m))
        describe = (f"{resolved.data.image_size} px, batch {m.images_per_window // steps} images/step, "
                    f"contrastive {'on' if resolved.contrastive.enabled else 'off'}, {distribute.precision_in_use()}, "
                    f"xla {'on' if resolved.runtime.xla else 'off'}")
        if images:
            cost = benchmarks.schedule_cost(resolved, m, steps, images)
    elif target is Target.data:
        from t2ictl.data.prepare import VOCAB
        from t2ictl.data.vocab import Vocabulary

        resolved = common.resolve_recipe(recipe or "shapes", None, overrides, False)
        data_dir, _ = common.resolve_data(resolved, data)
        vocab = Vocabulary.load(data_dir / VOCAB)
        m = benchmarks.bench_data(resolved, data_dir, vocab, batches=steps, warmup=warmup, repeats=repeats)
        rows.append(("input pipeline", str(data_dir), m))
        describe = f"{resolved.data.image_size} px, batch {resolved.data.batch_size}"
    elif target is Target.sample:
        from t2ictl.runs import open_sampler

        if run is None:
            raise UserError("bench sample needs --run DIR, the training run whose generator to time")
        sampler = open_sampler(run=run)
        m = benchmarks.bench_sample(sampler, batch=batch, batches=steps, warmup=warmup, repeats=repeats)
        rows.append(("sample", str(run), m))
        describe = f"batch {batch}"
    else:
        network = _score_network(inception)
        for eager in (False, True):
            m = benchmarks.bench_score(network, batch=batch, batches=steps, warmup=warmup, repeats=repeats,
                                       eager=eager)
            rows.append(("inception 299 px", "eager loop" if eager else "tf.function", m))
        describe = f"batch {batch}"
    console.print(table(f"bench {target.value} ({describe})",
                        ["what", "variant", "images/s", "median s/window", "peak MB", "GFLOP/image", "GFLOP/s"],
                        [[w, v, m.images_per_second, m.median_seconds,
                          m.peak_memory_mb, "" if m.flops_per_image is None else m.flops_per_image / 1e9,
                          "" if m.flops_per_second is None else m.flops_per_second / 1e9] for w, v, m in rows]))
    if target is Target.train and images:
        console.print(table("at this rate (a projection: the GAN phase only, without evaluation or checkpoints)",
                            ["span", "what", "time"],
                            [["one epoch", f"{cost.train_images:,} images, {cost.steps_per_epoch:,} steps",
                              _duration(cost.epoch_seconds)],
                             ["the recipe's schedule", f"{cost.epochs:,} epochs", _duration(cost.schedule_seconds)]]))


def _train_images(recipe, data: Optional[Path]) -> int | None:
    """The training images a schedule's cost is projected for: the prepared data's (--data, or the recipe's own
    folder when prepared), else the paper split's size for the recipe's dataset."""
    from t2ictl import bench as benchmarks
    from t2ictl.data.prepare import MANIFEST, load_manifest

    if data is not None and not (data / MANIFEST).is_file():
        raise UserError(f"{data} holds no prepared data (no {MANIFEST}); prepare it, or leave out --data to project "
                        "for the paper split's size")
    folder = data or recipe.data.path
    if (folder / MANIFEST).is_file():
        return load_manifest(folder)["splits"]["train"]["examples"]
    return benchmarks.TRAIN_IMAGES.get(recipe.data.dataset)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _score_network(spec: Optional[str]):
    from t2ictl.evaluation.inception import keras_model_network, load_network

    if spec:
        return load_network(spec)
    import keras

    return keras_model_network(keras.applications.InceptionV3(weights=None), "keras:random")
