"""TLS for the clients: the settings of pika, aio-pika, confluent-kafka and aiokafka, turned into
an `ssl.SSLContext`, and the socket helpers the blocking clients use around it.

Each client takes TLS the way its original does:

| client | setting |
|---|---|
| pika-style | `ConnectionParameters(ssl_options=SSLOptions(context, server_hostname))`, `amqps://` URLs |
| aio-pika-style | `connect(url, ssl=True, ssl_context=ctx)`, `amqps://` URLs |
| confluent-style | `security.protocol` (`SSL`, `SASL_SSL`), `ssl.ca.location`, `ssl.certificate.location`, `ssl.key.location`, `ssl.key.password`, `enable.ssl.certificate.verification`, `ssl.endpoint.identification.algorithm` |
| aiokafka-style | `security_protocol`, `ssl_context` (and `create_ssl_context` in `clients.aio_log.helpers`) |

Nothing here falls back to plaintext: a setting a client cannot honour (a missing CA file, an
unknown protocol, a SASL mechanism other than PLAIN) raises at construction, as
confluent-kafka refuses `ssl.ca.location` pointing nowhere. A TLS client that reaches a
plaintext port, or a plaintext client that reaches a TLS port, fails with a message that says
so (`describe_tls_failure`, `looks_like_tls`).
"""

from __future__ import annotations

import os
import socket
import ssl

from .protocol.errors import BrokerError

TLS_ALERT, TLS_HANDSHAKE = 0x15, 0x16


class TlsSettingError(ValueError):
    """A TLS or SASL setting the client cannot honour."""


