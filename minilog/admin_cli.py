"""`minilog topics|groups|produce|consume`: the Kafka command-line tools and kcat, for minilog.

- `minilog topics list|describe|create|alter|delete` (kafka-topics, kafka-configs --alter): partitions with log start and
  end offsets, segments, bytes and the topic's config (the `metadata`, `create_topics` and
  `delete_topics` ops).
- `minilog groups list|describe|delete|reset-offsets` (kafka-consumer-groups): state, members, the
  assignment, committed offset, log end offset and lag per partition (`describe_groups`,
  `offset_fetch`); reset-offsets plans new committed offsets `--to-earliest|--to-latest|
  --to-offset N|--to-datetime T|--shift-by N` and, with `--execute`, commits them for a group
  with no active members (`offset_commit` with generation -1). Without `--execute` it is a
  dry run, as in Kafka.
- `minilog produce TOPIC` and `minilog consume TOPIC` (kcat -P / -C): lines of stdin become
  records (`--key-separator` splits key and value); records become lines formatted with
  `--format` (`{key} {value} {partition} {offset} {timestamp} {headers} {topic}`), from
  `--from-beginning`, `--offset N`, `--from-time T` or a `--group`'s committed offsets; `-e`
  exits at the end of every partition. They use our confluent-kafka-style clients.

Server address, `--json`, and one-line failures: `serverbase/admin_cli.py`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

from serverbase.admin_cli import CommandError, add_server_arguments, call, connect, emit, run

from .server import DEFAULT_PORT

EARLIEST, LATEST = -2, -1


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"minilog {prog}", description=description)
    add_server_arguments(parser, "minilog", DEFAULT_PORT, kafka_style=True)
    return parser


def _time_ms(text: str) -> int:
    """Milliseconds since the epoch from an integer or an ISO 8601 date-time (UTC unless it says)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither ms since the epoch nor an ISO 8601 date-time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return int(when.timestamp() * 1000)


def _config_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _config_map(pairs) -> dict:
    """KEY=VALUE pairs as a config map, numbers as integers (topic configs are Kafka's, mostly numbers)."""
    config = {}
    for key, value in pairs:
        try:
            config[key] = int(value)
        except ValueError:
            config[key] = value
    return config


def _topic(conn, name: str) -> dict:
    info = call(conn, "metadata", {"topics": [name]})["topics"].get(name)
    if info is None or info.get("error"):
        raise CommandError((info or {}).get("error", [None, f"topic {name!r} does not exist"])[1])
    return info


# ---- topics ---------------------------------------------------------------------------------

