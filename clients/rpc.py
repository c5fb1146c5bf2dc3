"""A blocking connection to either server: requests, replies and pushes over a plain socket.

This is the layer the pika-style and confluent-style blocking clients stand on. It wraps the
sans-IO `ClientConnectionState` with a socket and adds what a blocking program needs:

- `send()` queues a request without waiting; many queued requests go out in one `sendall`
  (pipelining and write coalescing, so a publish loop needs no round trip per message);
- `call()` sends and waits for that request's reply, raising `BrokerError` for an error reply;
- frames the server pushes (deliveries, returns, confirms) are collected in `pushes` for the
  client above to drain, and errors for requests sent without a reply in `async_errors`.
"""

import collections
import math
import select
import socket
import struct
import threading
import time

from .protocol.client_state import ClientConnectionState
from .protocol.errors import BrokerError, ErrorCode
from .protocol.frames import ErrorReply, Push, Response
from .protocol.framing import DEFAULT_MAX_FRAME, FrameDecoder
from .tls import looks_like_tls, open_socket, pending, recv_into_nowait

# Flush queued requests once this many bytes wait, so memory stays bounded in a publish loop.
WRITE_BUFFER_LIMIT = 256 * 1024
READ_SIZE = 1 << 20
_DONTWAIT = socket.MSG_DONTWAIT
# Waits at least this long are made in the receive itself (`RpcConnection.receive_within`),
# with the socket's receive timeout rounded down to a multiple of _KERNEL_WAIT_STEP, so that
# a loop of similar waits (a consumer's poll(0.1)) sets it once. Shorter waits use poll(): the
# kernel counts receive timeouts in scheduler ticks and rounds them up to a whole one (4 ms at
# 250 Hz, 10 ms at 100 Hz), too coarse for them; the timeout set is one longest tick short.
KERNEL_WAIT_MIN = 0.02
_KERNEL_WAIT_STEP = 0.005
_KERNEL_TICK = 0.01
_TIMEVAL = struct.Struct("@ll")


# poll() where there is one: select() refuses descriptors above 1024, which busy programs have.
_HAS_POLL = hasattr(select, "poll")


def _wait_readable(sock, timeout: float, poller=None) -> bool:
    """Whether `sock` has something to read within `timeout` s. `poller`, a `select.poll` with
    `sock` registered for POLLIN, saves making one per wait (a consumer at the end of a log
    waits once per record)."""
    if pending(sock):
        return True   # TLS: decrypted bytes wait in the socket, where poll() cannot see them
    if poller is None and _HAS_POLL:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
    if poller is not None:
        return bool(poller.poll(max(0, math.ceil(timeout * 1000))))
    ready, _, _ = select.select([sock], [], [], max(timeout, 0))
    return bool(ready)


class ConnectionClosed(BrokerError):
    def __init__(self, message="the server closed the connection"):
        super().__init__("CONNECTION_CLOSED", message)


