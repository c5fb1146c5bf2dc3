"""What both brokers' servers share: the asyncio server, the per-connection protocol, the CLI.

A broker subclasses `BrokerServer`, registers its ops and gets framing, the handshake,
`ping` and `server_info`, error replies, write coalescing, backpressure and clean shutdown.
The broker's core (routing, queues, logs) stays free of all of this, so that another front
end could drive it.
"""

from .connection import ClientConnection
from .server import BrokerServer, op

__all__ = ["BrokerServer", "ClientConnection", "op"]
