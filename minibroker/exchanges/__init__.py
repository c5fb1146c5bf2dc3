"""Exchange types, one module each: direct (and the default exchange), fanout, topic, headers."""

from .base import Binding, Exchange
from .direct import DefaultExchange, DirectExchange
from .fanout import FanoutExchange
from .headers import MATCH_MODES, HeadersExchange
from .topic import TopicExchange, TopicTrie

EXCHANGE_TYPES = {
    "direct": DirectExchange,
    "fanout": FanoutExchange,
    "topic": TopicExchange,
    "headers": HeadersExchange,
}

__all__ = ["Binding", "Exchange", "DefaultExchange", "DirectExchange", "FanoutExchange",
           "TopicExchange", "TopicTrie", "HeadersExchange", "EXCHANGE_TYPES", "MATCH_MODES"]