def topics_main(argv=None) -> int:
    parser = _parser("topics", "List, describe, create and delete topics (as kafka-topics).")
    parser.add_argument("action", choices=["list", "describe", "create", "alter", "delete"])
    parser.add_argument("topic", nargs="?", help="the topic (describe: all when left out)")
    parser.add_argument("--partitions", type=int, help="create: number of partitions (default: the server's)")
    parser.add_argument("--config", action="append", type=_config_pair, default=[], metavar="KEY=VALUE",
                        help="create, alter: a topic config under Kafka's name, e.g. retention.ms=60000 (repeat)")
    parser.add_argument("--delete-config", action="append", default=[], metavar="KEY",
                        help="alter: drop an override so the server default applies again (repeat)")
    args = parser.parse_args(argv)
    if args.action in ("create", "alter", "delete") and not args.topic:
        parser.error(f"{args.action} needs a TOPIC")

    def handler(args):
        with connect(args, "minilog topics") as conn:
            if args.action == "list":
                topics = call(conn, "metadata", {})["topics"]
                rows = [{"topic": name, "partitions": len(t["partitions"])} for name, t in sorted(topics.items())]
                emit(args, rows, ["topic", "partitions"])
            elif args.action == "describe":
                if args.topic:
                    topics = {args.topic: _topic(conn, args.topic)}
                else:
                    topics = call(conn, "metadata", {})["topics"]
                rows = []
                for name, t in sorted(topics.items()):
                    for p in t["partitions"]:
                        rows.append({"topic": name, "partition": p["partition"],
                                     "log_start_offset": p["start_offset"], "log_end_offset": p["end_offset"],
                                     "segments": p.get("segments"), "size_bytes": p.get("size_bytes")})
                if args.json:
                    emit(args, [{"topic": name, "partitions": [r for r in rows if r["topic"] == name],
                                 "config": t.get("config", {})} for name, t in sorted(topics.items())])
                else:
                    emit(args, rows, ["topic", "partition", "log_start_offset", "log_end_offset", "segments",
                                      "size_bytes"])
                    for name, t in sorted(topics.items()):
                        overrides = ", ".join(f"{k}={v}" for k, v in sorted((t.get("config") or {}).items()))
                        print(f"config {name}: {overrides}")
            elif args.action == "alter":
                result = call(conn, "alter_topic_config", {"topic": args.topic, "set": _config_map(args.config),
                                                           "delete": args.delete_config})
                emit(args, {"topic": args.topic, **{k: v for k, v in sorted(result["config"].items())}})
            elif args.action == "create":
                config = _config_map(args.config)
                spec = {"name": args.topic, "num_partitions": args.partitions, "config": config}
                error = call(conn, "create_topics", {"topics": [spec]})["results"].get(args.topic)
                if error:
                    raise CommandError(error[1])
                emit(args, {"created": args.topic, "partitions": len(_topic(conn, args.topic)["partitions"])})
            else:
                error = call(conn, "delete_topics", {"topics": [args.topic]})["results"].get(args.topic)
                if error:
                    raise CommandError(error[1])
                emit(args, {"deleted": args.topic})
    return run("minilog topics", handler, args)


# ---- groups ---------------------------------------------------------------------------------

def _offsets(conn, items) -> dict:
    """{(topic, partition): offset} from list_offsets for `items` [(topic, partition, timestamp)]."""
    out = {}
    for topic, partition, offset, error in call(conn, "list_offsets", {"partitions": [list(i) for i in items]})["results"]:
        if error:
            raise CommandError(error[1])
        out[(topic, partition)] = offset
    return out


def groups_main(argv=None) -> int:
    parser = _parser("groups", "List and describe consumer groups, with lag; reset their committed offsets "
                               "(as kafka-consumer-groups).")
    parser.add_argument("action", choices=["list", "describe", "delete", "reset-offsets"])
    parser.add_argument("--group", help="the group (describe: all when left out)")
    parser.add_argument("--topic", help="reset-offsets: the topic (all partitions)")
    to = parser.add_mutually_exclusive_group()
    to.add_argument("--to-earliest", action="store_true")
    to.add_argument("--to-latest", action="store_true")
    to.add_argument("--to-offset", type=int)
    to.add_argument("--to-datetime", type=_time_ms, metavar="ISO8601|MS")
    to.add_argument("--shift-by", type=int)
    run_mode = parser.add_mutually_exclusive_group()
    run_mode.add_argument("--dry-run", action="store_true", help="only print the plan (the default)")
    run_mode.add_argument("--execute", action="store_true", help="commit the new offsets")
    args = parser.parse_args(argv)
    if args.action == "delete" and not args.group:
        parser.error("delete needs --group")
    if args.action == "reset-offsets":
        if not (args.group and args.topic):
            parser.error("reset-offsets needs --group and --topic")
        if not (args.to_earliest or args.to_latest or args.to_offset is not None or args.to_datetime is not None
                or args.shift_by is not None):
            parser.error("reset-offsets needs one of --to-earliest, --to-latest, --to-offset, --to-datetime, "
                         "--shift-by")

    def handler(args):
        with connect(args, "minilog groups") as conn:
            if args.action == "list":
                rows = [{"group": g, "state": s} for g, s in call(conn, "list_groups")["groups"]]
                emit(args, rows, ["group", "state"])
            elif args.action == "describe":
                _describe_groups(conn, args)
            elif args.action == "delete":
                error = call(conn, "delete_groups", {"groups": [args.group]})["results"].get(args.group)
                if error:
                    raise CommandError(error[1])
                emit(args, {"deleted": args.group})
            else:
                _reset_offsets(conn, args)
    return run("minilog groups", handler, args)


