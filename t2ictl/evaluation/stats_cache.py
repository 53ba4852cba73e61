"""A cache of real-image Inception statistics (mu, sigma) as .npz files.

The file name is a digest of the key (what was measured: dataset, split, data checksum, image size, network, resize
rule, image count); the key is stored in the file too and compared on load, so a stale or foreign file is never used.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

from t2ictl import fileio

RESIZE_RULE = "bilinear-half-pixel-299-v1"  # part of every key: a change to preprocessing invalidates the cache


def default_folder() -> Path:
    return Path(os.environ.get("T2ICTL_CACHE", Path.home() / ".cache" / "t2ictl")) / "fid-stats"


def _key_text(key: dict) -> str:
    return json.dumps({**key, "resize": RESIZE_RULE}, sort_keys=True)


def _path(folder: Path, key: dict) -> Path:
    return Path(folder) / f"{digest_text(_key_text(key))}.npz"


def load(folder: Path, key: dict) -> tuple[np.ndarray, np.ndarray] | None:
    path = _path(folder, key)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["key"]) != _key_text(key):
                return None
            return stored["mu"], stored["sigma"]
    except (OSError, ValueError, KeyError):  # a damaged cache file is recomputed and replaced
        return None


def save(folder: Path, key: dict, mu: np.ndarray, sigma: np.ndarray) -> Path:
    path = _path(folder, key)
    write_statistics(path, mu, sigma, key=np.array(_key_text(key)))
    return path


def write_statistics(path: Path, mu: np.ndarray, sigma: np.ndarray, **extra: np.ndarray) -> None:
    """mu and sigma as an .npz, pytorch-fid's --save-stats layout (a cache file adds its key), written atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, mu=mu, sigma=sigma, **extra)
    fileio.write_bytes(Path(path), buffer.getvalue())


def digest_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]
