"""The asyncio server both brokers build on.

`BrokerServer` listens, creates a `ClientConnection` per client, answers the ops every server
has (`hello`, `ping`, `server_info`) and dispatches the rest to methods its subclass marks
with `@op("name")`. A handler gets the connection and the request's args and returns the
result (sent as the response), a coroutine (awaited in a task, then sent), or `DEFERRED`
when it will answer by itself later. Raising `BrokerError` sends that error; any other
exception is logged and answered with INTERNAL_ERROR, and the connection lives on.
"""

import asyncio
import itertools
import logging
import os
import time

from clients.protocol.errors import BrokerError, ErrorCode
from clients.protocol.framing import DEFAULT_MAX_FRAME
from clients.protocol.handshake import PROTOCOL_VERSION, check_hello

from .args import ensure_map
from .auth import Authenticator, NotAuthorized, Principal
from .connection import ClientConnection
from .listener import Listener
from .schema import Int, Map, Schema, Str, Value
from .users import UserStore

log = logging.getLogger("serverbase.server")

DEFERRED = object()
DEFAULT_HANDSHAKE_TIMEOUT = 10.0   # seconds a new connection has to complete its hello
DEFAULT_HEARTBEAT = 60             # the most seconds between heartbeats the server agrees to
DEFAULT_MAX_PARTIAL_BYTES = 256 << 20   # unfinished frames held across all connections


def op(name: str, schema: dict | None = None, on_invalid: str | None = None):
    """Mark a method of a BrokerServer subclass as the handler of wire op `name`.

    `schema` ({arg: Spec}, see schema.py) is checked before the handler runs, which then gets the
    validated args. `on_invalid` names a method called with (conn, raw args) when they fail the
    check, before the BAD_REQUEST goes out (publish uses it to nack the message's sequence
    number). An op without a schema gets its args as sent (a map) and checks them itself.
    """
    compiled = Schema(schema) if schema is not None else None

    def mark(fn):
        fn._wire_op = name
        fn._wire_schema = compiled
        fn._wire_on_invalid = on_invalid
        return fn
    return mark


