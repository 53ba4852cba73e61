"""`t2ictl score`: FID, Inception Score and R-precision of a run, an exported model or a folder of images."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from t2ictl.console import console, err_console, table
from t2ictl.errors import UserError


INCEPTION_HELP = ("The Inception network, and with it the FID mode. TF FID: a TF-Hub handle or URL, or a local "
                  "hub/SavedModel folder [default: the TF-GAN evaluation Inception on TF-Hub]. PyTorch FID: "
                  "pytorch-fid's weights file pt_inception-2015-12-05-6726825d.pth (what DF-GAN, GALIP and most "
                  "PyTorch papers report). Or a Keras InceptionV3 .h5 weights file. The two FIDs of the literature "
                  "differ by up to 10 points for the same images: compare only within one mode.")


def score(
    run: Optional[Path] = typer.Option(None, "--run", help="Score a training run (its latest EMA generator)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Score a model written by `t2ictl export`."),
    images: Optional[Path] = typer.Option(None, "--images", help="Score a folder of generated images "
                                          "(.png/.jpg, any depth; FID and IS only)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Prepared data folder: real images and captions "
                                        "[default with --run: the recipe's data folder]."),
    split: str = typer.Option("test", "--split", help="Split of --data to compare with and draw captions from."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="A folder of real images to compare with "
                                             "instead of a prepared split."),
    reference_stats: Optional[Path] = typer.Option(None, "--reference-stats", help="Real-image statistics to "
                                                   "compare with: an .npz with mu and sigma, as pytorch-fid, DF-GAN "
                                                   "and GALIP write them (bird_val256_FIDK0.npz, "
                                                   "coco_val256_FIDK0.npz); match its FID mode with --inception."),
    save_stats: Optional[Path] = typer.Option(None, "--save-stats", help="Write the scored images' mu and sigma to "
                                              "this .npz (pytorch-fid's format); with no real side given, only "
                                              "that."),
    num: int = typer.Option(30000, "--num", min=10, help="Generated images to score (the papers use 30,000); "
                            "with --images, at most this many of the folder."),
    batch: int = typer.Option(50, "--batch", min=1, help="Images per batch through the generator and Inception."),
    truncation: float = typer.Option(0.0, "--truncation", min=0.0, help="Truncate the generator's noise to "
                                     "[-T, T] (DF-GAN's FID uses 0.88 on its checkpoints; 0 = off)."),
    inception: Optional[str] = typer.Option(None, "--inception", help=INCEPTION_HELP),
    is_classifier: Optional[str] = typer.Option(None, "--is-classifier", help="A different network for the "
                                                "Inception Score only (e.g. the StackGAN birds-finetuned Inception "
                                                "for CUB), in any --inception form."),
    encoders: Optional[Path] = typer.Option(None, "--encoders", help="Pretrained DAMSM encoders for R-precision "
                                            "(a pretraining or import run, or its encoders/ folder) [default with "
                                            "--run: the run's]."),
    seed: int = typer.Option(0, "--seed", help="Seed of the caption order, the noise and the R-precision draws."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where real-image statistics are cached "
                                             "[default: $T2ICTL_CACHE/fid-stats or ~/.cache/t2ictl/fid-stats]."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute the real-image statistics (and keep them "
                                  "out of the cache)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the results and the protocol (network "
                                            "and its sha256, resize rule, real side, N, truncation, seed, version) "
                                            "to this JSON file."),
) -> None:
    """Compute FID (2048-d Inception pool features, real statistics cached), the Inception Score (10 splits) and
    R-precision (1 true caption among 100, with the pretrained DAMSM encoders) and print them as a table, with the
    protocol they were measured under. A run on the embedded data also gets caption consistency (the pixel reader);
    --inception DATA/evaluator gives an FID there that no run trains against (`t2ictl experiment` fits it)."""
    import numpy as np

    from t2ictl.data import pipeline
    from t2ictl.evaluation import fid, stats_cache
    from t2ictl.evaluation import score as scoring
    from t2ictl.evaluation.inception import load_network
    from t2ictl.evaluation.inception_score import inception_score

    if sum(x is not None for x in (run, model, images)) != 1:
        raise UserError("pass exactly one of --run DIR, --model DIR or --images DIR")
    if reference is not None and reference_stats is not None:
        raise UserError("pass one real side: --reference DIR or --reference-stats FILE.npz, not both")
    started = time.perf_counter()
    sampler, recipe_data, damsm = scoring.open_source(run, model, encoders)
    data = data or recipe_data
    if images is None and data is None:
        raise UserError("pass --data DIR: the prepared dataset whose captions the images are generated from")
    real = scoring.RealSide(data, split, reference, reference_stats)
    if real.kind is None and save_stats is None:
        raise UserError("pass --data DIR (a prepared split), --reference DIR (a folder of real images) or "
                        "--reference-stats FILE.npz")
    real.check()  # before hours of generation, not after
    note = scoring.comparability_note(data, reference or reference_stats)
    if note:
        err_console.print(f"note: {note}", markup=False)
    network = load_network(inception)
    classifier = load_network(is_classifier) if is_classifier else None
    if images is not None:
        generated = scoring.from_folder(images, batch, limit=num)
    else:
        generated = scoring.from_sampler(sampler, pipeline.split_captions(data, split), num, batch, seed, truncation)
    readers = {}
    if classifier is not None:
        readers["is_logits"] = lambda batch_images: classifier(batch_images)[1]
    if damsm is not None and damsm.image is not None and sampler is not None:
        readers["damsm"] = scoring.damsm_image_reader(damsm.image)
    elif damsm is not None and sampler is not None:
        err_console.print("note: no R-precision: the run's encoders have no image encoder (import one with "
                          "--image-encoder)", markup=False)
    measured = scoring.measure(network, generated, "generated images", keep_logits=classifier is None,
                               readers=readers)
    count = measured.statistics.count
    mu, sigma = measured.statistics.result()
    if save_stats is not None:
        stats_cache.write_statistics(save_stats, mu, sigma)
        console.print(f"wrote {save_stats}: mu and sigma of {count} images ({network.mode}, {network.identity})")
        if real.kind is None:
            return
    real_mu, real_sigma, hit = real.statistics(network, measured.image_size, batch,
                                               None if no_cache else (cache_dir or stats_cache.default_folder()))
    rows = [_row("FID", fid.frechet_distance(mu, sigma, real_mu, real_sigma), None, count, network.identity,
                 real.name + (" (cached statistics)" if hit else ""))]
    logits = np.concatenate(measured.logits) if classifier is None else measured.concatenated("is_logits")
    if (classifier or network).exclusive_classes:  # not a multi-label classifier's sigmoid outputs
        rows.append(_row("IS", *inception_score(logits), count, (classifier or network).identity, "10 splits"))
    if "damsm" in readers:
        r_precision = scoring.encoder_r_precision(damsm.text, damsm.vocab or sampler.vocab,
                                                  damsm.text.input_shape[1],
                                                  measured.concatenated("damsm"), np.concatenate(measured.caption_ids),
                                                  generated.captions, seed)
        rows.append(_row("R-precision", *r_precision, count, "DAMSM", "1 true caption of 100"))
    if run is not None:
        rows += _consistency_rows(sampler, run, data, split, min(num, 1000), seed)
    seconds = time.perf_counter() - started
    protocol = scoring.protocol(network, real, count, truncation if images is None else None, seed,
                                {"run": run, "model": model, "images": images})
    console.print(table("scores", ["metric", "value", "std", "n", "network", "against"],
                        [[r["metric"], r["value"], "" if r["std"] is None else r["std"], r["n"], r["network"],
                          r["against"]] for r in rows]))
    console.print(table("protocol", ["item", "value"], scoring.protocol_rows(protocol)))
    console.print(f"{count} generated images scored in {seconds:.1f} s ({count / seconds:.1f} images/s)")
    if json_out is not None:
        scoring.write_json(json_out, [{**r, "seconds": round(seconds, 1), **({"note": note} if note else {})}
                                      for r in rows], protocol)


def _consistency_rows(sampler, run: Path, data: Path, split: str, count: int, seed: int) -> list[dict]:
    """On the embedded data: the share of images that show what their caption asks (read back pixel by pixel), with
    the same reader on the real images as the ceiling."""
    from t2ictl import runs
    from t2ictl.evaluation.consistency import READERS, shapes_consistency

    recipe = runs.RunDir(run).recipe()
    if recipe.data.dataset not in READERS:
        return []
    from t2ictl.data.prepare import load_manifest

    found = shapes_consistency(sampler, data, recipe, sampler.vocab, count=count, seed=seed, split=split)
    read = min(count, load_manifest(data)["splits"][split]["examples"])  # the first caption of each image
    return [_row(name, value, None, read, "pixel reader", "real images: " + f"{found['real_' + name]:.3f}")
            for name, value in found.items() if not name.startswith("real_")]


def _row(metric: str, value: float, std: float | None, n: int, network: str, against: str) -> dict:
    return {"metric": metric, "value": value, "std": std, "n": n, "network": network, "against": against}
