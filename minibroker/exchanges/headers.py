"""The headers exchange: routes on the message's `headers` property, not its routing key.

Each binding's arguments say which headers to compare: `x-match` is `all` (the default: every
listed header present with an equal value), `any` (at least one), or `all-with-x` / `any-with-x`
(the same, but headers whose names start with `x-` also count; plain `all`/`any` ignore them).
A binding value of nil matches any value as long as the header is present. There is no index
that helps here in general, so routing checks each binding in turn; bindings are few in practice.
"""

from .base import Exchange

MATCH_MODES = ("all", "any", "all-with-x", "any-with-x")


def binding_matches(arguments: dict, headers: dict) -> bool:
    mode = arguments.get("x-match", "all")
    with_x = mode.endswith("-with-x")
    want_all = mode.startswith("all")
    matched_any = False
    for key, expected in arguments.items():
        if key == "x-match" or (not with_x and key.startswith("x-")):
            continue
        if key in headers and (expected is None or headers[key] == expected):
            if not want_all:
                return True
            matched_any = True
        elif want_all:
            return False
    return matched_any if not want_all else True


class HeadersExchange(Exchange):
    type_name = "headers"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._bindings: list = []

    def _add(self, binding):
        self._bindings.append(binding)

    def _remove(self, binding):
        self._bindings = [b for b in self._bindings if b is not binding]

    def route(self, routing_key, properties):
        headers = properties.get("headers") if properties else None
        if not isinstance(headers, dict):
            headers = {}
        found = {}
        for b in self._bindings:
            if id(b.destination) not in found and binding_matches(b.arguments, headers):
                found[id(b.destination)] = b.destination
        return list(found.values())
