"""What `t2ictl prepare --source/--download` hands to a dataset source: a list of folders to read.

Generated datasets (shapes, shapes-multi) read nothing. For the others each --source is a folder (read in place), an
official archive (extracted once under OUT/extracted/) or a single metadata file (such as imagelabels.mat, passed on
as it is); --download fetches the dataset's official files into OUT/downloads/ first.
"""

from __future__ import annotations

from pathlib import Path

from t2ictl.errors import UserError

ARCHIVE_SUFFIXES = (".tgz", ".tar.gz", ".tar", ".zip")


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def resolve_inputs(name: str, sources: list[Path], download: bool, out: Path, progress=None) -> list[Path]:
    if name.startswith("shapes"):
        if sources or download:
            raise UserError(f"{name} is generated; it takes no --source or --download")
        return []
    from t2ictl.data import sources as registry

    remotes = registry.module(name).DOWNLOADS
    if not remotes and (download or len(sources) != 1):
        raise UserError(f"prepare {name} reads your own data: pass its folder as the one --source DIR (it has no "
                        "download)")
    if download:
        from t2ictl.data.download import fetch

        sources = list(sources) + [fetch(remote, Path(out) / "downloads", progress) for remote in remotes]
    if not sources:
        files = "; ".join(f"{r.filename} ({r.url})" for r in remotes)
        raise UserError(f"{name} needs its official files: {files}; pass them (or their extracted folders) with "
                        "--source PATH, or use --download")
    folders = []
    for source in sources:
        source = Path(source)
        if not source.exists():
            raise UserError(f"--source {source} does not exist")
        if is_archive(source) and source.is_file():
            from t2ictl.data.archives import extract

            folders.append(extract(source, Path(out) / "extracted", progress))
        else:
            folders.append(source)
    return folders
