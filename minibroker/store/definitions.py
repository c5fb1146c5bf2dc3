"""Durable definitions: the exchanges, queues and bindings that survive a restart.

Definitions change rarely (a declare, a bind) and are small (kilobytes even with thousands
of queues), so the whole set is rewritten on every change as one file,
`definitions.msgpack`, replaced atomically:

    write definitions.msgpack.tmp -> fsync it -> rename over definitions.msgpack -> fsync the dir

`rename` replaces the directory entry in one step, so after a crash at any point the file
holds either the old set or the new one, never a mix. The file also carries a magic number
and a CRC32 of its body, so disk corruption is reported instead of half-read. An
append-only definitions log would make each change cheaper, but would need its own
compaction and torn-tail recovery; for data this small and this rarely written, the snapshot
is simpler and just as safe.

What is stored is plain data (dicts of strings, bools, ints and argument maps); what a
definition *means* (routing, queue arguments) is the broker core's business. Transient
(non-durable) definitions never reach this store.
"""

import logging
import os
import struct
import zlib

import msgpack

log = logging.getLogger("minibroker.store")

FILE_NAME = "definitions.msgpack"
MAGIC = b"MBDEFS01"
_HEADER = struct.Struct(">8sII")  # magic, body length, crc32(body)


class DefinitionsCorrupt(Exception):
    """definitions.msgpack exists but cannot be read; the message says what to do."""


def _binding_key(b: dict) -> tuple:
    return (b["source"], b["destination"], b.get("destination_kind", "queue"), b["routing_key"],
            msgpack.packb(b.get("arguments") or {}, use_bin_type=True))


class DefinitionsStore:
    """Durable exchanges, queues and bindings in one atomically replaced file.

    exchanges: {name: {"type", "durable", "auto_delete", "internal", "arguments"}}
    queues:    {name: {"durable", "exclusive", "auto_delete", "arguments"}}
    bindings:  [{"source", "destination", "destination_kind" ("queue"|"exchange"),
                 "routing_key", "arguments"}]
    """

    def __init__(self, directory: str, fsync: bool = True):
        self.directory = directory
        self.path = os.path.join(directory, FILE_NAME)
        self.fsync = fsync
        self.exchanges: dict[str, dict] = {}
        self.queues: dict[str, dict] = {}
        self.bindings: list[dict] = []
        self.saves = 0

    # ---- loading -------------------------------------------------------------------------
    def load(self) -> "DefinitionsStore":
        os.makedirs(self.directory, exist_ok=True)
        tmp = self.path + ".tmp"
        if os.path.exists(tmp):
            # A crash between writing the temp file and the rename: the rename never happened,
            # so the old file is the truth.
            os.unlink(tmp)
        if not os.path.exists(self.path):
            return self
        with open(self.path, "rb") as f:
            data = f.read()
        if len(data) < _HEADER.size:
            raise DefinitionsCorrupt(f"{self.path} is {len(data)} bytes, shorter than its header; "
                                     "restore it from a backup or remove it to start with no definitions")
        magic, length, crc = _HEADER.unpack_from(data)
        body = data[_HEADER.size:_HEADER.size + length]
        if magic != MAGIC or len(body) != length or zlib.crc32(body) != crc:
            raise DefinitionsCorrupt(f"{self.path} fails its magic/length/CRC check; restore it from a "
                                     "backup or remove it to start with no definitions")
        state = msgpack.unpackb(body, raw=False)
        self.exchanges = state.get("exchanges", {})
        self.queues = state.get("queues", {})
        self.bindings = state.get("bindings", [])
        return self

    # ---- changes (each one saved before it returns) ----------------------------------------
    def put_exchange(self, name: str, spec: dict) -> None:
        if self.exchanges.get(name) != spec:
            self.exchanges[name] = dict(spec)
            self.save()

    def delete_exchange(self, name: str) -> None:
        if name in self.exchanges:
            del self.exchanges[name]
            # Bindings to or from a deleted exchange go with it, as in AMQP.
            self.bindings = [b for b in self.bindings
                             if b["source"] != name
                             and not (b.get("destination_kind") == "exchange" and b["destination"] == name)]
            self.save()

    def put_queue(self, name: str, spec: dict) -> None:
        if self.queues.get(name) != spec:
            self.queues[name] = dict(spec)
            self.save()

    def delete_queue(self, name: str) -> None:
        if name in self.queues:
            del self.queues[name]
            self.bindings = [b for b in self.bindings
                             if not (b.get("destination_kind", "queue") == "queue" and b["destination"] == name)]
            self.save()

    def add_binding(self, binding: dict) -> None:
        binding = {"destination_kind": "queue", "arguments": {}, **binding}
        key = _binding_key(binding)
        if all(_binding_key(b) != key for b in self.bindings):
            self.bindings.append(binding)
            self.save()

    def remove_binding(self, binding: dict) -> None:
        binding = {"destination_kind": "queue", "arguments": {}, **binding}
        key = _binding_key(binding)
        kept = [b for b in self.bindings if _binding_key(b) != key]
        if len(kept) != len(self.bindings):
            self.bindings = kept
            self.save()

    # ---- the atomic replace ---------------------------------------------------------------
    def snapshot(self) -> dict:
        return {"exchanges": self.exchanges, "queues": self.queues, "bindings": self.bindings}

    def save(self) -> None:
        body = msgpack.packb({"version": 1, **self.snapshot()}, use_bin_type=True)
        data = _HEADER.pack(MAGIC, len(body), zlib.crc32(body)) + body
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        if self.fsync:
            fsync_directory(self.directory)
        self.saves += 1


def fsync_directory(directory: str) -> None:
    """Make a rename, create or unlink in `directory` durable (the entry lives in the dir)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
