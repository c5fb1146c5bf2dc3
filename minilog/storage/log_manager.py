"""LogManager: the broker's data directory and every partition log in it.

The data directory holds one ``<topic>-<partition>`` directory per partition
log, ``topic-configs/<topic>.json`` with each topic's config overrides
(Kafka names, written atomically) and ``topics-being-created/`` with a marker per
creation under way, so that a start after a crash removes a half-made topic. This module creates, opens, finds and
deletes partition logs and runs the periodic work (flush.ms, retention,
compaction, checkpoints, delayed deletes) when the server calls :meth:`tick`.
The log itself is ``log.py``; the retention policy ``retention.py``; compaction
``cleaner.py``.

The manager is owned by one thread (the server's event loop), with one exception: creating a
topic is split in three (``TopicBuild``) so that its file work, ``build_topic``, can run on a
worker thread while the owner goes on serving.
"""

from __future__ import annotations

import logging
import os
import re
import hashlib
import shutil
import time
import uuid

from clients.record_batch import BatchError
from serverbase.data_dir_lock import DataDirLock

from .checkpoint import fsync_dir, read_json, write_json
from .cleaner import clean_if_dirty
from .config import LogConfig
from .log import PartitionLog
from .retention import apply_retention

logger = logging.getLogger("minilog.storage")

TOPIC_CONFIG_DIR = "topic-configs"
# One file per topic creation (or growth) under way, written before its first file and removed
# once the topic is adopted or its files removed: a start that finds one undoes the creation
# (`LogManager._undo_interrupted_builds`), so a kill -9 midway leaves no partial topic.
BUILDS_DIR = "topics-being-created"
_DELETE_SUFFIX = "-delete"
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_PARTITION_DIR = re.compile(r"^(.+)-(\d+)$")


class UnknownTopicOrPartitionError(KeyError):
    """No log exists for this topic-partition."""


class TopicBuildCancelled(Exception):
    """A topic creation stopped because the manager is closing; nothing of it is left."""


class TopicBuild:
    """One topic being created, in three steps so the file work can leave the owner's thread.

    ``LogManager.reserve_topic`` (owner thread) claims the name, so a second creation of it is
    refused while this one runs; ``LogManager.build_topic`` (any thread) makes the config file
    and the partition logs - opening files, preallocating and mapping the indexes, which is
    what costs - without touching the manager's state; ``LogManager.adopt_topic`` (owner thread)
    makes the logs findable in one step, or ``LogManager.abandon_topic`` removes them.
    """

    def __init__(self, topic: str, partitions: int, overrides: dict | None, config: LogConfig, first: int = 0):
        self.topic = topic
        self.first = first             # 0: a new topic; else partitions added to an existing one
        self.partitions = partitions   # the topic's partition count once adopted
        self.overrides = overrides     # None when partitions are added: the topic keeps its config file
        self.config = config
        self.logs: list[PartitionLog] = []   # partitions first, first + 1, ...
        self.built = False
        self.cancelled = False   # set by the owner; build_topic stops and undoes at the next partition

    def cancel(self) -> None:
        self.cancelled = True


def check_topic_name(topic: str) -> None:
    if not isinstance(topic, str) or not _TOPIC_NAME.match(topic) or topic in (".", ".."):
        raise ValueError(f"invalid topic name {topic!r}: use 1-249 of [A-Za-z0-9._-], not '.' or '..'")


