"""A channel: delivery tags, the unacked map, prefetch settings, consumers and publisher confirms.

As in AMQP 0-9-1, a client numbers its channels; everything about acknowledgements lives here.

- Delivery tags count up from 1 per channel. `unacked` maps tag → Message in tag order (dicts
  keep insertion order), so `ack(tag, multiple=True)` walks from the front and stops at `tag`:
  O(messages acked), never a scan of the whole window.
- Deliveries are not sent one by one: `deliver` appends to `outbox`, and the broker hands the
  whole outbox to the connection (`Session.sink.deliver`) once per loop turn (`Broker.run_turn`).
- Publisher confirms: after `confirm_select` each publish takes the next sequence number.
  Only nacks are recorded individually; `take_confirms` turns "everything up to `publish_seq`
  except these nacks" into as few `confirm` pushes as possible (one `multiple` ack per run).
- Unacked messages go back to their queues (`MessageQueue.return_messages`) when the channel
  closes, flagged redelivered, at their original place.
"""

import secrets

from clients.protocol.errors import BrokerError, ErrorCode

from . import trace
from .consumer import Consumer


class Channel:
    def __init__(self, session, number: int):
        self.session = session
        self.broker = session.broker
        self.number = number
        self.next_tag = 1
        self.unacked: dict = {}
        self.consumers: dict = {}
        self.prefetch_count = 0          # for consumers created from now on (qos global=false)
        self.global_prefetch = 0         # shared by the channel's consumers (qos global=true)
        self.confirm_mode = False
        self.publish_seq = 0
        self.confirmed_upto = 0
        self.nacks: list = []
        self.outbox: list = []
        self.outbox_bytes = 0            # body bytes in the outbox (sizes the push frames)
        self.dirty = False               # in the broker's list of channels to flush this turn
        self.closed = False
        self.flow_stopped = False        # the client asked for no deliveries (AMQP channel.flow)

    # ---- delivering -------------------------------------------------------------------------------
    def deliver(self, consumer, msg) -> None:
        tag = self.next_tag
        self.next_tag = tag + 1
        body = msg.body
        if msg.store_id is not None:                      # durable store: lazy body, delivery count
            if body is None:
                body = self.broker.store.read_body(msg)
            if not consumer.no_ack:
                self.broker.store.delivered(msg.queue, msg)
        if consumer.no_ack:
            msg.queue.settled(msg)
        else:
            msg.tag = tag
            msg.consumer = consumer
            self.unacked[tag] = msg
            consumer.unacked += 1
            msg.queue.unacked += 1
        self.outbox_bytes += msg.size
        self.outbox.append([consumer.tag, tag, msg.redelivered, msg.exchange, msg.routing_key,
                            body, msg.properties])
        if not self.dirty:
            self.dirty = True
            self.broker.channel_dirty(self)

    def take_deliveries(self) -> tuple[list, int]:
        out, nbytes = self.outbox, self.outbox_bytes
        self.outbox = []
        self.outbox_bytes = 0
        return out, nbytes

    def get(self, queue, no_ack: bool, now: float):
        msg = queue.get(now)
        if msg is None:
            return None
        tag = self.next_tag
        self.next_tag = tag + 1
        body = msg.body
        if msg.store_id is not None:                      # durable store: lazy body, delivery count
            if body is None:
                body = self.broker.store.read_body(msg)
            if not no_ack:
                self.broker.store.delivered(queue, msg)
                self.broker.store.deliveries_leaving()
        if no_ack:
            queue.settled(msg)
        else:
            msg.tag = tag
            msg.consumer = None
            self.unacked[tag] = msg
            queue.unacked += 1
        reply = {"delivery_tag": tag, "redelivered": msg.redelivered, "exchange": msg.exchange,
                 "routing_key": msg.routing_key, "message_count": len(queue.ready),
                 "body": body, "properties": msg.properties}
        if self.broker.tracers:
            trace.got(self.broker, self, queue, reply)
        return reply

    # ---- settling ---------------------------------------------------------------------------------
    def _take(self, tag: int, multiple: bool, verb: str) -> list:
        unacked = self.unacked
        if multiple:
            if tag == 0:     # AMQP: multiple with tag 0 means "everything outstanding"
                msgs = list(unacked.values())
                unacked.clear()
                return msgs
            msgs = []
            for t, m in unacked.items():
                if t > tag:
                    break
                msgs.append(m)
            if not msgs:
                raise self._unknown_tag(tag, verb)
            if len(msgs) == len(unacked):
                unacked.clear()
            else:
                for m in msgs:
                    del unacked[m.tag]
            return msgs
        msg = unacked.pop(tag, None)
        if msg is None:
            raise self._unknown_tag(tag, verb)
        return [msg]

    def _unknown_tag(self, tag, verb):
        return BrokerError(ErrorCode.PRECONDITION_FAILED,
                           f"channel {self.number}: unknown delivery tag {tag} in {verb} (never delivered on "
                           f"this channel, or already acked/rejected); nothing was changed")

    def _release(self, msgs) -> None:
        """Free the prefetch credit the messages held, and wake the queues that may now deliver."""
        last = None
        woken = []
        for m in msgs:
            m.queue.unacked -= 1
            c = m.consumer
            if c is not None:
                c.unacked -= 1
                if c is not last:
                    last = c
                    woken.append(c)
        if self.global_prefetch:
            woken = list(self.consumers.values())
        schedule = self.broker.schedule_drain
        for c in woken:
            q = c.queue
            if q.ready and not q.scheduled and not q.deleted:
                schedule(q)

    def ack(self, tag: int, multiple: bool) -> None:
        if multiple and tag and not self.broker.tracers:
            # The usual consumer's ack (`multiple` up to a tag, every message from one queue and
            # one consumer, none stored): one pass removes them and checks that, then the
            # counters move once for the lot instead of once per message.
            unacked = self.unacked
            msgs = []
            append = msgs.append
            for t, m in unacked.items():
                if t > tag:
                    break
                append(m)
            if msgs:
                first = msgs[0]
                q = first.queue
                c = first.consumer
                uniform = c is not None
                if len(msgs) == len(unacked):
                    unacked.clear()
                    for m in msgs:
                        if m.queue is not q or m.consumer is not c or m.store_id is not None:
                            uniform = False
                            break
                else:
                    for m in msgs:
                        del unacked[m.tag]
                        if uniform and (m.queue is not q or m.consumer is not c or m.store_id is not None):
                            uniform = False
                if uniform:
                    n = len(msgs)
                    q.unacked -= n
                    q.n_acked += n
                    c.unacked -= n
                    schedule = self.broker.schedule_drain
                    for c in (self.consumers.values() if self.global_prefetch else (c,)):
                        cq = c.queue
                        if cq.ready and not cq.scheduled and not cq.deleted:
                            schedule(cq)
                    return
                self._settle_acked(msgs)
                return
        msgs = self._take(tag, multiple, "ack")
        if self.broker.tracers:
            trace.settled(self.broker, self, msgs, "acked")
        self._settle_acked(msgs)

    def _settle_acked(self, msgs: list) -> None:
        """Messages taken off `unacked` by an ack: free their credit, count them, and tell
        the store of the stored ones."""
        self._release(msgs)
        for m in msgs:
            m.queue.n_acked += 1
            if m.store_id is not None:
                m.queue.settled(m)

    def nack(self, tag: int, multiple: bool, requeue: bool, verb: str = "nack") -> None:
        msgs = self._take(tag, multiple, verb)
        if self.broker.tracers:
            trace.settled(self.broker, self, msgs, verb + "ed" if verb == "nack" else "rejected", requeue)
        self._release(msgs)
        self._give_back(msgs, requeue)

    def _give_back(self, msgs: list, requeue: bool) -> None:
        by_queue: dict = {}
        for m in msgs:
            by_queue.setdefault(m.queue, []).append(m)
        for q, group in by_queue.items():
            if requeue:
                q.return_messages(group)
            else:
                q.discard(group, "rejected")

    # ---- consumers --------------------------------------------------------------------------------
    def consume(self, queue, tag: str, no_ack: bool, exclusive: bool, arguments: dict, now: float) -> str:
        if not tag:
            tag = "amq.ctag-" + secrets.token_urlsafe(16)
        elif tag in self.consumers:
            raise BrokerError(ErrorCode.PRECONDITION_FAILED,
                              f"channel {self.number} already has a consumer with tag {tag!r}; pick another tag")
        consumer = Consumer(tag, queue, self, no_ack, exclusive, self.prefetch_count, arguments)
        queue.add_consumer(consumer, now)
        self.consumers[tag] = consumer
        return tag

    def cancel(self, tag: str, now: float) -> bool:
        """Cancel a consumer. Its unacked messages stay on the channel, ackable, as in RabbitMQ."""
        consumer = self.consumers.pop(tag, None)
        if consumer is None:
            return False
        self.broker.consumer_removed(consumer, now)
        return True

    def qos(self, prefetch_count: int, global_: bool) -> None:
        if global_:
            self.global_prefetch = prefetch_count
            for c in self.consumers.values():
                if c.queue.ready and not c.queue.scheduled:
                    self.broker.schedule_drain(c.queue)
        else:
            self.prefetch_count = prefetch_count

    def flow(self, active: bool, now: float) -> None:
        """Stop (or restart) deliveries to this channel's consumers; acks and gets still work."""
        self.flow_stopped = not active
        if active:
            for c in self.consumers.values():
                if c.queue.ready and not c.queue.scheduled and not c.queue.deleted:
                    self.broker.schedule_drain(c.queue)

    # ---- publisher confirms -----------------------------------------------------------------------
    def take_confirms(self) -> list:
        """The confirm pushes owed so far, as [(ack, seq, multiple)], fewest possible."""
        end = self.publish_seq
        start = self.confirmed_upto + 1
        out = []
        for seq in self.nacks:
            if seq > start:    # the acks before this nack, as one push
                out.append((True, seq - 1, seq - 1 > start))
            out.append((False, seq, False))
            start = seq + 1
        if end >= start:
            out.append((True, end, end > start))
        self.nacks.clear()
        self.confirmed_upto = end
        return out

    def has_confirms(self) -> bool:
        return self.confirm_mode and self.publish_seq > self.confirmed_upto

    # ---- closing ----------------------------------------------------------------------------------
    def close(self, now: float) -> None:
        """Cancel the consumers and return every unacked message to its queue, redelivered."""
        if self.closed:
            return
        self.closed = True
        for tag in list(self.consumers):
            self.cancel(tag, now)
        msgs = list(self.unacked.values())
        self.unacked.clear()
        self.outbox = []
        self.outbox_bytes = 0
        if msgs:
            self._release(msgs)
            self._give_back(msgs, requeue=True)
