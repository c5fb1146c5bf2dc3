"""Topics: named sets of partition logs, with their settings, over the storage engine.

`Topics` creates, auto-creates, describes and deletes topics on top of
`minilog.storage.LogManager` (which owns the `<topic>-<partition>` directories and persists
each topic's config overrides). It checks what a client asks for and turns storage failures
into wire errors (`BrokerError` codes); it knows nothing of connections. Server-wide defaults
(`--num-partitions`, `--log-segment-bytes` ...) arrive as the LogManager's default config and
`default_partitions`.
"""

from __future__ import annotations

import asyncio

from clients.protocol.errors import BrokerError, ErrorCode
from minilog.storage import InvalidConfigError, LogConfig, LogManager, UnknownTopicOrPartitionError
from minilog.storage.log_manager import TopicBuildCancelled, check_topic_name

MAX_PARTITIONS = 10_000
# Partitions one create request may make, over all its topics (a topic without a count counts the
# server default). Each costs three file descriptors and about a millisecond of the creation
# worker: without it one request of 1,000 topics x 10,000 partitions would hold the worker (and
# every later create) for hours, and no request that big can succeed anyway.
MAX_PARTITIONS_PER_REQUEST = 10_000
INTERNAL_TOPICS = frozenset({"__consumer_offsets"})
# Topic configs whose values are words, not numbers (Kafka's admin clients send both as strings).
_STRING_CONFIGS = frozenset({"cleanup.policy", "message.timestamp.type"})


