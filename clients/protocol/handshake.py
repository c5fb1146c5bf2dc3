"""The handshake: the first request on every connection is `hello`.

The client says which protocol version it speaks, who it is, optionally its credentials and
the largest frame it accepts; the server answers with its name, version and limits. Kept
apart from the connection code so both sides (and tests) share one definition.
"""

from .errors import BrokerError, ErrorCode

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})
HELLO = "hello"


def hello_args(client_name: str, credentials=None, max_frame=None, protocol=PROTOCOL_VERSION) -> dict:
    args = {"protocol": protocol, "client": client_name}
    if credentials is not None:
        args["credentials"] = credentials
    if max_frame is not None:
        args["max_frame"] = max_frame
    return args


def check_hello(args) -> tuple[int, str, dict | None, int | None]:
    """Validate hello args; returns (protocol, client name, credentials, client max frame)."""
    if not isinstance(args, dict):
        raise BrokerError(ErrorCode.BAD_REQUEST, "hello args must be a map")
    version = args.get("protocol")
    if version not in SUPPORTED_VERSIONS:
        raise BrokerError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"this server speaks protocol version(s) {sorted(SUPPORTED_VERSIONS)}, "
            f"the client asked for {version!r}; upgrade the client or the server",
        )
    client = args.get("client", "")
    if not isinstance(client, str):
        raise BrokerError(ErrorCode.BAD_REQUEST, "hello 'client' must be a string")
    credentials = args.get("credentials")
    if credentials is not None and not isinstance(credentials, dict):
        raise BrokerError(ErrorCode.BAD_REQUEST, "hello 'credentials' must be a map {username, password}")
    max_frame = args.get("max_frame")
    if max_frame is not None and (type(max_frame) is not int or max_frame < 1024):
        raise BrokerError(ErrorCode.BAD_REQUEST, "hello 'max_frame' must be an integer >= 1024")
    return version, client, credentials, max_frame
