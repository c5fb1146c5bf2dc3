"""A whole-broker model of a RabbitMQ-style queue broker, driven through a pika-API client.

One hypothesis `RuleBasedStateMachine` publishes through direct, fanout and topic exchanges
(with mandatory returns under publisher confirms), gets with and without acks on two channels,
acks (single and `multiple`), nacks and rejects with and without requeue, dead-letters rejected
messages with `x-death`, keeps a max-length queue (drop-head) and a priority queue, and closes
channels with unacked messages. After every step the broker must agree with a plain model:

- nothing lost, nothing duplicated, nothing invented: every get returns the model's head;
- `redelivered` is set exactly on messages delivered before and requeued;
- order: FIFO within a priority, higher priorities first, requeued messages back in their
  original place;
- `message_count` in every get-ok agrees with the model; unroutable mandatory publishes come
  back; a rejected message reaches the dead-letter queue with `x-death` reason and count.

`queue_model(pika_module, parameters)` returns the state machine class for one client and
broker: the real pika against minibroker's AMQP door or against RabbitMQ, and this project's
pika-style client against minibroker's msgpack door, so all three are held to one behaviour.
"""

import uuid

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from brokertest.waiting import wait_until

MAX_LEN = 3


def queue_model(pika, parameters):
    """The model's state machine, for `pika` (a module with pika's blocking API) connecting with
    `parameters` (a callable returning its connection parameters)."""

    class QueueBrokerModel(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.p = f"m{uuid.uuid4().hex[:8]}"
            self.conn = pika.BlockingConnection(parameters())
            self.channels = {1: self.conn.channel(), 2: self.conn.channel()}
            self.channels[1].confirm_delivery()
            ch = self.channels[1]
            p = self.p
            self.plain, self.capped, self.prio, self.dlq = (f"{p}.plain", f"{p}.capped", f"{p}.prio",
                                                            f"{p}.dlq")
            ch.queue_declare(self.dlq)
            ch.queue_declare(self.plain, arguments={"x-dead-letter-exchange": "",
                                                   "x-dead-letter-routing-key": self.dlq})
            ch.queue_declare(self.capped, arguments={"x-max-length": MAX_LEN})
            ch.queue_declare(self.prio, arguments={"x-max-priority": 5})
            self.exchanges = {f"{p}.direct": "direct", f"{p}.fan": "fanout", f"{p}.topic": "topic"}
            for name, kind in self.exchanges.items():
                ch.exchange_declare(name, exchange_type=kind)
            # (exchange, binding key, queue)
            self.bindings = [(f"{p}.direct", "a", self.plain), (f"{p}.direct", "b", self.capped),
                             (f"{p}.fan", "", self.plain), (f"{p}.fan", "", self.prio),
                             (f"{p}.topic", "*.p", self.prio), (f"{p}.topic", "#.z", self.plain)]
            for ex, key, q in self.bindings:
                ch.queue_bind(q, ex, routing_key=key)
            self.queues = {q: [] for q in (self.plain, self.capped, self.prio, self.dlq)}
            self.unacked = {1: {}, 2: {}}          # channel -> {delivery tag: (queue, message)}
            self.seq = 0
            self.arrivals = 0

        def teardown(self):
            try:
                ch = self.conn.channel()
                for q in self.queues:
                    ch.queue_delete(q)
                for ex in self.exchanges:
                    ch.exchange_delete(ex)
                self.conn.close()
            except Exception:
                pass

        # ---- the model's routing and queues ----------------------------------------------
        def _routes(self, exchange, key):
            out = []
            for ex, bkey, q in self.bindings:
                if ex != exchange:
                    continue
                kind = self.exchanges[ex]
                if kind == "fanout" or (kind == "direct" and bkey == key) or \
                        (kind == "topic" and _topic_match(bkey, key)):
                    if q not in out:
                        out.append(q)
            return out

        def _enqueue(self, q, msg, requeued=False):
            """Add `msg` to `q`; a requeued message keeps its place (`pos`), a new one goes last."""
            if not requeued:
                self.arrivals += 1
                msg["pos"] = self.arrivals
            items = self.queues[q]
            items.append(msg)
            if q == self.prio:      # higher priority first, FIFO within one priority
                items.sort(key=lambda m: (-m["priority"], m["pos"]))
            else:
                items.sort(key=lambda m: m["pos"])
                if q == self.capped and len(items) > MAX_LEN:
                    del items[0]    # overflow drop-head: the oldest goes

        # ---- rules -----------------------------------------------------------------------
        @rule(exchange=st.sampled_from(["direct", "fan", "topic"]),
              key=st.sampled_from(["a", "b", "c", "x.p", "x.y.z", "q.z"]),
              priority=st.integers(0, 5))
        def publish(self, exchange, key, priority):
            exchange = f"{self.p}.{exchange}"
            self.seq += 1
            body = str(self.seq).encode()
            targets = self._routes(exchange, key)
            props = pika.BasicProperties(priority=priority)
            if targets:
                self.channels[1].basic_publish(exchange, key, body, props, mandatory=True)
            else:
                try:
                    self.channels[1].basic_publish(exchange, key, body, props, mandatory=True)
                    raise AssertionError(f"an unroutable mandatory publish to {exchange} {key!r} "
                                         "was confirmed without being returned")
                except pika.exceptions.UnroutableError:
                    pass
            for q in targets:
                self._enqueue(q, {"seq": self.seq, "priority": priority, "redelivered": False,
                                  "deaths": 0})

        @rule(queue=st.sampled_from(["plain", "capped", "prio", "dlq"]), ch=st.sampled_from([1, 2]),
              auto_ack=st.booleans())
        def get(self, queue, ch, auto_ack):
            q = f"{self.p}.{queue}"
            if q == self.capped:
                auto_ack = True     # a requeue past the cap is where brokers legitimately differ
            items = self.queues[q]
            if not items:
                method, props, body = self.channels[ch].basic_get(q, auto_ack=auto_ack)
                assert method is None, f"{queue}: got {body!r} from a queue the model says is empty"
                return
            # RabbitMQ moves a rejected or requeued message to its queue after the reject, not
            # with it (dead-lettering is asynchronous there); ours does it at once. So an empty
            # answer while the model holds messages is asked again until a deadline.
            got = wait_until(lambda: (lambda r: r if r[0] is not None else None)(
                self.channels[ch].basic_get(q, auto_ack=auto_ack)), timeout=5, interval=0.01,
                message=f"{queue}: empty, the model holds {[m['seq'] for m in items]}")
            method, props, body = got
            msg = items.pop(0)
            assert int(body) == msg["seq"], f"{queue}: got {body!r}, the model's head is {msg['seq']}"
            assert method.redelivered == msg["redelivered"], f"{queue}: redelivered flag of {msg['seq']}"
            assert method.message_count == len(items), f"{queue}: message_count"
            if q == self.dlq:
                death = (props.headers or {}).get("x-death") or []
                assert death and death[0]["reason"] == "rejected" and death[0]["count"] == msg["deaths"]
            if not auto_ack:
                self.unacked[ch][method.delivery_tag] = (q, msg)

        def _settle(self, ch, tag, multiple):
            tags = [t for t in self.unacked[ch] if t <= tag] if multiple else [tag]
            return [self.unacked[ch].pop(t) for t in sorted(tags)]

        @precondition(lambda self: any(self.unacked.values()))
        @rule(data=st.data(), multiple=st.booleans())
        def ack(self, data, multiple):
            ch = data.draw(st.sampled_from([c for c in (1, 2) if self.unacked[c]]))
            tag = data.draw(st.sampled_from(sorted(self.unacked[ch])))
            self.channels[ch].basic_ack(tag, multiple=multiple)
            self._settle(ch, tag, multiple)

        @precondition(lambda self: any(self.unacked.values()))
        @rule(data=st.data(), requeue=st.booleans(), use_reject=st.booleans(), multiple=st.booleans())
        def nack(self, data, requeue, use_reject, multiple):
            ch = data.draw(st.sampled_from([c for c in (1, 2) if self.unacked[c]]))
            tag = data.draw(st.sampled_from(sorted(self.unacked[ch])))
            if use_reject:
                self.channels[ch].basic_reject(tag, requeue=requeue)
                settled = self._settle(ch, tag, False)
            else:
                self.channels[ch].basic_nack(tag, multiple=multiple, requeue=requeue)
                settled = self._settle(ch, tag, multiple)
            for q, msg in settled:
                if requeue:
                    self._enqueue(q, dict(msg, redelivered=True), requeued=True)
                elif q == self.plain:           # dead-lettered with x-death
                    self._enqueue(self.dlq, dict(msg, redelivered=False, deaths=msg["deaths"] + 1))

        @precondition(lambda self: self.unacked[2])
        @rule()
        def close_channel_2(self):
            self.channels[2].close()
            for _, (q, msg) in sorted(self.unacked[2].items()):
                self._enqueue(q, dict(msg, redelivered=True), requeued=True)
            self.unacked[2] = {}
            self.channels[2] = self.conn.channel()

    return QueueBrokerModel


def _topic_match(pattern: str, key: str) -> bool:
    """AMQP topic matching, written plainly: `*` one word, `#` zero or more."""
    def match(p, k):
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and (p[0] == "*" or p[0] == k[0]) and match(p[1:], k[1:])
    return match(pattern.split("."), key.split("."))
