"""The embedded shapes dataset: determinism, classes and captions, and the pixel reader used for consistency."""

import numpy as np
import pytest
import tensorflow as tf

from t2ictl.data.sources import open_source, shapes
from t2ictl.errors import UserError
from t2ictl.evaluation import consistency


def test_same_seed_same_dataset_other_seed_other_dataset():
    first = open_source("shapes", [], count=30, seed=3, image_size=32).splits()
    again = open_source("shapes", [], count=30, seed=3, image_size=32).splits()
    other = open_source("shapes", [], count=30, seed=4, image_size=32).splits()
    for a, b in zip(first["train"], again["train"]):
        assert (a.example_id, a.captions, a.label_ids) == (b.example_id, b.captions, b.label_ids)
        assert a.load_image() == b.load_image()
    assert [r.load_image() for r in first["train"][:5]] != [r.load_image() for r in other["train"][:5]]


def test_split_is_80_20_and_disjoint():
    splits = open_source("shapes", [], count=50, seed=0, image_size=32).splits()
    train, test = {r.example_id for r in splits["train"]}, {r.example_id for r in splits["test"]}
    assert (len(train), len(test)) == (40, 10) and not train & test


def test_single_object_labels_and_captions_agree():
    source = open_source("shapes", [], count=60, seed=1, image_size=32)
    assert len(source.classes()) == 20 and not source.multi_label
    for ref in source.splits()["train"]:
        assert len(ref.captions) == 10 and len(set(ref.captions)) > 5  # varied wording
        (label,) = ref.label_ids
        colour, shape = source.classes()[label].split()
        for caption in ref.captions:
            assert consistency.parse_caption(caption) == {"shape": shape, "colour": colour}, caption


def test_multi_object_labels_are_the_named_objects():
    source = open_source("shapes-multi", [], count=60, seed=1, image_size=32)
    assert source.multi_label and source.name == "shapes-multi"
    counts = set()
    for ref in source.splits()["train"]:
        named = {f"{c} {s}" for c in shapes.COLOURS for s in shapes.SHAPES
                 if any(f"{c} {w}" in ref.captions[0] for w in shapes.SHAPE_WORDS[s])}
        assert {source.classes()[i] for i in ref.label_ids} == named, ref.captions[0]
        counts.add(ref.captions[0].count(" and ") + ref.captions[0].count(", ") + 1)
    assert counts == set(range(1, shapes.MULTI_GEOMETRY.slots + 1))


def decoded(ref) -> np.ndarray:
    return tf.io.decode_png(ref.load_image()).numpy()


@pytest.mark.parametrize("size", [32, 64])
def test_the_pixel_reader_reads_the_drawn_shape_and_colour(size):
    refs = open_source("shapes", [], count=200, seed=2, image_size=size).splits()["train"]
    hits = 0
    for ref in refs:
        image = decoded(ref)
        assert image.shape == (size, size, 3)
        hits += consistency.analyze(image) == consistency.parse_caption(ref.captions[0])
    assert hits / len(refs) >= (0.99 if size == 64 else 0.93)


def test_the_pixel_reader_tells_a_blank_image():
    assert consistency.analyze(np.full((32, 32, 3), 128, np.uint8)) == {"shape": None, "colour": None}


def test_a_wrong_colour_or_shape_is_read_as_such():
    rng = np.random.default_rng(0)
    image = shapes.render([{"shape": "triangle", "colour": "blue", "cx": 0.5, "cy": 0.5, "radius": 0.3}],
                          "white", 64, rng)
    assert consistency.analyze(image) == {"shape": "triangle", "colour": "blue"}
    image = shapes.render([{"shape": "circle", "colour": "yellow", "cx": 0.3, "cy": 0.5, "radius": 0.2}],
                          "black", 64, rng)
    assert consistency.analyze(image) == {"shape": "circle", "colour": "yellow"}


def test_shapes_takes_no_source(tmp_path):
    with pytest.raises(UserError, match="no --source"):
        open_source("shapes", [tmp_path])


