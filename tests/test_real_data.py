"""Real data made by others (../shared/data, read only; skipped when absent): the CUB and COCO 2017 subsets prepared
as they are, partial copies of them, and COCO 2014 / 2017 side by side. Expected counts, captions, labels and crops
are read from the release files here, independently of the sources."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import tensorflow as tf

from t2ictl.data import records
from t2ictl.data.prepare import PrepareOptions, Preparer
from t2ictl.data.sources import open_source
from t2ictl.data.vocab import tokenize
from t2ictl.errors import UserError
from t2ictl.evaluation.score import check_real_side, comparability_note

CUB_TEST_CLASS = "004.Groove_billed_Ani"


def prepare(name: str, inputs: list[Path], out: Path, **options) -> dict:
    return Preparer(open_source(name, inputs, **options), out, PrepareOptions(shard_size=128)).run()


def read_records(out: Path, split: str) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    return [records.decode_python(r) for shard in manifest["splits"][split]["shards"]
            for r in tf.data.TFRecordDataset(str(out / shard["file"])).as_numpy_iterator()]


def attngan_crop(box: list[float], height: int, width: int) -> tuple[int, int, int, int]:
    x, y, w, h = box
    r = int(max(w, h) * 0.75)
    cx, cy = int((2 * x + w) / 2), int((2 * y + h) / 2)
    y1, x1 = max(0, cy - r), max(0, cx - r)
    return y1, x1, min(height, cy + r) - y1, min(width, cx + r) - x1


@pytest.fixture(scope="module")
def cub(shared_data) -> Path:
    return shared_data / "cub-mini"


@pytest.fixture(scope="module")
def cub_prepare_output(cub, tmp_path_factory) -> tuple[Path, str]:
    """`t2ictl prepare cub --source .../cub-mini` into a temporary folder: (the folder, what the command printed)."""
    from typer.testing import CliRunner

    from t2ictl.cli import app

    out = tmp_path_factory.mktemp("cub-mini") / "prepared"
    result = CliRunner().invoke(app, ["prepare", "cub", "--source", str(cub), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.fixture(scope="module")
def cub_prepared(cub_prepare_output) -> Path:
    return cub_prepare_output[0]


def table_rows(printed: str) -> dict[str, list[str]]:
    """The rows of the Rich tables in a command's output, by their first cell."""
    rows = {}
    for line in printed.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│┃").split("│")]
        if len(cells) > 1 and cells[0]:
            rows[cells[0]] = cells[1:]
    return rows


def test_the_prepare_summary_reports_counts_crops_and_notes(cub_prepare_output):
    out, printed = cub_prepare_output
    manifest = json.loads((out / "manifest.json").read_text())
    rows = table_rows(printed)
    for split in ("train", "test"):
        entry = manifest["splits"][split]
        assert rows[split] == [f"{v:,}" for v in (entry["examples"], entry["captions"], entry["labelled"], 0,
                                                entry["cropped"], 1)], printed
    assert rows["train"][0] == "222" and rows["test"][0] == "60"
    assert "crop: AttnGAN: square of half-side" in printed and "skipped images: 0" in printed


def test_cub_mini_prepares_222_train_and_60_test_images_with_every_caption(cub, cub_prepared):
    root = cub / "CUB_200_2011"
    images = dict(line.split() for line in (root / "images.txt").read_text().splitlines())
    captions = {i: [c for c in (cub / "birds" / "text" / p.replace(".jpg", ".txt")).read_text(
        encoding="utf-8").splitlines() if c.strip()] for i, p in images.items()}
    test_ids = {i for i, p in images.items() if p.startswith(CUB_TEST_CLASS)}
    manifest = json.loads((cub_prepared / "manifest.json").read_text())
    train, test = manifest["splits"]["train"], manifest["splits"]["test"]
    assert (train["examples"], test["examples"]) == (222, 60) == (len(images) - len(test_ids), len(test_ids))
    assert train["captions"] == sum(len(captions[i]) for i in images if i not in test_ids) == 2220
    assert test["captions"] == sum(len(captions[i]) for i in test_ids) == 600
    assert manifest["skipped"] == [] and manifest["notes"] == []
    assert len(manifest["classes"]) == 200 and manifest["classes"][3] == CUB_TEST_CLASS
    test_records = read_records(cub_prepared, "test")
    assert {r["class_id"] for r in test_records} == {3}
    assert {r["class_id"] for r in read_records(cub_prepared, "train")} == {0, 1, 2, 4}