class RpcConnection:
    # How received bytes become frames. A BufferedFrameDecoder is received into (`_receive`:
    # one buffer for the connection's life, no fresh object per read); the log clients and the
    # pika-style connection use one.
    decoder_class = FrameDecoder

    def __init__(self, host: str, port: int, client_name: str = "python-client",
                 credentials: dict | None = None, connect_timeout: float = 10.0,
                 max_frame: int = DEFAULT_MAX_FRAME, expect_server: str | None = None, ssl_context=None,
                 server_hostname: str | None = None):
        # The one place a blocking client opens its socket (with TLS when given a context).
        self.sock = open_socket(host, port, connect_timeout, ssl_context, server_hostname)
        self.sock.settimeout(None)
        self.state = ClientConnectionState(max_frame, decoder_class=self.decoder_class)
        self._receives_into = hasattr(self.state.decoder, "get_buffer")
        self._poller = None
        self._recv_timeout = None   # the SO_RCVTIMEO `receive_within` set (None: none, recv blocks)
        if _HAS_POLL:
            self._poller = select.poll()
            self._poller.register(self.sock, select.POLLIN)
        # One syscall for a length prefix and a body apart (send_now); TLS sockets have no sendmsg.
        self._sendmsg = None if ssl_context is not None else getattr(self.sock, "sendmsg", None)
        # Held while a request is encoded and queued and while the queue is written, so a
        # background flusher (the pika-style connection's) and the program's thread can both
        # send: the encoder, the id counter and the queue are one thread's at a time.
        self.write_lock = threading.RLock()
        self._out: list[bytes] = []
        self._out_bytes = 0
        self.replies = self.state.replies  # what wait() looks in (matching is the state's)
        self.callbacks = self.state.handlers
        self.pushes: collections.deque = collections.deque()
        self.async_errors: collections.deque = collections.deque()
        self._push_sink, self._async_error_sink = self.pushes.append, self.async_errors.append
        # A plain socket reads without waiting by a flag; a TLS one cannot take flags.
        self._tls = ssl_context is not None
        self.closed = False
        self.first_bytes = None   # what the server sent first, to tell a TLS port from ours
        rid, frame = self.state.hello(client_name, credentials)
        self._queue(frame)
        try:
            self.server_info = self.wait(rid, timeout=connect_timeout)
            self.state.accept_hello(self.server_info, expect_server)
        except BrokerError as exc:
            self.close()
            if ssl_context is None and (self.first_bytes is None or looks_like_tls(self.first_bytes)):
                raise ConnectionClosed(f"{exc.message} during the handshake with {host}:{port}; if that is a TLS "
                                       f"port, connect with TLS") from None
            raise
        except BaseException:
            self.close()
            raise

    # ---- sending -----------------------------------------------------------------------
    def _queue(self, frame: bytes) -> None:
        self._out.append(frame)
        self._out_bytes += len(frame)
        if self._out_bytes >= WRITE_BUFFER_LIMIT:
            self.flush()

    def send(self, op: str, args=None, want_reply: bool = True) -> int:
        """Queue a request; returns its id (0 when no reply was asked for)."""
        if self.closed:
            raise ConnectionClosed()
        with self.write_lock:
            rid, frame = self.state.encode_request(op, {} if args is None else args, want_reply)
            self._queue(frame)
        return rid

    def flush(self) -> None:
        if self._out:
            with self.write_lock:
                if not self._out:
                    return
                data = b"".join(self._out)
                self._out.clear()
                self._out_bytes = 0
                try:
                    self.sock.sendall(data)
                except OSError as exc:
                    self._mark_closed()
                    raise ConnectionClosed(f"connection lost while sending: {exc}") from None

    def send_now(self, op: str, args) -> None:
        """Write a request that wants no reply at once, after whatever is queued, encoded into a
        buffer kept for the connection's life (`ClientConnectionState.encode_request_reused`):
        for large frames sent over and over, such as the pika-style client's publish batches,
        whose fresh objects would cost a page fault per 4 KiB each time."""
        if self.closed:
            raise ConnectionClosed()
        with self.write_lock:
            self.flush()
            _, header, body = self.state.encode_request_reused(op, args, False)
            try:
                if self._sendmsg is not None:
                    sent = self._sendmsg((header, body))
                    if sent < len(header):                # a partial write: the rest as sendall would
                        self.sock.sendall(header[sent:])
                        sent = len(header)
                    if sent - len(header) < len(body):
                        self.sock.sendall(body[sent - len(header):])
                else:
                    self.sock.sendall(header)
                    self.sock.sendall(body)
            except OSError as exc:
                self._mark_closed()
                raise ConnectionClosed(f"connection lost while sending: {exc}") from None
            finally:
                body.release()

    def call(self, op: str, args=None, timeout: float | None = 30.0):
        return self.wait(self.send(op, args), timeout)

    # ---- receiving ---------------------------------------------------------------------
    def wait(self, rid: int, timeout: float | None = 30.0):
        """Wait for the reply to request `rid`; returns its result or raises BrokerError."""
        self.flush()
        deadline = None if timeout is None else time.monotonic() + timeout
        while rid not in self.replies:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"no reply to request {rid} within {timeout} s")
            self.read(remaining)
        reply = self.replies.pop(rid)
        if type(reply) is ErrorReply:
            raise reply.exception()
        return reply.result

    def read(self, timeout: float | None) -> bool:
        """Read what the server sent, waiting up to `timeout` (None: forever). True if anything came."""
        self.flush()
        if timeout is None and self._recv_timeout is not None:
            timeout = 86400.0   # a receive would end at the socket's timeout: wait in poll()
        if timeout is not None and not _wait_readable(self.sock, timeout, self._poller):
            return False
        if self._receives_into:
            self._receive(nowait=False)
            return True
        data = self.recv_bytes(READ_SIZE)
        if self.first_bytes is None:
            self.first_bytes = data[:8]
        self.state.receive(data, self._push_sink, self._async_error_sink)
        return True

    def recv_bytes(self, size: int, flags: int = 0) -> bytes:
        """One `recv` of up to `size` bytes (a fresh bytes object); ConnectionClosed when the
        connection is gone, BlockingIOError when `flags` say not to wait and nothing is there."""
        try:
            data = self.sock.recv(size, flags)
        except BlockingIOError:
            raise
        except OSError as exc:
            self._mark_closed()
            raise ConnectionClosed(f"connection lost: {exc}") from None
        if not data:
            self._mark_closed()
            raise ConnectionClosed()
        return data

    def _receive(self, nowait: bool) -> int:
        """Receive once into the decoder's buffer (a BufferedFrameDecoder's) and route what it
        completes; the byte count, or -1 when the receive filled all the room it was given (more
        may be waiting). A closed connection raises; BlockingIOError when `nowait` finds nothing."""
        buf = self.state.decoder.get_buffer()
        try:
            if not nowait:
                n = self.sock.recv_into(buf)
            elif self._tls:
                n = recv_into_nowait(self.sock, buf)
            else:
                n = self.sock.recv_into(buf, 0, _DONTWAIT)
        except BlockingIOError:
            raise
        except OSError as exc:
            self._mark_closed()
            raise ConnectionClosed(f"connection lost: {exc}") from None
        if n == 0:
            self._mark_closed()
            raise ConnectionClosed()
        room = len(buf)
        if self.first_bytes is None:
            self.first_bytes = bytes(buf[:min(n, 8)])
        buf.release()  # the decoder may move or grow its buffer on the next get_buffer()
        self.state.receive_into(n, self._push_sink, self._async_error_sink)
        return n if n < room else -1

    def receive_within(self, timeout: float) -> int:
        """`_receive`, waiting for data in the receive itself, for at most `timeout` s and at
        least `timeout` less 15 ms (the socket's receive timeout, SO_RCVTIMEO, rounded down so
        that repeated similar waits set it once); BlockingIOError when nothing came.

        Waiting in poll() and then receiving is two syscalls and two returns to Python per
        wake-up; a consumer at the end of a live log wakes once per record, and this one
        receive is ~2 us shorter on that path. Plain sockets only (not TLS: its records are
        read through the SSL object), and only for waits of at least KERNEL_WAIT_MIN."""
        wanted = (timeout - _KERNEL_TICK) // _KERNEL_WAIT_STEP * _KERNEL_WAIT_STEP
        if wanted != self._recv_timeout:
            whole = int(wanted)
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                                     _TIMEVAL.pack(whole, int(round((wanted - whole) * 1e6))))
            except OSError as exc:
                self._mark_closed()
                raise ConnectionClosed(f"connection lost: {exc}") from None
            self._recv_timeout = wanted
        return self._receive(nowait=False)

    def _mark_closed(self):
        self.closed = True

    def raise_async_error(self) -> None:
        """Raise the oldest error for a request sent without a reply, if there is one."""
        if self.async_errors:
            raise self.async_errors.popleft().exception()

    def close(self) -> None:
        if not self.closed:
            try:
                self.flush()
            except BrokerError:
                pass
            self.closed = True
            self._poller = None   # it names the fd, which the system may give to another socket
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = ["RpcConnection", "ConnectionClosed", "ErrorCode", "Response"]
