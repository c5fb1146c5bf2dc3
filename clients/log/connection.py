"""The blocking connection the confluent-style clients share: requests with reply callbacks.

`clients.rpc.RpcConnection` keeps replies in a dict for `wait(rid)`. A producer with dozens of
produce requests in flight, or a consumer with a fetch, a heartbeat and a commit outstanding,
wants each reply handled as it arrives instead, whichever order the *waiting* ops finish in.
`LogConnection.send_with(op, args, callback)` registers `callback(result, error)` for the
request; `pump(timeout)` reads whatever the server sent and runs the callbacks. Synchronous
calls (`call`) still work on the same socket, and callbacks keep running while one waits.
"""

import math
import time

from ..protocol.errors import BrokerError
from ..protocol.framing import NOT_ONE_FRAME, BufferedFrameDecoder, decode_one_frame, decode_whole_frames
from ..rpc import _DONTWAIT, KERNEL_WAIT_MIN, ConnectionClosed, RpcConnection, _wait_readable
from ..tls import SECURITY_PROTOCOLS, TlsSettingError, log_client_tls
from . import fetch_session
from .errors import ConfigError


def parse_bootstrap(servers: str) -> tuple[str, int]:
    """The first 'host:port' of a comma-separated bootstrap.servers string."""
    if not servers or not isinstance(servers, str):
        raise ConfigError("bootstrap.servers must be a 'host:port' string")
    first = servers.split(",")[0].strip()
    scheme, sep, rest = first.partition("://")
    if sep and scheme.upper() in SECURITY_PROTOCOLS:
        first = rest   # a listener name; security.protocol, not the prefix, decides TLS (as librdkafka)
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"bootstrap.servers entry {first!r} is not 'host:port'")
    return host, int(port)


def tls_context(cfg):
    """The `ssl_context` for LogConnection from librdkafka's TLS properties (None: plaintext);
    a setting that cannot be honoured is a ConfigError now, never a plaintext connection later."""
    try:
        return log_client_tls(cfg)
    except TlsSettingError as exc:
        raise ConfigError(str(exc)) from None


# The longest one `LogConnection.pump` waits before returning to its caller.
_LONGEST_WAIT = 3600.0
# The most one `LogConnection.receive_replies` read takes (a produce reply is ~30 bytes).
REPLY_READ = 8192