def default_client_context(cafile=None, certfile=None, keyfile=None, password=None,
                           verify: bool = True, check_hostname: bool = True) -> ssl.SSLContext:
    """A client context: the system CAs (or `cafile`), our certificate for mutual TLS if given."""
    for what, path in (("CA file", cafile), ("certificate", certfile), ("key", keyfile)):
        if path is not None and not os.path.exists(path):
            raise TlsSettingError(f"the {what} {path!r} does not exist")
    try:
        ctx = ssl.create_default_context(cafile=cafile)
        if certfile:
            ctx.load_cert_chain(certfile, keyfile, password)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSettingError(f"cannot load the TLS files (ca {cafile!r}, certificate {certfile!r}, "
                              f"key {keyfile!r}): {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif not check_hostname:
        ctx.check_hostname = False
    return ctx


# ---- the confluent-kafka (librdkafka) and aiokafka settings ----------------------------------------
# SASL PLAIN (user name and password) is read by `clients.log.config.plain_credentials`; here
# only what decides TLS.
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def log_client_tls(conf) -> ssl.SSLContext | None:
    """The TLS context a confluent-style configuration asks for (`Config` or a dict), or None."""
    get = conf.get
    protocol = str(get("security.protocol", "PLAINTEXT") or "PLAINTEXT").upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise TlsSettingError(f"security.protocol must be one of {', '.join(SECURITY_PROTOCOLS)}, got {protocol!r}")
    if protocol not in ("SSL", "SASL_SSL"):
        for name in ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location"):
            if get(name) is not None:
                raise TlsSettingError(f"{name} is set but security.protocol is {protocol}: the connection would "
                                      f"not use TLS; set security.protocol=SSL or SASL_SSL")
        return None
    verify = _conf_bool(get("enable.ssl.certificate.verification", True), "enable.ssl.certificate.verification")
    algorithm = str(get("ssl.endpoint.identification.algorithm", "https") or "none").lower()
    if algorithm not in ("https", "none"):
        raise TlsSettingError(f"ssl.endpoint.identification.algorithm must be https or none, got {algorithm!r}")
    return default_client_context(cafile=get("ssl.ca.location"), certfile=get("ssl.certificate.location"),
                                  keyfile=get("ssl.key.location"), password=get("ssl.key.password"),
                                  verify=verify, check_hostname=algorithm == "https")


def aiokafka_tls(security_protocol="PLAINTEXT", ssl_context=None) -> ssl.SSLContext | None:
    """aiokafka's `security_protocol` and `ssl_context`, checked as aiokafka checks them."""
    protocol = str(security_protocol or "PLAINTEXT").upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise ValueError(f"security_protocol must be one of {', '.join(SECURITY_PROTOCOLS)}, got {security_protocol!r}")
    if protocol in ("SSL", "SASL_SSL"):
        if ssl_context is None:
            raise ValueError("ssl_context must be provided when security_protocol is SSL or SASL_SSL "
                             "(clients.aio_log.helpers.create_ssl_context makes one)")
        if not isinstance(ssl_context, ssl.SSLContext):
            raise ValueError(f"ssl_context must be an ssl.SSLContext, got {type(ssl_context).__name__}")
        return ssl_context
    if ssl_context is not None:
        raise ValueError(f"ssl_context is given but security_protocol is {protocol}: set it to SSL or SASL_SSL")
    return None


def _conf_bool(value, name) -> bool:
    if isinstance(value, str):
        if value.lower() in ("true", "1"):
            return True
        if value.lower() in ("false", "0"):
            return False
        raise TlsSettingError(f"{name} must be true or false, got {value!r}")
    return bool(value)


# ---- sockets ------------------------------------------------------------------------------------------
def open_socket(host: str, port: int, timeout: float, ssl_context: ssl.SSLContext | None = None,
                server_hostname: str | None = None) -> socket.socket:
    """A connected TCP socket (TCP_NODELAY), wrapped in TLS and handshaken when `ssl_context` is given."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if ssl_context is None:
        return sock
    try:
        return ssl_context.wrap_socket(sock, server_hostname=server_hostname or host)
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        raise TlsHandshakeError(describe_tls_failure(host, port, exc)) from None


class TlsHandshakeError(BrokerError):
    def __init__(self, message):
        super().__init__("TLS_HANDSHAKE_FAILED", message)


def describe_tls_failure(host, port, exc) -> str:
    text = str(exc)
    hint = ""
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text or "packet length too long" in text:
        hint = " (the server did not answer with TLS: is this its plaintext port?)"
    elif "CERTIFICATE_VERIFY_FAILED" in text:
        hint = " (the server's certificate is not signed by a CA this client trusts, or names another host)"
    elif "certificate required" in text.lower() or "CERTIFICATE_REQUIRED" in text:
        hint = " (the server requires a client certificate)"
    return f"TLS handshake with {host}:{port} failed: {text}{hint}"


def looks_like_tls(first_bytes: bytes) -> bool:
    """A TLS record (alert or handshake) where a msgpack frame was expected: a plaintext client
    reached a TLS port."""
    return len(first_bytes) >= 2 and first_bytes[0] in (TLS_ALERT, TLS_HANDSHAKE) and first_bytes[1] == 0x03


def recv_nowait(sock, size: int) -> bytes:
    """What is there to read, without waiting (BlockingIOError if nothing); works on TLS sockets,
    which refuse recv flags."""
    if not isinstance(sock, ssl.SSLSocket):
        return sock.recv(size, socket.MSG_DONTWAIT)
    sock.settimeout(0)
    try:
        return sock.recv(size)
    except ssl.SSLWantReadError:
        raise BlockingIOError() from None
    finally:
        sock.settimeout(None)


def recv_into_nowait(sock, buffer) -> int:
    """`recv_nowait` into `buffer` (a writable memoryview): the number of bytes received."""
    if not isinstance(sock, ssl.SSLSocket):
        return sock.recv_into(buffer, 0, socket.MSG_DONTWAIT)
    sock.settimeout(0)
    try:
        return sock.recv_into(buffer)
    except ssl.SSLWantReadError:
        raise BlockingIOError() from None
    finally:
        sock.settimeout(None)


def pending(sock) -> bool:
    """True if a TLS socket holds decrypted bytes a select() would not report."""
    return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
