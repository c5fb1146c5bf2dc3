"""Restarts: topics, records and committed offsets survive a clean stop and a kill -9."""

from clients.record_batch import decode_batches
from minilog_wire_helpers import batch, connect, create, fetch, produce, record_values, values


def test_restart_keeps_topics_configs_data_and_committed_offsets(server):
    with connect(server) as c:
        create(c, "kept", partitions=2, config={"retention.ms": 123_456, "segment.bytes": 4096})
        for i in range(20):
            produce(c, "kept", i % 2, batch([b"r%d" % i]))
        c.call("offset_commit", {"group_id": "g", "generation_id": -1, "member_id": "",
                                 "offsets": [["kept", 0, 4, "m"], ["kept", 1, 9, ""]]})
        c.call("offset_commit", {"group_id": "g", "generation_id": -1, "member_id": "",
                                 "offsets": [["kept", 0, 6, "m2"]]})
    server.restart()
    with connect(server) as c:
        topic = c.call("metadata", {"topics": None})["topics"]["kept"]
        assert topic["config"]["retention.ms"] == 123_456 and topic["config"]["segment.bytes"] == 4096
        assert [p["end_offset"] for p in topic["partitions"]] == [10, 10]
        assert record_values(fetch(c, "kept", 1, 0)[3]) == [b"r%d" % i for i in range(1, 20, 2)]
        assert c.call("offset_fetch", {"group_id": "g"})["offsets"] == [["kept", 0, 6, "m2"], ["kept", 1, 9, ""]]
        # And it carries on from where it was.
        assert produce(c, "kept", 0, batch([b"after"]))[0][2] == 10


def test_deleted_topic_commits_stay_deleted_after_restart(server):
    with connect(server) as c:
        produce(c, "doomed", 0, batch(values(3)))
        produce(c, "other", 0, batch(values(1)))
        c.call("offset_commit", {"group_id": "g", "generation_id": -1, "offsets": [["doomed", 0, 2, ""],
                                                                                  ["other", 0, 1, ""]]})
        c.call("delete_topics", {"topics": ["doomed"]})
        assert c.call("offset_fetch", {"group_id": "g"})["offsets"] == [["other", 0, 1, ""]]
    server.restart()
    with connect(server) as c:
        assert c.call("offset_fetch", {"group_id": "g"})["offsets"] == [["other", 0, 1, ""]]
        assert "doomed" not in c.call("metadata", {})["topics"]


def test_sigterm_then_start_keeps_everything(spawn_server, tmp_path):
    proc = spawn_server("minilog", data_dir=tmp_path / "d")
    with connect(proc) as c:
        produce(c, "t", 0, [batch(values(5)), batch(values(5))])
        c.call("offset_commit", {"group_id": "g", "offsets": [["t", 0, 7, ""]]})
    assert proc.stop() == 0
    proc.start()
    with connect(proc) as c:
        assert [r[0] for r in fetch(c, "t", 0, 0)[3]] == list(range(10))
        assert c.call("offset_fetch", {"group_id": "g"})["offsets"] == [["t", 0, 7, ""]]


def test_kill_9_keeps_every_record_acknowledged_with_acks_all(spawn_server, tmp_path):
    proc = spawn_server("minilog", data_dir=tmp_path / "d", extra_args=["--num-partitions", "2"])
    acknowledged = []
    with connect(proc) as c:
        ids = []
        for i in range(300):
            ids.append((i, c.send("produce", {"acks": -1, "data": [["t", i % 2, batch([b"k%d" % i])]]})))
        for i, rid in ids:
            row = c.wait(rid)["results"][0]
            assert row[3] is None
            acknowledged.append((i % 2, row[2], b"k%d" % i))
        c.call("offset_commit", {"group_id": "g", "offsets": [["t", 1, 42, ""]]})
    proc.kill()
    proc.start()
    with connect(proc) as c:
        stored = {p: {r[0]: r[3] for r in fetch(c, "t", p, 0)[3]} for p in (0, 1)}
        for partition, offset, value in acknowledged:
            assert stored[partition][offset] == value
        assert c.call("offset_fetch", {"group_id": "g"})["offsets"] == [["t", 1, 42, ""]]


def test_sigterm_with_parked_fetches_and_joins_exits_cleanly(spawn_server, tmp_path):
    proc = spawn_server("minilog", data_dir=tmp_path / "d")
    c = connect(proc)
    produce(c, "t", 0, batch(values(1)))
    c.send("fetch", {"max_wait_ms": 60_000, "partitions": [["t", 0, 1, 1000]]})
    joined = c.call("join_group", {"group_id": "g", "protocols": [["range", b""]]})
    other = connect(proc)
    other.send("join_group", {"group_id": "g", "protocols": [["range", b""]]})   # parks: a rebalance waits
    other.flush()
    assert joined["generation_id"] == 1
    assert proc.stop() == 0
    c.close()
    other.close()


