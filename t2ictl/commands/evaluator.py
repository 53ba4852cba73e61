"""`t2ictl evaluator`: fit once the networks that score runs on the embedded data, trained by none of the runs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from t2ictl.console import console, table
from t2ictl.errors import UserError


def evaluator(
    data: Path = typer.Option(..., "--data", help="Prepared embedded data (shapes or shapes-multi) to fit on."),
    to: Optional[Path] = typer.Option(None, "--to", help="Where the networks go [default: DATA/evaluator]."),
    epochs: int = typer.Option(30, "--epochs", min=1, help="Epochs of the classifier (30 reach 99.9% held-out "
                               "exact match on shapes, 96.6% on shapes-multi)."),
    damsm_epochs: int = typer.Option(10, "--damsm-epochs", min=1, help="Epochs of the DAMSM pair."),
) -> None:
    """Fit the evaluation networks of the embedded data: a small classifier of the real training images (its
    features give FID, its class entropy an Inception-Score-like figure; `t2ictl score --inception FOLDER`) and a
    DAMSM text-image pair without the framework at a seed of its own (R-precision; `t2ictl score --encoders
    FOLDER/damsm`). Every arm of an experiment is scored with the same two, which none of them trained. Fitted once;
    an interrupted fit resumes, a finished one is kept."""
    from t2ictl import recipes
    from t2ictl.data.prepare import load_manifest
    from t2ictl.evaluation import shapes_network
    from t2ictl.runs import open_run
    from t2ictl.training.pretrain import pretrain

    manifest = load_manifest(data)
    if manifest["dataset"] not in shapes_network.DATASETS:
        raise UserError(f"{data} holds {manifest['dataset']}: evaluation networks are fitted for the embedded data "
                        "only; score CUB and COCO with the field's Inception and released DAMSM encoders")
    folder = to or shapes_network.folder(data)
    if not shapes_network.fitted(folder, data):
        console.print(f"fitting the evaluation classifier on the real training images of {data}")
        shapes_network.fit(data, folder, epochs=epochs)
    info = shapes_network.load(folder)[1]
    recipe = recipes.load_recipe(manifest["dataset"], ["contrastive.enabled=false", f"pretrain.epochs={damsm_epochs}",
                                                       f"runtime.seed={shapes_network.SEED}"])
    damsm = folder / "damsm"
    metrics = {}
    if not (damsm / "encoders" / "encoders.json").exists():
        run = open_run(damsm, recipe, data, "pretrain", resume=damsm.exists())
        metrics = pretrain(recipe, data, manifest, run)
    rows = [("classifier: held-out exact-match accuracy", info["test_exact_match"])]
    rows += [(f"DAMSM pair: {name}", value) for name, value in sorted(metrics.items())]
    console.print(table(f"evaluation networks in {folder}", ["network", "value"], rows))
