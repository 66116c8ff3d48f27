"""Atomic file and directory writes: write aside, fsync, rename.

A crash at any moment leaves either the old file (or directory) or the new one,
never a half-written one: ``rename`` within one file system is atomic.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

TMP_PREFIX = ".tmp-"


def fsync_dir(path) -> None:
    """Flush a directory entry (the rename itself) to disk."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not fsync directories
    finally:
        os.close(fd)


def fsync_tree(path) -> None:
    """fsync every file and directory below ``path`` (and ``path`` itself)."""
    path = Path(path)
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(root)


def write_with(path, write) -> None:
    """Replace ``path`` with the file ``write(tmp_path)`` makes (``tmp_path`` keeps the
    suffix of ``path``: ``model.save`` wants ``.keras``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{TMP_PREFIX}{path.stem}.{os.getpid()}{path.suffix}"
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def write_text(path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically."""
    write_with(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def temp_dir(parent, name: str) -> Path:
    """A fresh ``parent/.tmp-<name>.<pid>`` directory to write into before ``publish``."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f"{TMP_PREFIX}{name}.{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def publish(tmp, final) -> Path:
    """fsync the finished ``tmp`` directory (or file) and rename it to ``final``."""
    tmp, final = Path(tmp), Path(final)
    if tmp.is_dir():
        fsync_tree(tmp)
    else:
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    if final.exists():
        raise FileExistsError(f"{final} already exists; refusing to overwrite it")
    os.rename(tmp, final)
    fsync_dir(final.parent)
    return final


@contextlib.contextmanager
def new_directory(parent, name: str):
    """Write a directory ``parent/name`` atomically: the body fills the yielded temporary
    directory, which is then published (``publish``); on an exception it is removed and
    ``parent/name`` never appears."""
    tmp = temp_dir(parent, name)
    try:
        yield tmp
        publish(tmp, Path(parent) / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale(parent) -> None:
    """Delete ``.tmp-*`` leftovers of writers that were killed."""
    parent = Path(parent)
    if not parent.is_dir():
        return
    for entry in parent.iterdir():
        if entry.name.startswith(TMP_PREFIX):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                try:
                    entry.unlink()
                except OSError:
                    pass
