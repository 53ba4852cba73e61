"""Fetching official dataset files: resumable, sha256-checked, from any http(s) or file URL."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Remote:
    """One file of a dataset's official release."""

    url: str
    filename: str  # name it is saved under
    sha256: str | None  # None: not published; the digest is then recorded on first download
    description: str = ""  # what the file holds, named in errors
