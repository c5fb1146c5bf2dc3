"""Small state files written atomically: offset checkpoints and JSON documents.

A checkpoint is replaced, never edited: write a temp file, fsync it, rename it
over the old one, fsync the directory. A crash leaves either the old or the new
content, never a mix. What the offsets mean (recovery point, log start) is
``log.py``'s and ``recovery.py``'s business.

Offset checkpoint format (text, so an operator can read it)::

    0            <- format version
    <offset>     <- decimal offset
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

logger = logging.getLogger("minilog.storage")

RECOVERY_POINT_FILE = "recovery-point-offset-checkpoint"
LOG_START_OFFSET_FILE = "log-start-offset-checkpoint"
TEMP_SUFFIX = ".tmp"
_MAX_NAME_BYTES = 255  # NAME_MAX of Linux file systems
_VERSION = 0


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(path: str) -> str:
    """Where ``path`` is written before its rename: ``<name>.tmp`` beside it.

    When that name would pass the file system's 255-byte limit (a topic config of a
    249-character topic), a short name derived from a hash of the full one is used instead;
    it still ends in ``.tmp`` so leftovers are recognised.
    """
    directory, name = os.path.split(path)
    if len((name + TEMP_SUFFIX).encode()) <= _MAX_NAME_BYTES:
        return path + TEMP_SUFFIX
    return os.path.join(directory, "." + hashlib.sha256(name.encode()).hexdigest()[:32] + TEMP_SUFFIX)


def write_atomically(path: str, data: bytes) -> None:
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")


def write_offset_checkpoint(path: str, offset: int) -> None:
    write_atomically(path, f"{_VERSION}\n{offset}\n".encode())


def read_offset_checkpoint(path: str) -> int | None:
    """The offset in ``path``; None if the file is missing or unreadable (logged)."""
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("ascii").split("\n")
        if lines[0] != str(_VERSION) or len(lines) < 2:
            raise ValueError(f"unexpected content {lines[:2]!r}")
        offset = int(lines[1])
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        return offset
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as exc:
        logger.warning("ignoring unreadable checkpoint %s: %s", path, exc)
        return None


def write_json(path: str, document) -> None:
    write_atomically(path, json.dumps(document, indent=2, sort_keys=True).encode() + b"\n")


def read_json(path: str):
    with open(path, "rb") as f:
        return json.loads(f.read())