def _describe_groups(conn, args) -> None:
    ids = [args.group] if args.group else [g for g, _ in call(conn, "list_groups")["groups"]]
    described = call(conn, "describe_groups", {"groups": ids})["groups"] if ids else []
    rows = []
    for g in described:
        if g["state"] == "Dead":
            raise CommandError(f"consumer group {g['group_id']!r} does not exist")
        committed = {(t, p): o for t, p, o, _ in call(conn, "offset_fetch", {"group_id": g["group_id"]})["offsets"]}
        owner = {}
        for m in g["members"]:
            for topic, parts in m["assignment"].items():
                for p in parts:
                    owner[(topic, p)] = m
        keys = sorted(set(committed) | set(owner))
        ends = _offsets(conn, [(t, p, LATEST) for t, p in keys]) if keys else {}
        for key in keys:
            c = committed.get(key, -1)
            end = ends.get(key, -1)
            m = owner.get(key)
            rows.append({"group": g["group_id"], "topic": key[0], "partition": key[1],
                         "current_offset": c if c >= 0 else None, "log_end_offset": end,
                         "lag": end - c if c >= 0 and end >= 0 else None,
                         "member_id": m["member_id"] if m else None, "client": m["client"] if m else None,
                         "state": g["state"]})
        if not keys:
            rows.append({"group": g["group_id"], "state": g["state"], "members": len(g["members"])})
    emit(args, rows, ["group", "topic", "partition", "current_offset", "log_end_offset", "lag", "member_id",
                      "client", "state"])


def _reset_offsets(conn, args) -> None:
    topic = _topic(conn, args.topic)
    parts = [p["partition"] for p in topic["partitions"]]
    starts = _offsets(conn, [(args.topic, p, EARLIEST) for p in parts])
    ends = _offsets(conn, [(args.topic, p, LATEST) for p in parts])
    committed = {(t, p): o for t, p, o, _ in call(conn, "offset_fetch", {
        "group_id": args.group, "partitions": [[args.topic, p] for p in parts]})["offsets"]}
    by_time = _offsets(conn, [(args.topic, p, args.to_datetime) for p in parts]) \
        if args.to_datetime is not None else {}
    plan = []
    for p in parts:
        key = (args.topic, p)
        start, end, current = starts[key], ends[key], committed.get(key, -1)
        if args.to_earliest:
            new = start
        elif args.to_latest:
            new = end
        elif args.to_offset is not None:
            new = args.to_offset
        elif args.to_datetime is not None:
            new = by_time[key] if by_time[key] >= 0 else end
        else:
            new = (current if current >= 0 else start) + args.shift_by
        new = min(max(new, start), end)   # as Kafka: an offset outside the log is clamped to it
        plan.append({"group": args.group, "topic": args.topic, "partition": p,
                     "current_offset": current if current >= 0 else None, "new_offset": new})
    if args.execute:
        results = call(conn, "offset_commit", {"group_id": args.group, "generation_id": -1, "member_id": "",
                                               "offsets": [[r["topic"], r["partition"], r["new_offset"]]
                                                           for r in plan]})["results"]
        errors = [e for _, _, e in results if e]
        if errors:
            raise CommandError(errors[0][1])
    emit(args, plan, ["group", "topic", "partition", "current_offset", "new_offset"])
    if not args.execute and not args.json:
        print("(dry run: nothing was changed; add --execute to commit these offsets)")


# ---- produce / consume -------------------------------------------------------------------------

def _bootstrap(args) -> str:
    return f"{args.server[0]}:{args.server[1]}"


