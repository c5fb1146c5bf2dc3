"""`AMQPSink`: where the broker core sends one AMQP connection's deliveries, confirms, returns,
server-side cancels and memory-alarm notices, turned into AMQP frames.

It is the AMQP twin of `minibroker/server.py: ConnectionSink` (the core's sink interface is in
minibroker/session.py). Frames go into the connection's outgoing list (`AMQPConnection._out`),
which one `writelines` per loop turn sends; a delivery's method and header frames are built with
two `struct.pack` calls and its body is written as its own buffer, without a copy.
"""

import logging
from struct import Struct

from .codec import frame_body
from .properties import HEADER_PREFIX, encode_properties
from .spec import m

log = logging.getLogger("minibroker.amqp")

_FRAME = Struct(">BHI")
_DELIVER_PREFIX = b"\x00\x3c\x00\x3c"
_QB = Struct(">QB")
_END = b"\xce"
_EMPTY_PROPS = b"\x00\x00"
ENCODED_PROPERTIES_CACHE = 256


def _shortstr(value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 255:
        raise ValueError("longer than an AMQP short string")
    return bytes((len(raw),)) + raw


class AMQPSink:
    """Where the core sends one AMQP connection's deliveries, confirms, returns and cancels."""

    __slots__ = ("conn",)

    def __init__(self, conn):
        self.conn = conn

    @property
    def paused(self) -> bool:
        conn = self.conn
        return conn.writing_paused or conn.closed

    @property
    def send_limit(self) -> int:
        return self.conn.frame_max

    def deliver(self, ch: int, entries: list, body_bytes: int):
        """basic.deliver + header + body frames per message. Returns the delivery tags of
        messages AMQP cannot carry (a routing key or consumer tag over 255 bytes, published
        over msgpack), which the core then rejects; None when all went out."""
        conn = self.conn
        out = conn._out
        frame_max = conn.frame_max
        body_limit = frame_max - 8
        pack_frame = _FRAME.pack
        pack_prefix = HEADER_PREFIX.pack
        encoded = conn.encoded_properties
        refused = None
        for ctag, tag, redelivered, exchange, rk, body, props in entries:
            try:
                payload = (_DELIVER_PREFIX + _shortstr(ctag) + _QB.pack(tag, 1 if redelivered else 0)
                           + _shortstr(exchange) + _shortstr(rk))
            except ValueError:
                refused = (refused or []) + [tag]
                continue
            if props:
                # Messages share property dicts (one per AMQP publisher's property set, one per
                # fanout): encode each once. The entry holds the dict, so its id stays its own.
                cached = encoded.get(id(props))
                if cached is not None and cached[0] is props:
                    prop_bytes = cached[1]
                else:
                    prop_bytes = encode_properties(props)
                    if len(encoded) >= ENCODED_PROPERTIES_CACHE:
                        encoded.clear()
                    encoded[id(props)] = (props, prop_bytes)
            else:
                prop_bytes = _EMPTY_PROPS
            header = pack_prefix(60, 0, len(body)) + prop_bytes
            out.append(pack_frame(1, ch, len(payload)) + payload + _END
                       + pack_frame(2, ch, len(header)) + header + _END)
            if body:
                if len(body) <= body_limit:
                    out.append(pack_frame(3, ch, len(body)))
                    out.append(body)
                    out.append(_END)
                else:
                    out.extend(frame_body(ch, body, frame_max))
        conn._schedule_flush()
        return refused

    def confirm(self, ch, ack, seq, multiple):
        if ack:
            self.conn.send(ch, m.BasicAck(seq, multiple))
        else:
            self.conn.send(ch, m.BasicNack(seq, multiple, False))

    def error(self, code, message):
        # Beside nacks (STORAGE_ERROR): the nacks already tell an AMQP client; log the reason.
        log.warning("connection %s: %s: %s", self.conn.id, code, message)

    def return_message(self, ch, code, text, exchange, routing_key, body, properties):
        self.conn.send_content(ch, m.BasicReturn(code, text, exchange, routing_key), properties, body)

    def cancel(self, ch, tag):
        conn = self.conn
        if conn.client_capabilities.get("consumer_cancel_notify"):
            conn.send(ch, m.BasicCancel(tag, True))

    def publishing_blocked(self, blocked: bool) -> None:
        """The memory alarm paused (or resumed) reading from this publisher (flow_control.py)."""
        conn = self.conn
        if conn.client_capabilities.get("connection.blocked") and conn.is_open:
            conn.send(0, m.ConnectionBlocked("low on memory") if blocked else m.ConnectionUnblocked())
            conn.flush()