def test_cub_crops_follow_the_bounding_boxes_at_the_real_image_sizes(cub, cub_prepared):
    root = cub / "CUB_200_2011"
    boxes = {line.split()[0]: [float(v) for v in line.split()[1:]]
             for line in (root / "bounding_boxes.txt").read_text().splitlines()}
    paths = dict(line.split() for line in (root / "images.txt").read_text().splitlines())
    ids = {p.rsplit(".", 1)[0]: i for i, p in paths.items()}
    sizes, cropped = set(), 0
    for split in ("train", "test"):
        for record in read_records(cub_prepared, split):
            height, width, _ = tf.io.extract_jpeg_shape(record["image"]).numpy()
            assert (record["height"], record["width"]) == (height, width)
            expected = attngan_crop(boxes[ids[record["example_id"]]], height, width)
            assert record["crop"] == expected, record["example_id"]
            sizes.add((height, width))
            cropped += expected != (0, 0, height, width)
    manifest = json.loads((cub_prepared / "manifest.json").read_text())
    assert len(sizes) == 139  # real photographs of 139 sizes
    assert sum(s["cropped"] for s in manifest["splits"].values()) == cropped > 150


def test_the_caption_file_with_replacement_bytes_is_kept_and_tokenizes_to_words(cub, cub_prepared):
    name = "Sooty_Albatross_0029_796357"
    raw = (cub / "birds" / "text" / "003.Sooty_Albatross" / f"{name}.txt").read_text(encoding="utf-8")
    assert "\ufffd" in raw
    record = next(r for r in read_records(cub_prepared, "train") if r["example_id"].endswith(name))
    assert record["captions"] == [line.strip() for line in raw.splitlines() if line.strip()]
    damaged = next(c for c in record["captions"] if "\ufffd" in c)
    assert tokenize(damaged)[:4] == ["this", "bird", "has", "a"]


def partial_cub_copy(cub: Path, folder: Path, classes: list[str]) -> Path:
    """CUB as a partial download leaves it: every metadata file, the images of some classes (links, not copies)."""
    root = folder / "CUB_200_2011"
    (root / "images").mkdir(parents=True)
    for item in (cub / "CUB_200_2011").iterdir():
        if item.name != "images":
            os.symlink(item, root / item.name)
    for name in classes:
        os.symlink(cub / "CUB_200_2011" / "images" / name, root / "images" / name)
    os.symlink(cub / "birds", folder / "birds")
    return folder


def test_a_partial_cub_copy_without_its_test_class_prepares_an_empty_test_split(cub, tmp_path):
    train_classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    source = partial_cub_copy(cub, tmp_path / "partial", train_classes)
    manifest = prepare("cub", [source], tmp_path / "out")
    expected_train = sum(len(list((cub / "CUB_200_2011" / "images" / c).glob("*.jpg"))) for c in train_classes)
    assert manifest["splits"]["train"]["examples"] == expected_train
    assert manifest["splits"]["test"]["examples"] == 0
    notes = " | ".join(manifest["notes"])
    assert f"{282 - expected_train} of the 282 images in images.txt are not under images/" in notes
    assert "the test split is empty" in notes


def test_cub_with_no_image_present_is_one_clear_error(cub, tmp_path):
    source = partial_cub_copy(cub, tmp_path / "partial", [])
    with pytest.raises(UserError, match="none of the images listed in .*images.txt is under"):
        open_source("cub", [source])


# ---------------------------------------------------------------------------------------------------------------------
# COCO


@pytest.fixture(scope="module")
def coco(shared_data) -> Path:
    return shared_data / "coco-mini"


