"""One server per data directory: an exclusive flock on ``<data_dir>/LOCK``.

Two servers writing the same files corrupt them (two journals or logs appending to the same
segments, clean-shutdown markers written while the other still runs). The lock is an
``flock``, which the kernel drops when the process dies, so a kill -9 never leaves a stale
lock behind and nothing needs cleaning up by hand.
"""

from __future__ import annotations

import fcntl
import os

LOCK_FILE = "LOCK"


class DataDirLockedError(OSError):
    """Another process holds the data directory."""


class DataDirLock:
    """Holds the lock of one data directory until :meth:`release` (or the process ends)."""

    def __init__(self, data_dir: str, owner: str):
        os.makedirs(data_dir, exist_ok=True)
        self.path = os.path.join(data_dir, LOCK_FILE)
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.close()
            raise DataDirLockedError(f"data directory {data_dir} is in use by another {owner}; "
                                     "stop it or start this one with another --data-dir") from None

    def release(self) -> None:
        if not self._file.closed:
            self._file.close()  # closing the file drops the flock
