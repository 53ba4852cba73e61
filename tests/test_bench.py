"""t2ictl bench: it runs the real train step and counts its FLOPs (speed itself is measured in BENCHMARKS.md)."""

import re
from pathlib import Path

import pytest
from conftest import TINY

from t2ictl import bench, recipes


def high_water_mark_mb() -> float:
    """This process's peak resident memory as the kernel reports it (VmHWM), in MiB."""
    return int(re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1)) / 1024


def test_train_bench_counts_flops_that_grow_with_the_width():
    measured = bench.bench_train(recipes.load_recipe("shapes", TINY + ["model.nf=4"]), steps=1, warmup=1, repeats=2)
    assert measured.images_per_second > 0 and len(measured.seconds_per_window) == 2
    # a process holding TensorFlow and two models peaks far above 100 MiB; the kernel's own figure bounds it
    assert 100 < measured.peak_memory_mb <= high_water_mark_mb() + 1
    assert measured.images_per_window == 32  # 16 per branch, two branches
    wider = bench.train_step(recipes.load_recipe("shapes", TINY + ["model.nf=8"]))  # counted, not timed
    wider_flops = bench.step_flops(wider.phase, wider.batch) / wider.images_per_step
    # conv FLOPs grow with the square of the width; the frozen encoders' share does not grow
    assert 2.0 < wider_flops / measured.flops_per_image < 4.0


def test_the_schedule_cost_is_the_measured_step_time_times_the_steps():
    recipe = recipes.load_recipe("cub", [])  # batch 32 per branch, two branches, 1,300 GAN epochs
    measured = bench.Measurement(images_per_second=0.0, seconds_per_window=[2.0, 3.0, 9.0], images_per_window=5 * 64,
                                 peak_memory_mb=0.0)
    cost = bench.schedule_cost(recipe, measured, steps_per_window=5, train_images=8855)
    assert cost.steps_per_epoch == 8855 // 64
    assert cost.epoch_seconds == pytest.approx(138 * 3.0 / 5)  # the median window, per step
    assert cost.schedule_seconds == pytest.approx(cost.epoch_seconds * recipe.train.epochs)


def test_bench_train_prints_the_epoch_and_the_schedule_at_the_measured_rate(shapes_data):
    from typer.testing import CliRunner

    from t2ictl.cli import app

    sets = [a for item in TINY + ["train.epochs=7"] for a in ("--set", item)]
    result = CliRunner().invoke(app, ["bench", "train", "--recipe", "shapes", "--data", str(shapes_data), *sets,
                                      "--steps", "1", "--repeats", "1", "--warmup", "1"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "one epoch" in out and "256 images, 8 steps" in out  # shapes_data's 256 training images, 32 per step
    assert "the recipe's schedule" in out and "7 epochs" in out
