"""Counters and gauges of a server, as the `stats` op and as Prometheus text on HTTP `/metrics`.

A server lists its figures as `Sample`s (`BrokerServer.metric_samples`: connections, bytes in and
out, memory, uptime, then the broker's own through `extra_metrics`). The figures themselves are
plain ints the hot paths increment; nothing is computed until someone asks.

With `--metrics-port N` the server opens one more front door (`metrics_listener`), a minimal
HTTP/1.1 responder (`MetricsHttp`, an asyncio protocol): `GET /metrics` answers the Prometheus
text exposition format (version 0.0.4), anything else 404 or 405, and the connection closes after
each answer. A request must arrive within `REQUEST_TIMEOUT_S` and fit in `MAX_REQUEST_BYTES`, so
an idle or endless client costs nothing for long.
"""

from __future__ import annotations

import asyncio
import math
from typing import NamedTuple

MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT_S = 10.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Sample(NamedTuple):
    name: str           # without the server prefix: "published_total"
    kind: str           # "counter" or "gauge"
    help: str
    value: float
    labels: dict | None = None


def _label_value(v) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value) -> str:
    if value is None:
        return "NaN"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value) if isinstance(value, float) else str(int(value))


def prometheus_text(prefix: str, samples: list[Sample]) -> str:
    """The text exposition format: a HELP and TYPE line per metric, then its samples."""
    lines = []
    seen = set()
    for s in samples:
        name = f"{prefix}_{s.name}"
        if name not in seen:
            seen.add(name)
            lines.append(f"# HELP {name} {s.help}")
            lines.append(f"# TYPE {name} {s.kind}")
        labels = ""
        if s.labels:
            labels = "{" + ",".join(f'{k}="{_label_value(v)}"' for k, v in s.labels.items()) + "}"
        lines.append(f"{name}{labels} {_number(s.value)}")
    return "\n".join(lines) + "\n"


def stats_rows(samples: list[Sample]) -> list[dict]:
    """The same figures for the `stats` op: one map per sample."""
    return [{"name": s.name, "type": s.kind, "labels": s.labels or {}, "value": s.value, "help": s.help}
            for s in samples]


class MetricsHttp(asyncio.Protocol):
    """One HTTP connection to the metrics door: read one request, answer it, close."""

    def __init__(self, server):
        self.server = server
        self.buf = b""
        self.transport = None
        self._timer = None

    def connection_made(self, transport):
        self.transport = transport
        self._timer = asyncio.get_running_loop().call_later(REQUEST_TIMEOUT_S, transport.close)

    def data_received(self, data):
        if self.transport.is_closing():
            return
        self.buf += data
        if b"\r\n\r\n" not in self.buf and b"\n\n" not in self.buf:
            if len(self.buf) > MAX_REQUEST_BYTES:
                self._answer(431, "Request Header Fields Too Large", "request too large\n")
            return
        request_line = self.buf.split(b"\n", 1)[0].decode("latin-1").strip()
        parts = request_line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            self._answer(400, "Bad Request", "bad request line\n")
        elif parts[0] not in ("GET", "HEAD"):
            self._answer(405, "Method Not Allowed", "only GET\n")
        elif parts[1].split("?", 1)[0] != "/metrics":
            self._answer(404, "Not Found", "the metrics are at /metrics\n")
        else:
            try:
                body = prometheus_text(self.server.name, self.server.metric_samples())
            except Exception as exc:  # a bug in a figure must not hang the scraper
                self._answer(500, "Internal Server Error", f"{type(exc).__name__}: {exc}\n")
                return
            self._answer(200, "OK", body, head=parts[0] == "HEAD")

    def _answer(self, status: int, reason: str, body: str, head: bool = False) -> None:
        payload = body.encode()
        headers = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {CONTENT_TYPE}\r\n"
                   f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n").encode()
        self.transport.write(headers if head else headers + payload)
        self.transport.close()

    def connection_lost(self, exc):
        if self._timer is not None:
            self._timer.cancel()
