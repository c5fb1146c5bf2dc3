"""The minilog server: the wire front end of the log broker.

It turns produce and fetch requests into calls on the storage engine and the group
coordinator. Storage lives in `minilog.storage`, not here.
"""

from serverbase import BrokerServer

DEFAULT_PORT = 9093
DEFAULT_DATA_DIR = "./data/minilog"


class MinilogServer(BrokerServer):
    """minilog: a log-based stream in the spirit of Kafka."""

    name = "minilog"
