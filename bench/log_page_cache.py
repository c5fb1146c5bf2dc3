"""Appends into logs that are kept, as a broker's are: with and without drop-behind.

`bench/log_storage.py` deletes its files between repetitions, so its appends land in page-cache
pages the kernel had just freed. A broker's log grows instead, and every page it writes is one
the machine must provide; on a virtual machine, memory the guest has not touched recently costs
far more than a page it reuses (docs/minilog-storage.md, "Page cache behind the log end"). Here
every log written stays on disk until the end of the whole run, and each repetition runs, one
after another:

- raw: a bare loop of `os.write` of the same buffers into a file that is kept (the ceiling of
  the old way);
- for each `--windows` value: `PartitionLog.append` of 512 KiB batches (what a large produce
  request carries), with `drop_behind_bytes` at that many MiB (`off`: None, everything stays
  cached). The flushes it asks for run on one worker thread (prepare on this thread, `FlushPlan.sync`
  there, `complete_flush` back here), as the server's group commit runs them;
- then a read of that log from its first offset in 1 MiB fetches (`read_bytes`), which for a
  drop-behind log reads the dropped part back from the disk.

Each figure is the median of `--repeat` runs, with this process's CPU seconds per GB appended
(every thread) and the load average printed.

    python -m bench.log_page_cache [--total-mib 512] [--repeat 3] [--windows 16,64,off] [--json PATH]
"""

from __future__ import annotations

import argparse
import concurrent.futures
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
BATCH_VALUE = 512 * 1024


def raw_write(path: str, buffers) -> tuple[float, float]:
    """(seconds, CPU seconds) of a bare os.write loop into a new file that is kept."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    c, t = time.process_time(), time.perf_counter()
    for buf in buffers:
        os.write(fd, buf)
    elapsed, cpu = time.perf_counter() - t, time.process_time() - c
    os.close(fd)
    return elapsed, cpu


def log_append(directory: str, buffers, window: int | None) -> tuple[PartitionLog, float, float]:
    """(log, seconds, CPU seconds) of appending every buffer with drop_behind_bytes=window;
    the clock stops when the last flush asked for has finished."""
    log = PartitionLog.open(directory, LogConfig(segment_bytes=1 << 30, retention_ms=None))
    log.drop_behind_bytes = window
    pool = concurrent.futures.ThreadPoolExecutor(1)
    running: list = []

    def request(plog):
        plan = plog.prepare_flush()
        running.append((plan, pool.submit(plan.sync)))

    log.flush_requester = request
    c, t = time.process_time(), time.perf_counter()
    for buf in buffers:
        log.append(buf)
        while running and running[0][1].done():
            plan, done = running.pop(0)
            done.result()
            log.complete_flush(plan.end_offset)
    for plan, fut in running:
        fut.result()
        log.complete_flush(plan.end_offset)
    elapsed, cpu = time.perf_counter() - t, time.process_time() - c
    pool.shutdown()
    return log, elapsed, cpu


def read_all(log: PartitionLog) -> float:
    """Seconds to read the log from its first offset in 1 MiB fetches."""
    t = time.perf_counter()
    offset, end = log.log_start_offset, log.log_end_offset
    while offset < end:
        found = log.read(offset, MiB)
        found.read()
        offset = _next_offset(log, found)
    return time.perf_counter() - t


def _next_offset(log, found) -> int:
    from clients.record_batch import read_header
    last = None
    pos = found.position
    while pos < found.position + found.length:
        last = read_header(os.pread(found.fd, 64, pos))
        pos += last.size
    return last.next_offset


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--total-mib", type=int, default=512, help="bytes appended per log")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--windows", default="16,64,off", help="drop_behind_bytes in MiB, comma-separated; off: None")
    ap.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    windows = [None if w == "off" else int(w) * MiB for w in args.windows.split(",")]
    names = ["raw os.write"] + [f"append, drop-behind {'off' if w is None else f'{w // MiB} MiB'}" for w in windows]

    root = tempfile.mkdtemp(prefix="minilog-page-cache-", dir=args.dir)
    loads = []
    runs: dict[str, list] = {n: [] for n in names}
    try:
        batch = build_batch([(None, os.urandom(BATCH_VALUE), None, None)])
        count = max(1, args.total_mib * MiB // len(batch))
        total = count * len(batch)
        # One buffer per request, reused across runs: the server receives into one reused frame.
        buffers = [bytearray(batch) for _ in range(8)] * (count // 8) + [bytearray(batch)] * (count % 8)
        for rep in range(args.repeat):
            loads.append(os.getloadavg()[0])
            elapsed, cpu = raw_write(os.path.join(root, f"raw-{rep}"), buffers)
            runs[names[0]].append({"MBps": total / elapsed / 1e6, "cpu_s_per_GB": cpu / total * 1e9})
            for name, window in zip(names[1:], windows):
                tag = "off" if window is None else window // MiB
                log, elapsed, cpu = log_append(os.path.join(root, f"w{tag}-{rep}"), buffers, window)
                read_s = read_all(log)
                log.close()
                runs[name].append({"MBps": total / elapsed / 1e6, "cpu_s_per_GB": cpu / total * 1e9,
                                   "read_back_MBps": total / read_s / 1e6})
            print(f"run {rep + 1} (load {loads[-1]:.2f}): " + "; ".join(
                f"{n} {r[-1]['MBps']:,.0f} MB/s" for n, r in runs.items()), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    medians = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in runs.items()}
    print(f"\n{total / MiB:.0f} MiB per log in 512 KiB batches, every log kept until the end, "
          f"median of {args.repeat}, load average {min(loads):.2f}-{max(loads):.2f}")
    for n, m in medians.items():
        extra = f", read back {m['read_back_MBps']:,.0f} MB/s" if "read_back_MBps" in m else ""
        print(f"  {n:32s} {m['MBps']:7,.0f} MB/s, {m['cpu_s_per_GB']:.2f} CPU s per GB{extra}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": runs, "medians": medians, "load": loads}, f, indent=1)
    return medians


if __name__ == "__main__":
    main()
