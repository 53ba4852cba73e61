"""Preparation as a process: shards, manifest, vocabulary, skips, atomic interruption and resume, --check."""

import json

import numpy as np
import pytest
import tensorflow as tf

from t2ictl.data import records
from t2ictl.data.prepare import MANIFEST, STATE, PrepareOptions, Preparer, check, load_manifest
from t2ictl.data.sources.base import ExampleRef, Source
from t2ictl.errors import UserError


def png(value: int) -> bytes:
    image = np.full((6, 8, 3), value, np.uint8)
    return tf.io.encode_png(image).numpy()


class ListSource(Source):
    """A source over an in-memory list; `fail_at` raises KeyboardInterrupt when that image is read."""

    name = "shapes"

    def __init__(self, count=10, version="v1", fail_at=None, bad=(), uncaptioned=()):
        super().__init__()
        self.count, self.version, self.fail_at = count, version, fail_at
        self.bad, self.uncaptioned = set(bad), set(uncaptioned)
        self.loads = []

    def classes(self):
        return ["red", "blue"]

    def _load(self, index):
        self.loads.append(index)
        if index == self.fail_at:
            raise KeyboardInterrupt
        return b"\xff\xd8 not really a jpeg" if index in self.bad else png(index * 10)

    def splits(self):
        refs = [ExampleRef(f"img{i:03d}", () if i in self.uncaptioned else (f"a {self.classes()[i % 2]} thing {i}",),
                           (i % 2,), lambda i=i: self._load(i), origin=f"/src/img{i:03d}.png")
                for i in range(self.count)]
        return {"train": refs[: self.count - 3], "test": refs[self.count - 3:]}

    def describe(self):
        return {"kind": "list"}

    def fingerprint(self):
        return f"list-{self.count}-{self.version}"


def read_shards(out):
    manifest = load_manifest(out)
    result = {}
    for split, entry in manifest["splits"].items():
        result[split] = [records.decode_python(r) for s in entry["shards"]
                         for r in tf.data.TFRecordDataset(str(out / s["file"])).as_numpy_iterator()]
    return result


def test_prepare_writes_shards_manifest_vocab(tmp_path):
    out = tmp_path / "out"
    manifest = Preparer(ListSource(), out, PrepareOptions(shard_size=3)).run()
    assert manifest["splits"]["train"]["examples"] == 7
    assert [s["file"] for s in manifest["splits"]["train"]["shards"]] == [
        "train-00000-of-00003.tfrecord", "train-00001-of-00003.tfrecord", "train-00002-of-00003.tfrecord"]
    assert manifest["splits"]["test"]["examples"] == 3
    assert manifest["classes"] == ["red", "blue"]
    data = read_shards(out)
    first = data["train"][0]
    assert first["example_id"] == "img000" and first["captions"] == ["a red thing 0"]
    assert first["label_ids"] == [0] and first["class_id"] == 0
    assert (first["height"], first["width"], first["crop"]) == (6, 8, (0, 0, 6, 8))
    assert tf.io.decode_png(first["image"]).numpy().max() == 0
    vocab = json.loads((out / "vocab.json").read_text())
    assert vocab["words"][:2] == ["<pad>", "<unk>"] and "thing" in vocab["words"]
    assert not (out / STATE).exists()
    assert check(out) == []


def test_rerun_is_up_to_date_and_reads_nothing(tmp_path):
    out = tmp_path / "out"
    Preparer(ListSource(), out, PrepareOptions(shard_size=3)).run()
    source = ListSource()
    manifest = Preparer(source, out, PrepareOptions(shard_size=3)).run()
    assert manifest["resumed"] == "up to date"
    assert source.loads == []


