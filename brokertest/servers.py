"""Real brokers for tests: a minibroker or minilog on free ports in a directory of your choosing,
in a thread of the test process or as a subprocess.

- `ServerThread`: the server runs on its own event loop in a background thread of the test
  process. Fast to start, and a test may look at server objects (through `call`) while the
  clients talk to it over the real socket.
- `ServerProcess`: the server runs as `python -m <name>`, exactly as a user starts it, so a test
  can SIGTERM it, SIGKILL it and start it again on the same data.

Both listen on 127.0.0.1 with every front door on a port the OS picks and say where each one
is: `.port` (the msgpack protocol), `.amqp_url` (minibroker's AMQP 0-9-1 door, for pika,
aio-pika, kombu, Celery) and `.kafka_bootstrap` (minilog's Kafka door, for confluent-kafka,
aiokafka, kafka-python). This is what `brokertest.plugin`'s fixtures hand to a test, and what
this project's own test suite starts its servers with (tests/harness.py).
"""

import asyncio
import concurrent.futures
import os
import re
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# "<name> listening on HOST:PORT" (the msgpack door) and "<name> <door> listening on HOST:PORT".
# As a search, group 1 is the name of the server for the msgpack door and of the door otherwise.
LISTENING = re.compile(r"(\S+) listening on ([\d.]+):(\d+)")
DOOR_LINE = re.compile(r"(\S+)(?: (\w+))? listening on ([\d.]+):(\d+)")
# Each server's non-msgpack door and the flag that sets its port.
OTHER_DOOR = {"minibroker": ("amqp", "--amqp-port"), "minilog": ("kafka", "--kafka-port")}


class _Doors:
    """Where a started server's front doors are, for the clients a test uses."""

    host = "127.0.0.1"
    port: int | None = None
    doors: dict

    @property
    def amqp_url(self) -> str:
        """amqp://guest:guest@127.0.0.1:PORT/ of minibroker's AMQP door (for pika, kombu...)."""
        return f"amqp://guest:guest@{self.host}:{self._door('amqp')}/"

    @property
    def amqp_port(self) -> int:
        return self._door("amqp")

    @property
    def kafka_bootstrap(self) -> str:
        """HOST:PORT of minilog's Kafka door (bootstrap.servers for confluent-kafka...)."""
        return f"{self.host}:{self._door('kafka')}"

    @property
    def address(self) -> str:
        """HOST:PORT of the msgpack door (for this project's own clients)."""
        return f"{self.host}:{self.port}"

    def _door(self, name):
        port = self.doors.get(name)
        if port is None:
            raise LookupError(f"this server has no open {name} door (doors: {sorted(self.doors)})")
        return port


def _new_loop():
    try:
        import uvloop
        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


class ServerThread(_Doors):
    """A server on its own event loop in a daemon thread of this process."""

    def __init__(self, server_cls, data_dir, **kwargs):
        self.server_cls = server_cls
        self.data_dir = str(data_dir)
        self.kwargs = kwargs
        self.server = None
        self.loop = None
        self.thread = None
        self.host = "127.0.0.1"
        self.port = None
        self.doors = {}

    def start(self, timeout: float = 15.0):
        ready = concurrent.futures.Future()

        def run():
            loop = _new_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            try:
                self.server = self.server_cls(host=self.host, port=0, data_dir=self.data_dir, **self.kwargs)
                loop.run_until_complete(self.server.start())
            except BaseException as exc:
                ready.set_exception(exc)
                loop.close()
                return
            ready.set_result(self.server.port)
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self.thread = threading.Thread(target=run, name=f"{self.server_cls.__name__}-thread", daemon=True)
        self.thread.start()
        self.port = ready.result(timeout)
        self.doors = {(l.name or "msgpack"): l.port for l in self.server.listeners}
        return self

    def call(self, fn, *args, timeout: float = 10.0):
        """Run `fn(*args)` on the server's loop and return its result (coroutines are awaited)."""
        async def runner():
            result = fn(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result
        return asyncio.run_coroutine_threadsafe(runner(), self.loop).result(timeout)

    def stop(self, timeout: float = 15.0):
        if self.loop is None or not self.loop.is_running():
            return
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)

    def restart(self):
        self.stop()
        return self.start()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class ServerProcess(_Doors):
    """A server started as a user starts it: `python -m NAME --port 0 --data-dir DIR`."""

    def __init__(self, module: str, data_dir, extra_args=(), env=None):
        self.module = module
        self.data_dir = str(data_dir)
        self.extra_args = list(extra_args)
        self.env = env
        self.proc = None
        self.host = "127.0.0.1"
        self.port = None
        self.doors = {}
        self.log_path = os.path.join(os.path.dirname(self.data_dir) or ".", f"{module}-{os.getpid()}-{id(self)}.log")

    def start(self, timeout: float = 20.0, port: int = 0):
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        self._log = open(self.log_path, "ab")
        # The other door defaults to its well-known port on the command line (5672, 9092); tests
        # run side by side, so it goes on a free port unless extra_args say otherwise.
        door, flag = OTHER_DOOR.get(self.module, (None, None))
        other = [] if flag is None or flag in self.extra_args else [flag, "0"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "--port", str(port), "--data-dir", self.data_dir,
             *other, *self.extra_args],
            stdout=subprocess.PIPE, stderr=self._log, cwd=ROOT, env=env,
        )
        expected = ["msgpack"] if door is None or _door_off(self.extra_args, flag) else ["msgpack", door]
        self.doors = read_listening_ports(self.proc, timeout, expected)
        self.port = self.doors["msgpack"]
        return self

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, as a service manager would, and wait for a clean exit."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.module} did not stop within {timeout} s of SIGTERM")
        finally:
            self._log.close()

    def kill(self) -> None:
        """SIGKILL: the crash that durable storage must survive."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            self._log.close()

    def restart(self):
        self.stop()
        return self.start()

    def stderr_text(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            self.stop()


def _door_off(args, flag) -> bool:
    return flag in args and str(args[args.index(flag) + 1]).lower() == "off"


def read_listening_ports(proc: subprocess.Popen, timeout: float, expected=("msgpack",)) -> dict:
    """Read the server's stdout until it has printed the "listening on" line of every door in
    `expected`; return {door: port} ("msgpack" for the native door)."""
    deadline = time.monotonic() + timeout
    result = concurrent.futures.Future()

    def reader():
        doors = {}
        for raw in proc.stdout:
            match = DOOR_LINE.search(raw.decode(errors="replace"))
            if match:
                doors[match.group(2) or "msgpack"] = int(match.group(4))
                if all(d in doors for d in expected):
                    result.set_result(doors)
                    return
        if not result.done():
            result.set_exception(AssertionError(f"server exited (code {proc.poll()}) before listening"))

    threading.Thread(target=reader, daemon=True).start()
    try:
        return result.result(max(deadline - time.monotonic(), 0))
    except concurrent.futures.TimeoutError:
        proc.kill()
        raise AssertionError(f"server did not print its listening lines within {timeout} s") from None


def read_listening_port(proc: subprocess.Popen, timeout: float, name: str | None = None) -> int:
    """Read the server's stdout until the "listening on" line of door `name` ("amqp", "kafka";
    None or the server's name: the msgpack door); return its port."""
    door = "msgpack" if name in (None, "minibroker", "minilog") else name
    return read_listening_ports(proc, timeout, (door,))[door]