class LogConnection(RpcConnection):
    # Replies are received straight into one buffer kept for the connection's life
    # (`BufferedFrameDecoder`): a replaying consumer's fetch replies then reuse the same memory
    # instead of a fresh MiB per read (docs/clients-minilog.md, "Replay").
    decoder_class = BufferedFrameDecoder

    def __init__(self, host, port, client_name="minilog-python", **kwargs):
        kwargs.setdefault("expect_server", "minilog")
        super().__init__(host, port, client_name, **kwargs)

    def send_with(self, op: str, args, callback) -> int:
        """Queue a request whose reply goes to `callback(result, error)`; error is a BrokerError or None."""
        rid = self.send(op, args)
        self.state.expect(rid, callback)
        return rid

    def send_parts_with(self, op: str, args, callback=None, large=True) -> int:
        """As `send_with` (callback None: no reply wanted, request id 0), for args that carry
        large bytes values (a produce request's batches): the frame is queued as the buffers
        `ClientConnectionState.encode_request_parts` makes, so a batch is not copied into an
        encoded frame, and that into a length-prefixed one, before it is written.

        `large` False (the caller knows no value reaches `framing.LARGE_BLOB`): the frame is
        packed whole by msgpack in C instead, as walking the args in Python to find large
        values would find none and cost more than the copies it saves (a linger-0 producer
        sends one small request per record)."""
        if self.closed:
            raise ConnectionClosed()
        with self.write_lock:
            if large:
                rid, parts = self.state.encode_request_parts(op, args, callback is not None)
                for part in parts:
                    self._queue(part)
            else:
                rid, frame = self.state.encode_request(op, args, callback is not None)
                self._queue(frame)
        if callback is not None:
            self.state.expect(rid, callback)
        return rid

    def write_frame(self, frame: bytes) -> None:
        """Write one frame the caller encoded (its request id from `state.next_id()`, its reply
        handler registered with `state.expect`), after anything queued, in one `sendall`: a
        linger-0 producer's one-record request (`Producer._send_single`), which `send_parts_with`
        and `flush` would take as a dict to encode, queue and then join again."""
        if self.closed:
            raise ConnectionClosed()
        with self.write_lock:
            if self._out:
                self._queue(frame)
                self.flush()
                return
            try:
                self.sock.sendall(frame)
            except OSError as exc:
                self._mark_closed()
                raise ConnectionClosed(f"connection lost while sending: {exc}") from None

    def readable(self, timeout: float) -> bool:
        poller = self._poller
        if poller is not None and not self._tls:
            # No TLS: nothing can be held above the socket, poll() sees all there is.
            return bool(poller.poll(max(0, math.ceil(timeout * 1000))))
        return _wait_readable(self.sock, timeout, poller)

    def pump(self, timeout: float | None = 0.0) -> bool:
        """Send what is queued, then handle what arrives within `timeout` s (0: only what is there).

        Syscalls are the cost here (each one that wakes the server costs microseconds on a busy
        machine), so a zero timeout is one non-blocking recv, with no select, and reading stops
        as soon as a recv fills less than the room it was given.
        """
        if self.closed:
            raise ConnectionClosed()
        self.flush()
        handled = False
        if timeout is None or timeout > 0:
            # At most an hour a wait (the callers' loops check their own deadlines): poll() and
            # the socket's receive timeout refuse values past their C types' range.
            wait = min(timeout, _LONGEST_WAIT) if timeout is not None else _LONGEST_WAIT
            if wait >= KERNEL_WAIT_MIN and not self._tls:
                # One syscall that waits and reads (`receive_within`), not a poll() and a recv.
                try:
                    n = self.receive_within(wait)
                except BlockingIOError:
                    return False   # nothing came (the wait may end up to 15 ms early)
                if n > 0:
                    return True
                handled = True     # it filled the buffer: read on below
            elif not self.readable(wait):
                return False
        while True:
            try:
                n = self._receive(nowait=True)
            except BlockingIOError:
                return handled
            handled = True
            if n > 0:
                return True

    def receive_replies(self) -> bool:
        """`pump(0)` for small replies that come one or a few per read (a linger-0 producer's,
        which its every `poll(0)` reads): one non-blocking recv of up to `REPLY_READ` bytes into
        a fresh bytes object, whose whole frames are decoded (`framing.decode_one_frame` for
        the usual read of one frame, else `framing.decode_whole_frames`) and routed
        (`ClientConnectionState.route`) in one step, without the decoder's buffer. Only part
        of a frame at the end goes to the decoder (as `pump`'s reads do), and a read that
        filled `REPLY_READ` is followed by `pump(0)` for the rest. With requests queued to
        send, part of a frame held, or TLS, it is `pump(0)`. True if anything came."""
        if self.closed:
            raise ConnectionClosed()
        state = self.state
        decoder = state.decoder
        if self._out or self._tls or decoder.buffered:
            return self.pump(0)
        try:
            data = self.recv_bytes(REPLY_READ, _DONTWAIT)
        except BlockingIOError:
            return False
        obj = decode_one_frame(data, decoder.max_frame)   # the usual read: one reply
        if obj is not NOT_ONE_FRAME:
            state.route((obj,), self._push_sink, self._async_error_sink)
            return True
        whole = decode_whole_frames(data, decoder.max_frame)
        if whole is None:
            state.receive(data, self._push_sink, self._async_error_sink)   # raises the decoder's error
            return True
        frames, end = whole
        if frames:
            state.route(frames, self._push_sink, self._async_error_sink)
        if end < len(data):
            # Part of a frame: the decoder keeps it (it held nothing), and completes it later.
            state.receive(data[end:] if end else data, self._push_sink, self._async_error_sink)
            if len(data) == REPLY_READ:
                self.pump(0)
        return True

    def fail_all(self, error: BrokerError) -> None:
        """Run every pending callback with `error` (the connection is gone)."""
        self.state.fail_all(error)


def _server_features(conn):
    """The features the server named in the handshake (none when it named none)."""
    info = conn.state.server_info
    return (info.get("features") or ()) if isinstance(info, dict) else ()


def keeps_fetch_sessions(conn) -> bool:
    """Whether to continue fetches in a fetch session on `conn`: the consumers do so when
    `fetch_session.CONTINUE_FETCHES` says so and the server named in the handshake keeps
    them (a `fetch` may continue where the previous one ended: docs/PROTOCOL.md, "fetch")."""
    return fetch_session.CONTINUE_FETCHES and "fetch-session" in _server_features(conn)


def fetch_answers(conn) -> int:
    """How many answers the blocking consumer's fetches ask for on `conn`: more than one (a
    streamed fetch, docs/PROTOCOL.md "fetch") when `fetch_session.STREAM_FETCHES` says so and
    the server named in the handshake keeps fetch sessions and can answer a fetch more than
    once; else 1."""
    features = _server_features(conn)
    if fetch_session.STREAM_FETCHES and "fetch-session" in features and "fetch-answers" in features:
        return fetch_session.STREAM_ANSWERS
    return 1


def deadline_of(timeout) -> float | None:
    """A monotonic deadline for a confluent-style timeout (None or negative: wait forever)."""
    if timeout is None or timeout < 0:
        return None
    return time.monotonic() + timeout


def remaining(deadline) -> float | None:
    if deadline is None:
        return None
    return max(deadline - time.monotonic(), 0.0)