def produce_main(argv=None) -> int:
    parser = _parser("produce", "Produce one record per line of stdin (as kcat -P); waits for every "
                                "acknowledgement, so a zero exit means all were stored.")
    parser.add_argument("topic")
    parser.add_argument("-p", "--partition", type=int, default=-1, help="default: by key, else spread")
    parser.add_argument("-K", "--key-separator", help="split each line at the first SEP into key and value")
    parser.add_argument("-H", "--header", action="append", type=_config_pair, default=[], metavar="KEY=VALUE")
    parser.add_argument("--acks", default="all", choices=["0", "1", "all", "-1"])
    args = parser.parse_args(argv)

    def handler(args):
        from clients.log import Producer
        failures = []
        try:
            producer = Producer({"bootstrap.servers": _bootstrap(args), "acks": args.acks,
                                 "client.id": "minilog produce"})
        except Exception as exc:
            raise CommandError(f"cannot reach the server at {_bootstrap(args)}: {exc}", 3) from None
        headers = [(k, v.encode()) for k, v in args.header] or None
        count = 0

        def delivered(err, msg):
            if err is not None:
                failures.append(err)

        for raw in sys.stdin.buffer:
            line = raw.rstrip(b"\n").rstrip(b"\r")
            key = None
            if args.key_separator is not None:
                key, sep, value = line.partition(args.key_separator.encode())
                if not sep:
                    key, value = None, line
            else:
                value = line
            producer.produce(args.topic, value=value, key=key, partition=args.partition, headers=headers,
                             on_delivery=delivered)
            count += 1
            producer.poll(0)
        left = producer.flush(args.timeout)
        if left or failures:
            raise CommandError(f"{len(failures) + left} of {count} record(s) not stored"
                               + (f": {failures[0]}" if failures else " (timed out)"))
        if args.json:
            emit(args, {"topic": args.topic, "produced": count})
        else:
            print(f"produced {count} record(s) to {args.topic}", file=sys.stderr)
    return run("minilog produce", handler, args)


class _Fields(dict):
    def __missing__(self, key):
        raise CommandError(f"--format: unknown field {{{key}}}; use key, value, partition, offset, timestamp, "
                           f"headers, topic", 2)


def _text(b) -> str:
    if b is None:
        return ""
    return b.decode(errors="replace") if isinstance(b, (bytes, bytearray)) else str(b)


def consume_main(argv=None) -> int:
    parser = _parser("consume", "Print records as lines (as kcat -C).")
    parser.add_argument("topic")
    parser.add_argument("-p", "--partition", type=int, action="append", help="only these partitions (repeat)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true", help="start at each partition's log start")
    start.add_argument("-o", "--offset", help="start offset: N, beginning, end (default end, or the group's)")
    start.add_argument("--from-time", type=_time_ms, metavar="ISO8601|MS", help="start at the first record at or "
                                                                               "after this time")
    parser.add_argument("-G", "--group", help="consume as this group (subscribe, commit)")
    parser.add_argument("-K", "--key-separator", help="print key SEP value (shorthand for a --format)")
    parser.add_argument("-f", "--format", help="e.g. '{partition}:{offset} {key}={value} {headers}' (default {value})")
    parser.add_argument("-e", "--exit", action="store_true", help="exit when every partition is read to its end")
    parser.add_argument("-c", "--count", type=int, help="exit after this many records")
    args = parser.parse_args(argv)
    fmt = args.format or ("{key}" + args.key_separator.replace("{", "{{").replace("}", "}}") + "{value}"
                          if args.key_separator else "{value}")

    def handler(args):
        from clients.log import Consumer, TopicPartition
        with connect(args, "minilog consume") as conn:
            topic = _topic(conn, args.topic)
            parts = args.partition or [p["partition"] for p in topic["partitions"]]
            ends = _offsets(conn, [(args.topic, p, LATEST) for p in parts])
            if args.from_time is not None:
                by_time = _offsets(conn, [(args.topic, p, args.from_time) for p in parts])
                starts = {k: (v if v >= 0 else ends[k]) for k, v in by_time.items()}
            elif args.from_beginning or args.offset == "beginning":
                starts = _offsets(conn, [(args.topic, p, EARLIEST) for p in parts])
            elif args.offset not in (None, "end"):
                try:
                    n = int(args.offset)
                except ValueError:
                    raise CommandError(f"--offset {args.offset!r}: give N, beginning or end", 2) from None
                starts = {(args.topic, p): n for p in parts}
            elif args.group:
                starts = None               # the group's committed offsets (auto.offset.reset=latest)
            else:
                starts = dict(ends)
        config = {"bootstrap.servers": _bootstrap(args), "group.id": args.group or f"minilog-consume-{os.getpid()}",
                  "enable.auto.commit": bool(args.group), "auto.offset.reset": "latest",
                  "client.id": "minilog consume"}
        consumer = Consumer(config)
        try:
            if starts is None:
                consumer.assign([TopicPartition(args.topic, p) for p in parts]) if args.partition else \
                    consumer.subscribe([args.topic])
                # -e with a group: the end is where the log ends now.
            else:
                consumer.assign([TopicPartition(args.topic, p, starts[(args.topic, p)]) for p in parts])
            done = {p for p in parts if starts is not None and starts[(args.topic, p)] >= ends[(args.topic, p)]}
            seen = 0
            position = {}
            while True:
                if args.exit and len(done) == len(parts):
                    break
                if args.count is not None and seen >= args.count:
                    break
                msg = consumer.poll(0.5)
                if msg is None:
                    if args.exit and starts is None and all(
                            position.get(p, -1) + 1 >= ends[(args.topic, p)] for p in parts):
                        break
                    continue
                if msg.error():
                    raise CommandError(str(msg.error()))
                p, off = msg.partition(), msg.offset()
                position[p] = off
                if off + 1 >= ends[(args.topic, p)]:
                    done.add(p)
                headers = ",".join(f"{k}={_text(v)}" for k, v in (msg.headers() or []))
                fields = _Fields(key=_text(msg.key()), value=_text(msg.value()), partition=p, offset=off,
                                 timestamp=msg.timestamp()[1], headers=headers, topic=msg.topic())
                print(fmt.format_map(fields), flush=True)
                seen += 1
        finally:
            consumer.close()
    return run("minilog consume", handler, args)


