"""The tf.data input pipeline: prepared records to training and evaluation batches.

Training, per epoch e: shards in an order shuffled by (seed, e) → records shuffled with a seed of (seed, e) →
[paired mode: pairs sharing a label] → this worker's share of each global batch → decode, crop to the record's box,
resize to 76/64 of the size and random-crop back (AttnGAN/DF-GAN; or straight to the size without data.random_crop),
optional flip, one caption drawn per image → batch → tokenize → prefetch.
Every random choice is a stateless function of (seed, epoch, element index), so the stream from any step on is the
same whether a run is fresh or resumed: `start_step` skips the consumed records of the current epoch before decoding.
Every worker of a cluster reads the whole stream and keeps its slice of each global batch, so the global batch of a
step is the same on one device, on N local replicas and on N workers, and a run can move between them.

Paired mode feeds the two branches of the framework. The shuffled stream is grouped into pairs by a label key: the class
for single-label data, one of the image's labels drawn per epoch for multi-label data (so the two share at least that
label). An unlabelled image is paired with itself (two views: other crop, other caption). Each epoch reads its records
twice (two shuffles) so that the pairs left open at the end never shorten it; it is cut at `steps_per_epoch` batches.

Evaluation: the split in its stored order, the record's crop resized to the size (no randomness), the first caption or
every caption (one row each); the last partial batch is kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import tensorflow as tf

from t2ictl.data import records
from t2ictl.data.prepare import MANIFEST, load_manifest
from t2ictl.data.vocab import GraphTokenizer, Vocabulary
from t2ictl.errors import UserError

if TYPE_CHECKING:  # recipes sit above data; the pipeline only reads the [data] section it is given
    from t2ictl.recipes import DataConfig

TRAIN_SCALE = 76 / 64  # images are resized to this much of the size before the random crop
KEY_BUCKETS = 2**62
PASSES_PER_EPOCH = 2


def _plain(fn):
    """`fn` for tf.data as written: its branches test Python values only, so AutoGraph's rewriting of it (seconds at
    the start of every run) would buy nothing."""
    return tf.autograph.experimental.do_not_convert(fn)


def steps_per_epoch(manifest: dict, config: DataConfig, paired: bool) -> int:
    examples = manifest["splits"]["train"]["examples"]
    per_step = config.batch_size * (2 if paired else 1)
    if examples < per_step:
        raise UserError(f"the training split has {examples} images, fewer than one step needs ({per_step}: "
                        f"data.batch_size = {config.batch_size}{' per branch' if paired else ''}); lower "
                        "data.batch_size")
    return examples // per_step


def shard_paths(data_dir: Path, split: str) -> tuple[list[str], dict]:
    manifest = load_manifest(data_dir)
    if split not in manifest["splits"]:
        raise UserError(f"{Path(data_dir) / MANIFEST} has no split {split!r} (it has {sorted(manifest['splits'])})")
    paths = [str(Path(data_dir) / shard["file"]) for shard in manifest["splits"][split]["shards"]]
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise UserError(f"shard {missing[0]} is missing; run `t2ictl prepare --check` on {data_dir}")
    return paths, manifest


# -- per-example transforms ------------------------------------------------------------------------------------------


def _parse(serialized, num_classes: int) -> dict:
    example = records.parse_example(serialized)
    labels = tf.reduce_sum(tf.one_hot(example["label_ids"], num_classes), axis=0)
    return {
        "image_bytes": example["image"],
        "crop": tf.cast(example["crop"], tf.int32),
        "captions": example["captions"],
        "caption_count": tf.shape(example["captions"])[0],
        "labels": tf.minimum(labels, 1.0),
        "label_ids": tf.cast(example["label_ids"], tf.int32),
        "class_id": tf.cast(example["class_id"], tf.int32),
        "example_id": example["example_id"],
        "example_key": tf.strings.to_hash_bucket_fast(example["example_id"], KEY_BUCKETS),
    }


def _cropped(example: dict) -> tf.Tensor:
    image = tf.io.decode_image(example["image_bytes"], channels=3, expand_animations=False)
    y, x, h, w = tf.unstack(example["crop"])
    return tf.image.crop_to_bounding_box(image, y, x, h, w)


def _to_unit(image) -> tf.Tensor:
    return tf.cast(image, tf.float32) / 127.5 - 1.0


def _resize(image, size: int) -> tf.Tensor:
    return tf.image.resize(image, [size, size], method="bilinear", antialias=True)


def _box_at(example: dict, size: int) -> tf.Tensor:
    """The record's crop box resized to size x size, in [-1, 1]."""
    return _to_unit(_resize(tf.cast(_cropped(example), tf.float32), size))


