"""Dataset sources, archives and downloads against tiny fixtures in the exact upstream layouts."""

import io
import json
import math
import pathlib
import pickle
import socket
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import tensorflow as tf

from t2ictl.console import progress
from t2ictl.data import records
from t2ictl.data.archives import MARKER, extract
from t2ictl.data.download import BASE_ENV, Remote, fetch
from t2ictl.data.inputs import resolve_inputs
from t2ictl.data.prepare import PrepareOptions, Preparer, check, load_manifest
from t2ictl.data.sources import cub, open_source
from t2ictl.errors import UserError


def jpeg(height: int, width: int, value: int) -> bytes:
    return tf.io.encode_jpeg(np.full((height, width, 3), value, np.uint8)).numpy()


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def tgz(folder: Path, archive: Path) -> Path:
    """`archive` holding `folder` as its one top folder (how the official archives are made)."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder.parent).as_posix())
    return archive


def read_records(out: Path) -> dict[str, list[dict]]:
    manifest = load_manifest(out)
    return {split: [records.decode_python(r) for s in entry["shards"]
                    for r in tf.data.TFRecordDataset(str(out / s["file"])).as_numpy_iterator()]
            for split, entry in manifest["splits"].items()}


# -- CUB ---------------------------------------------------------------------------------------------------------------

CUB_CLASSES = {1: "001.Black_footed_Albatross", 2: "002.Laysan_Albatross", 4: "004.Groove_billed_Ani",
               12: "012.Yellow_headed_Blackbird"}
CUB_TEST = {"004.Groove_billed_Ani", "012.Yellow_headed_Blackbird"}  # in Reed et al.'s 50 test classes
# classes.txt lists the classes with images and every test class (the source checks that all 50 exist)
CUB_CLASS_TABLE = dict(sorted({**{int(name[:3]): name for name in cub.TEST_CLASSES}, **CUB_CLASSES}.items()))
# image id -> (class id, height, width, bbox x y w h); boxes near every border and in the middle
CUB_IMAGES = {
    1: (1, 40, 60, (2.0, 3.0, 20.0, 10.0)),
    2: (1, 48, 32, (10.0, 20.0, 15.0, 25.0)),
    3: (2, 50, 50, (30.0, 30.0, 19.0, 19.0)),
    4: (2, 36, 64, (5.5, 4.5, 50.0, 20.0)),
    5: (4, 64, 40, (12.0, 22.0, 14.0, 18.0)),
    6: (4, 40, 40, (0.0, 0.0, 39.0, 39.0)),
    7: (12, 44, 56, (40.0, 1.0, 15.0, 30.0)),
    8: (12, 32, 48, (8.0, 8.0, 8.0, 8.0)),
}
UNCAPTIONED = 8


def cub_relative(image_id: int) -> str:
    class_folder = CUB_CLASSES[CUB_IMAGES[image_id][0]]
    return f"{class_folder}/{class_folder[4:]}_{image_id:04d}_{100 + image_id}.jpg"


def make_cub_release(parent: Path) -> Path:
    root = parent / "CUB_200_2011"
    write(root / "classes.txt", "".join(f"{i} {name}\n" for i, name in CUB_CLASS_TABLE.items()))
    write(root / "images.txt", "".join(f"{i} {cub_relative(i)}\n" for i in CUB_IMAGES))
    write(root / "image_class_labels.txt", "".join(f"{i} {c}\n" for i, (c, *_) in CUB_IMAGES.items()))
    write(root / "bounding_boxes.txt", "".join(f"{i} {' '.join(map(str, box))}\n"
                                               for i, (*_, box) in CUB_IMAGES.items()))
    write(root / "train_test_split.txt", "".join(f"{i} {i % 2}\n" for i in CUB_IMAGES))
    for i, (_, height, width, _) in CUB_IMAGES.items():
        write(root / "images" / cub_relative(i), jpeg(height, width, 20 * i))
    return root


def cub_captions(image_id: int) -> list[str]:
    return [f"bird {image_id} has feature {k}" for k in range(10)]


def make_cub_text(text_dir: Path) -> None:
    for i in CUB_IMAGES:
        if i != UNCAPTIONED:
            lines = cub_captions(i)
            if i == 1:
                lines.insert(3, "   ")  # a blank line, dropped and counted
            write(text_dir / cub_relative(i).replace(".jpg", ".txt"), "\n".join(lines) + "\n")


def expected_crop(box, height, width):
    """AttnGAN's crop written out independently: half side floor(0.75 max(w, h)) around the floored box centre."""
    x, y, w, h = box
    half = math.floor(0.75 * max(w, h))
    centre_x, centre_y = math.floor(x + w / 2), math.floor(y + h / 2)
    top, bottom = max(centre_y - half, 0), min(centre_y + half, height)
    left, right = max(centre_x - half, 0), min(centre_x + half, width)
    return top, left, bottom - top, right - left


