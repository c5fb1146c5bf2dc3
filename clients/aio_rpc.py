"""An asyncio connection to either server: the layer under the aio-pika and aiokafka style clients.

`await AsyncRpcConnection.connect(host, port)` does the handshake. `await conn.call(op, args)`
sends a request and waits for its reply; `conn.send(op, args, want_reply=False)` queues one
without waiting. Requests queued in one loop turn leave in one write. Pushes from the server
go to `on_push(event, body)`, which the client above sets.
"""

import asyncio
import ssl
from functools import partial

from .protocol.client_state import ClientConnectionState
from .protocol.errors import BrokerError, ProtocolViolation
from .protocol.framing import DEFAULT_MAX_FRAME
from .rpc import ConnectionClosed
from .tls import TlsHandshakeError, describe_tls_failure


def _resolve(fut, result, error) -> None:
    """A reply handler (see ClientConnectionState.expect) that settles an asyncio future."""
    if fut.done():
        return  # the caller gave up (a timeout cancelled it)
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, conn):
        self.conn = conn

    def connection_made(self, transport):
        self.conn._transport = transport

    def data_received(self, data):
        self.conn._data_received(data)

    def connection_lost(self, exc):
        self.conn._lost(exc)

    def pause_writing(self):
        self.conn._can_write.clear()

    def resume_writing(self):
        self.conn._can_write.set()


class AsyncRpcConnection:
    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME):
        # Every request registers its future's handler; a reply after a timeout is dropped.
        self.state = ClientConnectionState(max_frame, keep_unclaimed=False)
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._can_write = asyncio.Event()
        self._can_write.set()
        self.closed = False
        self.close_reason: BaseException | None = None
        self.server_info: dict | None = None
        self.on_push = lambda event, body: None
        self.on_async_error = lambda error: None
        self.on_close = lambda exc: None

    @classmethod
    async def connect(cls, host: str, port: int, client_name: str = "python-asyncio-client",
                      credentials: dict | None = None, max_frame: int = DEFAULT_MAX_FRAME,
                      timeout: float = 10.0, expect_server: str | None = None, ssl_context=None,
                      server_hostname: str | None = None):
        """Open the socket (the one place the asyncio clients do; with TLS when given a context)
        and say hello; `expect_server` refuses the other broker at the handshake (`WrongServer`)."""
        conn = cls(max_frame)
        loop = asyncio.get_running_loop()
        tls = {} if ssl_context is None else {"ssl": ssl_context, "server_hostname": server_hostname or host}
        try:
            await asyncio.wait_for(loop.create_connection(lambda: _ClientProtocol(conn), host, port, **tls), timeout)
        except ssl.SSLError as exc:
            raise TlsHandshakeError(describe_tls_failure(host, port, exc)) from None
        try:
            rid, frame = conn.state.hello(client_name, credentials)
            fut = loop.create_future()
            conn.state.expect(rid, partial(_resolve, fut))
            conn._write(frame)
            conn.server_info = await asyncio.wait_for(fut, timeout)
            conn.state.accept_hello(conn.server_info, expect_server)
        except BaseException:
            await conn.close()
            raise
        return conn

    # ---- sending -----------------------------------------------------------------------
    def _write(self, frame: bytes) -> None:
        if self.closed:
            raise ConnectionClosed() if self.close_reason is None else ConnectionClosed(str(self.close_reason))
        self._out.append(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and not self.closed:
            out, self._out = self._out, []
            self._transport.writelines(out)

    def send(self, op: str, args=None, want_reply: bool = True) -> asyncio.Future | None:
        rid, frame = self.state.encode_request(op, {} if args is None else args, want_reply)
        fut = None
        if rid:
            fut = self._loop.create_future()
            self.state.expect(rid, partial(_resolve, fut))
        self._write(frame)
        return fut

    async def call(self, op: str, args=None, timeout: float | None = 30.0):
        fut = self.send(op, args)
        if timeout is None:
            return await fut
        return await asyncio.wait_for(fut, timeout)

    async def drain(self) -> None:
        """Wait while the socket's send buffer is full (backpressure for fast producers)."""
        await self._can_write.wait()

    # ---- receiving ---------------------------------------------------------------------
    def _data_received(self, data) -> None:
        try:
            self.state.receive(data, self._on_push_event, self._on_async_error_event)
        except (ProtocolViolation, BrokerError) as exc:
            self._transport.close()
            self._lost(exc)

    def _on_push_event(self, push) -> None:
        self.on_push(push.event, push.body)

    def _on_async_error_event(self, error) -> None:
        self.on_async_error(error.exception())

    def _lost(self, exc) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = exc
        error = ConnectionClosed() if exc is None else ConnectionClosed(f"connection lost: {exc}")
        self.state.fail_all(error)
        self._can_write.set()
        self.on_close(exc)

    async def close(self) -> None:
        if self._transport is not None and not self.closed:
            self._flush()
            self._transport.close()
            self._lost(None)
