"""One Kafka-protocol client connection, as an `asyncio.BufferedProtocol`.

Bytes go through the sans-IO `KafkaFrameSplitter` and `parse_request` (`codec.py`); each
request is handed to `KafkaApis` (`handlers.py`), which answers with a body, with an
awaitable of one (a long-polling fetch, a join waiting for the other members, an fsync), or
with `NO_RESPONSE` (a produce with acks=0).

Reads go where the bytes belong (`get_buffer`): while a large frame is being filled (a
produce of big batches), the kernel writes the rest of it straight into the frame's buffer;
otherwise into `_RECEIVE_BUFFER`, one buffer shared by every connection of the process (the
splitter copies out all it keeps before `buffer_updated` returns, and the event loop reads one
socket at a time). A Produce frame, once appended, is handed back to the splitter
(`recycle`) so that the next large one is received into the same, recently touched memory.

Kafka clients match responses to requests by order as well as by correlation id, so the
replies of one connection leave in the order the requests came, even when a later request
finishes first: each request takes a slot in `_slots` when it arrives, and `_drain` writes the
finished prefix. Everything finished during one read goes out in one `writelines`, or, when
it carries file slices of fetched batches, through `minilog.fetch_response.write_pieces`
(os.sendfile from the page cache when the socket has nothing queued).

A frame that does not parse, or an API or version we do not serve, closes this connection
with one log line (as Kafka does); other connections are untouched. The one exception is
ApiVersions at a version we do not know, which gets our ranges so the client can retry.
With `--auth` or `--user`, nothing but ApiVersions, SaslHandshake and SaslAuthenticate is
accepted until SASL PLAIN has succeeded (through the server's `Authenticator`, docs/security.md).
"""

from __future__ import annotations

import asyncio
import collections
import logging

from minilog.fetch_response import SENDFILE_MIN_BYTES, write_pieces
from minilog.storage import FileSlice

from .codec import (KafkaDecodeError, KafkaFrameSplitter, encode_response, parse_request,
                    unsupported_api_versions_reply)
from .handlers import NO_RESPONSE
from .messages import API_VERSIONS, CREATE_PARTITIONS, CREATE_TOPICS, METADATA, PRODUCE, SASL_AUTHENTICATE, SASL_HANDSHAKE

log = logging.getLogger("minilog.kafka")

_RECEIVE_BUFFER = memoryview(bytearray(256 * 1024))
# From this many bytes still to come, a frame is received into directly (below it, reading
# into the shared buffer lets one read carry the rest and the next requests).
_DIRECT_MIN = 64 * 1024

_BEFORE_AUTH = frozenset({API_VERSIONS.key, SASL_HANDSHAKE.key, SASL_AUTHENTICATE.key})
# Requests whose answer waits for topics being made (CreateTopics, CreatePartitions, a Metadata
# that auto-creates): Kafka handles one connection's requests one at a time, so a request
# pipelined behind one of them must see the topics. The frames that arrive meanwhile wait.
_ANSWERED_BEFORE_LATER = frozenset({CREATE_TOPICS.key, CREATE_PARTITIONS.key, METADATA.key})


class _Slot:
    __slots__ = ("pieces",)

    def __init__(self):
        self.pieces = None   # None until the reply is ready


