"""A whole-broker model of a RabbitMQ-style queue broker, driven through a pika-API client.

One hypothesis `RuleBasedStateMachine` publishes through direct, fanout, topic and headers
(`x-match` all and any) exchanges and
through exchange-to-exchange bindings it binds and unbinds as it goes (cycles included), with
mandatory returns under publisher confirms; gets with and without acks on two channels; runs up
to two consumers with prefetch on one queue; acks (single and `multiple`), nacks and rejects
with and without requeue; closes a channel or a second connection holding unacked messages;
dead-letters rejected messages (into a dead-letter queue whose own
rejects go back to the first queue, so `x-death` counts grow); keeps a max-length queue of
each overflow mode (drop-head and reject-publish-dlx dead-letter what they drop or refuse,
reject-publish only refuses: the publisher gets a nack either way), a priority queue, a queue
with a delivery limit, a queue of messages with short per-message TTLs and one with a
queue-level TTL (`x-message-ttl`; both dead-letter on expiry); and closes channels with
unacked messages.
After every step the broker must agree with a plain model:

- nothing lost, nothing duplicated, nothing invented: every get returns the model's head, and
  the consumers together are handed exactly the first messages of their queue;
- a consumer never holds more unacked messages than its prefetch, and no message is held by
  two consumers (or a consumer and a channel) at once;
- `redelivered` is set exactly on messages delivered before and returned to their queue;
- order: FIFO within a priority, higher priorities first, requeued messages back in their
  original place; each consumer receives its queue's messages in queue order;
- `message_count` in every get-ok agrees with the model; unroutable mandatory publishes come
  back; every message carries the model's `x-death` entries (queue, reason and count of each
  death, the latest first: reasons `rejected`, `delivery_limit`, `maxlen` and `expired`), and a message
  returned to the delivery-limited queue carries `x-delivery-count`;
- an expired message is never delivered, and reaches the dead-letter queue once;
- a publish a full reject-publish queue refuses is nacked, and kept by no queue but the
  dead-letter queue of a reject-publish-dlx one.

`queue_model(pika_module, parameters)` returns the state machine class for one client and
broker: the real pika against minibroker's AMQP door or against RabbitMQ, and this project's
pika-style client against minibroker's msgpack door, so all three are held to one behaviour.
`tour(machine_class)` walks it once through every feature in a fixed order, so even a short
run checks each one.
"""

import time
import uuid

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from brokertest.waiting import wait_until

MAX_LEN = 3
TTL_MS = 20            # a short per-message TTL, so the model waits only a few ms for it
CLOCK_SLACK = 0.005    # seconds past a TTL after which any broker must treat it as expired
DELIVERY_LIMIT = 1
CONSUMERS = ("c1", "c2")
# Exchange-to-exchange bindings the model may add and remove: (source, binding key, destination).
# Together they make cycles (fan -> topic -> fan, direct -> fan -> topic -> direct), which a
# broker must follow once each and deliver to every queue at most once.
# Routing keys each exchange is published with: its own bindings route all but the last.
PUBLISH_KEYS = {"direct": ["a", "b", "d", "r", "rd", "c"], "fan": [""], "topic": ["x.p", "x.y.z", "q.z", "a"],
                "hdr": ["k1-ta", "k1", "tb", "k3"]}
# The headers exchange routes on message headers, not keys: each name above stands for these.
HEADER_SETS = {"k1-ta": {"k": "1", "t": "a"}, "k1": {"k": "1"}, "tb": {"t": "b"}, "k3": {"k": "3"}}
# Its bindings: (arguments, queue suffix). All of k=1 and t=a, or any of k=2 and t=b.
HEADER_BINDINGS = [({"x-match": "all", "k": "1", "t": "a"}, "plain"), ({"x-match": "any", "k": "2", "t": "b"}, "prio")]
E2E = [("direct", "c", "fan"), ("topic", "q.*", "fan"), ("fan", "", "topic"), ("topic", "#", "direct")]


