"""TLS on the servers' front doors: each listener gets a TLS twin on a port of its own.

As RabbitMQ serves AMQP on 5672 and AMQPS on 5671, and a Kafka broker declares a PLAINTEXT and
an SSL listener, every front door here (the msgpack protocol, AMQP, Kafka) keeps its plaintext
port and, when the server is given a certificate, opens the same protocol over TLS on another:

| door | plaintext flag | TLS twin | TLS flag |
|---|---|---|---|
| msgpack | `--port` | `tls` | `--tls-port` |
| AMQP | `--amqp-port` | `amqps` | `--amqps-port` |
| Kafka | `--kafka-port` | `kafka-tls` | `--kafka-tls-port` |

`--tls-cert FILE --tls-key FILE` turn TLS on; `--tls-ca FILE` also requires every TLS client to
present a certificate signed by that CA (mutual TLS). `--plaintext off` keeps only the TLS
doors. The context is built with the standard `ssl` module (TLS 1.2 at least, the Python
defaults for ciphers); a certificate that does not load stops the start with one line naming
the file.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

# door name -> (TLS twin's name, the flag of its port)
TLS_DOORS = {"": ("tls", "--tls-port"), "amqp": ("amqps", "--amqps-port"), "kafka": ("kafka-tls", "--kafka-tls-port")}


class TlsConfigError(ValueError):
    """A certificate, key or CA file that cannot be used; the message names it."""


@dataclass
class TlsSettings:
    context: ssl.SSLContext
    ports: dict = field(default_factory=dict)   # door name -> port of its TLS twin (0: a free one)
    plaintext: bool = True                      # False: only the TLS doors open
    client_certs: bool = False


def server_context(cert: str, key: str | None = None, ca: str | None = None) -> ssl.SSLContext:
    """A server-side context: our certificate chain, and with `ca`, client certificates required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"cannot load the certificate {cert!r} with the key {key!r}: {exc}") from None
    if ca:
        try:
            ctx.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(f"cannot load the CA file {ca!r}: {exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def add_arguments(parser, default_ports: dict) -> None:
    """The TLS flags; `default_ports` maps a door name to its TLS twin's default port."""
    g = parser.add_argument_group("TLS (docs/security.md)")
    g.add_argument("--tls-cert", metavar="FILE", help="server certificate (PEM, may hold the chain and the key); "
                                                     "turns on a TLS twin of every front door")
    g.add_argument("--tls-key", metavar="FILE", help="private key of --tls-cert (PEM), if not in that file")
    g.add_argument("--tls-ca", metavar="FILE", help="CA certificates (PEM): require TLS clients to present a "
                                                   "certificate signed by one of them")
    g.add_argument("--plaintext", choices=("on", "off"), default="on",
                   help="off: open only the TLS ports (needs --tls-cert)")
    from .cli import port_or_off
    for door, (twin, flag) in TLS_DOORS.items():
        if door in default_ports:
            what = "the msgpack protocol" if not door else door.upper()
            g.add_argument(flag, type=port_or_off, default=default_ports[door], dest=f"tls_port_{twin}", metavar="PORT",
                           help=f"port of {what} over TLS (default {default_ports[door]}; 0 picks a free one; "
                                f"off: none)")


def from_args(args, default_ports: dict) -> TlsSettings | None:
    if not args.tls_cert:
        if args.tls_key or args.tls_ca:
            raise TlsConfigError("--tls-key and --tls-ca need --tls-cert")
        if args.plaintext == "off":
            raise TlsConfigError("--plaintext off needs --tls-cert: there would be no port at all")
        return None
    ports = {door: getattr(args, f"tls_port_{TLS_DOORS[door][0]}") for door in default_ports}
    return TlsSettings(server_context(args.tls_cert, args.tls_key, args.tls_ca), ports,
                       plaintext=args.plaintext == "on", client_certs=bool(args.tls_ca))
