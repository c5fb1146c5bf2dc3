"""IndexFile: a preallocated, memory-mapped file of fixed-size entries.

The mechanics shared by the offset index (``offset_index.py``) and the time
index (``time_index.py``): creating the file at its maximum size so appends are
stores into the map, finding how many entries a file really holds after an
unclean shutdown (the preallocated tail is zeros), trimming the file to its
entries when the segment rolls, flushing and closing. What an entry means and
how it is searched is left to the subclasses.

Entries are little-endian so that, on the little-endian machines we run on, a
column of the map can be viewed as a C array and binary-searched by ``bisect``
without Python-level unpacking.
"""

from __future__ import annotations

import mmap
import os
import struct

_PAGE = mmap.PAGESIZE


class CorruptIndexError(Exception):
    """An index file cannot be trusted; the caller rebuilds it from the log."""


class IndexFullError(Exception):
    """The preallocated index has no room; the segment must roll."""


class IndexFile:
    ENTRY: struct.Struct  # set by subclasses

    def __init__(self, path: str, base_offset: int, max_index_bytes: int, writable: bool):
        self.path = path
        self.base_offset = base_offset
        self._esize = self.ENTRY.size
        self._max_bytes = max_index_bytes - max_index_bytes % self._esize
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            size = os.fstat(self._fd).st_size
            if size % self._esize:
                raise CorruptIndexError(f"{path}: size {size} is not a multiple of {self._esize}")
            self._writable = writable
            if writable and size < self._max_bytes:
                os.ftruncate(self._fd, self._max_bytes)  # new pages read as zeros
            self._map()
            # A new (empty) file has no entries: skip the search, whose page faults on a fresh
            # sparse file cost milliseconds each under memory pressure and made creating the
            # 500th topic five times slower than the first.
            self.entries = self._count_entries() if size else 0
            self._given = self._pages_in_use()
        except BaseException:
            self._unmap()
            os.close(self._fd)
            raise

    # -- mapping ----------------------------------------------------------

    def _map(self) -> None:
        size = os.fstat(self._fd).st_size
        self._mm = mmap.mmap(self._fd, size) if size else None
        self._slots = size // self._esize

    def _unmap(self) -> None:
        self._release_views()
        mm = getattr(self, "_mm", None)
        if mm is not None:
            mm.close()
        self._mm = None

    def _release_views(self) -> None:
        """Subclasses drop memoryviews of the map here (an exported map cannot close)."""

    def _count_entries(self) -> int:
        """Number of entries before the zero-filled preallocated tail.

        Valid entries after the first are never all-zero (offsets strictly
        increase from the first), so "entry i is zero" is false then true along
        the file and a binary search finds the boundary. A garbage file breaks
        that assumption; :meth:`sanity_check` of the subclass catches it.
        """
        mm, e = self._mm, self._esize
        if mm is None:
            return 0
        zero = bytes(e)
        lo, hi = 1, self._slots  # first zero entry lies in [lo, hi]
        while lo < hi:
            mid = (lo + hi) // 2
            if mm[mid * e:(mid + 1) * e] == zero:
                hi = mid
            else:
                lo = mid + 1
        if lo == 1 and mm[0:e] == zero:
            return 0  # an all-zero first entry is indistinguishable from none; lookups default to it anyway
        return lo

    # -- writing ----------------------------------------------------------

    @property
    def fd(self) -> int:
        return self._fd

    @property
    def free_slots(self) -> int:
        return self._slots - self.entries

    @property
    def is_full(self) -> bool:
        return self.entries >= self._slots

    def _pages_in_use(self) -> int:
        """Where the pages holding entries end: the file's pages from here on were never written."""
        return -(-self.entries * self._esize // _PAGE) * _PAGE

    def _append_raw(self, *fields) -> None:
        if self.entries >= self._slots:
            raise IndexFullError(f"{self.path}: index full at {self.entries} entries")
        at = self.entries * self._esize
        if at + self._esize + _PAGE > self._given:
            self._give_pages(at + self._esize + _PAGE)
        self.ENTRY.pack_into(self._mm, at, *fields)
        self.entries += 1

    def _give_pages(self, end: int) -> None:
        """Write a zero (the byte already there) at the start of each page up to `end` that no
        entry has reached yet, with pwrite, one page ahead of the entries.

        The first store through the map into a page of the sparse file that the file does not
        have yet is a write fault that cost 3-39 ms while other work kept this machine's disk
        busy (once per file, at whichever page the map allocates first); the segment's first
        index entries paid it inside an append on the event loop, stalling every client. A
        page that write() gave the file takes the store in microseconds, and the pwrite costs
        a few. Only bytes no entry holds are written, before the entry that follows them."""
        if not self._writable:
            return   # a trimmed file: its pages all hold entries
        given, limit = self._given, min(end, self._max_bytes)
        while given < limit:
            os.pwrite(self._fd, b"\0", given)
            given += _PAGE
        self._given = given

    def entry(self, i: int) -> tuple:
        return self.ENTRY.unpack_from(self._mm, i * self._esize)

    def trim(self) -> None:
        """Shrink the file to its entries (on roll or close) and stop preallocating."""
        self._unmap()
        os.ftruncate(self._fd, self.entries * self._esize)
        self._writable = False
        self._map()

    def make_writable(self) -> None:
        """Grow the file back to its preallocated size (the segment became active again)."""
        if self._writable:
            return
        self._unmap()
        if os.fstat(self._fd).st_size < self._max_bytes:
            os.ftruncate(self._fd, self._max_bytes)
        self._writable = True
        self._given = self._pages_in_use()
        self._map()

    def reset(self) -> None:
        """Drop every entry (before a rebuild)."""
        self._unmap()
        os.ftruncate(self._fd, 0)
        os.ftruncate(self._fd, max(self._max_bytes, self._esize))
        self._writable = True
        self.entries = 0
        self._given = 0
        self._map()
        self._after_reset()

    def _after_reset(self) -> None:
        """Subclasses forget cached last entries here."""

    def flush(self) -> None:
        if self._mm is not None:
            self._mm.flush()
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd < 0:
            return
        self._unmap()
        os.close(self._fd)
        self._fd = -1

    def rename(self, path: str) -> None:
        os.rename(self.path, path)
        self.path = path

    @property
    def size_bytes(self) -> int:
        return self.entries * self._esize


class Column:
    """A read-only sequence over one field of every entry, for ``bisect``.

    Works on any byte order; the offset index replaces it with a zero-copy
    memoryview when the host is little-endian.
    """

    __slots__ = ("_buf", "_len", "_step", "_at", "_unpack")

    def __init__(self, buf, length: int, entry_size: int, field_at: int, fmt: str):
        self._buf, self._len, self._step, self._at = buf, length, entry_size, field_at
        self._unpack = struct.Struct(fmt).unpack_from

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int):
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(i)
        return self._unpack(self._buf, i * self._step + self._at)[0]
