"""The one-row fetch reply packed in one go (`fetch_response.one_row_frame`) is, byte for byte,
the frame `FetchResponse` writes for that row, and a client decodes it as the same reply."""

import os

from hypothesis import given, settings, strategies as st

from clients.protocol.framing import FrameDecoder
from minilog.fetch_response import (SENDFILE_MIN_BYTES, FetchResponse, one_row_frame, streamed_frame,
                                    streamed_frame_head)
from minilog.storage import FileSlice


class _Written:
    """A transport that keeps what is written (FetchResponse.send takes the slow path: no socket)."""

    def __init__(self):
        self.out = []

    def write(self, data):
        self.out.append(bytes(data))

    def writelines(self, pieces):
        self.out.extend(bytes(p) for p in pieces)

    def get_write_buffer_size(self):
        return 0

    def get_extra_info(self, name, default=None):
        return default

    def is_closing(self):
        return False


class _Conn:
    closed = False

    def __init__(self):
        self.transport = _Written()

    def flush(self):
        pass


def _slow_frame(request_id, row, start=None, more=None) -> bytes:
    conn = _Conn()
    resp = FetchResponse()
    resp.add(*row, start)
    resp.send(conn, request_id, use_sendfile=False, more=more)
    return b"".join(conn.transport.out)


ints = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
errors = st.none() | st.tuples(st.text(max_size=30), st.text(max_size=300)).map(list)


@settings(max_examples=300, deadline=None)
@given(request_id=st.integers(min_value=0, max_value=(1 << 64) - 1), topic=st.text(max_size=249),
       partition=ints, error=errors, hw=ints, start=ints,
       records=st.none() | st.binary(max_size=2000))
def test_the_one_row_frame_is_the_frame_fetch_response_writes(request_id, topic, partition, error, hw, start,
                                                                records):
    row = (topic, partition, error, hw, start, records)
    frame = one_row_frame(request_id, row)
    assert frame == _slow_frame(request_id, row)
    reply = FrameDecoder().feed(frame)
    assert reply == [[1, request_id, {"results": [[topic, partition, error, hw, start, records or b""]]}]]


@settings(max_examples=300, deadline=None)
@given(request_id=st.integers(min_value=0, max_value=(1 << 64) - 1), topic=st.text(max_size=249),
       partition=ints, error=errors, hw=ints, read_from=ints, more=st.none() | st.integers(0, 64),
       records=st.none() | st.binary(max_size=2000))
def test_a_fetch_sessions_one_row_frame_is_the_frame_fetch_response_writes(request_id, topic, partition, error, hw,
                                                                          read_from, more, records):
    """With the offset the row was read from (a seventh field) and a streamed fetch's `more`."""
    row = (topic, partition, error, hw, 0, records)
    frame = one_row_frame(request_id, row, read_from, more)
    assert frame == _slow_frame(request_id, row, read_from, more)
    result = {"results": [[topic, partition, error, hw, 0, records or b"", read_from]]}
    if more is not None:
        result["more"] = more
    assert FrameDecoder().feed(frame) == [[1, request_id, result]]


@settings(max_examples=300, deadline=None)
@given(request_id=st.integers(min_value=0, max_value=(1 << 64) - 1), topic=st.text(max_size=249),
       partition=ints, error=errors, hw=ints, log_start=ints, read_from=ints, more=st.integers(0, 200),
       records=st.none() | st.binary(max_size=2000))
def test_a_streamed_answer_from_its_fetchs_head_is_the_one_row_frame(request_id, topic, partition, error, hw,
                                                                      log_start, read_from, more, records):
    """`streamed_frame` packs only what changes between the answers of one streamed fetch; what
    it cannot pack (an error row, a `more` past a fixint) it leaves to `one_row_frame`."""
    row = (topic, partition, error, hw, log_start, records)
    frame = streamed_frame(streamed_frame_head(request_id, topic, partition), row, read_from, more)
    if error is not None or more > 127:
        assert frame is None
    else:
        assert frame == one_row_frame(request_id, row, read_from, more)


def test_records_read_from_a_file_slice_and_large_ones_left_to_sendfile(tmp_path):
    path = tmp_path / "segment"
    data = os.urandom(SENDFILE_MIN_BYTES + 10)
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        small = FileSlice(fd, 5, 100)
        row = ("t", 0, None, 7, 0, small)
        assert one_row_frame(3, row) == _slow_frame(3, row)
        assert one_row_frame(3, row).endswith(data[5:105])
        in_memory = FileSlice(fd, 5, 100, 9, data[5:105])   # the log's tail: no read of the file
        assert one_row_frame(3, ("t", 0, None, 7, 0, in_memory)) == one_row_frame(3, row)
        assert one_row_frame(3, ("t", 0, None, 7, 0, FileSlice(fd, 0, SENDFILE_MIN_BYTES))) is None
        head = streamed_frame_head(3, "t", 0)
        assert streamed_frame(head, row, 0, 5) == one_row_frame(3, row, 0, 5)
        assert streamed_frame(head, ("t", 0, None, 7, 0, FileSlice(fd, 0, SENDFILE_MIN_BYTES)), 0, 5) is None
    finally:
        os.close(fd)
