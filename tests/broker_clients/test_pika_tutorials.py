"""RabbitMQ's six Python tutorials (hello world, work queues, publish/subscribe, routing, topics,
RPC), written for pika and changed only in their import line, run as separate programs.

The programs are in tests/broker_clients/tutorials/; `run_program` starts one against the
test's server (see conftest.py) and these tests read what it prints.
"""

import os
import select
import time

import pytest

pytestmark = pytest.mark.timeout(60)

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tutorials")


def program(name):
    return os.path.join(HERE, name)


_pending: dict = {}  # bytes a program printed that no read_until has consumed yet


def read_line(proc, timeout):
    """One line the program printed (without its newline), None at the deadline, "" at exit.

    Reads the pipe's file descriptor directly: a buffered readline could pull several lines
    into its buffer where select() no longer sees them.
    """
    deadline = time.monotonic() + timeout
    buf = _pending.setdefault(proc.pid, bytearray())
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                return ""
            buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line.decode()


def read_until(proc, text, timeout=10.0):
    """Lines the program printed up to and including the first one containing `text`."""
    deadline = time.monotonic() + timeout
    lines = []
    while True:
        line = read_line(proc, max(deadline - time.monotonic(), 0))
        if line is None:
            raise AssertionError(f"no {text!r} within {timeout} s; the program printed {lines!r}")
        if line == "" and proc.poll() is not None:
            raise AssertionError(f"program exited ({proc.returncode}) before printing {text!r}; it printed {lines!r}")
        lines.append(line)
        if text in line:
            return lines


def run_to_end(run_program, name, *argv):
    proc = run_program(program(name), *argv)
    out = proc.communicate(timeout=15)[0].decode()
    assert proc.returncode == 0, out
    return out


def test_hello_world(run_program):
    receiver = run_program(program("receive.py"))
    read_until(receiver, "Waiting for messages")
    assert " [x] Sent 'Hello World!'" in run_to_end(run_program, "send.py")
    read_until(receiver, " [x] Received b'Hello World!'")


def test_work_queues_share_tasks_between_workers(run_program):
    workers = [run_program(program("worker.py")) for _ in range(2)]
    for w in workers:
        read_until(w, "Waiting for messages")
    tasks = [f"task{i}" for i in range(6)]
    for task in tasks:
        assert f" [x] Sent {task}" in run_to_end(run_program, "new_task.py", task)
    received = []
    deadline = time.monotonic() + 10
    while len(received) < len(tasks) and time.monotonic() < deadline:
        for w in workers:
            line = read_line(w, 0.05)
            if line and "Received" in line:
                received.append(line.split("Received ")[1].strip())
    assert sorted(received) == sorted(tasks)  # each task done once, by one of the workers


def test_publish_subscribe_reaches_every_subscriber(run_program):
    subscribers = [run_program(program("receive_logs.py")) for _ in range(2)]
    for s in subscribers:
        read_until(s, "Waiting for logs")
    run_to_end(run_program, "emit_log.py", "info:", "disk", "is", "fine")
    for s in subscribers:
        read_until(s, " [x] b'info: disk is fine'")


def test_routing_by_severity(run_program):
    errors_only = run_program(program("receive_logs_direct.py"), "error")
    everything = run_program(program("receive_logs_direct.py"), "info", "warning", "error")
    read_until(errors_only, "Waiting for logs")
    read_until(everything, "Waiting for logs")
    run_to_end(run_program, "emit_log_direct.py", "info", "just so you know")
    run_to_end(run_program, "emit_log_direct.py", "error", "run")
    lines = read_until(errors_only, " [x] error:b'run'")
    assert not any("just so you know" in line for line in lines)
    read_until(everything, " [x] info:b'just so you know'")
    read_until(everything, " [x] error:b'run'")


def test_topics(run_program):
    kernel = run_program(program("receive_logs_topic.py"), "kern.*")
    critical = run_program(program("receive_logs_topic.py"), "*.critical")
    read_until(kernel, "Waiting for logs")
    read_until(critical, "Waiting for logs")
    run_to_end(run_program, "emit_log_topic.py", "app.critical", "app down")
    run_to_end(run_program, "emit_log_topic.py", "kern.critical", "kernel panic")
    read_until(critical, " [x] app.critical:b'app down'")
    read_until(critical, " [x] kern.critical:b'kernel panic'")
    lines = read_until(kernel, " [x] kern.critical:b'kernel panic'")
    assert not any("app down" in line for line in lines)


def test_rpc(run_program):
    server = run_program(program("rpc_server.py"))
    read_until(server, "Awaiting RPC requests")
    out = run_to_end(run_program, "rpc_client.py")
    assert " [.] Got 55" in out and " [.] Got 6765" in out
    read_until(server, " [.] fib(20)")