def test_coco_mini_prepares_as_2017_with_its_400_captions_and_multi_hot_labels(coco, tmp_path):
    out = tmp_path / "coco"
    manifest = prepare("coco", [coco], out)
    captions = json.loads((coco / "annotations" / "captions_train2017.json").read_text())
    instances = json.loads((coco / "annotations" / "instances_train2017.json").read_text())
    assert manifest["dataset"] == "coco" and manifest["source"]["release"] == "2017"
    assert manifest["multi_label"] and len(manifest["classes"]) == 80
    assert manifest["splits"]["train"]["examples"] == 80 and manifest["splits"]["train"]["captions"] == 400
    assert manifest["splits"]["test"]["examples"] == 0
    assert "val2014" in manifest["source"]["not_comparable"] and comparability_note(out, None)
    assert any("the test split is empty" in note for note in manifest["notes"])
    category_index = {c["id"]: i for i, c in enumerate(sorted(instances["categories"], key=lambda c: c["id"]))}
    expected = {}
    for ann in instances["annotations"]:
        expected.setdefault(ann["image_id"], set()).add(category_index[ann["category_id"]])
    names = {im["id"]: Path(im["file_name"]).stem for im in captions["images"]}
    by_id = {r["example_id"]: r for r in read_records(out, "train")}
    for image_id, labels in expected.items():
        record = by_id[names[image_id]]
        assert record["label_ids"] == sorted(labels) and record["class_id"] == -1
        assert record["crop"] == (0, 0, record["height"], record["width"])
    assert sum(len(r["captions"]) for r in by_id.values()) == len(captions["annotations"])
    # the empty test split: scoring against it is one clear error, training samples its grids from train captions
    with pytest.raises(UserError, match="the test split of .* is empty"):
        check_real_side(out, "test", None)
    from t2ictl import recipes
    from t2ictl.data.vocab import Vocabulary
    from t2ictl.training.gan import held_out_captions

    recipe = recipes.load_recipe("coco", [f'data.dir="{out}"', "data.image_size=64"])
    shown = held_out_captions(out, recipe, Vocabulary.load(out / "vocab.json"), 3)
    first_captions = {r["captions"][0] for r in by_id.values()}
    assert len(shown) == 3 and set(shown) <= first_captions


def split_coco(coco: Path, folder: Path, release: str, test_count: int, rename=None) -> Path:
    """A COCO release with both sides built from coco-mini: its last `test_count` images become the val side."""
    captions = json.loads((coco / "annotations" / "captions_train2017.json").read_text())
    instances = json.loads((coco / "annotations" / "instances_train2017.json").read_text())
    ids = sorted(im["id"] for im in captions["images"])
    sides = {f"train{release}": set(ids[:-test_count]), f"val{release}": set(ids[-test_count:])}
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    for side, chosen in sides.items():
        (folder / side).mkdir()
        images = []
        for image in captions["images"]:
            if image["id"] in chosen:
                name = rename(side, image["file_name"]) if rename else image["file_name"]
                os.symlink(coco / "train2017" / image["file_name"], folder / side / name)
                images.append({**image, "file_name": name})
        for kind, data in (("captions", captions), ("instances", instances)):
            subset = {**data, "images": images, "annotations": [a for a in data["annotations"]
                                                                 if a["image_id"] in chosen]}
            (folder / "annotations" / f"{kind}_{side}.json").write_text(json.dumps(subset))
    return folder


def test_coco_2017_with_a_val_side_prepares_both_splits_and_2014_stays_the_default(coco, tmp_path):
    both = split_coco(coco, tmp_path / "coco", "2017", test_count=20)
    manifest = prepare("coco", [both], tmp_path / "out-2017")
    assert manifest["source"]["release"] == "2017"
    assert (manifest["splits"]["train"]["examples"], manifest["splits"]["test"]["examples"]) == (60, 20)
    split_coco(coco, both, "2014", test_count=30, rename=lambda side, name: f"COCO_{side}_{name}")
    auto = prepare("coco", [both], tmp_path / "out-auto")
    assert auto["source"]["release"] == "2014" and "not_comparable" not in auto["source"]
    assert (auto["splits"]["train"]["examples"], auto["splits"]["test"]["examples"]) == (50, 30)
    assert read_records(tmp_path / "out-auto", "test")[0]["example_id"].startswith("COCO_val2014_")
    assert comparability_note(tmp_path / "out-auto", None) is None
    chosen = prepare("coco", [both], tmp_path / "out-chosen", release="2017")
    assert chosen["source"]["release"] == "2017" and chosen["splits"]["test"]["examples"] == 20


