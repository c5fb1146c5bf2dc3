"""The topic trie, in-process, against a plain recursive matcher that reads like the spec."""

from hypothesis import given, strategies as st

from brokertest.queue_model import topic_matches as reference_match
from minibroker.exchanges.topic import TopicTrie


words = st.sampled_from(["a", "b", "c", ""])
pattern_words = st.sampled_from(["a", "b", "c", "", "*", "#"])
keys = st.lists(words, max_size=5).map(".".join)
patterns = st.lists(pattern_words, max_size=5).map(".".join)


@given(st.lists(patterns, min_size=1, max_size=8), st.lists(keys, min_size=1, max_size=8))
def test_trie_matches_like_reference(bound, routing_keys):
    trie = TopicTrie()
    dests = [object() for _ in bound]
    for pattern, dest in zip(bound, dests):
        trie.add(pattern, dest)
    for key in routing_keys:
        expected = {id(d) for p, d in zip(bound, dests) if reference_match(p, key)}
        assert {id(d) for d in trie.match(key)} == expected


@given(st.lists(st.tuples(patterns, st.integers(0, 3)), min_size=1, max_size=10), st.data())
def test_trie_after_removals_matches_the_remaining_bindings(bindings, data):
    trie = TopicTrie()
    dests = [object() for _ in range(4)]
    for pattern, d in bindings:
        trie.add(pattern, dests[d])
    removed = data.draw(st.lists(st.sampled_from(bindings), unique=True))
    remaining = list(bindings)
    for pattern, d in removed:
        trie.remove(pattern, dests[d])
        remaining.remove((pattern, d))
    for key in data.draw(st.lists(keys, min_size=1, max_size=5)):
        expected = {id(dests[d]) for p, d in remaining if reference_match(p, key)}
        assert {id(x) for x in trie.match(key)} == expected
    if not remaining:
        assert trie.root.children == {} and trie.root.destinations == {}


def test_many_hashes_do_not_blow_up():
    trie = TopicTrie()
    dest = object()
    trie.add("#.#.#.#.#.#.x", dest)
    assert trie.match(".".join(["a"] * 40)) == []
    assert trie.match(".".join(["a"] * 40 + ["x"])) == [dest]