def _with_sizes(row: dict, image, config: DataConfig) -> dict:
    row["image"] = tf.clip_by_value(image, -1.0, 1.0)
    for size in config.extra_sizes:
        row[f"image_{size}"] = tf.clip_by_value(_resize(image, size), -1.0, 1.0)
    return row


def _train_row(example: dict, seed, config: DataConfig) -> dict:
    """Random crop/flip and one random caption; `seed` is a [2] int64 stateless seed unique to this element."""
    seeds = tf.random.experimental.stateless_split(seed, 3)
    if config.random_crop:
        image = _box_at(example, int(round(config.image_size * TRAIN_SCALE)))
        image = tf.image.stateless_random_crop(image, [config.image_size, config.image_size, 3], seeds[0])
    else:
        image = _box_at(example, config.image_size)
    if config.random_flip:
        image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    pick = tf.random.stateless_uniform([], seeds[2], 0, example["caption_count"], dtype=tf.int32)
    row = {"caption": example["captions"][pick], "labels": example["labels"], "class_id": example["class_id"],
           "example_key": example["example_key"]}
    return _with_sizes(row, image, config)


def _eval_row(example: dict, caption, config: DataConfig) -> dict:
    image = _box_at(example, config.image_size)
    row = {"caption": caption, "labels": example["labels"], "class_id": example["class_id"],
           "example_key": example["example_key"], "example_id": example["example_id"]}
    return _with_sizes(row, image, config)


def _tokenized(batch: dict, tokenizer: GraphTokenizer, keep_caption: bool) -> dict:
    batch = dict(batch)
    batch["tokens"], batch["lengths"] = tokenizer.ids(batch["caption"])
    if not keep_caption:
        del batch["caption"]
    return batch


# -- training ---------------------------------------------------------------------------------------------------------


def _element_seed(seed: int, epoch, index) -> tf.Tensor:
    return tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64), tf.cast(index, tf.int64)])


def _epoch_records(paths: list[str], seed: int, epoch, config: DataConfig, num_classes: int) -> tf.data.Dataset:
    """The parsed records of one epoch, shuffled by (seed, epoch), read PASSES_PER_EPOCH times."""
    passes = []
    for read in range(PASSES_PER_EPOCH):
        pass_seed = _element_seed(seed, epoch, 1_000_000_000 + read)
        order = tf.argsort(tf.random.stateless_uniform([len(paths)], pass_seed))
        files = tf.data.Dataset.from_tensor_slices(tf.gather(tf.constant(paths), order))
        data = files.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(paths)),
                                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        passes.append(_block_shuffle(data, config.shuffle_buffer, pass_seed))
    data = passes[0]
    for more in passes[1:]:
        data = data.concatenate(more)
    return data.map(_plain(lambda s: _parse(s, num_classes)), num_parallel_calls=tf.data.AUTOTUNE)