def test_coco_with_a_val_side_missing_one_file_is_one_clear_error(coco, tmp_path):
    both = split_coco(coco, tmp_path / "coco", "2017", test_count=20)
    (both / "annotations" / "instances_val2017.json").unlink()
    with pytest.raises(UserError, match="cannot find annotations/instances_val2017.json"):
        open_source("coco", [both])
    with pytest.raises(UserError, match="--coco-release 2014: cannot find annotations/captions_train2014.json"):
        open_source("coco", [coco], release="2014")


# ---------------------------------------------------------------------------------------------------------------------
# end to end on real images: prepare -> pretrain (small trunk) -> a short DF-GAN at 64 px -> sample -> export -> score

SHORT_64PX = [
    "data.image_size=64", "data.batch_size=16", "pretrain.image_trunk=small", "pretrain.image_weights=none",
    "pretrain.small_trunk_width=16", "pretrain.text_dim=64", "pretrain.embedding_dim=32", "pretrain.epochs=12",
    "pretrain.eval_examples=100", "pretrain.eval_every=6", "pretrain.checkpoint_every=1000", "pretrain.log_every=6",
    "model.nf=8", "train.epochs=2", "train.log_every=1", "train.checkpoint_every=1000", "train.sample_every=1000",
    "train.sample_captions=4", "runtime.precision=float32",
]


def run_cli(*args: str) -> str:
    from typer.testing import CliRunner

    from t2ictl.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def train_and_score(recipe: str, data: Path, tmp_path: Path, inception: Path, *overrides: str,
                    sample_and_export: bool = True) -> dict:
    """The CLI's train (both phases), sample, export and score on prepared real data (without sample_and_export:
    train and score the run); what each step left behind."""
    from conftest import scalars

    from t2ictl.runs import RunDir

    run, model, grid = tmp_path / "run", tmp_path / "model", tmp_path / "grid.png"
    settings = [*SHORT_64PX, f'data.dir="{data}"', *overrides]
    run_cli("train", "--recipe", recipe, "--run-dir", str(run), *[a for item in settings for a in ("--set", item)])
    scored_model = ["--run", str(run)]
    if sample_and_export:
        run_cli("sample", "this bird is black with a long tail", "a small brown bird", "--run", str(run), "-n", "4",
                "--out", str(grid))
        run_cli("export", "--run", str(run), "--out", str(model))
        scored_model = ["--model", str(model)]
    scored = run_cli("score", *scored_model, "--encoders", str(run), "--data", str(data), "--num", "40",
                     "--batch", "20", "--inception", str(inception), "--cache-dir", str(tmp_path / "cache"),
                     "--json", str(tmp_path / "scores.json"))
    run_dir = RunDir(run)
    return {"run": run_dir, "data": data, "grid": grid, "score_output": scored,
            "scores": {r["metric"]: r for r in json.loads((tmp_path / "scores.json").read_text())["results"]},
            "losses": {tag: scalars(run_dir, tag) for tag in ("g_loss", "d_loss", "supcon")}}


def caption_ranks(run, data: Path, split: str):
    """For every caption of the split, the rank (0: first) of its own image among the split's images, by the
    cosine of the run's pretrained sentence and global image features; and the number of images."""
    import numpy as np

    from t2ictl.data import pipeline
    from t2ictl.runs import load_encoders

    encoders, _ = load_encoders(run.encoders)
    images, sentences, owners = {}, [], []
    for batch in pipeline.eval_dataset(data, run.recipe().data, run.vocab(), split=split, caption="all",
                                       batch_size=50):
        features = encoders.image(batch["image"], training=False)["global"].numpy()
        for example_id, feature in zip(batch["example_id"].numpy(), features):
            images.setdefault(example_id, feature)
        owners.extend(batch["example_id"].numpy())
        sentences.append(encoders.text(batch["tokens"], training=False)["sentence"].numpy())
    keys = list(images)
    image_matrix = np.stack([images[k] for k in keys])
    image_matrix /= np.linalg.norm(image_matrix, axis=1, keepdims=True)
    sentence_matrix = np.concatenate(sentences)
    sentence_matrix /= np.linalg.norm(sentence_matrix, axis=1, keepdims=True)
    similarity = sentence_matrix @ image_matrix.T
    own = np.array([keys.index(k) for k in owners])
    return (similarity > similarity[np.arange(len(own)), own][:, None]).sum(axis=1), len(keys)


