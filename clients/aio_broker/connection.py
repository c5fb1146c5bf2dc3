"""aio-pika's `connect` / `connect_robust` and `Connection`, over AsyncRpcConnection.

The connection routes the server's pushes to channels (`_on_push`): each goes into the
channel's sans-IO state (`ChannelState.receive`), and the typed event it makes to the channel:
`Deliveries` to `Channel._on_deliver`, `Confirmed` / `Returned` to the publisher side,
`ConsumerCancelled` to the consumer side. An error answering a request sent without a reply (id 0: publishes, acks) names no
request; it closes the channel the error frame names in its detail map (`{"ch": N}`, see
PROTOCOL.md "Publish errors"), else the channel that last sent one (`_on_async_error`), as
RabbitMQ closes the channel of a failed publish.
"""

import asyncio
import itertools
import logging
import ssl as _ssl
import urllib.parse

from clients.aio_rpc import AsyncRpcConnection
from clients.broker.channel_state import (Confirmed, ConsumerCancelled, Deliveries, Returned, channel_for_error,
                                          route_push)
from clients.protocol.errors import BrokerError, ErrorCode
from clients.tls import TlsSettingError, default_client_context


from . import exceptions
from .channel import Channel

log = logging.getLogger("clients.aio_broker")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5673
DEFAULT_SSL_PORT = 5674   # the TLS twin of the msgpack port (docs/security.md)


class Connection:
    robust = False

    def __init__(self, rpc: AsyncRpcConnection, host: str, port: int, connect_args: dict | None = None):
        self.host = host
        self.port = port
        self._connect_args = connect_args or {}
        self._channels: dict = {}
        self._last_noreply_channel = None
        self._closing = False                 # close() was called: a loss is not to be repaired
        self.close_callbacks: list = []
        self.reconnect_callbacks: list = []
        self.connected = asyncio.Event()      # set while the connection is up (aio-pika's name)
        self._closed_event = asyncio.Event()
        self._attach(rpc)
        self.connected.set()

    def _attach(self, rpc: AsyncRpcConnection):
        self._rpc = rpc
        rpc.on_push = self._on_push
        rpc.on_async_error = self._on_async_error
        rpc.on_close = self._on_close

    @property
    def is_closed(self) -> bool:
        return self._closing or (self._rpc.closed and not self.robust)

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
        self._closing = True
        for channel in list(self._channels.values()):
            channel._flush_publishes()
        if not self._rpc.closed:
            await self._rpc.close()
        self._stop_reconnecting()

    def _stop_reconnecting(self):
        pass

    async def __aenter__(self):
        return self

    async def __aexit__(self, exc_type, exc, tb):
        await self.close()

    def _on_push(self, event, body):
        # The channel's sans-IO state takes the push and says what it makes.
        channel, happened = route_push(self._channels, event, body)
        kind = type(happened)
        if kind is Deliveries:
            channel._on_deliver(happened.batch)
        elif kind is Confirmed:
            channel._on_confirmed(happened.records)
        elif kind is Returned:
            channel._on_return(happened)
        elif kind is ConsumerCancelled:
            channel._on_broker_cancel(happened.consumer_tag)

    def _on_async_error(self, error: BrokerError):
        if error.code in (ErrorCode.FRAME_TOO_LARGE, ErrorCode.CORRUPT_FRAME):
            return  # the server closes the connection; _on_close reports it
        channel = channel_for_error(self._channels, error.channel, self._last_noreply_channel)
        if channel is not None:
            channel._on_broker_error(exceptions.channel_error(error.code, error.message))

    def _on_close(self, exc):
        self.connected.clear()
        error = exceptions.ConnectionClosed(0, f"connection lost: {exc}" if exc else "connection closed")
        for channel in list(self._channels.values()):
            channel._mark_closed(error)
        self._closed_event.set()
        for callback in self.close_callbacks:
            callback(self, exc)

    def __repr__(self):
        return f"<Connection {self.host}:{self.port} {'closed' if self.is_closed else 'open'}>"


class RobustConnection(Connection):
    """A connection that comes back: after an unexpected loss it reconnects every
    `reconnect_interval` seconds until it succeeds, then reopens its channels and replays what
    they declared (exchanges, queues, bindings, prefetch) and their consumers
    (`Channel._restore`). Publishes awaiting a confirm when the connection dropped fail with
    `ConnectionClosed`; calls made while it is down raise `ChannelInvalidStateError` — wait on
    `connection.connected` to resume.
    """

    robust = True

    def __init__(self, *args, reconnect_interval: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.reconnect_interval = reconnect_interval
        self._reconnect_task = None

    def _on_close(self, exc):
        if self._closing:
            return super()._on_close(exc)
        self.connected.clear()
        error = exceptions.ConnectionClosed(0, f"connection lost: {exc}" if exc else "connection closed")
        for channel in list(self._channels.values()):
            channel._interrupt(error)
        if self._reconnect_task is None:
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self):
        try:
            while not self._closing:
                await asyncio.sleep(self.reconnect_interval)
                try:
                    rpc = await _open_rpc(**self._connect_args)
                except (exceptions.AMQPConnectionError, OSError, asyncio.TimeoutError) as exc:
                    log.info("reconnecting to %s:%s failed (%s); retrying", self.host, self.port, exc)
                    continue
                if self._closing:
                    await rpc.close()
                    return
                self._attach(rpc)
                try:
                    for channel in list(self._channels.values()):
                        if not channel._closed:
                            await channel._restore()
                except exceptions.AMQPError as exc:
                    if rpc.closed:
                        continue  # lost again while restoring: start over
                    log.warning("restoring channels after reconnecting failed: %r", exc, exc_info=True)
                self.connected.set()  # only now: the channels are usable again
                for callback in self.reconnect_callbacks:
                    callback(self)
                return
        finally:
            self._reconnect_task = None

    def _stop_reconnecting(self):
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            self._reconnect_task = None
        if not self.connected.is_set():
            super()._on_close(None)  # closed while down: the channels close for good now