def test_committed_offsets_survive_compaction_of_the_offsets_topic_and_a_restart(start_minilog):
    from minilog.offsets_store import OFFSETS_TOPIC

    server = start_minilog(offsets_topic_segment_bytes=1024)
    want = {}
    with connect(server) as c:
        produce(c, "gone", 0, batch(values(1)))
        create(c, "t", partitions=3)
        for i in range(120):
            group = "g%d" % (i % 2)
            offsets = [["t", i % 3, i, "m%d" % i]] + ([["gone", 0, i, ""]] if i % 5 == 0 else [])
            c.call("offset_commit", {"group_id": group, "generation_id": -1, "offsets": offsets})
            want[(group, "t", i % 3)] = [i, "m%d" % i]
        c.call("delete_topics", {"topics": ["gone"]})   # tombstones for the deleted topic's commits

        def committed():
            return {g: c.call("offset_fetch", {"group_id": g})["offsets"] for g in ("g0", "g1")}

        expected = {g: [["t", p, *want[(g, "t", p)]] for p in range(3) if (g, "t", p) in want]
                    for g in ("g0", "g1")}
        assert committed() == expected
        plog = server.server.broker.logs.get_log(OFFSETS_TOPIC, 0)

        def stored_records():
            # A read returns one segment's batches: read each segment from its base.
            return [r for seg in plog.segments
                    for r in decode_batches(plog.read_bytes(max(seg.base_offset, plog.log_start_offset), 1 << 24))
                    if seg.base_offset <= r[0] < seg.next_offset]

        # 146 records went in: 120 commits for "t", 24 for "gone", 2 tombstones. (Not "more than
        # 5 segments": the 1-s storage tick may have compacted them already when the commits are
        # slow, on a loaded machine.)
        assert server.call(lambda: plog.log_end_offset) == 146
        server.call(server.server.broker.logs.tick)   # the periodic tick may have compacted already: same result
        # 8 keys + 2 tombstones in the sealed segments, and the few commits of the active one.
        assert len(server.call(stored_records)) < 40 < 120
        assert committed() == expected
    server.restart()
    with connect(server) as c:
        assert {g: c.call("offset_fetch", {"group_id": g})["offsets"] for g in ("g0", "g1")} == expected
        c.call("offset_commit", {"group_id": "g0", "generation_id": -1, "offsets": [["t", 0, 999, "x"]]})
        assert c.call("offset_fetch", {"group_id": "g0", "partitions": [["t", 0]]})["offsets"] == [["t", 0, 999, "x"]]


def test_kill_9_with_a_small_drop_behind_window_keeps_every_record(spawn_server, tmp_path):
    """`--drop-behind-mib 1`: older data is fsynced and dropped from the page cache while new
    data arrives; after a kill -9 every acknowledged record still reads back."""
    proc = spawn_server("minilog", data_dir=tmp_path / "d", extra_args=["--drop-behind-mib", "1"])
    sent = [bytes([i]) * (256 * 1024) for i in range(24)]
    with connect(proc) as c:
        for v in sent:
            assert produce(c, "t", 0, [batch([v])])[0][3] is None
    proc.kill()
    proc.start()
    with connect(proc) as c:
        got, offset = [], 0
        while len(got) < len(sent):
            records = fetch(c, "t", 0, offset, max_bytes=4 << 20)[3]
            got += [r[3] for r in records if r[0] >= offset]
            offset = records[-1][0] + 1
        assert got == sent


def test_drop_behind_takes_a_number_of_mib_or_off(tmp_path):
    import subprocess
    import sys
    from harness import ROOT
    from serverbase.cli import build_parser
    from minilog.server import DEFAULT_DROP_BEHIND_BYTES, MinilogServer
    parser = build_parser(MinilogServer, 0, str(tmp_path))
    assert parser.parse_args([]).drop_behind_mib == DEFAULT_DROP_BEHIND_BYTES
    assert parser.parse_args(["--drop-behind-mib", "off"]).drop_behind_mib is None
    assert parser.parse_args(["--drop-behind-mib", "8"]).drop_behind_mib == 8 << 20
    for bad in ("0", "lots"):
        proc = subprocess.run([sys.executable, "-m", "minilog", "--drop-behind-mib", bad, "--data-dir", str(tmp_path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "--drop-behind-mib" in proc.stderr and "'off'" in proc.stderr, proc.stderr


def test_after_a_kill_9_the_last_appends_are_read_from_the_recovered_file(spawn_server, tmp_path):
    """The records a parked fetch was answered with from memory are the ones read back after a
    kill -9 and recovery (nothing of the answer existed only in the server's memory)."""
    proc = spawn_server("minilog", data_dir=tmp_path / "d")
    with connect(proc) as consumer, connect(proc) as producer:
        produce(producer, "t", 0, batch([b"first"]))
        rid = consumer.send("fetch", {"max_wait_ms": 20_000, "partitions": [["t", 0, 1, 1 << 20]]})
        consumer.flush()
        produce(producer, "t", 0, batch([b"second", b"third"]))
        (_, _, error, _, _, records), = consumer.wait(rid, timeout=30)["results"]
        assert error is None
        live = [(r[0], r[3]) for r in decode_batches(records)]
    proc.kill()
    proc.start()
    with connect(proc) as c:
        assert [(r[0], r[3]) for r in fetch(c, "t", 0, 1)[3]] == live == [(1, b"second"), (2, b"third")]
        assert produce(c, "t", 0, batch([b"fourth"]))[0][2] == 3
        assert record_values(fetch(c, "t", 0, 0)[3]) == [b"first", b"second", b"third", b"fourth"]
