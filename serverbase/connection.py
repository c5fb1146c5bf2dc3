"""One client connection on the server, as an `asyncio.Protocol`.

Bytes arrive in `data_received`, go through the sans-IO `FrameDecoder`, and each request is
dispatched to the server's op table. Replies and pushes are not written one by one: they are
appended to an outgoing list and written with one `transport.writelines` call at the end of
the read (or on the next loop turn for pushes caused by other connections). A syscall per
frame would cap a connection near 200k frames/s; coalescing lifts that by an order of
magnitude.

Backpressure: when the kernel buffer fills, asyncio calls `pause_writing`; we then stop
reading from this client (so a client that does not read its replies cannot make the server
buffer without bound) and tell the broker, which stops pushing deliveries here.
"""

import asyncio
import inspect
import logging
import socket
import time

from clients.protocol import frames
from clients.protocol.errors import BrokerError, ErrorCode, ProtocolViolation
from clients.protocol.frames import REQUEST
from clients.protocol.framing import LENGTH, NOT_ONE_FRAME, FrameDecoder, decode_one_frame, new_packer
from clients.protocol.handshake import HELLO
from clients.tls import looks_like_tls

log = logging.getLogger("serverbase.connection")
_monotonic = time.monotonic

# TCP keepalive on every client socket: a peer that vanished (machine off, cable out) without a
# FIN is found by the kernel after about KEEPIDLE + KEEPCNT * KEEPINTVL seconds, even when the
# client did not ask for protocol heartbeats.
KEEPIDLE, KEEPINTVL, KEEPCNT = 60, 10, 3


def enable_keepalive(transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPIDLE)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPINTVL)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPCNT)
    except (OSError, AttributeError):
        pass   # not a TCP socket (a test transport, a Unix socket): nothing to tune