def test_interrupted_prepare_leaves_no_partial_shard_and_resumes(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        Preparer(ListSource(fail_at=7), out, PrepareOptions(shard_size=3, threads=1)).run()
    assert not (out / MANIFEST).exists()
    finished = sorted(p.name for p in out.glob("*.tfrecord"))
    assert finished == ["train-00000-of-00003.tfrecord", "train-00001-of-00003.tfrecord",
                        "train-00002-of-00003.tfrecord"]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp.tfrecord")]
    resumed_source = ListSource()
    Preparer(resumed_source, out, PrepareOptions(shard_size=3, threads=1)).run()
    assert sorted(set(resumed_source.loads)) == [7, 8, 9]  # only the unfinished test shard was read again
    reference = tmp_path / "reference"
    Preparer(ListSource(), reference, PrepareOptions(shard_size=3)).run()
    assert read_shards(out) == read_shards(reference)
    assert check(out) == []


def test_changed_source_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        Preparer(ListSource(fail_at=5), out, PrepareOptions(shard_size=3, threads=1)).run()
    with pytest.raises(UserError, match="source changed"):
        Preparer(ListSource(version="v2"), out, PrepareOptions(shard_size=3)).run()
    Preparer(ListSource(version="v2"), out, PrepareOptions(shard_size=3)).run(overwrite=True)
    with pytest.raises(UserError, match="another source or with other options"):
        Preparer(ListSource(version="v3"), out, PrepareOptions(shard_size=3)).run()
    with pytest.raises(UserError, match="another source or with other options"):
        Preparer(ListSource(version="v2"), out, PrepareOptions(shard_size=4)).run()


def test_unexplained_shards_are_not_overwritten(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train-00000-of-00001.tfrecord").write_bytes(b"someone's data")
    with pytest.raises(UserError, match="no manifest or state describes"):
        Preparer(ListSource(), out, PrepareOptions()).run()
    assert (out / "train-00000-of-00001.tfrecord").read_bytes() == b"someone's data"


def test_bad_images_and_missing_captions_are_skipped_and_reported(tmp_path):
    out = tmp_path / "out"
    manifest = Preparer(ListSource(bad=[2], uncaptioned=[8]), out, PrepareOptions(shard_size=4)).run()
    skipped = {s["example_id"]: s for s in manifest["skipped"]}
    assert set(skipped) == {"img002", "img008"}
    assert skipped["img002"]["origin"] == "/src/img002.png" and "cannot decode" in skipped["img002"]["reason"]
    assert skipped["img008"]["reason"] == "image without captions"
    assert manifest["splits"]["train"]["examples"] == 6 and manifest["splits"]["test"]["examples"] == 2
    ids = {r["example_id"] for split in read_shards(out).values() for r in split}
    assert "img002" not in ids and "img008" not in ids and len(ids) == 8
    assert check(out) == []


def test_check_finds_damage(tmp_path):
    out = tmp_path / "out"
    Preparer(ListSource(), out, PrepareOptions(shard_size=3)).run()
    shard = out / "train-00001-of-00003.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-5])
    (out / "test-00000-of-00001.tfrecord").unlink()
    problems = check(out)
    assert any("train-00001-of-00003.tfrecord: checksum differs" in p for p in problems)
    assert any("test-00000-of-00001.tfrecord: missing" in p for p in problems)
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["splits"]["train"]["shards"][0]["examples"] = 99
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert any("3 records, manifest says 99" in p for p in check(out))


def test_load_manifest_errors(tmp_path):
    with pytest.raises(UserError, match="no prepared data"):
        load_manifest(tmp_path)
    (tmp_path / STATE).write_text("{}")
    with pytest.raises(UserError, match="unfinished"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_manifest(tmp_path)


INTERRUPTED_PREPARE = """
import sys
from pathlib import Path
from t2ictl.data import prepare
from t2ictl.data.sources import open_source

encode, calls = prepare.Preparer._encode, []

def encode_until(self, ref):
    calls.append(ref)
    if len(calls) == 100:  # inside the fourth shard of 32
        raise KeyboardInterrupt
    return encode(self, ref)

prepare.Preparer._encode = encode_until
source = open_source("shapes", [], count=300, seed=5, image_size=32)
options = prepare.PrepareOptions(shard_size=32, threads=4)
try:
    prepare.Preparer(source, Path(sys.argv[1]), options).run()
except KeyboardInterrupt:
    sys.exit(130)
"""


@pytest.mark.slow
def test_same_input_gives_the_same_bytes_across_processes_and_after_a_resume(tmp_path):
    """Each run is a new process: protobuf orders a feature map differently in every process unless told not to."""
    import subprocess
    import sys

    def cli_prepare(out):
        result = subprocess.run([sys.executable, "-m", "t2ictl", "prepare", "shapes", "--count", "300", "--seed", "5",
                                 "--image-size", "32", "--shard-size", "32", "--out", str(out)],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        return out

    def checksums(out):
        manifest = load_manifest(out)
        return [(s["file"], s["sha256"]) for split in manifest["splits"].values() for s in split["shards"]]

    first, second = cli_prepare(tmp_path / "a"), cli_prepare(tmp_path / "b")
    interrupted = subprocess.run([sys.executable, "-c", INTERRUPTED_PREPARE, str(tmp_path / "c")],
                                 capture_output=True, text=True, timeout=300)
    assert interrupted.returncode == 130, interrupted.stderr
    assert not (tmp_path / "c" / MANIFEST).exists() and len(list((tmp_path / "c").glob("*.tfrecord"))) == 3
    resumed = cli_prepare(tmp_path / "c")
    assert len(checksums(first)) == 10
    assert checksums(first) == checksums(second) == checksums(resumed)
    assert (first / "vocab.json").read_bytes() == (resumed / "vocab.json").read_bytes()
