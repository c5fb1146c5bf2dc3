"""What every exchange type shares: its declared settings and its set of bindings.

An exchange routes a message to *destinations* (queues, or other exchanges for exchange-to-
exchange bindings) by its routing key and headers. Each type keeps its own index of bindings
for fast routing (a dict, a set, a trie, a list) in its own module; this base keeps the
authoritative set of `Binding`s, so listing, comparing and removing bindings is the same for
all types. Following a route through exchange-to-exchange bindings is the broker's job
(`Broker.route` in broker.py), not the exchange's.
"""

from typing import NamedTuple


def freeze(value):
    """A hashable form of a binding's arguments map, so equal bindings compare equal."""
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


class Binding(NamedTuple):
    destination: object        # a MessageQueue or an Exchange
    routing_key: str
    arguments_key: tuple       # freeze(arguments)
    arguments: dict


class Exchange:
    type_name = "base"

    def __init__(self, name: str, durable: bool = False, auto_delete: bool = False,
                 internal: bool = False, arguments: dict | None = None):
        self.name = name
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments = arguments or {}
        self.bindings: dict[tuple, Binding] = {}   # (id(destination), routing_key, arguments_key) -> Binding
        self.deleted = False
        self.is_queue = False
        self.fast = False      # see MessageQueue.fast; an exchange destination takes the full path

    # ---- bindings -----------------------------------------------------------------------------
    def bind(self, destination, routing_key: str, arguments: dict | None) -> bool:
        """Add a binding; False when an equal binding exists (binding is idempotent)."""
        arguments = arguments or {}
        args_key = freeze(arguments)
        key = (id(destination), routing_key, args_key)
        if key in self.bindings:
            return False
        binding = Binding(destination, routing_key, args_key, arguments)
        self.bindings[key] = binding
        self._add(binding)
        return True

    def unbind(self, destination, routing_key: str, arguments: dict | None) -> bool:
        """Remove a binding; False when there was none."""
        key = (id(destination), routing_key, freeze(arguments or {}))
        binding = self.bindings.pop(key, None)
        if binding is None:
            return False
        self._remove(binding)
        return True

    def unbind_destination(self, destination) -> list:
        """Remove every binding to `destination` (it is being deleted); returns them."""
        gone = [b for k, b in self.bindings.items() if k[0] == id(destination)]
        for b in gone:
            del self.bindings[(id(destination), b.routing_key, b.arguments_key)]
            self._remove(b)
        return gone

    # ---- the per-type index ----------------------------------------------------------------------
    def _add(self, binding: Binding) -> None:
        raise NotImplementedError

    def _remove(self, binding: Binding) -> None:
        raise NotImplementedError

    def route(self, routing_key: str, properties) -> list | tuple:
        """The destinations of a message with this routing key and properties (may repeat none)."""
        raise NotImplementedError

    # ---- declarations ----------------------------------------------------------------------------
    def settings(self) -> tuple:
        return (self.type_name, self.durable, self.auto_delete, self.internal, freeze(self.arguments))

    def describe(self) -> dict:
        return {"name": self.name, "type": self.type_name, "durable": self.durable,
                "auto_delete": self.auto_delete, "internal": self.internal,
                "arguments": self.arguments, "bindings": len(self.bindings)}

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}>"
