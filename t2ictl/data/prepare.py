"""`t2ictl prepare`: a dataset source to sharded TFRecords, a vocabulary and a manifest, atomically and resumably.

Every shard is written to a temporary file and renamed when complete; a state file records finished shards with their
checksums, so an interrupted run resumes at the first unfinished shard. The manifest is written last: an output folder
with a manifest is complete. A source whose fingerprint differs from the one a partial or finished output was made from
is refused unless the user asks to overwrite.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from t2ictl import fileio
from t2ictl.data import records
from t2ictl.data.sources.base import ExampleRef, Source
from t2ictl.data.vocab import Vocabulary
from t2ictl.errors import UserError

MANIFEST = "manifest.json"
VOCAB = "vocab.json"
STATE = ".prepare-state.json"
VOCAB_FROM = ("all", "train")
PROGRESS_EVERY = 16  # images between progress bar updates (each update takes the GIL from the decoding threads)


@dataclass(frozen=True)
class PrepareOptions:
    shard_size: int = 512  # examples per shard
    min_count: int = 1  # words seen fewer times are <unk>
    vocab_from: str = "all"  # "all" splits, as AttnGAN/DF-GAN build theirs, or "train" only
    threads: int = 4  # image reading and validation threads


class ImageError(ValueError):
    pass


def inspect_image(data: bytes) -> tuple[int, int]:
    """(height, width) of a JPEG or PNG, decoding it fully so that truncated or corrupt files are caught."""
    import tensorflow as tf

    # decode_jpeg / decode_png directly: decode_image's format checks are several more eager ops, each holding the GIL
    if data.startswith(b"\xff\xd8"):
        decode = tf.io.decode_jpeg
    elif data.startswith(b"\x89PNG\r\n\x1a\n"):
        decode = tf.io.decode_png
    else:
        raise ImageError("not a JPEG or PNG file")
    try:
        image = decode(data, channels=3)
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as exc:
        raise ImageError(f"cannot decode image: {exc.message.splitlines()[0]}") from None
    height, width = int(image.shape[0]), int(image.shape[1])
    if height < 2 or width < 2:
        raise ImageError(f"image is {height}x{width} pixels")
    return height, width


def shard_names(split: str, count: int, shard_size: int) -> list[str]:
    shards = max(1, -(-count // shard_size))
    return [f"{split}-{i:05d}-of-{shards:05d}.tfrecord" for i in range(shards)]


class Preparer:
    """Writes one source into one output folder."""

    def __init__(self, source: Source, out: Path, options: PrepareOptions, progress=None):
        if options.vocab_from not in VOCAB_FROM:
            raise UserError(f"--vocab-from must be one of {', '.join(VOCAB_FROM)}, got {options.vocab_from!r}")
        self.source = source
        self.out = Path(out)
        self.options = options
        self.progress = progress

    def identity(self, fingerprint: str) -> dict:
        return {"dataset": self.source.name, "fingerprint": fingerprint, "options": asdict(self.options),
                "schema_version": records.SCHEMA_VERSION}

    def run(self, overwrite: bool = False) -> dict:
        fingerprint = self.source.fingerprint()
        identity = self.identity(fingerprint)
        finished = self._finished_manifest(identity, overwrite)
        if finished is not None:
            return finished
        state = self._load_state(identity, overwrite)
        splits = self.source.splits()
        total = sum(len(refs) for refs in splits.values())
        task = self.progress.add_task(f"prepare {self.source.name}", total=total, unit="img", status="") \
            if self.progress else None
        for split, refs in splits.items():
            self._write_split(split, refs, state, task)
        return self._finish(identity, splits, state)

    # -- output folder states ---------------------------------------------------------------------------------------

    def _finished_manifest(self, identity: dict, overwrite: bool) -> dict | None:
        path = self.out / MANIFEST
        if not path.exists():
            return None
        manifest = json.loads(path.read_text())
        if not overwrite and {k: manifest.get(k) for k in identity} == identity:
            manifest["resumed"] = "up to date"
            return manifest
        if not overwrite:
            raise UserError(f"{self.out} holds data prepared from another source or with other options; "
                            "pass --overwrite to replace it or --out for a new folder")
        self._clear()
        return None

    def _load_state(self, identity: dict, overwrite: bool) -> dict:
        path = self.out / STATE
        if path.exists():
            state = json.loads(path.read_text())
            if state.get("identity") == identity:
                return state
            if not overwrite:
                raise UserError(f"{self.out} holds a partial output from another source or with other options "
                                "(the source changed since it was started); pass --overwrite to start over")
            self._clear()
        elif self.out.exists() and any(self.out.glob("*.tfrecord")) and not overwrite:
            raise UserError(f"{self.out} holds shards that no manifest or state describes; "
                            "pass --overwrite to replace them")
        self.out.mkdir(parents=True, exist_ok=True)
        return {"identity": identity, "shards": {}}

    def _clear(self) -> None:
        for pattern in ("*.tfrecord", MANIFEST, VOCAB, STATE):
            for path in self.out.glob(pattern):
                path.unlink()

    # -- shards ------------------------------------------------------------------------------------------------------

    def _write_split(self, split: str, refs: list[ExampleRef], state: dict, task) -> None:
        size = self.options.shard_size
        for index, name in enumerate(shard_names(split, len(refs), size)):
            chunk = refs[index * size:(index + 1) * size]
            done = state["shards"].get(name)
            if done is None or not self._shard_intact(name, done):
                done = self._write_shard(name, chunk, task)
                state["shards"][name] = done
                fileio.write_json(self.out / STATE, state)
            elif self.progress:
                self.progress.advance(task, len(chunk))

    def _shard_intact(self, name: str, done: dict) -> bool:
        path = self.out / name
        return path.exists() and fileio.sha256_file(path) == done["sha256"]

    def _write_shard(self, name: str, refs: list[ExampleRef], task) -> dict:
        import tensorflow as tf

        skipped, written, cropped = [], 0, 0
        with fileio.atomic_path(self.out / name) as tmp, tf.io.TFRecordWriter(str(tmp)) as writer:
            with ThreadPoolExecutor(self.options.threads) as pool:
                for ref, result in zip(refs, pool.map(self._encode, refs)):
                    if isinstance(result, str):
                        skipped.append({"example_id": ref.example_id, "origin": ref.origin, "reason": result})
                    else:
                        record, whole_image = result
                        writer.write(record)
                        written += 1
                        cropped += not whole_image
                    if self.progress and (written + len(skipped)) % PROGRESS_EVERY == 0:
                        self.progress.update(task, advance=PROGRESS_EVERY,
                                             status=f"skipped {len(skipped)}" if skipped else "")
        if self.progress:
            self.progress.update(task, advance=(written + len(skipped)) % PROGRESS_EVERY)
        return {"examples": written, "cropped": cropped, "sha256": fileio.sha256_file(self.out / name),
                "skipped": skipped}

    def _encode(self, ref: ExampleRef) -> tuple[bytes, bool] | str:
        """(the serialized record, whether the models see the whole image), or the reason the example is skipped."""
        if not ref.captions:
            return "image without captions"
        try:
            image = ref.load_image()
        except OSError as exc:
            return f"cannot read image: {exc.strerror or exc}"
        try:
            height, width = inspect_image(image)
        except ImageError as exc:
            return str(exc)
        crop = self.source.crop_box(ref, height, width)
        record = records.encode_example(ref.example_id, image, height, width, crop, ref.captions, ref.label_ids,
                                        self.source.multi_label)
        return record, tuple(crop) == (0, 0, height, width)

    # -- vocabulary and manifest ---------------------------------------------------------------------------------------

    def _finish(self, identity: dict, splits: dict[str, list[ExampleRef]], state: dict) -> dict:
        skipped = [item for done in state["shards"].values() for item in done["skipped"]]
        skipped_ids = {item["example_id"] for item in skipped}
        kept = {split: [r for r in refs if r.example_id not in skipped_ids] for split, refs in splits.items()}
        vocab_splits = list(kept) if self.options.vocab_from == "all" else ["train"]
        vocab = Vocabulary.build(
            (c for split in vocab_splits for ref in kept.get(split, []) for c in ref.captions),
            min_count=self.options.min_count,
        )
        vocab.save(self.out / VOCAB)
        manifest = {
            **identity,
            "source": self.source.describe(),
            "classes": self.source.classes(),
            "multi_label": self.source.multi_label,
            "captions_per_image": self.source.captions_per_image,
            "splits": {split: self._split_entry(split, splits[split], kept[split], state) for split in splits},
            "skipped": skipped,
            "empty_captions_dropped": self.source.report.empty_captions,
            "notes": self.source.report.notes + self._empty_split_notes(kept),
            "vocab": {"file": VOCAB, "size": len(vocab), "min_count": vocab.min_count, "from": vocab_splits},
        }
        fileio.write_json(self.out / MANIFEST, manifest)
        (self.out / STATE).unlink(missing_ok=True)
        return manifest

    def _empty_split_notes(self, kept: dict[str, list[ExampleRef]]) -> list[str]:
        rule = self.source.describe().get("split")
        return [f"the {split} split is empty" + (f" ({rule})" if rule else "") for split, refs in kept.items()
                if not refs]

    def _split_entry(self, split: str, refs: list[ExampleRef], kept: list[ExampleRef], state: dict) -> dict:
        names = shard_names(split, len(refs), self.options.shard_size)
        shards = [{"file": n, "examples": state["shards"][n]["examples"], "sha256": state["shards"][n]["sha256"]}
                  for n in names]
        labelled = sum(1 for r in kept if r.label_ids)
        cropped = sum(state["shards"][n].get("cropped", 0) for n in names)
        return {"examples": len(kept), "captions": sum(len(r.captions) for r in kept), "labelled": labelled,
                "unlabelled": len(kept) - labelled, "cropped": cropped, "shards": shards}


def load_manifest(out: Path) -> dict:
    path = Path(out) / MANIFEST
    if not path.exists():
        if (Path(out) / STATE).exists():
            raise UserError(f"{out} is an unfinished `t2ictl prepare` output; run the same prepare command again "
                            "to finish it")
        raise UserError(f"{out} holds no prepared data ({MANIFEST} missing); run `t2ictl prepare` first")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None
    if manifest.get("schema_version") != records.SCHEMA_VERSION:
        raise UserError(f"{path} has schema version {manifest.get('schema_version')}, this t2ictl reads "
                        f"{records.SCHEMA_VERSION}; prepare the data again")
    return manifest


def check(out: Path, progress=None) -> list[str]:
    """Problems found when validating an output folder against its manifest (empty: all good)."""
    import tensorflow as tf

    out = Path(out)
    manifest = load_manifest(out)
    problems = []
    num_classes = len(manifest["classes"])
    try:
        vocab = Vocabulary.load(out / VOCAB)
        if len(vocab) != manifest["vocab"]["size"]:
            problems.append(f"{VOCAB}: {len(vocab)} words, manifest says {manifest['vocab']['size']}")
    except UserError as exc:
        problems.append(str(exc))
    shards = [s for split in manifest["splits"].values() for s in split["shards"]]
    total = sum(s["examples"] for s in shards)
    task = progress.add_task("check", total=total, unit="rec", status="") if progress else None
    for shard in shards:
        path = out / shard["file"]
        if not path.exists():
            problems.append(f"{shard['file']}: missing")
            continue
        if fileio.sha256_file(path) != shard["sha256"]:
            problems.append(f"{shard['file']}: checksum differs from the manifest")
            continue
        count = 0
        try:
            for serialized in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
                record = records.decode_python(serialized)
                if not record["captions"] or any(not c.strip() for c in record["captions"]):
                    problems.append(f"{shard['file']}: {record['example_id']} has an empty caption list or caption")
                if any(not 0 <= i < num_classes for i in record["label_ids"]):
                    problems.append(f"{shard['file']}: {record['example_id']} has a label outside the classes")
                count += 1
                if progress:
                    progress.advance(task)
        except (tf.errors.DataLossError, KeyError, IndexError) as exc:
            problems.append(f"{shard['file']}: unreadable record after {count}: {exc}")
            continue
        if count != shard["examples"]:
            problems.append(f"{shard['file']}: {count} records, manifest says {shard['examples']}")
    return problems
