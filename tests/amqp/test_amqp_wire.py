"""Bad input on minibroker's AMQP listener, sent byte by byte with a bare client: each closes
the channel or the connection with the documented reply code, and never the server or the
other connections. Also heartbeats: a silent peer is closed and its unacked messages requeued."""

import socket

import pika
import pytest

from amqp_wire_client import WireClient
from harness import wait_until
from minibroker.amqp import codec, spec
from minibroker.amqp.spec import PROTOCOL_HEADER, m

pytestmark = pytest.mark.timeout(60)


def _client(amqp_server):
    return WireClient(amqp_server.host, amqp_server.port)


def test_a_wrong_protocol_header_gets_ours_back_and_the_socket_closed(amqp_server):
    with socket.create_connection((amqp_server.host, amqp_server.port), timeout=10) as s:
        s.sendall(b"AMQP\x01\x01\x00\x0a")
        got = b""
        while True:
            chunk = s.recv(100)
            if not chunk:
                break
            got += chunk
    assert got == PROTOCOL_HEADER


@pytest.mark.parametrize("garbage, code", [
    (codec.frame_raw(1, 1, b"\x00\x3c\x00\x28\x00\x00")[:-1] + b"\x00", spec.FRAME_ERROR),   # no frame-end
    (codec.FRAME.pack(1, 0, 1 << 24) + b"x" * 100, spec.FRAME_ERROR),                          # oversized
    (codec.frame_raw(7, 0, b""), spec.FRAME_ERROR),                                             # unknown type
    (codec.frame_raw(1, 1, b"\x00\x3c\x00\x28\x00"), spec.SYNTAX_ERROR),                        # truncated args
    (codec.frame_raw(1, 1, b"\x00\x63\x00\x0a"), spec.COMMAND_INVALID),                         # unknown class
    (codec.frame_raw(1, 1, b"\x00\x3c\x00\x63"), spec.COMMAND_INVALID),                         # unknown method
    (codec.frame_raw(3, 1, b"stray body"), spec.UNEXPECTED_FRAME),                              # body, no method
    (codec.frame_method(1, m.QueueDeclare(queue="q")), spec.CHANNEL_ERROR),                     # channel not open
    (codec.frame_method(0, m.QueueDeclare(queue="q")), spec.COMMAND_INVALID),                   # channel 0
    (codec.frame_method(1, m.BasicConsumeOk("t")), spec.COMMAND_INVALID),                        # server-only method
])
def test_bad_input_closes_the_connection_with_the_documented_code(amqp_server, garbage, code):
    bystander = pika.BlockingConnection(amqp_server.pika_params())
    c = _client(amqp_server).handshake()
    c.send(garbage)
    ch, close, _, _ = c.expect(m.ConnectionClose)
    assert (ch, close.reply_code) == (0, code), close.reply_text
    c.method(0, m.ConnectionCloseOk())
    assert c.closed_by_server()
    # the server and the other connection are untouched
    assert bystander.channel().queue_declare("", exclusive=True).method.queue
    bystander.close()


def test_a_method_on_a_channel_being_closed_is_ignored_until_close_ok(amqp_server):
    c = _client(amqp_server).handshake()
    c.open_channel(1)
    c.method(1, m.QueueDeclare(queue="missing", passive=True))
    _, close, _, _ = c.expect(m.ChannelClose)
    assert close.reply_code == 404 and (close.class_id, close.method_id) == (50, 10)
    c.method(1, m.QueueDeclare(queue="", exclusive=True))     # dropped: the channel is closing
    c.method(1, m.ChannelCloseOk())
    c.open_channel(1)                                           # the number can be used again
    c.method(1, m.QueueDeclare(queue="", exclusive=True))
    _, ok, _, _ = c.expect(m.QueueDeclareOk)
    assert ok.queue.startswith("amq.gen-")


def test_a_message_over_the_size_limit_closes_only_its_channel(start_minibroker):
    thread = start_minibroker(amqp_port=0, max_frame=8192)
    c = WireClient(thread.host, thread.server.listener("amqp").port).handshake()
    c.open_channel(1)
    c.open_channel(2)
    c.send(b"".join(codec.frame_content(1, m.BasicPublish(routing_key="q"), None, b"x" * 20000, 4096)))
    _, close, _, _ = c.expect(m.ChannelClose)
    assert close.reply_code == 406 and "max size" in close.reply_text
    c.method(2, m.QueueDeclare(queue="", exclusive=True))
    c.expect(m.QueueDeclareOk)


def test_a_silent_peer_is_closed_and_its_unacked_messages_requeued(amqp_server):
    producer = pika.BlockingConnection(amqp_server.pika_params())
    pch = producer.channel()
    q = pch.queue_declare("hb-queue").method.queue
    pch.basic_publish("", q, b"held")
    c = _client(amqp_server).handshake(heartbeat=1)
    c.open_channel(1)
    c.method(1, m.BasicGet(queue=q))
    c.expect(m.BasicGetOk)
    assert pch.queue_declare(q, passive=True).method.message_count == 0
    # Now say nothing at all: after two missed heartbeats the server closes the socket.
    assert c.closed_by_server(timeout=10)
    wait_until(lambda: pch.queue_declare(q, passive=True).method.message_count == 1, timeout=10,
               message="the silent peer's unacked message back in its queue")
    method, _, body = pch.basic_get(q, auto_ack=True)
    assert body == b"held" and method.redelivered
    producer.close()


