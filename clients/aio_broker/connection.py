"""aio-pika's `connect` / `connect_robust` and `Connection`, over AsyncRpcConnection.

The connection routes the server's pushes to channels (`_on_push`): `deliver` batches to
`Channel._on_deliver`, `confirm` / `return` to the publisher side, `cancel` to the consumer
side. An error answering a request sent without a reply (id 0: publishes, acks) names no
request; it closes the channel its message names ("channel N: ...", see PROTOCOL.md "Publish
errors"), else the channel that last sent one (`_on_async_error`), as RabbitMQ closes the
channel of a failed publish.
"""

import asyncio
import itertools
import urllib.parse

from clients.aio_rpc import AsyncRpcConnection
from clients.protocol.errors import BrokerError, ErrorCode

from clients.broker.exceptions import channel_named_in

from . import exceptions
from .channel import Channel

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5673


class Connection:
    def __init__(self, rpc: AsyncRpcConnection, host: str, port: int):
        self._rpc = rpc
        self.host = host
        self.port = port
        self._channels: dict = {}
        self._last_noreply_channel = None
        self.close_callbacks: list = []
        self._closed_event = asyncio.Event()
        rpc.on_push = self._on_push
        rpc.on_async_error = self._on_async_error
        rpc.on_close = self._on_close

    @property
    def is_closed(self) -> bool:
        return self._rpc.closed

    @property
    def connected(self) -> asyncio.Event:
        event = asyncio.Event()
        if not self._rpc.closed:
            event.set()
        return event

    def channel(self, channel_number=None, publisher_confirms: bool = True, on_return_raises: bool = False) -> Channel:
        """A new channel; `await` it (or use `async with`) to open it."""
        if self._rpc.closed:
            raise exceptions.ChannelInvalidStateError("connection is closed")
        if channel_number is None:
            channel_number = next(n for n in itertools.count(1) if n not in self._channels)
        channel = Channel(self, channel_number, publisher_confirms=publisher_confirms,
                          on_return_raises=on_return_raises)
        self._channels[channel_number] = channel
        return channel

    async def close(self, exc=None):
        for channel in list(self._channels.values()):
            channel._flush_publishes()
        if not self._rpc.closed:
            await self._rpc.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, exc_type, exc, tb):
        await self.close()

    def _on_push(self, event, body):
        channel = self._channels.get(body[0]) if type(body) is list and body else None
        if channel is None:
            return
        if event == "deliver":
            channel._on_deliver(body[1])
        elif event == "confirm":
            channel._on_confirm(body[1], body[2], body[3] if len(body) > 3 else False)
        elif event == "return":
            channel._on_return(body)
        elif event == "cancel":
            channel._on_broker_cancel(body[1])

    def _on_async_error(self, error: BrokerError):
        if error.code in (ErrorCode.FRAME_TOO_LARGE, ErrorCode.CORRUPT_FRAME):
            return  # the server closes the connection; _on_close reports it
        channel = self._channels.get(channel_named_in(error.message)) or self._last_noreply_channel
        if channel is None or channel._closed:
            channel = next((c for c in self._channels.values() if not c._closed), None)
        if channel is not None:
            channel._on_broker_error(exceptions.channel_error(error.code, error.message))

    def _on_close(self, exc):
        error = exceptions.ConnectionClosed(0, f"connection lost: {exc}" if exc else "connection closed")
        for channel in list(self._channels.values()):
            channel._mark_closed(error)
        self._closed_event.set()
        for callback in self.close_callbacks:
            callback(self, exc)

    def __repr__(self):
        return f"<Connection {self.host}:{self.port} {'closed' if self.is_closed else 'open'}>"


class RobustConnection(Connection):
    """Same as Connection: this client does not reconnect (see docs/clients-minibroker.md)."""


async def connect(url: str | None = None, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                  login: str | None = None, password: str | None = None, virtualhost: str = "/",
                  ssl: bool = False, timeout: float = 10.0, client_properties=None,
                  connection_class=Connection, **kwargs) -> Connection:
    if url:
        parts = urllib.parse.urlparse(str(url))
        host = parts.hostname or host
        port = parts.port or port
        if parts.username is not None:
            login = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
    credentials = None
    if login is not None:
        credentials = {"username": login, "password": password or ""}
    name = str((client_properties or {}).get("connection_name", "minibroker-aio-pika-client"))
    try:
        rpc = await AsyncRpcConnection.connect(host, port, client_name=name, credentials=credentials,
                                               timeout=timeout)
    except BrokerError as exc:
        if exc.code == ErrorCode.NOT_AUTHORIZED:
            raise exceptions.ProbableAuthenticationError(f"ACCESS_REFUSED - {exc.message}") from None
        raise exceptions.AMQPConnectionError(f"{exc.code} - {exc.message}") from None
    except (OSError, asyncio.TimeoutError) as exc:
        raise exceptions.AMQPConnectionError(f"could not connect to {host}:{port}: {exc}") from None
    return connection_class(rpc, host, port)


async def connect_robust(url: str | None = None, **kwargs) -> RobustConnection:
    kwargs.setdefault("connection_class", RobustConnection)
    return await connect(url, **kwargs)
