"""Histories under kill -9: a producer and a consumer work against a broker while it is killed
at random moments and restarted on the same data, writing down what they did; then the whole
history goes to brokertest/history.py's checker.

Both workloads use the real client libraries over the broker's standard door, as a user's
program would: the real pika over minibroker's AMQP door (publisher confirms, manual acks) and
the real confluent-kafka over minilog's Kafka door (acks=all, one partition). Each round starts
fresh clients, works until the kill, and ends; a final drain (queue) or full read (log) closes
the history. `broker` is a started `brokertest.servers.ServerProcess`, whose `kill()` is a real
SIGKILL and whose `start()` recovers from the same directory.
"""

import random
import threading
import time

from .history import LogHistory, QueueHistory

QUEUE = "history"
TOPIC = "history"
READ_BACK = 2000      # how far behind the acknowledged end a log round's consumer may start


def _kill_after(broker, rng, low: float, high: float) -> None:
    time.sleep(rng.uniform(low, high))
    broker.kill()


def queue_history(broker, rounds: int, seed: int, low: float = 0.2, high: float = 0.8) -> QueueHistory:
    """`rounds` kill -9s of minibroker while the real pika publishes (confirmed) and consumes
    (acked) on one durable queue."""
    import pika
    rng = random.Random(seed)
    history = QueueHistory()
    next_id = iter(range(10**9))
    lock = threading.Lock()

    def connect():
        return pika.BlockingConnection(pika.URLParameters(broker.amqp_url + "?connection_attempts=1"))

    def produce():
        try:
            conn = connect()
            ch = conn.channel()
            ch.confirm_delivery()
            ch.queue_declare(QUEUE, durable=True)
            while True:
                with lock:
                    msg_id = next(next_id)
                history.send(msg_id)
                ch.basic_publish("", QUEUE, str(msg_id).encode(), pika.BasicProperties(delivery_mode=2))
                history.confirm(msg_id)       # basic_publish returned: the broker confirmed it
        except Exception:
            return                            # the broker died under us: the round is over

    def consume():
        try:
            conn = connect()
            ch = conn.channel()
            ch.queue_declare(QUEUE, durable=True)
            ch.basic_qos(prefetch_count=50)
            for method, properties, body in ch.consume(QUEUE, inactivity_timeout=0.05):
                if method is None:
                    continue
                history.receive(int(body), method.redelivered)
                ch.basic_ack(method.delivery_tag)
        except Exception:
            return

    for _ in range(rounds):
        workers = [threading.Thread(target=produce, daemon=True), threading.Thread(target=consume, daemon=True)]
        for w in workers:
            w.start()
        _kill_after(broker, rng, low, high)
        for w in workers:
            w.join(30)
        broker.start()
    conn = connect()
    ch = conn.channel()
    while True:                               # the final drain
        method, properties, body = ch.basic_get(QUEUE, auto_ack=True)
        if method is None:
            break
        history.receive(int(body), method.redelivered)
    conn.close()
    return history


def log_history(broker, rounds: int, seed: int, low: float = 0.3, high: float = 1.0) -> LogHistory:
    """`rounds` kill -9s of minilog while the real confluent-kafka produces with acks=all and a
    consumer reads the one partition."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
    rng = random.Random(seed)
    history = LogHistory()
    counter = iter(range(10**9))

    def produce(stop):
        p = Producer({"bootstrap.servers": broker.kafka_bootstrap, "acks": "all", "linger.ms": 1,
                      "message.timeout.ms": 1500, "enable.idempotence": False,
                      "reconnect.backoff.max.ms": 100})

        def delivered(err, msg):
            if err is None:
                history.ack(msg.value().decode())

        while not stop.is_set():
            value = f"v{next(counter)}"
            history.send(value)
            try:
                p.produce(TOPIC, value.encode(), partition=0, on_delivery=delivered)
            except BufferError:
                pass
            p.poll(0.001)
        p.flush(4)

    def consume(stop, name, start):
        c = Consumer({"bootstrap.servers": broker.kafka_bootstrap, "group.id": "history",
                      "enable.auto.commit": False, "fetch.wait.max.ms": 10,
                      "reconnect.backoff.max.ms": 100})
        c.assign([TopicPartition(TOPIC, 0, start)])
        history.reposition(name, 0)
        while not stop.is_set():
            for m in c.consume(100, 0.05):
                if m.error() is None:
                    history.poll(name, m.partition(), m.offset(), m.value().decode())
        c.close()

    _create_topic(broker)
    for n in range(rounds):
        stop = threading.Event()
        # Each round's consumer starts within the last READ_BACK records acknowledged so far
        # (the log holds at least that many), not at the beginning: rereading the whole log
        # every round made 500 rounds record 22 million polls (4.4 GB) for the checker.
        start = max(0, len(history.acked) - rng.randint(0, READ_BACK)) if n else OFFSET_BEGINNING
        workers = [threading.Thread(target=produce, args=(stop,), daemon=True),
                   threading.Thread(target=consume, args=(stop, f"consumer-{n}", start), daemon=True)]
        for w in workers:
            w.start()
        _kill_after(broker, rng, low, high)
        stop.set()
        # Restart before joining, so the workers' last calls meet a live server. The producer's
        # final flush always waits out message.timeout.ms for the records in flight at the kill
        # (librdkafka expires them rather than resend to the new process), so that timeout is
        # kept short (1.5 s): it is most of a round, and only decides which of those records
        # count as unacknowledged, which the checker never requires to be found.
        broker.start()
        for w in workers:
            w.join(30)
    history.final = {0: _read_all(broker)}
    return history


def _create_topic(broker) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": broker.kafka_bootstrap})   # alive until the result
    futures = admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1)])
    for f in futures.values():
        f.result(30)


def _read_all(broker) -> list:
    """Every record of partition 0, from the log start to its end, as (offset, value)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": broker.kafka_bootstrap, "group.id": "history-final",
                  "enable.auto.commit": False})
    low, high = c.get_watermark_offsets(TopicPartition(TOPIC, 0), timeout=30)
    c.assign([TopicPartition(TOPIC, 0, OFFSET_BEGINNING)])
    out = []
    deadline = time.monotonic() + 60
    while (not out or out[-1][0] < high - 1) and high > low and time.monotonic() < deadline:
        for m in c.consume(1000, 0.5):
            if m.error() is None:
                out.append((m.offset(), m.value().decode()))
    c.close()
    return out
