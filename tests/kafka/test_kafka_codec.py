"""The Kafka request codec alone (no socket): every request we serve round-trips at every
version we advertise; truncated or garbage frames give KafkaDecodeError, never another error;
ApiVersions at an unknown version is answered with our ranges."""

import struct
import uuid

import pytest
from hypothesis import given, strategies as st

from minilog.kafka import errors
from minilog.kafka.codec import (API_VERSIONS, KafkaDecodeError, KafkaFrameSplitter, UnsupportedVersionError,
                                 compiled, decode_response, encode_request, encode_response, parse_request,
                                 unsupported_api_versions_reply)
from minilog.kafka.messages import APIS, FETCH, METADATA, PRODUCE

VERSIONS = [(api, v) for api in APIS.values() for v in range(api.min_version, api.max_version + 1)]

_INTS = {"int8": (-2**7, 2**7 - 1), "int16": (-2**15, 2**15 - 1), "int32": (-2**31, 2**31 - 1),
         "int64": (-2**63, 2**63 - 1), "uint32": (0, 2**32 - 1)}


def _value(kind, nullable):
    if kind in _INTS:
        s = st.integers(*_INTS[kind])
    elif kind == "bool":
        s = st.booleans()
    elif kind == "string":
        s = st.text(max_size=20)
    elif kind in ("bytes", "records"):
        s = st.binary(max_size=40)
        nullable = nullable or kind == "records"
    elif kind == "uuid":
        s = st.uuids()
    elif kind == "float64":
        s = st.floats(allow_nan=False)
    else:
        raise AssertionError(kind)
    return st.one_of(st.none(), s) if nullable else s


def struct_strategy(fields):
    out = {}
    for name, kind, nullable, sub, _ in fields:
        if kind == "array":
            elem = struct_strategy(sub) if isinstance(sub, tuple) else _value(sub, False)
            s = st.lists(elem, max_size=3)
            out[name] = st.one_of(st.none(), s) if nullable else s
        elif kind == "struct":
            out[name] = struct_strategy(sub)
        else:
            out[name] = _value(kind, nullable)
    return st.fixed_dictionaries(out)


def plain(v):
    """Decoded values with memoryviews as bytes, for comparison."""
    if isinstance(v, memoryview):
        return bytes(v)
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v


@st.composite
def requests(draw):
    api, version = draw(st.sampled_from(VERSIONS))
    body = draw(struct_strategy(compiled(api, version, False)))
    return api, version, body


@given(requests(), st.integers(-2**31, 2**31 - 1), st.one_of(st.none(), st.text(max_size=10)))
def test_any_request_round_trips_through_the_codec(request, correlation_id, client_id):
    api, version, body = request
    frame = encode_request(api, version, correlation_id, client_id, body)
    assert struct.unpack(">i", frame[:4])[0] == len(frame) - 4
    req = parse_request(bytearray(frame[4:]))
    assert (req.api_key, req.api_version, req.correlation_id, req.client_id) == (api.key, version, correlation_id,
                                                                                client_id)
    assert plain(req.body) == body


@st.composite
def responses(draw):
    api, version = draw(st.sampled_from(VERSIONS))
    return api, version, draw(struct_strategy(compiled(api, version, True)))


@given(responses())
def test_any_response_round_trips_through_the_codec(response):
    api, version, body = response
    req = parse_request(bytearray(encode_request(api, version, 42, "c", {})[4:]))
    data = b"".join(encode_response(req, body))
    correlation_id, decoded = decode_response(api, version, data[4:])
    assert correlation_id == 42 and plain(decoded) == body


@given(requests(), st.data())
def test_a_truncated_request_gives_a_decode_error(request, data):
    api, version, body = request
    frame = encode_request(api, version, 1, "c", body)[4:]
    cut = data.draw(st.integers(0, len(frame) - 1))
    with pytest.raises(KafkaDecodeError):
        parse_request(bytearray(frame[:cut]))


@given(st.binary(max_size=200))
def test_garbage_gives_a_request_or_a_decode_error_and_nothing_else(garbage):
    try:
        parse_request(bytearray(garbage))
    except KafkaDecodeError:
        pass


@given(requests(), st.data())
def test_a_flipped_byte_gives_a_request_or_a_decode_error(request, data):
    api, version, body = request
    frame = bytearray(encode_request(api, version, 1, "c", body)[4:])
    i = data.draw(st.integers(0, len(frame) - 1))
    frame[i] ^= data.draw(st.integers(1, 255))
    try:
        parse_request(frame)
    except KafkaDecodeError:
        pass


def test_an_unknown_api_key_or_version_is_refused_by_name():
    with pytest.raises(UnsupportedVersionError, match="unknown API key 999"):
        parse_request(bytearray(struct.pack(">hhih", 999, 0, 1, -1)))
    with pytest.raises(UnsupportedVersionError, match=r"Produce v2 is not served; versions 3-9"):
        parse_request(bytearray(struct.pack(">hhih", PRODUCE.key, 2, 1, -1)))


