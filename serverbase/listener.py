"""A front door of a server: one listening socket that speaks one protocol.

A broker may have several front doors over one core: minibroker the msgpack protocol and AMQP
0-9-1, minilog the msgpack protocol and the Kafka protocol. Each is a `Listener`: the name shown
in the start-up line, the command-line flag that sets its port (named in the error when the
port is taken, so the operator knows what to change), the address, and a factory of
`asyncio.Protocol` objects, one per client. `BrokerServer.start` opens every listener once
storage is open, and `BrokerServer.stop` closes them.

The protocol objects a factory makes belong to the front door; what they must do to take part
in the server's life (counted, closed on shutdown) is in `BrokerServer.track`.
"""

import asyncio
import errno
from dataclasses import dataclass, field
from typing import Callable


class ListenerError(OSError):
    """A listener could not open its socket; the message is one line naming the flag to change."""


@dataclass
class Listener:
    name: str                                   # "" for the native msgpack door, else "amqp", "kafka"
    flag: str                                   # "--port", "--amqp-port": what sets this port
    port: int                                   # 0 picks a free port; the bound one is kept here
    protocol_factory: Callable[[], asyncio.BaseProtocol]
    host: str = "127.0.0.1"
    ssl: object = None                          # an ssl.SSLContext to serve TLS on this door
    _server: asyncio.AbstractServer | None = field(default=None, repr=False)

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(self.protocol_factory, self.host, self.port,
                                                    reuse_address=True, backlog=1024, ssl=self.ssl)
        except OSError as exc:
            why = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise ListenerError(exc.errno, f"cannot listen on {self.host}:{self.port} ({self.flag}): {why}; "
                                           f"choose another port with {self.flag} (0 picks a free one)") from None
        self.port = self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
