"""The topic exchange: binding keys with `*` (exactly one word) and `#` (zero or more words).

Keys are split into words on `.`; the empty key has no words (so `#` matches it, `*` does not),
as in RabbitMQ. Bindings live in a trie (`TopicTrie`), one edge per word, with `*` and `#` as
ordinary edge labels that the matcher treats specially. Matching walks the trie once per routing
key, visiting each (node, word position) state at most once, so its cost depends on the key and
on the patterns that share its prefixes, not on the number of bindings. On top of the trie a
per-routing-key cache answers repeated keys with one dict lookup; any bind or unbind clears it.
"""

from .base import Exchange

CACHE_LIMIT = 4096   # distinct routing keys remembered; cleared whole when full (cheap, rare)


def split_words(key: str) -> list[str]:
    return key.split(".") if key else []


class _Node:
    __slots__ = ("children", "destinations", "is_hash")

    def __init__(self, is_hash: bool = False):
        self.children: dict[str, "_Node"] = {}
        self.destinations: dict[int, list] = {}   # id(destination) -> [destination, binding count]
        self.is_hash = is_hash                    # reached by a '#' edge: it may swallow more words


class TopicTrie:
    """Binding patterns → destinations, matched against routing keys."""

    def __init__(self):
        self.root = _Node()

    def add(self, pattern: str, destination) -> None:
        node = self.root
        for word in split_words(pattern):
            child = node.children.get(word)
            if child is None:
                child = node.children[word] = _Node(word == "#")
            node = child
        entry = node.destinations.get(id(destination))
        if entry is None:
            node.destinations[id(destination)] = [destination, 1]
        else:
            entry[1] += 1

    def remove(self, pattern: str, destination) -> None:
        path = [self.root]
        words = split_words(pattern)
        for word in words:
            child = path[-1].children.get(word)
            if child is None:
                return
            path.append(child)
        node = path[-1]
        entry = node.destinations.get(id(destination))
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del node.destinations[id(destination)]
        # Prune nodes left with neither destinations nor children, so the trie does not leak.
        for depth in range(len(words), 0, -1):
            node = path[depth]
            if node.destinations or node.children:
                break
            del path[depth - 1].children[words[depth - 1]]

    def match(self, routing_key: str) -> list:
        """The destinations whose patterns match `routing_key`.

        A state is (trie node, words consumed). A '#' node is entered having swallowed zero
        words and may swallow one more word at a time by staying put (state (node, i+1)), so each
        state pushes at most four others, and with every state visited once the work is bounded
        by (trie nodes on the key's paths) x (words + 1): a binding of 500 '#' and a 501-word key
        is about 250,000 states, not the exponential walk of naive backtracking.
        """
        words = split_words(routing_key)
        n = len(words)
        found: dict[int, object] = {}
        seen = set()
        stack = [(self.root, 0)]
        while stack:
            node, i = stack.pop()
            state = (id(node), i)
            if state in seen:
                continue
            seen.add(state)
            children = node.children
            hash_child = children.get("#")
            if hash_child is not None:
                stack.append((hash_child, i))          # '#' matching zero words so far
            if node.is_hash and i < n:
                stack.append((node, i + 1))            # this '#' swallows one more word
            if i == n:
                for key, entry in node.destinations.items():
                    found[key] = entry[0]
                continue
            child = children.get(words[i])
            if child is not None:
                stack.append((child, i + 1))
            child = children.get("*")
            if child is not None:
                stack.append((child, i + 1))
        return list(found.values())


class TopicExchange(Exchange):
    type_name = "topic"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.trie = TopicTrie()
        self._cache: dict[str, tuple] = {}

    def _add(self, binding):
        self.trie.add(binding.routing_key, binding.destination)
        self._cache.clear()

    def _remove(self, binding):
        self.trie.remove(binding.routing_key, binding.destination)
        self._cache.clear()

    def route(self, routing_key, properties):
        dests = self._cache.get(routing_key)
        if dests is None:
            dests = tuple(self.trie.match(routing_key))
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[routing_key] = dests
        return dests
