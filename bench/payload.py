"""What a benchmark message carries: a 16-byte header the consumer reads, then filler.

Header (little endian): intended send time (CLOCK_MONOTONIC ns, shared by every process on one
machine), per-key sequence number, key id. The consumer measures latency from the *intended*
send time, so an open-loop producer that falls behind its schedule shows as latency rather than
hiding it. For JSON workloads the filler is a JSON document the worker parses, as a real worker
would.
"""

import json
import struct
import time

HEADER = struct.Struct("<qII")
HEADER_SIZE = HEADER.size


def job_json(size: int) -> bytes:
    """An image-processing job description, padded to about `size` bytes."""
    doc = {"job": "thumbnail", "image": "s3://uploads/2026/11/28/IMG_4711.jpg",
           "sizes": [128, 512, 1024], "format": "webp", "quality": 82, "pad": ""}
    raw = json.dumps(doc, separators=(",", ":")).encode()
    doc["pad"] = "x" * max(0, size - HEADER_SIZE - len(raw))
    return json.dumps(doc, separators=(",", ":")).encode()


class BodyMaker:
    """Builds bodies of a fixed size; reuses the filler so making a body costs one concat."""

    def __init__(self, size: int, json_body: bool = False):
        self.filler = job_json(size) if json_body else b"x" * max(0, size - HEADER_SIZE)

    def make(self, t_ns: int, seq: int, key: int) -> bytes:
        return HEADER.pack(t_ns, seq, key) + self.filler


def read_header(body: bytes) -> tuple[int, int, int]:
    return HEADER.unpack_from(body)


now_ns = time.monotonic_ns
