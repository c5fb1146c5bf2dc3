"""`minilog dump` on segment and index files written by the real log, then cut and corrupted.

The tool must describe every batch and index entry, check the indexes against the log, and
report (never crash on) torn tails, flipped bytes and index entries that point nowhere.
"""

import io
import json
import os
import subprocess
import sys

from clients.record_batch import build_batch
from harness import ROOT
from minilog.dump import main as dump_main
from minilog.storage import LogConfig, PartitionLog

CFG = LogConfig(segment_bytes=1024, index_interval_bytes=64, segment_index_bytes=4096)


def write_log(directory, batches=30):
    log = PartitionLog.open(str(directory), CFG)
    for i in range(batches):
        log.append(build_batch([(b"k%d" % i, b"value-%03d-%d" % (i, j), 1_000 + i, [("h", b"x")])
                                for j in range(1 + i % 3)]))
    log.flush()
    end = log.log_end_offset
    log.close()
    return end


def files(directory, suffix):
    return sorted(os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(suffix))


def run(*argv):
    out = io.StringIO()
    code = dump_main(list(argv), out=out)
    return code, out.getvalue()


def test_a_clean_directory_is_described_and_checked(tmp_path):
    part = tmp_path / "rides-0"
    end = write_log(part)
    assert len(files(part, ".log")) > 1, "the test wants several segments"
    code, text = run(str(tmp_path), "--records")
    assert code == 0, text
    assert "PROBLEM" not in text
    assert text.count("Dumping") == 3 * len(files(part, ".log"))
    assert "crcValid: true" in text and "crcValid: false" not in text
    assert f"lastOffset: {end - 1} " in text
    assert "| offset: 0 timestamp: 1000 key: k0 value: value-000-0 headers: h=x" in text

    code, doc = run(str(part), "--json")
    report = json.loads(doc)
    assert code == 0 and report["problems"] == 0
    batches = [b for f in report["files"] if f["kind"] == "segment" for b in f["items"]]
    assert sum(b["count"] for b in batches) == end
    offsets = [b["base_offset"] for b in batches]
    assert offsets == sorted(offsets) and offsets[0] == 0
    index_entries = [e for f in report["files"] if f["kind"] == "offset index" for e in f["items"]]
    assert index_entries, "index.interval.bytes=64 must have produced index entries"


def test_truncated_and_corrupt_segments_are_reported(tmp_path):
    part = tmp_path / "t-0"
    write_log(part)
    first, last = files(part, ".log")[0], files(part, ".log")[-1]
    os.truncate(last, os.path.getsize(last) - 5)
    with open(first, "r+b") as f:          # flip a byte inside the first batch's records
        f.seek(45)
        byte = f.read(1)
        f.seek(45)
        f.write(bytes([byte[0] ^ 0xFF]))
    code, text = run(str(part))
    assert code == 1
    assert "crcValid: false" in text and "crc mismatch at position 0" in text
    assert "truncated batch" in text
    # The batches after the flipped one are still listed: a CRC error does not stop the walk.
    segment_lines = text.split(f"Dumping {first}")[1].split("Dumping")[0]
    assert segment_lines.count("crcValid: true") >= 1


def test_garbage_and_empty_files_and_bad_index_entries(tmp_path):
    part = tmp_path / "g-0"
    write_log(part)
    index = files(part, ".index")[0]
    with open(index, "r+b") as f:           # point the first entry at a position inside a batch
        f.seek(4)
        f.write((7).to_bytes(4, "little"))
    code, text = run(index)
    assert code == 1 and "no valid batch starts" in text

    garbage = tmp_path / "00000000000000000000.log"
    garbage.write_bytes(os.urandom(3000))
    code, text = run(str(garbage))
    assert code == 1 and "PROBLEM" in text

    empty = tmp_path / "00000000000000000100.log"
    empty.write_bytes(b"")
    assert run(str(empty)) == (0, f"Dumping {empty} (segment)\n")

    odd = tmp_path / "00000000000000000000.timeindex"
    odd.write_bytes(b"\x01" * 13)
    code, text = run(str(odd))
    assert code == 1 and "not a multiple" in text


def test_console_script_subcommand_and_unusable_paths(tmp_path):
    part = tmp_path / "c-0"
    write_log(part, batches=3)
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-m", "minilog", "dump", str(part)], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "baseOffset: 0 " in done.stdout
    done = subprocess.run([sys.executable, "-m", "minilog", "dump", str(tmp_path / "nope")],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert done.returncode == 2 and done.stderr.strip().endswith("no such file or directory")
    assert len(done.stderr.strip().splitlines()) == 1


def test_kafka_batches_beside_ours_are_described_and_checked(tmp_path):
    from clients import kafka_batch
    part = tmp_path / "mixed-0"
    log = PartitionLog.open(str(part), CFG)
    for i in range(6):
        if i % 2:
            kafka = bytearray(kafka_batch.build_batch([(b"k%d" % i, b"kafka-%d" % i, 2_000 + i, [("h", b"y")])]))
            kafka_batch.set_partition_leader_epoch(kafka, 0)   # as the broker stores a Kafka client's batch
            log.append(kafka)
        else:
            log.append(build_batch([(b"k%d" % i, b"ours-%d" % i, 2_000 + i, None)]))
    log.flush()
    log.close()
    code, text = run(str(part), "--records")
    assert code == 0, text
    assert "PROBLEM" not in text and "crcValid: false" not in text
    assert "| offset: 1 timestamp: 2001 key: k1 value: kafka-1 headers: h=y" in text
    assert "| offset: 2 timestamp: 2002 key: k2 value: ours-2" in text
