"""`BlockingConnection`: pika's blocking connection, driven over our wire by one I/O loop.

The connection owns the socket (through `clients.rpc.RpcConnection`, which frames, pipelines
and coalesces writes) and everything that happens on it:

- **Output.** Requests queue in the RpcConnection's write buffer and leave in one `sendall`
  when the connection next waits, reads or processes events (`_flush_output`), or when the
  buffer passes 256 KiB. Channels hold two things back even longer, because they merge: a
  publish buffer (`BlockingChannel.basic_publish` without confirms) that becomes one
  `publish_batch` frame, and the highest pending `multiple` ack. `_flush_output` turns both
  into frames first (`BlockingChannel._materialize`).
- **Input.** `_pump` waits on the socket (and on a wake-up socket for
  `add_callback_threadsafe`), reads, and `_route`s what came: replies stay in the
  RpcConnection for the caller waiting on them; pushes become work on the channel they name
  (a `deliver` batch is queued whole for dispatch, confirms and returns are recorded at once
  since a blocked `basic_publish` waits on them); errors for requests sent without a reply
  (id 0) close the channel that sent them, as RabbitMQ closes a channel on a failed publish.
  Such an error answers no request id; the server names the channel in the frame's detail
  map (`[2, 0, code, message, {"ch": N}]`, PROTOCOL.md "Publish errors"), and failing that the
  channel that last sent an id-0 request is blamed.
- **Dispatch.** User callbacks (consumers, returns, timers, thread-safe callbacks) run only
  from `process_data_events`, `sleep`, `start_consuming` and the `consume` generator, never
  from inside another blocking call, which is pika's rule too.

The channel API itself is in `blocking_channel.py`.
"""

import atexit
import collections
import heapq
import itertools
import selectors
import socket
import threading
import time
import weakref

from clients.protocol.errors import BrokerError, ErrorCode
from clients.protocol.frames import ErrorReply
from clients.protocol.framing import BufferedFrameDecoder
from clients.rpc import RpcConnection

from . import exceptions
from .blocking_channel import BlockingChannel
from .channel_state import ConsumerCancelled, Deliveries, Returned, channel_for_error, route_push
from .connection import ConnectionParameters, Parameters

# Wire errors after which the server closes the whole connection, not one channel.
_CONNECTION_FATAL = frozenset({ErrorCode.FRAME_TOO_LARGE, ErrorCode.CORRUPT_FRAME})

_OPEN_CONNECTIONS: "weakref.WeakSet[BlockingConnection]" = weakref.WeakSet()
_SOCKET, _WAKE = "socket", "wake"  # selector keys' data


@atexit.register
def _flush_at_exit():
    # pika writes every publish at once; we buffer them. A program that publishes and exits
    # without closing its connection must still have sent what it published.
    for conn in list(_OPEN_CONNECTIONS):
        try:
            conn._flush_output()
        except Exception:
            pass


class _DeliveryDecoder(BufferedFrameDecoder):
    INITIAL_SIZE = 256 << 10   # a turn's deliveries of small messages; it grows to the largest frame


class _BrokerSocket(RpcConnection):
    """The connection's socket: what the server sends is received into one buffer kept for the
    connection's life (`BufferedFrameDecoder`, as the log clients do) instead of a fresh
    object of up to a MiB per read. A consumer receives a few hundred bytes per message: with
    a fresh object per read, that memory was new to the process every time, and on this kind
    of machine a first touch costs a page fault per 4 KiB (docs/clients-minibroker.md)."""
    decoder_class = _DeliveryDecoder


