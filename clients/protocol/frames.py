"""The envelope every frame carries, and the events a decoded frame becomes.

Each frame body is a msgpack array whose first element says what kind of frame it is:

    [0, id, op, args]        REQUEST   client -> server
    [1, id, result]          RESPONSE  server -> client, answers request `id`
    [2, id, code, message]   ERROR     server -> client, answers request `id` (0: unsolicited)
    [2, 0, code, message, {"ch": n}]   an id-0 ERROR may name the channel it concerns
    [3, event, body]         PUSH      server -> client, sent on the server's own initiative

A request with id 0 asks for no response: on success nothing comes back, on failure an ERROR
with id 0 does (the client reports it asynchronously, as RabbitMQ does when it closes a
channel). Arrays rather than maps keep the envelope cheap to pack and parse; the `args`,
`result` and push `body` are usually maps, documented per op in docs/PROTOCOL.md.
"""

from typing import Any, NamedTuple

from .errors import BrokerError, ErrorCode

REQUEST = 0
RESPONSE = 1
ERROR = 2
PUSH = 3


class Request(NamedTuple):
    id: int
    op: str
    args: Any


class Response(NamedTuple):
    id: int
    result: Any


class ErrorReply(NamedTuple):
    id: int
    code: str
    message: str
    channel: int | None = None   # the "ch" of an id-0 error's detail map, when it names one

    def exception(self) -> BrokerError:
        exc = BrokerError(self.code, self.message)
        exc.channel = self.channel
        return exc


class Push(NamedTuple):
    event: str
    body: Any


def request(id: int, op: str, args=None) -> list:
    return [REQUEST, id, op, {} if args is None else args]


def response(id: int, result=None) -> list:
    return [RESPONSE, id, result]


def error(id: int, code: str, message: str, channel: int | None = None) -> list:
    if channel is None:
        return [ERROR, id, code, message]
    return [ERROR, id, code, message, {"ch": channel}]


def push(event: str, body) -> list:
    return [PUSH, event, body]


def parse_request(obj) -> Request:
    """Validate a decoded frame as a client request (what a server receives).

    Raises BrokerError(BAD_REQUEST) with the best request id it could find, so the server
    can answer it and keep the connection: the bytes were a frame, just not a good one.
    """
    if type(obj) is not list or len(obj) != 4 or obj[0] != REQUEST:
        raise _BadEnvelope(_guess_id(obj), "expected a request frame [0, id, op, args]")
    _, rid, op, args = obj
    if type(rid) is not int or rid < 0:
        raise _BadEnvelope(0, "request id must be a non-negative integer")
    if type(op) is not str:
        raise _BadEnvelope(rid, "op must be a string")
    if args is None:
        args = {}
    return Request(rid, op, args)


def parse_server_frame(obj):
    """Turn a decoded frame from a server into a Response, ErrorReply or Push."""
    if type(obj) is list and obj:
        kind = obj[0]
        if kind == RESPONSE and len(obj) == 3:
            return Response(obj[1], obj[2])
        if kind == PUSH and len(obj) == 3:
            return Push(obj[1], obj[2])
        if kind == ERROR:
            if len(obj) == 4:
                return ErrorReply(obj[1], obj[2], obj[3])
            if len(obj) == 5:
                detail = obj[4]
                ch = detail.get("ch") if type(detail) is dict else None
                return ErrorReply(obj[1], obj[2], obj[3], ch if type(ch) is int else None)
    raise BrokerError(ErrorCode.BAD_REQUEST, f"server sent a frame that is not a reply or push: {obj!r:.200}")


class _BadEnvelope(BrokerError):
    def __init__(self, rid: int, message: str):
        super().__init__(ErrorCode.BAD_REQUEST, message)
        self.request_id = rid


def _guess_id(obj) -> int:
    if type(obj) is list and len(obj) >= 2 and type(obj[1]) is int and obj[1] >= 0:
        return obj[1]
    return 0
