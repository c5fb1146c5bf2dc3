"""Topic administration over the wire: create, describe (metadata), delete, auto-create."""

from clients.protocol.errors import ErrorCode
from minilog_wire_helpers import batch, connect, create, error_code, produce, values


def test_create_describes_partitions_offsets_and_kafka_named_config(server):
    with connect(server) as c:
        create(c, "orders", partitions=3, config={"retention.ms": 60_000, "segment.bytes": "1048576",
                                                  "max.message.bytes": 5000})
        topic = c.call("metadata", {"topics": ["orders"]})["topics"]["orders"]
        assert topic["error"] is None
        assert topic["partitions"] == [{"partition": p, "start_offset": 0, "end_offset": 0, "segments": 1,
                                        "size_bytes": 0} for p in range(3)]
        assert topic["config"]["retention.ms"] == 60_000
        assert topic["config"]["segment.bytes"] == 1048576
        assert topic["config"]["max.message.bytes"] == 5000
        assert topic["config"]["retention.bytes"] == -1   # the server default: no limit


def test_end_offsets_in_metadata_follow_produce(server):
    with connect(server) as c:
        create(c, "t", partitions=2)
        produce(c, "t", 1, batch(values(7)))
        parts = c.call("metadata", {"topics": ["t"]})["topics"]["t"]["partitions"]
        assert [p["end_offset"] for p in parts] == [0, 7]


def test_metadata_without_names_lists_every_user_topic(server):
    with connect(server) as c:
        create(c, "a")
        create(c, "b", partitions=2)
        topics = c.call("metadata", {"topics": None})["topics"]
        assert sorted(topics) == ["a", "b"]       # the internal __consumer_offsets is not listed
        assert len(topics["b"]["partitions"]) == 2


def test_create_refuses_duplicates_bad_names_counts_and_configs(server):
    with connect(server) as c:
        create(c, "dup")
        specs = [{"name": "dup", "num_partitions": 1},
                 {"name": "bad/name", "num_partitions": 1},
                 {"name": "zero", "num_partitions": 0},
                 {"name": "unknown-key", "num_partitions": 1, "config": {"retention.hours": 5}},
                 {"name": "bad-value", "num_partitions": 1, "config": {"segment.bytes": 3}},
                 {"name": "fine", "num_partitions": 2}]
        results = c.call("create_topics", {"topics": specs})["results"]
        assert results["dup"][0] == ErrorCode.ALREADY_EXISTS
        assert results["bad/name"][0] == ErrorCode.BAD_REQUEST
        assert results["zero"][0] == ErrorCode.BAD_REQUEST
        assert results["unknown-key"][0] == ErrorCode.BAD_REQUEST and "retention.hours" in results["unknown-key"][1]
        assert results["bad-value"][0] == ErrorCode.BAD_REQUEST and "segment.bytes" in results["bad-value"][1]
        assert results["fine"] is None
        assert sorted(c.call("metadata", {})["topics"]) == ["dup", "fine"]


def test_validate_only_creates_nothing(server):
    with connect(server) as c:
        result = c.call("create_topics", {"topics": [{"name": "x", "num_partitions": 2}], "validate_only": True})
        assert result["results"]["x"] is None
        assert c.call("metadata", {})["topics"] == {}


def test_create_without_count_uses_the_server_default(start_minilog):
    server = start_minilog(num_partitions=4)
    with connect(server) as c:
        c.call("create_topics", {"topics": [{"name": "t"}]})
        assert len(c.call("metadata", {"topics": ["t"]})["topics"]["t"]["partitions"]) == 4


def test_delete_removes_topic_and_its_data(server):
    with connect(server) as c:
        create(c, "gone", partitions=2)
        produce(c, "gone", 0, batch(values(3)))
        assert c.call("delete_topics", {"topics": ["gone", "never"]})["results"] == {
            "gone": None, "never": [ErrorCode.NOT_FOUND, "topic 'never' does not exist"]}
        meta = c.call("metadata", {"topics": ["gone"]})["topics"]["gone"]
        assert meta["error"][0] == ErrorCode.NOT_FOUND
        # Re-created, it starts empty.
        create(c, "gone")
        assert c.call("metadata", {"topics": ["gone"]})["topics"]["gone"]["partitions"][0]["end_offset"] == 0


def test_produce_auto_creates_with_default_partitions(start_minilog):
    server = start_minilog(num_partitions=3)
    with connect(server) as c:
        rows = produce(c, "fresh", 2, batch(values(2)))
        assert rows == [["fresh", 2, 0, None]]
        assert len(c.call("metadata", {"topics": ["fresh"]})["topics"]["fresh"]["partitions"]) == 3


def test_auto_create_off_refuses_unknown_topics_per_partition(start_minilog):
    server = start_minilog(auto_create_topics=False)
    with connect(server) as c:
        create(c, "known")
        rows = produce(c, "known", 0, batch(values(1))) + produce(c, "unknown", 0, batch(values(1)))
        assert rows[0] == ["known", 0, 0, None]
        assert rows[1][2] == -1 and rows[1][3][0] == ErrorCode.NOT_FOUND
        meta = c.call("metadata", {"topics": ["unknown"], "allow_auto_create": True})["topics"]["unknown"]
        assert meta["error"][0] == ErrorCode.NOT_FOUND


def test_metadata_may_auto_create_when_asked(server):
    with connect(server) as c:
        assert c.call("metadata", {"topics": ["m"]})["topics"]["m"]["error"][0] == ErrorCode.NOT_FOUND
        meta = c.call("metadata", {"topics": ["m"], "allow_auto_create": True})["topics"]["m"]
        assert meta["error"] is None and len(meta["partitions"]) == 1


def test_unknown_partition_of_a_known_topic_is_not_found(server):
    with connect(server) as c:
        create(c, "two", partitions=2)
        rows = produce(c, "two", 5, batch(values(1)))
        assert rows[0][3][0] == ErrorCode.NOT_FOUND and "0..1" in rows[0][3][1]


def test_internal_topic_cannot_be_produced_to_or_deleted(server):
    with connect(server) as c:
        rows = produce(c, "__consumer_offsets", 0, batch(values(1)))
        assert rows[0][3][0] == ErrorCode.NOT_AUTHORIZED
        result = c.call("delete_topics", {"topics": ["__consumer_offsets"]})
        assert result["results"]["__consumer_offsets"][0] == ErrorCode.NOT_AUTHORIZED


def test_bad_arguments_get_bad_request_and_the_connection_lives(server):
    with connect(server) as c:
        assert error_code(c.call, "create_topics", {"topics": "nope"}) == ErrorCode.BAD_REQUEST
        assert error_code(c.call, "create_topics", {"topics": [42]}) == ErrorCode.BAD_REQUEST
        assert error_code(c.call, "metadata", {"topics": [1]}) == ErrorCode.BAD_REQUEST
        assert c.call("ping")["pong"] is True


def test_compacted_topic_settings_accept_kafka_strings(server):
    with connect(server) as c:
        create(c, "table", config={"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.25",
                                   "delete.retention.ms": "1000"})
        config = c.call("metadata", {"topics": ["table"]})["topics"]["table"]["config"]
        assert config["cleanup.policy"] == "compact" and config["min.cleanable.dirty.ratio"] == 0.25
        assert config["delete.retention.ms"] == 1000
        result = c.call("create_topics", {"topics": [{"name": "bad", "config": {"min.cleanable.dirty.ratio": "2"}}]})
        assert result["results"]["bad"][0] == ErrorCode.BAD_REQUEST
