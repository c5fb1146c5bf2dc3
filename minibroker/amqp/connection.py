"""One AMQP 0-9-1 client connection: an asyncio protocol that drives minibroker's core.

`AMQPConnection` reads bytes through the sans-IO `CommandReader` (codec.py), runs each
command through the connection's state machine (negotiation, channels, closing) and turns
it into calls on the broker core (`Broker`, `Session`, `Channel`), exactly as the msgpack
front door (minibroker/server.py) does. The core reports back through `AMQPSink`, which turns
deliveries, confirms, returns and server-side cancels into AMQP frames (sink.py). The core
never learns which protocol a client speaks.

- Negotiation: protocol header → connection.start (server properties with RabbitMQ's
  capabilities table) → start-ok (PLAIN or AMQPLAIN, checked by the server's `Authenticator`,
  serverbase/auth.py, as on every front door) → tune / tune-ok (channel_max, frame_max, heartbeat) → open (vhost "/").
- Permissions: with `--auth`, each method that names an exchange or a queue is checked
  before its handler by `_authorize` (RabbitMQ's configure/write/read, minibroker/access.py);
  a denial is a 403 ACCESS_REFUSED channel exception.
- Errors follow RabbitMQ: a *channel exception* (404, 403, 405, 406) sends channel.close and
  discards what arrives on that channel until close-ok; a *connection exception* (501-505,
  530, 540, 541, 403 at login) sends connection.close and discards everything until close-ok
  (or a deadline). Core `BrokerError`s are mapped by `_amqp_error`.
- Writes are coalesced: frames go to `_out` and one `writelines` per loop turn sends them.
- Heartbeats: a timer every heartbeat/2 s sends a heartbeat frame when nothing else was sent
  and closes a peer silent for two heartbeat intervals; closing requeues its unacked messages
  (`Session.close`).
- Backpressure as in serverbase/connection.py: a full socket buffer pauses reading and the
  core stops delivering; the memory alarm (flow_control.py) sends connection.blocked/unblocked.
- Transactions (tx.select / commit / rollback) are kept here, in the front door: a
  transactional channel holds its publishes and acks in `ChannelState.tx` and applies them, in
  order, on commit; rollback drops them. The core sees only the committed calls.
"""

import asyncio
import logging

from clients.protocol.errors import BrokerError, ErrorCode
from serverbase.connection import enable_keepalive
from serverbase.schema import check_table

from .. import access
from ..access import publish_allowed
from . import spec
from .codec import HEARTBEAT_FRAME, BadProtocolHeader, CommandReader, frame_content, frame_method
from .fields import decode_table
from .sink import AMQPSink
from .spec import (
    ACCESS_REFUSED, CHANNEL_ERROR, COMMAND_INVALID, INTERNAL_ERROR, NOT_ALLOWED, NOT_FOUND, NOT_IMPLEMENTED,
    PRECONDITION_FAILED, PROTOCOL_HEADER, RESOURCE_LOCKED, AMQPError, AMQPFrameError, m,
)

log = logging.getLogger("minibroker.amqp")
BasicPublish = m.BasicPublish

CHANNEL_MAX = 2047               # RabbitMQ's default
FRAME_MAX = 131072               # RabbitMQ's default
CLOSE_OK_TIMEOUT = 5.0           # how long a connection.close waits for close-ok
# The heartbeat proposed in connection.tune is the server's --heartbeat (60 s by default, as
# RabbitMQ's) and the time allowed from the protocol header to connection.open its
# --handshake-timeout (10 s, as RabbitMQ's handshake_timeout): the same settings as msgpack's.

SERVER_CAPABILITIES = {
    "publisher_confirms": True, "exchange_exchange_bindings": True, "basic.nack": True,
    "consumer_cancel_notify": True, "connection.blocked": True, "authentication_failure_close": True,
    "per_consumer_qos": True, "consumer_priorities": False, "direct_reply_to": False,
}

# Core error codes → AMQP reply codes (channel exceptions unless HARD_ERRORS says otherwise).
_CODES = {
    ErrorCode.NOT_FOUND: NOT_FOUND, ErrorCode.PRECONDITION_FAILED: PRECONDITION_FAILED,
    ErrorCode.RESOURCE_LOCKED: RESOURCE_LOCKED, ErrorCode.BAD_REQUEST: PRECONDITION_FAILED,
    ErrorCode.NOT_AUTHORIZED: ACCESS_REFUSED, ErrorCode.MESSAGE_TOO_LARGE: PRECONDITION_FAILED,
}

# Phases of a connection.
AWAIT_HEADER, AWAIT_START_OK, AWAIT_TUNE_OK, AWAIT_OPEN, OPEN, CLOSING, AWAIT_LOGIN = range(7)


