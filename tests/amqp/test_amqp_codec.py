"""The sans-IO AMQP codec alone (minibroker/amqp/codec.py, spec.py, fields.py, properties.py):
any split of a valid stream decodes the same, every method and property round-trips, field
tables carry every type, and garbage gives the documented frame error, never another exception."""

import decimal

import pytest
from hypothesis import given, strategies as st

from minibroker.amqp import codec, spec
from minibroker.amqp.fields import decode_table, encode_table
from minibroker.amqp.properties import BASIC_PROPERTIES
from minibroker.amqp.spec import METHODS, PROTOCOL_HEADER, AMQPError, AMQPFrameError, m

FRAME_MAX = 4096
MAX_BODY = 1 << 20

names = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20).filter(lambda s: len(s.encode()) <= 255)
scalars = (st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 63) - 1)
           | st.floats(allow_nan=False) | st.text(max_size=30) | st.binary(max_size=30))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(names, inner, max_size=4),
                      max_leaves=12)
tables = st.dictionaries(names, values, max_size=6)

properties = st.fixed_dictionaries({}, optional={
    "content_type": names, "content_encoding": names, "headers": tables,
    "delivery_mode": st.integers(1, 2), "priority": st.integers(0, 255), "correlation_id": names,
    "reply_to": names, "expiration": st.integers(0, 10**9).map(str), "message_id": names,
    "timestamp": st.integers(0, (1 << 63) - 1), "type": names, "user_id": names,
    "app_id": names, "cluster_id": names}).map(lambda d: d or None)


def _arg_strategy(spec_, field):
    kinds = dict(_field_kinds(spec_))
    kind = kinds[field]
    return {"octet": st.integers(0, 255), "short": st.integers(0, 65535), "long": st.integers(0, (1 << 32) - 1),
            "longlong": st.integers(0, (1 << 64) - 1), "timestamp": st.integers(0, (1 << 64) - 1),
            "shortstr": names, "longstr": st.binary(max_size=40), "bit": st.booleans(),
            "table": tables}[kind]


def _field_kinds(spec_):
    for line in spec.METHOD_TABLE.splitlines():
        words = line.split()
        if line.startswith(" ") and words[1] == spec_.name.split(".")[1]:
            rest = [w for w in words[2:] if ":" in w]
            if [w.split(":")[0] for w in rest] == spec_.fields:
                return [tuple(w.split(":")) for w in rest]
    raise AssertionError(spec_.name)


@st.composite
def method_args(draw, content=False):
    spec_ = draw(st.sampled_from([s for s in METHODS.values() if s.content == content]))
    return spec_.args(*[draw(_arg_strategy(spec_, f)) for f in spec_.fields])


@st.composite
def commands(draw):
    ch = draw(st.integers(1, 65535))
    if draw(st.booleans()):
        return (ch, draw(method_args()), None, None)
    return (ch, draw(method_args(content=True)), draw(properties), draw(st.binary(max_size=10000)))


def encode(cmds):
    out = [PROTOCOL_HEADER]
    for ch, args, props, body in cmds:
        if body is None:
            out.append(codec.frame_method(ch, args))
        else:
            out.extend(codec.frame_content(ch, args, props, body, FRAME_MAX))
    return b"".join(out)


def normalise(cmds):
    """Tables decode floats as themselves, tuples as lists and absent tables as {}."""
    out = []
    for ch, args, props, body in cmds:
        args = args._replace(**{f: {} for f in args._fields if f == "arguments" and getattr(args, f) is None})
        out.append((ch, args, props, body))
    return out


@given(st.lists(commands(), min_size=1, max_size=6), st.data())
def test_any_split_of_a_valid_stream_decodes_the_same(cmds, data):
    stream = encode(cmds)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    reader = codec.CommandReader(FRAME_MAX, MAX_BODY)
    got = []
    last = 0
    for cut in cuts + [len(stream)]:
        got.extend(reader.feed(stream[last:cut]))
        last = cut
    assert got == normalise(cmds)
    assert reader.buffered == 0


@given(tables)
def test_field_tables_round_trip_every_type(table):
    raw = encode_table(table)
    decoded, end = decode_table(raw, 0, len(raw))
    assert end == len(raw)
    assert decoded == _as_decoded(table)


