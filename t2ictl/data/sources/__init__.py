"""Dataset sources by name, the one list of the datasets t2ictl knows (recipes and `prepare` take theirs from here).
Each module defines `open_source(inputs, **options) -> Source` and `DOWNLOADS`."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from t2ictl.data.sources.base import ExampleRef, Source

MODULES = {
    "shapes": "t2ictl.data.sources.shapes",
    "shapes-multi": "t2ictl.data.sources.shapes",
    "cub": "t2ictl.data.sources.cub",
    "coco": "t2ictl.data.sources.coco",
    "flowers": "t2ictl.data.sources.flowers",
    "folder": "t2ictl.data.sources.folder",
}
DATASETS = tuple(MODULES)


def module(name: str) -> ModuleType:
    return importlib.import_module(MODULES[name])


def open_source(name: str, inputs: list[Path], **options) -> Source:
    """The source `name` reading the given input folders (archives are extracted before this)."""
    if name.startswith("shapes"):
        return module(name).open_source(inputs, multi_object=name == "shapes-multi", **options)
    return module(name).open_source(inputs, **options)


__all__ = ["DATASETS", "ExampleRef", "Source", "MODULES", "module", "open_source"]
