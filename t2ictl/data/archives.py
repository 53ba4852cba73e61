"""Extracting official dataset archives (.tgz, .tar.gz, .tar, .zip) safely, once, and atomically.

Rules:
- every member is checked before it is written: absolute paths, `..` components, links that lead outside the target
  and device or FIFO files are refused (the archive is not trusted);
- a truncated or corrupt archive is reported as such, naming the file;
- members go into a hidden temporary folder beside the final one, which is renamed when everything is written, so an
  interrupted extraction leaves nothing under the final name;
- a marker file inside the extracted folder records the archive's name, size and modification time; extracting the
  same archive again does nothing.
"""

from __future__ import annotations

import json
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path

from t2ictl.errors import UserError

MARKER = ".t2ictl-extracted.json"
TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
ZIP_SUFFIXES = (".zip",)


def archive_stem(archive: Path) -> str:
    """The archive's name without its archive suffix: `CUB_200_2011.tgz` -> `CUB_200_2011`."""
    name = archive.name
    for suffix in TAR_SUFFIXES + ZIP_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    raise UserError(f"{archive} is not a supported archive ({', '.join(TAR_SUFFIXES + ZIP_SUFFIXES)})")


def extract(archive: Path, target: Path, progress=None) -> Path:
    """Extract `archive` into `target`/<archive stem> (skipped when already done) and return that folder."""
    archive, target = Path(archive), Path(target)
    final = target / archive_stem(archive)
    stamp = _stamp(archive)
    marker = final / MARKER
    if marker.exists() and json.loads(marker.read_text()) == stamp:
        return final
    target.mkdir(parents=True, exist_ok=True)
    for stale in target.glob(f".{final.name}.*.tmp"):  # left by an extraction that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=target))
    try:
        if archive.name.lower().endswith(ZIP_SUFFIXES):
            _extract_zip(archive, tmp, progress)
        else:
            _extract_tar(archive, tmp, progress)
        (tmp / MARKER).write_text(json.dumps(stamp))
        if final.exists():  # extracted from an older version of the archive
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _stamp(archive: Path) -> dict:
    try:
        info = archive.stat()
    except FileNotFoundError:
        raise UserError(f"archive {archive} does not exist") from None
    return {"archive": archive.name, "size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _member_path(archive: Path, name: str) -> str:
    """The member's normalized relative path, or a UserError when it would land outside the target."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UserError(f"{archive}: member {name!r} has an absolute path; refusing to extract it")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise UserError(f"{archive}: member {name!r} points outside the extraction folder ('..'); refusing to "
                        "extract it")
    return posixpath.normpath("/".join(p for p in parts if p not in ("", ".")) or ".")


def _check_link(archive: Path, member: str, link_target: str, relative_to_member: bool) -> None:
    """Refuse a link whose target resolves outside the extraction folder."""
    if link_target.startswith("/"):
        raise UserError(f"{archive}: member {member!r} links to the absolute path {link_target!r}; refusing to "
                        "extract it")
    base = posixpath.dirname(member) if relative_to_member else ""
    resolved = posixpath.normpath(posixpath.join(base, link_target))
    if resolved == ".." or resolved.startswith("../"):
        raise UserError(f"{archive}: member {member!r} links outside the extraction folder ({link_target!r}); "
                        "refusing to extract it")


def _corrupt(archive: Path, exc: BaseException) -> UserError:
    return UserError(f"cannot extract {archive}: it is truncated or corrupt ({exc or type(exc).__name__}); "
                     "download it again")


def _extract_tar(archive: Path, tmp: Path, progress) -> None:
    total = archive.stat().st_size
    task = progress.add_task(f"extract {archive.name}", total=total, unit="B", status="") if progress else None
    with open(archive, "rb") as raw:
        try:
            with tarfile.open(fileobj=raw, mode="r:*") as tar:
                for member in tar:
                    name = _member_path(archive, member.name)
                    if member.issym():
                        _check_link(archive, name, member.linkname, relative_to_member=True)
                    elif member.islnk():
                        _check_link(archive, name, member.linkname, relative_to_member=False)
                    elif not (member.isfile() or member.isdir()):
                        raise UserError(f"{archive}: member {member.name!r} is a device or FIFO file; refusing to "
                                        "extract it")
                    # the "data" filter re-checks paths and links and drops owners and special permission bits
                    tar.extract(member, tmp, filter="data")
                    if progress:
                        progress.update(task, completed=raw.tell())
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            if isinstance(exc, tarfile.FilterError):
                raise UserError(f"{archive}: member {exc.tarinfo.name!r} is unsafe ({exc}); refusing to extract "
                                "it") from None
            raise _corrupt(archive, exc) from None


def _extract_zip(archive: Path, tmp: Path, progress) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for info in members:
                name = _member_path(archive, info.filename)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    _check_link(archive, name, zf.read(info).decode("utf-8", "replace"), relative_to_member=True)
                elif stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                    raise UserError(f"{archive}: member {info.filename!r} is a device or FIFO file; refusing to "
                                    "extract it")
            task = progress.add_task(f"extract {archive.name}", total=sum(i.compress_size for i in members),
                                     unit="B", status="") if progress else None
            for info in members:
                zf.extract(info, tmp)
                if progress:
                    progress.advance(task, info.compress_size)
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as exc:
        raise _corrupt(archive, exc) from None
