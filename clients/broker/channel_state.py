"""One minibroker channel's state with no I/O: what both the pika-style and the aio-pika-style
channel keep, in the manner of h11 (events in, frames out) and of pika's `Channel` under its
`BlockingChannel`.

`ChannelState` holds:

- the **publish buffer**: messages waiting to become one `publish_batch` frame (`publish`,
  `take_output`), with its size in messages and bytes (`PUBLISH_BATCH_MESSAGES`,
  `PUBLISH_BATCH_BYTES`);
- **publisher confirms**: the sequence number each confirmed publish takes (`track`) and its
  settlement by `confirm` pushes (`on_confirm`, honouring `multiple`) and `return` pushes
  (`on_return`: the oldest unconfirmed mandatory message with that exchange and key);
- **acknowledgements**: which delivery tags are settled (`settlement.SettledTags`) and the
  merged `multiple=True` ack not yet sent (`ack_upto`); `ack`, `nack`, `reject` return the
  frames to send, or nothing when the ack merged;
- the **consumer registry** (`add_consumer`, `rename_consumer`, `remove_consumer`,
  `on_broker_cancel`) and what becomes of a delivery whose consumer is gone (`orphaned`).

What the server pushes for the channel goes in through `receive(event, body)`, which updates
the state and returns a typed event for the adapter to act on: `Deliveries` (a batch to
dispatch), `Confirmed` (the publish records a confirm settled), `Returned` (a mandatory
message sent back, with the record it belongs to, if any) or `ConsumerCancelled`.
A frame is an `(op, args)` pair; the adapter encodes and writes it. Which channel a push or an
asynchronous error belongs to is decided once too (`route_push`, `channel_for_error`), for
both connection adapters. The adapters decide *when*
to write and how a publisher waits for its confirm: `BlockingChannel`
(`clients/broker/blocking_channel.py`) blocks in `basic_publish` until its own record is
settled, as pika's BlockingChannel does, and the asyncio `Channel`
(`clients/aio_broker/channel.py`) gives each record a future and pipelines, as aio-pika does.
The bookkeeping is this one. Tested without sockets in
`tests/broker_clients/test_channel_state.py`.

Threads: the blocking adapter's flusher thread calls `take_output` under the connection's
output lock while the program's thread may be appending to `publishes` without it. So
`take_output` never replaces the list: it copies and deletes the first n entries, and what is
appended meanwhile stays for the next call.
"""

import collections
from typing import NamedTuple

from .settlement import SettledTags

# One publish_batch frame holds at most this many messages or (about) bytes: large bodies must
# not add up to a frame over the server's max_frame.
PUBLISH_BATCH_MESSAGES = 1000
PUBLISH_BATCH_BYTES = 256 * 1024
MESSAGE_OVERHEAD = 64  # bytes counted per message besides its body, for the batch size


class Unconfirmed:
    """A publish made under confirms, until its `confirm` push: `acked` is None until then,
    then True or False; `returned` is what the adapter made of a `return` push for it."""

    __slots__ = ("seq", "exchange", "routing_key", "mandatory", "waiter", "returned", "acked")

    def __init__(self, seq, exchange, routing_key, mandatory, waiter):
        self.seq = seq
        self.exchange = exchange
        self.routing_key = routing_key
        self.mandatory = mandatory
        self.waiter = waiter      # the adapter's (an asyncio future, or None)
        self.returned = None
        self.acked = None


class Deliveries(NamedTuple):
    """A `deliver` push: [[consumer_tag, delivery_tag, redelivered, exchange, routing_key, body,
    properties], ...], in order."""
    batch: list


class Confirmed(NamedTuple):
    """A `confirm` push: the `Unconfirmed` records it settled, `acked` set, in order."""
    records: list


class Returned(NamedTuple):
    """A `return` push; `record` is the unconfirmed publish it belongs to, or None."""
    reply_code: int
    reply_text: str
    exchange: str
    routing_key: str
    body: bytes
    properties: dict | None
    record: Unconfirmed | None


class ConsumerCancelled(NamedTuple):
    """A `cancel` push for a consumer this channel had (its queue was deleted...)."""
    consumer_tag: str
    no_ack: bool


def route_push(channels: dict, event: str, body):
    """Where a server push goes, for either connection adapter: `(channel, happened)`, the open
    channel the push names (`body[0]`) and the typed event its `ChannelState.receive` makes of
    it (or None), or `(None, None)` for a push to no open channel (the server requeues what it
    had delivered to a closed one). `channels` maps numbers to adapter channels, each with its
    `_core` (a ChannelState) and `_closed`."""
    ch = channels.get(body[0]) if type(body) is list and body else None
    if ch is None or ch._closed:
        return None, None
    return ch, ch._core.receive(event, body)


