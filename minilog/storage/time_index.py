"""TimeIndex: the sparse map from timestamp to offset of one segment.

Each ``.timeindex`` entry is 12 bytes, little-endian: a timestamp (i64, ms since
epoch) and an offset relative to the segment base (u32). The timestamp is the
largest record timestamp seen so far in the segment and the offset is that of
the batch that carried it; entries are only added when that maximum grows, so
both columns increase. Therefore, for an entry (t, o) with t < T, no batch up to
o holds a record at or after T, and a search for T may start at o. The scan
after the lookup, and picking the record inside the batch, is ``segment.py``'s.
"""

from __future__ import annotations

import bisect
import struct

from .index_file import Column, CorruptIndexError, IndexFile


class TimeIndex(IndexFile):
    ENTRY = struct.Struct("<qI")

    def __init__(self, path: str, base_offset: int, max_index_bytes: int = 10 * 1024 * 1024,
                 writable: bool = True):
        super().__init__(path, base_offset, max_index_bytes, writable)
        self._after_reset()
        if self.entries:
            self._last_ts, self._last_rel = self.entry(self.entries - 1)

    def _after_reset(self) -> None:
        self._last_ts = -1
        self._last_rel = -1

    @property
    def last_entry(self) -> tuple[int, int] | None:
        """(timestamp, absolute offset) of the newest entry, or None."""
        if not self.entries:
            return None
        return self._last_ts, self.base_offset + self._last_rel

    def maybe_append(self, timestamp: int, offset: int) -> bool:
        """Add (timestamp, offset) if ``timestamp`` is newer than the last entry."""
        rel = offset - self.base_offset
        if timestamp <= self._last_ts:
            return False
        if rel < self._last_rel:
            raise ValueError(f"{self.path}: time index offset {offset} goes backwards")
        self._append_raw(timestamp, rel)
        self._last_ts, self._last_rel = timestamp, rel
        return True

    def lookup_before(self, timestamp: int) -> tuple[int, int] | None:
        """(timestamp, absolute offset) of the last entry strictly older than ``timestamp``."""
        if not self.entries:
            return None
        stamps = Column(self._mm, self.entries, 12, 0, "<q")
        i = bisect.bisect_left(stamps, timestamp)
        if i == 0:
            return None
        ts, rel = self.entry(i - 1)
        return ts, self.base_offset + rel

    def sanity_check(self, next_offset: int) -> None:
        """Raise CorruptIndexError unless both columns increase and offsets are below ``next_offset``."""
        if not self.entries:
            return
        rows = list(struct.iter_unpack("<qI", self._mm[:self.entries * 12]))
        if any(a[0] >= b[0] or a[1] > b[1] for a, b in zip(rows, rows[1:])):
            raise CorruptIndexError(f"{self.path}: entries are not increasing")
        if self.base_offset + rows[-1][1] >= max(next_offset, self.base_offset + 1):
            raise CorruptIndexError(
                f"{self.path}: last entry offset {self.base_offset + rows[-1][1]} beyond log end {next_offset}")