def _block_shuffle(data: tf.data.Dataset, block: int, seed) -> tf.data.Dataset:
    """Elements permuted within consecutive blocks of `block`, by a stateless function of `seed` and the block index.

    Dataset.shuffle would need a Python seed (a tensor seed is not accepted once a global seed is set), and the seed
    here depends on the epoch, which is a tensor inside the endless epoch stream.
    """
    def permute(index, elements):
        order = tf.argsort(tf.random.stateless_uniform([tf.shape(elements)[0]], seed + [0, index * 7919]))
        return tf.gather(elements, order)

    return data.batch(block).enumerate().map(_plain(permute)).unbatch()


def _pair_key(example: dict, seed) -> tf.Tensor:
    """Which label this example is paired on: -1 when it has none (it then pairs with its own copy)."""
    count = tf.shape(example["label_ids"])[0]
    pick = tf.random.stateless_uniform([], seed, 0, tf.maximum(count, 1), dtype=tf.int32)
    return tf.cond(count > 0, lambda: tf.cast(example["label_ids"][pick], tf.int64), lambda: tf.constant(-1, tf.int64))


def _paired(data: tf.data.Dataset, seed: int, epoch) -> tf.data.Dataset:
    """Pairs {"a", "b"} of consecutive same-key examples of the stream."""
    def keyed(index, example):
        example = dict(example, pair_key=_pair_key(example, _element_seed(seed, epoch, -1 - index)))
        del example["label_ids"]  # varies in length; the multi-hot "labels" carries the same
        return example

    data = data.enumerate().map(_plain(keyed))
    # an unlabelled example is emitted twice in a row, so its key (-1) window closes on the two copies
    data = data.flat_map(_plain(lambda e: tf.data.Dataset.from_tensors(e).repeat(
        tf.where(e["pair_key"] < 0, tf.constant(2, tf.int64), 1))))
    data = data.group_by_window(key_func=_plain(lambda e: e["pair_key"]),
                                reduce_func=_plain(lambda _, window: window.padded_batch(2)), window_size=2)
    data = data.filter(_plain(lambda w: tf.shape(w["pair_key"])[0] == 2))
    return data.map(_plain(lambda w: {"a": {k: v[0] for k, v in w.items()}, "b": {k: v[1] for k, v in w.items()}}))


