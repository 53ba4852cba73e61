"""What `t2ictl score` does: make or read the generated images, read them with Inception (and the DAMSM encoders for
R-precision), read the real side (cached statistics when they exist) and compute FID, IS and R-precision.

Generated images for a run or an exported model are drawn from the split's captions: every caption of the split in a
seeded random order, repeated until --num images (the papers use 30,000), one noise vector per image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import tensorflow as tf

from t2ictl import fileio
from t2ictl.console import console, progress
from t2ictl.errors import UserError
from t2ictl.evaluation import fid, stats_cache
from t2ictl.evaluation.inception import POOL_DIM, InceptionNetwork
from t2ictl.evaluation.r_precision import r_precision

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class GeneratedSide:
    """uint8 image batches with, for a run or a model, the index of each image's caption in `captions`."""
    batches: Iterator[tuple[np.ndarray, np.ndarray | None]]
    count: int
    captions: list[str] = field(default_factory=list)


@dataclass
class Measured:
    statistics: fid.FeatureStatistics
    image_size: int = 0  # height of the first image
    logits: list[np.ndarray] = field(default_factory=list)
    caption_ids: list[np.ndarray] = field(default_factory=list)
    read: dict[str, list[np.ndarray]] = field(default_factory=dict)  # what each extra reader gave, batch by batch

    def concatenated(self, name: str) -> np.ndarray:
        return np.concatenate(self.read[name])