def _amqp_error(exc: BrokerError, args) -> AMQPError:
    code = _CODES.get(exc.code, INTERNAL_ERROR)
    text = exc.message
    if exc.code == ErrorCode.NOT_FOUND and (text.startswith("no queue") or text.startswith("no exchange")):
        text = text.split(" (", 1)[0] + " in vhost '/'"
    err = AMQPError(code, text, args.spec.class_id, args.spec.method_id)
    if code == INTERNAL_ERROR:
        err.force_soft = True      # a storage failure closes the channel, not the connection
    return err


TX_MAX_OPERATIONS = 100_000         # bounds on what one transaction may hold before commit
TX_MAX_BYTES = 64 << 20


class ChannelState:
    """What the AMQP front door keeps per channel beside the core's `Channel`."""

    __slots__ = ("closing", "last_queue", "tx", "tx_bytes")

    def __init__(self):
        self.closing = False         # we sent channel.close; drop all but close/close-ok
        self.last_queue = ""         # "" in queue methods means the last declared queue
        self.tx = None               # after tx.select: [(function, args)] waiting for tx.commit
        self.tx_bytes = 0


class AMQPConnection(asyncio.Protocol):
    def __init__(self, server, conn_id: int):
        self.server = server
        self.broker = server.broker
        self.id = conn_id
        self.transport = None
        self.peer = None
        self.phase = AWAIT_HEADER
        self.closed = False
        self.writing_paused = False
        self.frame_max = FRAME_MAX
        self.channel_max = CHANNEL_MAX
        self.heartbeat = server.heartbeat     # proposed in tune; the client's answer wins
        self.user = None
        self.access = None                    # the user's permissions (minibroker/access.py); None: all
        self.client_properties: dict = {}
        self.client_capabilities: dict = {}
        self.reader = CommandReader(FRAME_MAX, server.max_frame)
        self.channels: dict[int, ChannelState] = {}
        self.session = None
        self.state: dict = {}                 # as serverbase's ClientConnection: "session" for flow control
        self.encoded_properties: dict = {}    # id(properties) -> (properties, bytes), see sink.py
        self._out: list = []
        self._flush_scheduled = False
        self._loop = asyncio.get_event_loop()
        self._last_recv = 0.0
        self._sent = False
        self._timer = None
        self._handlers = self._handler_table()
        self._tasks: set = set()

    # ---- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        enable_keepalive(transport)       # finds a vanished peer when heartbeats are off
        self._last_recv = self._loop.time()
        self.server.connections[self.id] = self
        if self.server.handshake_timeout:
            self._timer = self._loop.call_later(self.server.handshake_timeout, self._handshake_timeout)

    def data_received(self, data):
        self.server.bytes_in += len(data)
        self._last_recv = self._loop.time()
        try:
            commands = self.reader.feed(data)
        except BadProtocolHeader:
            # The spec: answer with the header we speak, then close.
            self.transport.write(PROTOCOL_HEADER)
            self._abort()
            return
        except AMQPFrameError as exc:
            self.connection_exception(exc)
            self.flush()
            return
        if self.phase == AWAIT_HEADER:
            self.phase = AWAIT_START_OK
            self._send_start()
        handlers = self._handlers
        channels = self.channels
        exchanges = self.broker.exchanges
        batch = None          # a run of plain publishes on one channel, published together
        batch_ch = 0
        for ch, args, props, body in commands:
            if self.closed:
                return
            if type(args) is BasicPublish and props is None and self.phase == OPEN:
                # The hot path: no properties, an existing exchange. Such publishes cannot fail in
                # the core (short-string names fit its limits), so a run of them goes to
                # `Broker.publish_batch` at once; anything else ends the run first.
                state = channels.get(ch)
                if state is not None and not state.closing and state.tx is None and not args.immediate:
                    exchange = exchanges.get(args.exchange)
                    if (exchange is not None and not exchange.internal
                            and (self.access is None or publish_allowed(self.access, args.exchange))):
                        if ch != batch_ch and batch:
                            self._publish_batch(batch_ch, batch)
                            batch = None
                        if batch is None:
                            batch = []
                            batch_ch = ch
                        batch.append([args.exchange, args.routing_key, body, None, args.mandatory])
                        continue
            if batch:
                self._publish_batch(batch_ch, batch)
                batch = None
                if self.closed:
                    return
            if self.phase == CLOSING:
                if type(args) is m.ConnectionCloseOk or type(args) is m.ConnectionClose:
                    self._closing_command(args)
                continue
            state = channels.get(ch)
            if state is not None and state.closing:
                if type(args) is m.ChannelCloseOk:
                    del channels[ch]
                elif type(args) is m.ChannelClose:
                    self.send(ch, m.ChannelCloseOk())
                continue
            try:
                if isinstance(args, AMQPError):      # a message over the size limit
                    raise args
                handler = handlers[type(args)]
                if handler is self._server_only:
                    raise AMQPError(COMMAND_INVALID, f"{args.spec.name} is sent by servers only", *_ids(args))
                if ch == 0:
                    if args.spec.class_id != 10:
                        raise AMQPError(COMMAND_INVALID, f"{args.spec.name} on channel 0", *_ids(args))
                elif args.spec.class_id == 10:
                    raise AMQPError(COMMAND_INVALID, f"{args.spec.name} on channel {ch} (must be 0)", *_ids(args))
                elif self.phase != OPEN:
                    raise AMQPError(COMMAND_INVALID, f"{args.spec.name} before connection.open", *_ids(args))
                elif state is None and type(args) is not m.ChannelOpen:
                    raise AMQPError(CHANNEL_ERROR, f"expected 'channel.open' on channel {ch}", *_ids(args))
                if self.access is not None and type(args) in _PERMISSION_OPS:
                    self._authorize(ch, args)
                if body is None:
                    handler(ch, args)
                else:
                    handler(ch, args, props, body)
            except AMQPError as exc:
                if exc.hard and not getattr(exc, "force_soft", False):
                    self.connection_exception(exc)
                else:
                    self.channel_exception(ch, exc)
            except BrokerError as exc:
                err = _amqp_error(exc, args)
                if err.hard and not getattr(err, "force_soft", False):
                    self.connection_exception(err)
                else:
                    self.channel_exception(ch, err)
            except Exception as exc:      # a bug must not take the server down
                log.exception("AMQP connection %s: %s failed", self.id, getattr(args, "spec", args))
                self.connection_exception(AMQPError(INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", *_ids(args)))
        if batch:
            self._publish_batch(batch_ch, batch)
        self.flush()

    def _publish_batch(self, ch: int, batch: list) -> None:
        session = self.session
        session.published = True
        try:
            self.broker.publish_batch(session.channel(ch), batch)
        except BrokerError as exc:
            self.channel_exception(ch, _amqp_error(exc, BasicPublish()))
        except Exception as exc:      # a bug must not take the server down
            log.exception("AMQP connection %s: publish failed", self.id)
            self.connection_exception(AMQPError(INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", 60, 40))
        self.server.flow_control.note_published(len(batch))

    def connection_lost(self, exc):
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.server.connections.pop(self.id, None)
        if self.session is not None:
            self.session.close()      # unacked messages go back to their queues

    def pause_writing(self):
        self.writing_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self):
        self.writing_paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
        if self.session is not None:
            self.session.resume()

    @property
    def is_open(self) -> bool:
        """Past connection.open and not closing: the client may be told things."""
        return self.phase == OPEN and not self.closed

    # ---- sending ----------------------------------------------------------------------------
    def send(self, ch: int, args) -> None:
        self._out.append(frame_method(ch, args))
        self._schedule_flush()

    def send_content(self, ch: int, args, properties, body) -> None:
        self._out.extend(frame_content(ch, args, properties, body, self.frame_max))
        self._schedule_flush()

    def _schedule_flush(self):
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if self._out and not self.closed:
            out, self._out = self._out, []
            self.server.bytes_out += sum(map(len, out))
            self.transport.writelines(out)
            self._sent = True

    # ---- closing ----------------------------------------------------------------------------
    def channel_exception(self, ch: int, exc: AMQPError) -> None:
        """Close one channel with `exc`, as RabbitMQ does: its unacked messages are requeued now."""
        if ch == 0:
            self.connection_exception(exc)
            return
        log.info("AMQP connection %s channel %s: %s", self.id, ch, exc.text)
        state = self.channels.get(ch)
        if state is None:
            state = self.channels[ch] = ChannelState()
        state.closing = True
        self.reader.drop_channel(ch)
        if self.session is not None:
            self.session.close_channel(ch)
        self.send(ch, m.ChannelClose(exc.code, _short_text(exc.text), exc.class_id, exc.method_id))

    def connection_exception(self, exc: AMQPError) -> None:
        """Close the connection with `exc`: connection.close, then wait for close-ok."""
        if self.phase == CLOSING or self.closed:
            return
        log.warning("AMQP connection %s from %s: %s", self.id, self.peer, exc.text)
        self.phase = CLOSING
        if self.session is not None:
            self.session.close()
        self.send(0, m.ConnectionClose(exc.code, _short_text(exc.text), exc.class_id, exc.method_id))
        self._set_timer(CLOSE_OK_TIMEOUT, self._abort)

    def _closing_command(self, args) -> None:
        if type(args) is m.ConnectionClose:     # both sides closed at once
            self.send(0, m.ConnectionCloseOk())
        self.flush()
        self._abort()

    def close(self) -> None:
        """The server is stopping: tell the client (320 CONNECTION_FORCED) and close."""
        if self.closed:
            return
        if self.phase == OPEN:
            self.send(0, m.ConnectionClose(spec.CONNECTION_FORCED, "CONNECTION_FORCED - broker forced connection "
                                           "closure with reason 'shutdown'", 0, 0))
        self.flush()
        self._abort()

    def _abort(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _set_timer(self, delay, callback):
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(delay, callback)

    def _handshake_timeout(self):
        self._timer = None
        if self.phase != OPEN and not self.closed:
            log.info("AMQP connection %s from %s: handshake not done in %s s", self.id, self.peer,
                     self.server.handshake_timeout)
            self._abort()

    # ---- heartbeats -------------------------------------------------------------------------
    def _heartbeat_tick(self):
        self._timer = None
        if self.closed:
            return
        now = self._loop.time()
        transport = self.transport
        if transport is not None and not transport.is_reading():
            # We stopped reading (backpressure, the memory alarm's connection.blocked): the
            # peer's heartbeats wait in the socket, so its silence is ours, not its.
            self._last_recv = now
        silent = now - self._last_recv
        if silent > 2 * self.heartbeat:
            log.warning("AMQP connection %s from %s: no heartbeat for %.1f s; closing", self.id, self.peer, silent)
            self._abort()
            return
        if not self._sent:
            self._out.append(HEARTBEAT_FRAME)
            self.flush()
        self._sent = False
        self._set_timer(self.heartbeat / 2, self._heartbeat_tick)

    # ---- negotiation ------------------------------------------------------------------------
    def _send_start(self) -> None:
        server = self.server
        props = {
            "product": "minibroker", "version": server.version, "platform": "Python",
            "information": "minibroker: a small routing broker; AMQP 0-9-1 front door",
            "copyright": "minibroker contributors", "cluster_name": "minibroker@localhost",
            "capabilities": SERVER_CAPABILITIES,
        }
        self.send(0, m.ConnectionStart(0, 9, props, b"PLAIN AMQPLAIN", b"en_US"))

    def on_start_ok(self, ch, args):
        if self.phase != AWAIT_START_OK:
            raise AMQPError(COMMAND_INVALID, "connection.start-ok out of order", *_ids(args))
        self.client_properties = args.client_properties or {}
        caps = self.client_properties.get("capabilities")
        self.client_capabilities = caps if isinstance(caps, dict) else {}
        credentials = _credentials(args.mechanism, args.response)
        if credentials is None:
            raise AMQPError(ACCESS_REFUSED, f"unsupported authentication mechanism '{args.mechanism}' "
                                            f"or malformed response; use PLAIN or AMQPLAIN", *_ids(args))
        authenticator = self.server.authenticator
        if not authenticator.enabled:
            self._logged_in(authenticator.anonymous(credentials["username"]))
            return
        # The shared login (serverbase/auth.py): a slow hash and the per-address backoff, in a
        # task. Until it answers nothing may come but the client's wait (tune comes after).
        self.phase = AWAIT_LOGIN
        task = self._loop.create_task(self._login(credentials, args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _login(self, credentials, args) -> None:
        try:
            principal = await self.server.authenticator.login(credentials["username"], credentials["password"],
                                                              self.peer)
        except BrokerError:
            if not self.closed:
                self.connection_exception(AMQPError(
                    ACCESS_REFUSED, f"Login was refused using authentication mechanism {args.mechanism}. "
                                    f"For details see the broker logfile.", *_ids(args)))
                self.flush()
            return
        if not self.closed:
            self._logged_in(principal)
            self.flush()

    def _logged_in(self, principal) -> None:
        self.user = principal.name
        self.access = principal.access
        self.phase = AWAIT_TUNE_OK
        self.send(0, m.ConnectionTune(self.channel_max, FRAME_MAX, self.heartbeat))

    def _authorize(self, ch, args) -> None:
        """RabbitMQ's configure/write/read check of this method (minibroker/access.py), in the
        msgpack op's terms; a denial is a 403 channel exception."""
        op, make = _PERMISSION_OPS[type(args)]
        names = make(args)
        if "queue" in names and not (op == "queue_declare"):
            names["queue"] = self._queue_name(ch, names["queue"])
        access.authorize(self.access, op, names)

    def on_tune_ok(self, ch, args):
        if self.phase != AWAIT_TUNE_OK:
            raise AMQPError(COMMAND_INVALID, "connection.tune-ok out of order", *_ids(args))
        frame_max = args.frame_max or FRAME_MAX
        if frame_max < spec.FRAME_MIN_SIZE or frame_max > FRAME_MAX:
            raise AMQPError(NOT_ALLOWED, f"negotiated frame_max = {frame_max} is outside "
                                         f"{spec.FRAME_MIN_SIZE}..{FRAME_MAX}", *_ids(args))
        if args.channel_max > self.channel_max:
            raise AMQPError(NOT_ALLOWED, f"negotiated channel_max = {args.channel_max} is higher than the "
                                         f"maximum allowed value ({self.channel_max})", *_ids(args))
        self.channel_max = args.channel_max or self.channel_max
        self.frame_max = frame_max
        self.reader.frame_max = frame_max
        self.heartbeat = args.heartbeat
        self.phase = AWAIT_OPEN

    def on_open(self, ch, args):
        if self.phase != AWAIT_OPEN:
            raise AMQPError(COMMAND_INVALID, "connection.open out of order", *_ids(args))
        if args.virtual_host != "/":
            raise AMQPError(NOT_ALLOWED, f"vhost {args.virtual_host} not found", *_ids(args))
        self.session = self.broker.open_session(AMQPSink(self), self.id)
        self.session.user = self.user
        self.state["session"] = self.session
        self.phase = OPEN
        self.send(0, m.ConnectionOpenOk(""))
        if self.heartbeat:
            self._set_timer(self.heartbeat / 2, self._heartbeat_tick)
        elif self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def on_connection_close(self, ch, args):
        self.send(0, m.ConnectionCloseOk())
        self.flush()
        self.phase = CLOSING
        if self.session is not None:
            self.session.close()
        self._abort()

    def on_connection_close_ok(self, ch, args):
        raise AMQPError(COMMAND_INVALID, "connection.close-ok without a connection.close", *_ids(args))

    def on_secure_ok(self, ch, args):
        raise AMQPError(COMMAND_INVALID, "connection.secure-ok was not asked for", *_ids(args))

    def on_update_secret(self, ch, args):
        self.send(0, m.ConnectionUpdateSecretOk())

    def on_blocked(self, ch, args):
        pass       # RabbitMQ ignores a client's blocked/unblocked too

    # ---- channels ---------------------------------------------------------------------------
    def on_channel_open(self, ch, args):
        if ch in self.channels:
            raise AMQPError(CHANNEL_ERROR, f"second 'channel.open' seen on channel {ch}", *_ids(args))
        if ch > self.channel_max:
            raise AMQPError(NOT_ALLOWED, f"channel number {ch} exceeds the negotiated channel_max "
                                         f"{self.channel_max}", *_ids(args))
        self.session.channel(ch)
        self.channels[ch] = ChannelState()
        self.send(ch, m.ChannelOpenOk(b""))

    def on_channel_close(self, ch, args):
        self.channels.pop(ch, None)
        self.reader.drop_channel(ch)
        self.session.close_channel(ch)
        self.send(ch, m.ChannelCloseOk())

    def on_channel_close_ok(self, ch, args):
        pass       # only meaningful while closing, handled before dispatch

    def on_channel_flow(self, ch, args):
        self.session.channel(ch).flow(args.active, self.broker.clock())
        self.send(ch, m.ChannelFlowOk(args.active))

    def on_channel_flow_ok(self, ch, args):
        pass

    # ---- exchanges --------------------------------------------------------------------------
    def on_exchange_declare(self, ch, args):
        name = args.exchange
        if not args.passive:
            if name == "":
                raise AMQPError(ACCESS_REFUSED, "operation not permitted on the default exchange", *_ids(args))
            if name.startswith("amq."):
                raise AMQPError(ACCESS_REFUSED, f"exchange name '{name}' contains reserved prefix 'amq.*'",
                                *_ids(args))
            from ..exchanges import EXCHANGE_TYPES
            if args.type not in EXCHANGE_TYPES:
                raise AMQPError(COMMAND_INVALID, f"unknown exchange type '{args.type}'", *_ids(args))
        self.broker.declare_exchange(name, args.type, durable=args.durable, auto_delete=args.auto_delete,
                                     internal=args.internal, arguments=_arguments(args), passive=args.passive)
        if not args.nowait:
            self.send(ch, m.ExchangeDeclareOk())

    def on_exchange_delete(self, ch, args):
        if args.exchange == "":
            raise AMQPError(ACCESS_REFUSED, "operation not permitted on the default exchange", *_ids(args))
        try:
            self.broker.delete_exchange(args.exchange, args.if_unused)
        except BrokerError as exc:
            if exc.code != ErrorCode.NOT_FOUND:     # deleting a missing exchange is fine, as in RabbitMQ
                raise
        if not args.nowait:
            self.send(ch, m.ExchangeDeleteOk())

    def on_exchange_bind(self, ch, args):
        self.broker.bind_exchange(args.destination, args.source, args.routing_key, _arguments(args))
        if not args.nowait:
            self.send(ch, m.ExchangeBindOk())

    def on_exchange_unbind(self, ch, args):
        self.broker.unbind_exchange(args.destination, args.source, args.routing_key, _arguments(args))
        if not args.nowait:
            self.send(ch, m.ExchangeUnbindOk())

    # ---- queues -----------------------------------------------------------------------------
    def _queue_name(self, ch, name):
        if name == "":
            name = self.channels[ch].last_queue
            if name == "":
                raise BrokerError(ErrorCode.NOT_FOUND, "no previously declared queue")
        return name

    def on_queue_declare(self, ch, args):
        name = args.queue
        if not args.passive and name.startswith("amq."):
            raise AMQPError(ACCESS_REFUSED, f"queue name '{name}' contains reserved prefix 'amq.*'", *_ids(args))
        if args.passive:
            name = self._queue_name(ch, name)
        q = self.broker.declare_queue(self.session, name, passive=args.passive, durable=args.durable,
                                      exclusive=args.exclusive, auto_delete=args.auto_delete,
                                      arguments=_arguments(args))
        self.channels[ch].last_queue = q.name
        if not args.nowait:
            self.send(ch, m.QueueDeclareOk(q.name, len(q.ready), len(q.consumers)))

    def on_queue_bind(self, ch, args):
        self.broker.bind_queue(self.session, self._queue_name(ch, args.queue), args.exchange, args.routing_key,
                               _arguments(args))
        if not args.nowait:
            self.send(ch, m.QueueBindOk())

    def on_queue_unbind(self, ch, args):
        self.broker.unbind_queue(self.session, self._queue_name(ch, args.queue), args.exchange, args.routing_key,
                                 _arguments(args))
        self.send(ch, m.QueueUnbindOk())

    def on_queue_purge(self, ch, args):
        count = self.broker.purge_queue(self.session, self._queue_name(ch, args.queue))
        if not args.nowait:
            self.send(ch, m.QueuePurgeOk(count))

    def on_queue_delete(self, ch, args):
        try:
            count = self.broker.delete_queue(self.session, self._queue_name(ch, args.queue),
                                             if_unused=args.if_unused, if_empty=args.if_empty)
        except BrokerError as exc:
            if exc.code != ErrorCode.NOT_FOUND:     # deleting a missing queue is fine, as in RabbitMQ
                raise
            count = 0
        if not args.nowait:
            self.send(ch, m.QueueDeleteOk(count))

    # ---- basic ------------------------------------------------------------------------------
    def on_basic_qos(self, ch, args):
        if args.prefetch_size:
            raise AMQPError(NOT_IMPLEMENTED, f"prefetch_size!=0 ({args.prefetch_size})", *_ids(args))
        self.session.channel(ch).qos(args.prefetch_count, args.global_)
        self.send(ch, m.BasicQosOk())

    def on_basic_consume(self, ch, args):
        channel = self.session.channel(ch)
        tag = args.consumer_tag
        if tag and tag in channel.consumers:
            raise AMQPError(NOT_ALLOWED, f"attempt to reuse consumer tag '{tag}'", *_ids(args))
        queue = self.broker.get_queue(self._queue_name(ch, args.queue), self.session)
        try:
            tag = channel.consume(queue, tag, args.no_ack, args.exclusive, _arguments(args), self.broker.clock())
        except BrokerError as exc:
            if exc.code == ErrorCode.RESOURCE_LOCKED:   # exclusive consumers: RabbitMQ says 403
                raise AMQPError(ACCESS_REFUSED, f"queue '{queue.name}' in vhost '/' in exclusive use",
                                *_ids(args)) from None
            raise
        if not args.nowait:
            self.send(ch, m.BasicConsumeOk(tag))

    def on_basic_cancel(self, ch, args):
        self.session.channel(ch).cancel(args.consumer_tag, self.broker.clock())
        if not args.nowait:
            self.send(ch, m.BasicCancelOk(args.consumer_tag))

    def on_basic_publish(self, ch, args, props, body):
        if args.immediate:
            raise AMQPError(NOT_IMPLEMENTED, "immediate=true", *_ids(args))
        if self._held_in_transaction(ch, self._publish, (ch, args, props, body), len(body)):
            return
        self._publish(ch, args, props, body)

    def _publish(self, ch, args, props, body):
        broker = self.broker
        channel = self.session.channel(ch)
        self.session.published = True
        try:
            broker.publish(channel, args.exchange, args.routing_key, body, props, args.mandatory, broker.clock())
        except BrokerError as exc:
            if exc.code == ErrorCode.STORAGE_ERROR and channel.confirm_mode:
                pass                 # the nack already recorded for it tells the publisher
            elif exc.code == ErrorCode.PRECONDITION_FAILED and "internal" in exc.message:
                raise AMQPError(ACCESS_REFUSED, f"cannot publish to internal exchange '{args.exchange}' in "
                                                f"vhost '/'", *_ids(args)) from None
            else:
                raise
        broker.stats["published"] += 1
        self.server.flow_control.note_published(1)

    def on_basic_get(self, ch, args):
        channel = self.session.channel(ch)
        queue = self.broker.get_queue(self._queue_name(ch, args.queue), self.session)
        while True:
            got = channel.get(queue, args.no_ack, self.broker.clock())
            if got is None:
                self.send(ch, m.BasicGetEmpty(""))
                return
            try:
                frames = frame_content(ch, m.BasicGetOk(got["delivery_tag"], got["redelivered"], got["exchange"],
                                                        got["routing_key"], got["message_count"]),
                                       got["properties"], got["body"], self.frame_max)
            except ValueError:    # a msgpack publisher's routing key over 255 bytes: AMQP cannot carry it
                if not args.no_ack:
                    channel.nack(got["delivery_tag"], False, False, "reject")
                continue
            self._out.extend(frames)
            self._schedule_flush()
            return

    def on_basic_ack(self, ch, args):
        channel = self.session.channel(ch)
        if not self._held_in_transaction(ch, channel.ack, (args.delivery_tag, args.multiple)):
            channel.ack(args.delivery_tag, args.multiple)

    def on_basic_nack(self, ch, args):
        channel = self.session.channel(ch)
        if not self._held_in_transaction(ch, channel.nack, (args.delivery_tag, args.multiple, args.requeue)):
            channel.nack(args.delivery_tag, args.multiple, args.requeue)

    def on_basic_reject(self, ch, args):
        channel = self.session.channel(ch)
        if not self._held_in_transaction(ch, channel.nack, (args.delivery_tag, False, args.requeue, "reject")):
            channel.nack(args.delivery_tag, False, args.requeue, "reject")

    def on_basic_recover(self, ch, args):
        self._recover(ch, args)
        self.send(ch, m.BasicRecoverOk())

    def on_basic_recover_async(self, ch, args):
        self._recover(ch, args)

    def _recover(self, ch, args):
        if not args.requeue:
            raise AMQPError(NOT_IMPLEMENTED, "requeue=false", *_ids(args))
        channel = self.session.channel(ch)
        if channel.unacked:
            channel.nack(0, True, True, "recover")   # tag 0 + multiple: every unacked message

    def on_server_only(self, ch, args):
        raise AMQPError(COMMAND_INVALID, f"{args.spec.name} is sent by servers only", *_ids(args))

    def on_confirm_select(self, ch, args):
        if self.channels[ch].tx is not None:
            raise AMQPError(PRECONDITION_FAILED, "cannot switch from tx to confirm mode", *_ids(args))
        self.session.channel(ch).confirm_mode = True
        if not args.nowait:
            self.send(ch, m.ConfirmSelectOk())

    # ---- transactions -----------------------------------------------------------------------
    def _held_in_transaction(self, ch, function, call_args, nbytes=0) -> bool:
        """In a transactional channel, keep the call for tx.commit and say so."""
        state = self.channels[ch]
        if state.tx is None:
            return False
        if len(state.tx) >= TX_MAX_OPERATIONS or state.tx_bytes + nbytes > TX_MAX_BYTES:
            raise AMQPError(PRECONDITION_FAILED, f"a transaction holds at most {TX_MAX_OPERATIONS} publishes and "
                                                 f"acks and {TX_MAX_BYTES} bytes; commit more often", 90, 20)
        state.tx.append((function, call_args))
        state.tx_bytes += nbytes
        return True

    def on_tx_select(self, ch, args):
        if self.session.channel(ch).confirm_mode:
            raise AMQPError(PRECONDITION_FAILED, "cannot switch from confirm to tx mode", *_ids(args))
        state = self.channels[ch]
        if state.tx is None:
            state.tx = []
        self.send(ch, m.TxSelectOk())

    def on_tx_commit(self, ch, args):
        state = self._transactional(ch, args)
        held, state.tx, state.tx_bytes = state.tx, [], 0
        for function, call_args in held:      # an error closes the channel, as in RabbitMQ
            function(*call_args)
        self.send(ch, m.TxCommitOk())

    def on_tx_rollback(self, ch, args):
        state = self._transactional(ch, args)
        state.tx, state.tx_bytes = [], 0
        self.send(ch, m.TxRollbackOk())

    def _transactional(self, ch, args) -> ChannelState:
        state = self.channels[ch]
        if state.tx is None:
            raise AMQPError(PRECONDITION_FAILED, "channel is not transactional", *_ids(args))
        return state

    def _handler_table(self) -> dict:
        table = {
            m.ConnectionStartOk: self.on_start_ok, m.ConnectionTuneOk: self.on_tune_ok,
            m.ConnectionOpen: self.on_open, m.ConnectionClose: self.on_connection_close,
            m.ConnectionCloseOk: self.on_connection_close_ok, m.ConnectionSecureOk: self.on_secure_ok,
            m.ConnectionUpdateSecret: self.on_update_secret, m.ConnectionBlocked: self.on_blocked,
            m.ConnectionUnblocked: self.on_blocked,
            m.ChannelOpen: self.on_channel_open, m.ChannelClose: self.on_channel_close,
            m.ChannelCloseOk: self.on_channel_close_ok, m.ChannelFlow: self.on_channel_flow,
            m.ChannelFlowOk: self.on_channel_flow_ok,
            m.ExchangeDeclare: self.on_exchange_declare, m.ExchangeDelete: self.on_exchange_delete,
            m.ExchangeBind: self.on_exchange_bind, m.ExchangeUnbind: self.on_exchange_unbind,
            m.QueueDeclare: self.on_queue_declare, m.QueueBind: self.on_queue_bind,
            m.QueueUnbind: self.on_queue_unbind, m.QueuePurge: self.on_queue_purge,
            m.QueueDelete: self.on_queue_delete,
            m.BasicQos: self.on_basic_qos, m.BasicConsume: self.on_basic_consume,
            m.BasicCancel: self.on_basic_cancel, m.BasicPublish: self.on_basic_publish,
            m.BasicGet: self.on_basic_get, m.BasicAck: self.on_basic_ack, m.BasicNack: self.on_basic_nack,
            m.BasicReject: self.on_basic_reject, m.BasicRecover: self.on_basic_recover,
            m.BasicRecoverAsync: self.on_basic_recover_async,
            m.ConfirmSelect: self.on_confirm_select,
            m.TxSelect: self.on_tx_select, m.TxCommit: self.on_tx_commit, m.TxRollback: self.on_tx_rollback,
        }
        self._server_only = self.on_server_only
        for s in spec.METHODS.values():      # every other method is one only a server sends
            table.setdefault(s.args, self._server_only)
        return table


# AMQP methods that need a permission -> (the msgpack op with the same needs, its names from the method).
_PERMISSION_OPS = {
    m.ExchangeDeclare: ("exchange_declare", lambda a: {"exchange": a.exchange, "passive": a.passive}),
    m.ExchangeDelete: ("exchange_delete", lambda a: {"exchange": a.exchange}),
    m.ExchangeBind: ("exchange_bind", lambda a: {"destination": a.destination, "source": a.source}),
    m.ExchangeUnbind: ("exchange_unbind", lambda a: {"destination": a.destination, "source": a.source}),
    m.QueueDeclare: ("queue_declare", lambda a: {"queue": a.queue, "passive": a.passive}),
    m.QueueBind: ("queue_bind", lambda a: {"queue": a.queue, "exchange": a.exchange}),
    m.QueueUnbind: ("queue_unbind", lambda a: {"queue": a.queue, "exchange": a.exchange}),
    m.QueuePurge: ("queue_purge", lambda a: {"queue": a.queue}),
    m.QueueDelete: ("queue_delete", lambda a: {"queue": a.queue}),
    m.BasicConsume: ("consume", lambda a: {"queue": a.queue}),
    m.BasicGet: ("get", lambda a: {"queue": a.queue}),
    m.BasicPublish: ("publish", lambda a: {"exchange": a.exchange}),
}


def _short_text(text: str) -> str:
    """A reply text cut to fit AMQP's short string (255 bytes of UTF-8, not 255 characters)."""
    raw = text.encode("utf-8")
    return text if len(raw) <= 255 else raw[:255].decode("utf-8", "ignore")


def _arguments(args) -> dict:
    """A method's arguments table within the bounds the msgpack door's schemas enforce (depth,
    entries, bytes: serverbase/schema.py), checked before anything is declared or stored."""
    return check_table(args.arguments or {}, "arguments")


def _ids(args):
    return args.spec.class_id, args.spec.method_id


def _credentials(mechanism: str, response: bytes):
    """{username, password} from a start-ok response, or None if it cannot be read."""
    if mechanism == "PLAIN":
        parts = response.split(b"\x00")
        if len(parts) != 3:
            return None
        user, password = parts[1], parts[2]
    elif mechanism == "AMQPLAIN":
        # A field table without its length prefix (as py-amqp and RabbitMQ write it).
        try:
            table, _ = decode_table(len(response).to_bytes(4, "big") + response, 0, len(response) + 4)
        except Exception:
            return None
        user, password = table.get("LOGIN", ""), table.get("PASSWORD", "")
    else:
        return None
    try:
        user = user.decode("utf-8") if isinstance(user, bytes) else str(user)
        password = password.decode("utf-8") if isinstance(password, bytes) else str(password)
    except UnicodeDecodeError:
        return None
    return {"username": user, "password": password}