@pytest.mark.parametrize("size, floor", [(32, 0.97), (64, 0.99)])
def test_the_multi_object_reader_reads_every_object_left_to_right(size, floor):
    refs = open_source("shapes-multi", [], count=150, seed=2, image_size=size).splits()["train"]
    captions = [ref.captions[0] for ref in refs]
    figures = consistency.multi_agreement(captions, np.stack([decoded(ref) for ref in refs]))
    assert figures["count_accuracy"] >= 0.98  # at 32 px two neighbours touch now and then
    assert figures["object_accuracy"] >= floor


def two_objects() -> np.ndarray:
    objects = [{"shape": "square", "colour": "red", "cx": 0.2, "cy": 0.5, "radius": 0.14},
               {"shape": "triangle", "colour": "blue", "cx": 0.75, "cy": 0.5, "radius": 0.14}]
    return shapes.render(objects, "white", 64, np.random.default_rng(0))


@pytest.mark.parametrize("caption, right, total, count_right", [
    ("a red square and a blue triangle", 2, 2, True),
    ("a blue triangle and a red square", 0, 2, True),  # the order is the caption's
    ("a red square, a blue triangle and a green circle", 2, 3, False),  # a missing object counts wrong
    ("a red box", 1, 2, False),  # an extra object counts against the caption
    ("a red square and a yellow triangle", 1, 2, True),  # a wrong colour is a wrong object
])
def test_missing_extra_and_wrong_objects_count_against_the_caption(caption, right, total, count_right):
    figures = consistency.multi_agreement([caption], two_objects()[None])
    assert figures["object_accuracy"] == pytest.approx(right / total)
    assert figures["count_accuracy"] == float(count_right)
    assert figures["caption_accuracy"] == float(count_right and right == total)


def test_captions_name_the_attributes_the_example_has():
    for seed in range(40):
        rng = np.random.default_rng(seed)
        _, attributes = shapes.single_object(rng)
        for caption in shapes.single_captions(attributes, rng):
            asked = consistency.asked_attributes(caption, multi_object=False)
            assert {"shape", "colour"} <= set(asked), caption
            assert all(attributes[key] == value for key, value in asked.items()), caption
        objects, multi = shapes.multi_object(rng)
        for caption in shapes.multi_captions(objects, multi["background"], rng):
            asked = consistency.asked_attributes(caption, multi_object=True)
            assert asked["objects"] == [(o["colour"], o["shape"]) for o in objects], caption
            assert asked.get("background", multi["background"]) == multi["background"], caption


def test_fixed_attributes_are_kept_and_the_rest_drawn_as_the_data_draws_them():
    free = [shapes.single_object(np.random.default_rng(s))[1] for s in range(30)]
    assert free == [shapes.single_object(np.random.default_rng(s), fixed={})[1] for s in range(30)]
    fixed = {"shape": "diamond", "colour": "green", "position": "right"}
    kept = [shapes.single_object(np.random.default_rng(s), fixed=fixed)[1] for s in range(30)]
    assert all(a.items() >= fixed.items() for a in kept)
    assert {a["background"] for a in kept} == set(shapes.BACKGROUNDS) and {a["size"] for a in kept} == {"small",
                                                                                                          "large"}
    fixed = {"objects": [("red", "circle"), ("blue", "square")], "background": "grey"}
    objects, attributes = shapes.multi_object(np.random.default_rng(0), fixed=fixed)
    assert [(o["colour"], o["shape"]) for o in objects] == fixed["objects"]
    assert attributes == {"background": "grey"} and objects[0]["cx"] < objects[1]["cx"]


def test_more_named_objects_than_the_layout_holds_is_a_user_error():
    with pytest.raises(UserError, match="names 3 objects.*prepare shapes-multi --overwrite"):
        shapes.multi_object(np.random.default_rng(0), fixed={"objects": [("red", "circle")] * 3})
