"""The produce path over the wire: acks, base offsets, bad batches, durable acknowledgements."""

import pytest

from clients.protocol.errors import ErrorCode
from clients.record_batch import set_base_offset
from minilog_wire_helpers import batch, connect, create, fetch, produce, record_values, values


@pytest.mark.parametrize("acks", [1, -1])
def test_reply_gives_each_batch_its_base_offset_and_offsets_are_dense(server, acks):
    with connect(server) as c:
        create(c, "t")
        rows = produce(c, "t", 0, [batch(values(3)), batch(values(5)), batch(values(1))], acks=acks)
        assert [r[2] for r in rows] == [0, 3, 8]
        assert all(r[3] is None for r in rows)
        error, hw, start, records = fetch(c, "t", 0, 0)
        assert error is None and hw == 9 and start == 0
        assert [r[0] for r in records] == list(range(9))


def test_several_batches_in_one_entry_share_one_base_offset_reply(server):
    with connect(server) as c:
        produce(c, "t", 0, batch(values(2)))
        rows = produce(c, "t", 0, batch(values(3)) + batch(values(4)))
        assert rows == [["t", 0, 2, None]]
        assert [r[0] for r in fetch(c, "t", 0, 0)[3]] == list(range(9))


def test_one_request_may_write_several_partitions(server):
    with connect(server) as c:
        create(c, "multi", partitions=3)
        data = [["multi", p, batch(values(p + 1))] for p in range(3)] + [["multi", 1, batch(values(2))]]
        rows = c.call("produce", {"acks": 1, "data": data})["results"]
        assert rows == [["multi", 0, 0, None], ["multi", 1, 0, None], ["multi", 2, 0, None],
                        ["multi", 1, 2, None]]


def test_acks_zero_sends_no_reply_but_stores(server):
    with connect(server) as c:
        create(c, "quiet")
        for i in range(50):
            c.send("produce", {"acks": 0, "data": [["quiet", 0, batch([b"%d" % i])]]}, want_reply=False)
        # The ping's reply comes after every produce before it was handled.
        c.call("ping")
        assert c.replies == {} and not c.async_errors
        assert record_values(fetch(c, "quiet", 0, 0)[3]) == [b"%d" % i for i in range(50)]


def test_acks_zero_failure_comes_back_as_an_async_error(server):
    with connect(server) as c:
        bad = bytearray(batch([b"x"]))
        bad[-1] ^= 0xFF
        c.send("produce", {"acks": 0, "data": [["t", 0, bytes(bad)]]}, want_reply=False)
        c.call("ping")
        assert c.async_errors and c.async_errors[0].code == ErrorCode.CORRUPT_MESSAGE


def test_the_server_overwrites_the_client_base_offset(server):
    with connect(server) as c:
        produce(c, "t", 0, batch(values(2)))
        b = bytearray(batch([b"late"]))
        set_base_offset(b, 12345)
        assert produce(c, "t", 0, bytes(b))[0][2] == 2
        assert fetch(c, "t", 0, 2)[3][0][0] == 2


def test_corrupt_batch_is_refused_and_the_connection_stays_usable(server):
    with connect(server) as c:
        good = batch([b"good"])
        bad = bytearray(batch([b"evil"]))
        bad[45] ^= 0x01
        rows = c.call("produce", {"acks": 1, "data": [["t", 0, good], ["t", 0, bytes(bad)], ["t", 0, good]]})
        rows = rows["results"]
        assert rows[0] == ["t", 0, 0, None]
        assert rows[1][2] == -1 and rows[1][3][0] == ErrorCode.CORRUPT_MESSAGE
        assert rows[2] == ["t", 0, 1, None]
        assert record_values(fetch(c, "t", 0, 0)[3]) == [b"good", b"good"]


def test_garbage_and_truncated_batches_are_corrupt_messages(server):
    with connect(server) as c:
        rows = c.call("produce", {"acks": 1, "data": [["t", 0, b"hello"], ["t", 0, batch([b"x"])[:-3]],
                                                       ["t", 0, "text, not bin"], ["t"]]})["results"]
        assert [r[3][0] for r in rows] == [ErrorCode.CORRUPT_MESSAGE, ErrorCode.CORRUPT_MESSAGE,
                                          ErrorCode.BAD_REQUEST, ErrorCode.BAD_REQUEST]
        assert c.call("metadata", {"topics": ["t"]})["topics"]["t"]["partitions"][0]["end_offset"] == 0