def queue_model(pika, parameters):
    """The model's state machine, for `pika` (a module with pika's blocking API) connecting with
    `parameters` (a callable returning its connection parameters)."""

    class QueueBrokerModel(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.p = p = f"m{uuid.uuid4().hex[:8]}"
            self.parameters = parameters
            self.conn = pika.BlockingConnection(parameters())
            # A second connection, whose close returns what its channel holds.
            self.conn2 = pika.BlockingConnection(parameters())
            # holder -> channel; 1 and 2 get, 3 gets on the second connection, "c1" and "c2"
            # consume when started
            self.channels = {1: self.conn.channel(), 2: self.conn.channel(), 3: self.conn2.channel()}
            self.channels[1].confirm_delivery()
            ch = self.channels[1]
            self.plain, self.capped, self.prio, self.dlq, self.limited = (
                f"{p}.plain", f"{p}.capped", f"{p}.prio", f"{p}.dlq", f"{p}.limited")
            # plain and dlq dead-letter into each other: a message rejected in turn by both
            # collects an x-death entry for each, whose counts grow with each round.
            ch.queue_declare(self.dlq, arguments={"x-dead-letter-exchange": "",
                                                  "x-dead-letter-routing-key": self.plain})
            ch.queue_declare(self.plain, arguments={"x-dead-letter-exchange": "",
                                                   "x-dead-letter-routing-key": self.dlq})
            # Each overflow mode: drop-head (the oldest is dead-lettered, reason maxlen),
            # reject-publish (the newest is refused: a nack) and reject-publish-dlx (refused
            # and dead-lettered).
            self.rejecting, self.rejecting_dlx = f"{p}.rejecting", f"{p}.rejecting-dlx"
            ch.queue_declare(self.capped, arguments={"x-max-length": MAX_LEN, "x-dead-letter-exchange": "",
                                                    "x-dead-letter-routing-key": self.dlq})
            ch.queue_declare(self.rejecting, arguments={"x-max-length": MAX_LEN, "x-overflow": "reject-publish"})
            ch.queue_declare(self.rejecting_dlx, arguments={
                "x-max-length": MAX_LEN, "x-overflow": "reject-publish-dlx",
                "x-dead-letter-exchange": "", "x-dead-letter-routing-key": self.dlq})
            ch.queue_declare(self.prio, arguments={"x-max-priority": 5})
            # RabbitMQ's classic queues have no delivery limit, its quorum queues do (and must be
            # durable); minibroker's queues take x-delivery-limit whatever their type.
            ch.queue_declare(self.limited, durable=True, arguments={
                "x-queue-type": "quorum", "x-delivery-limit": DELIVERY_LIMIT,
                "x-dead-letter-exchange": "", "x-dead-letter-routing-key": self.dlq})
            # Per-message TTL: messages published straight to `ttl` with short expirations,
            # dead-lettered with reason `expired` into `expired`.
            # Queue-level TTL: every message of `qttl` expires TTL_MS after it entered, into `expired`.
            self.ttl, self.qttl, self.expired = f"{p}.ttl", f"{p}.qttl", f"{p}.expired"
            ch.queue_declare(self.expired)
            ch.queue_declare(self.ttl, arguments={"x-dead-letter-exchange": "",
                                                 "x-dead-letter-routing-key": self.expired})
            ch.queue_declare(self.qttl, arguments={"x-message-ttl": TTL_MS, "x-dead-letter-exchange": "",
                                                  "x-dead-letter-routing-key": self.expired})
            self.exchanges = {f"{p}.direct": "direct", f"{p}.fan": "fanout", f"{p}.topic": "topic",
                              f"{p}.hdr": "headers"}
            for name, kind in self.exchanges.items():
                ch.exchange_declare(name, exchange_type=kind)
            # (exchange, binding key, queue)
            self.bindings = [(f"{p}.direct", "a", self.plain), (f"{p}.direct", "b", self.capped),
                             (f"{p}.direct", "d", self.limited), (f"{p}.direct", "r", self.rejecting),
                             (f"{p}.direct", "rd", self.rejecting_dlx),
                             (f"{p}.fan", "", self.plain), (f"{p}.fan", "", self.prio),
                             (f"{p}.fan", "", self.limited),
                             (f"{p}.topic", "*.p", self.prio), (f"{p}.topic", "#.z", self.plain)]
            for ex, key, q in self.bindings:
                ch.queue_bind(q, ex, routing_key=key)
            for args, suffix in HEADER_BINDINGS:
                ch.queue_bind(f"{p}.{suffix}", f"{p}.hdr", arguments=args)
            self.e2e = set()                       # indexes into E2E that are bound now
            self.queues = {q: [] for q in (self.plain, self.capped, self.prio, self.dlq, self.limited,
                                           self.rejecting, self.rejecting_dlx, self.ttl, self.qttl,
                                           self.expired)}
            # Expired messages on their way to `expired`: seq -> True once the broker must have
            # dead-lettered it (nothing live was ahead of it), False while it only may have.
            self.dead_by_expiry = {}
            self.expirations = {}                  # seq -> the expiration it was published with
            self.expired_from = {}                 # seq -> the TTL queue it was published to
            self.unacked = {1: {}, 2: {}, 3: {}}   # holder -> {delivery tag: (queue, message)}
            self.consumers = {}                    # consumer holder -> {"prefetch", "inbox"}
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
            try:
                self.conn2.close()
            except Exception:
                pass

        # ---- the model's routing and queues ----------------------------------------------
        def _routes(self, exchange, key, headers=None):
            """The queues a message reaches, following exchange-to-exchange bindings once each."""
            out, seen, todo = [], set(), [exchange]
            if self.exchanges[exchange] == "headers":   # no exchange binding leaves it
                return [f"{self.p}.{suffix}" for args, suffix in HEADER_BINDINGS
                        if headers_match(args, headers or {})]
            while todo:
                ex = todo.pop()
                if ex in seen:
                    continue
                seen.add(ex)
                kind = self.exchanges[ex]
                edges = self.bindings + [(f"{self.p}.{E2E[i][0]}", E2E[i][1], f"{self.p}.{E2E[i][2]}")
                                         for i in self.e2e]
                for src, bkey, dst in edges:
                    if src != ex or not (kind == "fanout" or (kind == "direct" and bkey == key) or
                                         (kind == "topic" and topic_matches(bkey, key))):
                        continue
                    if dst in self.exchanges:
                        todo.append(dst)
                    elif dst not in out:
                        out.append(dst)
            return out

        def _enqueue(self, q, msg, requeued=False):
            """Add `msg` to `q`; a requeued message keeps its place (`pos`), a new one goes last.
            Returns the queue a message went to by overflow (dead-lettered), or None."""
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
                    # overflow drop-head: the oldest goes, dead-lettered
                    return self._dead_letter(q, items.pop(0), "maxlen")
            return None

        def _dead_letter(self, q, msg, reason):
            """`msg` dies in `q`: into the queue its dead-letter routing key names, with x-death."""
            target = {self.plain: self.dlq, self.dlq: self.plain, self.limited: self.dlq, self.capped: self.dlq,
                      self.rejecting_dlx: self.dlq}.get(q)
            if target is None:
                return None         # no dead-letter exchange: dropped
            deaths = [d for d in msg["deaths"] if (d[0], d[1]) != (q, reason)]
            count = sum(d[2] for d in msg["deaths"] if (d[0], d[1]) == (q, reason))
            self._enqueue(target, dict(msg, redelivered=False, returns=0,
                                       deaths=[(q, reason, count + 1)] + deaths))
            return target

        def _return(self, q, msg):
            """`msg`, delivered from `q` and not acked, goes back: requeued, or past the delivery
            limit dead-lettered."""
            returns = msg["returns"] + 1
            if q == self.limited and returns > DELIVERY_LIMIT:
                return self._dead_letter(q, msg, "delivery_limit")
            self._enqueue(q, dict(msg, redelivered=True, returns=returns), requeued=True)
            return q

        def _await_arrivals(self, queues):
            """RabbitMQ requeues and dead-letters a moment after the nack or close, not within
            it, and from two queues in either order; ours does it at once. Wait (with a
            deadline) until each queue that gets messages back holds what the model says, so
            the next step sees them all in place. Consumers' queue: their invariant waits."""
            for q in sorted(q for q in queues if q and not (q == self.plain and self.consumers)):
                want = len(self.queues[q])
                wait_until(lambda: self.channels[1].queue_declare(q, passive=True).method.message_count == want,
                           timeout=5, interval=0.01, message=f"{q} to hold the model's {want} messages")

        def _check_delivery(self, where, q, method, props, body, msg):
            assert int(body) == msg["seq"], f"{where}: got {body!r}, the model's is {msg['seq']}"
            assert method.redelivered == msg["redelivered"], f"{where}: redelivered flag of {msg['seq']}"
            headers = props.headers or {}
            deaths = [(d["queue"], d["reason"], d["count"]) for d in headers.get("x-death") or []]
            # The latest death comes first on both brokers; RabbitMQ 3.10 orders the older ones
            # as its internal dictionary happens to (minibroker keeps them latest first).
            assert deaths[:1] == msg["deaths"][:1] and sorted(deaths) == sorted(msg["deaths"]), \
                f"{where}: x-death of {msg['seq']}: {deaths} != {msg['deaths']}"
            if q == self.limited and msg["returns"]:
                assert headers.get("x-delivery-count") == msg["returns"], \
                    f"{where}: x-delivery-count of {msg['seq']}: {headers.get('x-delivery-count')}"

        def _holds_from(self, q):
            return any(mq == q for held in self.unacked.values() for mq, _ in held.values())

        # ---- rules -----------------------------------------------------------------------
        @initialize(bound=st.sets(st.integers(0, len(E2E) - 1)))
        def bind_exchanges(self, bound):
            for which in sorted(bound):
                self.bind_or_unbind_exchanges(which)

        @rule(data=st.data(), exchange=st.sampled_from(["direct", "fan", "topic", "hdr"]),
              priorities=st.lists(st.integers(0, 5), min_size=1, max_size=3))
        def publish(self, data, exchange, priorities):
            """Publish one message for each priority, all with one routing key; each exchange's
            keys hold one that its own bindings do not route (but an exchange binding may)."""
            self.publish_to(exchange, data.draw(st.sampled_from(PUBLISH_KEYS[exchange]), label="key"),
                            priorities)

        def publish_to(self, exchange, key, priorities):
            headers = None
            if exchange == "hdr":
                key, headers = "", HEADER_SETS[key]
            exchange = f"{self.p}.{exchange}"
            targets = self._routes(exchange, key, headers)
            for priority in priorities:
                self._publish(exchange, key, priority, targets, headers)

        def _publish(self, exchange, key, priority, targets, headers=None):
            self.seq += 1
            body = str(self.seq).encode()
            props = pika.BasicProperties(priority=priority, headers=headers)
            # A full reject-publish(-dlx) queue refuses the message: the publisher gets a nack,
            # while the other queues it was routed to keep it.
            refused = [q for q in targets if q in (self.rejecting, self.rejecting_dlx)
                       and len(self.queues[q]) >= MAX_LEN]
            if refused:
                try:
                    self.channels[1].basic_publish(exchange, key, body, props, mandatory=True)
                    raise AssertionError(f"a publish to the full {refused} was confirmed")
                except pika.exceptions.NackError:
                    pass
            elif targets:
                self.channels[1].basic_publish(exchange, key, body, props, mandatory=True)
            else:
                try:
                    self.channels[1].basic_publish(exchange, key, body, props, mandatory=True)
                    raise AssertionError(f"an unroutable mandatory publish to {exchange} {key!r} "
                                         "was confirmed without being returned")
                except pika.exceptions.UnroutableError:
                    pass
            moved = set()
            for q in targets:
                msg = {"seq": self.seq, "priority": priority, "redelivered": False, "deaths": [], "returns": 0}
                if q in refused:
                    moved.add(self._dead_letter(q, msg, "maxlen"))
                else:
                    moved.add(self._enqueue(q, msg))
            # Dead-lettering is asynchronous on RabbitMQ: let it land before the next step.
            self._await_arrivals(moved)

        @rule(which=st.integers(0, len(E2E) - 1))
        def bind_or_unbind_exchanges(self, which):
            src, key, dst = (f"{self.p}.{E2E[which][0]}", E2E[which][1], f"{self.p}.{E2E[which][2]}")
            if which in self.e2e:
                self.channels[1].exchange_unbind(dst, src, routing_key=key)
                self.e2e.discard(which)
            else:
                self.channels[1].exchange_bind(dst, src, routing_key=key)
                self.e2e.add(which)

        @rule(data=st.data(), ch=st.sampled_from([1, 2, 3]), auto_ack=st.booleans())
        def get(self, data, ch, auto_ack):
            # Mostly from a queue the model says holds something (a get from an empty one
            # checks less), sometimes from any.
            names = ["plain", "capped", "prio", "dlq", "limited", "rejecting", "rejecting-dlx"]
            queue = data.draw(st.sampled_from(
                [n for n in names if self.queues[f"{self.p}.{n}"]] * 3 + names), label="queue")
            self.get_from(queue, ch, auto_ack)

        def get_from(self, queue, ch, auto_ack):
            q = f"{self.p}.{queue}"
            if q in (self.capped, self.rejecting, self.rejecting_dlx):
                auto_ack = True     # a requeue past the cap is where brokers legitimately differ
            if q == self.limited and self._holds_from(q):
                # RabbitMQ's quorum queues return messages ahead of the rest in the order they
                # came back, classic queues (and ours) to their old place: with one out at a
                # time the two agree.
                auto_ack = True
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
            self._check_delivery(queue, q, method, props, body, msg)
            assert method.message_count == len(items), f"{queue}: message_count"
            if not auto_ack:
                self.unacked[ch][method.delivery_tag] = (q, msg)

        # ---- per-message TTL -------------------------------------------------------------
        @rule(expirations=st.lists(st.sampled_from([None, "0", str(TTL_MS)]), min_size=1, max_size=3),
              queue_ttl=st.booleans())
        def publish_expiring(self, expirations, queue_ttl=False):
            """Publish to `ttl` (default exchange), each message with its own expiration or none;
            or, with `queue_ttl`, as many messages without one to `qttl`, whose TTL is the queue's."""
            source = self.qttl if queue_ttl else self.ttl
            for expiration in expirations:
                if queue_ttl:
                    expiration = None
                self.seq += 1
                sent = time.monotonic()
                self.channels[1].basic_publish("", source, str(self.seq).encode(),
                                               pika.BasicProperties(expiration=expiration))
                confirmed = time.monotonic()
                ttl = TTL_MS / 1000 if queue_ttl else None if expiration is None else int(expiration) / 1000
                self.expirations[self.seq] = expiration
                self.expired_from[self.seq] = source
                self.queues[source].append({
                    "seq": self.seq, "expiration": expiration, "expired": False,
                    # it expires somewhere between entering the queue (after `sent`, before
                    # `confirmed`) plus its TTL
                    "earliest": None if ttl is None else sent + ttl,
                    "latest": None if ttl is None else confirmed + ttl})

        def _let_expire(self):
            """Wait until every expiring message is surely past its expiry (a few ms), then move
            those at the head of `ttl` and `qttl` (nothing live ahead) to the surely dead-lettered."""
            latest = max((m["latest"] for q in (self.ttl, self.qttl) for m in self.queues[q] if m["latest"]),
                         default=None)
            if latest is not None:
                wait_until(lambda: time.monotonic() > latest + CLOCK_SLACK, timeout=5, interval=0.001,
                           message="the TTL of the model's messages to pass")
            for q in (self.ttl, self.qttl):
                items = self.queues[q]
                for m in items:
                    if m["latest"] is not None:
                        m["expired"] = True
                        self.dead_by_expiry.setdefault(m["seq"], False)
                # RabbitMQ drops expired messages from the head of a queue only; behind a live
                # message they wait (and are never delivered). minibroker also sweeps them out.
                while items and items[0]["expired"]:
                    self.dead_by_expiry[items.pop(0)["seq"]] = True

        @rule(queue=st.sampled_from(["ttl", "qttl", "expired"]), ch=st.sampled_from([1, 2]))
        def get_expiring(self, queue, ch):
            self._let_expire()
            pool = self.dead_by_expiry
            if queue in ("ttl", "qttl"):
                source = f"{self.p}.{queue}"
                items = self.queues[source]
                method, props, body = self.channels[ch].basic_get(source, auto_ack=True)
                if not items:
                    assert method is None, f"{queue}: got {body!r}, the model holds nothing live"
                    return
                assert method is not None, f"{queue}: empty, the model's head is {items[0]['seq']}"
                msg = items.pop(0)
                assert int(body) == msg["seq"], f"{queue}: got {body!r}, the model's head is {msg['seq']}"
                self._let_expire()
                # Expired messages still in the queue count until they are dropped: RabbitMQ drops
                # them when they reach the head, minibroker when it sweeps (every 50 ms).
                live = sum(not m["expired"] for m in items)
                assert live <= method.message_count <= len(items) + len(pool), \
                    f"{queue}: message_count {method.message_count}, {live} live, {len(items)} in the model"
                return
            sure = [s for s, certain in pool.items() if certain]
            if sure:
                got = wait_until(lambda: (lambda r: r if r[0] is not None else None)(
                    self.channels[ch].basic_get(self.expired, auto_ack=True)), timeout=5, interval=0.01,
                    message=f"expired: empty, the model says {sure} expired at the head of ttl")
            else:
                got = self.channels[ch].basic_get(self.expired, auto_ack=True)
            method, props, body = got
            if method is None:
                return
            seq = int(body)
            assert seq in pool, f"expired: got {body!r}, the model's expired are {sorted(pool)}"
            source = self.expired_from[seq]
            if not pool.pop(seq):        # it was behind a live message: gone from its queue too
                self.queues[source][:] = [m for m in self.queues[source] if m["seq"] != seq]
            death = ((props.headers or {}).get("x-death") or [{}])
            assert [(d.get("queue"), d.get("reason"), d.get("count")) for d in death] == \
                [(source, "expired", 1)], f"expired: x-death of {seq}: {death}"
            assert death[0].get("original-expiration") == self.expirations[seq], \
                f"expired: original-expiration of {seq}: {death[0].get('original-expiration')!r}"
            # Dead-lettering on expiry happens after the fact (a timer, a sweep): the count may
            # lag the model, never pass it.
            assert method.message_count <= len(pool), \
                f"expired: message_count {method.message_count}, the model's at most {len(pool)}"

        @precondition(lambda self: len(self.consumers) < len(CONSUMERS))
        @rule(data=st.data(), prefetch=st.integers(1, 3))
        def start_consumer(self, data, prefetch):
            self.consume(data.draw(st.sampled_from([c for c in CONSUMERS if c not in self.consumers])),
                         prefetch)

        def consume(self, holder, prefetch):
            ch = self.conn.channel()
            ch.basic_qos(prefetch_count=prefetch)
            inbox = []
            ch.basic_consume(self.plain, lambda _ch, method, props, body: inbox.append((method, props, body)))
            self.channels[holder] = ch
            self.consumers[holder] = {"prefetch": prefetch, "inbox": inbox}
            self.unacked[holder] = {}

        def _settle(self, holder, tag, multiple):
            tags = [t for t in self.unacked[holder] if t <= tag] if multiple else [tag]
            return [self.unacked[holder].pop(t) for t in sorted(tags)]

        @precondition(lambda self: any(self.unacked.values()))
        @rule(data=st.data(), multiple=st.booleans())
        def ack(self, data, multiple):
            holder = data.draw(st.sampled_from([h for h in self.unacked if self.unacked[h]]))
            self.ack_tag(holder, data.draw(st.sampled_from(sorted(self.unacked[holder]))), multiple)

        def ack_tag(self, holder, tag, multiple=False):
            self.channels[holder].basic_ack(tag, multiple=multiple)
            self._settle(holder, tag, multiple)

        @precondition(lambda self: any(self.unacked.values()))
        @rule(data=st.data(), requeue=st.booleans(), use_reject=st.booleans(), multiple=st.booleans())
        def nack(self, data, requeue, use_reject, multiple):
            holder = data.draw(st.sampled_from([h for h in self.unacked if self.unacked[h]]))
            self.nack_tag(holder, data.draw(st.sampled_from(sorted(self.unacked[holder]))), requeue,
                          use_reject, multiple)

        def nack_tag(self, holder, tag, requeue, use_reject=False, multiple=False):
            if use_reject:
                self.channels[holder].basic_reject(tag, requeue=requeue)
                settled = self._settle(holder, tag, False)
            else:
                self.channels[holder].basic_nack(tag, multiple=multiple, requeue=requeue)
                settled = self._settle(holder, tag, multiple)
            self._await_arrivals({self._return(q, msg) if requeue else self._dead_letter(q, msg, "rejected")
                                  for q, msg in settled})

        @precondition(lambda self: self.unacked[2] or self.consumers)
        @rule(data=st.data())
        def close_channel(self, data):
            """Close channel 2 or a consumer's channel: its unacked messages go back."""
            self.close(data.draw(st.sampled_from(([2] if self.unacked[2] else []) + sorted(self.consumers))))

        def close(self, holder):
            self.channels[holder].close()
            back = {self._return(q, msg) for _, (q, msg) in sorted(self.unacked[holder].items())}
            self.unacked[holder] = {}
            if holder == 2:
                self.channels[2] = self.conn.channel()
            else:
                del self.channels[holder], self.consumers[holder], self.unacked[holder]
            self._await_arrivals(back)

        @precondition(lambda self: self.unacked[3])
        @rule()
        def close_connection(self):
            """Close the second connection: what its channel holds goes back, as on a channel close."""
            self.reconnect()

        def reconnect(self):
            self.conn2.close()
            back = {self._return(q, msg) for _, (q, msg) in sorted(self.unacked[3].items())}
            self.unacked[3] = {}
            self.conn2 = pika.BlockingConnection(self.parameters())
            self.channels[3] = self.conn2.channel()
            self._await_arrivals(back)

        # ---- consumers: after every step, they must hold exactly the queue's first messages
        @invariant()
        def consumers_hold_the_first_messages_up_to_their_prefetch(self):
            if not self.consumers:
                return
            ready = self.queues[self.plain]
            room = sum(c["prefetch"] - len(self.unacked[h]) for h, c in self.consumers.items())
            due = min(room, len(ready))

            def arrived():
                return sum(len(c["inbox"]) for c in self.consumers.values())
            wait_until(lambda: (self.conn.process_data_events(time_limit=0.005), arrived() >= due)[1],
                       timeout=5, interval=0,
                       message=f"{due} deliveries to consumers, the model's {[m['seq'] for m in ready]}")
            self.conn.process_data_events(time_limit=0)   # and nothing more
            assert arrived() == due, f"consumers were handed {arrived()} messages, {due} were due"
            first = {m["seq"]: m for m in ready[:due]}
            order = [m["seq"] for m in ready[:due]]
            for holder, c in sorted(self.consumers.items()):
                taken = []
                for method, props, body in c["inbox"]:
                    seq = int(body)
                    assert seq in first, f"{holder} was handed {seq}, not one of the first {order}"
                    msg = first.pop(seq)
                    self._check_delivery(holder, self.plain, method, props, body, msg)
                    assert len(self.unacked[holder]) < c["prefetch"], \
                        f"{holder} holds more than its prefetch of {c['prefetch']}"
                    self.unacked[holder][method.delivery_tag] = (self.plain, msg)
                    taken.append(seq)
                assert taken == sorted(taken, key=order.index), f"{holder} got {taken} out of queue order"
                c["inbox"].clear()
            del ready[:due]
            held = [(q, m["seq"]) for h in self.unacked.values() for q, m in h.values()]
            assert len(held) == len(set(held)), f"one message held twice: {sorted(held)}"

    return QueueBrokerModel


def tour(machine_class):
    """Walk `machine_class` (from `queue_model`) once through every feature in a fixed order,
    checking the broker against the model after each step as hypothesis does: exchange-binding
    cycles, the delivery limit, x-death counts over several rounds, consumers with prefetch,
    per-message and queue-level TTL, and each overflow mode. Random runs reach these too, but not in every short run; this does."""
    m = machine_class()
    steps = [
        lambda: [m.bind_or_unbind_exchanges(i) for i in range(len(E2E))],   # every cycle bound
        lambda: m.publish_to("direct", "c", [1]),    # direct -> fan -> plain, prio, limited; -> topic
        lambda: m.publish_to("topic", "a", [2]),     # topic -> direct -> plain
        lambda: m.bind_or_unbind_exchanges(3),
        lambda: m.publish_to("topic", "a", [0]),     # unroutable again: returned
        # the headers exchange: all of two headers, any of two, neither (returned)
        lambda: m.publish_to("hdr", "k1-ta", [1]),   # -> plain
        lambda: m.publish_to("hdr", "k1", [0]),      # all, one missing: unroutable
        lambda: m.publish_to("hdr", "tb", [3]),      # any -> prio
        lambda: m.get_from("prio", 1, True),
        lambda: m.get_from("plain", 1, True),
        lambda: m.get_from("plain", 1, True),
        # the delivery limit: delivered, returned, delivered again, returned: dead-lettered
        lambda: m.get_from("limited", 2, False),
        lambda: m.nack_tag(2, max(m.unacked[2]), requeue=True),
        lambda: m.get_from("limited", 2, False),
        lambda: m.close(2),
        # a connection closed with unacked messages: they come back, flagged redelivered
        lambda: m.publish_to("direct", "a", [0, 0]),
        lambda: m.get_from("plain", 3, False),
        lambda: m.get_from("plain", 3, False),
        lambda: m.reconnect(),
        lambda: m.get_from("plain", 1, True),
        # x-death over rounds: dlq -> plain -> dlq -> plain
        lambda: m.get_from("dlq", 1, False),
        lambda: m.nack_tag(1, max(m.unacked[1]), requeue=False, use_reject=True),
        lambda: m.get_from("plain", 1, False),
        lambda: m.nack_tag(1, max(m.unacked[1]), requeue=False),
        lambda: m.get_from("dlq", 2, False),
        lambda: m.nack_tag(2, max(m.unacked[2]), requeue=False),
        lambda: m.get_from("plain", 1, True),
        # consumers with prefetch 2 and 1: three of four messages out, one left for a get
        lambda: m.consume("c1", 2),
        lambda: m.consume("c2", 1),
        lambda: m.publish_to("direct", "a", [0, 0, 0, 0]),
        lambda: m.get_from("plain", 2, False),
        lambda: m.ack_tag("c1", min(m.unacked["c1"])),
        lambda: m.nack_tag("c2", min(m.unacked["c2"]), requeue=True),
        lambda: m.nack_tag(2, max(m.unacked[2]), requeue=True),
        lambda: m.close("c1"),
        lambda: m.close("c2"),
        # per-message TTL: live, expiring at once, expiring soon, behind and ahead of live ones
        lambda: m.publish_expiring([str(TTL_MS), None, "0", str(TTL_MS), None]),
        lambda: m.get_expiring("ttl", 1),
        lambda: m.get_expiring("expired", 1),
        lambda: m.get_expiring("ttl", 2),
        lambda: m.get_expiring("expired", 1),
        lambda: m.get_expiring("expired", 1),
        lambda: m.get_expiring("ttl", 1),
        # queue-level TTL: all expire, in order, with no original-expiration
        lambda: m.publish_expiring([None, None], queue_ttl=True),
        lambda: m.get_expiring("qttl", 1),
        lambda: m.get_expiring("expired", 2),
        lambda: m.get_expiring("expired", 1),
        # each overflow mode, one past the cap: drop-head dead-letters the oldest (maxlen),
        # reject-publish nacks the newest, reject-publish-dlx nacks and dead-letters it
        lambda: m.publish_to("direct", "b", [0] * (MAX_LEN + 1)),
        lambda: m.publish_to("direct", "r", [0] * (MAX_LEN + 1)),
        lambda: m.publish_to("direct", "rd", [0] * (MAX_LEN + 1)),
        lambda: m.get_from("dlq", 1, True),
        lambda: m.get_from("dlq", 1, True),
        lambda: m.get_from("rejecting", 2, True),
        lambda: m.get_from("rejecting-dlx", 1, True),
        lambda: m.get_from("capped", 1, True),
        lambda: m.publish_to("direct", "r", [0]),   # room again
        lambda: m.get_from("rejecting", 1, True),
    ]
    try:
        m.consumers_hold_the_first_messages_up_to_their_prefetch()
        for step in steps:
            step()
            m.consumers_hold_the_first_messages_up_to_their_prefetch()
    finally:
        m.teardown()


def headers_match(arguments: dict, headers: dict) -> bool:
    """A headers exchange's binding test, as RabbitMQ documents it: `x-match` all (the default)
    needs every other argument present with the same value, `any` at least one; arguments
    starting `x-` are not matched."""
    wanted = [(k, v) for k, v in arguments.items() if not k.startswith("x-")]
    hits = [headers.get(k, object()) == v for k, v in wanted]
    return any(hits) if arguments.get("x-match") == "any" else all(hits)


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching written plainly, as the spec reads: words split on '.', '' has no
    words, `*` is exactly one word, `#` zero or more. The reference the broker's trie is
    tested against too (tests/minibroker/test_topic_trie.py)."""
    def words(s):
        return s.split(".") if s else []

    def match(p, k):
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and (p[0] == "*" or p[0] == k[0]) and match(p[1:], k[1:])
    return match(words(pattern), words(key))