def caption_plan(count: int, num: int, seed: int) -> np.ndarray:
    """Indices of `num` captions: seeded permutations of range(count), one after another."""
    rng = np.random.default_rng(seed)
    rounds = -(-num // count)
    return np.concatenate([rng.permutation(count) for _ in range(rounds)])[:num]


def from_sampler(sampler, captions: list[str], num: int, batch: int, seed: int,
                 truncation: float = 0.0) -> GeneratedSide:
    """Images of a Sampler or ExportedSampler for `num` captions of the split; the noise seed differs per batch."""
    plan = caption_plan(len(captions), num, seed)

    def batches():
        for start in range(0, num, batch):
            ids = plan[start:start + batch]
            images = sampler.sample([captions[i] for i in ids], per_caption=1, seed=seed * 1_000_003 + start,
                                    truncation=truncation)
            yield images[:, 0], ids

    return GeneratedSide(batches(), num, captions)


def image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UserError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{folder} holds no .png or .jpg images")
    return files


def from_folder(folder: Path, batch: int, limit: int | None = None) -> GeneratedSide:
    """The images of a folder (recursively, sorted by path) in batches of equal size; a batch ends early where the
    image size changes, so folders of mixed sizes work."""
    files = image_files(folder)[:limit]

    def batches():
        pending: list[np.ndarray] = []
        for path in files:
            try:
                image = tf.io.decode_image(tf.io.read_file(str(path)), channels=3, expand_animations=False).numpy()
            except tf.errors.OpError:
                raise UserError(f"cannot decode image {path}") from None
            if pending and (image.shape != pending[0].shape or len(pending) == batch):
                yield np.stack(pending), None
                pending = []
            pending.append(image)
        if pending:
            yield np.stack(pending), None

    return GeneratedSide(batches(), len(files))


Reader = Callable[[np.ndarray], np.ndarray]  # uint8 images -> one row per image


def measure(network: InceptionNetwork, side: GeneratedSide, label: str, keep_logits: bool,
            readers: dict[str, Reader] | None = None) -> Measured:
    """One pass over the images: Inception pool statistics, logits if kept, and the rows of each extra reader (the
    DAMSM image encoder, a separate IS classifier), so no image has to be held in memory."""
    readers = readers or {}
    measured = Measured(fid.FeatureStatistics(network.pool_dim), read={name: [] for name in readers})
    with progress(transient=True) as bar:
        task = bar.add_task(label, total=side.count, unit="img", status="")
        for images, ids in side.batches:
            pool, logits = network(images)
            measured.image_size = measured.image_size or int(images.shape[1])
            measured.statistics.add(pool)
            if keep_logits:
                measured.logits.append(logits)
            if ids is not None:
                measured.caption_ids.append(ids)
            for name, reader in readers.items():
                measured.read[name].append(reader(images))
            bar.advance(task, len(images))
    return measured


def real_statistics(network: InceptionNetwork, side_fn, key: dict, cache_folder: Path | None
                    ) -> tuple[np.ndarray, np.ndarray, bool]:
    """(mu, sigma, cache_hit); side_fn() makes the real side only on a cache miss."""
    key = {**key, "network": network.identity}
    if cache_folder is not None:
        cached = stats_cache.load(cache_folder, key)
        if cached is not None:
            return cached[0], cached[1], True
    mu, sigma = measure(network, side_fn(), "real images", keep_logits=False).statistics.result()
    if cache_folder is not None:
        stats_cache.save(cache_folder, key, mu, sigma)
    return mu, sigma, False


def check_real_side(data: Path | None, split: str, reference: Path | None) -> None:
    """Raise the UserError that reading the real side would raise, now."""
    if reference is not None:
        image_files(reference)
    else:
        from t2ictl.data import pipeline

        _, manifest = pipeline.shard_paths(data, split)
        if not manifest["splits"][split]["examples"]:
            raise UserError(f"the {split} split of {data} is empty (see the notes in its manifest.json); score "
                            "against another --split or a --reference folder")


def real_side(data: Path | None, split: str, reference: Path | None, size: int, batch: int) -> GeneratedSide:
    """The real images: a folder as they are, or a prepared split cropped and resized to the generated size."""
    if reference is not None:
        return from_folder(reference, batch)
    from t2ictl.data import pipeline
    from t2ictl.data.prepare import load_manifest

    count = load_manifest(data)["splits"][split]["examples"]
    batches = ((images, None) for images in pipeline.split_images(data, split, size, batch).as_numpy_iterator())
    return GeneratedSide(batches, count)


def comparability_note(data: Path | None, reference: Path | None) -> str | None:
    """What the prepared data's manifest says limits comparison with published figures (COCO 2017's test split)."""
    if reference is not None or data is None:
        return None
    from t2ictl.data.prepare import load_manifest

    return load_manifest(data)["source"].get("not_comparable")


def real_key(data: Path | None, split: str, reference: Path | None, size: int) -> dict:
    return folder_key(reference) if reference is not None else split_key(data, split, size)


def folder_key(folder: Path) -> dict:
    listing = "\n".join(f"{p.relative_to(folder)} {p.stat().st_size} {p.stat().st_mtime_ns}"
                        for p in image_files(folder))
    return {"reference": str(folder.resolve()), "listing": stats_cache.digest_text(listing)}


def split_key(data_dir: Path, split: str, size: int) -> dict:
    from t2ictl.data.prepare import MANIFEST

    manifest = (data_dir / MANIFEST).read_text()
    return {"data": stats_cache.digest_text(manifest), "split": split, "size": size}


def damsm_image_reader(image_encoder) -> Reader:
    """Global DAMSM image features of uint8 images, resized to the encoder's input size."""
    size = image_encoder.input_shape[1]

    def read(images: np.ndarray) -> np.ndarray:
        scaled = tf.image.resize(tf.cast(images, tf.float32), [size, size], method="bilinear") / 127.5 - 1.0
        return image_encoder(scaled, training=False)["global"].numpy()

    return read


def encoder_r_precision(text_encoder, vocab, max_words: int, image_features: np.ndarray, caption_ids: np.ndarray,
                        captions: list[str], seed: int) -> tuple[float, float]:
    """R-precision of generated images (their DAMSM features) against the split's captions."""
    from t2ictl.data.vocab import GraphTokenizer

    from t2ictl.models.text_encoder import encode_captions

    chunks = encode_captions(text_encoder, GraphTokenizer(vocab, max_words), captions)
    sentences = np.concatenate([out["sentence"].numpy() for _, out in chunks])
    return r_precision(image_features, sentences[caption_ids], sentences, seed=seed)


def open_source(run: Path | None, model: Path | None, encoders: Path | None):
    """(sampler or None, data folder of a run's recipe or None, the DAMSM Encoders for R-precision or None)."""
    from t2ictl import runs

    chosen = None if encoders is None else runs.load_encoders(runs.find_encoders(encoders))[0]
    if run is not None:
        sampler, recipe, backbone = runs.open_generator(runs.RunDir(run))
        return sampler, recipe.data.path, chosen or backbone.encoders  # the run's own, loaded with its generator
    if model is None:
        return None, None, None
    return runs.open_sampler(model=model), None, chosen


def write_json(path: Path, rows: list[dict], protocol: dict | None = None) -> None:
    fileio.write_json(path, {"results": rows, **({"protocol": protocol} if protocol else {}),
                             "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    console.print(f"wrote {path}")


# --------------------------------------------------------------------------------------------------------------------
# The real side and the protocol


def read_stats_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """mu [2048] and sigma [2048, 2048] of a statistics .npz (pytorch-fid's, DF-GAN's, GALIP's, or --save-stats')."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--reference-stats {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as stored:
            mu, sigma = np.asarray(stored["mu"], np.float64), np.asarray(stored["sigma"], np.float64)
    except KeyError:
        raise UserError(f"--reference-stats {path}: no mu and sigma in the file") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"--reference-stats {path}: not a readable .npz ({exc})") from None
    if mu.shape != (POOL_DIM,) or sigma.shape != (POOL_DIM, POOL_DIM):
        raise UserError(f"--reference-stats {path}: mu {list(mu.shape)} and sigma {list(sigma.shape)} are not the "
                        f"statistics of {POOL_DIM}-d Inception pool features")
    return mu, sigma


@dataclass
class RealSide:
    """What generated images are compared with: a statistics file, a folder of images or a prepared split."""

    data: Path | None
    split: str
    reference: Path | None = None
    stats_file: Path | None = None

    @property
    def kind(self) -> str | None:
        if self.stats_file is not None:
            return "stats"
        if self.reference is not None:
            return "folder"
        return "split" if self.data is not None else None

    @property
    def name(self) -> str:
        return {"stats": str(self.stats_file), "folder": str(self.reference),
                "split": f"{self.data} [{self.split}]"}.get(self.kind, "")

    def check(self) -> None:
        if self.kind == "stats":
            read_stats_file(self.stats_file)
        elif self.kind is not None:
            check_real_side(self.data, self.split, self.reference)

    def statistics(self, network: InceptionNetwork, size: int, batch: int, cache_folder: Path | None
                   ) -> tuple[np.ndarray, np.ndarray, bool]:
        if self.kind == "stats":
            return (*read_stats_file(self.stats_file), False)
        return real_statistics(network, lambda: real_side(self.data, self.split, self.reference, size, batch),
                               real_key(self.data, self.split, self.reference, size), cache_folder)

    def record(self) -> dict:
        if self.kind == "stats":
            return {"kind": "statistics file", "file": str(Path(self.stats_file).resolve()),
                    "sha256": fileio.sha256_file(Path(self.stats_file))}
        if self.kind == "folder":
            return {"kind": "image folder", **folder_key(self.reference)}
        from t2ictl.data.prepare import MANIFEST, load_manifest

        manifest = load_manifest(self.data)
        return {"kind": "prepared split", "data": str(Path(self.data).resolve()), "split": self.split,
                "examples": manifest["splits"][self.split]["examples"],
                "manifest_sha256": fileio.sha256_file(Path(self.data) / MANIFEST)}


def protocol(network: InceptionNetwork, real: RealSide, count: int, truncation: float | None, seed: int,
             generated: dict) -> dict:
    """How a score was measured, so that two scores can be told comparable or not."""
    from t2ictl import __version__

    source = next(({"kind": k, "path": str(Path(v).resolve())} for k, v in generated.items() if v is not None), {})
    return {"fid_mode": network.mode, "network": network.identity, "network_sha256": network.weights_sha256,
            "resize": network.resize, "real": real.record(), "generated": source, "n": count,
            "truncation": truncation, "seed": seed, "t2ictl": __version__}


def protocol_rows(protocol: dict) -> list[tuple[str, str]]:
    real = protocol["real"]
    real_text = {"statistics file": lambda: f"{real['file']} (sha256 {real['sha256'][:12]})",
                 "image folder": lambda: real["reference"],
                 "prepared split": lambda: f"{real['data']} [{real['split']}], {real['examples']} images"}[real["kind"]]
    sha = protocol["network_sha256"]
    return [("FID mode", protocol["fid_mode"]),
            ("network", protocol["network"] + (f" (sha256 {sha[:12]})" if sha else "")),
            ("resize", protocol["resize"]), ("real side", real_text()),
            ("generated", f"{protocol['n']} images" + ("" if protocol["truncation"] is None else
                                                       f", truncation {protocol['truncation'] or 'off'}")
             + f", seed {protocol['seed']}"),
            ("t2ictl", protocol["t2ictl"])]
