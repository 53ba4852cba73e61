"""t2ictl bench: it runs the real train step and counts its FLOPs (speed itself is measured in BENCHMARKS.md)."""

import re
from pathlib import Path

from conftest import TINY

from t2ictl import bench, recipes


def high_water_mark_mb() -> float:
    """This process's peak resident memory as the kernel reports it (VmHWM), in MiB."""
    return int(re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1)) / 1024


def test_train_bench_counts_flops_that_grow_with_the_width():
    measured = {}
    for nf in (4, 8):
        recipe = recipes.load_recipe("shapes", TINY + [f"model.nf={nf}"])
        measured[nf] = bench.bench_train(recipe, steps=1, warmup=1, repeats=2)
    for m in measured.values():
        assert m.images_per_second > 0 and len(m.seconds_per_window) == 2
        # a process holding TensorFlow and two models peaks far above 100 MiB; the kernel's own figure bounds it
        assert 100 < m.peak_memory_mb <= high_water_mark_mb() + 1
        assert m.images_per_window == 32  # 16 per branch, two branches
    # conv FLOPs grow with the square of the width; the frozen encoders' share does not grow
    assert 2.0 < measured[8].flops_per_image / measured[4].flops_per_image < 4.0
