"""Atomic writes: complete or absent, readable as open() would make them, the rename made durable."""

import os
import stat

import pytest

from t2ictl import fileio


@pytest.fixture
def umask():
    def set_umask(mask):
        os.umask(mask)

    saved = os.umask(0o022)
    yield set_umask
    os.umask(saved)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077, 0o002])
def test_written_files_follow_the_umask_as_open_does(tmp_path, umask, mask):
    umask(mask)
    fileio.write_text(tmp_path / "recipe.toml", "a = 1\n")
    with open(tmp_path / "by-open.txt", "w") as handle:
        handle.write("a = 1\n")
    mode = stat.S_IMODE((tmp_path / "recipe.toml").stat().st_mode)
    assert mode == 0o666 & ~mask
    assert mode == stat.S_IMODE((tmp_path / "by-open.txt").stat().st_mode)


def test_atomic_path_leaves_nothing_behind_when_the_writer_fails(tmp_path):
    (tmp_path / "manifest.json").write_text("old")
    with pytest.raises(RuntimeError):
        with fileio.atomic_path(tmp_path / "manifest.json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert (tmp_path / "manifest.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_the_rename_and_its_folder_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append(len(synced)), real_replace(a, b)))
    fileio.write_json(tmp_path / "sub" / "manifest.json", {"b": 1, "a": 2})
    assert (tmp_path / "sub" / "manifest.json").read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
    assert len(synced) == 2 and replaced == [1]  # the file's data before the rename, its folder after it
    assert synced[0].startswith(str(tmp_path / "sub" / ".manifest.json."))
    assert synced[1] == str(tmp_path / "sub")