def stats_main(argv=None) -> int:
    from serverbase.admin_cli import stats_command
    return stats_command("minilog", DEFAULT_PORT, argv)


def _trace_line(e: dict) -> str:
    kind = e.get("event")
    where = f"{e.get('topic')}-{e.get('partition')}"
    if kind == "append":
        text = f"append        {where} offsets {e['base_offset']}..{e['last_offset']} ({e['bytes']} B)"
    elif kind == "segment_roll":
        text = (f"segment roll  {where} sealed {e['sealed_base_offset']:020d}.log, new {e['new_base_offset']:020d}.log "
                f"({e['segments']} segments)")
    elif kind == "index_entry":
        text = (f"index entry   {where} {e['segment']:020d}.index: offset {e['offset']} -> position {e['position']} "
                f"({e['entries']} entries)")
    elif kind == "group":
        text = (f"group         {e['group']}: {e['previous_state'] or '(new)'} -> {e['state']}, generation "
                f"{e['generation_id']}, {e['members']} member(s)")
    else:
        text = json.dumps(e, default=str)
    if e.get("trace_dropped"):
        text += f"  [{e['trace_dropped']} earlier event(s) dropped]"
    return text


def trace_main(argv=None) -> int:
    parser = _parser("trace", "Print what the log does as it happens: appends, segment rolls, index entries, "
                              "consumer group state changes.")
    parser.add_argument("-c", "--count", type=int, help="exit after this many events")
    parser.add_argument("--for", dest="seconds", type=float, help="exit after this many seconds")
    args = parser.parse_args(argv)

    def handler(args):
        with connect(args, "minilog trace") as conn:
            call(conn, "trace", {"on": True})
            print("tracing; Ctrl-C stops", file=sys.stderr, flush=True)
            seen = 0
            deadline = None if args.seconds is None else time.monotonic() + args.seconds
            while args.count is None or seen < args.count:
                while conn.pushes and (args.count is None or seen < args.count):
                    push = conn.pushes.popleft()
                    if push.event == "trace":
                        print(json.dumps(push.body) if args.json else _trace_line(push.body), flush=True)
                        seen += 1
                if args.count is not None and seen >= args.count:
                    break
                wait = 0.5 if deadline is None else deadline - time.monotonic()
                if wait <= 0:
                    break
                conn.read(min(wait, 0.5))
    return run("minilog trace", handler, args)
