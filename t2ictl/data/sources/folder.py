"""The user's own dataset: a folder of images with their captions, labels optional.

Captions come from one of two layouts, looked for in this order:
- a captions file at the top of the folder: `captions.jsonl` (one object per line: "image", a path relative to the
  folder; "caption" or "captions"; optional "label" or "labels"; optional "split") or `captions.csv` (a header row with
  the columns image, caption and optional label, labels, split; several labels separated by "|"). Rows naming the same
  image add captions to it;
- otherwise every image (.jpg, .jpeg, .png, at any depth) with a `<name>.txt` beside it, one caption per line.
Images a captions file names but the folder lacks are left out and counted in the notes.

Labels (--labels): "file" takes the captions file's label columns, "folders" the image's folder below the top (or
below train/ and test/), "none" leaves every image unlabelled; "auto" is the file's when it has label columns, else the
folders' when the images lie in sub-folders, else none. An image with several labels makes the dataset multi-label.
Unlabelled, the contrastive framework has only each image's own caption pairs as positives.

Split: the file's "split" column (train or test) or top-level train/ and test/ folders when present; otherwise a seeded
rule: --split-by image puts a seeded --test-fraction of the images into test, --split-by class that fraction of the
classes (single-label data; class-disjoint, as the CUB split). The whole image is used (no crop).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from t2ictl.data.sources.base import ExampleRef, Source, SourceReport, fingerprint_files, read_caption_lines
from t2ictl.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CAPTION_FILES = ("captions.jsonl", "captions.csv")
LABEL_RULES = ("auto", "file", "folders", "none")
SPLIT_RULES = ("image", "class")
SPLITS = ("train", "test")
DOWNLOADS = []  # the user's own data is never downloaded


@dataclass
class Entry:
    """One image as read from the layout, before labels and split are decided."""

    path: Path
    captions: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # from the captions file
    split: str | None = None


def image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def split_of_folder(relative: Path) -> str | None:
    return relative.parts[0] if len(relative.parts) > 1 and relative.parts[0] in SPLITS else None


def read_rows(path: Path) -> tuple[list[dict], bool]:
    """The rows of captions.jsonl or captions.csv as dicts with "image", "captions", "labels", "split", and whether
    the file has label columns."""
    rows, has_labels = [], False
    if path.suffix == ".jsonl":
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
            if not isinstance(item, dict) or "image" not in item or not ({"caption", "captions"} & set(item)):
                raise UserError(f"{path}:{number}: each line needs \"image\" and \"caption\" (or \"captions\")")
            captions = item.get("captions", [item.get("caption")])
            labels = item.get("labels", [item["label"]] if "label" in item else [])
            has_labels |= "label" in item or "labels" in item
            rows.append({"image": item["image"], "captions": [str(c) for c in captions if c is not None],
                         "labels": [str(x) for x in labels], "split": item.get("split"), "line": number})
        return rows, has_labels
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        if not {"image", "caption"} <= columns:
            raise UserError(f"{path}: the header row needs the columns image and caption (has {sorted(columns)})")
        has_labels = bool({"label", "labels"} & columns)
        for number, row in enumerate(reader, 2):
            labels = (row.get("labels") or row.get("label") or "").split("|")
            rows.append({"image": row["image"], "captions": [row["caption"] or ""],
                         "labels": [x.strip() for x in labels if x.strip()], "split": row.get("split") or None,
                         "line": number})
    return rows, has_labels


def entries_from_file(root: Path, path: Path, report: SourceReport) -> tuple[list[Entry], bool]:
    rows, has_labels = read_rows(path)
    entries: dict[Path, Entry] = {}
    absent = set()
    for row in rows:
        image = Path(os.path.normpath(root / row["image"]))  # not resolve(): a linked image may live elsewhere
        if not image.is_relative_to(root):
            raise UserError(f"{path}:{row['line']}: {row['image']} is outside {root}")
        if not image.is_file():
            absent.add(image)
            continue
        split = row["split"]
        if split is not None and split not in SPLITS:
            raise UserError(f"{path}:{row['line']}: split must be train or test, got {split!r}")
        entry = entries.setdefault(image, Entry(image, split=split))
        if split is not None and entry.split not in (None, split):
            raise UserError(f"{path}:{row['line']}: {row['image']} is given both splits")
        entry.split = entry.split or split
        lines = [" ".join(c.split()) for c in row["captions"]]
        entry.captions.extend(c for c in lines if c)
        report.empty_captions += sum(1 for c in lines if not c)
        entry.labels.extend(x for x in row["labels"] if x not in entry.labels)
    if absent:
        report.notes.append(f"{len(absent)} images named in {path.name} are not in {root} and were left out")
    return sorted(entries.values(), key=lambda e: e.path), has_labels


def entries_from_text_files(root: Path, report: SourceReport) -> list[Entry]:
    entries = []
    for image in image_files(root):
        text = image.with_suffix(".txt")
        captions = list(read_caption_lines(text, report)) if text.is_file() else []
        entries.append(Entry(image, captions, split=split_of_folder(image.relative_to(root))))
    return entries


def folder_label(root: Path, path: Path) -> list[str]:
    relative = path.relative_to(root)
    parts = relative.parts[1:-1] if split_of_folder(relative) else relative.parts[:-1]
    return ["/".join(parts)] if parts else []


def held_out_count(fraction: float, total: int) -> int:
    """How many of `total` images or classes go to test: the rounded fraction, but at least one when the fraction is
    above zero and at most all but one, so that a small dataset keeps both splits."""
    if fraction <= 0 or total < 2:
        return 0
    return min(max(round(fraction * total), 1), total - 1)


class FolderSource(Source):
    name = "folder"

    def __init__(self, inputs: list[Path], labels: str = "auto", test_fraction: float = 0.1,
                 split_by: str = "image", seed: int = 0):
        super().__init__()
        if len(inputs) != 1 or not Path(inputs[0]).is_dir():
            raise UserError("prepare folder takes one --source: the folder that holds the images and captions")
        if labels not in LABEL_RULES:
            raise UserError(f"--labels must be one of {', '.join(LABEL_RULES)}, got {labels!r}")
        if split_by not in SPLIT_RULES:
            raise UserError(f"--split-by must be image or class, got {split_by!r}")
        if not 0.0 <= test_fraction < 1.0:
            raise UserError(f"--test-fraction must be in [0, 1), got {test_fraction}")
        self.root = Path(inputs[0]).resolve()
        self.captions_file = next((self.root / n for n in CAPTION_FILES if (self.root / n).is_file()), None)
        if self.captions_file is not None:
            self.entries, has_label_columns = entries_from_file(self.root, self.captions_file, self.report)
        else:
            self.entries, has_label_columns = entries_from_text_files(self.root, self.report), False
        if not self.entries:
            raise UserError(f"{self.root} holds no images (.jpg, .jpeg, .png) with captions (name.txt beside each "
                            "image, or captions.jsonl / captions.csv at the top)")
        self.label_rule = self._label_rule(labels, has_label_columns)
        self.example_labels = [self._labels_of(entry) for entry in self.entries]
        self.class_names = sorted({x for names in self.example_labels for x in names})
        self.multi_label = any(len(names) > 1 for names in self.example_labels)
        self.seed, self.test_fraction, self.split_by = seed, test_fraction, split_by
        self.split_rule, self.entry_splits = self._split()
        self._splits = None
        if not self.class_names:
            self.report.notes.append("no labels: the contrastive framework has only each image's own caption pairs "
                                     "as positives")

    def _label_rule(self, wanted: str, has_label_columns: bool) -> str:
        if wanted == "file" and not has_label_columns:
            raise UserError("--labels file: the folder has no captions file with a label or labels column")
        if wanted != "auto":
            return wanted
        if has_label_columns:
            return "file"
        in_folders = any(folder_label(self.root, e.path) for e in self.entries)
        return "folders" if in_folders else "none"

    def _labels_of(self, entry: Entry) -> list[str]:
        if self.label_rule == "file":
            return list(entry.labels)
        if self.label_rule == "folders":
            return folder_label(self.root, entry.path)
        return []

    def _split(self) -> tuple[str, list[str]]:
        given = [e.split for e in self.entries]
        if any(s is not None for s in given):
            where = "the captions file's split column" if self.captions_file else "the train/ and test/ folders"
            if None in given:
                missing = self.entries[given.index(None)].path.relative_to(self.root)
                raise UserError(f"{missing} has no split while others do ({where}); give every image one")
            return f"as given by {where}", given
        rng = np.random.default_rng(self.seed)
        if self.split_by == "class":
            if self.multi_label or not self.class_names:
                raise UserError("--split-by class needs single-label data; use --split-by image")
            count = held_out_count(self.test_fraction, len(self.class_names))
            test = {self.class_names[i] for i in rng.permutation(len(self.class_names))[:count]}
            splits = ["test" if names and names[0] in test else "train" for names in self.example_labels]
            return (f"class-disjoint: {count} of {len(self.class_names)} classes (fraction {self.test_fraction}, "
                    f"seed {self.seed}) are test"), splits
        count = held_out_count(self.test_fraction, len(self.entries))
        test = set(rng.permutation(len(self.entries))[:count].tolist())
        splits = ["test" if i in test else "train" for i in range(len(self.entries))]
        return f"by image: {count} of {len(self.entries)} images (fraction {self.test_fraction}, seed {self.seed}) " \
               "are test", splits

    def classes(self) -> list[str]:
        return list(self.class_names)

    def splits(self) -> dict[str, list[ExampleRef]]:
        if self._splits is not None:
            return self._splits
        index = {name: i for i, name in enumerate(self.class_names)}
        splits: dict[str, list[ExampleRef]] = {split: [] for split in SPLITS}
        for entry, names, split in zip(self.entries, self.example_labels, self.entry_splits):
            example_id = entry.path.relative_to(self.root).as_posix()
            splits[split].append(ExampleRef(example_id, tuple(entry.captions), tuple(sorted(index[x] for x in names)),
                                            entry.path.read_bytes, origin=str(entry.path)))
        self._splits = splits
        return splits

    def describe(self) -> dict:
        layout = self.captions_file.name if self.captions_file else "name.txt beside each image"
        return {"dataset": "folder", "images": str(self.root), "captions": layout, "labels": self.label_rule,
                "split": self.split_rule, "crop": "none (whole image)"}

    def fingerprint(self) -> str:
        files = [e.path for e in self.entries] + [e.path.with_suffix(".txt") for e in self.entries
                                                  if e.path.with_suffix(".txt").is_file()]
        digest = fingerprint_files(self.root, files, [self.captions_file] if self.captions_file else [])
        rules = f"{self.label_rule}\n{self.split_rule}"
        return hashlib.sha256(f"{digest}\n{rules}".encode()).hexdigest()


def open_source(inputs: list[Path], labels: str = "auto", test_fraction: float = 0.1, split_by: str = "image",
                seed: int = 0) -> FolderSource:
    return FolderSource(inputs, labels=labels, test_fraction=test_fraction, split_by=split_by, seed=seed)
