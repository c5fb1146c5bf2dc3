"""pika's `ExchangeType` enum; `exchange_declare` takes it or the plain string."""

import enum


class ExchangeType(enum.Enum):
    direct = "direct"
    fanout = "fanout"
    headers = "headers"
    topic = "topic"