@pytest.fixture
def cub_archives(tmp_path):
    """CUB_200_2011.tgz and Reed et al.'s cvpr2016_cub as a zip (text_c10/ inside)."""
    build = tmp_path / "build"
    release = make_cub_release(build)
    make_cub_text(build / "cvpr2016_cub" / "text_c10")
    captions = zip_folder(build / "cvpr2016_cub", tmp_path / "cvpr2016_cub.zip")
    return [tgz(release, tmp_path / "CUB_200_2011.tgz"), captions]


def test_cub_from_archives_split_labels_crop_end_to_end(tmp_path, cub_archives):
    out = tmp_path / "out"
    folders = resolve_inputs("cub", cub_archives, download=False, out=out)
    assert folders == [out / "extracted" / "CUB_200_2011", out / "extracted" / "cvpr2016_cub"]
    source = open_source("cub", folders)
    assert source.classes() == list(CUB_CLASS_TABLE.values())
    splits = source.splits()
    test_ids = {ref.example_id for ref in splits["test"]}
    assert {ref.example_id.split("/")[0] for ref in splits["test"]} == CUB_TEST
    assert {ref.example_id.split("/")[0] for ref in splits["train"]}.isdisjoint(CUB_TEST)
    assert len(splits["train"]) == 4 and len(test_ids) == 4

    manifest = Preparer(source, out / "data", PrepareOptions(shard_size=3)).run()
    assert manifest["splits"]["train"]["examples"] == 4 and manifest["splits"]["test"]["examples"] == 3
    assert [s["reason"] for s in manifest["skipped"]] == ["image without captions"]
    assert manifest["empty_captions_dropped"] == 1
    assert "class-disjoint" in manifest["source"]["split"] and "0.75" in manifest["source"]["crop"]
    for split, rows in read_records(out / "data").items():
        for row in rows:
            image_id = next(i for i in CUB_IMAGES if cub_relative(i).startswith(row["example_id"] + "."))
            class_number, height, width, box = CUB_IMAGES[image_id]
            label = list(CUB_CLASS_TABLE).index(class_number)
            assert (row["label_ids"], row["class_id"]) == ([label], label)
            assert (row["height"], row["width"]) == (height, width)
            assert row["crop"] == expected_crop(box, height, width)
            assert row["captions"] == cub_captions(image_id)
            assert (split == "test") == (CUB_CLASSES[class_number] in CUB_TEST)
    assert check(out / "data") == []


def test_cub_crop_clips_at_borders():
    # box centred near the top-left corner of a 40 x 60 image: the crop is cut by both borders
    assert cub.crop_box((2.0, 3.0, 20.0, 10.0), 40, 60) == expected_crop((2.0, 3.0, 20.0, 10.0), 40, 60) == \
        (0, 0, 23, 27)
    for box, height, width in [((5.5, 4.5, 50.0, 20.0), 36, 64), ((0.0, 0.0, 39.0, 39.0), 40, 40),
                               ((40.0, 1.0, 15.0, 30.0), 44, 56), ((100.3, 57.9, 201.7, 133.2), 375, 500)]:
        assert cub.crop_box(box, height, width) == expected_crop(box, height, width)