def channel_for_error(channels: dict, number, last_noreply):
    """The channel an error for an id-0 request belongs to, for either connection adapter: the
    one the error frame names (`number`), else the channel that last sent a request without a
    reply, else any open one (None when none is open)."""
    ch = channels.get(number) or last_noreply
    if ch is None or ch._closed:
        ch = next((c for c in channels.values() if not c._closed), None)
    return ch


class ChannelState:
    def __init__(self, number: int):
        self.number = number
        self.publishes: list = []          # [exchange, routing_key, body, properties, mandatory]
        self.publish_bytes = 0
        self.settlement = SettledTags()
        self.ack_upto = 0                  # a merged multiple=True ack not yet sent
        self.confirming = False
        self.next_seq = 1
        self.unconfirmed: collections.OrderedDict = collections.OrderedDict()  # seq -> Unconfirmed
        self.consumers: dict = {}          # consumer_tag -> (callback, no_ack)
        self.cancelled: dict = {}          # consumer_tag -> no_ack, for deliveries still in flight

    # ---- what the server pushes ----------------------------------------------------------
    def receive(self, event: str, body: list):
        """One push for this channel (`body[0]` is its number): the typed event it makes, or
        None when there is nothing for the adapter to do."""
        if event == "deliver":
            batch = body[1]
            if batch:
                self.settlement.delivered_max = batch[-1][1]
                return Deliveries(batch)
            return None
        if event == "confirm":
            records = self.on_confirm(body[1], body[2], body[3] if len(body) > 3 else False)
            return Confirmed(records) if records else None
        if event == "return":
            _, reply_code, reply_text, exchange, routing_key, payload, props = body[:7]
            return Returned(reply_code, reply_text, exchange, routing_key, payload, props,
                            self.on_return(exchange, routing_key))
        if event == "cancel":
            entry = self.on_broker_cancel(body[1])
            return None if entry is None else ConsumerCancelled(body[1], entry[1])
        return None

    # ---- publishing ----------------------------------------------------------------------
    def publish(self, exchange, routing_key, body, properties, mandatory) -> bool:
        """Buffer one message; True when the buffer is full and should be sent now.
        (The adapters' hot paths inline this append; it is the reference.)"""
        self.publishes.append((exchange, routing_key, body, properties, mandatory))
        self.publish_bytes += len(body) + MESSAGE_OVERHEAD
        return self.batch_full()

    def batch_full(self) -> bool:
        return len(self.publishes) >= PUBLISH_BATCH_MESSAGES or self.publish_bytes >= PUBLISH_BATCH_BYTES

    def confirm_select(self) -> None:
        """Confirms are on (after `confirm_select` succeeded): the server numbers from 1."""
        self.confirming = True
        self.next_seq = 1

    def track(self, exchange, routing_key, mandatory, waiter=None) -> Unconfirmed:
        """The next message published on the channel awaits its confirm: give it its number.
        Call it in the order the messages enter the wire (the server numbers them so)."""
        seq = self.next_seq
        self.next_seq = seq + 1
        record = Unconfirmed(seq, exchange, routing_key, mandatory, waiter)
        self.unconfirmed[seq] = record
        return record

    def on_confirm(self, ack, seq: int, multiple: bool) -> list:
        """A `confirm` push: the records it settles, in order, with `acked` set."""
        unconfirmed = self.unconfirmed
        if not unconfirmed:
            return []
        if multiple:
            settled = []
            while unconfirmed:
                first = next(iter(unconfirmed))
                if first > seq:
                    break
                settled.append(unconfirmed.pop(first))
        else:
            record = unconfirmed.pop(seq, None)
            settled = [] if record is None else [record]
        ack = bool(ack)
        for record in settled:
            record.acked = ack
        return settled

    def on_return(self, exchange, routing_key):
        """A `return` push (it comes before its message's confirm): the unconfirmed record it
        belongs to — the oldest mandatory one with that exchange and key not yet matched — or
        None (confirms off, or none matches). The caller stores its message in `returned`."""
        for record in self.unconfirmed.values():
            if record.mandatory and record.returned is None and record.exchange == exchange \
                    and record.routing_key == routing_key:
                return record
        return None

    def take_output(self) -> list:
        """The frames the channel holds back, to send now: the publish batch, then the merged
        ack. Empty when there is nothing."""
        frames = []
        buf = self.publishes
        n = len(buf)
        if n:
            messages = buf[:n]
            del buf[:n]   # not `self.publishes = []`: see the module docstring on threads
            self.publish_bytes = 0
            frames.append(("publish_batch", {"ch": self.number, "messages": messages}))
        if self.ack_upto:
            tag, self.ack_upto = self.ack_upto, 0
            frames.append(("ack", {"ch": self.number, "delivery_tag": tag, "multiple": True}))
        return frames

    # ---- settling deliveries -------------------------------------------------------------
    def on_get(self, delivery_tag: int, no_ack: bool) -> None:
        settlement = self.settlement
        if delivery_tag > settlement.delivered_max:
            settlement.delivered_max = delivery_tag
        if no_ack:
            settlement.settle(delivery_tag)

    def ack(self, delivery_tag: int, multiple: bool) -> list:
        """Frames to send for `basic_ack`; empty when it merged into `ack_upto`.

        An ack that leaves every tag up to its own settled (any `multiple` ack, or a single
        ack of the next tag in order, the usual case) settles the same deliveries as a
        `multiple=True` ack of its tag, so consecutive ones merge into one frame."""
        settlement = self.settlement
        if multiple:
            delivery_tag = delivery_tag or settlement.delivered_max
            settlement.settle_upto(delivery_tag)
        elif not (delivery_tag and settlement.settle(delivery_tag)):
            return self._after_merged_ack(("ack", {"ch": self.number, "delivery_tag": delivery_tag,
                                                   "multiple": False}))
        if delivery_tag > self.ack_upto:
            self.ack_upto = delivery_tag
        return []

    def nack(self, delivery_tag: int, multiple: bool, requeue: bool) -> list:
        frames = self._after_merged_ack(("nack", {"ch": self.number, "delivery_tag": delivery_tag,
                                                  "multiple": multiple, "requeue": requeue}))
        if multiple:
            self.settlement.settle_upto(delivery_tag or self.settlement.delivered_max)
        else:
            self.settlement.settle(delivery_tag)
        return frames

    def reject(self, delivery_tag: int, requeue: bool) -> list:
        frames = self._after_merged_ack(("reject", {"ch": self.number, "delivery_tag": delivery_tag,
                                                    "requeue": requeue}))
        self.settlement.settle(delivery_tag)
        return frames

    def recovered(self) -> None:
        """Every delivery so far was given back (`basic_recover`)."""
        self.settlement.settle_upto(self.settlement.delivered_max)

    def _after_merged_ack(self, frame) -> list:
        # A pending merged ack goes first, so settlements keep the order they were made in.
        if self.ack_upto:
            tag, self.ack_upto = self.ack_upto, 0
            return [("ack", {"ch": self.number, "delivery_tag": tag, "multiple": True}), frame]
        return [frame]

    # ---- consumers -----------------------------------------------------------------------
    def add_consumer(self, consumer_tag: str, callback, no_ack: bool) -> bool:
        """Register a consumer before its `consume` request leaves (deliveries may follow the
        reply at once). False if the tag is taken on this channel."""
        if consumer_tag in self.consumers:
            return False
        self.consumers[consumer_tag] = (callback, no_ack)
        self.cancelled.pop(consumer_tag, None)
        return True

    def rename_consumer(self, requested: str, given: str) -> None:
        """The server named the consumer otherwise than asked."""
        if given != requested and requested in self.consumers:
            self.consumers[given] = self.consumers.pop(requested)

    def forget_consumer(self, consumer_tag: str) -> None:
        """Its `consume` request failed."""
        self.consumers.pop(consumer_tag, None)

    def remove_consumer(self, consumer_tag: str):
        """Cancelled (by the client, or by the broker: `on_broker_cancel`): its (callback,
        no_ack), or None if there was none. Deliveries for it still in flight are `orphaned`."""
        entry = self.consumers.pop(consumer_tag, None)
        if entry is not None:
            self.cancelled[consumer_tag] = entry[1]
        return entry

    on_broker_cancel = remove_consumer

    def orphaned(self, delivery) -> list:
        """A delivery whose consumer is gone: settled here; frames to send (a requeueing nack
        unless it came without needing an ack)."""
        consumer_tag, delivery_tag = delivery[0], delivery[1]
        if self.cancelled.get(consumer_tag, False):
            self.settlement.settle(delivery_tag)
            return []
        return self.nack(delivery_tag, False, True)

    # ---- the channel ends ----------------------------------------------------------------
    def reset(self) -> list:
        """The channel closed (or its connection dropped): drop what was held back, forget the
        consumers and start the numbering over. Returns the records still awaiting a confirm,
        for the adapter to fail."""
        del self.publishes[:]
        self.publish_bytes = 0
        self.ack_upto = 0
        settlement = self.settlement   # in place: adapters may hold its bound methods
        settlement.floor = settlement.delivered_max = 0
        settlement.above = set()
        self.next_seq = 1
        pending = list(self.unconfirmed.values())
        self.unconfirmed.clear()
        self.consumers.clear()
        return pending
