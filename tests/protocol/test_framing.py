"""The sans-IO codec alone: frames survive any split, bad bytes give the documented errors."""

import struct

import msgpack
import pytest
from hypothesis import given, strategies as st

from clients.protocol import frames
from clients.protocol.client_state import ClientConnectionState
from clients.protocol.errors import BrokerError, CorruptFrame, ErrorCode, FrameTooLarge
from clients.protocol.framing import (NOT_ONE_FRAME, BufferedFrameDecoder, FrameDecoder, decode_one_frame,
                                     decode_whole_frames, encode_frame, encode_frame_parts, new_packer)

# Values msgpack can carry and bring back unchanged (lists stay lists, str vs bin kept apart).
msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=50) | st.binary(max_size=200),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)


@given(messages=st.lists(msgpack_values, max_size=30), cuts=st.lists(st.integers(0, 10_000), max_size=20))
def test_any_messages_cut_anywhere_decode_to_the_same_list(messages, cuts):
    stream = b"".join(encode_frame(m) for m in messages)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0] + points, points + [len(stream)])]
    decoder = FrameDecoder()
    decoded = []
    for piece in pieces:
        decoded.extend(decoder.feed(piece))
    assert decoded == messages
    assert decoder.buffered == 0


@given(value=st.recursive(msgpack_values | st.binary(min_size=0, max_size=70_000).filter(lambda b: len(b) > 250)
                          | st.binary(min_size=251, max_size=2_000).map(bytearray)
                          | st.tuples(st.integers(-(2**63), 2**64 - 1), st.binary(max_size=300)),
                          lambda children: st.lists(children, max_size=4) | st.tuples(children, children)
                          | st.dictionaries(st.text(max_size=10), children, max_size=4), max_leaves=10),
       min_blob=st.sampled_from([1, 256, 16 * 1024]))
