"""The log consumer receives fetch replies into one reused buffer (`BufferedFrameDecoder`).

Replies larger than the buffer's first size make it grow once to fit them; every record still
arrives once, in order, with its bytes intact, whatever the reads are cut into (a small socket
receive buffer here cuts every reply into many reads).
"""

import socket

from clients.log import TopicPartition
from clients.protocol.framing import BufferedFrameDecoder

from log_client_helpers import drain


def test_replies_larger_than_the_receive_buffer_arrive_whole(producer, consumer, make_topic):
    topic = make_topic(1)
    p = producer(**{"linger.ms": 50})
    values = [(b"%08d" % i) * 125 for i in range(6_000)]   # 1,000 B each: 6 MB in all
    for v in values:
        p.produce(topic, v, partition=0)
    assert p.flush(30) == 0
    # 4 MiB per fetch: replies far over the 1 MiB the buffer starts with.
    c = consumer(**{"max.partition.fetch.bytes": 4 * 1024 * 1024})
    c._conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    c.assign([TopicPartition(topic, 0, 0)])
    got = drain(c, len(values), timeout=30)
    assert [m.offset() for m in got] == list(range(len(values)))
    assert [m.value() for m in got] == values
    decoder = c._conn.state.decoder
    assert isinstance(decoder, BufferedFrameDecoder)
    assert BufferedFrameDecoder.INITIAL_SIZE < len(decoder._buf) <= 4 * 1024 * 1024 + 65536