def test_cub_test_classes_constant():
    assert len(cub.TEST_CLASSES) == 50
    numbers = sorted(int(name[:3]) for name in cub.TEST_CLASSES)
    assert len(set(numbers)) == 50 and 1 <= numbers[0] and numbers[-1] <= 200
    assert all(name[3] == "." for name in cub.TEST_CLASSES)


class Touch:
    """Unpickling this creates `path`: proves whether a pickle was read."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.path),)


def make_attngan_birds(tmp_path) -> tuple[Path, Path]:
    birds = tmp_path / "data" / "birds"
    make_cub_release(birds)
    make_cub_text(birds / "text")
    marker = tmp_path / "pickle-was-loaded"
    stems = [cub_relative(i).rsplit(".", 1)[0] for i in CUB_IMAGES]
    write(birds / "train" / "filenames.pickle", pickle.dumps(stems[:5], protocol=2))
    write(birds / "test" / "filenames.pickle", pickle.dumps([*stems[5:7], Touch(marker)]))
    write(birds / "train" / "class_info.pickle", pickle.dumps([1, 1, 2, 2, 4], protocol=2))
    return birds, marker


def test_cub_attngan_layout_ignores_pickles_unless_trusted(tmp_path):
    birds, marker = make_attngan_birds(tmp_path)
    source = open_source("cub", [tmp_path / "data"])
    splits = source.splits()
    assert not marker.exists()
    assert any("ignored" in note and "--trust-pickle" in note for note in source.report.notes)
    assert {r.example_id.split("/")[0] for r in splits["test"]} == CUB_TEST
    assert splits["train"][0].captions == tuple(cub_captions(1))  # birds/text/<class>/<image>.txt

    trusted = open_source("cub", [birds], trust_pickle=True)
    splits = trusted.splits()
    assert marker.exists()
    stems = [cub_relative(i).rsplit(".", 1)[0] for i in CUB_IMAGES]
    assert [r.example_id for r in splits["train"]] == stems[:5]
    assert [r.example_id for r in splits["test"]] == stems[5:7]
    assert any("1 images are in neither" in note for note in trusted.report.notes)
    assert trusted.fingerprint() != source.fingerprint()


def test_cub_missing_parts_are_named(tmp_path):
    make_cub_release(tmp_path / "only_images")
    with pytest.raises(UserError, match="CUB captions"):
        open_source("cub", [tmp_path / "only_images"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="cannot find images.txt"):
        open_source("cub", [tmp_path / "empty"])


# -- COCO --------------------------------------------------------------------------------------------------------------

COCO_CATEGORIES = [(90, "toothbrush"), (1, "person"), (18, "dog"), (3, "car")]  # ids with gaps, listed out of order
# split -> image id -> instance category ids (duplicates: several instances of one category)
COCO_INSTANCES = {"train": {9: [18, 1, 1], 25: [90], 30: [], 42: [3, 18, 90, 1]}, "test": {73: [3], 74: []}}


def coco_file(split: str, image_id: int) -> str:
    folder = "train2014" if split == "train" else "val2014"
    return f"COCO_{folder}_{image_id:012d}.jpg"


def make_coco(build: Path) -> None:
    for split, images in COCO_INSTANCES.items():
        folder = "train2014" if split == "train" else "val2014"
        image_list, captions, instances = [], [], []
        for image_id, categories in images.items():
            write(build / folder / folder / coco_file(split, image_id), jpeg(24, 32, image_id))
            image_list.append({"id": image_id, "file_name": coco_file(split, image_id), "height": 24, "width": 32})
            for k in range(5 + image_id % 3):  # five to seven captions, ids deliberately not in image order
                captions.append({"id": 1000 - 10 * image_id - k, "image_id": image_id,
                                 "caption": f"A photo  number {image_id} caption {k}.\n"})
            for category in categories:
                instances.append({"id": len(instances) + 1, "image_id": image_id, "category_id": category,
                                  "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0})
        categories = [{"id": i, "name": n, "supercategory": "x"} for i, n in COCO_CATEGORIES]
        notes = build / "annotations_trainval2014" / "annotations"
        write(notes / f"captions_{folder}.json", json.dumps({"images": image_list[::-1], "annotations": captions}))
        write(notes / f"instances_{folder}.json", json.dumps({"images": image_list, "annotations": instances,
                                                              "categories": categories}))


def test_coco_multi_hot_and_unlabelled_images(tmp_path):
    build = tmp_path / "build"
    make_coco(build)
    archives = [zip_folder(build / "train2014" / "train2014", tmp_path / "train2014.zip"),
                zip_folder(build / "val2014" / "val2014", tmp_path / "val2014.zip"),
                zip_folder(build / "annotations_trainval2014" / "annotations",
                           tmp_path / "annotations_trainval2014.zip")]
    out = tmp_path / "out"
    source = open_source("coco", resolve_inputs("coco", archives, False, out))
    assert source.classes() == ["person", "car", "dog", "toothbrush"]  # category ids 1, 3, 18, 90
    index = {category_id: i for i, category_id in enumerate(sorted(i for i, _ in COCO_CATEGORIES))}
    manifest = Preparer(source, out / "data", PrepareOptions(shard_size=2)).run()
    assert manifest["multi_label"] is True
    assert any(note.startswith("train: 1 images have no object instances") for note in manifest["notes"])
    assert any(note.startswith("test: 1 images") for note in manifest["notes"])
    rows = read_records(out / "data")
    for split, images in COCO_INSTANCES.items():
        assert [r["example_id"] for r in rows[split]] == [coco_file(split, i)[:-4] for i in sorted(images)]
        for row, (image_id, categories) in zip(rows[split], sorted(images.items())):
            assert row["label_ids"] == sorted({index[c] for c in categories})
            assert row["class_id"] == -1
            assert row["captions"] == [f"A photo number {image_id} caption {k}." for k in range(5 + image_id % 3)]
            assert row["crop"] == (0, 0, 24, 32)
    assert manifest["splits"]["train"]["unlabelled"] == 1 and manifest["splits"]["test"]["labelled"] == 1


def test_coco_missing_annotations_are_named(tmp_path):
    build = tmp_path / "build"
    make_coco(build)
    (build / "annotations_trainval2014" / "annotations" / "instances_val2014.json").unlink()
    with pytest.raises(UserError, match="annotations/instances_val2014.json"):
        open_source("coco", [build])


# -- Oxford-102 flowers ------------------------------------------------------------------------------------------------

FLOWER_LABELS = [3, 1, 5, 3, 5, 2, 1, 4]  # class number of image_00001 .. image_00008
FLOWER_TEST = {5, 2}


def make_flowers(build: Path) -> None:
    for index, number in enumerate(FLOWER_LABELS, start=1):
        write(build / "jpg" / f"image_{index:05d}.jpg", jpeg(30 + index, 40, 25 * index))
        if index != 4:
            write(build / "cvpr2016_flowers" / "text_c10" / f"class_{number:05d}" / f"image_{index:05d}.txt",
                  "".join(f"flower {index} petal {k}\n" for k in range(10)))
    write(build / "cvpr2016_flowers" / "testclasses.txt", "".join(f"class_{n:05d}\n" for n in sorted(FLOWER_TEST)))
    write(build / "cvpr2016_flowers" / "trainvalclasses.txt",
          "".join(f"class_{n:05d}\n" for n in sorted(set(FLOWER_LABELS) - FLOWER_TEST)))
    build.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(build / "imagelabels.mat"), {"labels": np.array([FLOWER_LABELS], np.uint8)})


def flower_archives(tmp_path) -> list[Path]:
    build = tmp_path / "build"
    make_flowers(build)
    return [tgz(build / "jpg", tmp_path / "102flowers.tgz"), build / "imagelabels.mat",
            tgz(build / "cvpr2016_flowers", tmp_path / "cvpr2016_flowers.tar.gz")]


def check_flowers(out: Path, manifest: dict) -> None:
    assert manifest["classes"] == [f"class_{n:05d}" for n in range(1, 6)]
    assert manifest["source"]["test_classes"] == ["class_00002", "class_00005"]
    assert [s["example_id"] for s in manifest["skipped"]] == ["image_00004"]
    rows = read_records(out)
    for split, expected in (("train", lambda n: n not in FLOWER_TEST), ("test", lambda n: n in FLOWER_TEST)):
        indices = [i for i, n in enumerate(FLOWER_LABELS, start=1) if expected(n) and i != 4]
        assert [r["example_id"] for r in rows[split]] == [f"image_{i:05d}" for i in indices]
        for row, i in zip(rows[split], indices):
            assert row["label_ids"] == [FLOWER_LABELS[i - 1] - 1] and row["class_id"] == FLOWER_LABELS[i - 1] - 1
            assert row["captions"][9] == f"flower {i} petal 9" and row["height"] == 30 + i


def test_flowers_labels_from_mat_and_class_disjoint_split(tmp_path):
    out = tmp_path / "out"
    source = open_source("flowers", resolve_inputs("flowers", flower_archives(tmp_path), False, out))
    manifest = Preparer(source, out / "data", PrepareOptions(shard_size=4)).run()
    check_flowers(out / "data", manifest)


def test_flowers_without_test_classes_file_is_refused(tmp_path):
    make_flowers(tmp_path / "build")
    (tmp_path / "build" / "cvpr2016_flowers" / "testclasses.txt").unlink()
    with pytest.raises(UserError, match="testclasses.txt"):
        open_source("flowers", [tmp_path / "build"])


# -- inputs ------------------------------------------------------------------------------------------------------------

def test_resolve_inputs_rules(tmp_path):
    assert resolve_inputs("shapes", [], False, tmp_path) == []
    with pytest.raises(UserError, match="takes no --source or --download"):
        resolve_inputs("shapes-multi", [tmp_path], False, tmp_path)
    with pytest.raises(UserError, match="takes no --source or --download"):
        resolve_inputs("shapes", [], True, tmp_path)
    with pytest.raises(UserError, match=r"102flowers.tgz \(https://www.robots.ox.ac.uk/.*--source.*--download"):
        resolve_inputs("flowers", [], False, tmp_path)
    with pytest.raises(UserError, match="missing.tgz does not exist"):
        resolve_inputs("cub", [tmp_path / "missing.tgz"], False, tmp_path)
    assert resolve_inputs("cub", [tmp_path], False, tmp_path / "out") == [tmp_path]


# -- archives ----------------------------------------------------------------------------------------------------------

def tar_with(path: Path, *members: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(_file("top/fine.txt"), io.BytesIO(b"fine"))
        for member in members:
            tar.addfile(member, io.BytesIO(b"evil") if member.isfile() else None)
    return path


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 4
    return info


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    return info


@pytest.mark.parametrize("member, words", [
    (_file("/tmp/evil.txt"), "absolute path"),
    (_file("top/../../evil.txt"), "'..'"),
    (_link("top/out", "../../outside"), "links outside"),
    (_link("top/abs", "/etc/passwd"), "absolute path"),
    (_link("top/hard", "../x", tarfile.LNKTYPE), "links outside"),
    (_device("top/dev"), "device or FIFO"),
])
def test_unsafe_tar_members_are_refused(tmp_path, member, words):
    archive = tar_with(tmp_path / "evil.tgz", member)
    target = tmp_path / "extracted"
    with pytest.raises(UserError) as error:
        extract(archive, target)
    message = str(error.value)
    assert str(archive) in message and member.name in message and words in message
    assert not (target / "evil").exists() and list(target.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()


def test_unsafe_zip_member_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("top/fine.txt", "fine")
        zf.writestr("../evil.txt", "evil")
    with pytest.raises(UserError, match=r"evil.zip: member '\.\./evil.txt'"):
        extract(archive, tmp_path / "extracted")
    assert list((tmp_path / "extracted").iterdir()) == []


@pytest.mark.parametrize("suffix", [".tgz", ".zip"])
def test_truncated_archive_is_reported(tmp_path, suffix):
    folder = tmp_path / "build" / "top"
    for i in range(3):
        write(folder / f"noise{i}.bin", np.random.default_rng(i).bytes(20000))
    whole = tgz(folder, tmp_path / f"whole{suffix}") if suffix == ".tgz" else zip_folder(folder, tmp_path / "whole.zip")
    broken = write(tmp_path / f"broken{suffix}", whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(UserError, match=rf"cannot extract .*broken{suffix}: it is truncated or corrupt"):
        extract(broken, tmp_path / "extracted")
    assert list((tmp_path / "extracted").iterdir()) == []


class Interrupting:
    """A progress bar that raises KeyboardInterrupt on its first update, like Ctrl-C during extraction."""

    def add_task(self, *args, **kwargs):
        return 0

    def update(self, *args, **kwargs):
        raise KeyboardInterrupt

    advance = update


def test_extraction_is_atomic_and_done_once(tmp_path):
    folder = tmp_path / "build" / "top"
    write(folder / "a.txt", "a")
    write(folder / "sub" / "b.txt", "b")
    archive = tgz(folder, tmp_path / "top.tar.gz")
    target = tmp_path / "extracted"
    with pytest.raises(KeyboardInterrupt):
        extract(archive, target, progress=Interrupting())
    assert list(target.iterdir()) == []
    final = extract(archive, target)
    assert final == target / "top" and (final / "top" / "sub" / "b.txt").read_text() == "b"
    assert (final / MARKER).exists()
    write(final / "sentinel", "kept while the archive is unchanged")
    assert extract(archive, target) == final and (final / "sentinel").exists()
    write(folder / "a.txt", "a changed and longer")
    tgz(folder, archive)
    assert extract(archive, target) == final and not (final / "sentinel").exists()
    assert (final / "top" / "a.txt").read_text() == "a changed and longer"
    assert [p.name for p in target.iterdir()] == ["top"]


# -- downloads ---------------------------------------------------------------------------------------------------------

def sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


PAYLOAD = np.random.default_rng(7).bytes(300_000)


def test_fetch_with_base_override_and_sha(tmp_path, server, monkeypatch):
    base, handler, served = server
    write(served / "files" / "data.tgz", PAYLOAD)
    monkeypatch.setenv(BASE_ENV, base + "/")
    remote = Remote("https://example.invalid/official/dir/data.tgz", "data.tgz", sha256(PAYLOAD))
    path = fetch(remote, tmp_path / "downloads")
    assert path == tmp_path / "downloads" / "data.tgz" and path.read_bytes() == PAYLOAD
    assert not (tmp_path / "downloads" / "data.tgz.part").exists()
    assert fetch(remote, tmp_path / "downloads") == path and handler.ranges == [None]  # done: not fetched again


@pytest.mark.parametrize("honour_range", [True, False])
def test_fetch_resumes_a_partial_download(tmp_path, server, monkeypatch, honour_range):
    base, handler, served = server
    handler.honour_range = honour_range
    write(served / "files" / "data.tgz", PAYLOAD)
    monkeypatch.setenv(BASE_ENV, base)
    downloads = tmp_path / "downloads"
    # a server that ignores Range sends everything again: the part must be replaced, not appended to
    write(downloads / "data.tgz.part", PAYLOAD[:123_456] if honour_range else b"x" * 1000)
    path = fetch(Remote("https://example.invalid/data.tgz", "data.tgz", sha256(PAYLOAD)), downloads)
    assert path.read_bytes() == PAYLOAD
    assert handler.ranges == ["bytes=123456-" if honour_range else "bytes=1000-"]


def test_fetch_unpublished_digest_is_recorded_and_checked(tmp_path, server, monkeypatch):
    base, handler, served = server
    write(served / "files" / "labels.mat", PAYLOAD[:5000])
    monkeypatch.setenv(BASE_ENV, base)
    remote = Remote("https://example.invalid/labels.mat", "labels.mat", None)
    path = fetch(remote, tmp_path)
    assert (tmp_path / "labels.mat.sha256").read_text().strip() == sha256(PAYLOAD[:5000])
    path.write_bytes(b"damaged")
    assert fetch(remote, tmp_path).read_bytes() == PAYLOAD[:5000] and len(handler.ranges) == 2


def test_fetch_sha_mismatch_deletes_the_part(tmp_path, server, monkeypatch):
    base, _, served = server
    write(served / "files" / "data.tgz", PAYLOAD)
    monkeypatch.setenv(BASE_ENV, base)
    with pytest.raises(UserError, match=f"expected {'0' * 64}; the download was deleted"):
        fetch(Remote("https://example.invalid/data.tgz", "data.tgz", "0" * 64), tmp_path / "downloads")
    assert list((tmp_path / "downloads").iterdir()) == []


def test_fetch_from_file_url(tmp_path):
    source = write(tmp_path / "src" / "data.tgz", PAYLOAD[:1000])
    path = fetch(Remote(source.as_uri(), "data.tgz", sha256(PAYLOAD[:1000])), tmp_path / "downloads")
    assert path.read_bytes() == PAYLOAD[:1000]


def test_fetch_unreachable_and_missing_files(tmp_path, server, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x/data.tgz"
    with pytest.raises(UserError) as error:
        fetch(Remote(url, "data.tgz", None), tmp_path)
    message = str(error.value)
    assert message.startswith(f"cannot download {url} (")
    assert message.endswith("); fetch data.tgz yourself and pass --source <path>")
    base, _, _ = server
    monkeypatch.setenv(BASE_ENV, base)
    with pytest.raises(UserError, match=rf"cannot download {base}/absent.zip \(HTTP 404 .*\); fetch absent.zip"):
        fetch(Remote("https://example.invalid/absent.zip", "absent.zip", None), tmp_path)


def test_prepare_flowers_with_download(tmp_path, server, monkeypatch):
    base, _, served = server
    for path in flower_archives(tmp_path):
        write(served / "files" / path.name, path.read_bytes())
    monkeypatch.setenv(BASE_ENV, base)
    out = tmp_path / "out"
    with progress(transient=True) as bar:  # the real progress bar: tasks need its `unit` and `status` fields
        folders = resolve_inputs("flowers", [], True, out, progress=bar)
    assert sorted(p.name for p in (out / "downloads").iterdir() if not p.name.endswith(".sha256")) == [
        "102flowers.tgz", "cvpr2016_flowers.tar.gz", "imagelabels.mat"]
    assert out / "downloads" / "imagelabels.mat" in folders
    manifest = Preparer(open_source("flowers", folders), out / "data", PrepareOptions(shard_size=4)).run()
    check_flowers(out / "data", manifest)


# -- real data (skipped when absent) ---------------------------------------------------------------------------------

def real(shared_data: Path, name: str) -> Path:
    path = shared_data / name
    if not path.is_dir():
        pytest.skip(f"no real data at {path}")
    return path


def test_real_cub(shared_data):
    source = open_source("cub", [real(shared_data, "CUB_200_2011")])
    splits = source.splits()
    assert len(source.classes()) == 200
    assert (len(splits["train"]), len(splits["test"])) == (8855, 2933)


def test_real_coco(shared_data):
    source = open_source("coco", [real(shared_data, "coco")])
    splits = source.splits()
    assert len(source.classes()) == 80
    assert (len(splits["train"]), len(splits["test"])) == (82783, 40504)


def test_real_flowers(shared_data):
    source = open_source("flowers", [real(shared_data, "flowers")])
    splits = source.splits()
    assert len(source.classes()) == 102 and len(source.test_classes) == 20
    assert len(splits["train"]) + len(splits["test"]) == 8189
