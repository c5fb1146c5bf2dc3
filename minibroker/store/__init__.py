"""Durable storage for minibroker: definitions and a message journal, with no network in it.

- `definitions.py` (`DefinitionsStore`): durable exchanges, queues and bindings, replaced
  atomically on every change.
- `records.py`: the journal's on-disk record format (length + CRC32 + type + msgpack).
- `journal.py` (`MessageJournal`): persistent messages, settlements and delivery counts in
  append-only segment files, with group commit, garbage collection, compaction, lazy bodies
  and recovery.

The broker core reaches all of this through one narrow adapter (`broker_store.py`); the
design is explained in docs/minibroker-durability.md.
"""

from .definitions import DefinitionsStore
from .journal import FSYNC_POLICIES, MessageJournal, RecoveredMessage

__all__ = ["DefinitionsStore", "MessageJournal", "RecoveredMessage", "FSYNC_POLICIES"]
