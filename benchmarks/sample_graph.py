"""Sampling held-out captions with a run's generator: the traced graph that `Sampler.sample` runs against the same
function called eagerly, layer by layer (what it ran before 2026-12-06). Median of 5 calls after one.

    python benchmarks/sample_graph.py --run RUN --data DATA [--captions 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from t2ictl import startup

startup.start_tensorflow()  # before anything imports TensorFlow, so that its start-up notices stay quiet

from t2ictl import runs
from t2ictl.evaluation.consistency import held_out


def seconds_per_call(sampler, captions: list[str], calls: int = 6) -> tuple[float, float]:
    """(the first call, the median of the others) of sampling one image per caption."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        sampler.sample(captions, per_caption=1, seed=0)
        times.append(time.perf_counter() - start)
    return times[0], statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--captions", type=int, default=200)
    args = parser.parse_args()
    run = runs.RunDir(args.run)
    sampler, _, _ = runs.open_generator(run)
    captions, _ = held_out(args.data, run.recipe(), run.vocab(), args.captions, "test")
    graph = sampler.images_from_tokens
    for name, function in (("traced graph", graph), ("eager", sampler._images_from_tokens)):
        sampler.images_from_tokens = function
        first, median = seconds_per_call(sampler, captions)
        print(f"{name}: {median:.3f} s for {len(captions)} images (first call {first:.3f} s)")


if __name__ == "__main__":
    main()
