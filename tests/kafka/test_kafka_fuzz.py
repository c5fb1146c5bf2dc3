"""Random requests of every API and version we serve, sent to a live Kafka door: each gets a
reply or closes its own connection, the server never falls over, and other clients carry on."""

import os
import socket
import struct

from hypothesis import HealthCheck, given, settings, strategies as st

from minilog.kafka.codec import compiled, encode_request
from minilog.kafka.messages import METADATA

from kafka_wire import KafkaWire
from test_kafka_codec import VERSIONS, struct_strategy


@st.composite
def live_requests(draw):
    api, version = draw(st.sampled_from(VERSIONS))
    return api, version, draw(struct_strategy(compiled(api, version, False)))


@settings(max_examples=int(os.environ.get("KAFKA_FUZZ_EXAMPLES", "80")), suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
          deadline=None)
@given(request=live_requests())
def test_any_request_gets_a_reply_or_a_closed_connection_and_the_server_lives(kafka_minilog, caplog, request):
    api, version, body = request
    caplog.clear()
    port = kafka_minilog.server.listener("kafka").port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(encode_request(api, version, 77, "fuzz", body))
        # No reply by design (acks=0), or a reply that may rightly wait: a long poll, a join or
        # sync waiting for other members (their bounds are the handlers' business, tested apart).
        waits = api.name in ("Fetch", "JoinGroup", "SyncGroup")
        if not (api.name == "Produce" and body.get("acks") == 0):
            sock.settimeout(0.5 if waits else 10)
            head = b""
            try:
                while len(head) < 8:
                    chunk = sock.recv(8 - len(head))
                    if not chunk:
                        break   # closed: fine, as long as the server lives
                    head += chunk
            except ConnectionResetError:
                head = b""
            except socket.timeout:
                assert waits, f"{api.name} v{version} got no reply"
            if len(head) == 8:
                assert struct.unpack(">i", head[4:8])[0] == 77
    other = KafkaWire(port)
    try:
        assert "brokers" in other.call(METADATA, 1, {"topics": []})
    finally:
        other.close()
    # A handler that raised is a bug even though only its connection paid for it.
    crashes = [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and r.name.startswith("minilog")]
    assert not crashes, crashes
