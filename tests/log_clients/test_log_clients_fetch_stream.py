"""The blocking consumer streams its fetches (`fetch_session.STREAM_FETCHES`): one fetch request,
asking the server for up to `STREAM_ANSWERS` answers, is answered by append after append, and
the consumer sends the next one only when the stream is about to end. Every record still comes
once and in order, through seeks and live appends; a server that cannot answer a fetch more
than once is read with one answer a request, as before."""

import pytest
from log_client_helpers import drain

from clients.log import Consumer, Producer, TopicPartition, fetch_session
from minilog.server import MinilogServer


@pytest.fixture(autouse=True)
def stream_fetches(monkeypatch):
    monkeypatch.setattr(fetch_session, "STREAM_FETCHES", True)


def offsets(messages):
    return [m.offset() for m in messages]


def counting(session):
    """Count the fetch requests `session` makes and the answers it takes: [requests, answers]."""
    counts = [0, 0]
    build, accept = session.fetch_request, session.accept

    def fetch_request():
        request = build()
        counts[0] += request is not None
        return request

    def counted_accept(token, result):
        counts[1] += 1
        return accept(token, result)
    session.fetch_request, session.accept = fetch_request, counted_accept
    return counts


def test_a_live_consumer_gets_many_answers_per_fetch_request_and_every_record_once(producer, consumer,
                                                                                  make_topic):
    topic = make_topic(1)
    c = consumer()
    counts = counting(c._session)
    c.assign([TopicPartition(topic, 0, 0)])
    assert c.poll(0.2) is None and c._session.answers == fetch_session.STREAM_ANSWERS
    p = producer(**{"linger.ms": 0})
    got = []
    for i in range(200):
        p.produce(topic, b"%d" % i, partition=0)
        p.flush(10)
        got += drain(c, 1)   # one record a reply: each answers the streamed fetch again
    assert offsets(got) == list(range(200)) and [m.value() for m in got] == [b"%d" % i for i in range(200)]
    requests, answers = counts
    assert answers >= 200 and requests <= answers // (fetch_session.STREAM_ANSWERS - 1) + 3, counts


def test_seeks_while_streaming_give_every_record_from_the_new_position(producer, consumer, make_topic):
    topic = make_topic(1)
    p = producer(**{"linger.ms": 0})
    for i in range(50):
        p.produce(topic, b"%d" % i, partition=0)
    p.flush(10)
    c = consumer()
    c.assign([TopicPartition(topic, 0, 0)])
    assert offsets(drain(c, 50)) == list(range(50))
    assert c.poll(0.2) is None   # at the end: the stream is parked on the server
    c.seek(TopicPartition(topic, 0, 10))
    assert offsets(drain(c, 40)) == list(range(10, 50))
    c.seek(TopicPartition(topic, 0, 45))
    for i in range(50, 80):
        p.produce(topic, b"%d" % i, partition=0)
        p.flush(10)
    assert offsets(drain(c, 35)) == list(range(45, 80))
    assert c.poll(0.2) is None   # nothing twice


class ServerAnsweringOnce(MinilogServer):
    """A minilog from before streamed fetches: fetch sessions, but one answer a fetch."""
    features = tuple(f for f in MinilogServer.features if f != "fetch-answers")


def test_a_server_that_answers_once_is_read_with_one_answer_a_request(start_server_thread, tmp_path):
    server = start_server_thread(ServerAnsweringOnce, tmp_path / "old")
    bootstrap = f"{server.host}:{server.port}"
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "g", "auto.offset.reset": "earliest"})
    try:
        for i in range(100):
            p.produce("t", b"%d" % i, partition=0)
        assert p.flush(10) == 0
        c.assign([TopicPartition("t", 0, 0)])
        counts = counting(c._session)
        assert offsets(drain(c, 100)) == list(range(100))
        assert c._session.answers == 1 and counts[0] == counts[1] + c._session.in_flight   # one answer a request
    finally:
        c.close()
        p.close()


def test_streaming_off_asks_for_one_answer(monkeypatch, consumer, make_topic):
    monkeypatch.setattr(fetch_session, "STREAM_FETCHES", False)
    c = consumer()
    c.assign([TopicPartition(make_topic(1), 0, 0)])
    assert c.poll(0.2) is None and c._session.answers == 1
