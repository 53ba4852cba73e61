"""Finding a release's files inside the folders the user gave.

An extracted archive usually holds one top folder (`CUB_200_2011/...`) and users pass either that folder or its parent,
so every path is looked up at the given folders and up to SEARCH_DEPTH folders below them, nearest first. A single
file given directly (such as imagelabels.mat) is found by its name.
"""

from __future__ import annotations

import os
from pathlib import Path

from t2ictl.errors import UserError

SEARCH_DEPTH = 3


def find(inputs: list[Path], relative: str, kind: str = "file", depth: int = SEARCH_DEPTH) -> Path | None:
    """The first `<folder>/<relative>` of the given `kind` ("file" or "dir"), breadth first; None when absent."""
    inputs = [Path(p) for p in inputs]
    for path in inputs:
        if kind == "file" and path.is_file() and path.name == relative:
            return path
    level = sorted(p for p in inputs if p.is_dir())
    for _ in range(depth + 1):
        for folder in level:
            candidate = folder / relative
            if candidate.is_dir() if kind == "dir" else candidate.is_file():
                return candidate
        level = [Path(entry.path) for folder in level for entry in sorted(os.scandir(folder), key=lambda e: e.name)
                 if entry.is_dir() and not entry.name.startswith(".")]
    return None


def require(inputs: list[Path], relative: str, what: str, kind: str = "file") -> Path:
    found = find(inputs, relative, kind)
    if found is None:
        searched = ", ".join(str(p) for p in inputs) or "(no folders)"
        raise UserError(f"cannot find {relative} ({what}) in {searched} or {SEARCH_DEPTH} folders below; pass the "
                        "folder or archive that holds it with --source")
    return found
