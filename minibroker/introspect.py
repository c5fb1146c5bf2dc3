"""What the broker holds, as rows an operator can read: the core of `minibroker list ...`.

Each `*_rows` function walks the socket-free core (`Broker`: queues, exchanges and their
bindings, sessions with their channels and consumers) and returns plain maps with the columns
rabbitmqctl's `list_queues`, `list_exchanges`, `list_bindings`, `list_consumers`,
`list_channels` and `list_connections` show. The server (`minibroker/server.py`, the `list`
op) adds what only it knows of a connection (peer address, client name, user).

Rates come from `QueueRates`, which the server samples once a second: the change of each
queue's counters (`MessageQueue.counts`, plain int increments on the paths they count) over
the last interval. Nothing here runs on the hot path.
"""

from __future__ import annotations

import time

# What a queued message costs besides its body: the Message object, its slot in the ready
# list and the strings it shares. An estimate, as RabbitMQ's own `memory` column is.
MESSAGE_OVERHEAD_BYTES = 200
QUEUE_OVERHEAD_BYTES = 2048

KINDS = ("queues", "exchanges", "bindings", "consumers", "channels", "connections")


class QueueRates:
    """Messages per second into and out of each queue over the last sampling interval."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._last: dict[str, tuple] = {}     # queue name -> (time, counts)
        self.rates: dict[str, dict] = {}

    def sample(self, queues: dict) -> None:
        now = self.clock()
        last, self._last = self._last, {}
        rates = {}
        for name, q in queues.items():
            counts = tuple(q.counts)
            self._last[name] = (now, counts)
            before = last.get(name)
            if before is None or now <= before[0]:
                continue
            dt = now - before[0]
            rates[name] = {f"{k}_rate": round((c - b) / dt, 1)
                           for k, c, b in zip(COUNT_NAMES, counts, before[1])}
        self.rates = rates


COUNT_NAMES = ("publish", "deliver", "ack", "redeliver")


def _queue_memory(q) -> int:
    return QUEUE_OVERHEAD_BYTES + q.ready_bytes + (len(q.ready) + q.unacked) * MESSAGE_OVERHEAD_BYTES


def _utilisation(q):
    """The share of the queue's consumers that could take a message right now (None: no consumers).

    RabbitMQ averages this over time; here it is a snapshot, which is what a listing shows anyway.
    """
    consumers = q.consumers
    if not consumers:
        return None
    if q.settings.single_active_consumer:
        consumers = consumers[:1]
    return round(sum(1 for c in consumers if c.credit() > 0) / len(consumers), 2)


def queue_rows(broker, rates: QueueRates | None = None) -> list[dict]:
    rows = []
    for name, q in sorted(broker.queues.items()):
        row = {"name": name, "durable": q.durable, "auto_delete": q.auto_delete,
               "exclusive": q.exclusive_owner is not None, "arguments": q.arguments,
               "messages": len(q.ready) + q.unacked, "messages_ready": len(q.ready),
               "messages_unacknowledged": q.unacked, "message_bytes_ready": q.ready_bytes,
               "consumers": len(q.consumers), "consumer_utilisation": _utilisation(q),
               "memory": _queue_memory(q)}
        row.update({k: v for k, v in zip(COUNT_NAMES, q.counts)})
        row.update((rates.rates.get(name) if rates else None) or {f"{k}_rate": 0.0 for k in COUNT_NAMES})
        rows.append(row)
    return rows


def exchange_rows(broker) -> list[dict]:
    return [{"name": name, "type": ex.type_name, "durable": ex.durable, "auto_delete": ex.auto_delete,
             "internal": ex.internal, "arguments": ex.arguments, "bindings": len(ex.bindings)}
            for name, ex in sorted(broker.exchanges.items())]


def binding_rows(broker) -> list[dict]:
    rows = []
    # Every queue is bound to the default exchange by its name, as rabbitmqctl lists it.
    for name in sorted(broker.queues):
        rows.append({"source": "", "destination": name, "destination_kind": "queue", "routing_key": name,
                     "arguments": {}})
    for source, ex in sorted(broker.exchanges.items()):
        if source == "":
            continue
        for b in sorted(ex.bindings.values(), key=lambda b: (b.destination.name, b.routing_key)):
            rows.append({"source": source, "destination": b.destination.name,
                         "destination_kind": "queue" if b.destination.is_queue else "exchange",
                         "routing_key": b.routing_key, "arguments": b.arguments})
    return rows


def consumer_rows(sessions) -> list[dict]:
    rows = []
    for session in sessions:
        for number, ch in sorted(session.channels.items()):
            for tag, c in ch.consumers.items():
                q = c.queue
                active = not q.settings.single_active_consumer or (q.consumers and q.consumers[0] is c)
                rows.append({"queue": q.name, "connection": session.id, "channel": number, "consumer_tag": tag,
                             "ack_required": not c.no_ack, "prefetch_count": c.prefetch,
                             "unacknowledged": c.unacked, "exclusive": c.exclusive, "active": bool(active),
                             "arguments": c.arguments})
    return rows


def channel_rows(sessions) -> list[dict]:
    rows = []
    for session in sessions:
        for number, ch in sorted(session.channels.items()):
            rows.append({"connection": session.id, "number": number, "consumers": len(ch.consumers),
                         "messages_unacknowledged": len(ch.unacked), "prefetch_count": ch.prefetch_count,
                         "global_prefetch_count": ch.global_prefetch, "confirm": ch.confirm_mode,
                         "published": ch.publish_seq if ch.confirm_mode else None,
                         "next_delivery_tag": ch.next_tag})
    return rows


def connection_row(session, conn) -> dict:
    peer = conn.peer
    return {"id": session.id, "peer": f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer),
            "protocol": "amqp" if not hasattr(conn, "client_name") else "msgpack",
            "client": getattr(conn, "client_name", ""), "user": conn.user, "channels": len(session.channels),
            "state": "blocked" if session.paused else "running",
            "unacknowledged": sum(len(ch.unacked) for ch in session.channels.values())}