async def _open_rpc(host, port, name, credentials, timeout, ssl_context=None) -> AsyncRpcConnection:
    try:
        return await AsyncRpcConnection.connect(host, port, client_name=name, credentials=credentials,
                                                timeout=timeout, expect_server="minibroker",
                                                ssl_context=ssl_context)
    except BrokerError as exc:
        if exc.code == ErrorCode.NOT_AUTHORIZED:
            raise exceptions.ProbableAuthenticationError(f"ACCESS_REFUSED - {exc.message}") from None
        if exc.code == "WRONG_SERVER":
            raise exceptions.IncompatibleProtocolError(exc.message) from None
        raise exceptions.AMQPConnectionError(f"{exc.code} - {exc.message}") from None
    except (OSError, asyncio.TimeoutError) as exc:
        raise exceptions.AMQPConnectionError(f"could not connect to {host}:{port}: {exc}") from None


async def connect(url: str | None = None, *, host: str = DEFAULT_HOST, port: int | None = None,
                  login: str | None = None, password: str | None = None, virtualhost: str = "/",
                  ssl: bool = False, timeout: float = 10.0, client_properties=None,
                  connection_class=Connection, reconnect_interval: float = 1.0, ssl_options: dict | None = None,
                  ssl_context=None, **kwargs) -> Connection:
    if url:
        parts = urllib.parse.urlparse(str(url))
        host = parts.hostname or host
        port = parts.port or port
        if parts.username is not None:
            login = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
        if parts.scheme == "amqps":
            ssl = True
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parts.query).items()}
        tls_keys = {k: query[k] for k in ("cafile", "capath", "cadata", "keyfile", "certfile", "no_verify_ssl")
                    if k in query}
        if tls_keys:
            ssl_options = {**tls_keys, **(ssl_options or {})}
    ssl_context = _tls_context(ssl, ssl_options, ssl_context)
    if port is None:
        port = DEFAULT_SSL_PORT if ssl_context is not None else DEFAULT_PORT
    credentials = None
    if login is not None:
        credentials = {"username": login, "password": password or ""}
    name = str((client_properties or {}).get("connection_name", "minibroker-aio-pika-client"))
    connect_args = dict(host=host, port=port, name=name, credentials=credentials, timeout=timeout,
                        ssl_context=ssl_context)
    rpc = await _open_rpc(**connect_args)
    if issubclass(connection_class, RobustConnection):
        return connection_class(rpc, host, port, connect_args, reconnect_interval=reconnect_interval)
    return connection_class(rpc, host, port, connect_args)


def _tls_context(use_ssl: bool, ssl_options: dict | None, ssl_context):
    """aio-pika's TLS settings: `ssl=True` (or an amqps:// URL) with `ssl_context`, or a context
    made from `ssl_options` (cafile, capath, cadata, certfile, keyfile, no_verify_ssl)."""
    if not use_ssl:
        if ssl_context is not None or ssl_options:
            raise ValueError("ssl_context/ssl_options are given but ssl is off: pass ssl=True or an amqps:// URL")
        return None
    if ssl_context is not None:
        if not isinstance(ssl_context, _ssl.SSLContext):
            raise ValueError(f"ssl_context must be an ssl.SSLContext, got {type(ssl_context).__name__}")
        return ssl_context
    opts = dict(ssl_options or {})
    unknown = set(opts) - {"cafile", "capath", "cadata", "keyfile", "certfile", "no_verify_ssl"}
    if unknown:
        raise ValueError(f"unknown ssl_options {sorted(unknown)}")
    no_verify = str(opts.get("no_verify_ssl", "0")).lower() in ("1", "true", "yes")
    try:
        ctx = default_client_context(cafile=opts.get("cafile"), certfile=opts.get("certfile"),
                                     keyfile=opts.get("keyfile"), verify=not no_verify)
        if opts.get("capath") or opts.get("cadata"):
            ctx.load_verify_locations(capath=opts.get("capath"), cadata=opts.get("cadata"))
    except (TlsSettingError, OSError, _ssl.SSLError) as exc:
        raise ValueError(str(exc)) from None
    return ctx


async def connect_robust(url: str | None = None, **kwargs) -> RobustConnection:
    kwargs.setdefault("connection_class", RobustConnection)
    return await connect(url, **kwargs)