class KafkaConnection(asyncio.BufferedProtocol):
    def __init__(self, server, apis, max_frame: int):
        self.server = server
        self.apis = apis
        self.id = server.next_connection_id()
        self.transport: asyncio.Transport | None = None
        self.peer = None
        self.closed = False
        self.authenticated = not server.authenticator.enabled
        self.sasl_mechanism: str | None = None
        self.user = None
        self.access = None   # the user's ACLs after SASL (minilog/acl.py); None: may do everything
        self.state: dict = {}
        self._splitter = KafkaFrameSplitter(max_frame)
        self._into_frame = False   # the last get_buffer gave the frame being filled
        self._slots: collections.deque[_Slot] = collections.deque()
        self._held: list | None = None    # frames waiting for an earlier request's answer
        self._writing_paused = False
        self._tasks: set[asyncio.Task] = set()
        self._loop = asyncio.get_event_loop()

    # ---- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        self.server.track(self)

    def get_buffer(self, sizehint):
        view = self._splitter.unfilled()
        self._into_frame = view is not None and len(view) >= _DIRECT_MIN
        return view if self._into_frame else _RECEIVE_BUFFER

    def buffer_updated(self, nbytes):
        self.server.bytes_in += nbytes
        if self._into_frame:
            frames = self._splitter.filled(nbytes)
        else:
            try:
                frames = self._splitter.feed(_RECEIVE_BUFFER[:nbytes])
            except KafkaDecodeError as exc:
                self._fatal(str(exc))
                return
        for frame in frames:
            if self._held is not None:
                self._held.append(frame)   # lent by the splitter until recycled: no copy needed
                continue
            self._handle(frame)
            if self.closed:
                return
        self._drain()

    def connection_lost(self, exc):
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        self._slots.clear()
        self.server.untrack(self)

    def pause_writing(self):
        self._writing_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self):
        self._writing_paused = False
        if self.transport is not None and not self.closed and self._held is None:
            self.transport.resume_reading()

    # ---- requests ---------------------------------------------------------------------
    def _handle(self, frame) -> None:
        try:
            req = parse_request(frame)
        except KafkaDecodeError as exc:
            self._fatal(str(exc))
            return
        api = req.api
        if api is API_VERSIONS and not api.min_version <= req.api_version <= api.max_version:
            slot = _Slot()
            slot.pieces = unsupported_api_versions_reply(req)
            self._slots.append(slot)
            return
        if not self.authenticated and req.api_key not in _BEFORE_AUTH:
            self._fatal(f"{api.name} before SASL authentication (this server requires credentials)")
            return
        handler = self.apis.handler(req.api_key)
        if handler is None:
            self._fatal(f"{api.name} is not served here")
            return
        try:
            result = handler(self, req)
        except Exception as exc:   # a bug: this client goes, the server and the others stay
            log.exception("kafka connection %s: %s v%d failed", self.id, api.name, req.api_version)
            self._fatal(f"{api.name} failed: {type(exc).__name__}: {exc}")
            return
        if api is PRODUCE:
            # Appended (or refused) by now, and nothing keeps a view of the request.
            req.body = None
            self._splitter.recycle(frame)
        if result is NO_RESPONSE:
            return
        slot = _Slot()
        self._slots.append(slot)
        if isinstance(result, dict):
            slot.pieces = encode_response(req, result)
        else:
            task = self._loop.create_task(self._finish(req, slot, result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            if req.api_key in _ANSWERED_BEFORE_LATER:
                self._held = []
                self.transport.pause_reading()
                task.add_done_callback(self._release)

    def _release(self, _task) -> None:
        """The held request is answered: run the frames that waited for it, in order."""
        held, self._held = self._held or [], None
        for i, frame in enumerate(held):
            if self.closed:
                return
            if self._held is not None:   # one of them holds again: the rest wait for it
                self._held.extend(held[i:])
                break
            self._handle(frame)
        if self.closed:
            return
        self._drain()
        if self._held is None and not self._writing_paused:
            self.transport.resume_reading()

    async def _finish(self, req, slot: _Slot, awaitable) -> None:
        try:
            body = await awaitable
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("kafka connection %s: %s v%d failed", self.id, req.api.name, req.api_version)
            self._fatal(f"{req.api.name} failed: {type(exc).__name__}: {exc}")
            return
        if self.closed:
            return
        slot.pieces = encode_response(req, body)
        self._drain()

    # ---- replies ----------------------------------------------------------------------
    def _drain(self) -> None:
        """Write every reply whose turn has come, in request order, in one call."""
        if self.closed:
            return
        slots = self._slots
        out = []
        slice_bytes = other_bytes = 0
        while slots and slots[0].pieces is not None:
            for piece in slots.popleft().pieces:
                if type(piece) is FileSlice:
                    slice_bytes += piece.length
                else:
                    other_bytes += len(piece)
                out.append(piece)
        if not out:
            return
        self.server.bytes_out += slice_bytes + other_bytes
        if slice_bytes:
            # Fetched batches already in Kafka's format go from the page cache to the socket.
            self.server.sendfile_bytes += write_pieces(self.transport, out,
                                                       self.server.fetch_sendfile and slice_bytes >= SENDFILE_MIN_BYTES)
        else:
            self.transport.writelines(out)

    # ---- closing ----------------------------------------------------------------------
    def _fatal(self, why: str) -> None:
        log.warning("closing kafka connection %s from %s: %s", self.id, self.peer, why)
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self._drain()   # replies to the requests before this point still go
        self.closed = True
        if self.transport is not None:
            self.transport.close()
