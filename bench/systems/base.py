"""The interface every system adapter implements, so one runner drives them all.

An adapter maps a `Case` (bench/workloads.py) onto one system's objects - queues and exchanges
or topics and partitions - and hands the runner producers and consumers with two verbs each:
`send_batch` / `flush` and `poll`. It knows nothing of processes, clocks or counting (the
runner's job, bench/runner.py) nor of starting servers (bench/systems/servers.py).

Adapters live in child processes and are rebuilt there from a plain `endpoint` dict, so client
libraries are imported only where they are used: a missing library skips that system instead of
breaking the bench.
"""

from dataclasses import dataclass


class Unsupported(Exception):
    """This system cannot run this case; the message says why, for the report."""


@dataclass
class Lanes:
    """Which lanes (queues/partitions) consumer `index` of a group reads."""

    @staticmethod
    def for_consumer(lanes: int, consumers: int, index: int) -> list[int]:
        return list(range(index, lanes, consumers))


class Producer:
    async def send_batch(self, items: list[tuple[int, int, bytes]]) -> None:
        """Send (lane, key, body) items; may return before the broker has them."""
        raise NotImplementedError

    async def flush(self) -> None:
        """Return once the broker has acknowledged everything sent."""

    async def close(self) -> None:
        pass


class Consumer:
    async def poll(self, timeout: float) -> list[bytes]:
        """Bodies received (and acked/committed per the case) since the last poll."""
        raise NotImplementedError

    async def close(self) -> None:
        pass


class SystemAdapter:
    name = "?"
    paradigm = "?"                  # "queue" or "log"
    client = "?"                    # client library the adapter drives

    def __init__(self, endpoint: dict):
        self.endpoint = endpoint

    @classmethod
    def client_version(cls) -> str:
        return "?"

    def settings(self, case) -> dict:
        """What a reader needs to judge the figures: durability, acks, prefetch, batching."""
        return {}

    def check(self, case) -> None:
        """Raise Unsupported if this system cannot run `case`."""

    async def setup(self, case, prefix: str) -> None:
        raise NotImplementedError

    async def teardown(self, case, prefix: str) -> None:
        pass

    async def open_producer(self, case, prefix: str, index: int) -> Producer:
        raise NotImplementedError

    async def open_consumer(self, case, prefix: str, group: str, index: int) -> Consumer:
        raise NotImplementedError
