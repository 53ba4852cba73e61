"""CUB-200-2011 birds with the ten captions per image of Reed et al. (2016), as used by AttnGAN and DF-GAN.

Inputs (found anywhere up to three folders below the given ones):
- the CUB_200_2011 release: images.txt, classes.txt, image_class_labels.txt, bounding_boxes.txt, images/;
- captions: `text_c10/<class folder>/<image name>.txt` (Reed's cvpr2016_cub release) or `text/...` in AttnGAN's
  `birds` metadata folder. An image without a caption file gets no captions (the writer skips and reports it).

A partial copy (some classes, or an interrupted download) is read as it is: images that images.txt lists but images/
lacks are left out and counted in the notes, lines of the other metadata files for absent images are ignored, and a
split with none of its classes present is prepared empty (the preparer notes it).

Split rule: class-disjoint, as StackGAN/AttnGAN/DF-GAN: the 150 train+val classes of Reed et al. are "train"
(8,855 images) and their 50 test classes are "test" (2,933 images). The test classes come from `testclasses.txt` when
the caption release holding it is given, otherwise from TEST_CLASSES below. With trust_pickle=True, AttnGAN's
`train/filenames.pickle` and `test/filenames.pickle` define the split instead; pickles are never read otherwise,
because unpickling a downloaded file can run arbitrary code.

Crop rule (AttnGAN's get_imgs): with the bounding box (x, y, w, h), r = int(max(w, h) * 0.75), the centre
cx = int((2x + w) / 2), cy = int((2y + h) / 2); the crop is rows max(0, cy - r) .. min(H, cy + r) and columns
max(0, cx - r) .. min(W, cx + r) of the H x W image.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

from t2ictl.data.download import Remote
from t2ictl.data.sources import locate
from t2ictl.data.sources.base import ExampleRef, Source, fingerprint_files, read_caption_lines
from t2ictl.errors import UserError

# The 50 test classes of the text-to-image split: Reed et al., "Learning Deep Representations of Fine-Grained Visual
# Descriptions" (CVPR 2016), cvpr2016_cub/testclasses.txt, whose images are StackGAN/AttnGAN's birds test filenames.
TEST_CLASSES = frozenset({
    "004.Groove_billed_Ani", "012.Yellow_headed_Blackbird", "023.Brandt_Cormorant", "026.Bronzed_Cowbird",
    "028.Brown_Creeper", "031.Black_billed_Cuckoo", "033.Yellow_billed_Cuckoo", "043.Yellow_bellied_Flycatcher",
    "045.Northern_Fulmar", "049.Boat_tailed_Grackle", "052.Pied_billed_Grebe", "055.Evening_Grosbeak",
    "070.Green_Violetear", "072.Pomarine_Jaeger", "077.Tropical_Kingbird", "084.Red_legged_Kittiwake",
    "087.Mallard", "091.Mockingbird", "094.White_breasted_Nuthatch", "097.Orchard_Oriole", "098.Scott_Oriole",
    "103.Sayornis", "104.American_Pipit", "111.Loggerhead_Shrike", "113.Baird_Sparrow", "119.Field_Sparrow",
    "123.Henslow_Sparrow", "124.Le_Conte_Sparrow", "127.Savannah_Sparrow", "130.Tree_Sparrow",
    "132.White_crowned_Sparrow", "136.Barn_Swallow", "138.Tree_Swallow", "139.Scarlet_Tanager", "143.Caspian_Tern",
    "148.Green_tailed_Towhee", "156.White_eyed_Vireo", "157.Yellow_throated_Vireo", "161.Blue_winged_Warbler",
    "163.Cape_May_Warbler", "164.Cerulean_Warbler", "165.Chestnut_sided_Warbler", "168.Kentucky_Warbler",
    "169.Magnolia_Warbler", "173.Orange_crowned_Warbler", "180.Wilson_Warbler", "188.Pileated_Woodpecker",
    "190.Red_cockaded_Woodpecker", "191.Red_headed_Woodpecker", "200.Common_Yellowthroat",
})

METADATA = ("images.txt", "classes.txt", "image_class_labels.txt", "bounding_boxes.txt")


def read_table(path: Path) -> dict[int, list[str]]:
    """A CUB metadata file as {id: [fields...]} (each line is `<id> <field> ...`)."""
    table = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            key, *fields = line.split()
            table[int(key)] = fields
    return table


def crop_box(bbox: tuple[float, float, float, float], height: int, width: int) -> tuple[int, int, int, int]:
    """(y, x, h, w) of AttnGAN's square-ish crop around the bounding box (x, y, w, h)."""
    x, y, w, h = bbox
    r = int(max(w, h) * 0.75)
    cx, cy = int((2 * x + w) / 2), int((2 * y + h) / 2)
    y1, y2 = max(0, cy - r), min(height, cy + r)
    x1, x2 = max(0, cx - r), min(width, cx + r)
    return y1, x1, y2 - y1, x2 - x1