def test_a_frame_in_parts_is_the_frame_and_leaves_large_values_uncopied(value, min_blob):
    parts = encode_frame_parts(value, new_packer(), min_blob)
    assert b"".join(parts) == encode_frame(value)
    # Each bytes value of min_blob bytes or more is one of the parts: the object itself.
    large = []

    def find(o):
        if isinstance(o, dict):
            for k, v in o.items():
                find(k)
                find(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                find(v)
        elif o.__class__ in (bytes, bytearray) and len(o) >= min_blob:
            large.append(o)
    find(value)
    assert [p for p in parts if any(p is o for o in large)] == large


def test_a_request_in_parts_keeps_its_batches_and_is_refused_over_max_frame():
    state = ClientConnectionState(max_frame=200_000)
    batch = b"b" * 100_000
    rid, parts = state.encode_request_parts("produce", {"acks": 1, "data": [["t", 0, batch]]})
    assert rid == 1 and any(p is batch for p in parts)
    assert FrameDecoder(200_000).feed(b"".join(parts)) == [[frames.REQUEST, 1, "produce",
                                                            {"acks": 1, "data": [["t", 0, batch]]}]]
    with pytest.raises(FrameTooLarge):
        state.encode_request_parts("produce", {"acks": 1, "data": [["t", 0, batch], ["t", 1, batch]]})


@given(messages=st.lists(msgpack_values, min_size=1, max_size=10))
def test_byte_at_a_time_feed_decodes(messages):
    stream = b"".join(encode_frame(m) for m in messages)
    decoder = FrameDecoder()
    decoded = []
    for i in range(len(stream)):
        decoded.extend(decoder.feed(stream[i:i + 1]))
    assert decoded == messages


def test_bytes_travel_as_bin_and_text_as_str():
    payload = bytes(range(256))
    [obj] = FrameDecoder().feed(encode_frame({"body": payload, "name": "q"}))
    assert type(obj["body"]) is bytes and obj["body"] == payload
    assert type(obj["name"]) is str


def test_oversized_length_prefix_is_refused_before_the_body_arrives():
    decoder = FrameDecoder(max_frame=1024)
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(struct.pack(">I", 1025))
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE
    assert "1025" in info.value.message and "1024" in info.value.message


def test_frame_at_the_limit_is_accepted():
    body = msgpack.packb(b"x" * (1024 - 3))
    assert len(body) == 1024
    assert FrameDecoder(max_frame=1024).feed(struct.pack(">I", 1024) + body) == [b"x" * 1021]


@given(garbage=st.binary(min_size=1, max_size=64))
def test_garbage_body_raises_corrupt_frame_or_decodes(garbage):
    decoder = FrameDecoder()
    try:
        out = decoder.feed(struct.pack(">I", len(garbage)) + garbage)
    except CorruptFrame as exc:
        assert exc.code == ErrorCode.CORRUPT_FRAME
    else:
        # Some byte strings are one valid msgpack object; then it must equal a plain unpack.
        assert out == [msgpack.unpackb(garbage, raw=False, strict_map_key=False)]


def test_trailing_bytes_inside_a_frame_are_corrupt():
    body = msgpack.packb(1) + msgpack.packb(2)
    with pytest.raises(CorruptFrame):
        FrameDecoder().feed(struct.pack(">I", len(body)) + body)


@pytest.mark.parametrize("obj", [None, 5, "x", [], [9, 1, "ping", {}], [0, -1, "ping", {}], [0, 1, 7, {}], [1, 2, 3]])
def test_bad_envelopes_are_bad_requests(obj):
    with pytest.raises(BrokerError) as info:
        frames.parse_request(obj)
    assert info.value.code == ErrorCode.BAD_REQUEST


def test_request_envelope_round_trip():
    req = frames.parse_request(FrameDecoder().feed(encode_frame(frames.request(7, "ping", {"a": 1})))[0])
    assert req == frames.Request(7, "ping", {"a": 1})


def test_client_state_turns_server_bytes_into_events():
    state = ClientConnectionState()
    data = (encode_frame(frames.response(1, {"ok": True})) + encode_frame(frames.error(2, "NOT_FOUND", "no queue 'q'"))
            + encode_frame(frames.push("deliver", [1, 2])))
    events = state.receive_data(data[:5]) + state.receive_data(data[5:])
    assert events == [frames.Response(1, {"ok": True}), frames.ErrorReply(2, "NOT_FOUND", "no queue 'q'"),
                      frames.Push("deliver", [1, 2])]


def test_client_state_refuses_to_send_an_oversized_frame():
    state = ClientConnectionState(max_frame=2048)
    with pytest.raises(FrameTooLarge):
        state.encode_request("publish", {"body": b"x" * 4096})


class _SmallBufferedDecoder(BufferedFrameDecoder):
    """Starts with 64 bytes, so hypothesis' small frames exercise the moves and the growth."""
    __slots__ = ()
    INITIAL_SIZE = 64


@given(messages=st.lists(msgpack_values, max_size=30), rooms=st.lists(st.integers(1, 300), min_size=1, max_size=20))
def test_received_into_the_buffer_any_messages_decode_to_the_same_list(messages, rooms):
    """Receiving into `get_buffer()` at most `room` bytes at a time (a short recv) decodes the
    stream as FrameDecoder does; frames larger than the buffer make it grow to fit them."""
    stream = b"".join(encode_frame(m) for m in messages)
    decoder = _SmallBufferedDecoder()
    decoded, pos, i = [], 0, 0
    while pos < len(stream):
        buf = decoder.get_buffer()
        assert len(buf) > 0
        n = min(len(buf), rooms[i % len(rooms)], len(stream) - pos)
        i += 1
        buf[:n] = stream[pos:pos + n]
        buf.release()
        pos += n
        decoded.extend(decoder.buffer_updated(n))
    assert decoded == messages
    assert decoder.buffered == 0
    largest = max((len(encode_frame(m)) for m in messages), default=0)
    assert len(decoder._buf) <= max(64, largest)


@given(messages=st.lists(msgpack_values, max_size=10), cuts=st.lists(st.integers(0, 10_000), max_size=10))
def test_buffered_decoder_feed_matches_frame_decoder(messages, cuts):
    stream = b"".join(encode_frame(m) for m in messages)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    decoder, decoded = _SmallBufferedDecoder(), []
    for a, b in zip([0] + points, points + [len(stream)]):
        decoded.extend(decoder.feed(stream[a:b]))
    assert decoded == messages


def test_buffered_decoder_keeps_one_buffer_across_frames():
    """Reused, not reallocated: the point of the class (page faults on fresh memory)."""
    decoder = BufferedFrameDecoder()
    buf = decoder._buf
    frame = encode_frame(b"x" * 300_000)
    for _ in range(20):
        view = decoder.get_buffer()
        view[:len(frame)] = frame
        view.release()
        assert decoder.buffer_updated(len(frame)) == [b"x" * 300_000]
    assert decoder._buf is buf and len(buf) == BufferedFrameDecoder.INITIAL_SIZE


def test_buffered_decoder_refuses_an_oversized_length_and_garbage():
    decoder = BufferedFrameDecoder(max_frame=1024)
    with pytest.raises(FrameTooLarge):
        decoder.feed(struct.pack(">I", 1025))
    body = msgpack.packb(1) + msgpack.packb(2)
    with pytest.raises(CorruptFrame):
        BufferedFrameDecoder().feed(struct.pack(">I", len(body)) + body)


@given(messages=st.lists(msgpack_values, max_size=3), cut=st.integers(0, 10_000), garbage=st.binary(max_size=40))
def test_decode_one_frame_answers_only_for_exactly_one_whole_frame(messages, cut, garbage):
    """The server's shortcut for a read holding one request (`ClientConnection.data_received`):
    the object `FrameDecoder.feed` would give, or NOT_ONE_FRAME for anything else (several
    frames, part of one, a length over the limit, bytes that are not msgpack), which `feed`
    then handles as always."""
    stream = b"".join(encode_frame(m) for m in messages)
    for data in (stream, stream[:cut % (len(stream) + 1)], garbage, struct.pack(">I", len(garbage)) + garbage):
        got = decode_one_frame(data, 1 << 20)
        try:
            fed = FrameDecoder(1 << 20).feed(data)
            whole = len(fed) == 1 and FrameDecoder(1 << 20).feed(data) == fed and \
                len(data) == 4 + struct.unpack(">I", data[:4])[0]
        except (CorruptFrame, FrameTooLarge):
            whole = False
        if whole:
            assert got == fed[0]
        else:
            assert got is NOT_ONE_FRAME
    too_large = encode_frame(b"x" * 100)
    assert decode_one_frame(too_large, 50) is NOT_ONE_FRAME
    with pytest.raises(FrameTooLarge):
        FrameDecoder(50).feed(too_large)


@given(messages=st.lists(msgpack_values, max_size=4), cut=st.integers(0, 10_000), garbage=st.binary(max_size=40))
def test_decode_whole_frames_gives_what_the_decoder_completes_and_where_the_rest_starts(messages, cut, garbage):
    """The log connection's one-step read (`LogConnection.receive_replies`): for any read
    (whole frames, a cut anywhere, garbage) the frames `FrameDecoder.feed` completes and the
    start of the bytes it would keep, or None exactly when `feed` raises."""
    stream = b"".join(encode_frame(m) for m in messages)
    for data in (stream, stream[:cut % (len(stream) + 1)], garbage, struct.pack(">I", len(garbage)) + garbage):
        got = decode_whole_frames(data, 1 << 20)
        decoder = FrameDecoder(1 << 20)
        try:
            fed = decoder.feed(data)
        except (CorruptFrame, FrameTooLarge):
            assert got is None
            continue
        assert got is not None
        frames, rest = got
        assert frames == fed and len(data) - rest == decoder.buffered
    assert decode_whole_frames(encode_frame(b"x" * 100), 50) is None
