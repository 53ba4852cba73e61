"""`t2ictl prepare DATASET`: raw data to TFRecord shards, a vocabulary and a manifest."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from t2ictl.console import console, err_console, progress, table
from t2ictl.data.sources import DATASETS
from t2ictl.errors import UserError

Dataset = Enum("Dataset", {name.replace("-", "_"): name for name in DATASETS}, type=str)


def prepare(
    dataset: Dataset = typer.Argument(..., help="Which dataset: shapes and shapes-multi are generated (no download); "
                                      "cub, coco and flowers read the official releases; folder reads your own "
                                      "images and captions."),
    source: Optional[List[Path]] = typer.Option(None, "--source", help="An official archive (.tgz/.zip) or its "
                                                "extracted folder; repeat for datasets made of several releases."),
    download: bool = typer.Option(False, "--download", help="Fetch the official archives (resumable, sha256-checked) "
                                  "into OUT/downloads first."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder [default: data/DATASET]."),
    check: bool = typer.Option(False, "--check", help="Validate an existing output against its manifest (checksums, "
                               "record counts, schema) instead of preparing."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an output made from another source or with "
                                   "other options."),
    shard_size: int = typer.Option(512, "--shard-size", min=1, help="Examples per TFRecord shard."),
    min_count: int = typer.Option(1, "--min-count", min=1, help="Words seen fewer times become <unk>."),
    vocab_from: str = typer.Option("all", "--vocab-from", help="Build the vocabulary from 'all' splits (as "
                                   "AttnGAN/DF-GAN) or 'train' only."),
    count: Optional[int] = typer.Option(None, "--count", min=10, help="shapes only: images to generate (80% train, "
                                        "20% test) [default: 5000]."),
    seed: int = typer.Option(0, "--seed", help="shapes: generator seed; folder: seed of the train/test split. Same "
                             "seed, same dataset."),
    image_size: int = typer.Option(64, "--image-size", min=16, help="shapes only: rendered image size in pixels."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="cub only: allow reading AttnGAN's .pickle "
                                      "split files (unsafe for files from the internet; the text files are used "
                                      "otherwise)."),
    coco_release: str = typer.Option("auto", "--coco-release", help="coco only: 2014 (the papers' split), 2017, or "
                                     "auto (2014 when its annotations are given, else 2017)."),
    labels: str = typer.Option("auto", "--labels", help="folder only: where labels come from: file (the captions "
                               "file's label/labels column), folders (each image's sub-folder), none, or auto."),
    test_fraction: Optional[float] = typer.Option(None, "--test-fraction", min=0.0, max=0.99, help="folder only: "
                                                  "the share of images (or classes) put into test when the data "
                                                  "gives no split [default: 0.1]."),
    split_by: str = typer.Option("image", "--split-by", help="folder only: split by 'image' or by 'class' "
                                 "(class-disjoint, single-label data)."),
    threads: int = typer.Option(4, "--threads", min=1, help="Threads reading and validating images."),
) -> None:
    """Prepare DATASET as sharded TFRecords (images, captions, labels), a vocabulary and a manifest.

    Interrupted runs resume where they stopped when run again; a changed source is refused unless --overwrite.
    """
    from t2ictl.data import prepare as preparing

    name = dataset.value
    out = out or Path("data") / name
    if check:
        _check(out)
        return
    options = preparing.PrepareOptions(shard_size=shard_size, min_count=min_count, vocab_from=vocab_from,
                                       threads=threads)
    with progress() as bar:
        source = _open_source(name, source or [], download, out, bar, count=count, seed=seed, image_size=image_size,
                              trust_pickle=trust_pickle, coco_release=coco_release,
                              folder_options={"labels": labels, "test_fraction": test_fraction,
                                              "split_by": split_by})
        manifest = preparing.Preparer(source, out, options, progress=bar).run(overwrite=overwrite)
    _print_summary(out, manifest)


def _open_source(name, sources, download, out, bar, *, count, seed, image_size, trust_pickle, coco_release,
                 folder_options):
    from t2ictl.data import inputs, sources as registry

    if not name.startswith("shapes") and (count is not None or image_size != 64):
        raise UserError("--count and --image-size apply to shapes and shapes-multi only")
    if seed != 0 and not (name.startswith("shapes") or name == "folder"):
        raise UserError("--seed applies to shapes, shapes-multi and folder only")
    if trust_pickle and name != "cub":
        raise UserError("--trust-pickle applies to cub only")
    if coco_release != "auto" and name != "coco":
        raise UserError("--coco-release applies to coco only")
    defaults = {"labels": "auto", "test_fraction": None, "split_by": "image"}
    if name != "folder" and folder_options != defaults:
        raise UserError("--labels, --test-fraction and --split-by apply to folder only")
    folders = inputs.resolve_inputs(name, list(sources), download, out, progress=bar)
    if name.startswith("shapes"):
        return registry.open_source(name, folders, count=count, seed=seed, image_size=image_size)
    if name == "cub":
        return registry.open_source(name, folders, trust_pickle=trust_pickle)
    if name == "coco":
        return registry.open_source(name, folders, release=coco_release)
    if name == "folder":
        fraction = folder_options["test_fraction"]
        options = {**folder_options, "test_fraction": 0.1 if fraction is None else fraction}
        return registry.open_source(name, folders, seed=seed, **options)
    return registry.open_source(name, folders)


def _print_summary(out: Path, manifest: dict) -> None:
    rows = [(split, e["examples"], e["captions"], e["labelled"], e["unlabelled"], e.get("cropped", ""),
             len(e["shards"])) for split, e in manifest["splits"].items()]
    title = f"{manifest['dataset']} → {out}" + (" (already up to date)" if manifest.get("resumed") else "")
    console.print(table(title, ["split", "images", "captions", "labelled", "unlabelled", "cropped", "shards"], rows))
    console.print(f"classes: {len(manifest['classes'])}   vocabulary: {manifest['vocab']['size']} words   "
                  f"skipped images: {len(manifest['skipped'])}   empty captions dropped: "
                  f"{manifest['empty_captions_dropped']}")
    for key in ("split", "crop"):
        if key in manifest["source"]:
            console.print(f"{key}: {manifest['source'][key]}", markup=False)
    for note in manifest["notes"]:
        console.print(f"note: {note}", markup=False)
    if manifest["skipped"]:
        shown = manifest["skipped"][:10]
        err_console.print(table("skipped images (all are listed in manifest.json)", ["image", "reason"],
                                [(s["origin"] or s["example_id"], s["reason"]) for s in shown]))


def _check(out: Path) -> None:
    from t2ictl.data import prepare as preparing

    with progress() as bar:
        problems = preparing.check(out, progress=bar)
    if problems:
        for problem in problems[1:]:
            err_console.print(f"  {problem}", markup=False)
        raise UserError(f"{out}: {len(problems)} problem(s); first: {problems[0]}")
    manifest = preparing.load_manifest(out)
    _print_summary(out, manifest)
    console.print(f"[green]ok[/green]: {out} matches its manifest")
