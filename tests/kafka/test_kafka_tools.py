"""Unmodified programs and tools against the Kafka door: kcat (-L, -P, -C -e) and a typical
confluent-kafka consumer program, run as they are with only the port substituted."""

import os
import shutil
import subprocess
import sys

import pytest

from harness import ROOT

ck = pytest.importorskip("confluent_kafka")


PROGRAMS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "programs")


def _kcat():
    path = shutil.which("kcat") or shutil.which("kafkacat")
    if path is None:
        pytest.skip("kcat is not installed (apt-get install kcat); the kcat tests need it")
    return path


def test_kcat_lists_produces_and_consumes(bootstrap):
    kcat = _kcat()
    lines = [f"line {i}" for i in range(20)]
    subprocess.run([kcat, "-b", bootstrap, "-P", "-t", "kcat-topic"], input="\n".join(lines) + "\n",
                   text=True, check=True, timeout=30, capture_output=True)
    listed = subprocess.run([kcat, "-b", bootstrap, "-L"], text=True, check=True, timeout=30,
                            capture_output=True).stdout
    assert 'topic "kcat-topic" with 1 partitions' in listed and "broker 0 at 127.0.0.1" in listed
    consumed = subprocess.run([kcat, "-b", bootstrap, "-C", "-t", "kcat-topic", "-e", "-o", "beginning"],
                              text=True, check=True, timeout=30, capture_output=True).stdout
    assert consumed.splitlines() == lines


def test_the_seed_consumer_program_runs_verbatim(spawn_server, tmp_path):
    proc = spawn_server("minilog", extra_args=("--kafka-port", "0"))
    kafka_port = proc_kafka_port(proc)
    producer = ck.Producer({"bootstrap.servers": f"127.0.0.1:{kafka_port}"})
    for i in range(3):
        producer.produce("user-events", value=f"event {i}")
    assert producer.flush(15) == 0

    source = open(os.path.join(PROGRAMS, "seed_consumer.py")).read()
    assert "'localhost:9092'" in source
    program = tmp_path / "seed_consumer.py"
    program.write_text(source.replace("localhost:9092", f"localhost:{kafka_port}"))
    run = subprocess.Popen([sys.executable, str(program)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, cwd=ROOT)
    try:
        got = []
        for line in run.stdout:
            if line.startswith("Received message:"):
                got.append(line.strip())
                if len(got) == 3:
                    break
        assert got == [f"Received message: event {i}" for i in range(3)]
    finally:
        run.kill()
        run.wait(10)


def proc_kafka_port(proc) -> int:
    """The Kafka door's port, read from the server's start-up lines by ServerProcess.start."""
    return proc.doors["kafka"]