def train_dataset(data_dir: Path, config: DataConfig, vocab: Vocabulary, *, paired: bool, seed: int,
                  input_context: tf.distribute.InputContext | None = None, start_step: int = 0) -> tf.data.Dataset:
    """The endless training stream from global step `start_step` on, for one input pipeline.

    Yields per-replica batches (the global data.batch_size split over replicas): dicts of image [B,S,S,3] in [-1, 1],
    image_{s} for data.extra_sizes, tokens [B,T] int32, lengths [B], labels [B,C] multi-hot, class_id [B] (-1: none or
    multi-label), example_key [B] int64; in paired mode {"a": batch, "b": batch} with shared labels row by row.
    """
    paths, manifest = shard_paths(data_dir, "train")
    num_classes = len(manifest["classes"])
    steps = steps_per_epoch(manifest, config, paired)
    batch = input_context.get_per_replica_batch_size(config.batch_size) if input_context else config.batch_size
    pipelines, pipeline_id = 1, 0
    if input_context is not None:
        pipelines, pipeline_id = input_context.num_input_pipelines, input_context.input_pipeline_id
    share = config.batch_size // pipelines  # this pipeline's consecutive elements of each global batch
    per_epoch = steps * config.batch_size  # elements (pairs in paired mode) of the global stream per epoch
    tokenizer = GraphTokenizer(vocab, config.max_words)
    first_epoch, skip = divmod(start_step, steps)

    def epoch_stream(epoch):
        data = _epoch_records(paths, seed, epoch, config, num_classes)
        if paired:
            data = _paired(data, seed, epoch)
        data = data.take(per_epoch)
        consumed = tf.where(epoch == first_epoch, tf.constant(skip * config.batch_size, tf.int64), 0)
        data = data.skip(consumed).enumerate(start=consumed)
        if pipelines > 1:  # every worker reads the global stream and decodes only its share of each batch
            data = data.filter(_plain(lambda i, _: (i // share) % pipelines == pipeline_id))
        if paired:
            return data.map(_plain(lambda i, pair: {
                "a": _train_row(pair["a"], _element_seed(seed, epoch, 2 * i), config),
                "b": _train_row(pair["b"], _element_seed(seed, epoch, 2 * i + 1), config)}),
                num_parallel_calls=tf.data.AUTOTUNE)
        return data.map(_plain(lambda i, example: _train_row(example, _element_seed(seed, epoch, i), config)),
                        num_parallel_calls=tf.data.AUTOTUNE)

    data = tf.data.Dataset.counter(first_epoch).flat_map(_plain(epoch_stream))
    data = data.batch(batch, drop_remainder=True)
    if paired:
        data = data.map(_plain(lambda p: {"a": _tokenized(p["a"], tokenizer, False),
                                          "b": _tokenized(p["b"], tokenizer, False)}),
                        num_parallel_calls=tf.data.AUTOTUNE)
    else:
        data = data.map(_plain(lambda b: _tokenized(b, tokenizer, False)), num_parallel_calls=tf.data.AUTOTUNE)
    return data.prefetch(tf.data.AUTOTUNE)


# -- evaluation -------------------------------------------------------------------------------------------------------


def eval_dataset(data_dir: Path, config: DataConfig, vocab: Vocabulary, split: str = "test",
                 batch_size: int | None = None, caption: str = "first") -> tf.data.Dataset:
    """The split in stored order, deterministic: rows of image, caption, tokens, labels, class_id, example_id/key.

    caption="first" gives one row per image with its first caption; "all" one row per (image, caption).
    """
    if caption not in ("first", "all"):
        raise ValueError(f"caption must be 'first' or 'all', got {caption!r}")
    paths, manifest = shard_paths(data_dir, split)
    num_classes = len(manifest["classes"])
    tokenizer = GraphTokenizer(vocab, config.max_words)
    data = tf.data.TFRecordDataset(paths).map(_plain(lambda s: _parse(s, num_classes)),
                                              num_parallel_calls=tf.data.AUTOTUNE)
    if caption == "first":
        data = data.map(_plain(lambda e: _eval_row(e, e["captions"][0], config)),
                        num_parallel_calls=tf.data.AUTOTUNE)
    else:
        data = data.flat_map(_plain(lambda e: tf.data.Dataset.from_tensor_slices(e["captions"]).map(
            _plain(lambda c: _eval_row(e, c, config)))))
    data = data.batch(batch_size or config.batch_size)
    data = data.map(_plain(lambda b: _tokenized(b, tokenizer, True)), num_parallel_calls=tf.data.AUTOTUNE)
    return data.prefetch(2)


def split_images(data_dir: Path, split: str, size: int, batch_size: int) -> tf.data.Dataset:
    """The split's images as the generator is trained on them (cropped, resized to `size`), as uint8 batches."""
    paths, manifest = shard_paths(data_dir, split)
    num_classes = len(manifest["classes"])

    def pixels(serialized):
        image = _resize(tf.cast(_cropped(_parse(serialized, num_classes)), tf.float32), size)
        return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)

    data = tf.data.TFRecordDataset(paths).map(_plain(pixels), num_parallel_calls=tf.data.AUTOTUNE)
    return data.batch(batch_size).prefetch(2)


def split_captions(data_dir: Path, split: str, max_images: int | None = None) -> list[str]:
    """Every caption of the split's images (the first max_images of them, if given), in stored order."""
    paths, _ = shard_paths(data_dir, split)
    captions = tf.data.TFRecordDataset(paths).take(-1 if max_images is None else max_images)
    captions = captions.map(_plain(lambda s: records.parse_example(s)["captions"]))
    return [c.decode("utf-8") for batch in captions.as_numpy_iterator() for c in batch]
