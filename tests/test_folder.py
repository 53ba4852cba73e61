"""`t2ictl prepare folder`: the user's own images and captions in the layouts it reads (name.txt beside each image,
captions.jsonl, captions.csv), labels from folders or the file, the seeded split rules, greyscale and CMYK JPEGs.
The whole pipeline on a folder of real images is in test_real_data.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import manifest_of
from typer.testing import CliRunner

from t2ictl.cli import app
from t2ictl.data import records
from t2ictl.data.prepare import PrepareOptions, Preparer
from t2ictl.data.sources import open_source
from t2ictl.errors import UserError

IMAGES = Path(__file__).parent / "images"


def png(value: int, size: int = 8) -> bytes:
    return tf.io.encode_png(tf.fill([size, size, 3], tf.constant(value, tf.uint8))).numpy()


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data, encoding="utf-8")
    return path


def class_folders(root: Path, classes: int = 4, per_class: int = 5) -> Path:
    """root/<class>/<i>.png with <i>.txt of two captions beside it."""
    for c in range(classes):
        for i in range(per_class):
            write(root / f"class{c}" / f"{i}.png", png(40 * c + i))
            write(root / f"class{c}" / f"{i}.txt", f"a picture of class {c} number {i}\n\nanother caption {i}\n")
    return root


def prepared(source, out: Path) -> dict:
    return Preparer(source, out, PrepareOptions(shard_size=64)).run()


def read_records(out: Path, split: str) -> list[dict]:
    manifest = manifest_of(out)
    return [records.decode_python(r) for shard in manifest["splits"][split]["shards"]
            for r in tf.data.TFRecordDataset(str(out / shard["file"])).as_numpy_iterator()]


def test_text_files_beside_images_with_class_folders_and_a_seeded_image_split(tmp_path):
    root = class_folders(tmp_path / "mine")
    source = open_source("folder", [root], test_fraction=0.25, seed=3)
    manifest = prepared(source, tmp_path / "out")
    assert manifest["classes"] == ["class0", "class1", "class2", "class3"] and not manifest["multi_label"]
    assert (manifest["splits"]["train"]["examples"], manifest["splits"]["test"]["examples"]) == (15, 5)
    assert manifest["splits"]["train"]["captions"] == 30 and manifest["empty_captions_dropped"] == 20
    assert manifest["source"]["labels"] == "folders" and "seed 3" in manifest["source"]["split"]
    for record in read_records(tmp_path / "out", "train"):
        assert record["label_ids"] == [int(record["example_id"][5])]  # class<c>/<i>.png
        assert record["captions"][0].startswith(f"a picture of class {record['example_id'][5]}")
    test_ids = lambda **kw: [r.example_id for r in open_source("folder", [root], **kw).splits()["test"]]  # noqa: E731
    assert test_ids(test_fraction=0.25, seed=3) == test_ids(test_fraction=0.25, seed=3)
    assert test_ids(test_fraction=0.25, seed=3) != test_ids(test_fraction=0.25, seed=4)


def test_a_class_split_keeps_the_classes_apart(tmp_path):
    root = class_folders(tmp_path / "mine")
    splits = open_source("folder", [root], test_fraction=0.25, split_by="class", seed=1).splits()
    train = {ref.label_ids for ref in splits["train"]}
    test = {ref.label_ids for ref in splits["test"]}
    assert len(test) == 1 and len(train) == 3 and not train & test
    assert len(splits["test"]) == 5


def test_captions_jsonl_with_label_lists_is_multi_label_and_absent_images_are_counted(tmp_path):
    root = tmp_path / "mine"
    lines = []
    for i in range(6):
        write(root / "pictures" / f"{i}.png", png(30 * i))
        lines.append({"image": f"pictures/{i}.png", "caption": f"picture {i}", "labels": ["cat", "dog"][: 1 + i % 2]})
    lines.append({"image": "pictures/0.png", "captions": ["the first picture again"]})
    lines.append({"image": "pictures/missing.png", "caption": "not there"})
    write(root / "captions.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n")
    source = open_source("folder", [root], test_fraction=0.0)
    manifest = prepared(source, tmp_path / "out")
    assert manifest["multi_label"] and manifest["classes"] == ["cat", "dog"]
    assert manifest["splits"]["train"]["examples"] == 6 and manifest["splits"]["train"]["captions"] == 7
    assert any("1 images named in captions.jsonl are not in" in note for note in manifest["notes"])
    by_id = {r["example_id"]: r for r in read_records(tmp_path / "out", "train")}
    assert by_id["pictures/0.png"]["captions"] == ["picture 0", "the first picture again"]
    assert by_id["pictures/1.png"]["label_ids"] == [0, 1] and by_id["pictures/1.png"]["class_id"] == -1


def test_captions_csv_with_a_split_column_and_labels_separated_by_bars(tmp_path):
    root = tmp_path / "mine"
    rows = ["image,caption,labels,split"]
    for i in range(8):
        write(root / f"{i}.png", png(20 * i))
        rows.append(f'{i}.png,"a photo, number {i}",{"red|round" if i % 2 else "blue"},{"test" if i < 2 else "train"}')
    write(root / "captions.csv", "\n".join(rows) + "\n")
    manifest = prepared(open_source("folder", [root]), tmp_path / "out")
    assert manifest["source"]["split"] == "as given by the captions file's split column"
    assert (manifest["splits"]["train"]["examples"], manifest["splits"]["test"]["examples"]) == (6, 2)
    assert manifest["classes"] == ["blue", "red", "round"] and manifest["multi_label"]
    first = read_records(tmp_path / "out", "test")[0]
    assert first["captions"] == ["a photo, number 0"] and first["label_ids"] == [0]


def test_train_and_test_folders_give_the_split_and_classes_below_them_the_labels(tmp_path):
    root = tmp_path / "mine"
    for split, count in (("train", 4), ("test", 2)):
        class_folders(root / split, classes=2, per_class=count)
    manifest = prepared(open_source("folder", [root]), tmp_path / "out")
    assert manifest["classes"] == ["class0", "class1"]
    assert (manifest["splits"]["train"]["examples"], manifest["splits"]["test"]["examples"]) == (8, 4)


def test_greyscale_and_cmyk_jpegs_become_rgb_and_unlabelled_data_says_what_its_positives_are(tmp_path):
    root = tmp_path / "mine"
    for name in ("cmyk-red.jpg", "grey.jpg"):
        write(root / name, (IMAGES / name).read_bytes())
        write(root / name.replace(".jpg", ".txt"), f"the {name} picture\n")
    manifest = prepared(open_source("folder", [root], test_fraction=0.0), tmp_path / "out")
    assert manifest["classes"] == [] and manifest["splits"]["train"]["unlabelled"] == 2
    assert any("only each image's own caption pairs" in note for note in manifest["notes"])
    decoded = {r["example_id"]: tf.io.decode_image(r["image"], channels=3).numpy()
               for r in read_records(tmp_path / "out", "train")}
    red, grey = decoded["cmyk-red.jpg"], decoded["grey.jpg"]
    assert red.shape == (24, 40, 3) and grey.shape == (40, 24, 3)
    assert np.abs(red.reshape(-1, 3).mean(0) - [255, 0, 0]).max() < 8
    assert np.abs(grey.astype(int) - 200).max() <= 2


@pytest.mark.parametrize("layout, message", [
    ({"captions.jsonl": "{\"image\": \"a.png\"}\n"}, "captions.jsonl:1: each line needs \"image\" and \"caption\""),
    ({"captions.jsonl": "not json\n"}, "captions.jsonl:1: not a JSON object"),
    ({"captions.csv": "path,text\n"}, "the header row needs the columns image and caption"),
    ({"captions.csv": "image,caption,split\na.png,x,val\n"}, "captions.csv:2: split must be train or test"),
    ({"captions.csv": "image,caption\n../a.png,x\n"}, "is outside"),
    ({"notes.md": "nothing"}, "holds no images"),
])
def test_malformed_layouts_are_one_clear_error(tmp_path, layout, message):
    write(tmp_path / "mine" / "a.png", png(9))
    write(tmp_path / "a.png", png(9))
    for name, text in layout.items():
        write(tmp_path / "mine" / name, text)
    if "notes.md" in layout:
        (tmp_path / "mine" / "a.png").unlink()
    with pytest.raises(UserError, match=message):
        open_source("folder", [tmp_path / "mine"])


def test_the_cli_prepares_a_folder_and_refuses_options_of_other_datasets(tmp_path):
    root = class_folders(tmp_path / "mine")
    result = CliRunner().invoke(app, ["prepare", "folder", "--source", str(root), "--out", str(tmp_path / "out"),
                                      "--split-by", "class", "--test-fraction", "0.5", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "class-disjoint: 2 of 4 classes" in result.output
    for args, message in ((["prepare", "cub", "--labels", "none"], "apply to folder only"),
                          (["prepare", "folder", "--labels", "file", "--source", str(root)],
                           "no captions file with a label"),
                          (["prepare", "folder"], "pass its folder as the one --source DIR")):
        failed = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "other")])
        assert isinstance(failed.exception, UserError) and message in str(failed.exception), failed.output
    as_a_user_meets_it = subprocess.run([sys.executable, "-m", "t2ictl", "prepare", "folder", "--out",
                                         str(tmp_path / "other")], capture_output=True, text=True, timeout=300)
    assert as_a_user_meets_it.returncode != 0 and as_a_user_meets_it.stdout == ""
    assert as_a_user_meets_it.stderr.strip().count("\n") == 0 and "one --source DIR" in as_a_user_meets_it.stderr


def test_training_says_what_the_positives_are_when_labels_are_missing():
    from t2ictl import recipes
    from t2ictl.training.branches import positives_note

    recipe = recipes.load_recipe("folder", [])
    split = {"examples": 10, "labelled": 0, "unlabelled": 10}
    assert "no labels" in positives_note({"splits": {"train": split}}, recipe)
    assert "4 of 10 training images have no label" in positives_note(
        {"splits": {"train": {**split, "labelled": 6, "unlabelled": 4}}}, recipe)
    assert positives_note({"splits": {"train": {**split, "labelled": 10, "unlabelled": 0}}}, recipe) is None
    plain = recipes.load_recipe("folder", ["contrastive.enabled=false"])
    assert positives_note({"splits": {"train": split}}, plain) is None


def test_a_captions_file_may_name_linked_images_but_not_paths_that_climb_out(tmp_path):
    elsewhere = write(tmp_path / "store" / "real.png", png(90))
    root = tmp_path / "mine"
    root.mkdir()
    (root / "linked.png").symlink_to(elsewhere)
    write(root / "captions.csv", "image,caption\nlinked.png,a linked picture\n")
    refs = open_source("folder", [root], test_fraction=0.0).splits()["train"]
    assert [ref.example_id for ref in refs] == ["linked.png"] and refs[0].load_image() == elsewhere.read_bytes()
    write(root / "captions.csv", "image,caption\nsub/../../store/real.png,climbs out\n")
    with pytest.raises(UserError, match="is outside"):
        open_source("folder", [root])


def test_a_small_dataset_keeps_both_splits_whatever_the_fraction_rounds_to(tmp_path):
    root = class_folders(tmp_path / "mine", classes=3, per_class=2)
    by_class = open_source("folder", [root], test_fraction=0.1, split_by="class").splits()
    assert len({ref.label_ids for ref in by_class["test"]}) == 1 and len(by_class["train"]) == 4
    by_image = open_source("folder", [root], test_fraction=0.05).splits()
    assert (len(by_image["train"]), len(by_image["test"])) == (5, 1)
    assert len(open_source("folder", [root], test_fraction=0.99).splits()["train"]) == 1
    assert open_source("folder", [root], test_fraction=0.0).splits()["test"] == []
