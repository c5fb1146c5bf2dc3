"""The minibroker server: the wire front end of the routing broker.

It turns requests into calls on the broker core and the core's deliveries into pushes.
Routing, queues and acks live in the core, not here.
"""

from serverbase import BrokerServer

DEFAULT_PORT = 5673
DEFAULT_DATA_DIR = "./data/minibroker"


class MinibrokerServer(BrokerServer):
    """minibroker: a routing message queue in the spirit of RabbitMQ."""

    name = "minibroker"