def test_api_versions_at_an_unknown_version_is_answered_with_v0_and_our_ranges():
    # A newer client's ApiVersions body may have fields we do not know; we must not read it.
    req = parse_request(bytearray(struct.pack(">hhih", API_VERSIONS.key, 99, 5, -1) + b"\x07junk"))
    data = b"".join(unsupported_api_versions_reply(req))
    correlation_id, body = decode_response(API_VERSIONS, 0, data[4:])
    assert correlation_id == 5 and body["error_code"] == errors.UNSUPPORTED_VERSION
    ranges = {k["api_key"]: (k["min_version"], k["max_version"]) for k in body["api_keys"]}
    assert ranges[FETCH.key] == (FETCH.min_version, FETCH.max_version)
    assert set(ranges) == set(APIS)


def test_flexible_versions_use_compact_strings_and_tagged_fields():
    frame = encode_request(METADATA, 9, 3, "c", {"topics": [{"name": "ab"}], "allow_auto_topic_creation": True})
    # header v2: client id keeps its int16 length, then an empty tagged-field section
    assert frame[4:].startswith(struct.pack(">hhih", 3, 9, 3, 1) + b"c" + b"\x00")
    body = frame[4 + 12:]
    assert body == b"\x02" + b"\x03ab" + b"\x00" + b"\x01" + b"\x00\x00" + b"\x00"


def test_unknown_tagged_fields_are_skipped():
    frame = bytearray(encode_request(METADATA, 9, 3, "c", {"topics": None})[4:])
    # replace the header's empty tagged section with one tagged field (tag 7, 2 bytes)
    assert frame[11] == 0
    frame[11:12] = b"\x01\x07\x02zz"
    assert parse_request(frame).body["topics"] is None


def test_frames_are_split_across_any_reads_and_bounded():
    frames = [encode_request(METADATA, 1, i, "c", {"topics": []}) for i in range(3)]
    stream = b"".join(frames)
    splitter = KafkaFrameSplitter(1024)
    got = []
    for i in range(0, len(stream), 5):
        got += splitter.feed(stream[i:i + 5])
    assert [bytes(f) for f in got] == [f[4:] for f in frames] and splitter.buffered == 0
    with pytest.raises(KafkaDecodeError, match="outside 0..1024"):
        KafkaFrameSplitter(1024).feed(struct.pack(">i", 1025))
    with pytest.raises(KafkaDecodeError):
        KafkaFrameSplitter(1024).feed(struct.pack(">i", -5))


def test_uuid_fields_decode_as_uuids():
    # Not used by the APIs we serve today, but part of the primitive set.
    from minilog.kafka.primitives import Reader, Writer
    w = Writer()
    u = uuid.uuid4()
    w.uuid(u)
    assert Reader(bytes(w.buf)).uuid() == u


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=8), st.lists(st.integers(1, 400), max_size=20))
def test_frames_come_out_whole_however_the_stream_is_cut(bodies, cuts):
    stream = b"".join(struct.pack(">i", len(b)) + b for b in bodies)
    splitter = KafkaFrameSplitter(1024)
    got, pos = [], 0
    for cut in cuts + [len(stream)]:
        got += splitter.feed(stream[pos:pos + cut])
        pos += cut
    assert [bytes(f) for f in got] == bodies and splitter.buffered == 0


def test_a_large_frame_is_received_in_place_and_its_memory_reused_for_the_next():
    big = KafkaFrameSplitter.RECYCLE_MIN + 10
    splitter = KafkaFrameSplitter(4 * big)
    first_body = bytes(range(256)) * (big // 256) + b"x" * (big % 256)
    assert splitter.feed(struct.pack(">i", big) + first_body[:100]) == []
    into = splitter.unfilled()
    assert len(into) == big - 100
    into[:1000] = first_body[100:1100]                 # as a socket's recv_into would
    assert splitter.filled(1000) == []
    splitter.unfilled()[:] = first_body[1100:]
    (first,) = splitter.filled(big - 1100)
    assert bytes(first) == first_body and splitter.buffered == 0
    memory = first.obj
    splitter.recycle(first)
    second_body = b"y" * (big - 5)
    (second,) = splitter.feed(struct.pack(">i", len(second_body)) + second_body)
    assert bytes(second) == second_body and second.obj is memory  # the same memory, lent once
    (third,) = splitter.feed(struct.pack(">i", big) + first_body)
    assert bytes(third) == first_body and third.obj is not memory  # the spare was still lent
    splitter.recycle(second)
    splitter.feed(struct.pack(">i", 3) + b"abc")                  # a small frame drops the spare
    (fourth,) = splitter.feed(struct.pack(">i", big) + first_body)
    assert fourth.obj is not memory
