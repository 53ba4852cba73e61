"""Oxford-102 flowers with the ten captions per image of Reed et al. (2016), as used by StackGAN.

Inputs (found anywhere up to three folders below the given ones):
- the Oxford release: jpg/image_XXXXX.jpg (8,189 images) and imagelabels.mat (`labels`, 1-based class per image);
- Reed et al.'s cvpr2016_flowers release: text_c10/class_XXXXX/image_XXXXX.txt and testclasses.txt.
An image without a caption file gets no captions (the writer skips and reports it).

Classes are named by the caption release's folder names, class_00001 .. class_00102 (label id = class number - 1).
Split rule: class-disjoint, as StackGAN: the classes listed in the release's testclasses.txt (20 classes) are "test",
the 82 train+val classes are "train". The whole image is used (no crop).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from t2ictl.data.download import Remote
from t2ictl.data.sources import locate
from t2ictl.data.sources.base import ExampleRef, Source, fingerprint_files, read_caption_lines
from t2ictl.errors import UserError


def class_name(number: int) -> str:
    return f"class_{number:05d}"


def read_labels(path: Path) -> list[int]:
    """1-based class numbers of image_00001.jpg, image_00002.jpg, ..."""
    import scipy.io

    try:
        labels = scipy.io.loadmat(str(path))["labels"]
    except (ValueError, KeyError, OSError) as exc:
        raise UserError(f"cannot read the `labels` array of {path} ({exc}); is it Oxford-102's imagelabels.mat?") \
            from None
    return [int(v) for v in labels.ravel()]


def read_class_numbers(path: Path) -> set[int]:
    """Class numbers listed one per line as `class_00005` (Reed et al.'s format) or `5`."""
    numbers = set()
    for line in path.read_text().split():
        match = re.fullmatch(r"(?:class_)?0*(\d+)", line.strip())
        if match is None:
            raise UserError(f"{path}: {line!r} is not a class (expected class_XXXXX)")
        numbers.add(int(match.group(1)))
    return numbers


class FlowersSource(Source):
    name = "flowers"
    captions_per_image = 10

    def __init__(self, inputs: list[Path]):
        super().__init__()
        self.image_dir = locate.require(inputs, "jpg", "the Oxford-102 images", kind="dir")
        self.labels_file = locate.require(inputs, "imagelabels.mat", "the Oxford-102 labels")
        self.text_dir = locate.require(inputs, "text_c10", "Reed et al.'s flower captions (cvpr2016_flowers)",
                                       kind="dir")
        self.test_file = locate.require(inputs, "testclasses.txt", "the test classes of the caption release")
        self.labels = read_labels(self.labels_file)
        self.num_classes = max(self.labels)
        self.test_classes = read_class_numbers(self.test_file)
        if not self.test_classes <= set(self.labels):
            raise UserError(f"{self.test_file} names classes that {self.labels_file} does not have")
        self._splits = None

    def classes(self) -> list[str]:
        return [class_name(n) for n in range(1, self.num_classes + 1)]

    def splits(self) -> dict[str, list[ExampleRef]]:
        if self._splits is None:
            self._splits = {"train": [], "test": []}
            for index, number in enumerate(self.labels, start=1):
                split = "test" if number in self.test_classes else "train"
                self._splits[split].append(self._ref(index, number))
        return self._splits

    def _ref(self, index: int, number: int) -> ExampleRef:
        stem = f"image_{index:05d}"
        image = self.image_dir / f"{stem}.jpg"
        caption_file = self.text_dir / class_name(number) / f"{stem}.txt"
        captions = read_caption_lines(caption_file, self.report) if caption_file.is_file() else ()
        return ExampleRef(stem, captions, (number - 1,), image.read_bytes, origin=str(image))

    def describe(self) -> dict:
        return {"dataset": "Oxford-102 flowers", "images": str(self.image_dir), "captions": str(self.text_dir),
                "split": f"class-disjoint: the {len(self.test_classes)} classes in testclasses.txt are test, the "
                         "others train (as StackGAN)",
                "test_classes": [class_name(n) for n in sorted(self.test_classes)],
                "crop": "none (whole image)"}

    def fingerprint(self) -> str:
        images = fingerprint_files(self.image_dir, sorted(self.image_dir.glob("image_*.jpg")))
        captions = fingerprint_files(self.text_dir, sorted(self.text_dir.glob("*/*.txt")))
        metadata = fingerprint_files(self.labels_file.parent, [], [self.labels_file, self.test_file])
        return hashlib.sha256(f"{images}\n{captions}\n{metadata}".encode()).hexdigest()


def open_source(inputs: list[Path]) -> FlowersSource:
    return FlowersSource(inputs)


DOWNLOADS = [
    Remote("https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz", "102flowers.tgz", None,
           "Oxford-102 images (jpg/)"),
    Remote("https://www.robots.ox.ac.uk/~vgg/data/flowers/102/imagelabels.mat", "imagelabels.mat", None,
           "Oxford-102 class of each image"),
    Remote("https://drive.google.com/uc?export=download&id=0B0ywwgffWnLLcms2WWJQRFNSWXM", "cvpr2016_flowers.tar.gz",
           None, "Reed et al.'s ten captions per image (text_c10/) and class splits (testclasses.txt)"),
]
