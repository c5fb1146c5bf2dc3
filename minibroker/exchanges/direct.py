"""The direct exchange (a binding key equals the routing key) and the default exchange.

`DirectExchange` indexes its bindings in a dict from routing key to destinations, so routing
is one dict lookup. `DefaultExchange` is the nameless exchange every queue is implicitly bound
to by its own name: it keeps no bindings at all and routes by looking the routing key up in the
broker's queue table. It cannot be bound to, unbound from or deleted (the broker refuses).
"""

from .base import Exchange

_EMPTY = ()


class DirectExchange(Exchange):
    type_name = "direct"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._by_key: dict[str, list] = {}

    def _add(self, binding):
        dests = self._by_key.setdefault(binding.routing_key, [])
        if binding.destination not in dests:   # same destination, other arguments: route once
            dests.append(binding.destination)

    def _remove(self, binding):
        still = any(b.destination is binding.destination and b.routing_key == binding.routing_key
                    for b in self.bindings.values())
        if not still:
            dests = self._by_key.get(binding.routing_key)
            if dests is not None:
                dests.remove(binding.destination)
                if not dests:
                    del self._by_key[binding.routing_key]

    def route(self, routing_key, properties):
        return self._by_key.get(routing_key, _EMPTY)


class DefaultExchange(Exchange):
    """The nameless direct exchange: routing key = queue name."""

    type_name = "direct"

    def __init__(self, queues: dict):
        super().__init__("", durable=True)
        self._queues = queues

    def route(self, routing_key, properties):
        queue = self._queues.get(routing_key)
        return (queue,) if queue is not None else _EMPTY
