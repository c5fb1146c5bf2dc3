"""Dead-lettering: republishing a message a queue gave up on, with the story in its `x-death` header.

A queue with `x-dead-letter-exchange` (and optionally `x-dead-letter-routing-key`) hands messages
here (`MessageQueue.discard`) when they are rejected or nacked without requeue (`rejected`),
expire (`expired`), are pushed out by `x-max-length`/`x-max-length-bytes` (`maxlen`), or are
returned more often than `x-delivery-limit` allows (`delivery_limit`).

`dead_letter` republishes each message to the dead-letter exchange, with the dead-letter routing
key or else the message's own, and records the event the way RabbitMQ does:

- `x-death` is a list of maps {queue, reason, count, exchange, routing-keys, time}; an event for
  the same queue and reason increments that entry's count and moves it to the front, a new one
  is inserted at the front;
- `x-first-death-queue`, `x-first-death-reason`, `x-first-death-exchange` are set once and kept;
  `x-last-death-*` follow the latest event;
- the per-message `expiration` is removed (kept as `original-expiration` in the x-death entry),
  so a message does not expire again for the same reason in the dead-letter queue.

Cycles: if the message would land in a queue it already died in, and no death on its record was
a client's rejection, it is dropped instead (as RabbitMQ does), so an expiry loop cannot spin.
"""

import logging
import time

from clients.protocol.errors import BrokerError

from .message import Message

log = logging.getLogger("minibroker.dead_letter")

CLIENT_REASONS = ("rejected", "delivery_limit")


def death_headers(msg: Message, queue_name: str, reason: str, now_wall: float) -> dict:
    """The message's properties with this death recorded."""
    properties = dict(msg.properties) if msg.properties else {}
    headers = dict(properties.get("headers") or {})
    deaths = [dict(d) for d in headers.get("x-death") or [] if isinstance(d, dict)]
    for i, d in enumerate(deaths):
        if d.get("queue") == queue_name and d.get("reason") == reason:
            d["count"] = int(d.get("count", 1)) + 1
            d["time"] = int(now_wall)
            deaths.insert(0, deaths.pop(i))
            break
    else:
        entry = {"queue": queue_name, "reason": reason, "count": 1, "exchange": msg.exchange,
                 "routing-keys": [msg.routing_key], "time": int(now_wall)}
        if "expiration" in properties:
            entry["original-expiration"] = properties["expiration"]
        deaths.insert(0, entry)
    headers["x-death"] = deaths
    headers.setdefault("x-first-death-queue", queue_name)
    headers.setdefault("x-first-death-reason", reason)
    headers.setdefault("x-first-death-exchange", msg.exchange)
    headers["x-last-death-queue"] = queue_name
    headers["x-last-death-reason"] = reason
    headers["x-last-death-exchange"] = msg.exchange
    properties["headers"] = headers
    properties.pop("expiration", None)
    return properties


def dead_letter(broker, queue, msgs: list, reason: str) -> None:
    exchange = broker.exchanges.get(queue.dead_letter_exchange)
    if exchange is None:
        return   # RabbitMQ drops silently when the dead-letter exchange is missing
    routing_key = queue.settings.dead_letter_routing_key
    now = broker.clock()
    now_wall = time.time()
    for msg in msgs:
        properties = death_headers(msg, queue.name, reason, now_wall)
        deaths = properties["headers"]["x-death"]
        died_in = {d.get("queue") for d in deaths}
        client_caused = any(d.get("reason") in CLIENT_REASONS for d in deaths)
        rk = routing_key if routing_key is not None else msg.routing_key
        targets = [q for q in broker.route(exchange, rk, properties)
                   if client_caused or q.name not in died_in]
        if broker.tracers:
            from . import trace
            trace.dead_lettered(broker, queue, [msg], reason, exchange.name, [targets])
        body = msg.body if msg.body is not None else broker.store.read_body(msg)   # lazy body (durable store)
        for q in targets:
            m = Message(exchange.name, rk, body, properties)
            m.priority = msg.priority
            m.persistent = msg.persistent
            try:
                q.publish(m, now)
            except BrokerError as exc:
                # The store refused the copy (disk failing, STORAGE_ERROR). The original is
                # leaving its queue either way, so rather than lose the message keep the copy
                # in memory only: it is delivered, but does not survive a restart.
                log.warning("dead-lettering to queue '%s': %s; the copy is kept in memory only",
                            q.name, exc.message)
                m.persistent = False
                q.publish(m, now)
