"""MS-COCO with its captions (five to seven per image) and the 80 object categories as multi-hot labels.

Inputs (found anywhere up to three folders below the given ones), of the 2014 release (the papers') or the 2017 one:
train2014/ and val2014/ images with annotations/captions_{train,val}2014.json and instances_{train,val}2014.json, or
the same names with 2017. The 2017 release holds the 2014 images under new names and other splits; when both are
given, 2014 is read unless the 2017 release is asked for.

Split rule, as AttnGAN/DF-GAN: train2014 is "train" (82,783 images), val2014 is "test" (40,504 images). With 2017,
train2017 (118,287) and val2017 (5,000) are; that test split is not the papers', so FIDs against it cannot be compared
with published COCO figures (the manifest says so, and `t2ictl score` repeats it). A release given without its val
side (images and both annotation files absent) prepares an empty test split, with a note. Images an annotation file
lists but the image folder lacks (a partial copy) are left out and counted in the notes.
Labels: the 80 category ids in increasing id order map to 0..79; an image's labels are the categories of its instance
annotations (multi-label). Images without any instance are kept with no labels and counted in the report notes.
The whole image is used (no crop).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from t2ictl.data.download import Remote
from t2ictl.data.sources import locate
from t2ictl.data.sources.base import ExampleRef, Source, SourceReport, fingerprint_files
from t2ictl.errors import UserError

RELEASES = ("2014", "2017")
PAPERS_RELEASE = "2014"
NOT_COMPARABLE = ("COCO 2017: the test split is val2017, not the papers' val2014, so FIDs against it cannot be "
                  "compared with published COCO figures or with statistics of val2014")


def folder_names(release: str) -> dict[str, str]:
    return {"train": f"train{release}", "test": f"val{release}"}


def find_release(inputs: list[Path], wanted: str) -> str:
    """The release to read: `wanted`, or with "auto" 2014 when its annotations are there, else 2017."""
    found = [r for r in RELEASES if locate.find(inputs, f"annotations/captions_train{r}.json")]
    if wanted == "auto":
        if not found:
            raise UserError("cannot find annotations/captions_train2014.json (COCO 2014, the papers' release) or "
                            "captions_train2017.json (COCO 2017) in the --source folders or 3 folders below")
        return found[0]
    if wanted not in RELEASES:
        raise UserError(f"--coco-release must be auto, 2014 or 2017, got {wanted!r}")
    if wanted not in found:
        raise UserError(f"--coco-release {wanted}: cannot find annotations/captions_train{wanted}.json in the "
                        "--source folders or 3 folders below")
    return wanted


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); is the annotations archive complete?") from None


def category_names(instances: dict) -> list[str]:
    return [c["name"] for c in sorted(instances["categories"], key=lambda c: c["id"])]


def split_refs(folder: Path, captions: dict, instances: dict, report: SourceReport) -> tuple[list[ExampleRef], int]:
    """Examples of one split in image-id order, and how many of them have no object instance."""
    index = {c["id"]: i for i, c in enumerate(sorted(instances["categories"], key=lambda c: c["id"]))}
    texts: dict[int, list[str]] = {}
    for ann in captions["annotations"]:  # captions keep the order of the annotation file
        texts.setdefault(ann["image_id"], []).append(ann["caption"])
    labels: dict[int, set[int]] = {}
    for ann in instances["annotations"]:
        labels.setdefault(ann["image_id"], set()).add(index[ann["category_id"]])
    refs, unlabelled, absent = [], 0, 0
    for image in sorted(captions["images"], key=lambda im: im["id"]):
        path = folder / image["file_name"]
        if not path.is_file():
            absent += 1
            continue
        lines = [" ".join(text.split()) for text in texts.get(image["id"], [])]
        kept = tuple(line for line in lines if line)
        report.empty_captions += len(lines) - len(kept)
        label_ids = tuple(sorted(labels.get(image["id"], ())))
        unlabelled += not label_ids
        refs.append(ExampleRef(Path(image["file_name"]).stem, kept, label_ids, path.read_bytes, origin=str(path)))
    if absent:
        report.notes.append(f"{absent} of the {len(captions['images'])} images in the captions file are not in "
                            f"{folder} (a partial copy?) and were left out")
    return refs, unlabelled


class CocoSource(Source):
    name = "coco"
    multi_label = True
    captions_per_image = 0  # five to seven

    def __init__(self, inputs: list[Path], release: str = "auto"):
        super().__init__()
        self.release = find_release(inputs, release)
        self.folders, self.annotations = {}, {}
        for split, folder in folder_names(self.release).items():
            wanted = {folder: "dir", f"annotations/captions_{folder}.json": "file",
                      f"annotations/instances_{folder}.json": "file"}
            found = {name: locate.find(inputs, name, kind) for name, kind in wanted.items()}
            if split == "test" and not any(found.values()):
                self.report.notes.append(f"no {folder}/ images or annotations were given")
                continue
            missing = [name for name, path in found.items() if path is None]
            if missing:
                raise UserError(f"COCO {self.release}: cannot find {missing[0]} beside the other {folder} files in "
                                "the --source folders or 3 folders below")
            images, captions, instances = found.values()
            self.folders[split] = images
            self.annotations[split] = {"captions": captions, "instances": instances}
        if self.release != PAPERS_RELEASE:
            self.report.notes.append(NOT_COMPARABLE)
        self._classes = None
        self._splits = None

    def classes(self) -> list[str]:
        if self._classes is None:
            self._classes = category_names(read_json(self.annotations["train"]["instances"]))
        return list(self._classes)

    def splits(self) -> dict[str, list[ExampleRef]]:
        if self._splits is None:
            self._splits = {"train": [], "test": []}
            for split, folder in self.folders.items():
                instances = read_json(self.annotations[split]["instances"])
                if self._classes is None:
                    self._classes = category_names(instances)
                elif category_names(instances) != self._classes:
                    raise UserError(f"{self.annotations[split]['instances']} lists other categories than "
                                    f"{self.annotations['train']['instances']}")
                refs, unlabelled = split_refs(folder, read_json(self.annotations[split]["captions"]), instances,
                                              self.report)
                self._splits[split] = refs
                if unlabelled:
                    self.report.notes.append(f"{split}: {unlabelled} images have no object instances; kept without "
                                             "labels")
        return self._splits

    def describe(self) -> dict:
        train, test = folder_names(self.release).values()
        described = {"dataset": f"MS-COCO {self.release}", "release": self.release,
                     "images": {s: str(f) for s, f in self.folders.items()},
                     "split": f"{train} is train, {test} is test" + (" (as AttnGAN/DF-GAN)"
                                                                     if self.release == PAPERS_RELEASE else ""),
                     "labels": "the 80 instance categories in id order, multi-hot per image; images without "
                               "instances kept unlabelled",
                     "crop": "none (whole image)"}
        if self.release != PAPERS_RELEASE:
            described["not_comparable"] = NOT_COMPARABLE
        return described

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.release.encode())
        for split, folder in self.folders.items():
            digest.update(fingerprint_files(folder, [p for p in folder.iterdir() if p.is_file()]).encode())
            for path in self.annotations[split].values():
                digest.update(fingerprint_files(path.parent, [path]).encode())
        return digest.hexdigest()


def open_source(inputs: list[Path], release: str = "auto") -> CocoSource:
    return CocoSource(inputs, release=release)


DOWNLOADS = [
    Remote("http://images.cocodataset.org/zips/train2014.zip", "train2014.zip", None, "COCO 2014 training images"),
    Remote("http://images.cocodataset.org/zips/val2014.zip", "val2014.zip", None, "COCO 2014 validation images"),
    Remote("http://images.cocodataset.org/annotations/annotations_trainval2014.zip", "annotations_trainval2014.zip",
           None, "COCO 2014 captions and instance annotations"),
]