def _as_decoded(v):
    if isinstance(v, dict):
        return {k: _as_decoded(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_as_decoded(x) for x in v]
    return v


def test_field_types_as_rabbitmq_writes_them():
    # Built by hand from RabbitMQ's type octets (not our encoder): s is a signed 16-bit int,
    # i an unsigned 32-bit int, l a signed 64-bit int, x a byte array, D a decimal.
    def entry(name, kind, payload):
        return bytes([len(name)]) + name.encode() + kind + payload
    body = b"".join([
        entry("b", b"b", b"\xff"), entry("B", b"B", b"\xff"), entry("s", b"s", b"\xff\xfe"),
        entry("u", b"u", b"\xff\xfe"), entry("I", b"I", b"\xff\xff\xff\xff"), entry("i", b"i", b"\xff\xff\xff\xff"),
        entry("l", b"l", b"\xff" * 8), entry("f", b"f", b"\x3f\xc0\x00\x00"), entry("d", b"d", b"\x3f\xf8" + b"\0" * 6),
        entry("D", b"D", b"\x02\x00\x00\x01\x00"), entry("S", b"S", b"\x00\x00\x00\x02hi"),
        entry("x", b"x", b"\x00\x00\x00\x02\xff\x00"), entry("t", b"t", b"\x01"), entry("V", b"V", b""),
        entry("T", b"T", b"\x00\x00\x00\x00\x00\x00\x00\x05"),
        entry("A", b"A", b"\x00\x00\x00\x03Vt\x00"),
    ])
    table, _ = decode_table(len(body).to_bytes(4, "big") + body, 0, len(body) + 4)
    assert table == {"b": -1, "B": 255, "s": -2, "u": 65534, "I": -1, "i": (1 << 32) - 1, "l": -1,
                     "f": 1.5, "d": 1.5, "D": "2.56", "S": "hi", "x": b"\xff\x00",
                     "t": True, "V": None, "T": 5, "A": [None, False]}


@given(st.integers(0, (1 << 32) - 1), st.integers(0, 9))
def test_decimals_and_timestamps_decode_to_values_msgpack_can_carry(unscaled, scale):
    """The core stores headers as msgpack (serverbase/schema.py): a decimal arrives as its text,
    a timestamp as its seconds."""
    import datetime
    value = decimal.Decimal(unscaled).scaleb(-scale)
    when = datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc)
    raw = encode_table({"d": value, "t": when})
    assert raw[4 + 2:4 + 3] == b"D"
    table, _ = decode_table(raw, 0, len(raw))
    assert decimal.Decimal(table["d"]) == value and table["t"] == int(when.timestamp())


@given(properties)
def test_all_fourteen_basic_properties_round_trip(props):
    stream = encode([(1, m.BasicPublish(exchange="x", routing_key="k"), props, b"body")])
    (got,) = codec.CommandReader(FRAME_MAX, MAX_BODY).feed(stream)
    assert got[2] == props


def test_the_property_table_has_fourteen_entries_in_wire_order():
    assert [n for n, _ in BASIC_PROPERTIES][:3] == ["content_type", "content_encoding", "headers"]
    assert len(BASIC_PROPERTIES) == 14


def test_a_body_is_split_at_frame_max():
    frames = codec.frame_content(1, m.BasicPublish(routing_key="q"), None, b"x" * 10000, FRAME_MAX)
    bodies = frames[2:]
    assert [len(f) for f in bodies] == [FRAME_MAX, FRAME_MAX, 10000 - 2 * (FRAME_MAX - 8) + 8]


def _publish_frames(body=b"hi"):
    return b"".join(codec.frame_content(1, m.BasicPublish(routing_key="q"), None, body, FRAME_MAX))


