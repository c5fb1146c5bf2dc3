"""A history checker in the manner of Jepsen's queue and Kafka workloads.

Concurrent producers and consumers write down what they did - what they sent, what the broker
acknowledged, what they received (and, for a log, at which partition and offset) - while the
broker is killed and restarted under them. Afterwards the history is checked against what the
broker promises, and every anomaly is counted by kind:

- **lost**: acknowledged (confirmed, or acked by a log) and never received by anyone, even after
  a final drain or full read;
- **unexpected**: received but never sent;
- **duplicate**: received more than once. For a queue a second delivery is allowed when the
  broker flagged it *redelivered* (an ack can die with the broker); an unflagged one is an
  anomaly. For a log the same value at two offsets is a duplicate write;
- **non-monotonic poll** (log): a consumer saw a partition's offsets go backwards without having
  repositioned (seek, assignment, restart);
- **poll skip** (log): a consumer jumped past offsets that the log holds, without repositioning.

This module only checks: it does no I/O, so it is tested alone on hand-made histories
(tests/brokertest/test_history.py). Running a workload against a broker and filling a history
is the caller's part.
"""

from collections import Counter, defaultdict
from dataclasses import dataclass, field

ANOMALIES = ("lost", "unexpected", "duplicate", "non_monotonic_poll", "poll_skip")


@dataclass
class Anomalies:
    """What a check found: a count per kind and, for each kind, a few examples to look at."""

    counts: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=lambda: defaultdict(list))

    def add(self, kind: str, example) -> None:
        self.counts[kind] += 1
        if len(self.examples[kind]) < 10:
            self.examples[kind].append(example)

    @property
    def ok(self) -> bool:
        return not any(self.counts.values())

    def table(self) -> str:
        """One line per anomaly kind with its count, as the deep run prints it."""
        width = max(len(k) for k in ANOMALIES)
        return "\n".join(f"{kind.ljust(width)}  {self.counts.get(kind, 0):>8}" for kind in ANOMALIES)

    def __str__(self):
        found = {k: v for k, v in self.counts.items() if v}
        if not found:
            return "no anomalies"
        return "; ".join(f"{k} x{v} (e.g. {self.examples[k][:3]})" for k, v in found.items())


@dataclass
class QueueHistory:
    """What happened to messages on a queue: ids sent, ids confirmed, deliveries seen."""

    sent: set = field(default_factory=set)
    confirmed: set = field(default_factory=set)
    deliveries: list = field(default_factory=list)     # (message id, redelivered flag)

    def send(self, msg_id) -> None:
        self.sent.add(msg_id)

    def confirm(self, msg_id) -> None:
        self.confirmed.add(msg_id)

    def receive(self, msg_id, redelivered: bool) -> None:
        self.deliveries.append((msg_id, bool(redelivered)))


def check_queue(history: QueueHistory) -> Anomalies:
    """At-least-once delivery of everything confirmed, nothing invented, a second delivery only
    when flagged redelivered."""
    found = Anomalies()
    seen = Counter()
    for msg_id, redelivered in history.deliveries:
        if msg_id not in history.sent:
            found.add("unexpected", msg_id)
        if seen[msg_id] and not redelivered:
            found.add("duplicate", msg_id)
        seen[msg_id] += 1
    for msg_id in sorted(history.confirmed - set(seen)):
        found.add("lost", msg_id)
    return found


@dataclass
class LogHistory:
    """What happened on a log: values sent, values acknowledged, each consumer's polls, and the
    final full read of every partition (the log as it ended)."""

    sent: set = field(default_factory=set)
    acked: set = field(default_factory=set)
    polls: list = field(default_factory=list)      # (consumer, partition, offset, value)
    repositions: list = field(default_factory=list)  # (consumer, partition, index into polls)
    final: dict = field(default_factory=dict)      # partition -> [(offset, value)], in order

    def send(self, value) -> None:
        self.sent.add(value)

    def ack(self, value) -> None:
        self.acked.add(value)

    def poll(self, consumer, partition, offset, value) -> None:
        self.polls.append((consumer, partition, offset, value))

    def reposition(self, consumer, partition) -> None:
        """The consumer moved its position on purpose (seek, new assignment, restart)."""
        self.repositions.append((consumer, partition, len(self.polls)))


def check_log(history: LogHistory) -> Anomalies:
    found = Anomalies()
    # Writes: every acknowledged value is in the log once; nothing in it was never sent.
    in_log = Counter(value for records in history.final.values() for _, value in records)
    for value, n in in_log.items():
        if value not in history.sent:
            found.add("unexpected", value)
        if n > 1:
            found.add("duplicate", value)
    for value in sorted(history.acked - set(in_log), key=repr):
        found.add("lost", value)
    # Reads: per consumer and partition, offsets only move forward and skip nothing the log holds.
    offsets = {p: [o for o, _ in records] for p, records in history.final.items()}
    moved_at = defaultdict(set)
    for consumer, partition, index in history.repositions:
        moved_at[(consumer, partition)].add(index)
    last = {}
    for index, (consumer, partition, offset, value) in enumerate(history.polls):
        if value not in history.sent:
            found.add("unexpected", value)
        key = (consumer, partition)
        if index in moved_at[key] or key not in last:
            last[key] = offset
            continue
        previous = last[key]
        if offset <= previous:
            found.add("non_monotonic_poll", (consumer, partition, previous, offset))
        else:
            between = _count_between(offsets.get(partition, []), previous, offset)
            if between:
                found.add("poll_skip", (consumer, partition, previous, offset, between))
        last[key] = offset
    return found


def _count_between(sorted_offsets: list, low: int, high: int) -> int:
    """How many offsets the log holds strictly between low and high."""
    from bisect import bisect_left, bisect_right
    return max(0, bisect_left(sorted_offsets, high) - bisect_right(sorted_offsets, low))