class ClientConnection(asyncio.Protocol):
    def __init__(self, server, conn_id: int):
        self.server = server
        self.id = conn_id
        self.transport: asyncio.Transport | None = None
        self.peer = None
        self.client_name = ""
        self.user = None
        self.access = None          # the user's compiled permissions; None: may do everything
        self.tls = False
        self._held: list | None = None   # requests kept until `release` (see `hold`)
        self.handshake_done = False
        self.closed = False
        self.writing_paused = False
        self.decoder = FrameDecoder(server.max_frame)
        self.partial_bytes = 0  # this connection's share of server.partial_bytes
        self.request_id = 0     # the id of the request being dispatched
        self.send_limit = server.max_frame   # largest frame this client accepts (from hello)
        self._packer = new_packer()
        self._out: list = []
        self._flush_scheduled = False
        self._loop = asyncio.get_event_loop()
        self._tasks: set[asyncio.Task] = set()
        # Brokers hang their per-connection state here (channels, consumers, exclusive queues).
        self.state: dict = {}
        self.on_writable = []   # callbacks run when a paused transport drains
        # Liveness, read by BrokerServer.sweep_connections (handshake timeout and heartbeats).
        self.opened_at = self.last_received = self.last_sent = _monotonic()
        self.heartbeat = 0      # seconds agreed in hello; 0: no protocol heartbeats

    @property
    def loop(self):
        """The event loop this connection runs on: for callbacks scheduled once per request,
        where asyncio.get_running_loop() would add a getpid system call each time."""
        return self._loop

    # ---- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        # A TLS connection must only be written through its transport (no sendfile on the socket).
        self.tls = transport.get_extra_info("sslcontext") is not None
        enable_keepalive(transport)
        self.server._connection_opened(self)

    def data_received(self, data):
        self.last_received = _monotonic()
        self.server.bytes_in += len(data)
        decoder = self.decoder
        if not decoder._buf:
            obj = decode_one_frame(data, decoder.max_frame)
            if obj is not NOT_ONE_FRAME:
                self._run((obj,))
                return
        try:
            objs = decoder.feed(data)
        except ProtocolViolation as exc:
            if not self.handshake_done and looks_like_tls(bytes(data[:3])):
                log.warning("closing connection %s from %s: it began a TLS handshake on a plaintext port (%s); "
                            "TLS clients belong on the TLS port", self.id, self.peer, self.server.name)
                # In plaintext: the client's TLS layer reports it as "wrong version number".
                self.send_error(0, ErrorCode.BAD_REQUEST, "this is a plaintext port: connect TLS clients to the "
                                                          "TLS port (docs/security.md)")
                self.close()
                return
            self._fatal(exc)
            return
        if decoder._buf or self.partial_bytes:
            # Bytes of unfinished frames, summed over all connections, are bounded: without a
            # bound, connections that stall in the middle of 16 MiB frames hold 16 MiB each.
            server = self.server
            server.partial_bytes += len(decoder._buf) - self.partial_bytes
            self.partial_bytes = len(decoder._buf)
            if server.partial_bytes > server.max_partial_bytes:
                self._fatal(ProtocolViolation(ErrorCode.FRAME_TOO_LARGE, (
                    f"the server holds {server.partial_bytes} bytes of unfinished frames across all connections, "
                    f"over its limit of {server.max_partial_bytes} (--max-partial-bytes); this connection's "
                    f"frame of {self.partial_bytes} bytes so far is refused: send it again later")))
                return
        self._run(objs)

    def _run(self, objs) -> None:
        dispatch = self.server.dispatch
        # The replies queued while these requests run go out with the one flush at the end, so
        # a reply does not also schedule one (`_schedule_flush`: a loop callback per read).
        self._flush_scheduled = True
        try:
            for obj in objs:
                if self._held is not None:   # an earlier request is answered first (`hold`)
                    self._held.append(obj)
                    continue
                # The envelope [0, id, op, args] as `frames.parse_request` accepts it, checked
                # inline (no Request made); anything else goes through it for its error.
                if (obj.__class__ is list and len(obj) == 4 and obj[0] == REQUEST
                        and obj[1].__class__ is int and obj[1] >= 0 and obj[2].__class__ is str):
                    _, rid, op_name, args = obj
                    if args is None:
                        args = {}
                else:
                    try:
                        rid, op_name, args = frames.parse_request(obj)
                    except BrokerError as exc:
                        self.send_error(getattr(exc, "request_id", 0), exc.code, exc.message)
                        continue
                if not self.handshake_done:
                    if op_name != HELLO:
                        self.send_error(rid, ErrorCode.HANDSHAKE_REQUIRED,
                                        "the first request on a connection must be 'hello'")
                        continue
                dispatch(self, rid, op_name, args)
                if self.closed:
                    return
        finally:
            self.flush()

    # ---- requests that must be answered before the next ones run ------------------------
    def hold(self) -> None:
        """Keep the requests that arrive from now on until `release`, and stop reading, so a
        client that pipelines behind a request answered later (a hello being checked, a topic
        being created) is served in order once it is answered. Other connections go on."""
        if self._held is None:
            self._held = []
        if self.transport is not None:
            self.transport.pause_reading()

    def release(self) -> None:
        held, self._held = self._held or [], None
        if self.closed:
            return
        self._run(held)   # one of them may hold again: the rest then wait for it
        if not self.closed and not self.writing_paused and self._held is None and self.transport is not None:
            self.transport.resume_reading()

    def answer_before_later(self, rid: int, awaitable) -> None:
        """Reply to `rid` when `awaitable` finishes, and run the requests that arrive meanwhile
        only after that reply, in order (as Kafka handles a connection's requests one at a time)."""
        self.hold()
        self.spawn(self._reply_then_release(rid, awaitable))

    async def _reply_then_release(self, rid, awaitable):
        try:
            await self._reply_when_done(rid, awaitable)
        finally:
            if not self.closed:
                self.release()

    def spawn(self, coro) -> None:
        """Run `coro` in a task this connection owns (cancelled if the client goes away)."""
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def connection_lost(self, exc):
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        self._release_buffers()
        self.server._connection_closed(self)
        # The connection, its session and the session's sink refer to each other; with the
        # garbage collector tuned to run rarely (minibroker's gc_policy) such a cycle can live for
        # a long time, so drop what could be large now rather than when the cycle is collected.
        self.state.clear()
        self.on_writable.clear()

    def _release_buffers(self) -> None:
        self.server.partial_bytes -= self.partial_bytes
        self.partial_bytes = 0
        self.decoder.discard()
        self._out = []

    def pause_writing(self):
        self.writing_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self):
        self.writing_paused = False
        if self.transport is not None and not self.closed and self._held is None:
            self.transport.resume_reading()
        for callback in list(self.on_writable):
            callback()

    # ---- sending ----------------------------------------------------------------------
    def send_frame(self, obj) -> None:
        body = self._packer.pack(obj)
        self._out.append(LENGTH.pack(len(body)))
        self._out.append(body)
        if not self._flush_scheduled:
            self._schedule_flush()

    def send_raw(self, data) -> None:
        """Queue bytes that are already a whole frame (or frames)."""
        self._out.append(data)
        self._schedule_flush()

    def send_response(self, rid: int, result=None) -> None:
        if rid:
            self.send_frame([frames.RESPONSE, rid, result])

    def send_error(self, rid: int, code: str, message: str, channel: int | None = None) -> None:
        """An ERROR frame; an id-0 error about one channel names it in a detail map (PROTOCOL.md 2)."""
        self.send_frame(frames.error(rid, code, message, channel))

    def push(self, event: str, body) -> None:
        self.send_frame([frames.PUSH, event, body])

    def _schedule_flush(self):
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if self._out and not self.closed:
            out, self._out = self._out, []
            self.server.bytes_out += sum(map(len, out))
            self.transport.writelines(out)
            if self.heartbeat:
                self.last_sent = _monotonic()

    # ---- async ops ---------------------------------------------------------------------
    def run_async(self, rid: int, awaitable) -> None:
        """Reply to `rid` when `awaitable` finishes (long polls, fsync waits)."""
        task = self._loop.create_task(self._reply_when_done(rid, awaitable))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reply_when_done(self, rid, awaitable):
        try:
            result = await awaitable
        except asyncio.CancelledError:
            raise
        except BrokerError as exc:
            self.send_error(rid, exc.code, exc.message)
        except Exception as exc:  # a bug must not take the connection down with it
            log.exception("op failed on connection %s", self.id)
            self.send_error(rid, ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
        else:
            self.send_response(rid, result)

    # ---- closing -----------------------------------------------------------------------
    def _fatal(self, exc: BrokerError) -> None:
        """The stream is broken: say why, then close this connection (and only this one)."""
        log.warning("closing connection %s from %s: %s", self.id, self.peer, exc)
        self.send_error(0, exc.code, exc.message)
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def is_awaitable(self, value) -> bool:
        return inspect.isawaitable(value)