@pytest.mark.parametrize("stream, code", [
    (_publish_frames()[:-1] + b"\x00", spec.FRAME_ERROR),                             # bad frame end
    (codec.frame_raw(9, 0, b""), spec.FRAME_ERROR),                                    # unknown frame type
    (codec.frame_raw(8, 3, b""), spec.FRAME_ERROR),                                    # heartbeat off channel 0
    (codec.FRAME.pack(1, 1, FRAME_MAX) + b"\0" * 20, spec.FRAME_ERROR),                 # oversized frame
    (codec.frame_raw(1, 1, b"\x00\x3c"), spec.SYNTAX_ERROR),                            # truncated method
    (codec.frame_raw(1, 1, b"\x00\x32\x00\x0a\x00\x00\xff"), spec.SYNTAX_ERROR),         # shortstr past the end
    (codec.frame_raw(1, 1, b"\x00\x63\x00\x01"), spec.COMMAND_INVALID),                 # unknown class
    (codec.frame_raw(1, 1, b"\x00\x3c\x00\x63"), spec.COMMAND_INVALID),                 # unknown method
    (codec.frame_raw(3, 1, b"body"), spec.UNEXPECTED_FRAME),                            # body without method
    (codec.frame_raw(2, 1, bytes(14)), spec.UNEXPECTED_FRAME),                          # header without method
    (codec.frame_method(1, m.BasicPublish()) + codec.frame_method(1, m.BasicQos()), spec.UNEXPECTED_FRAME),
    (codec.frame_method(1, m.BasicPublish()) + codec.frame_header(1, 2, None)
     + codec.frame_raw(3, 1, b"abc"), spec.FRAME_ERROR),                               # body longer than announced
])
def test_garbage_gives_the_documented_frame_error(stream, code):
    reader = codec.CommandReader(FRAME_MAX, MAX_BODY)
    with pytest.raises(AMQPFrameError) as err:
        reader.feed(PROTOCOL_HEADER + stream)
    assert err.value.code == code
    assert err.value.hard


def test_a_wrong_protocol_header_is_refused_at_once():
    with pytest.raises(codec.BadProtocolHeader):
        codec.CommandReader(FRAME_MAX, MAX_BODY).feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(codec.BadProtocolHeader):
        codec.CommandReader(FRAME_MAX, MAX_BODY).feed(b"AMQP\x00\x00\x09\x00")
    assert codec.CommandReader(FRAME_MAX, MAX_BODY).feed(b"AMQ") == []


def test_a_message_over_the_size_limit_refuses_the_command_and_skips_its_body():
    reader = codec.CommandReader(FRAME_MAX, 100)
    stream = PROTOCOL_HEADER + _publish_frames(b"x" * 5000) + _publish_frames(b"ok")
    out = reader.feed(stream)
    assert isinstance(out[0][1], AMQPError) and out[0][1].code == spec.PRECONDITION_FAILED
    assert out[1][3] == b"ok" and len(out) == 2


@given(st.binary(max_size=300), st.integers(0, 300))
def test_random_bytes_raise_only_documented_errors(garbage, cut):
    reader = codec.CommandReader(FRAME_MAX, MAX_BODY)
    stream = PROTOCOL_HEADER + garbage
    try:
        reader.feed(stream[:cut])
        reader.feed(stream[cut:])
    except AMQPFrameError as exc:
        assert 501 <= exc.code <= 506


@given(st.lists(commands(), min_size=1, max_size=3), st.integers(0, 10**6), st.binary(min_size=1, max_size=4))
def test_corrupting_a_valid_stream_raises_only_documented_errors(cmds, where, junk):
    stream = bytearray(encode(cmds))
    i = 8 + where % (len(stream) - 8)
    stream[i:i + len(junk)] = junk
    try:
        codec.CommandReader(FRAME_MAX, MAX_BODY).feed(bytes(stream))
    except AMQPFrameError as exc:
        assert 501 <= exc.code <= 506


def test_unfinished_bodies_across_channels_are_bounded():
    reader = codec.CommandReader(FRAME_MAX, 1000)
    stream = PROTOCOL_HEADER
    for ch in (1, 2):
        stream += codec.frame_method(ch, m.BasicPublish(routing_key="q")) + codec.frame_header(ch, 1000, None)
    assert reader.feed(stream) == []              # 2 x 1000 bytes announced: at the limit
    reader.drop_channel(2)                          # a closed channel gives its share back
    reader.feed(codec.frame_method(2, m.BasicPublish()) + codec.frame_header(2, 1000, None))
    with pytest.raises(AMQPFrameError) as err:
        reader.feed(codec.frame_method(3, m.BasicPublish()) + codec.frame_header(3, 1, None))
    assert err.value.code == spec.RESOURCE_ERROR
