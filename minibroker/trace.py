"""Firehose tracing: each message's path through the broker, as events, for people watching it work.

`minibroker trace` subscribes (the `trace` op) and prints, for every message: `published` (who,
to which exchange, with which routing key), `routed` (to which queues, and through which of the
exchange's bindings), `unroutable` or `returned`, `delivered` (to which connection, channel and
consumer, redelivered or not), `acked`, and `dead_lettered` (from which queue, why, and where
to). As RabbitMQ's firehose, it is for looking, not for production load.

It costs nothing while nobody traces: every hook in the core is behind `if broker.tracers:`,
the per-turn delivery hook runs once per channel per turn, and the publish fast path
(`Broker.publish_batch`) is switched off for the duration of a trace (`Broker.set_tracing`
clears `MessageQueue.fast`), so no per-message check was added to it. A tracer whose
connection cannot keep up loses events (counted in the `trace_dropped` field of the next one it
gets) rather than making the server buffer them.
"""

from __future__ import annotations


def _emit(broker, event: dict) -> None:
    for tracer in list(broker.tracers):
        tracer(event)


def _via(exchange, queue) -> list[str]:
    """The routing keys of `exchange`'s bindings to `queue` (what a message matched to get there)."""
    return sorted({b.routing_key for b in exchange.bindings.values() if b.destination is queue})


def published(broker, channel, exchange_name: str, routing_key: str, body, properties) -> None:
    _emit(broker, {"event": "published", "connection": channel.session.id, "channel": channel.number,
                   "exchange": exchange_name, "routing_key": routing_key, "size": len(body),
                   "properties": properties or {}})


def routed(broker, exchange, routing_key: str, queues: list) -> None:
    if not queues:
        _emit(broker, {"event": "unroutable", "exchange": exchange.name, "routing_key": routing_key})
        return
    _emit(broker, {"event": "routed", "exchange": exchange.name, "routing_key": routing_key,
                   "queues": [{"queue": q.name, "via": [routing_key] if exchange.name == "" else _via(exchange, q)}
                              for q in queues]})


def returned(broker, channel, exchange_name: str, routing_key: str) -> None:
    _emit(broker, {"event": "returned", "connection": channel.session.id, "channel": channel.number,
                   "exchange": exchange_name, "routing_key": routing_key, "reason": "NO_ROUTE"})


def delivered(broker, channel, entries: list) -> None:
    for ctag, tag, redelivered, exchange, routing_key, _body, _props in entries:
        consumer = channel.consumers.get(ctag)
        _emit(broker, {"event": "delivered", "queue": consumer.queue.name if consumer else None,
                       "connection": channel.session.id, "channel": channel.number, "consumer_tag": ctag,
                       "delivery_tag": tag, "redelivered": redelivered, "exchange": exchange,
                       "routing_key": routing_key})


def got(broker, channel, queue, reply: dict) -> None:
    _emit(broker, {"event": "delivered", "queue": queue.name, "connection": channel.session.id,
                   "channel": channel.number, "consumer_tag": None, "delivery_tag": reply["delivery_tag"],
                   "redelivered": reply["redelivered"], "exchange": reply["exchange"],
                   "routing_key": reply["routing_key"], "by": "get"})


def settled(broker, channel, msgs: list, verb: str, requeue: bool | None = None) -> None:
    for m in msgs:
        event = {"event": verb, "queue": m.queue.name if m.queue is not None else None,
                 "connection": channel.session.id, "channel": channel.number, "delivery_tag": m.tag,
                 "routing_key": m.routing_key}
        if requeue is not None:
            event["requeue"] = requeue
        _emit(broker, event)


def dead_lettered(broker, queue, msgs: list, reason: str, exchange_name, targets_by_msg: list) -> None:
    for m, targets in zip(msgs, targets_by_msg):
        _emit(broker, {"event": "dead_lettered", "queue": queue.name, "reason": reason,
                       "routing_key": m.routing_key, "dead_letter_exchange": exchange_name,
                       "to": [q.name for q in targets]})
