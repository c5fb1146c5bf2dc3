"""The README examples of confluent-kafka and aiokafka run as programs.

Only their import lines are changed (and, so that they end, they read from the earliest
record and stop after what was sent).
"""

import os
import subprocess
import sys
import textwrap

from harness import ROOT

PROGRAM = textwrap.dedent('''
    import os, sys
    from clients.log import Producer, Consumer, KafkaError   # was: from confluent_kafka import ...

    servers = os.environ["BOOTSTRAP"]
    p = Producer({'bootstrap.servers': servers + ',' + servers})

    def delivery_report(err, msg):
        """ Called once for each message produced to indicate delivery result. """
        if err is not None:
            print('Message delivery failed: {}'.format(err))
        else:
            print('Message delivered to {} [{}]'.format(msg.topic(), msg.partition()))

    for data in ["alpha", "beta", "gamma"]:
        p.poll(0)
        p.produce('mytopic', data.encode('utf-8'), callback=delivery_report)
    p.flush()

    c = Consumer({
        'bootstrap.servers': servers,
        'group.id': 'mygroup',
        'auto.offset.reset': 'earliest',
        'enable.partition.eof': True,
    })
    c.subscribe(['mytopic'])
    received = 0
    while received < 3:
        msg = c.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                continue
            print("Consumer error: {}".format(msg.error()))
            continue
        print('Received message: {}'.format(msg.value().decode('utf-8')))
        received += 1
    c.close()
''')


def test_confluent_readme_example_runs(bootstrap, make_topic):
    make_topic(1, name="mytopic")
    env = dict(os.environ, BOOTSTRAP=bootstrap, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:3] == ["Message delivered to mytopic [0]"] * 3
    assert lines[3:] == ["Received message: alpha", "Received message: beta", "Received message: gamma"]


AIO_PROGRAM = textwrap.dedent('''
    import asyncio, os
    from clients.aio_log import AIOKafkaProducer, AIOKafkaConsumer   # was: from aiokafka import ...

    servers = os.environ["BOOTSTRAP"]

    async def send_one():
        producer = AIOKafkaProducer(bootstrap_servers=servers)
        await producer.start()
        try:
            await producer.send_and_wait("my_topic", b"Super message")
        finally:
            await producer.stop()

    async def consume():
        consumer = AIOKafkaConsumer('my_topic', 'my_other_topic', bootstrap_servers=servers,
                                    group_id="my-group", auto_offset_reset="earliest")
        await consumer.start()
        try:
            async for msg in consumer:
                print("consumed: ", msg.topic, msg.partition, msg.offset, msg.key, msg.value)
                break
        finally:
            await consumer.stop()

    asyncio.run(send_one())
    asyncio.run(consume())
''')


def test_aiokafka_readme_example_runs(bootstrap, make_topic):
    make_topic(1, name="my_topic")
    env = dict(os.environ, BOOTSTRAP=bootstrap, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", AIO_PROGRAM], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["consumed:  my_topic 0 0 None b'Super message'"]
