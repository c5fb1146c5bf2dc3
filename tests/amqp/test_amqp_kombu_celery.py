"""kombu (over py-amqp, which logs in with AMQPLAIN) and a Celery round trip through amqp://
to minibroker: a task is sent, a worker (in a thread of this process) runs it, and the result
comes back over AMQP too (the rpc:// result backend)."""

import pytest

pytestmark = pytest.mark.timeout(90)


def test_kombu_simple_queue_round_trip(amqp_broker, unique):
    from kombu import Connection
    with Connection(amqp_broker.url, transport="pyamqp") as conn:
        queue = conn.SimpleQueue(unique())
        queue.put({"hello": "world", "n": [1, 2]})
        message = queue.get(block=True, timeout=5)
        assert message.payload == {"hello": "world", "n": [1, 2]}
        message.ack()
        queue.clear()
        queue.close()


def test_kombu_producer_and_consumer_with_a_direct_exchange(amqp_broker, unique):
    from kombu import Connection, Exchange, Queue
    exchange = Exchange(unique("media"), type="direct", auto_delete=True)
    queue = Queue(unique("video"), exchange, routing_key="video", auto_delete=True)
    got = []
    with Connection(amqp_broker.url) as conn:
        with conn.Consumer(queue, callbacks=[lambda body, msg: (got.append(body), msg.ack())]):
            producer = conn.Producer(serializer="json")
            for i in range(5):
                producer.publish({"i": i}, exchange=exchange, routing_key="video", declare=[queue])
            while len(got) < 5:
                conn.drain_events(timeout=5)
    assert got == [{"i": i} for i in range(5)]


def test_a_celery_task_runs_through_minibroker(amqp_broker, unique):
    from celery import Celery
    from celery.contrib.testing.worker import start_worker
    from celery.signals import setup_logging

    app = Celery(unique("app"), broker=amqp_broker.url, backend="rpc://")
    app.conf.update(task_default_queue=unique("celery"), worker_hijack_root_logger=False,
                    broker_connection_retry_on_startup=False, result_expires=60,
                    # The worker's event loop sleeps until its next timer; with AMQP heartbeats on,
                    # that can outlast start_worker's shutdown wait. Heartbeats: test_amqp_wire.py.
                    broker_heartbeat=0)

    @app.task
    def add(x, y):
        return x + y

    # A receiver of setup_logging tells Celery not to configure logging itself: its own set-up
    # would disable the loggers of this process, and later tests read their records.
    keep_logging = lambda **kwargs: None   # noqa: E731
    setup_logging.connect(keep_logging)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            result = add.delay(2, 3)
            assert result.get(timeout=30) == 5
            assert add.apply_async((10, 20)).get(timeout=30) == 30
    finally:
        setup_logging.disconnect(keep_logging)
