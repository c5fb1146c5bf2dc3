"""Benchmark of minilog's storage engine in one process, no network.

Appends pre-built batches (1,000 records of 100 bytes) into the page cache and
with an fsync every MiB, reads them back by offset as bytes (pread) and through
sendfile, and times index lookups. Beside each figure it measures the ceiling of
the same machine in the same run: raw os.write of the same bytes, raw pread.
Every figure is the median of several repetitions.

    python3 -m bench.log_storage [--total-mib 512] [--repeat 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clients.record_batch import build_batch  # noqa: E402
from minilog.storage import LogConfig, PartitionLog  # noqa: E402

MiB = 1024 * 1024


def median_rate(samples):
    return statistics.median(samples)


def raw_write(path, buffers, fsync_every=None):
    """The ceiling: os.write of the same (distinct, cache-cold) buffers the log gets."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    since = 0
    t = time.perf_counter()
    for buf in buffers:
        os.write(fd, buf)
        if fsync_every:
            since += len(buf)
            if since >= fsync_every:
                os.fsync(fd)
                since = 0
    elapsed = time.perf_counter() - t
    os.close(fd)
    return elapsed


def log_append(directory, buffers, config):
    shutil.rmtree(directory, ignore_errors=True)
    log = PartitionLog.open(directory, config)
    t = time.perf_counter()
    for buf in buffers:
        log.append(buf)
    elapsed = time.perf_counter() - t
    return log, elapsed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--total-mib", type=int, default=512, help="bytes appended per repetition")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    ap.add_argument("--json", default=None, help="write the figures to this file")
    args = ap.parse_args(argv)

    root = tempfile.mkdtemp(prefix="minilog-bench-", dir=args.dir)
    try:
        batch = build_batch([(None, os.urandom(100), None, None) for _ in range(1000)])
        count = max(1, args.total_mib * MiB // len(batch))
        total = count * len(batch)
        records = count * 1000
        page_cache = LogConfig(segment_bytes=1 << 30, retention_ms=None)
        fsync_mib = LogConfig(segment_bytes=1 << 30, retention_ms=None, flush_messages=max(1, MiB // 110))
        results = {"batch_bytes": len(batch), "batches": count, "bytes_per_run": total}

        raw_pc, raw_fs, app_pc, app_fs = [], [], [], []
        read_bytes, read_sendfile, raw_read, lookups = [], [], [], []
        # Distinct buffers, as a server gets a fresh one per produce request (so they are cold in cache).
        buffers = [bytearray(batch) for _ in range(count)]
        for _ in range(args.repeat):
            os.unlink(os.path.join(root, "raw")) if os.path.exists(os.path.join(root, "raw")) else None
            raw_pc.append(total / raw_write(os.path.join(root, "raw"), buffers))
            os.unlink(os.path.join(root, "raw"))
            raw_fs.append(total / raw_write(os.path.join(root, "raw"), buffers, fsync_every=MiB))
            os.unlink(os.path.join(root, "raw"))
            log, t = log_append(os.path.join(root, "fs-0"), buffers, fsync_mib)
            app_fs.append(total / t)
            log.close()
            shutil.rmtree(os.path.join(root, "fs-0"))
            log, t = log_append(os.path.join(root, "pc-0"), buffers, page_cache)
            app_pc.append(total / t)

            # Reads by offset: consecutive 1 MiB fetches, as a caught-up consumer does.
            end = log.log_end_offset
            t = time.perf_counter()
            offset, n = 0, 0
            while offset < end:
                data = log.read_bytes(offset, MiB)
                n += len(data)
                offset += 1000 * (len(data) // len(batch))
            read_bytes.append(n / (time.perf_counter() - t))

            sink = os.open(os.devnull, os.O_WRONLY)
            t = time.perf_counter()
            offset, n = 0, 0
            while offset < end:
                s = log.read(offset, MiB)
                sent = 0
                while sent < s.length:
                    sent += os.sendfile(sink, s.fd, s.position + sent, s.length - sent)
                n += s.length
                offset += 1000 * (s.length // len(batch))
            read_sendfile.append(n / (time.perf_counter() - t))
            os.close(sink)

            fd = os.open(log.active_segment.log_path, os.O_RDONLY)
            t = time.perf_counter()
            pos, n = 0, 0
            while True:
                chunk = os.pread(fd, 9 * len(batch), pos)  # same size as a 1 MiB fetch of whole batches
                if not chunk:
                    break
                pos += len(chunk)
                n += len(chunk)
            raw_read.append(n / (time.perf_counter() - t))
            os.close(fd)

            segment = log.active_segment
            probes = [(i * 7919) % end for i in range(20000)]
            t = time.perf_counter()
            for p in probes:
                segment.index.lookup(p)
            lookups.append((time.perf_counter() - t) / len(probes) * 1e6)
            t = time.perf_counter()
            for p in probes[:5000]:
                segment.find_batch(p)
            results.setdefault("_find", []).append((time.perf_counter() - t) / 5000 * 1e6)
            log.close()

        find = results.pop("_find")
        results.update({
            "append_page_cache_MBps": median_rate(app_pc) / 1e6,
            "append_page_cache_records_per_s": median_rate(app_pc) / len(batch) * 1000,
            "raw_write_page_cache_MBps": median_rate(raw_pc) / 1e6,
            "append_fsync_every_MiB_MBps": median_rate(app_fs) / 1e6,
            "raw_write_fsync_every_MiB_MBps": median_rate(raw_fs) / 1e6,
            "read_bytes_1MiB_fetches_MBps": median_rate(read_bytes) / 1e6,
            "read_sendfile_devnull_MBps": median_rate(read_sendfile) / 1e6,
            "raw_pread_MBps": median_rate(raw_read) / 1e6,
            "index_lookup_us": statistics.median(lookups),
            "find_batch_us": statistics.median(find),
            "repeat": args.repeat,
        })
    finally:
        shutil.rmtree(root, ignore_errors=True)

    rows = [
        ("append, page cache", results["append_page_cache_MBps"], results["raw_write_page_cache_MBps"],
         "raw os.write"),
        ("append, fsync every MiB", results["append_fsync_every_MiB_MBps"], results["raw_write_fsync_every_MiB_MBps"],
         "raw os.write + fsync/MiB"),
        ("read by offset, bytes (pread)", results["read_bytes_1MiB_fetches_MBps"], results["raw_pread_MBps"],
         "raw pread"),
        ("read by offset, sendfile->/dev/null", results["read_sendfile_devnull_MBps"], results["raw_pread_MBps"],
         "raw pread"),
    ]
    print(f"batches of 1,000 x 100-byte records ({len(batch)} bytes), {total / MiB:.0f} MiB per run, "
          f"median of {args.repeat}")
    for name, got, ceiling, what in rows:
        print(f"  {name:38s} {got:9.0f} MB/s  ({what}: {ceiling:.0f} MB/s, {got / ceiling:.0%})")
    print(f"  append records/s (page cache)          {results['append_page_cache_records_per_s'] / 1e6:9.1f} M")
    print(f"  offset index lookup                    {results['index_lookup_us']:9.2f} us")
    print(f"  find batch (lookup + header scan)      {results['find_batch_us']:9.2f} us")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
    return results


if __name__ == "__main__":
    main()
