"""pika's connection parameters: `ConnectionParameters`, `URLParameters`, `PlainCredentials`.

Only what our wire uses is acted on (host, port, credentials, TLS through `ssl_options`, socket
timeout, connection attempts and retry delay, client name); the rest of pika's keywords
(virtual_host, heartbeat...) are accepted so pika programs construct their parameters unchanged.
One setting is ours: `flush_delay` (seconds, default 0.001), the longest a publish or ack
waits in the client before a background thread writes it (pika writes each at once; we batch
them, and bound the wait).
"""

import ssl
import urllib.parse

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5673  # minibroker's port (RabbitMQ's is 5672)
DEFAULT_SSL_PORT = 5674  # minibroker's TLS port for this protocol (RabbitMQ's AMQPS is 5671)


class SSLOptions:
    """pika's TLS settings: an `ssl.SSLContext` and the host name to check the certificate against
    (default: the host connected to)."""

    def __init__(self, context, server_hostname=None):
        if not isinstance(context, ssl.SSLContext):
            raise TypeError(f"context must be of ssl.SSLContext type, but got {context!r}")
        self.context = context
        self.server_hostname = server_hostname

    def __repr__(self):
        return f"SSLOptions(context={self.context!r}, server_hostname={self.server_hostname!r})"
DEFAULT_FLUSH_DELAY = 0.001


class PlainCredentials:
    TYPE = "PLAIN"

    def __init__(self, username, password, erase_on_connect=False):
        self.username = username
        self.password = password
        self.erase_on_connect = erase_on_connect

    def __eq__(self, other):
        return isinstance(other, PlainCredentials) and (self.username, self.password) == (other.username, other.password)

    def __repr__(self):
        return f"PlainCredentials(username={self.username!r})"

    def to_wire(self) -> dict:
        return {"username": self.username, "password": self.password}


class Parameters:
    DEFAULT_HOST = DEFAULT_HOST
    DEFAULT_PORT = DEFAULT_PORT
    DEFAULT_VIRTUAL_HOST = "/"
    DEFAULT_CONNECTION_ATTEMPTS = 1
    DEFAULT_RETRY_DELAY = 2.0
    DEFAULT_SOCKET_TIMEOUT = 10.0
    DEFAULT_BLOCKED_CONNECTION_TIMEOUT = None
    DEFAULT_HEARTBEAT_TIMEOUT = None
    DEFAULT_FRAME_MAX = 16 * 1024 * 1024

    def __init__(self):
        self.host = DEFAULT_HOST
        self.port = DEFAULT_PORT
        self.virtual_host = "/"
        # Our server has no guest account: no credentials unless given.
        self.credentials = None
        self.channel_max = 65535
        self.frame_max = self.DEFAULT_FRAME_MAX
        self.heartbeat = None
        self.ssl_options = None
        self.connection_attempts = 1
        self.retry_delay = 2.0
        self.socket_timeout = 10.0
        self.stack_timeout = 15.0
        self.locale = "en_US"
        self.blocked_connection_timeout = None
        self.client_properties = None
        self.tcp_options = None
        self.flush_delay = DEFAULT_FLUSH_DELAY

    @property
    def flush_delay(self) -> float:
        return self._flush_delay

    @flush_delay.setter
    def flush_delay(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"flush_delay must be a number of seconds from 0 to 1, got {value!r}")
        self._flush_delay = float(value)

    @property
    def client_name(self) -> str:
        props = self.client_properties or {}
        return str(props.get("connection_name") or props.get("product") or "minibroker-pika-client")

    def __repr__(self):
        return f"<{type(self).__name__} host={self.host} port={self.port} virtual_host={self.virtual_host}>"


_UNSET = object()


class ConnectionParameters(Parameters):
    def __init__(self, host=_UNSET, port=_UNSET, virtual_host=_UNSET, credentials=_UNSET,
                 channel_max=_UNSET, frame_max=_UNSET, heartbeat=_UNSET, ssl_options=_UNSET,
                 connection_attempts=_UNSET, retry_delay=_UNSET, socket_timeout=_UNSET,
                 stack_timeout=_UNSET, locale=_UNSET, blocked_connection_timeout=_UNSET,
                 client_properties=_UNSET, tcp_options=_UNSET, flush_delay=_UNSET, **kwargs):
        super().__init__()
        given = dict(host=host, port=port, virtual_host=virtual_host, credentials=credentials,
                     channel_max=channel_max, frame_max=frame_max, heartbeat=heartbeat,
                     ssl_options=ssl_options, connection_attempts=connection_attempts,
                     retry_delay=retry_delay, socket_timeout=socket_timeout, stack_timeout=stack_timeout,
                     locale=locale, blocked_connection_timeout=blocked_connection_timeout,
                     client_properties=client_properties, tcp_options=tcp_options, flush_delay=flush_delay)
        if kwargs:
            raise TypeError(f"unexpected keyword arguments: {sorted(kwargs)}")
        for name, value in given.items():
            if value is not _UNSET:
                setattr(self, name, value)
        if self.ssl_options is not None and not isinstance(self.ssl_options, SSLOptions):
            raise TypeError(f"ssl_options must be None or SSLOptions but got {self.ssl_options!r}")
        if self.host is None:
            self.host = DEFAULT_HOST
        if self.port is None or port is _UNSET:
            self.port = DEFAULT_SSL_PORT if self.ssl_options is not None else DEFAULT_PORT
        self.port = int(self.port)


class URLParameters(Parameters):
    """`amqp://user:pass@host:port/vhost?connection_attempts=3&socket_timeout=5`."""

    def __init__(self, url):
        super().__init__()
        parts = urllib.parse.urlparse(url)
        if parts.scheme not in ("amqp", "amqps", ""):
            raise ValueError(f"URL scheme must be amqp, got {parts.scheme!r}")
        if parts.scheme == "amqps":
            # As pika: TLS with the system's CAs, on the TLS port unless one is given.
            self.ssl_options = SSLOptions(ssl.create_default_context())
            self.port = DEFAULT_SSL_PORT
        if parts.hostname:
            self.host = parts.hostname
        if parts.port:
            self.port = parts.port
        if parts.username is not None:
            self.credentials = PlainCredentials(urllib.parse.unquote(parts.username),
                                                urllib.parse.unquote(parts.password or ""))
        if parts.path and parts.path != "/":
            self.virtual_host = urllib.parse.unquote(parts.path[1:])
        for key, values in urllib.parse.parse_qs(parts.query).items():
            value = values[-1]
            if key in ("connection_attempts", "channel_max", "frame_max", "heartbeat"):
                setattr(self, key, int(value))
            elif key in ("retry_delay", "socket_timeout", "stack_timeout", "blocked_connection_timeout",
                         "flush_delay"):
                setattr(self, key, float(value))
            elif key == "locale":
                self.locale = value
