"""The seam between the broker core and a durable store (`minibroker/store/` plugs one in).

The core calls the store at a handful of moments and never waits on it inline:

- definitions: `exchange_declared` / `exchange_deleted`, `queue_declared` / `queue_deleted`,
  `bound` / `unbound` — only for durable things (a binding when both ends are durable);
- messages: `enqueue(queue, msg)` when a *persistent* message (delivery_mode 2) enters a
  *durable* queue (the store may set `msg.store_id`), `settle(queue, msg)` when such a message
  leaves the queue for good (acked, dropped, dead-lettered, purged, expired, its queue deleted —
  every message with a `store_id` is settled exactly once);
- `delivered(queue, msg)` when a message with a `store_id` is handed out with acks pending (so
  redelivered flags and delivery counts survive a restart), and `read_body(msg)` when the core
  needs the body of a message whose `body` the store dropped from memory (`None`; lazy bodies).
  [added by the durable store]
- `deliveries_leaving()` just before deliveries reported with `delivered` are written to a
  socket (`Broker.run_turn` for pushes, `Channel.get` for gets): the store makes their records
  survive a process crash first, so a message never comes back from a kill -9 unflagged
  after it was handed out (a delivery not flagged redelivered has never been seen before:
  RabbitMQ's promise).
- confirms: `when_durable(callback)` at the end of each event-loop turn that produced publisher
  confirms. The store calls `callback()` once everything it accepted so far is durable — at once
  if nothing is pending. Callbacks must run in the order they were registered (confirms must not
  overtake each other). One fsync may serve many turns' worth of publishes (group commit).
  If the store could not make them durable (disk full, I/O error) it calls `callback(failure)`
  instead, `failure` a sentence naming the reason: the broker nacks those confirms and sends
  the channel an id-0 STORAGE_ERROR. `enqueue` may raise `BrokerError(STORAGE_ERROR)` to refuse
  a message (the broker nacks that publish).
- `recover(broker)`: at start, before any client connects, re-create durable exchanges, queues,
  bindings and the persistent messages with `Broker.restore_exchange`, `restore_queue`,
  `restore_binding` and `restore_message` (these do not call the store back).
- `close()`: flush and close files at shutdown.

`TransientStore` below does nothing and confirms at once; it is the default.
"""

from typing import Callable, Protocol


class Store(Protocol):
    def recover(self, broker) -> None: ...
    def close(self) -> None: ...

    def exchange_declared(self, exchange) -> None: ...
    def exchange_deleted(self, exchange) -> None: ...
    def queue_declared(self, queue) -> None: ...
    def queue_deleted(self, queue) -> None: ...
    def bound(self, source, destination, routing_key: str, arguments: dict) -> None: ...
    def unbound(self, source, destination, routing_key: str, arguments: dict) -> None: ...

    def enqueue(self, queue, msg) -> None: ...
    def settle(self, queue, msg) -> None: ...
    def delivered(self, queue, msg) -> None: ...
    def deliveries_leaving(self) -> None: ...
    def read_body(self, msg) -> bytes: ...

    def when_durable(self, callback: Callable[[], None]) -> None: ...


class TransientStore:
    """Keeps nothing: every message lives in memory only, and confirms go out at once."""

    def recover(self, broker) -> None:
        pass

    def close(self) -> None:
        pass

    def exchange_declared(self, exchange) -> None:
        pass

    def exchange_deleted(self, exchange) -> None:
        pass

    def queue_declared(self, queue) -> None:
        pass

    def queue_deleted(self, queue) -> None:
        pass

    def bound(self, source, destination, routing_key, arguments) -> None:
        pass

    def unbound(self, source, destination, routing_key, arguments) -> None:
        pass

    def enqueue(self, queue, msg) -> None:
        pass

    def settle(self, queue, msg) -> None:
        pass

    def delivered(self, queue, msg) -> None:
        pass

    def deliveries_leaving(self) -> None:
        pass

    def read_body(self, msg) -> bytes:
        return msg.body

    def when_durable(self, callback) -> None:
        callback()
