"""The fanout exchange: every bound destination gets every message, routing key ignored."""

from .base import Exchange


class FanoutExchange(Exchange):
    type_name = "fanout"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._destinations: tuple = ()

    def _rebuild(self):
        seen = {}
        for b in self.bindings.values():
            seen.setdefault(id(b.destination), b.destination)
        self._destinations = tuple(seen.values())

    def _add(self, binding):
        self._rebuild()

    def _remove(self, binding):
        self._rebuild()

    def route(self, routing_key, properties):
        return self._destinations
