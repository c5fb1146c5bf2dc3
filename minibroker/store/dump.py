"""Print what a minibroker data directory holds, read-only: `python -m minibroker.store.dump DATA_DIR`.

For operators and for learning the format (docs/minibroker-durability.md): the durable
definitions, then each journal segment with its record counts, and with `--records` every
record (bodies shown by length only). It never writes: a torn tail is reported, not cut.
"""

import argparse
import collections
import os
import sys

import msgpack

from .definitions import FILE_NAME, DefinitionsCorrupt, DefinitionsStore
from .records import (DELIVERY, PUBLISH, SEGMENT_HEADER, SETTLE, decode_segment_header, iter_records,
                      nonzero_end)

NAMES = {PUBLISH: "PUBLISH", SETTLE: "SETTLE", DELIVERY: "DELIVERY"}


def describe_record(rtype: int, payload: bytes) -> str:
    rec = msgpack.unpackb(payload, raw=False)
    if rtype == PUBLISH:
        msg_id, queues, exchange, rk, props_bin, published_at, deliveries, body = rec
        props = msgpack.unpackb(props_bin, raw=False) if props_bin else {}
        extra = f" deliveries={deliveries}" if deliveries else ""
        return (f"PUBLISH id={msg_id} queues={queues} exchange={exchange!r} routing_key={rk!r} "
                f"properties={props} body={len(body)} B published_at={published_at}{extra}")
    if rtype == SETTLE:
        queue, reason, ids = rec
        return f"SETTLE queue={queue!r} reason={reason} ids={ids if len(ids) <= 10 else f'{ids[:10]}... ({len(ids)})'}"
    queue, flat = rec
    pairs = list(zip(flat[::2], flat[1::2]))
    return f"DELIVERY queue={queue!r} (id, count)={pairs if len(pairs) <= 10 else f'{pairs[:10]}... ({len(pairs)})'}"


def dump(data_dir: str, records: bool, out=sys.stdout) -> int:
    problems = 0
    durable_queues = None        # names from the definitions, when they could be read
    if os.path.exists(os.path.join(data_dir, FILE_NAME)):
        try:
            d = DefinitionsStore(data_dir)
            # load() would delete a leftover .tmp file; only load when there is none.
            if not os.path.exists(d.path + ".tmp"):
                state = DefinitionsStore.read_file(d.path)   # read only: load() would repair
                d.exchanges, d.queues = state.get("exchanges", {}), state.get("queues", {})
                d.bindings = state.get("bindings", [])
                durable_queues = set(d.queues)
                print(f"definitions: {len(d.exchanges)} exchanges, {len(d.queues)} queues, "
                      f"{len(d.bindings)} bindings", file=out)
                for name, spec in d.exchanges.items():
                    print(f"  exchange {name!r} {spec}", file=out)
                for name, spec in d.queues.items():
                    print(f"  queue {name!r} {spec}", file=out)
                for b in d.bindings:
                    print(f"  binding {b}", file=out)
            else:
                print("definitions: a save was interrupted (.tmp present); start the server to settle it", file=out)
        except DefinitionsCorrupt as exc:
            print(f"definitions: CORRUPT: {exc}", file=out)
            problems += 1
    journal = os.path.join(data_dir, "journal")
    names = sorted(n for n in os.listdir(journal) if n.endswith(".seg")) if os.path.isdir(journal) else []
    # A message copy is live until a SETTLE for its queue appears in any segment, so the live
    # count per segment is known only after reading them all: print at the end.
    settled: set = set()
    report = []
    for name in names:
        path = os.path.join(journal, name)
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            next_id = decode_segment_header(os.pread(fd, SEGMENT_HEADER.size, 0))
            if next_id is None:
                print(f"segment {name}: {size} B, NO VALID HEADER", file=out)
                problems += 1
                continue
            counts = collections.Counter()
            gen = iter_records(fd, SEGMENT_HEADER.size, size)
            lines = []
            enqueued = []           # (queue, message id) of this segment's PUBLISH records
            while True:
                try:
                    off, rtype, payload = next(gen)
                except StopIteration as stop:
                    end = stop.value
                    break
                counts[NAMES[rtype]] += 1
                try:
                    rec = msgpack.unpackb(payload, raw=False)
                    if rtype == PUBLISH:
                        enqueued.extend((q, rec[0]) for q in rec[1])
                    elif rtype == SETTLE:
                        settled.update((rec[0], i) for i in rec[2])
                    if records:
                        lines.append(f"    @{off} {describe_record(rtype, payload)}")
                except Exception as exc:  # a record whose CRC matched but whose content is not ours
                    lines.append(f"    @{off} UNREADABLE {NAMES[rtype]} record: {type(exc).__name__}: {exc}")
                    problems += 1
            summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no records"
            tail = []
            if end < size:
                torn_end = nonzero_end(fd, end, size)
                if torn_end > end:
                    tail.append(f"  TORN OR CORRUPT TAIL: {torn_end - end} B after offset {end} (recovery will cut it)")
                    problems += 1
                if size > torn_end:
                    tail.append(f"  unused preallocated space: {size - max(end, torn_end)} B of zeros")
            report.append((f"segment {name}: {size} B, next id at creation {next_id}: {summary}", enqueued,
                           lines, tail))
        finally:
            os.close(fd)
    for header, enqueued, lines, tail in report:
        live = sum(1 for q, i in enqueued if (q, i) not in settled
                   and (durable_queues is None or q in durable_queues))
        if enqueued:
            header += f"; message copies: {live} live, {len(enqueued) - live} settled or dropped"
        print(header, file=out)
        for line in lines + tail:
            print(line, file=out)
    return 1 if problems else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="minibroker dump", description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", help="the server's --data-dir")
    parser.add_argument("--records", action="store_true", help="print every record")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.data_dir):
        print(f"{args.data_dir}: no such directory (give the server's --data-dir)", file=sys.stderr)
        return 2
    return dump(args.data_dir, args.records)


if __name__ == "__main__":
    sys.exit(main())
