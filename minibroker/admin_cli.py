"""`minibroker list|declare|delete|purge|bind|unbind|publish|get`: rabbitmqctl-style admin commands.

They talk to a running minibroker over the msgpack protocol: `list` asks the server's `list` op
(rows built by `minibroker/introspect.py`), the others send the same ops a client would
(`queue_declare`, `exchange_delete`, `publish`, `get`...). Output, `--server`, `--json` and the
one-line failures are shared with minilog's commands in `serverbase/admin_cli.py`.
"""

from __future__ import annotations

import argparse
import json
import sys

from serverbase.admin_cli import CommandError, add_server_arguments, call, connect, emit, run

from .introspect import KINDS
from .server import DEFAULT_PORT

# The columns shown by default, in rabbitmqctl's order; --json gives every field.
COLUMNS = {
    "queues": ["name", "messages_ready", "messages_unacknowledged", "consumers", "consumer_utilisation",
               "publish_rate", "deliver_rate", "ack_rate", "memory", "durable", "auto_delete", "exclusive"],
    "exchanges": ["name", "type", "durable", "auto_delete", "internal", "bindings"],
    "bindings": ["source", "destination", "destination_kind", "routing_key", "arguments"],
    "consumers": ["queue", "connection", "channel", "consumer_tag", "ack_required", "prefetch_count",
                  "unacknowledged", "active", "exclusive"],
    "channels": ["connection", "number", "consumers", "messages_unacknowledged", "prefetch_count",
                 "global_prefetch_count", "confirm"],
    "connections": ["id", "peer", "client", "user", "channels", "state", "unacknowledged"],
}


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"minibroker {prog}", description=description)
    add_server_arguments(parser, "minibroker", DEFAULT_PORT)
    return parser


