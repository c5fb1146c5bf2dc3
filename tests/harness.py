"""Starting real servers for tests, in-process (in a thread) or as subprocesses.

Every end-to-end test talks to a real server on 127.0.0.1, on a port the OS picks, with a
fresh data directory, through the real clients. There are two ways to run one:

- `ServerThread`: the server runs on its own event loop in a background thread of the test
  process. Fast to start, and the test may look at server objects (through `call`) while the
  blocking or asyncio clients talk to it over the real socket.
- `ServerProcess`: the server runs as `python -m <name>`, exactly as a user starts it, so a
  test can SIGTERM it, SIGKILL it and start it again on the same data.

`wait_until(predicate, timeout)` waits for a condition with a deadline: no sleep-and-hope.
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
LISTENING = re.compile(r"(\S+) listening on ([\d.]+):(\d+)")


def _poll(predicate, timeout, message):
    """Yields while `predicate` is falsy; returns its value; fails the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        yield


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.005, message: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail the test at the deadline."""
    poll = _poll(predicate, timeout, message)
    while True:
        try:
            next(poll)
        except StopIteration as done:
            return done.value
        time.sleep(interval)


async def async_wait_until(predicate, timeout: float = 10.0, interval: float = 0.005, message: str = "condition"):
    poll = _poll(predicate, timeout, message)
    while True:
        try:
            next(poll)
        except StopIteration as done:
            return done.value
        await asyncio.sleep(interval)


def _new_loop():
    try:
        import uvloop
        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


class ServerThread:
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


# A server's other front doors default to their well-known ports on the command line (9092...);
# tests run side by side, so each process test puts them on free ports (extra_args may override).
OTHER_DOORS_ON_FREE_PORTS = {"minilog": ("--kafka-port", "0"), "minibroker": ("--amqp-port", "0")}


class ServerProcess:
    """A server started as a user starts it: `python -m NAME --port 0 --data-dir DIR`."""

    def __init__(self, module: str, data_dir, extra_args=(), env=None):
        self.module = module
        self.data_dir = str(data_dir)
        self.extra_args = list(extra_args)
        self.env = env
        self.proc = None
        self.host = "127.0.0.1"
        self.port = None
        self.log_path = os.path.join(os.path.dirname(self.data_dir) or ".", f"{module}-{os.getpid()}-{id(self)}.log")

    def start(self, timeout: float = 20.0, port: int = 0):
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "--port", str(port), "--data-dir", self.data_dir,
             *OTHER_DOORS_ON_FREE_PORTS.get(self.module, ()), *self.extra_args],
            stdout=subprocess.PIPE, stderr=self._log, cwd=ROOT, env=env,
        )
        self.port = read_listening_port(self.proc, timeout)
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


def read_listening_port(proc: subprocess.Popen, timeout: float, name: str | None = None) -> int:
    """Read the server's stdout until its "NAME listening on HOST:PORT" line; return PORT."""
    deadline = time.monotonic() + timeout
    result = concurrent.futures.Future()

    def reader():
        for raw in proc.stdout:
            match = LISTENING.search(raw.decode(errors="replace"))
            if match and (name is None or match.group(1) == name):
                result.set_result(int(match.group(3)))
                return
        if not result.done():
            result.set_exception(AssertionError(f"server exited (code {proc.poll()}) before listening"))

    threading.Thread(target=reader, daemon=True).start()
    try:
        return result.result(max(deadline - time.monotonic(), 0))
    except concurrent.futures.TimeoutError:
        proc.kill()
        raise AssertionError(f"server did not print its listening line within {timeout} s") from None
