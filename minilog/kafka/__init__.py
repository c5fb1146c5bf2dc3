"""minilog's second front door: the Kafka wire protocol.

- `primitives.py`, `schema.py`, `messages.py`, `codec.py`: the sans-IO codec (bytes in,
  requests out; replies back to bytes), tested and fuzzed without a socket;
- `errors.py`: Kafka's error codes;
- the listener and the API handlers translate Kafka requests to minilog's core.

docs/kafka-protocol.md lists the APIs and versions served and every difference from Kafka.
"""