def _json_map(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _one_shot(args, op: str, op_args: dict):
    with connect(args, f"minibroker {op}") as conn:
        return call(conn, op, op_args)


def stats_main(argv=None) -> int:
    from serverbase.admin_cli import stats_command
    return stats_command("minibroker", DEFAULT_PORT, argv)


# ---- list -----------------------------------------------------------------------------------

def list_main(argv=None) -> int:
    parser = _parser("list", "List what the broker holds, with rabbitmqctl's columns.")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--columns", help="comma-separated columns to show (--json shows all)")
    args = parser.parse_args(argv)

    def handler(args):
        rows = _one_shot(args, "list", {"kind": args.kind})["rows"]
        columns = args.columns.split(",") if args.columns else COLUMNS[args.kind]
        emit(args, rows, columns)
    return run("minibroker list", handler, args)


# ---- declare / delete / purge ------------------------------------------------------------------

def declare_main(argv=None) -> int:
    parser = _parser("declare", "Declare a queue or an exchange (idempotent, as queue.declare).")
    parser.add_argument("what", choices=["queue", "exchange"])
    parser.add_argument("name")
    parser.add_argument("--type", default="direct", help="exchange type (default direct)")
    parser.add_argument("--durable", action="store_true")
    parser.add_argument("--auto-delete", action="store_true")
    parser.add_argument("--arguments", type=_json_map, default={}, help='a JSON object, e.g. \'{"x-max-length": 10}\'')
    args = parser.parse_args(argv)

    def handler(args):
        if args.what == "queue":
            result = _one_shot(args, "queue_declare", {"queue": args.name, "durable": args.durable,
                                                       "auto_delete": args.auto_delete, "arguments": args.arguments})
            emit(args, {"queue": result["queue"], "messages": result["message_count"],
                        "consumers": result["consumer_count"]})
        else:
            _one_shot(args, "exchange_declare", {"exchange": args.name, "type": args.type, "durable": args.durable,
                                                 "auto_delete": args.auto_delete, "arguments": args.arguments})
            emit(args, {"exchange": args.name, "type": args.type})
    return run("minibroker declare", handler, args)


def delete_main(argv=None) -> int:
    parser = _parser("delete", "Delete a queue (dropping its messages) or an exchange.")
    parser.add_argument("what", choices=["queue", "exchange"])
    parser.add_argument("name")
    parser.add_argument("--if-unused", action="store_true", help="refuse if it has consumers (queue) or bindings")
    parser.add_argument("--if-empty", action="store_true", help="refuse if the queue holds messages")
    args = parser.parse_args(argv)

    def handler(args):
        if args.what == "queue":
            result = _one_shot(args, "queue_delete", {"queue": args.name, "if_unused": args.if_unused,
                                                      "if_empty": args.if_empty})
            emit(args, {"queue": args.name, "deleted_messages": result["message_count"]})
        else:
            _one_shot(args, "exchange_delete", {"exchange": args.name, "if_unused": args.if_unused})
            emit(args, {"exchange": args.name, "deleted": True})
    return run("minibroker delete", handler, args)


def purge_main(argv=None) -> int:
    parser = _parser("purge", "Drop every ready message of a queue.")
    parser.add_argument("queue")
    args = parser.parse_args(argv)

    def handler(args):
        result = _one_shot(args, "queue_purge", {"queue": args.queue})
        emit(args, {"queue": args.queue, "purged": result["message_count"]})
    return run("minibroker purge", handler, args)


# ---- bind / unbind ------------------------------------------------------------------------------

def _binding_main(argv, verb: str) -> int:
    parser = _parser(verb, f"{verb.capitalize()} a queue (or, with --destination-type exchange, an exchange) "
                           f"to an exchange.")
    parser.add_argument("source", help="the exchange")
    parser.add_argument("destination", help="the queue (or exchange)")
    parser.add_argument("--routing-key", default="")
    parser.add_argument("--destination-type", choices=["queue", "exchange"], default="queue")
    parser.add_argument("--arguments", type=_json_map, default={})
    args = parser.parse_args(argv)

    def handler(args):
        if args.destination_type == "queue":
            _one_shot(args, f"queue_{verb}", {"queue": args.destination, "exchange": args.source,
                                              "routing_key": args.routing_key, "arguments": args.arguments})
        else:
            _one_shot(args, f"exchange_{verb}", {"destination": args.destination, "source": args.source,
                                                 "routing_key": args.routing_key, "arguments": args.arguments})
        emit(args, {"source": args.source, "destination": args.destination, "routing_key": args.routing_key,
                    "result": "bound" if verb == "bind" else "unbound"})
    return run(f"minibroker {verb}", handler, args)


def bind_main(argv=None) -> int:
    return _binding_main(argv, "bind")


def unbind_main(argv=None) -> int:
    return _binding_main(argv, "unbind")


# ---- publish / get --------------------------------------------------------------------------------

def publish_main(argv=None) -> int:
    parser = _parser("publish", "Publish messages: --body, or one message per line of stdin. Waits for the "
                                "broker's confirms, so a zero exit means every message was taken.")
    parser.add_argument("--exchange", default="", help="default: the default exchange ''")
    parser.add_argument("--routing-key", required=True)
    parser.add_argument("--body", help="the message body (default: read lines from stdin)")
    parser.add_argument("--persistent", action="store_true", help="delivery_mode 2")
    parser.add_argument("--properties", type=_json_map, default={}, help="a JSON object of message properties")
    parser.add_argument("--mandatory", action="store_true", help="fail if no queue takes the message")
    args = parser.parse_args(argv)

    def handler(args):
        bodies = [args.body.encode()] if args.body is not None else \
            [line.rstrip(b"\n") for line in sys.stdin.buffer]
        props = dict(args.properties)
        if args.persistent:
            props["delivery_mode"] = 2
        with connect(args, "minibroker publish") as conn:
            call(conn, "confirm_select", {"ch": 1})
            for body in bodies:
                call(conn, "publish", {"ch": 1, "exchange": args.exchange, "routing_key": args.routing_key,
                                       "body": body, "properties": props or None, "mandatory": args.mandatory})
            acked, nacked, returned = _wait_confirms(conn, len(bodies), args.timeout)
        emit(args, {"published": len(bodies), "confirmed": acked, "nacked": nacked, "returned": returned})
        if nacked or returned or acked < len(bodies):
            raise CommandError(f"{nacked} message(s) nacked, {returned} returned unroutable, "
                               f"{len(bodies) - acked - nacked} unconfirmed")
    return run("minibroker publish", handler, args)


def _wait_confirms(conn, count: int, timeout: float) -> tuple[int, int, int]:
    """Read confirm and return pushes until all `count` publishes are settled."""
    import time
    acked: set = set()
    nacked: set = set()
    returned = 0
    deadline = time.monotonic() + timeout
    while len(acked) + len(nacked) < count and time.monotonic() < deadline:
        while conn.pushes:
            push = conn.pushes.popleft()
            event, body = push.event, push.body
            if event == "confirm":
                _ch, ack, seq, multiple = body
                seqs = range(1, seq + 1) if multiple else [seq]
                for s in seqs:
                    if s not in acked and s not in nacked:
                        (acked if ack else nacked).add(s)
            elif event == "return":
                returned += 1
        if len(acked) + len(nacked) < count:
            conn.read(min(0.2, max(deadline - time.monotonic(), 0)))
    return len(acked), len(nacked), returned


def get_main(argv=None) -> int:
    parser = _parser("get", "Take messages from a queue, as basic.get (rabbitmqadmin get).")
    parser.add_argument("queue")
    parser.add_argument("--count", type=int, default=1, help="how many messages at most (default 1)")
    parser.add_argument("--ack-mode", choices=["ack", "requeue", "reject"], default="requeue",
                        help="ack: remove them; requeue (default): put them back; reject: dead-letter them")
    args = parser.parse_args(argv)

    def handler(args):
        rows = []
        with connect(args, "minibroker get") as conn:
            for _ in range(max(args.count, 0)):
                msg = call(conn, "get", {"ch": 1, "queue": args.queue})
                if not msg:
                    break
                body = msg.get("body") or b""
                rows.append({"delivery_tag": msg.get("delivery_tag"), "exchange": msg.get("exchange"),
                             "routing_key": msg.get("routing_key"), "redelivered": msg.get("redelivered"),
                             "message_count": msg.get("message_count"),
                             "body": body.decode(errors="replace") if isinstance(body, bytes) else body,
                             "properties": msg.get("properties") or {}})
            if rows:
                last = rows[-1]["delivery_tag"]
                if args.ack_mode == "ack":
                    call(conn, "ack", {"ch": 1, "delivery_tag": last, "multiple": True})
                else:
                    call(conn, "nack", {"ch": 1, "delivery_tag": last, "multiple": True,
                                        "requeue": args.ack_mode == "requeue"})
        emit(args, rows, ["routing_key", "exchange", "message_count", "redelivered", "body", "properties"])
    return run("minibroker get", handler, args)


# ---- trace --------------------------------------------------------------------------------------

def _trace_line(e: dict) -> str:
    kind = e.get("event")
    if kind == "published":
        text = (f"published  conn {e['connection']} ch {e['channel']} -> exchange {e['exchange']!r} "
                f"key {e['routing_key']!r} ({e['size']} B)")
    elif kind == "routed":
        text = f"routed     {e['exchange']!r} {e['routing_key']!r} -> " + ", ".join(
            f"{q['queue']} (via {', '.join(repr(v) for v in q['via'])})" for q in e["queues"])
    elif kind == "delivered":
        who = f"consumer {e['consumer_tag']!r}" if e.get("consumer_tag") else "basic.get"
        text = (f"delivered  {e['queue']} -> conn {e['connection']} ch {e['channel']} {who} tag {e['delivery_tag']}"
                f"{' (redelivered)' if e['redelivered'] else ''}")
    elif kind in ("acked", "nacked", "rejected"):
        extra = "" if "requeue" not in e else (" (requeued)" if e["requeue"] else " (not requeued)")
        text = f"{kind:<10} {e['queue']} conn {e['connection']} ch {e['channel']} tag {e['delivery_tag']}{extra}"
    elif kind == "dead_lettered":
        text = (f"dead-letter {e['queue']} ({e['reason']}) -> exchange {e['dead_letter_exchange']!r} -> "
                f"{', '.join(e['to']) or 'nowhere'}")
    elif kind == "unroutable":
        text = f"unroutable {e['exchange']!r} {e['routing_key']!r}: no binding matched"
    elif kind == "returned":
        text = f"returned   {e['exchange']!r} {e['routing_key']!r} to conn {e['connection']} ({e['reason']})"
    else:
        text = json.dumps(e, default=str)
    if e.get("trace_dropped"):
        text += f"  [{e['trace_dropped']} earlier event(s) dropped: this terminal could not keep up]"
    return text


def trace_main(argv=None) -> int:
    parser = _parser("trace", "Print each message's path as it happens: published, routed (through which "
                              "bindings), delivered, acked, dead-lettered and why (as RabbitMQ's firehose).")
    parser.add_argument("-c", "--count", type=int, help="exit after this many events")
    parser.add_argument("--for", dest="seconds", type=float, help="exit after this many seconds")
    args = parser.parse_args(argv)

    def handler(args):
        import time
        with connect(args, "minibroker trace") as conn:
            call(conn, "trace", {"on": True})
            print("tracing; Ctrl-C stops", file=sys.stderr, flush=True)
            seen = 0
            deadline = None if args.seconds is None else time.monotonic() + args.seconds
            while args.count is None or seen < args.count:
                while conn.pushes and (args.count is None or seen < args.count):
                    push = conn.pushes.popleft()
                    if push.event != "trace":
                        continue
                    print(json.dumps(push.body, default=str) if args.json else _trace_line(push.body), flush=True)
                    seen += 1
                if args.count is not None and seen >= args.count:
                    break
                wait = 0.5 if deadline is None else deadline - time.monotonic()
                if wait <= 0:
                    break
                conn.read(min(wait, 0.5))
    return run("minibroker trace", handler, args)
