"""AMQP 0-9-1 (with RabbitMQ's extensions): minibroker's second front door.

- `spec.py`      the protocol's constants, reply codes and method table, built from one compact
                 text table (class and method ids, field names and types).
- `fields.py`    field tables and arrays, every value type as RabbitMQ reads and writes them.
- `properties.py` the content header and the 14 basic properties.
- `codec.py`     sans-IO: `CommandReader` turns bytes into commands (method + content),
                 `frame_method` / `frame_content` turn commands into bytes.
- `connection.py` `AMQPConnection`, the asyncio protocol that drives the broker core.
- `sink.py`      `AMQPSink`: the core's callbacks (deliver, confirm, return, cancel) as frames.

Only `connection.py` touches a socket; the rest is pure and tested alone (tests/amqp).
"""