class Topics:
    def __init__(self, logs: LogManager, default_partitions: int = 1, auto_create: bool = True):
        self.logs = logs
        self._open_logs = logs.open_logs
        self.default_partitions = default_partitions
        self.auto_create = auto_create
        self._partitions: dict[str, int] = {t: len(ps) for t, ps in logs.topics().items()}

    # ---- lookups -----------------------------------------------------------------------
    def names(self, include_internal: bool = False) -> list[str]:
        return sorted(t for t in self._partitions if include_internal or t not in INTERNAL_TOPICS)

    def exists(self, topic: str) -> bool:
        return topic in self._partitions

    def partition_count(self, topic: str) -> int:
        return self._partitions.get(topic, 0)

    def get_log(self, topic: str, partition: int, auto_create: bool = False):
        """The partition's log; creates the topic first when allowed. Raises BrokerError NOT_FOUND."""
        plog = self._open_logs.get((topic, partition))
        if plog is not None:
            return plog
        if self.logs.is_being_created(topic):
            raise BrokerError(ErrorCode.NOT_FOUND, f"topic {topic!r} is being created (or getting new partitions): "
                                                   f"retry when it is done")
        if auto_create and self.auto_create and topic not in self._partitions:
            self.create(topic, None, {})
            try:
                return self.logs.get_log(topic, partition)
            except UnknownTopicOrPartitionError:
                pass
        if topic in self._partitions:
            raise BrokerError(ErrorCode.NOT_FOUND,
                              f"topic {topic!r} has partitions 0..{self._partitions[topic] - 1}, not {partition}")
        raise BrokerError(ErrorCode.NOT_FOUND, f"topic {topic!r} does not exist"
                          + ("" if self.auto_create else " (auto-creation is off: create it with create_topics)"))

    # ---- admin -------------------------------------------------------------------------
    def check_request_size(self, counts) -> None:
        """Refuse a create request whose topics' partition counts add up to more than
        MAX_PARTITIONS_PER_REQUEST (BAD_REQUEST). A count that is not a valid one is left to
        `check_create`, which refuses that topic alone."""
        total = 0
        for n in counts:
            if n is None or n == -1:
                n = self.default_partitions
            if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_PARTITIONS:
                total += n
        if total > MAX_PARTITIONS_PER_REQUEST:
            raise BrokerError(ErrorCode.BAD_REQUEST,
                              f"a create request may make at most {MAX_PARTITIONS_PER_REQUEST} partitions in all, "
                              f"this one asks for {total}: send it in smaller requests")

    def check_create(self, name, num_partitions, config) -> tuple[int, dict]:
        """Validate a create request; returns (partitions, config overrides)."""
        if not isinstance(name, str):
            raise BrokerError(ErrorCode.BAD_REQUEST, f"topic name must be a string, got {type(name).__name__}")
        try:
            check_topic_name(name)
        except ValueError as exc:
            raise BrokerError(ErrorCode.BAD_REQUEST, str(exc)) from None
        if name in self._partitions:
            raise BrokerError(ErrorCode.ALREADY_EXISTS, f"topic {name!r} already exists")
        if self.logs.is_being_created(name):
            raise BrokerError(ErrorCode.ALREADY_EXISTS, f"topic {name!r} is being created by another request")
        if num_partitions is None or num_partitions == -1:
            num_partitions = self.default_partitions
        if (not isinstance(num_partitions, int) or isinstance(num_partitions, bool)
                or not 1 <= num_partitions <= MAX_PARTITIONS):
            raise BrokerError(ErrorCode.BAD_REQUEST,
                              f"topic {name!r}: num_partitions must be an integer in [1, {MAX_PARTITIONS}], "
                              f"got {num_partitions!r}")
        config = config or {}
        if not isinstance(config, dict):
            raise BrokerError(ErrorCode.BAD_REQUEST, f"topic {name!r}: config must be a map of Kafka names")
        overrides = {}
        for key, value in config.items():
            # Kafka's admin clients send every value as a string; accept "1024" for 1024.
            if isinstance(value, str) and key not in _STRING_CONFIGS:
                try:
                    value = float(value) if key == "min.cleanable.dirty.ratio" else int(value)
                except ValueError:
                    raise BrokerError(ErrorCode.BAD_REQUEST,
                                      f"topic {name!r}: config {key} must be an integer, got {value!r}") from None
            overrides[key] = value
        try:
            LogConfig.from_dict(overrides, self.logs.default_config)
        except (InvalidConfigError, TypeError) as exc:
            raise BrokerError(ErrorCode.BAD_REQUEST, f"topic {name!r}: {exc}") from None
        return num_partitions, overrides

    def create(self, name, num_partitions, config) -> None:
        """Create a topic on this thread (auto-creation, in-process use): see `reserve` and `build_off_loop`."""
        partitions, overrides = self.check_create(name, num_partitions, config)
        try:
            self.logs.create_topic(name, partitions, overrides)  # all or nothing
        except OSError as exc:
            raise BrokerError(ErrorCode.STORAGE_ERROR, f"could not create topic {name!r}: {exc}") from None
        self._partitions[name] = partitions

    def reserve(self, name, num_partitions, config):
        """Check a create request and claim its name (`LogManager.reserve_topic`); returns the
        `TopicBuild` for `build_off_loop`. Raises BrokerError.

        From here until the topic is adopted, a second creation of the name gets ALREADY_EXISTS
        and a produce to it NOT_FOUND ("being created"), so requests that come after this one,
        from any connection, see the name taken even before the files exist.
        """
        partitions, overrides = self.check_create(name, num_partitions, config)
        try:
            return self.logs.reserve_topic(name, partitions, overrides)
        except ValueError as exc:
            raise BrokerError(ErrorCode.ALREADY_EXISTS, str(exc)) from None

    async def build_off_loop(self, build, executor) -> None:
        """Make a reserved topic's files on `executor`'s thread, then adopt it, all of it in one step.

        Opening, preallocating and mapping three files per partition costs a millisecond or more
        each: 10,000 partitions on the event loop stalled every client for many seconds. A failure
        (no descriptors, no space, the server stopping) leaves nothing behind. Raises BrokerError.
        """
        what = (f"create topic {build.topic!r}" if build.first == 0
                else f"add partitions {build.first}..{build.partitions - 1} to {build.topic!r}")
        try:
            await asyncio.wrap_future(executor.submit(self.logs.build_topic, build))
        except (OSError, RuntimeError, TopicBuildCancelled) as exc:   # RuntimeError: the executor was shut down
            self.logs.abandon_topic(build)
            raise BrokerError(ErrorCode.STORAGE_ERROR, f"could not {what}: {exc}") from None
        except BaseException:
            self.logs.abandon_topic(build)
            raise
        try:
            self.logs.adopt_topic(build)
        except TopicBuildCancelled as exc:
            self.logs.abandon_topic(build)
            raise BrokerError(ErrorCode.STORAGE_ERROR, f"could not {what}: {exc}") from None
        self._partitions[build.topic] = build.partitions

    def reserve_partitions(self, name, count):
        """Check a CreatePartitions request and claim the topic (`LogManager.reserve_partitions`);
        returns the build for `build_off_loop`, which adds the new partitions all at once or
        none (a failure halfway no longer leaves some of them). Raises BrokerError."""
        self.add_partitions(name, count, validate_only=True)
        try:
            return self.logs.reserve_partitions(name, count)
        except ValueError as exc:
            raise BrokerError(ErrorCode.PRECONDITION_FAILED, f"{exc}: retry when it is done") from None

    def add_partitions(self, name: str, count: int, validate_only: bool = False) -> None:
        """Grow topic `name` to `count` partitions on this thread (in-process use; the Kafka door's
        CreatePartitions goes through `reserve_partitions` and `build_off_loop`): all the new
        partitions or none. Partitions never shrink."""
        if name not in self._partitions:
            raise BrokerError(ErrorCode.NOT_FOUND, f"topic {name!r} does not exist")
        if name in INTERNAL_TOPICS:
            raise BrokerError(ErrorCode.NOT_AUTHORIZED, f"{name!r} is an internal topic")
        current = self._partitions[name]
        if not current < count <= MAX_PARTITIONS:
            raise BrokerError(ErrorCode.BAD_REQUEST, f"topic {name!r} has {current} partitions: a new count must be "
                                                     f"larger, and at most {MAX_PARTITIONS}; got {count}")
        if validate_only:
            return
        build = self.reserve_partitions(name, count)
        try:
            self.logs.build_topic(build)   # all the new partitions, or none
        except OSError as exc:
            self.logs.abandon_topic(build)
            raise BrokerError(ErrorCode.STORAGE_ERROR, f"could not add partitions to {name!r}: {exc}") from None
        self.logs.adopt_topic(build)
        self._partitions[name] = count

    def delete(self, name) -> None:
        if not isinstance(name, str) or name not in self._partitions:
            raise BrokerError(ErrorCode.NOT_FOUND, f"topic {name!r} does not exist")
        if self.logs.is_being_created(name):   # partitions being added: they would outlive the topic
            raise BrokerError(ErrorCode.PRECONDITION_FAILED,
                              f"topic {name!r} is getting new partitions: delete it when that is done")
        if name in INTERNAL_TOPICS:
            raise BrokerError(ErrorCode.NOT_AUTHORIZED, f"{name!r} is an internal topic and cannot be deleted")
        try:
            self.logs.delete_topic(name)
        except OSError as exc:
            raise BrokerError(ErrorCode.STORAGE_ERROR, f"could not delete topic {name!r}: {exc}") from None
        finally:
            self._partitions.pop(name, None)

    def describe(self, name: str) -> dict:
        partitions = []
        for p in range(self._partitions[name]):
            plog = self.logs.get_log(name, p)
            segments = plog.segments
            partitions.append({"partition": p, "start_offset": plog.log_start_offset,
                               "end_offset": plog.log_end_offset, "segments": len(segments),
                               "size_bytes": sum(seg.size for seg in segments)})
        return {"partitions": partitions, "config": self.logs.config_for(name).to_dict(), "error": None}
