"""OffsetIndex: the sparse map from offset to file position of one segment.

Each ``.index`` file entry is 8 bytes, little-endian: the offset of a batch
relative to the segment's base offset (u32) and the byte position of that batch
in the ``.log`` file (u32). The segment adds an entry every
``index.interval.bytes`` appended, so a lookup lands at most that many bytes
before the wanted batch and the segment scans batch headers from there
(``segment.py``). Both columns strictly increase, so either can be
binary-searched. File mechanics (preallocation, mmap, trimming) live in
``index_file.py``.
"""

from __future__ import annotations

import bisect
import struct
import sys

from .index_file import Column, CorruptIndexError, IndexFile

_LITTLE_ENDIAN_HOST = sys.byteorder == "little"


class OffsetIndex(IndexFile):
    ENTRY = struct.Struct("<II")

    def __init__(self, path: str, base_offset: int, max_index_bytes: int = 10 * 1024 * 1024,
                 writable: bool = True):
        self._u32 = None
        super().__init__(path, base_offset, max_index_bytes, writable)
        self._after_reset()
        if self.entries:
            self._last_rel, self._last_pos = self.entry(self.entries - 1)

    def _after_reset(self) -> None:
        self._last_rel = -1
        self._last_pos = -1

    def _release_views(self) -> None:
        if self._u32 is not None:
            self._u32.release()
            self._u32 = None

    def _columns(self):
        n = self.entries
        if _LITTLE_ENDIAN_HOST:
            if self._u32 is None:
                self._u32 = memoryview(self._mm).cast("I")
            return self._u32[0:2 * n:2], self._u32[1:2 * n:2]
        return (Column(self._mm, n, 8, 0, "<I"), Column(self._mm, n, 8, 4, "<I"))

    def append(self, offset: int, position: int) -> None:
        """Record that the batch starting at absolute ``offset`` sits at ``position``."""
        rel = offset - self.base_offset
        if rel <= self._last_rel or position <= self._last_pos:
            raise ValueError(f"{self.path}: index entry ({offset}, {position}) does not follow "
                             f"({self._last_rel + self.base_offset}, {self._last_pos})")
        self._append_raw(rel, position)
        self._last_rel, self._last_pos = rel, position

    def lookup(self, offset: int) -> tuple[int, int]:
        """(offset, position) of the last entry at or before ``offset``; (base, 0) if none."""
        if not self.entries:
            return self.base_offset, 0
        offsets, positions = self._columns()
        i = bisect.bisect_right(offsets, offset - self.base_offset)
        if i == 0:
            return self.base_offset, 0
        return self.base_offset + offsets[i - 1], positions[i - 1]

    def lookup_position(self, position: int) -> tuple[int, int]:
        """(offset, position) of the last entry whose position is at or before ``position``."""
        if not self.entries:
            return self.base_offset, 0
        offsets, positions = self._columns()
        i = bisect.bisect_right(positions, position)
        if i == 0:
            return self.base_offset, 0
        return self.base_offset + offsets[i - 1], positions[i - 1]

    @property
    def last_entry(self) -> tuple[int, int]:
        if not self.entries:
            return self.base_offset, 0
        return self.base_offset + self._last_rel, self._last_pos

    def sanity_check(self, log_size: int) -> None:
        """Raise CorruptIndexError unless both columns strictly increase and fit the log."""
        if not self.entries:
            return
        offsets, positions = self._columns()
        offs, poss = list(offsets), list(positions)
        if isinstance(offsets, memoryview):
            # A view left alive (say by a traceback) would stop the map from ever closing.
            offsets.release()
            positions.release()
        if any(a >= b for a, b in zip(offs, offs[1:])) or any(a >= b for a, b in zip(poss, poss[1:])):
            raise CorruptIndexError(f"{self.path}: entries are not strictly increasing")
        if poss[-1] >= log_size:
            raise CorruptIndexError(
                f"{self.path}: last entry points at position {poss[-1]} beyond log size {log_size}")
