"""Fetching official dataset files: resumable, sha256-checked, from any http(s) or file URL.

Rules:
- bytes go to `<name>.part`; a later run continues it with an HTTP Range request, and starts over when the server
  ignores the range (answers 200 instead of 206) or refuses it (416);
- when the digest is known the finished file is checked and a mismatch deletes the `.part` (it cannot be repaired by
  resuming); when it is not published the digest of the first download is recorded in `<name>.sha256` and later
  runs check against it;
- the file appears under its final name only when complete and checked;
- T2ICTL_DOWNLOAD_BASE, when set, replaces the scheme, host and folder of every official URL: the file is fetched from
  `$T2ICTL_DOWNLOAD_BASE/<filename>` (a mirror, or a local server in tests).
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from t2ictl.errors import UserError
from t2ictl.fileio import sha256_file, write_text

BASE_ENV = "T2ICTL_DOWNLOAD_BASE"
CHUNK = 1 << 16
TIMEOUT = 60  # seconds without data before a connection counts as dead


@dataclass(frozen=True)
class Remote:
    """One file of a dataset's official release."""

    url: str
    filename: str  # name it is saved under
    sha256: str | None  # None: not published; the digest is then recorded on first download
    description: str = ""  # what the file holds, named in errors


def resolved_url(remote: Remote) -> str:
    base = os.environ.get(BASE_ENV)
    return f"{base.rstrip('/')}/{remote.filename}" if base else remote.url


def fetch(remote: Remote, folder: Path, progress=None) -> Path:
    """Download `remote` into `folder` (resuming a partial download) and return the checked file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / remote.filename
    recorded = folder / f"{remote.filename}.sha256"
    expected = remote.sha256 or (recorded.read_text().strip() if recorded.exists() else None)
    if final.exists() and (expected is None or sha256_file(final) == expected):
        return final
    url = resolved_url(remote)
    part = folder / f"{remote.filename}.part"
    try:
        _download(url, part, progress, remote.filename)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise UserError(f"cannot download {url} ({_reason(exc)}); fetch {remote.filename} yourself and pass "
                        "--source <path>") from None
    digest = sha256_file(part)
    if expected is not None and digest != expected:
        part.unlink()
        raise UserError(f"{url} gave {remote.filename} with sha256 {digest}, expected {expected}; the download was "
                        "deleted, run again to retry or fetch it yourself and pass --source <path>")
    if remote.sha256 is None:
        write_text(recorded, digest + "\n")
    os.replace(part, final)
    return final


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _download(url: str, part: Path, progress, filename: str) -> None:
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not offset:
            raise
        part.unlink()  # the server refuses the range: the partial file is not a prefix it recognizes
        offset = 0
        response = urllib.request.urlopen(url, timeout=TIMEOUT)
    with response:
        if offset and response.getcode() != 206:
            offset = 0  # the server (or a file: URL) ignored the range and sends everything
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        task = progress.add_task(f"download {filename}", total=total, completed=offset, unit="B",
                                 status="resumed" if offset else "") if progress else None
        received = offset
        with open(part, "ab" if offset else "wb") as out:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                received += len(chunk)
                if progress:
                    progress.update(task, completed=received)
    if total is not None and received != total:
        raise OSError(f"connection closed after {received} of {total} bytes; run again to resume")