def test_batch_over_max_message_bytes_is_too_large(server):
    with connect(server) as c:
        create(c, "small", config={"max.message.bytes": 1000})
        rows = produce(c, "small", 0, [batch([b"x" * 2000]), batch([b"y" * 100])])
        assert rows[0][3][0] == ErrorCode.MESSAGE_TOO_LARGE and "max.message.bytes" in rows[0][3][1]
        assert rows[1] == ["small", 0, 0, None]


def test_bad_acks_or_data_is_a_bad_request(server):
    with connect(server) as c:
        for args in ({"acks": 2, "data": []}, {"acks": 1}, {"acks": 1, "data": "x"}):
            with pytest.raises(Exception) as info:
                c.call("produce", args)
            assert info.value.code == ErrorCode.BAD_REQUEST
        assert c.call("ping")["pong"]


def test_acks_all_replies_only_after_the_flush_and_shares_fsyncs(server):
    with connect(server) as c:
        create(c, "durable")
        before = c.call("server_info")["fsync_rounds"]
        ids = [c.send("produce", {"acks": -1, "data": [["durable", 0, batch([b"%d" % i])]]}) for i in range(200)]
        rows = [c.wait(i)["results"][0] for i in ids]
        assert [r[2] for r in rows] == list(range(200))
        plog = server.call(lambda: server.server.broker.logs.get_log("durable", 0))
        assert server.call(lambda: plog.flushed_offset) >= 200
        rounds = c.call("server_info")["fsync_rounds"] - before
        assert 1 <= rounds < 200   # group commit: many requests per fsync


def test_storage_error_on_append_is_reported_not_fatal(server):
    with connect(server) as c:
        create(c, "disk")
        produce(c, "disk", 0, batch([b"first"]))
        plog = server.call(lambda: server.server.broker.logs.get_log("disk", 0))
        real = plog.active_segment

        def break_disk():
            import os
            fd = real._fd
            real._fd = os.open(os.devnull, os.O_RDONLY)  # writes now fail with EBADF
            return fd

        good_fd = server.call(break_disk)
        rows = produce(c, "disk", 0, batch([b"lost"]))
        assert rows[0][2] == -1 and rows[0][3][0] == ErrorCode.STORAGE_ERROR

        def repair():
            import os
            os.close(real._fd)
            real._fd = good_fd
        server.call(repair)
        assert produce(c, "disk", 0, batch([b"second"]))[0] == ["disk", 0, 1, None]
        assert record_values(fetch(c, "disk", 0, 0)[3]) == [b"first", b"second"]


def test_disk_full_mid_write_gives_storage_error_and_the_next_produce_lands_intact(server, monkeypatch):
    import errno
    import os

    from minilog.storage import segment as segment_module

    class DiskFullOnce:
        failed = False

        def __getattr__(self, name):
            return getattr(os, name)

        def write(self, fd, data):
            if self.failed:
                return os.write(fd, data)
            self.failed = True
            os.write(fd, bytes(data[:len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with connect(server) as c:
        create(c, "full")
        produce(c, "full", 0, batch(values(3)))
        monkeypatch.setattr(segment_module, "os", DiskFullOnce())
        row, = produce(c, "full", 0, batch(values(40, b"lost")))
        assert row[2] == -1 and row[3][0] == ErrorCode.STORAGE_ERROR and "No space" in row[3][1]
        row, = produce(c, "full", 0, batch([b"after"]), acks=-1)
        monkeypatch.undo()
        assert row[2:] == [3, None]
        error, hw, _, records = fetch(c, "full", 0, 0)
        assert error is None and hw == 4
        assert record_values(records) == values(3) + [b"after"]
    server.restart()
    with connect(server) as c:
        assert record_values(fetch(c, "full", 0, 0)[3]) == values(3) + [b"after"]


def test_flush_messages_fsyncs_run_on_the_fsync_thread_not_the_event_loop(server, monkeypatch):
    import os
    import threading

    from harness import wait_until
    from minilog.storage import log as log_module
    from minilog.storage import segment as segment_module

    threads = []

    class RecordingOs:
        def __getattr__(self, name):
            return getattr(os, name)

        def fsync(self, fd):
            threads.append(threading.current_thread().name)
            return os.fsync(fd)

    with connect(server) as c:
        create(c, "synced", config={"flush.messages": 1, "segment.bytes": 300})
        monkeypatch.setattr(log_module, "os", RecordingOs())
        monkeypatch.setattr(segment_module, "os", RecordingOs())
        for i in range(10):
            assert produce(c, "synced", 0, batch([b"x" * 50]))[0][3] is None
        plog = server.server.broker.logs.get_log("synced", 0)
        wait_until(lambda: server.call(lambda: plog.flushed_offset) == 10, message="flush.messages flushes")
        monkeypatch.undo()
    assert threads and all(name.startswith("minilog-fsync") for name in threads), threads
