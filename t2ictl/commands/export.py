"""`t2ictl export`: a run's generator and text encoder as one servable SavedModel."""

from __future__ import annotations

from pathlib import Path

import typer

from t2ictl.console import console


def export(
    run: Path = typer.Option(..., "--run", help="The training run directory to export (its latest EMA generator)."),
    out: Path = typer.Option(..., "--out", help="Folder to write the SavedModel to (written whole, then renamed)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
) -> None:
    """Write a SavedModel mapping caption strings (and a seed or noise) to uint8 images.

    Load it with tf.saved_model.load(OUT) or tensorflow_hub.load(OUT); t2ictl is not needed to run it.
    """
    from t2ictl.errors import UserError
    from t2ictl.export import export_run

    if not run.is_dir():
        raise UserError(f"run directory {run} does not exist")
    path = export_run(run, out, overwrite)
    console.print(f"exported {run} to {path} (signatures: serving_default, with_noise)")
