"""`t2ictl sample`: captions to a PNG grid, from a run or an exported model."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from t2ictl.console import console, err_console
from t2ictl.errors import UserError


def sample(
    captions: List[str] = typer.Argument(..., help="One or more captions; each becomes a row of the grid."),
    run: Optional[Path] = typer.Option(None, "--run", help="A training run directory (its latest EMA generator)."),
    model: Optional[Path] = typer.Option(None, "--model", help="A model written by `t2ictl export`."),
    n: int = typer.Option(8, "-n", "--per-caption", min=1, max=64, help="Images per caption (grid columns)."),
    seed: int = typer.Option(0, "--seed", help="Noise seed; the same seed gives the same images."),
    truncation: float = typer.Option(0.0, "--truncation", min=0.0, help="Truncate the noise to [-T, T] "
                                     "(trades variety for quality; 0 = off)."),
    out: Path = typer.Option(Path("samples.png"), "--out", help="PNG file to write (atomically)."),
    scale: Optional[int] = typer.Option(None, "--scale", min=1, help="Enlarge each image this many times, nearest "
                                        "neighbour (default: enough for at least 96 px; 1 = as generated)."),
) -> None:
    """Generate N images for each CAPTION and write them as a PNG grid (one row per caption, under its caption)."""
    if out.suffix.lower() != ".png":
        raise UserError(f"--out must name a .png file, got {out}")
    from t2ictl import runs, sampling

    sampler = runs.open_sampler(run, model)
    _, unknown = sampling.tokenize_captions(captions, sampler.vocab, sampler.max_words)
    treatment = "dropped (as the DAMSM loaders drop them)" if sampler.vocab.drops_unknown else "read as <unk>"
    for caption, words in zip(captions, unknown):
        if words:
            err_console.print(f"warning: not in the vocabulary, {treatment}: {', '.join(words)} (in {caption!r})",
                              markup=False)
    images = sampler.sample(captions, per_caption=n, seed=seed, truncation=truncation)
    picture = sampling.write_grid(out, images, captions, scale=scale)
    console.print(f"wrote {out}: {len(captions)} caption(s) x {n} images of {images.shape[2]} px "
                  f"({picture.shape[1]} x {picture.shape[0]} px grid)")