def test_the_server_sends_heartbeats_when_it_has_nothing_else_to_say(amqp_server):
    c = _client(amqp_server).handshake(heartbeat=1)
    c.sock.settimeout(5)
    data = c.sock.recv(100)
    assert data == codec.HEARTBEAT_FRAME


def test_a_frame_max_below_the_minimum_is_refused_with_530(amqp_server):
    c = _client(amqp_server)
    c.send(PROTOCOL_HEADER)
    c.expect(m.ConnectionStart)
    c.method(0, m.ConnectionStartOk({}, "PLAIN", b"\x00guest\x00guest", "en_US"))
    c.expect(m.ConnectionTune)
    c.method(0, m.ConnectionTuneOk(0, 1024, 0))
    _, close, _, _ = c.expect(m.ConnectionClose)
    assert close.reply_code == spec.NOT_ALLOWED


def test_amqplain_login_as_py_amqp_sends_it(start_minibroker):
    from minibroker.amqp.fields import encode_table
    thread = start_minibroker(amqp_port=0, credentials={"alice": "secret"})
    c = WireClient(thread.host, thread.server.listener("amqp").port)
    c.send(PROTOCOL_HEADER)
    _, start, _, _ = c.expect(m.ConnectionStart)
    assert b"AMQPLAIN" in start.mechanisms.split() and b"PLAIN" in start.mechanisms.split()
    caps = start.server_properties["capabilities"]
    for cap in ("publisher_confirms", "exchange_exchange_bindings", "basic.nack", "consumer_cancel_notify",
                "connection.blocked", "authentication_failure_close", "per_consumer_qos"):
        assert caps[cap] is True, cap
    c.method(0, m.ConnectionStartOk({}, "AMQPLAIN", encode_table({"LOGIN": "alice", "PASSWORD": "secret"})[4:], "en_US"))
    c.expect(m.ConnectionTune)


def test_a_vhost_other_than_slash_is_not_allowed(amqp_server):
    c = _client(amqp_server)
    c.send(PROTOCOL_HEADER)
    c.expect(m.ConnectionStart)
    c.method(0, m.ConnectionStartOk({}, "PLAIN", b"\x00guest\x00guest", "en_US"))
    c.expect(m.ConnectionTune)
    c.method(0, m.ConnectionTuneOk(0, 131072, 0))
    c.method(0, m.ConnectionOpen("/other"))
    _, close, _, _ = c.expect(m.ConnectionClose)
    assert close.reply_code == spec.NOT_ALLOWED


def test_a_client_that_never_finishes_the_handshake_is_closed(start_minibroker):
    thread = start_minibroker(amqp_port=0, handshake_timeout=0.5)
    silent = WireClient(thread.host, thread.server.listener("amqp").port)
    silent.send(PROTOCOL_HEADER)
    silent.expect(m.ConnectionStart)
    assert silent.closed_by_server(timeout=10)


def test_open_amqp_connections_do_not_stop_the_msgpack_handshake_sweep(start_minibroker):
    """The server's sweep closes msgpack connections that never said hello; an AMQP connection
    (with its own timers) tracked before them must not stop it."""
    thread = start_minibroker(amqp_port=0, handshake_timeout=0.5)
    amqp = WireClient(thread.host, thread.server.listener("amqp").port).handshake()
    mute = socket.create_connection((thread.host, thread.port), timeout=10)
    while mute.recv(4096):
        pass                      # the TIMEOUT error frame, then the close
    mute.close()
    amqp.open_channel(1)          # and the AMQP connection is still served


def test_arguments_tables_are_bounded_as_on_the_msgpack_door(amqp_server):
    """2,000 entries is within an AMQP frame but over the 1,024 a stored arguments table may hold
    (serverbase/schema.py): the declare is refused with 406 and nothing is declared."""
    c = _client(amqp_server).handshake()
    c.open_channel(1)
    c.method(1, m.QueueDeclare(queue="wide-args", durable=True, arguments={f"x-{i}": i for i in range(2000)}))
    _, close, _, _ = c.expect(m.ChannelClose)
    assert close.reply_code == spec.PRECONDITION_FAILED and "1024" in close.reply_text
    c.method(1, m.ChannelCloseOk())
    c.open_channel(2)
    c.method(2, m.QueueDeclare(queue="wide-args", passive=True))
    _, close, _, _ = c.expect(m.ChannelClose)
    assert close.reply_code == spec.NOT_FOUND


def test_a_reply_text_naming_a_long_unicode_queue_still_fits_a_short_string(amqp_server):
    name = "é" * 127                       # 254 bytes: a valid name, and a reply text far over 255 bytes
    c = _client(amqp_server).handshake()
    c.open_channel(1)
    c.method(1, m.QueueDeclare(queue=name, passive=True))
    _, close, _, _ = c.expect(m.ChannelClose)
    assert close.reply_code == spec.NOT_FOUND and len(close.reply_text.encode()) <= 255
