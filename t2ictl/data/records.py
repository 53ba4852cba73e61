"""The one TFRecord schema of prepared data.

Each record is one image with all its captions:
  example_id   bytes      stable id within the dataset
  image        bytes      the encoded image as the source has it (JPEG or PNG), not re-encoded
  height/width int64      size of the stored image
  crop         int64[4]   y, x, h, w of the region models see (CUB: the bounding-box crop), the whole image otherwise
  captions     bytes[]    every caption of the image
  label_ids    int64[]    class indices into manifest["classes"]; empty for an image with no label
  class_id     int64      the single class for single-label datasets, -1 for multi-label ones
"""

from __future__ import annotations

SCHEMA_VERSION = 1


def _bytes(values):
    import tensorflow as tf

    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _ints(values):
    import tensorflow as tf

    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def encode_example(example_id: str, image: bytes, height: int, width: int, crop: tuple[int, int, int, int],
                   captions: tuple[str, ...], label_ids: tuple[int, ...], multi_label: bool) -> bytes:
    import tensorflow as tf

    class_id = -1 if multi_label or len(label_ids) != 1 else label_ids[0]
    features = {
        "example_id": _bytes([example_id.encode()]),
        "image": _bytes([image]),
        "height": _ints([height]),
        "width": _ints([width]),
        "crop": _ints(crop),
        "captions": _bytes(c.encode("utf-8") for c in captions),
        "label_ids": _ints(label_ids),
        "class_id": _ints([class_id]),
    }
    # deterministic: the feature map in key order, so the same example always gives the same bytes (and checksums)
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(deterministic=True)


def feature_spec() -> dict:
    import tensorflow as tf

    return {
        "example_id": tf.io.FixedLenFeature([], tf.string),
        "image": tf.io.FixedLenFeature([], tf.string),
        "height": tf.io.FixedLenFeature([], tf.int64),
        "width": tf.io.FixedLenFeature([], tf.int64),
        "crop": tf.io.FixedLenFeature([4], tf.int64),
        "captions": tf.io.VarLenFeature(tf.string),
        "label_ids": tf.io.VarLenFeature(tf.int64),
        "class_id": tf.io.FixedLenFeature([], tf.int64),
    }


def parse_example(serialized):
    """Parse one serialized record into dense tensors (captions and label_ids as 1-D tensors)."""
    import tensorflow as tf

    parsed = tf.io.parse_single_example(serialized, feature_spec())
    parsed["captions"] = tf.sparse.to_dense(parsed["captions"])
    parsed["label_ids"] = tf.sparse.to_dense(parsed["label_ids"])
    return parsed


def decode_python(serialized: bytes) -> dict:
    """Parse a record in plain Python (for checks and tests)."""
    import tensorflow as tf

    example = tf.train.Example.FromString(serialized)
    feature = example.features.feature
    return {
        "example_id": feature["example_id"].bytes_list.value[0].decode(),
        "image": feature["image"].bytes_list.value[0],
        "height": feature["height"].int64_list.value[0],
        "width": feature["width"].int64_list.value[0],
        "crop": tuple(feature["crop"].int64_list.value),
        "captions": [c.decode("utf-8") for c in feature["captions"].bytes_list.value],
        "label_ids": list(feature["label_ids"].int64_list.value),
        "class_id": feature["class_id"].int64_list.value[0],
    }