def check_the_run(result: dict, examples: int) -> None:
    import numpy as np

    for tag, values in result["losses"].items():
        assert len(values) >= 2 and np.all(np.isfinite(values)), tag
    if result["grid"].exists():
        image = tf.io.decode_png(result["grid"].read_bytes()).numpy()  # two captions, four images each, at 64 px
        assert image.shape[0] > 2 * 64 and image.shape[1] > 4 * 64 and image.std() > 5
    scores = result["scores"]
    assert set(scores) == {"FID", "IS", "R-precision"} and all(row["n"] == 40 for row in scores.values())
    assert np.isfinite(scores["FID"]["value"]) and scores["FID"]["value"] > 0
    assert json.loads((result["data"] / "manifest.json").read_text())["splits"]["test"]["examples"] == examples


def below_chance(ranks, count: int) -> float:
    """How far the mean rank lies below chance ((count - 1) / 2), in standard errors of a uniform rank."""
    import numpy as np

    chance, spread = (count - 1) / 2, np.sqrt((count**2 - 1) / 12) / np.sqrt(len(ranks))
    return float((chance - ranks.mean()) / spread)


@pytest.mark.slow
def test_cub_mini_end_to_end_at_64_px(cub_prepared, tmp_path, tiny_inception):
    """The class-disjoint split holds one unseen species (60 black anis): there, captions hardly tell the images
    apart, so retrieval is checked on the pretraining's own images; held-out retrieval is the next test's."""
    result = train_and_score("cub", cub_prepared, tmp_path, tiny_inception)
    assert result["grid"].exists()
    check_the_run(result, examples=60)
    assert "note:" not in result["score_output"]
    ranks, count = caption_ranks(result["run"], cub_prepared, "train")
    assert count == 222 and below_chance(ranks, count) > 4


@pytest.mark.slow
def test_cub_mini_as_a_users_folder_retrieves_held_out_images_above_chance(cub, tmp_path):
    """cub-mini as a user's own folder (each image beside its caption file, species sub-folders), 20% of the images
    held out by a seeded draw: held-out captions find their own image better than chance."""
    root = tmp_path / "birds"
    for image in sorted((cub / "CUB_200_2011" / "images").glob("*/*.jpg")):
        (root / image.parent.name).mkdir(parents=True, exist_ok=True)
        os.symlink(image, root / image.parent.name / image.name)
        os.symlink(cub / "birds" / "text" / image.parent.name / f"{image.stem}.txt",
                   root / image.parent.name / f"{image.stem}.txt")
    data, run = tmp_path / "prepared", tmp_path / "run"
    run_cli("prepare", "folder", "--source", str(root), "--out", str(data), "--test-fraction", "0.2")
    assert json.loads((data / "manifest.json").read_text())["splits"]["test"]["examples"] == 56
    # pretraining only, at 32 px: the GAN, sampling, export and score on real images at 64 px are the test above's
    settings = [*SHORT_64PX, "data.image_size=32", "pretrain.epochs=20", "pretrain.eval_every=10",
                "pretrain.small_trunk_width=32", "data.random_flip=true"]
    run_cli("pretrain", "--recipe", "folder", "--data", str(data), "--run-dir", str(run),
            *[a for item in settings for a in ("--set", item)])
    from t2ictl.runs import RunDir

    ranks, count = caption_ranks(RunDir(run), data, "test")
    assert below_chance(ranks, count) > 3, (ranks.mean(), count)  # 5.2 here (4.7 at 64 px)


@pytest.mark.slow
def test_coco_mini_end_to_end_at_64_px_with_the_multi_label_rule(coco, tmp_path, tiny_inception):
    source = split_coco(coco, tmp_path / "coco", "2017", test_count=20)
    data = tmp_path / "prepared"
    prepare("coco", [source], data)
    # sampling and export on real data are the CUB test's; here the run itself is scored
    result = train_and_score("coco", data, tmp_path, tiny_inception, "contrastive.multi_label_rule=any",
                             sample_and_export=False)
    check_the_run(result, examples=20)
    assert "val2014" in result["score_output"]  # score repeats that a 2017 test split is not the papers'
    assert all(row.get("note") for row in result["scores"].values())
    ranks, count = caption_ranks(result["run"], data, "train")
    assert count == 60 and below_chance(ranks, count) > 3
