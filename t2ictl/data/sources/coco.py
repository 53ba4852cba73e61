"""MS-COCO 2014 with its captions (five to seven per image) and the 80 object categories as multi-hot labels.

Inputs (found anywhere up to three folders below the given ones): train2014/ and val2014/ images and
annotations/captions_{train,val}2014.json + annotations/instances_{train,val}2014.json.

Split rule, as AttnGAN/DF-GAN: train2014 is "train" (82,783 images), val2014 is "test" (40,504 images).
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

SPLITS = {"train": "train2014", "test": "val2014"}


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
    refs, unlabelled = [], 0
    for image in sorted(captions["images"], key=lambda im: im["id"]):
        lines = [" ".join(text.split()) for text in texts.get(image["id"], [])]
        kept = tuple(line for line in lines if line)
        report.empty_captions += len(lines) - len(kept)
        label_ids = tuple(sorted(labels.get(image["id"], ())))
        unlabelled += not label_ids
        path = folder / image["file_name"]
        refs.append(ExampleRef(Path(image["file_name"]).stem, kept, label_ids, path.read_bytes, origin=str(path)))
    return refs, unlabelled


class CocoSource(Source):
    name = "coco"
    multi_label = True
    captions_per_image = 0  # five to seven

    def __init__(self, inputs: list[Path]):
        super().__init__()
        self.folders = {split: locate.require(inputs, folder, f"COCO {folder} images", kind="dir")
                        for split, folder in SPLITS.items()}
        self.annotations = {
            split: {kind: locate.require(inputs, f"annotations/{kind}_{folder}.json", "COCO 2014 annotations")
                    for kind in ("captions", "instances")}
            for split, folder in SPLITS.items()}
        self._classes = None
        self._splits = None

    def classes(self) -> list[str]:
        if self._classes is None:
            self._classes = category_names(read_json(self.annotations["train"]["instances"]))
        return list(self._classes)

    def splits(self) -> dict[str, list[ExampleRef]]:
        if self._splits is None:
            self._splits = {}
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
        return {"dataset": "MS-COCO 2014", "images": {s: str(f) for s, f in self.folders.items()},
                "split": "train2014 is train, val2014 is test (as AttnGAN/DF-GAN)",
                "labels": "the 80 instance categories in id order, multi-hot per image; images without instances "
                          "kept unlabelled",
                "crop": "none (whole image)"}

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for split, folder in self.folders.items():
            digest.update(fingerprint_files(folder, [p for p in folder.iterdir() if p.is_file()]).encode())
            for path in self.annotations[split].values():
                digest.update(fingerprint_files(path.parent, [path]).encode())
        return digest.hexdigest()


def open_source(inputs: list[Path]) -> CocoSource:
    return CocoSource(inputs)


DOWNLOADS = [
    Remote("http://images.cocodataset.org/zips/train2014.zip", "train2014.zip", None, "COCO 2014 training images"),
    Remote("http://images.cocodataset.org/zips/val2014.zip", "val2014.zip", None, "COCO 2014 validation images"),
    Remote("http://images.cocodataset.org/annotations/annotations_trainval2014.zip", "annotations_trainval2014.zip",
           None, "COCO 2014 captions and instance annotations"),
]