def read_pickled_names(path: Path) -> list[str]:
    with open(path, "rb") as handle:
        names = pickle.load(handle, encoding="latin1")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


class CubSource(Source):
    name = "cub"
    captions_per_image = 10

    def __init__(self, inputs: list[Path], trust_pickle: bool = False):
        super().__init__()
        self.root = locate.require(inputs, "images.txt", "the CUB_200_2011 release").parent
        for name in METADATA:
            if not (self.root / name).is_file():
                raise UserError(f"{self.root} lacks {name}; is it an incomplete copy of CUB_200_2011?")
        self.text_dir = (locate.find(inputs, "text_c10", "dir") or locate.find(inputs, "birds/text", "dir")
                         or locate.find(inputs, "text", "dir"))
        if self.text_dir is None:
            raise UserError("cannot find the CUB captions (text_c10/ from Reed et al.'s cvpr2016_cub release, or "
                            "text/ from AttnGAN's birds metadata); pass them with --source")
        listed = sorted((i, fields[0]) for i, fields in read_table(self.root / "images.txt").items())
        self.image_paths = {i: path for i, path in listed if (self.root / "images" / path).is_file()}
        if len(self.image_paths) < len(listed):
            self.report.notes.append(f"{len(listed) - len(self.image_paths)} of the {len(listed)} images in "
                                     "images.txt are not under images/ (a partial copy?) and were left out")
        if not self.image_paths:
            raise UserError(f"none of the images listed in {self.root / 'images.txt'} is under {self.root / 'images'}")
        class_table = sorted(read_table(self.root / "classes.txt").items())
        self.class_names = [fields[0] for _, fields in class_table]
        index = {class_id: i for i, (class_id, _) in enumerate(class_table)}  # CUB's 1..200 become 0..199
        image_classes = read_table(self.root / "image_class_labels.txt")
        self.labels = {i: index[int(fields[0])] for i, fields in image_classes.items()}
        unlabelled = sorted(set(self.image_paths) - set(self.labels))
        if unlabelled:
            raise UserError(f"{self.root / 'image_class_labels.txt'} has no class for image {unlabelled[0]} "
                            f"({self.image_paths[unlabelled[0]]}); is it an incomplete copy?")
        self.boxes = {i: tuple(float(v) for v in fields)
                      for i, fields in read_table(self.root / "bounding_boxes.txt").items()}
        self.test_classes: list[str] = []  # empty when the pickles define the split
        self.split_rule, self.test_of = self._split_rule(inputs, trust_pickle)
        self._splits = None

    def _split_rule(self, inputs: list[Path], trust_pickle: bool):
        """A description of the rule, and a function from (image id, image path without extension) to its split
        (None: left out)."""
        train_pickle = locate.find(inputs, "train/filenames.pickle")
        test_pickle = locate.find(inputs, "test/filenames.pickle")
        if trust_pickle and train_pickle and test_pickle:
            train, test = set(read_pickled_names(train_pickle)), set(read_pickled_names(test_pickle))

            def from_pickles(image_id: int, stem: str) -> str | None:
                return "test" if stem in test else "train" if stem in train else None
            digest = hashlib.sha256(train_pickle.read_bytes() + test_pickle.read_bytes()).hexdigest()
            return f"AttnGAN's train/ and test/filenames.pickle (sha256 {digest[:16]})", from_pickles
        if trust_pickle:
            raise UserError("--trust-pickle given but train/filenames.pickle and test/filenames.pickle (AttnGAN's "
                            "birds metadata) were not found")
        if train_pickle or test_pickle:
            self.report.notes.append("AttnGAN's filenames.pickle files were found and ignored (pass --trust-pickle "
                                     "to split by them); the class-disjoint split is used")
        classes_file = locate.find(inputs, "testclasses.txt")
        if classes_file is not None:
            test_classes = {line.strip() for line in classes_file.read_text().splitlines() if line.strip()}
            rule = f"class-disjoint: the {len(test_classes)} classes in testclasses.txt are test, the others train"
        else:
            test_classes = set(TEST_CLASSES)
            rule = "class-disjoint: Reed et al.'s 50 test classes (embedded list) are test, the other 150 train"
        unknown = test_classes - set(self.class_names)
        if unknown:
            raise UserError(f"test classes {sorted(unknown)[:3]} are not in {self.root / 'classes.txt'}")
        self.test_classes = sorted(test_classes)
        test_ids = {self.class_names.index(c) for c in test_classes}

        def by_class(image_id: int, stem: str) -> str:
            return "test" if self.labels[image_id] in test_ids else "train"
        return rule, by_class

    def classes(self) -> list[str]:
        return list(self.class_names)

    def splits(self) -> dict[str, list[ExampleRef]]:
        if self._splits is None:
            self._splits = {"train": [], "test": []}
            unused = 0
            for image_id, relative in self.image_paths.items():
                stem = relative.rsplit(".", 1)[0]
                split = self.test_of(image_id, stem)
                if split is None:
                    unused += 1
                    continue
                self._splits[split].append(self._ref(image_id, relative, stem))
            if unused:
                self.report.notes.append(f"{unused} images are in neither filenames.pickle and were left out")
        return self._splits

    def _ref(self, image_id: int, relative: str, stem: str) -> ExampleRef:
        image = self.root / "images" / relative
        caption_file = self.text_dir / f"{stem}.txt"
        captions = read_caption_lines(caption_file, self.report) if caption_file.is_file() else ()
        return ExampleRef(stem, captions, (self.labels[image_id],), image.read_bytes, origin=str(image),
                          bbox=self.boxes.get(image_id))

    def crop_box(self, ref: ExampleRef, height: int, width: int) -> tuple[int, int, int, int]:
        return crop_box(ref.bbox, height, width) if ref.bbox else (0, 0, height, width)

    def describe(self) -> dict:
        return {"dataset": "CUB-200-2011", "images": str(self.root), "captions": str(self.text_dir),
                "split": self.split_rule, "test_classes": self.test_classes,
                "crop": "AttnGAN: square of half-side int(0.75 * max(box w, box h)) around the box centre, clipped "
                        "to the image"}

    def fingerprint(self) -> str:
        images = fingerprint_files(self.root, [self.root / "images" / p for p in self.image_paths.values()],
                                   [self.root / name for name in METADATA])
        captions = fingerprint_files(self.text_dir, sorted(self.text_dir.glob("*/*.txt")))
        split = f"{self.split_rule}\n{self.test_classes}"
        return hashlib.sha256(f"{images}\n{captions}\n{split}".encode()).hexdigest()


def open_source(inputs: list[Path], trust_pickle: bool = False) -> CubSource:
    return CubSource(inputs, trust_pickle=trust_pickle)


DOWNLOADS = [
    Remote("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz", "CUB_200_2011.tgz", None,
           "CUB-200-2011 images, classes, bounding boxes"),
    Remote("https://drive.google.com/uc?export=download&id=0B0ywwgffWnLLZW9uVHNjb2JmNlE", "cvpr2016_cub.tar.gz", None,
           "Reed et al.'s ten captions per image (text_c10/) and class splits"),
]