class BlockingConnection:
    """pika.BlockingConnection over the minibroker wire."""

    def __init__(self, parameters=None, _impl_class=None):
        if parameters is None:
            candidates = [ConnectionParameters()]
        elif isinstance(parameters, Parameters):
            candidates = [parameters]
        else:
            candidates = list(parameters)
            if not candidates:
                raise ValueError("parameters must be a Parameters instance or a non-empty sequence of them")
        self._rpc, self._params = self._connect(candidates)
        self._sock = self._rpc.sock
        self._channels: dict[int, BlockingChannel] = {}
        self._events = collections.deque()        # (fn, arg): work for user callbacks, in order
        self._threadsafe = collections.deque()    # callbacks from other threads
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        # epoll/poll rather than select(): no limit on descriptor numbers in busy programs.
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._sock, selectors.EVENT_READ, _SOCKET)
        self._selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self._timers: list = []                   # heap of [deadline, seq, callback]
        self._timer_seq = itertools.count(1)
        self._timer_index: dict = {}
        self._dirty: set = set()                  # channels holding publishes or a merged ack
        self._ignored_replies: dict = {}          # rid -> channel number: channel_close sent after an error
        self._last_noreply_channel = None         # who to blame for an error to an id-0 request
        self._closed = False
        self._close_exc = None                    # raised by the next call after a connection loss
        self._fatal_error = None                  # a connection-level error the server sent before closing
        self._dispatch_depth = 0
        self._state_changed = False               # a channel closed or a consumer was cancelled by the broker
        self.blocked_callbacks = []
        # Output the program left buffered is written by a background thread within
        # `flush_delay` seconds (a ConnectionParameters setting), whatever the program does
        # next (see _flusher_loop).
        self._flush_delay = self._params.flush_delay
        self._lock = self._rpc.write_lock         # guards output state: channel buffers and the rpc queue
        self._output_waiting = threading.Event()  # set when output was buffered and not written
        self._flusher = None
        _OPEN_CONNECTIONS.add(self)

    @staticmethod
    def _connect(candidates):
        last = None
        for params in candidates:
            credentials = params.credentials.to_wire() if params.credentials is not None else None
            tls = params.ssl_options
            tls_args = {} if tls is None else {"ssl_context": tls.context, "server_hostname": tls.server_hostname}
            for attempt in range(max(1, int(params.connection_attempts or 1))):
                if attempt:
                    time.sleep(params.retry_delay)
                try:
                    rpc = _BrokerSocket(params.host, params.port, client_name=params.client_name,
                                        credentials=credentials,
                                        connect_timeout=params.socket_timeout or 10.0,
                                        expect_server="minibroker", **tls_args)
                    return rpc, params
                except BrokerError as exc:
                    if exc.code == ErrorCode.NOT_AUTHORIZED:
                        raise exceptions.ProbableAuthenticationError(
                            f"ACCESS_REFUSED - {exc.message}") from None
                    if exc.code == "WRONG_SERVER":
                        # pika's error for a peer that does not speak AMQP: no point retrying.
                        raise exceptions.IncompatibleProtocolError(exc.message) from None
                    last = exceptions.AMQPConnectionError(f"{exc.code} - {exc.message}")
                except (OSError, TimeoutError) as exc:
                    last = exceptions.AMQPConnectionError(
                        f"could not connect to {params.host}:{params.port}: {exc}")
        raise last

    # ---- pika's public connection API ----------------------------------------------------
    @property
    def is_open(self) -> bool:
        return not self._closed

    @property
    def is_closed(self) -> bool:
        return self._closed

    basic_nack_supported = consumer_cancel_notify_supported = True
    exchange_exchange_bindings_supported = publisher_confirms_supported = True

    @property
    def server_properties(self) -> dict:
        return self._rpc.server_info or {}

    def channel(self, channel_number=None) -> BlockingChannel:
        self._check_open()
        if channel_number is None:
            # Not a number whose close the server has yet to confirm: deliveries it sent
            # there before the close would land on the new channel.
            channel_number = next(n for n in itertools.count(1)
                                  if n not in self._channels and n not in self._ignored_replies.values())
        elif channel_number in self._channels:
            raise exceptions.InvalidChannelNumber(f"channel {channel_number} is already open")
        ch = BlockingChannel(self, channel_number)
        self._channels[channel_number] = ch
        try:
            self._call(ch, "channel_open", {"ch": channel_number})
        except BaseException:
            self._channels.pop(channel_number, None)
            raise
        return ch

    def process_data_events(self, time_limit=0):
        """Send what is queued, take in what the server sent and run the callbacks it calls for.

        Returns as soon as there was something to dispatch, or when `time_limit` seconds have
        passed (0: do not wait; None: wait until there is something).
        """
        self._check_open()
        deadline = None if time_limit is None else time.monotonic() + time_limit
        while not self._has_ready():
            if deadline is None:
                self._pump(None)
                continue
            remaining = deadline - time.monotonic()
            self._pump(max(remaining, 0))
            if remaining <= 0:
                break
        self._dispatch()

    def sleep(self, duration):
        """Wait `duration` seconds while processing events (pika's safe replacement for time.sleep)."""
        self._check_open()
        deadline = time.monotonic() + duration
        while True:
            remaining = deadline - time.monotonic()
            self.process_data_events(max(remaining, 0))
            if remaining <= 0:
                return

    def add_callback_threadsafe(self, callback):
        """The one method another thread may call: run `callback()` on the connection's thread."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        if self._closed:
            raise exceptions.ConnectionWrongStateError("BlockingConnection.add_callback_threadsafe() called on closed or closing connection.")
        self._threadsafe.append(callback)
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the wake-up socket is full: the loop is already due to wake

    def call_later(self, delay, callback):
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        seq = next(self._timer_seq)
        entry = [time.monotonic() + delay, seq, callback]
        self._timer_index[seq] = entry
        heapq.heappush(self._timers, entry)
        return seq

    def remove_timeout(self, timeout_id):
        entry = self._timer_index.pop(timeout_id, None)
        if entry is not None:
            entry[2] = None

    def add_on_connection_blocked_callback(self, callback):
        self.blocked_callbacks.append(callback)  # the server never blocks a connection this way

    def add_on_connection_unblocked_callback(self, callback):
        pass

    def close(self, reply_code=200, reply_text="Normal shutdown"):
        if self._closed:
            raise exceptions.ConnectionWrongStateError("BlockingConnection.close(%s, %r) called on closed connection." % (reply_code, reply_text))
        try:
            self._flush_output()  # publishes still held back go out before anything closes
        except (OSError, exceptions.AMQPError):
            pass
        for ch in list(self._channels.values()):
            ch._mark_closed(exceptions.ChannelClosedByClient(reply_code, reply_text))
        try:
            # Half-close and read to the end: the server then has read (and acted on) every
            # publish and ack we sent before it closes its side; an abrupt close with unread
            # deliveries in our buffer would reset the connection and could lose them.
            self._sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + 2.0
            self._selector.unregister(self._wake_r)
            while time.monotonic() < deadline:
                if not self._selector.select(max(deadline - time.monotonic(), 0)) or not self._sock.recv(1 << 20):
                    break
        except (OSError, exceptions.AMQPError):
            pass
        self._teardown()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, value, traceback):
        if not self._closed:
            self.close()

    # ---- the I/O loop --------------------------------------------------------------------
    def _check_open(self):
        if self._closed:
            exc, self._close_exc = self._close_exc, None
            if exc is not None:
                raise exc
            raise exceptions.ConnectionWrongStateError("connection is closed")

    def _teardown(self):
        self._closed = True
        self._output_waiting.set()  # the flusher wakes, sees the connection closed and ends
        _OPEN_CONNECTIONS.discard(self)
        self._rpc.closed = True
        try:
            self._selector.close()
        except (OSError, ValueError):
            pass
        for s in (self._sock, self._wake_r, self._wake_w):
            try:
                s.close()
            except OSError:
                pass
        for ch in list(self._channels.values()):
            ch._mark_closed(exceptions.ChannelClosedByClient(200, "connection closed"))
        self._channels.clear()

    def _lost(self, detail: str):
        """The socket died under us: close everything and return the exception to raise."""
        if self._fatal_error is not None:
            exc = self._fatal_error
        else:
            exc = exceptions.StreamLostError(f"Stream connection lost: {detail}")
        if not self._closed:
            self._teardown()
        self._close_exc = None
        return exc

    def _send(self, channel, op: str, args: dict, want_reply: bool) -> int:
        if self._closed:
            self._check_open()
        if channel is not None and channel._pub_buf and op != "publish_batch":
            channel._materialize()  # keep this channel's requests in the order they were made
        if not want_reply:
            self._last_noreply_channel = channel
        try:
            if op == "publish_batch" and not want_reply:
                # Written now from a buffer the connection keeps (RpcConnection.send_now): a
                # batch is a few hundred KiB, as fresh objects a page fault per 4 KiB each time.
                self._rpc.send_now(op, args)
                return 0
            rid = self._rpc.send(op, args, want_reply)
            if not want_reply:
                self._output_buffered()  # an id-0 request (ack, nack...) waits for a flush
            return rid
        except BrokerError as exc:
            if exc.code == "CONNECTION_CLOSED":
                raise self._lost(exc.message) from None
            if exc.code == ErrorCode.FRAME_TOO_LARGE:
                raise exceptions.BodyTooLongError(exc.message) from None
            raise

    def _call(self, channel, op: str, args: dict):
        """Send a request and wait for its reply; an error reply closes `channel` (pika's way)."""
        rid = self._send(channel, op, args, True)
        replies = self._rpc.replies
        while rid not in replies:
            self._pump(None)
        reply = replies.pop(rid)
        if type(reply) is ErrorReply:
            if reply.code in _CONNECTION_FATAL:
                raise exceptions.ConnectionClosedByBroker(exceptions.reply_code_for(reply.code),
                                                          f"{reply.code} - {reply.message}")
            exc = exceptions.channel_error(reply.code, reply.message)
            if channel is not None:
                channel._on_broker_error(exc, raise_later=False)
            raise exc
        return reply.result

    def _flush_output(self):
        with self._lock:
            if self._dirty:
                dirty = list(self._dirty)
                self._dirty.clear()
                for ch in dirty:
                    ch._materialize()
            if self._rpc._out:
                try:
                    self._rpc.flush()
                except BrokerError as exc:
                    raise self._lost(exc.message) from None

    def _output_buffered(self):
        """Output was left in a buffer: make sure the flusher writes it within flush_delay.

        Called after buffering (and after registering the channel in _dirty). The flusher
        clears the event before it looks for output, so a buffering that saw the event still
        set is seen by the flusher's look."""
        if not self._output_waiting.is_set():
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flusher_loop, name="minibroker-pika-flusher",
                                                 daemon=True)
                self._flusher.start()
            self._output_waiting.set()

    def _flusher_loop(self):
        """pika writes each publish and ack before the call returns; we batch them (one frame per
        thousand publishes) and bound the wait instead: what the program buffered is written at
        most `flush_delay` after it was buffered, even while the program sleeps, waits on
        something else or computes. The thread holds the output lock only to write; it never
        reads the socket or runs callbacks (the program's thread does, as in pika)."""
        waiting = self._output_waiting
        delay = self._flush_delay
        lock = self._lock
        rpc = self._rpc
        while not self._closed:
            waiting.wait()
            # While the program keeps producing output, stay awake and write every `delay`
            # without being signalled again: each wake-up costs a GIL hand-over, and the
            # program's thread then skips the signal too (the event stays set).
            while not self._closed:
                time.sleep(delay)  # let a burst gather into one frame (0: just yield the GIL)
                with lock:
                    if self._closed:
                        return
                    # Clear, then look: a publish (which takes no lock) registers its channel
                    # in _dirty before it tests the event, so one of the two sees the other.
                    waiting.clear()
                    if not self._dirty and not rpc._out:
                        break  # idle: sleep until output is buffered again
                    waiting.set()
                    try:
                        # Publishes younger than half the delay are left to gather (a busy
                        # publisher writes its own at flush_delay, see basic_publish).
                        now = time.monotonic()
                        for ch in list(self._dirty):
                            if ch._core.ack_upto or not ch._pub_buf or now - ch._buf_since >= delay / 2:
                                self._dirty.discard(ch)
                                ch._materialize()
                        if rpc._out:
                            rpc.flush()
                    except Exception:
                        # The socket is gone (or a request could not be encoded): the program's
                        # thread finds out on its next call, as without this thread.
                        return

    def _pump(self, timeout):
        """Flush, wait up to `timeout` (None: forever) for input or a wake-up, read and route it."""
        self._check_open()
        self._flush_output()
        if self._timers:
            due = self._timers[0][0] - time.monotonic()
            timeout = max(due, 0) if timeout is None else max(min(timeout, due), 0)
        if self._threadsafe:
            timeout = 0
        try:
            ready = self._selector.select(timeout)
        except (OSError, ValueError) as exc:
            raise self._lost(str(exc)) from None
        readable = False
        for key, _ in ready:
            if key.data == _WAKE:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except (BlockingIOError, OSError):
                    pass
            else:
                readable = True
        if readable:
            self._read()

    def _poll_nowait(self):
        """Take in whatever the server already sent, without waiting (used by a publish loop)."""
        for key, _ in self._selector.select(0):
            if key.data == _SOCKET:
                self._read()
                return

    def _read(self):
        try:
            self._rpc.read(None)
        except BrokerError as exc:
            raise self._lost(exc.message) from None
        self._route()

    def _route(self):
        rpc = self._rpc
        pushes = rpc.pushes
        channels = self._channels
        while pushes:
            # The channel's sans-IO state takes the push and says what it makes: a confirm
            # only settles records there (the publish waiting on one sees it settled).
            ch, happened = route_push(channels, *pushes.popleft())
            kind = type(happened)
            if kind is Deliveries:
                self._events.append((ch._dispatch_batch, happened.batch))
            elif kind is Returned:
                ch._on_return(happened)
            elif kind is ConsumerCancelled:
                ch._on_broker_cancel(happened.consumer_tag)
        errors = rpc.async_errors
        while errors:
            error = errors.popleft()
            if error.code in _CONNECTION_FATAL:
                self._fatal_error = exceptions.ConnectionClosedByBroker(
                    exceptions.reply_code_for(error.code), f"{error.code} - {error.message}")
                continue
            ch = channel_for_error(channels, error.channel, self._last_noreply_channel)
            if ch is not None:
                ch._on_broker_error(exceptions.channel_error(error.code, error.message), raise_later=True)
        if self._ignored_replies:
            for rid in list(self._ignored_replies):
                if rid in rpc.replies:
                    del rpc.replies[rid]
                    del self._ignored_replies[rid]

    def _has_ready(self) -> bool:
        return bool(self._events or self._state_changed or self._threadsafe or (self._timers and self._timers[0][0] <= time.monotonic()))

    def _dispatch(self):
        """Run the user callbacks that are due: thread-safe callbacks, timers, then deliveries."""
        self._dispatch_depth += 1
        self._state_changed = False
        try:
            threadsafe = self._threadsafe
            while threadsafe:
                threadsafe.popleft()()
            timers = self._timers
            now = time.monotonic()
            while timers and timers[0][0] <= now:
                _, seq, callback = heapq.heappop(timers)
                self._timer_index.pop(seq, None)
                if callback is not None:
                    callback()
            events = self._events
            while events:
                fn, arg = events.popleft()
                fn(arg)
                if self._closed:
                    break
        finally:
            self._dispatch_depth -= 1

    def _forget_channel(self, channel):
        if self._channels.get(channel.channel_number) is channel:
            del self._channels[channel.channel_number]
        with self._lock:
            self._dirty.discard(channel)

    def __repr__(self):
        state = "CLOSED" if self._closed else "OPEN"
        return f"<BlockingConnection {state} {self._params.host}:{self._params.port}>"