class LogManager:
    def __init__(self, data_dir: str, default_config: LogConfig | None = None):
        self.data_dir = data_dir
        self.default_config = default_config or LogConfig()
        self._logs: dict[tuple[str, int], PartitionLog] = {}
        self._topic_overrides: dict[str, dict] = {}
        self._flush_requester = None
        self._drop_behind: int | None = None
        self._uncleanable: set[PartitionLog] = set()
        self._tick_failures: dict[PartitionLog, str] = {}
        self._building: dict[str, TopicBuild] = {}  # topics being created (reserve_topic .. adopt_topic)
        # Before anything is read or repaired: a second minilog here would recover logs the
        # first one is appending to and write clean-shutdown markers under its feet.
        self._lock = DataDirLock(data_dir, "minilog")
        try:
            os.makedirs(os.path.join(data_dir, TOPIC_CONFIG_DIR), exist_ok=True)
            os.makedirs(os.path.join(data_dir, BUILDS_DIR), exist_ok=True)
            self._undo_interrupted_builds()
            self._load()
        except BaseException:
            self.close()
            raise

    # -- startup ------------------------------------------------------------

    def _undo_interrupted_builds(self) -> None:
        """Remove what creations cut short by a crash made: their client was never answered, so
        the topic (or the partitions being added) must not appear, half made, after a restart."""
        builds_dir = os.path.join(self.data_dir, BUILDS_DIR)
        for name in sorted(os.listdir(builds_dir)):
            marker = os.path.join(builds_dir, name)
            if not name.endswith(".json"):   # a temp file of a marker's write: never a marker
                os.unlink(marker)
                continue
            try:
                plan = read_json(marker)
                topic, first, partitions = plan["topic"], int(plan["first"]), int(plan["partitions"])
                check_topic_name(topic)
            except (ValueError, KeyError, TypeError, OSError) as exc:
                logger.error("ignoring unreadable topic-creation marker %s: %s", name, exc)
                os.unlink(marker)
                continue
            for p in range(first, partitions):
                shutil.rmtree(os.path.join(self.data_dir, f"{topic}-{p}"), ignore_errors=True)
            if first == 0:
                try:
                    os.unlink(self._config_path(topic))
                except FileNotFoundError:
                    pass
            fsync_dir(self.data_dir)
            os.unlink(marker)
            fsync_dir(builds_dir)
            logger.warning("%s of topic %r was interrupted (the server stopped without answering it): "
                           "removed partitions %d-%d", "creation" if first == 0 else "growth", topic,
                           first, partitions - 1)

    def _build_marker(self, topic: str) -> str:
        # Named by a hash: a 249-character topic name plus a suffix would pass NAME_MAX.
        return os.path.join(self.data_dir, BUILDS_DIR, hashlib.sha256(topic.encode()).hexdigest() + ".json")

    def _load(self) -> None:
        config_dir = os.path.join(self.data_dir, TOPIC_CONFIG_DIR)
        for name in sorted(os.listdir(config_dir)):
            if name.endswith(".json"):
                topic = name[:-len(".json")]
                try:
                    overrides = read_json(os.path.join(config_dir, name))
                    LogConfig.from_dict(overrides, self.default_config)
                except (ValueError, OSError) as exc:
                    logger.error("ignoring topic config %s: %s", name, exc)
                    continue
                self._topic_overrides[topic] = overrides
        for name in sorted(os.listdir(self.data_dir)):
            path = os.path.join(self.data_dir, name)
            if name.endswith(_DELETE_SUFFIX) and os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)  # a topic deletion interrupted by a stop
                continue
            m = _PARTITION_DIR.match(name)
            if m is None or not os.path.isdir(path) or name == TOPIC_CONFIG_DIR:
                continue
            topic, partition = m.group(1), int(m.group(2))
            self._logs[(topic, partition)] = self._open_log(path, topic)

    def set_flush_requester(self, requester) -> None:
        """Hand the flushes flush.messages / flush.ms make due to ``requester(log)`` (None: flush inline).

        See ``PartitionLog.flush_requester``: a server passes a callable that runs the
        fsync off its event loop. Applies to every open log and to those created later.
        """
        self._flush_requester = requester
        for log in self._logs.values():
            log.flush_requester = requester

    def set_drop_behind(self, nbytes: int | None) -> None:
        """Keep at most about ``nbytes`` of each log's newest data in the page cache (None: all of it).

        See ``PartitionLog.drop_behind_bytes``. Applies to every open log and to those created later.
        """
        self._drop_behind = nbytes
        for log in self._logs.values():
            log.drop_behind_bytes = nbytes

    def _open_log(self, path: str, topic: str) -> PartitionLog:
        log = PartitionLog.open(path, self.config_for(topic))
        log.flush_requester = self._flush_requester
        log.drop_behind_bytes = self._drop_behind
        return log

    # -- topics and partitions ----------------------------------------------

    def config_for(self, topic: str) -> LogConfig:
        return LogConfig.from_dict(self._topic_overrides.get(topic, {}), self.default_config)

    def overrides_for(self, topic: str) -> dict:
        """The topic's own config overrides (Kafka names), without the server defaults."""
        return dict(self._topic_overrides.get(topic, {}))

    def set_topic_config(self, topic: str, overrides: dict) -> LogConfig:
        """Replace a topic's overrides (Kafka names), persist them and apply them to its open logs."""
        check_topic_name(topic)
        config = LogConfig.from_dict(overrides, self.default_config)  # validates before writing
        write_json(os.path.join(self.data_dir, TOPIC_CONFIG_DIR, f"{topic}.json"), overrides)
        self._topic_overrides[topic] = dict(overrides)
        for (t, _), log in self._logs.items():
            if t == topic:
                log.config = config
        return config

    def create_log(self, topic: str, partition: int, overrides: dict | None = None) -> PartitionLog:
        """Create (or open, if it exists) the log of ``topic``-``partition``."""
        check_topic_name(topic)
        if not isinstance(partition, int) or partition < 0:
            raise ValueError(f"invalid partition {partition!r}")
        if overrides is not None:
            self.set_topic_config(topic, overrides)
        key = (topic, partition)
        if key not in self._logs:
            path = os.path.join(self.data_dir, f"{topic}-{partition}")
            self._logs[key] = self._open_log(path, topic)
            fsync_dir(self.data_dir)
        return self._logs[key]

    def create_topic(self, topic: str, partitions: int, overrides: dict | None = None) -> list[PartitionLog]:
        """Create ``topic`` with its config and ``partitions`` logs: all of it, or nothing.

        The three steps of :class:`TopicBuild` in a row, on the caller's thread (a server runs
        the middle one on a worker thread instead: ``minilog/topics.py``, ``Topics.create_off_loop``).
        """
        build = self.reserve_topic(topic, partitions, overrides)
        try:
            self.build_topic(build)
        except BaseException:
            self.abandon_topic(build)
            raise
        return self.adopt_topic(build)

    def reserve_topic(self, topic: str, partitions: int, overrides: dict | None = None) -> "TopicBuild":
        """Claim ``topic`` for a creation (owner thread): until it is adopted or abandoned, the
        name is taken, though no log of it can be found yet. Raises ValueError if it is taken."""
        check_topic_name(topic)
        if (topic, 0) in self._logs or topic in self._building:
            raise ValueError(f"topic {topic!r} already exists")
        overrides = dict(overrides or {})
        build = TopicBuild(topic, partitions, overrides, LogConfig.from_dict(overrides, self.default_config))
        self._building[topic] = build
        return build

    def reserve_partitions(self, topic: str, count: int) -> "TopicBuild":
        """Claim an existing topic for growing to ``count`` partitions (owner thread), as
        ``reserve_topic`` does for a new one; ``build_topic`` then makes only the new logs.
        Raises ValueError if the topic does not exist, is being changed, or would not grow."""
        current = sum(1 for t, _ in self._logs if t == topic)
        if not current or topic in self._building:
            raise ValueError(f"topic {topic!r} {'is being changed' if current else 'does not exist'}")
        if count <= current:
            raise ValueError(f"topic {topic!r} has {current} partitions, not fewer than {count}")
        build = TopicBuild(topic, count, None, self.config_for(topic), first=current)
        self._building[topic] = build
        return build

    def is_being_created(self, topic: str) -> bool:
        """True while a creation of ``topic``, or an addition of partitions to it, is under way."""
        return topic in self._building

    def build_topic(self, build: "TopicBuild") -> None:
        """Write the topic's config file and create its partition logs (any thread).

        Touches only the files of ``build``'s topic and no state of this manager, so the owner
        keeps serving while it runs. All or nothing: running out of file descriptors or space
        halfway, or ``build.cancel()``, closes the logs made so far (freeing their descriptors),
        removes their directories and the config file, and raises. The data directory is
        fsynced once for the whole topic, not once per partition: that fsync grows with the
        directory, and once per partition it was most of a 3,000-partition create.
        """
        try:
            self._write_marker(build)
            if build.overrides is not None:
                write_json(self._config_path(build.topic), build.overrides)
            for p in range(build.first, build.partitions):
                if build.cancelled:
                    raise TopicBuildCancelled(f"creation of topic {build.topic!r} was cancelled (server stopping)")
                log = PartitionLog.open(os.path.join(self.data_dir, f"{build.topic}-{p}"), build.config)
                build.logs.append(log)
            fsync_dir(self.data_dir)
            # Whole and durable: a restart from here on keeps the topic, even if the server
            # stops before answering (as Kafka may keep a topic whose creation timed out).
            self._remove_marker(build)
        except BaseException:
            self._remove_files(build)
            raise
        build.built = True

    def adopt_topic(self, build: "TopicBuild") -> list[PartitionLog]:
        """Make a built topic's logs the manager's (owner thread): from now on they are found."""
        if self._building.get(build.topic) is not build or not build.built:
            raise TopicBuildCancelled(f"creation of topic {build.topic!r} was cancelled (server stopping)")
        del self._building[build.topic]
        if build.overrides is not None:
            self._topic_overrides[build.topic] = build.overrides
        for p, log in enumerate(build.logs, build.first):
            log.flush_requester = self._flush_requester
            log.drop_behind_bytes = self._drop_behind
            self._logs[(build.topic, p)] = log
        return list(build.logs)

    def _write_marker(self, build: "TopicBuild") -> None:
        write_json(self._build_marker(build.topic),
                   {"topic": build.topic, "first": build.first, "partitions": build.partitions})

    def _remove_marker(self, build: "TopicBuild") -> None:
        os.unlink(self._build_marker(build.topic))
        fsync_dir(os.path.join(self.data_dir, BUILDS_DIR))

    def abandon_topic(self, build: "TopicBuild") -> None:
        """Give up a creation (owner thread, after ``build_topic`` returned or raised): the name
        is free again and whatever was built is removed."""
        if self._building.get(build.topic) is build:
            del self._building[build.topic]
        if build.built:
            self._remove_files(build)
            build.built = False

    def _config_path(self, topic: str) -> str:
        return os.path.join(self.data_dir, TOPIC_CONFIG_DIR, f"{topic}.json")

    def _remove_files(self, build: "TopicBuild") -> None:
        """Close a build's logs and delete its directories and config file (any thread; never raises)."""
        if not os.path.exists(self._build_marker(build.topic)):
            try:   # so that a crash halfway through the removal is finished at the next start
                self._write_marker(build)
            except OSError:
                pass
        for log in build.logs:
            try:
                log.close()
            except OSError:
                pass
        # One more directory than logs: the partition whose open failed may have made its own.
        for p in range(build.first, min(build.first + len(build.logs) + 1, build.partitions)):
            shutil.rmtree(os.path.join(self.data_dir, f"{build.topic}-{p}"), ignore_errors=True)
        build.logs = []
        if build.overrides is not None:   # a new topic's config file; an existing topic keeps its own
            try:
                os.unlink(self._config_path(build.topic))
            except OSError:
                pass
        try:
            fsync_dir(self.data_dir)
        except OSError:
            pass
        try:
            self._remove_marker(build)   # only once the files it names are gone
        except OSError:
            pass

    @property
    def open_logs(self) -> dict:
        """{(topic, partition): PartitionLog} of the logs open now: a hot path's lookup without a
        call (`Topics.get_log`). Read it; never change it."""
        return self._logs

    def get_log(self, topic: str, partition: int) -> PartitionLog:
        try:
            return self._logs[(topic, partition)]
        except KeyError:
            raise UnknownTopicOrPartitionError(f"{topic}-{partition}") from None

    def logs(self) -> dict[tuple[str, int], PartitionLog]:
        return dict(self._logs)

    def topics(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for topic, partition in sorted(self._logs):
            out.setdefault(topic, []).append(partition)
        return out

    def delete_topic(self, topic: str) -> int:
        """Close and remove every partition log of ``topic`` and its config; returns partitions removed."""
        removed = 0
        for key in [k for k in self._logs if k[0] == topic]:
            log = self._logs.pop(key)
            self._uncleanable.discard(log)
            self._tick_failures.pop(log, None)
            log.close()
            # Rename first: a stop mid-delete leaves a "-delete" directory the next start removes.
            # The new name does not repeat the topic's: a 249-character name plus a suffix would
            # pass the file system's 255-byte limit (ENAMETOOLONG) and the topic would stay.
            doomed = os.path.join(self.data_dir, f"{uuid.uuid4().hex}{_DELETE_SUFFIX}")
            os.rename(log.directory, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            removed += 1
        config_path = os.path.join(self.data_dir, TOPIC_CONFIG_DIR, f"{topic}.json")
        if os.path.exists(config_path):
            os.unlink(config_path)
        self._topic_overrides.pop(topic, None)
        fsync_dir(self.data_dir)
        logger.info("deleted topic %r: %d partition log(s) removed", topic, removed)
        return removed

    # -- periodic work ------------------------------------------------------

    def tick(self, now_ms: int | None = None) -> int:
        """Run flush.ms, segment.ms, retention, compaction, checkpoints and delayed deletes.

        Returns the number of segments retention deleted.
        """
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        deleted = 0
        for log in list(self._logs.values()):
            # One partition's failure (a disk error, data an older broker stored) must not stop
            # retention, flushes and checkpoints of every other partition.
            try:
                deleted += apply_retention(log, now)
                log.tick(now)
                if self._tick_failures:
                    self._tick_failures.pop(log, None)
            except Exception as exc:
                self._report_tick_failure(log, exc)
            if log.config.compacts and log not in self._uncleanable:
                self._clean(log, now)
        return deleted

    def _report_tick_failure(self, log: PartitionLog, exc: Exception) -> None:
        """One ERROR line per failure episode of a log's periodic work (a tick runs every second)."""
        if self._tick_failures.get(log) != str(exc):
            self._tick_failures[log] = str(exc)
            logger.error("%s: periodic work (retention, flush, checkpoint) failed: %s", log.directory, exc,
                         exc_info=not isinstance(exc, OSError))

    def _clean(self, log: PartitionLog, now: int) -> None:
        try:
            clean_if_dirty(log, now)
        except Exception as exc:
            # As Kafka's "uncleanable partition": stop compacting this log (until a restart)
            # rather than fail every tick; its records stay readable, only growth continues.
            # Anything else raised here (a bug, data an older broker stored) is treated the same:
            # it must not stop the tick's work for every other log.
            logger.error("%s: compaction failed, not compacting this log again until restart: %s",
                         log.directory, exc, exc_info=not isinstance(exc, (OSError, BatchError)))
            self._uncleanable.add(log)

    def flush_all(self) -> None:
        for log in self._logs.values():
            log.flush()
            log.write_recovery_checkpoint()

    def cancel_builds(self) -> None:
        """Ask every topic creation under way to stop (the owner is closing; see ``close``)."""
        for build in self._building.values():
            build.cancel()

    def close(self) -> None:
        """Close every log. A worker running ``build_topic`` must have finished first (a server
        calls ``cancel_builds`` and waits for its worker); a topic built but not yet adopted is
        removed, so a stop in the middle of a creation leaves no half topic behind."""
        for build in list(self._building.values()):
            build.cancel()
            self.abandon_topic(build)
        for log in self._logs.values():
            log.close()
        self._logs.clear()
        self._lock.release()

    def __enter__(self) -> "LogManager":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
