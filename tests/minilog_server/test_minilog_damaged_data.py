"""Data damaged on disk after it was acknowledged: a flipped bit in the oldest segment, then kill -9.

Recovery keeps every good batch, answers a fetch of the lost offsets with CORRUPT_MESSAGE (the
documented gap), logs what was lost at ERROR, and never hands out an acknowledged offset again.
"""

import os

from clients.protocol.errors import ErrorCode
from minilog_wire_helpers import batch, connect, create, fetch, produce


def test_a_flipped_bit_in_the_oldest_segment_after_kill_9_loses_one_batch(spawn_server, tmp_path):
    data_dir = tmp_path / "d"
    proc = spawn_server("minilog", data_dir=data_dir)
    acked = {}
    with connect(proc) as c:
        create(c, "t", config={"segment.bytes": 1024, "retention.ms": -1})
        for i in range(60):
            values = [b"r%03d-%d" % (i, j) for j in range(10)]
            (row,) = produce(c, "t", 0, batch(values), acks=-1)
            assert row[3] is None
            acked.update({row[2] + j: v for j, v in enumerate(values)})
    proc.kill()
    part = data_dir / "t-0"
    segments = sorted(n for n in os.listdir(part) if n.endswith(".log"))
    assert len(segments) >= 8
    oldest = part / segments[0]
    raw = bytearray(oldest.read_bytes())
    second = 12 + int.from_bytes(raw[8:12], "big")  # the second batch: offsets 10..19
    raw[second + 100] ^= 0x04
    oldest.write_bytes(bytes(raw))

    proc.start()
    with connect(proc) as c:
        error, hw, start, records = fetch(c, "t", 0, 0)
        assert error is None and [r[0] for r in records] == list(range(10))  # stops before the gap
        error, _, _, _ = fetch(c, "t", 0, 15)
        assert error[0] == ErrorCode.CORRUPT_MESSAGE and "offsets 10..19 were lost" in error[1]
        assert "fetch from offset 20" in error[1]
        got, offset = {}, 20
        while offset < hw:
            error, _, _, records = fetch(c, "t", 0, offset)
            assert error is None
            got.update({r[0]: r[3] for r in records})
            offset = records[-1][0] + 1
        assert got == {o: v for o, v in acked.items() if o >= 20}
        assert hw == 600
        assert produce(c, "t", 0, batch([b"after"]))[0][2] == 600  # no acked offset handed out again
    assert proc.stop() == 0
    log_text = proc.stderr_text()
    assert "ERROR minilog.storage" in log_text and "offsets 10..19 are lost" in log_text
    assert "deleting segment" not in log_text
