"""A raw-op client for the durability tests: publish with confirms, consume with acks.

Built on `clients.rpc.RpcConnection` and the ops of docs/PROTOCOL.md section 8 only, so these
tests do not depend on the pika-style client.
"""

import time

from clients.rpc import RpcConnection

PERSISTENT = {"delivery_mode": 2}


class DurableClient:
    def __init__(self, host, port, ch=1):
        self.conn = RpcConnection(host, port, client_name="durability-test")
        self.ch = ch
        self.conn.call("channel_open", {"ch": ch})
        self.seq = 0
        self.confirmed: set[int] = set()     # acked seqs
        self.nacked: set[int] = set()
        self._confirmed_upto = 0
        self.deliveries: list = []           # [consumer_tag, tag, redelivered, exchange, rk, body, props]

    # ---- declarations -----------------------------------------------------------------------
    def queue(self, name, durable=True, arguments=None, **kw):
        return self.conn.call("queue_declare", {"queue": name, "durable": durable, "arguments": arguments or {}, **kw})

    def exchange(self, name, type_="direct", durable=True):
        return self.conn.call("exchange_declare", {"exchange": name, "type": type_, "durable": durable})

    def bind(self, queue, exchange, routing_key):
        return self.conn.call("queue_bind", {"queue": queue, "exchange": exchange, "routing_key": routing_key})

    def queue_exists(self, name) -> bool:
        from clients.protocol.errors import BrokerError
        try:
            self.conn.call("queue_declare", {"queue": name, "passive": True})
            return True
        except BrokerError as exc:
            if exc.code == "NOT_FOUND":
                return False
            raise

    # ---- publishing -------------------------------------------------------------------------
    def confirm_select(self):
        self.conn.call("confirm_select", {"ch": self.ch})

    def publish(self, routing_key, body, persistent=True, exchange="") -> int:
        self.conn.send("publish", {"ch": self.ch, "exchange": exchange, "routing_key": routing_key, "body": body,
                                   "properties": PERSISTENT if persistent else None}, want_reply=False)
        self.seq += 1
        return self.seq

    def publish_batch(self, routing_key, bodies, persistent=True, exchange="") -> int:
        props = PERSISTENT if persistent else None
        self.conn.send("publish_batch", {"ch": self.ch, "messages": [[exchange, routing_key, b, props, False]
                                                                     for b in bodies]}, want_reply=False)
        self.seq += len(bodies)
        return self.seq

    def pump(self, timeout=0.0) -> bool:
        got = self.conn.read(timeout)
        pushes = self.conn.pushes
        while pushes:
            push = pushes.popleft()
            if push.event == "confirm":
                _ch, ack, seq, multiple = push.body
                seqs = range(self._confirmed_upto + 1, seq + 1) if multiple else (seq,)
                for s in seqs:
                    if s not in self.confirmed and s not in self.nacked:
                        (self.confirmed if ack else self.nacked).add(s)
                self._confirmed_upto = max(self._confirmed_upto, seq)
            elif push.event == "deliver":
                _ch, entries = push.body
                self.deliveries.extend(entries)
        self.conn.raise_async_error()
        return got

    def wait_for(self, predicate, timeout=20.0, what="condition"):
        deadline = time.monotonic() + timeout
        self.conn.flush()
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            self.pump(min(remaining, 0.5))
        return True

    def wait_confirms(self, upto=None, timeout=30.0):
        upto = self.seq if upto is None else upto
        self.wait_for(lambda: self._confirmed_upto >= upto, timeout, f"confirms up to {upto}")

    # ---- consuming --------------------------------------------------------------------------
    def consume(self, queue, prefetch=1000, no_ack=False):
        self.conn.call("basic_qos", {"ch": self.ch, "prefetch_count": prefetch})
        return self.conn.call("consume", {"ch": self.ch, "queue": queue, "no_ack": no_ack})["consumer_tag"]

    def ack(self, tag, multiple=False):
        self.conn.send("ack", {"ch": self.ch, "delivery_tag": tag, "multiple": multiple}, want_reply=False)

    def nack(self, tag, requeue=True):
        self.conn.send("nack", {"ch": self.ch, "delivery_tag": tag, "requeue": requeue}, want_reply=False)

    def get(self, queue, no_ack=False):
        return self.conn.call("get", {"ch": self.ch, "queue": queue, "no_ack": no_ack})

    def drain(self, queue, timeout=60.0, ack=True) -> list:
        """Every message now in `queue`, in order, as (body, redelivered); acked as they come."""
        count = self.conn.call("queue_declare", {"queue": queue, "passive": True})["message_count"]
        self.consume(queue, no_ack=not ack)
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s with {len(got)} of {count} messages from {queue}")
            self.pump(0.5)
            if self.deliveries:
                batch, self.deliveries = self.deliveries, []
                got += [(d[5], d[2]) for d in batch]
                if ack:
                    self.ack(batch[-1][1], multiple=True)
                    self.conn.flush()
        return got

    def close(self):
        self.conn.close()
