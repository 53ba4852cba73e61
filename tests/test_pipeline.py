"""The tf.data pipeline: batch contents, paired batches sharing labels, determinism, exact resume, sharding."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from t2ictl.data import pipeline
from t2ictl.data.prepare import PrepareOptions, Preparer
from t2ictl.data.sources import open_source
from t2ictl.data.sources.base import ExampleRef
from t2ictl.data.vocab import Vocabulary
from t2ictl.errors import UserError
from t2ictl.recipes import DataConfig

CONFIG = DataConfig(dataset="shapes", image_size=32, extra_sizes=[16], batch_size=8, random_flip=False)


def vocab_of(data_dir) -> Vocabulary:
    return Vocabulary.load(data_dir / "vocab.json")


def manifest_of(data_dir) -> dict:
    return json.loads((data_dir / "manifest.json").read_text())


def take(data_dir, count, config=CONFIG, **options) -> list[dict]:
    options.setdefault("paired", False)
    options.setdefault("seed", 0)
    stream = pipeline.train_dataset(data_dir, config, vocab_of(data_dir), **options)
    return [numpy_batch(batch) for batch in stream.take(count)]


def numpy_batch(batch: dict) -> dict:
    """The batch as NumPy arrays (nested for paired batches)."""
    return {k: numpy_batch(v) if isinstance(v, dict) else v.numpy() for k, v in batch.items()}


def test_training_batches_have_the_documented_contents(shapes_data):
    (batch,) = take(shapes_data, 1)
    assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.float32
    assert batch["image_16"].shape == (8, 16, 16, 3)
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0 and batch["image"].std() > 0.1
    assert batch["tokens"].shape == (8, 18) and batch["tokens"].dtype == np.int32
    assert batch["labels"].shape == (8, 20) and (batch["labels"].sum(axis=1) == 1).all()
    assert (batch["labels"].argmax(axis=1) == batch["class_id"]).all()
    assert batch["example_key"].dtype == np.int64 and len(set(batch["example_key"])) == 8
    for row, length in zip(batch["tokens"], batch["lengths"]):
        assert (row[:length] > 0).all() and (row[length:] == 0).all()


def test_the_smaller_size_is_the_image_downscaled(shapes_data):
    (batch,) = take(shapes_data, 1)
    reference = tf.image.resize(batch["image"], [16, 16], antialias=True).numpy()
    assert np.abs(reference - batch["image_16"]).max() < 1e-4


def test_without_random_crop_a_training_image_is_the_whole_image_resized(shapes_data):
    whole = {}
    for batch in pipeline.eval_dataset(shapes_data, CONFIG, vocab_of(shapes_data), split="train", batch_size=64):
        whole.update(zip(batch["example_key"].numpy(), batch["image"].numpy()))
    uncropped = take(shapes_data, 2, config=dataclasses.replace(CONFIG, random_crop=False))
    cropped = take(shapes_data, 2)
    for batch in uncropped:
        for key, image in zip(batch["example_key"], batch["image"]):
            np.testing.assert_allclose(image, whole[key], atol=1e-6)
    shifted = [np.abs(image - whole[key]).max() for b in cropped for key, image in zip(b["example_key"], b["image"])]
    assert max(shifted) > 0.1  # the default crops: some image moved


def test_paired_single_label_batches_share_the_class(shapes_data):
    for batch in take(shapes_data, 6, paired=True):
        a, b = batch["a"], batch["b"]
        assert (a["class_id"] == b["class_id"]).all() and (a["class_id"] >= 0).all()
        assert (a["example_key"] != b["example_key"]).all()


def test_paired_multi_label_batches_share_a_label(shapes_multi_data):
    config = DataConfig(dataset="shapes-multi", image_size=32, batch_size=8)
    for batch in take(shapes_multi_data, 5, config=config, paired=True):
        shared = (batch["a"]["labels"] * batch["b"]["labels"]).sum(axis=1)
        assert (shared >= 1).all()
        assert (batch["a"]["class_id"] == -1).all()


class HalfLabelled:
    """A multi-label source whose odd images have no label (as COCO images without instances)."""

    def __new__(cls, count):
        source = open_source("shapes-multi", [], count=count, seed=5, image_size=16)
        splits = source.splits()
        for split, refs in splits.items():
            splits[split] = [ExampleRef(r.example_id, r.captions, r.label_ids if i % 2 == 0 else (), r.load_image)
                             for i, r in enumerate(refs)]
        source.splits = lambda: splits
        return source


def test_an_unlabelled_image_is_paired_with_itself(tmp_path):
    data_dir = tmp_path / "half"
    Preparer(HalfLabelled(80), data_dir, PrepareOptions()).run()
    config = DataConfig(dataset="shapes-multi", image_size=16, batch_size=8)
    seen_self = 0
    for batch in take(data_dir, 4, config=config, paired=True):
        a, b = batch["a"], batch["b"]
        unlabelled = a["labels"].sum(axis=1) == 0
        assert (b["labels"][unlabelled].sum(axis=1) == 0).all()
        assert (a["example_key"][unlabelled] == b["example_key"][unlabelled]).all()
        assert ((a["labels"] * b["labels"]).sum(axis=1)[~unlabelled] >= 1).all()
        seen_self += unlabelled.sum()
    assert seen_self > 0


def test_same_seed_same_stream_other_seed_other_stream(shapes_data):
    first, again, other = take(shapes_data, 3), take(shapes_data, 3), take(shapes_data, 3, seed=1)
    for x, y in zip(first, again):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert not np.array_equal(first[0]["example_key"], other[0]["example_key"])


@pytest.mark.parametrize("paired", [False, True])
def test_resuming_at_a_step_gives_the_same_stream(shapes_data, paired):
    steps = pipeline.steps_per_epoch(manifest_of(shapes_data), CONFIG, paired)
    start = steps - 2  # the resumed stream crosses an epoch boundary
    full = take(shapes_data, steps + 3, paired=paired)
    resumed = take(shapes_data, 5, paired=paired, start_step=start)
    for x, y in zip(full[start:], resumed):
        x, y = flat(x), flat(y)
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def flat(batch: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in batch.items():
        out.update(flat(value, f"{key}.") if isinstance(value, dict) else {prefix + key: value})
    return out


def test_every_epoch_shows_each_image_once_and_reshuffles(shapes_data):
    steps = pipeline.steps_per_epoch(manifest_of(shapes_data), CONFIG, False)
    batches = take(shapes_data, 2 * steps)
    epoch0 = np.concatenate([b["example_key"] for b in batches[:steps]])
    epoch1 = np.concatenate([b["example_key"] for b in batches[steps:]])
    assert len(set(epoch0)) == len(epoch0) == steps * 8
    assert not np.array_equal(epoch0, epoch1)


def test_two_input_pipelines_read_disjoint_shares(shapes_data):
    shares = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id,
                                             num_replicas_in_sync=2)
        batches = take(shapes_data, 4, input_context=context)
        assert batches[0]["image"].shape[0] == 4  # the per-replica share of the global batch of 8
        shares.append(set(np.concatenate([b["example_key"] for b in batches])))
    assert not shares[0] & shares[1]


def test_eval_rows_are_stored_order_with_first_or_every_caption(shapes_data):
    vocab = vocab_of(shapes_data)
    test_count = manifest_of(shapes_data)["splits"]["test"]["examples"]
    first = list(pipeline.eval_dataset(shapes_data, CONFIG, vocab, split="test", batch_size=7, caption="first"))
    every = list(pipeline.eval_dataset(shapes_data, CONFIG, vocab, split="test", batch_size=7, caption="all"))
    captions_first = [c.decode() for b in first for c in b["caption"].numpy()]
    captions_every = [c.decode() for b in every for c in b["caption"].numpy()]
    assert len(captions_first) == test_count and len(captions_every) == 10 * test_count
    assert captions_every[::10] == captions_first
    tokens = np.concatenate([b["tokens"].numpy() for b in first])
    for caption, row in zip(captions_first, tokens):
        expected = vocab.encode(caption)[:18]
        assert list(row[: len(expected)]) == expected and (row[len(expected):] == 0).all()
    again = list(pipeline.eval_dataset(shapes_data, CONFIG, vocab, split="test", batch_size=7))
    np.testing.assert_array_equal(first[0]["image"].numpy(), again[0]["image"].numpy())


def test_a_batch_larger_than_the_data_is_refused(shapes_data):
    config = DataConfig(dataset="shapes", image_size=32, batch_size=200)
    with pytest.raises(UserError, match="lower data.batch_size"):
        pipeline.steps_per_epoch(manifest_of(shapes_data), config, paired=True)


def test_a_missing_shard_or_split_is_a_user_error(shapes_data, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(shapes_data, copy)
    with pytest.raises(UserError, match="no split 'validation'"):
        pipeline.eval_dataset(copy, CONFIG, vocab_of(copy), split="validation")
    next(copy.glob("train-*.tfrecord")).unlink()
    with pytest.raises(UserError, match="is missing"):
        pipeline.train_dataset(copy, CONFIG, vocab_of(copy), paired=False, seed=0)
