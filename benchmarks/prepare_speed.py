"""How fast `t2ictl prepare` turns real JPEGs into records: read, decode in full (the validity check), crop box,
serialize, write, checksum, on `--threads` threads, into a fresh folder each time.

    python benchmarks/prepare_speed.py cub ../shared/data/cub-mini [--threads 4] [--repeats 5]

Prints per repeat and as medians: images/s and the cores kept busy (process CPU time over wall time).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from t2ictl.data.prepare import PrepareOptions, Preparer  # noqa: E402
from t2ictl.data.sources import open_source  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def one_run(dataset: str, source: Path, threads: int) -> tuple[int, float, float]:
    """(images written, wall seconds, CPU seconds) of one prepare into a new folder."""
    with tempfile.TemporaryDirectory() as out:
        prepared = Preparer(open_source(dataset, [source]), Path(out), PrepareOptions(threads=threads))
        cpu, wall = cpu_seconds(), time.perf_counter()
        manifest = prepared.run()
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    return sum(s["examples"] for s in manifest["splits"].values()), wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("source", type=Path)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    one_run(args.dataset, args.source, args.threads)  # warm-up: TensorFlow start, the page cache
    runs = [one_run(args.dataset, args.source, args.threads) for _ in range(args.repeats)]
    table = Table(title=f"prepare {args.dataset} from {args.source}, {args.threads} threads, {os.cpu_count()} cores")
    for column in ("run", "images", "seconds", "images/s", "cores busy"):
        table.add_column(column, justify="right")
    for index, (images, wall, cpu) in enumerate(runs, 1):
        table.add_row(str(index), str(images), f"{wall:.2f}", f"{images / wall:.1f}", f"{cpu / wall:.2f}")
    table.add_row("median", str(runs[0][0]), f"{statistics.median(w for _, w, _ in runs):.2f}",
                  f"{statistics.median(i / w for i, w, _ in runs):.1f}",
                  f"{statistics.median(c / w for _, w, c in runs):.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
