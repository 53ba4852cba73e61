"""The interface every dataset source implements, and the example it hands to the record writer."""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable


@dataclass(frozen=True)
class ExampleRef:
    """One image with its captions and labels, not yet read from disk."""

    example_id: str  # unique within the dataset, stable across runs
    captions: tuple[str, ...]  # empty means "image without captions": the writer skips and reports it
    label_ids: tuple[int, ...]  # indices into Source.classes(); empty for an image with no label
    load_image: Callable[[], bytes] = field(compare=False, repr=False)  # the encoded JPEG/PNG bytes
    origin: str = ""  # where it came from (a file path), named in errors and skip reports
    bbox: tuple[float, float, float, float] | None = None  # object box x, y, w, h in pixels, if the dataset has one


@dataclass
class SourceReport:
    """What a source dropped while reading its metadata, reported in the summary and the manifest."""

    empty_captions: int = 0  # blank caption lines dropped
    notes: list[str] = field(default_factory=list)


class Source(abc.ABC):
    """A dataset as the preparation step sees it: classes, and ordered examples per split."""

    name: str
    multi_label: bool = False
    captions_per_image: int = 0  # how many captions the release has per image (0: varies)

    def __init__(self) -> None:
        self.report = SourceReport()

    @abc.abstractmethod
    def classes(self) -> list[str]:
        """Class names; label ids index this list."""

    @abc.abstractmethod
    def splits(self) -> dict[str, list[ExampleRef]]:
        """Examples per split ("train", "test", ...), each list in a deterministic order."""

    @abc.abstractmethod
    def describe(self) -> dict:
        """Where the data came from and which rules were applied (split, crop), for the manifest."""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """Changes when the source data changes; a resumed prepare refuses a changed source."""

    def crop_box(self, ref: ExampleRef, height: int, width: int) -> tuple[int, int, int, int]:
        """The region of the image (y, x, h, w) the models see; the whole image unless a source says otherwise."""
        return 0, 0, height, width


def fingerprint_files(root: Path, files: Iterable[Path], hash_contents: Iterable[Path] = ()) -> str:
    """Hash of the names and sizes of `files` and the full contents of `hash_contents` (the small metadata files)."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(f"{path.relative_to(root)}:{path.stat().st_size}\n".encode())
    for path in sorted(hash_contents):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def read_caption_lines(path: Path, report: SourceReport) -> tuple[str, ...]:
    """Non-empty caption lines of a text file; blank lines are dropped and counted."""
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = [line.strip() for line in text.splitlines()]
    kept = tuple(line for line in lines if line)
    report.empty_captions += len(lines) - len(kept)
    return kept
