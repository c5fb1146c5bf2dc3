"""Reading a confluent-kafka style configuration dict: librdkafka's property names and defaults.

Values may be given as Python values or as strings (librdkafka takes strings), so
`'linger.ms': '5'` and `'linger.ms': 5` mean the same. TLS and SASL properties are honoured
(clients/tls.py). Properties that only matter to librdkafka's own machinery (debug, statistics...)
are accepted and ignored, so a program's
existing configuration runs unchanged; a property name nobody knows is logged once.
"""

import logging
from .errors import ConfigError

log = logging.getLogger("clients.log")

# Accepted because real configurations carry them; they change nothing here.
IGNORED = {
    "debug", "log_level",
    "compression.type", "compression.codec", "enable.idempotence", "retries", "retry.backoff.ms",
    "socket.keepalive.enable", "api.version.request", "broker.version.fallback", "statistics.interval.ms",
    "stats_cb", "logger", "isolation.level",
    "topic.metadata.refresh.interval.ms", "metadata.max.age.ms", "queued.min.messages",
    "queued.max.messages.kbytes", "fetch.error.backoff.ms", "socket.timeout.ms", "client.rack",
    "enable.auto.offset.store", "allow.auto.create.topics", "group.instance.id",
    "reconnect.backoff.ms", "reconnect.backoff.max.ms", "message.max.bytes", "receive.message.max.bytes",
    "message.send.max.retries", "default.topic.config", "error_cb", "throttle_cb", "oauth_cb",
}


# Read by every client (`Config.credentials`, `clients.tls.log_client_tls`), not per kind.
_CONNECTION_KEYS = {"bootstrap.servers", "metadata.broker.list", "client.id", "security.protocol",
                    "sasl.mechanism", "sasl.mechanisms", "sasl.username", "sasl.password",
                    "ssl.ca.location", "ssl.certificate.location", "ssl.key.location", "ssl.key.password",
                    "enable.ssl.certificate.verification", "ssl.endpoint.identification.algorithm"}


class Config:
    """A confluent-style configuration dict with typed getters."""

    def __init__(self, conf: dict | None, known: set, kind: str):
        if conf is None:
            conf = {}
        if not isinstance(conf, dict):
            raise TypeError(f"{kind} configuration must be a dict, got {type(conf).__name__}")
        self.conf = dict(conf)
        # 'default.topic.config' (old confluent-kafka) nests topic properties; lift them up.
        nested = self.conf.get("default.topic.config")
        if isinstance(nested, dict):
            for k, v in nested.items():
                self.conf.setdefault(k, v)
        if "bootstrap.servers" not in self.conf and "metadata.broker.list" in self.conf:
            self.conf["bootstrap.servers"] = self.conf["metadata.broker.list"]
        unknown = [k for k in self.conf if k not in known and k not in IGNORED
                   and k not in _CONNECTION_KEYS]
        if unknown:
            log.warning("%s: ignoring configuration properties minilog does not use: %s", kind, ", ".join(sorted(unknown)))

    def get(self, name, default=None):
        return self.conf.get(name, default)

    def int(self, name, default: int) -> int:
        v = self.conf.get(name, default)
        try:
            return int(v)
        except (TypeError, ValueError):
            raise ConfigError(f"configuration property {name!r} must be an integer, got {v!r}") from None

    def float(self, name, default: float) -> float:
        v = self.conf.get(name, default)
        try:
            return float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"configuration property {name!r} must be a number, got {v!r}") from None

    def bool(self, name, default: bool) -> bool:
        v = self.conf.get(name, default)
        if isinstance(v, str):
            if v.lower() in ("true", "1", "yes"):
                return True
            if v.lower() in ("false", "0", "no"):
                return False
            raise ConfigError(f"configuration property {name!r} must be true or false, got {v!r}")
        return bool(v)

    def str(self, name, default: str | None) -> str | None:
        v = self.conf.get(name, default)
        return None if v is None else str(v)

    def credentials(self) -> dict | None:
        """The hello credentials from librdkafka's SASL/PLAIN properties (see `plain_credentials`)."""
        return plain_credentials(self.str("security.protocol", None), self.get("sasl.mechanism", self.get("sasl.mechanisms")),
                                 self.get("sasl.username"), self.get("sasl.password"), ConfigError,
                                 ("security.protocol", "sasl.mechanism", "sasl.username", "sasl.password"))


def plain_credentials(protocol, mechanism, username, password, error=ValueError,
                      names=("security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password")):
    """The handshake's credentials from a client's SASL/PLAIN settings, or None.

    The username and password become the hello's `credentials` (the servers' `--user`). What
    the clients cannot honour is refused, at construction, with `error`, as the real libraries
    refuse a configuration they cannot apply: a mechanism other than PLAIN, a security protocol
    other than PLAINTEXT / SSL / SASL_PLAINTEXT / SASL_SSL, SASL without a username. TLS
    itself (the `ssl.*` settings) is `clients.tls`'s business. `names` are the setting
    names to quote (librdkafka's or aiokafka's).
    """
    n_protocol, n_mechanism, n_user, n_password = names
    protocol = (protocol or "plaintext").lower()
    if protocol not in ("plaintext", "sasl_plaintext", "ssl", "sasl_ssl"):
        raise error(f"{n_protocol} {protocol.upper()!r} is not supported by this client "
                    f"(use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL)")
    if mechanism is not None and str(mechanism).upper() != "PLAIN":
        raise error(f"{n_mechanism} {mechanism!r} is not supported: the handshake takes a "
                    f"username and password, i.e. PLAIN")
    if username is None:
        if password is not None or protocol.startswith("sasl_"):
            raise error(f"{n_user} is required with {n_password} or {n_protocol}=SASL_PLAINTEXT/SASL_SSL")
        return None
    return {"username": str(username), "password": "" if password is None else str(password)}
