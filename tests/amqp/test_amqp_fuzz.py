"""Random commands against a live server: whatever a client sends (well-framed methods with
arbitrary arguments, on any channel, in any order), the server answers with AMQP — replies,
channel or connection exceptions — and never with 541 INTERNAL_ERROR, the code a bug in a
handler gets; and it keeps serving other clients."""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from amqp_wire_client import WireClient
from minibroker.amqp import codec
from minibroker.amqp.spec import INTERNAL_ERROR, m
from test_amqp_codec import method_args, properties

pytestmark = pytest.mark.timeout(120)

names = st.sampled_from(["", "q", "amq.gen-x", "x", "amq.direct", "amq.topic", "e", "é" * 127, "k" * 255])


@st.composite
def client_commands(draw):
    """A command with names drawn from a small set, so declares, binds and uses meet."""
    content = draw(st.booleans())
    args = draw(method_args(content=content))
    args = args._replace(**{f: draw(names) for f in args._fields
                            if f in ("queue", "exchange", "destination", "source", "routing_key")})
    ch = draw(st.sampled_from([0, 1, 1, 1, 2]))
    if content:
        return (ch, args, draw(properties), draw(st.binary(max_size=300)))
    return (ch, args, None, None)


def _frames(cmds) -> bytes:
    out = []
    for ch, args, props, body in cmds:
        if body is None:
            out.append(codec.frame_method(ch, args))
        else:
            out.extend(codec.frame_content(ch, args, props, body, 131072))
    return b"".join(out)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(st.lists(client_commands(), min_size=1, max_size=12))
def test_random_commands_get_amqp_answers_never_an_internal_error(amqp_server, cmds):
    c = WireClient(amqp_server.host, amqp_server.port, timeout=5).handshake()
    c.open_channel(1)
    try:
        c.send(_frames(cmds))
        c.method(1, m.QueueDeclare(queue="", exclusive=True))     # ends in an answer or a close
        while True:
            cmd = c.recv_command(timeout=5)
            if cmd is None:
                break
            _, args, _, _ = cmd
            if type(args) in (m.ConnectionClose, m.ChannelClose):
                assert args.reply_code != INTERNAL_ERROR, args.reply_text
            if type(args) is m.ConnectionClose:
                c.method(0, m.ConnectionCloseOk())
                break
            if type(args) is m.ChannelClose:
                c.method(cmd[0], m.ChannelCloseOk())
                if cmd[0] == 1:
                    break
            if type(args) is m.QueueDeclareOk and args.queue.startswith("amq.gen-"):
                break
    except (BrokenPipeError, ConnectionResetError):
        pass          # the server closed the connection (the client sent connection.close, say)
    c.close()
    # the server still serves a new client
    WireClient(amqp_server.host, amqp_server.port, timeout=5).handshake().close()
