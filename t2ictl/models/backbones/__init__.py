"""Backbones by recipe name. A new backbone is one module here, its recipe section in configs.py (CONFIGS) and one
line in BACKBONES."""

from __future__ import annotations

import importlib

from t2ictl.models.backbones.base import Backbone, BackboneConfig, Encoders

BACKBONES = {
    "dfgan": "t2ictl.models.backbones.dfgan:DFGAN",
    "attngan": "t2ictl.models.backbones.attngan:AttnGAN",
    "dmgan": "t2ictl.models.backbones.dmgan:DMGAN",
    "ssagan": "t2ictl.models.backbones.ssagan:SSAGAN",
    "galip": "t2ictl.models.backbones.galip:GALIP",
}


def backbone_class(name: str) -> type[Backbone]:
    if name not in BACKBONES:
        raise ValueError(f"backbone: {name!r} is not one of {', '.join(BACKBONES)}")
    module, _, cls = BACKBONES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def config_class(name: str) -> type[BackboneConfig]:
    """The class of the backbone's recipe section, without importing the backbone (nor TensorFlow)."""
    from t2ictl.models.backbones.configs import CONFIGS

    return CONFIGS[name]


__all__ = ["Backbone", "BackboneConfig", "Encoders", "BACKBONES", "backbone_class", "config_class"]
