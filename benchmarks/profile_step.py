"""Where the time of one GAN train step goes: the TensorFlow profiler's op self-times, summed by op type and by part
of the step (which network, forward / backward / the MA-GP's second-order pass).

    pip install xprof   # reads the profiler's trace; not a dependency of t2ictl
    python benchmarks/profile_step.py --recipe shapes --set data.image_size=64 --set model.nf=32 \\
        --set data.batch_size=16 --set contrastive.enabled=false --set runtime.precision=mixed_bfloat16

The step is the one `t2ictl bench train` times (t2ictl.bench.train_step): the recipe's phase, compiled as in training,
on a synthetic batch. Shares are of the summed op self-time, which on a multi-core CPU exceeds the wall time.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def op_rows(logdir: str) -> list[dict]:
    from xprof.convert import raw_to_tool_data

    spaces = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    data, _ = raw_to_tool_data.xspace_to_tool_data(spaces, "framework_op_stats", {})
    table = json.loads(data)[0]
    columns = [column["id"] for column in table["cols"]]
    rows = [dict(zip(columns, [cell["v"] for cell in row["c"]])) for row in table["rows"]]
    return [row for row in rows if row["type"] != "IDLE"]


def part_of_step(op_name: str) -> str:
    network = "generator" if "generator" in op_name else "discriminator" if "discriminator" in op_name else "other"
    if "gradient_tape/gradient_tape" in op_name:
        return f"{network}, MA-GP second-order"
    return f"{network}, {'backward' if 'gradient_tape' in op_name else 'forward'}"


def print_shares(title: str, times: collections.Counter, top: int) -> None:
    total = sum(times.values())
    print(f"\n{title} (total {total / 1e3:.0f} ms of op self-time)")
    for key, value in times.most_common(top):
        print(f"  {key:48s} {value / 1e3:9.1f} ms {100 * value / total:5.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="shapes")
    parser.add_argument("--set", action="append", default=[], help="a recipe override, section.key=value")
    parser.add_argument("--steps", type=int, default=1, help="profiled steps (after two untimed ones)")
    parser.add_argument("--top", type=int, default=12, help="op types to list")
    args = parser.parse_args()

    import tensorflow as tf

    from t2ictl import bench, recipes

    step = bench.train_step(recipes.load_recipe(args.recipe, args.set))
    step.run_steps(2)  # tracing and oneDNN's first-call setup stay out of the profile
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        step.run_steps(args.steps)
        tf.profiler.experimental.stop()
        rows = op_rows(logdir)
    by_type, by_part = collections.Counter(), collections.Counter()
    for row in rows:
        by_type[row["type"]] += row["total_self_time"]
        by_part[part_of_step(row["operation"])] += row["total_self_time"]
    print_shares("by op type", by_type, args.top)
    print_shares("by part of the step", by_part, len(by_part))


if __name__ == "__main__":
    main()