class BrokerServer:
    name = "broker"
    version = "0.1.0"
    features: tuple = ()

    def __init__(self, host: str = "127.0.0.1", port: int = 0, data_dir: str | None = None,
                 max_frame: int = DEFAULT_MAX_FRAME, credentials: dict | None = None,
                 handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT, heartbeat: int = DEFAULT_HEARTBEAT,
                 max_partial_bytes: int = DEFAULT_MAX_PARTIAL_BYTES, auth: bool = False, tls=None):
        self.host = host
        self.max_partial_bytes = max_partial_bytes   # bound on self.partial_bytes (ClientConnection.data_received)
        self.partial_bytes = 0
        self.handshake_timeout = handshake_timeout   # 0: never close a connection for a missing hello
        self.heartbeat = heartbeat                   # 0: refuse protocol heartbeats
        self.port = port
        self.data_dir = data_dir
        self.max_frame = max_frame
        self.credentials = credentials  # {username: password} from --user: may do everything
        self.configure_security(auth, tls)
        self.connections: dict[int, ClientConnection] = {}
        self.started_at = time.monotonic()
        self._conn_ids = itertools.count(1)
        self.listeners: list[Listener] = []
        self._periodic: list[asyncio.Task] = []
        self._stopped = asyncio.Event()
        self._ops = self._collect_ops()
        # Figures for the `stats` op and /metrics (serverbase/metrics.py); plain ints.
        self.bytes_in = self.bytes_out = self.connections_opened = 0
        self.metrics_port: int | None = None        # --metrics-port: serve /metrics over HTTP

    # ---- construction from the command line ---------------------------------------------
    # door name -> default port of its TLS twin (serverbase/tls.py); subclasses add their doors.
    tls_default_ports = {"": 0}

    @classmethod
    def add_arguments(cls, parser) -> None:
        """Subclasses add their own flags (fsync policy, defaults for topics...)."""

    def configure_security(self, auth: bool = False, tls=None) -> None:
        """Access control and TLS (docs/security.md): `--auth` checks the user store in the data
        directory, `--user` the users given; `tls` (a `serverbase.tls.TlsSettings`) opens a
        TLS twin of every front door."""
        self.authenticator = Authenticator(
            enabled=bool(auth or self.credentials), static=self.credentials,
            store=UserStore(self.data_dir) if auth and self.data_dir else None,
            compile_permissions=self.compile_permissions)
        self.tls = tls

    @classmethod
    def from_args(cls, args):
        from .cli import parse_credentials
        return cls(host=args.host, port=args.port, data_dir=args.data_dir,
                   max_frame=args.max_frame, credentials=parse_credentials(args.user),
                   handshake_timeout=args.handshake_timeout, heartbeat=args.heartbeat,
                   max_partial_bytes=args.max_partial_bytes)

    # ---- ops table ---------------------------------------------------------------------
    def _collect_ops(self) -> dict:
        table = {}
        for klass in reversed(type(self).__mro__):
            for attr in vars(klass).values():
                name = getattr(attr, "_wire_op", None)
                if name is not None:
                    on_invalid = getattr(attr, "_wire_on_invalid", None)
                    table[name] = (getattr(self, attr.__name__), getattr(attr, "_wire_schema", None),
                                   getattr(self, on_invalid) if on_invalid else None)
        return table

    @property
    def ops(self) -> list[str]:
        return sorted(self._ops)

    def dispatch(self, conn: ClientConnection, rid: int, op_name: str, args) -> None:
        """Run one request (its envelope already checked: `ClientConnection._run`)."""
        if op_name == "hello":
            self._hello(conn, rid, args)
            return
        entry = self._ops.get(op_name)
        if entry is None:
            conn.send_error(rid, ErrorCode.UNKNOWN_OP,
                            f"{self.name} has no op '{op_name[:100]}'; it knows: {', '.join(['hello'] + self.ops)}")
            return
        handler, schema, on_invalid = entry
        raw = args
        try:
            if schema is None:
                if args.__class__ is not dict:
                    ensure_map(args)   # raises BAD_REQUEST
            else:
                try:
                    args = schema.validate(raw)
                except BrokerError:
                    if on_invalid is not None:
                        on_invalid(conn, raw)
                    raise
            conn.request_id = rid   # for a handler that answers later (DEFERRED)
            if conn.access is not None and self.authorize(conn, op_name, args) is DEFERRED:
                return
            result = handler(conn, args)
        except BrokerError as exc:
            # An id-0 request's error answers no id: name its channel so the client can route it.
            ch = raw.get("ch") if rid == 0 and type(raw) is dict else None
            conn.send_error(rid, exc.code, exc.message, ch if type(ch) is int else None)
            return
        except Exception as exc:
            log.exception("op %r failed on connection %s", op_name, conn.id)
            conn.send_error(rid, ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
            return
        if result is DEFERRED:
            return
        # Most ops answer a map: no need to ask asyncio (an isinstance against an ABC) about it.
        if result.__class__ is not dict and asyncio.iscoroutine(result):
            conn.run_async(rid, result)
        elif rid:
            conn.send_response(rid, result)

    # ---- ops every server has ----------------------------------------------------------
    HELLO_SCHEMA = Schema({
        "protocol": Value(),   # any value: check_hello answers UNSUPPORTED_VERSION for one it does not speak
        "client": Str(max_bytes=1024, default=""),
        "credentials": Map({"username": Str(max_bytes=1024, default=None),
                            "password": Str(max_bytes=4096, default=None)}, default=None),
        "max_frame": Int(min=1024, max=(1 << 32) - 1, default=None),
        "heartbeat": Int(min=0, max=3600, default=0),
    })

    def _hello(self, conn, rid: int, raw_args) -> None:
        """The handshake. A refused hello closes the connection after the error is sent.

        With authentication on, the password check (a slow hash, and the per-address backoff)
        runs in a task; the connection holds the requests that arrive meanwhile and runs them,
        in order, once the hello is answered.
        """
        try:
            if conn.handshake_done:
                raise BrokerError(ErrorCode.BAD_REQUEST, "hello was already sent on this connection")
            args = self.HELLO_SCHEMA.validate(raw_args)
            _, client, credentials, client_max = check_hello(args)
        except BrokerError as exc:
            conn.send_error(rid, exc.code, exc.message)
            if not conn.handshake_done:
                conn.close()
            return
        hello = (client, client_max, args.get("heartbeat", 0))
        credentials = credentials or {}
        if not self.authenticator.enabled:
            principal = self.authenticator.anonymous(credentials.get("username"))
            self._hello_accept(conn, rid, hello, principal)
            return
        conn.hold()
        conn.spawn(self._hello_login(conn, rid, hello, credentials))

    async def _hello_login(self, conn, rid, hello, credentials) -> None:
        try:
            principal = await self.authenticator.login(credentials.get("username"), credentials.get("password"),
                                                       conn.peer)
        except BrokerError as exc:
            conn.send_error(rid, exc.code, exc.message)
            conn.close()
            return
        self._hello_accept(conn, rid, hello, principal)
        conn.release()

    def _hello_accept(self, conn, rid, hello, principal: Principal) -> None:
        client, client_max, asked = hello
        conn.user = principal.name
        conn.access = principal.access
        conn.client_name = client
        conn.handshake_done = True
        self.on_logged_in(conn)
        conn.heartbeat = min(asked, self.heartbeat) if asked and self.heartbeat else 0
        if client_max is not None:
            # Batches of pushes must fit in what this client accepts.
            conn.send_limit = min(conn.send_limit, client_max)
        conn.send_response(rid, {
            "server": self.name,
            "version": self.version,
            "protocol": PROTOCOL_VERSION,
            # What we accept from this client; a client may announce less for what it accepts.
            "max_frame": self.max_frame,
            "features": list(self.features),
            "connection_id": conn.id,
            "heartbeat": conn.heartbeat,
        })

    # ---- access control (docs/security.md) ----------------------------------------------
    def compile_permissions(self, user: str, raw):
        """Turn a user's stored permissions into what `authorize` checks; brokers override."""
        return None

    def authorize(self, conn, op: str, args: dict):
        """Raise NotAuthorized if the connection's user may not run `op` with `args`. Called
        only for users with restricted access (`conn.access` is not None). May return
        DEFERRED when it answered the request itself (a batch partly refused)."""
        raise NotAuthorized(f"{self.name} has no permission model; user {conn.user!r} may not run {op!r}")

    @op("ping", schema={"echo": Value(default=None)})
    def op_ping(self, conn, args):
        return {"pong": True, "echo": args.get("echo")}

    @op("server_info", schema={})
    def op_server_info(self, conn, args):
        info = {
            "server": self.name,
            "version": self.version,
            "protocol": PROTOCOL_VERSION,
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "connections": len(self.connections),
            "max_frame": self.max_frame,
            "features": list(self.features),
            "ops": self.ops,
            "pid": os.getpid(),
        }
        info.update(self.extra_info())
        return info

    def extra_info(self) -> dict:
        """Subclasses add their own figures (queues, topics, messages) to server_info."""
        return {}

    # ---- metrics (serverbase/metrics.py) -------------------------------------------------
    @op("stats", schema={})
    def op_stats(self, conn, args):
        from .metrics import stats_rows
        return {"server": self.name, "metrics": stats_rows(self.metric_samples())}

    def metric_samples(self) -> list:
        from .metrics import Sample
        from .process import resident_memory
        return [
            Sample("connections", "gauge", "client connections open now", len(self.connections)),
            Sample("connections_opened_total", "counter", "client connections accepted since start",
                   self.connections_opened),
            Sample("received_bytes_total", "counter", "bytes read from clients (every door)", self.bytes_in),
            Sample("sent_bytes_total", "counter", "bytes written to clients (every door)", self.bytes_out),
            Sample("resident_memory_bytes", "gauge", "resident memory of the server process", resident_memory()),
            Sample("uptime_seconds", "gauge", "seconds since the server started",
                   round(time.monotonic() - self.started_at, 3)),
        ] + self.extra_metrics()

    def extra_metrics(self) -> list:
        """Subclasses add their own `Sample`s (published, delivered, fsyncs...)."""
        return []

    def metrics_listener(self) -> Listener | None:
        if self.metrics_port is None:
            return None
        from .metrics import MetricsHttp
        return Listener("metrics", "--metrics-port", self.metrics_port, lambda: MetricsHttp(self), host=self.host)

    # ---- connection lifecycle hooks ----------------------------------------------------
    def next_connection_id(self) -> int:
        """Connection ids are unique across every front door of this server."""
        return next(self._conn_ids)

    def track(self, conn) -> None:
        """Count `conn` among the server's connections and close it on shutdown.

        Every front door's protocol objects call this when their connection is made and
        `untrack` when it is lost; `conn` needs an `id` (from `next_connection_id`) and a
        `close()` method.
        """
        self.connections[conn.id] = conn

    def untrack(self, conn) -> None:
        self.connections.pop(conn.id, None)

    def _connection_opened(self, conn):
        self.track(conn)
        self.connections_opened += 1
        log.debug("connection %s opened from %s", conn.id, conn.peer)
        self.on_connection_opened(conn)

    def _connection_closed(self, conn):
        self.untrack(conn)
        log.debug("connection %s from %s closed (client %r, user %r)", conn.id, conn.peer, conn.client_name,
                  conn.user)
        try:
            self.on_connection_closed(conn)
        except Exception:
            log.exception("cleanup of connection %s failed", conn.id)

    def on_connection_opened(self, conn):
        pass

    def on_connection_closed(self, conn):
        pass

    def on_logged_in(self, conn):
        """The hello was accepted: `conn.user` is the logged-in user (with auth off, the name the
        client gave, or None)."""

    # ---- lifecycle ---------------------------------------------------------------------
    def extra_listeners(self) -> list[Listener]:
        """Subclasses return their other front doors (AMQP, Kafka); called once by `start`."""
        return []

    def listener(self, name: str) -> Listener | None:
        """The open listener called `name` ("" is the msgpack one), or None."""
        return next((l for l in self.listeners if l.name == name), None)

    async def start(self):
        """Open storage (subclass hook `open`), then every listener. Sets `self.port` if it was 0.

        If one listener cannot open (its port is taken), those already open are closed and
        the `ListenerError` naming its flag propagates.
        """
        if self.data_dir:
            os.makedirs(self.data_dir, exist_ok=True)
        if self.authenticator.store is not None:
            self.authenticator.store.load()   # a damaged user file stops the start, with its path
        self.authenticator.check_ready()
        await self.open()
        native = Listener("", "--port", self.port,
                          lambda: ClientConnection(self, self.next_connection_id()), host=self.host)
        wanted = self._with_tls_twins([native] + self.extra_listeners())
        if self.metrics_port is not None:
            wanted.append(self.metrics_listener())
        try:
            for listener in wanted:
                await listener.open()
                self.listeners.append(listener)
        except OSError:
            for listener in self.listeners:
                listener.close()
            self.listeners = []
            for task in self._periodic:
                task.cancel()
            await self.close()
            raise
        self.port = native.port if any(l is native for l in self.listeners) else self.listeners[0].port
        self.started_at = time.monotonic()
        if self.handshake_timeout or self.heartbeat:
            periods = [p for p in (self.handshake_timeout, self.heartbeat) if p]
            self.every(min(1.0, min(periods) / 4), self.sweep_connections)
        return self

    def _with_tls_twins(self, doors: list) -> list:
        """Each door, then its TLS twin where `self.tls` gives it a port (serverbase/tls.py)."""
        if self.tls is None:
            return doors
        from .tls import TLS_DOORS
        twins = []
        for door in doors:
            port = self.tls.ports.get(door.name)
            if port is None:
                continue
            name, flag = TLS_DOORS.get(door.name, (f"{door.name}-tls", f"--{door.name}-tls-port"))
            twins.append(Listener(name, flag, port, door.protocol_factory, host=door.host, ssl=self.tls.context))
        return (doors if self.tls.plaintext else []) + twins

    def sweep_connections(self) -> None:
        """Close connections that never said hello in time, or whose peer missed two heartbeats;
        send a heartbeat to the clients that agreed to them and heard nothing for one period.

        One pass over the connections, a few times per second: cheap next to a timer per
        connection, and 2,000 silent connections cost one loop.
        """
        now = time.monotonic()
        limit = self.handshake_timeout
        for conn in list(self.connections.values()):
            if conn.closed or type(conn) is not ClientConnection:
                continue     # other front doors (AMQP, Kafka) keep their protocol's own timers
            if not conn.handshake_done:
                if limit and now - conn.opened_at > limit:
                    log.info("closing connection %s from %s: no hello within %s s", conn.id, conn.peer, limit)
                    conn.send_error(0, ErrorCode.TIMEOUT, f"no hello within {limit} s of connecting; closing")
                    conn.close()
                continue
            beat = conn.heartbeat
            if not beat:
                continue
            transport = conn.transport
            if transport is not None and hasattr(transport, "is_reading") and not transport.is_reading():
                conn.last_received = now   # we stopped reading (backpressure, memory alarm): not the peer's silence
            if now - conn.last_received > 2 * beat:
                log.info("closing connection %s from %s: nothing received for %.0f s (heartbeat %s s)",
                         conn.id, conn.peer, now - conn.last_received, beat)
                conn.send_error(0, ErrorCode.TIMEOUT, f"missed heartbeats: nothing received for 2 x {beat} s; closing")
                conn.close()
            elif now - conn.last_sent > beat:
                conn.push("heartbeat", None)
                conn.flush()
                conn.last_sent = now

    def every(self, seconds: float, fn) -> None:
        """Run `fn()` every `seconds` until the server stops (TTL sweeps, retention...)."""
        async def loop_forever():
            while True:
                await asyncio.sleep(seconds)
                try:
                    result = fn()
                    if asyncio.iscoroutine(result):
                        await result
                except Exception:
                    log.exception("periodic task %s failed", getattr(fn, "__name__", fn))
        self._periodic.append(asyncio.get_running_loop().create_task(loop_forever()))

    async def stop(self):
        """Stop accepting, close every connection, then let the subclass flush and close files."""
        for listener in self.listeners:
            listener.close()
        for task in self._periodic:
            task.cancel()
        for conn in list(self.connections.values()):
            conn.close()
        for listener in self.listeners:
            await listener.wait_closed()
        self.listeners = []
        # connection_lost runs on a later loop turn; the broker's cleanup for each connection
        # (requeue, exclusive queues) must happen before its storage closes.
        deadline = time.monotonic() + 5.0
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        await self.close()
        self.authenticator.close()
        self._stopped.set()

    async def wait_stopped(self):
        await self._stopped.wait()

    # ---- subclass storage hooks --------------------------------------------------------
    async def open(self):
        """Open or recover storage under `self.data_dir`."""

    async def close(self):
        """Flush and close storage."""
