"""Durable definitions: the exchanges, queues and bindings that survive a restart.

Definitions change rarely (a declare, a bind) and are small (kilobytes even with thousands
of queues), so the whole set is rewritten on every change as one file,
`definitions.msgpack`, replaced atomically:

    write definitions.msgpack.tmp -> fsync it -> keep the current file as definitions.msgpack.prev
    (hard link, renamed) -> rename the new one over definitions.msgpack -> fsync the dir

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
        self.prev_path = self.path + ".prev"   # the state before the last change, kept for recovery
        self.recovered_from = None
        self.fsync = fsync
        self.exchanges: dict[str, dict] = {}
        self.queues: dict[str, dict] = {}
        self.bindings: list[dict] = []
        self.saves = 0
        self.unsaved = False   # memory differs from the file until a save succeeds (see `_apply`)
        self._replaced = False  # the last save renamed its file into place

    # ---- loading -------------------------------------------------------------------------
    def load(self) -> "DefinitionsStore":
        """Read the definitions; a damaged file never stops a start.

        When definitions.msgpack fails its check, the previous good copy (definitions.msgpack.prev,
        the state before the last change) is used; when that is missing or damaged too, the start
        goes on with no definitions, and the caller re-creates the queues the journal holds
        messages for (`BrokerStore.recover`). Either way the damaged file is kept beside, as
        definitions.msgpack.corrupt, and an ERROR says what may be lost. `recovered_from` says
        which happened: None (the file was fine), "backup" or "nothing".
        """
        os.makedirs(self.directory, exist_ok=True)
        self.recovered_from = None
        tmp = self.path + ".tmp"
        if os.path.exists(tmp):
            # A crash between writing the temp file and the rename: the rename never happened,
            # so the old file is the truth.
            os.unlink(tmp)
        if not os.path.exists(self.path):
            return self
        try:
            state = self.read_file(self.path)
        except DefinitionsCorrupt as exc:
            aside = self.path + ".corrupt"
            os.replace(self.path, aside)
            try:
                state = self.read_file(self.prev_path)
            except (DefinitionsCorrupt, FileNotFoundError) as prev_exc:
                self.recovered_from = "nothing"
                log.error("%s; moved aside to %s. The previous copy %s cannot be used either (%s): starting "
                          "with no durable exchanges and bindings; durable queues holding messages in the journal "
                          "are re-created with default arguments", exc, aside, self.prev_path, prev_exc)
                state = {}
            else:
                self.recovered_from = "backup"
                log.error("%s; moved aside to %s. Recovered from the previous copy %s: the last definition change "
                          "before the damage (one declare, bind or delete) may be lost; durable queues holding "
                          "messages in the journal are re-created if missing", exc, aside, self.prev_path)
        self.exchanges = state.get("exchanges", {})
        self.queues = state.get("queues", {})
        self.bindings = state.get("bindings", [])
        return self

    @staticmethod
    def read_file(path: str) -> dict:
        """The state in one definitions file, without changing anything; DefinitionsCorrupt if damaged."""
        with open(path, "rb") as f:
            data = f.read()
        if len(data) < _HEADER.size:
            raise DefinitionsCorrupt(f"{path} is {len(data)} bytes, shorter than its header")
        magic, length, crc = _HEADER.unpack_from(data)
        body = data[_HEADER.size:_HEADER.size + length]
        if magic != MAGIC or len(body) != length or zlib.crc32(body) != crc:
            raise DefinitionsCorrupt(f"{path} fails its magic/length/CRC check")
        try:
            state = msgpack.unpackb(body, raw=False)
        except Exception as exc:
            raise DefinitionsCorrupt(f"{path} has a valid CRC but cannot be decoded ({type(exc).__name__})") from None
        if type(state) is not dict:
            raise DefinitionsCorrupt(f"{path} does not hold a map of definitions")
        return state

    # ---- changes (each one saved before it returns, or undone) -----------------------------
    # A declaration or binding is applied to memory, then saved; if the save fails for any
    # reason (disk full, an I/O error, a value the encoder refuses) it is undone before the
    # error is raised, so one failed change can never make every later save fail with it.
    # A deletion cannot be refused (the broker has already deleted the thing): if its save
    # fails, memory keeps it and `unsaved` is set until a later `save` succeeds (the caller
    # retries). Removing entries cannot make the encoder fail, so memory stays encodable.
    def _apply(self, undo) -> None:
        try:
            self.save()
        except BaseException:
            undo()
            if self._replaced:
                # Only the directory fsync failed: the file may hold the change. Write memory's
                # state again (the caller retries while `unsaved`).
                self.unsaved = True
            raise

    def _apply_deletion(self) -> None:
        try:
            self.save()
        except BaseException:
            self.unsaved = True
            raise

    def put_exchange(self, name: str, spec: dict) -> None:
        before = self.exchanges.get(name)
        if before != spec:
            self.exchanges[name] = dict(spec)
            self._apply(lambda: self._restore(self.exchanges, name, before))

    def delete_exchange(self, name: str) -> None:
        if name in self.exchanges:
            del self.exchanges[name]
            # Bindings to or from a deleted exchange go with it, as in AMQP.
            self.bindings = [b for b in self.bindings
                             if b["source"] != name
                             and not (b.get("destination_kind") == "exchange" and b["destination"] == name)]
            self._apply_deletion()

    def put_queue(self, name: str, spec: dict) -> None:
        before = self.queues.get(name)
        if before != spec:
            self.queues[name] = dict(spec)
            self._apply(lambda: self._restore(self.queues, name, before))

    def delete_queue(self, name: str) -> None:
        if name in self.queues:
            del self.queues[name]
            self.bindings = [b for b in self.bindings
                             if not (b.get("destination_kind", "queue") == "queue" and b["destination"] == name)]
            self._apply_deletion()

    def add_binding(self, binding: dict) -> None:
        binding = {"destination_kind": "queue", "arguments": {}, **binding}
        key = _binding_key(binding)
        if all(_binding_key(b) != key for b in self.bindings):
            bindings = self.bindings
            self.bindings = bindings + [binding]
            self._apply(lambda: setattr(self, "bindings", bindings))

    def remove_binding(self, binding: dict) -> None:
        binding = {"destination_kind": "queue", "arguments": {}, **binding}
        key = _binding_key(binding)
        kept = [b for b in self.bindings if _binding_key(b) != key]
        if len(kept) != len(self.bindings):
            self.bindings = kept
            self._apply_deletion()

    @staticmethod
    def _restore(table: dict, name: str, before) -> None:
        if before is None:
            table.pop(name, None)
        else:
            table[name] = before

    # ---- the atomic replace ---------------------------------------------------------------
    def snapshot(self) -> dict:
        return {"exchanges": self.exchanges, "queues": self.queues, "bindings": self.bindings}

    def save(self) -> None:
        self._replaced = False
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
        if os.path.exists(self.path):
            # Keep the current file as the previous good copy: a hard link under a temporary name,
            # renamed into place, so there is always a whole definitions.msgpack on disk.
            prev_tmp = self.prev_path + ".tmp"
            if os.path.exists(prev_tmp):
                os.unlink(prev_tmp)
            os.link(self.path, prev_tmp)
            os.replace(prev_tmp, self.prev_path)
        os.replace(tmp, self.path)
        self._replaced = True
        if self.fsync:
            fsync_directory(self.directory)
        self.saves += 1
        self.unsaved = False


def fsync_directory(directory: str) -> None:
    """Make a rename, create or unlink in `directory` durable (the entry lives in the dir)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
