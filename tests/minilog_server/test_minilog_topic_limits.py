"""Every legal topic name works end to end, and topic creation is all or nothing."""

import os

import pytest

from clients.protocol.errors import ErrorCode
from minilog_wire_helpers import batch, connect, create, fetch, produce, record_values, values


@pytest.mark.parametrize("length", [213, 214, 249])
def test_a_topic_name_of_up_to_249_characters_is_created_used_deleted_and_stays_deleted(start_minilog, tmp_path,
                                                                                       length):
    name = ("t" * length)[:length - 3] + ".-_"
    data_dir = tmp_path / "d"
    server = start_minilog(data_dir)
    with connect(server) as c:
        create(c, name, partitions=2, config={"retention.ms": -1})
        produce(c, name, 1, batch(values(3)))
    server.stop()
    server = start_minilog(data_dir)
    with connect(server) as c:
        assert record_values(fetch(c, name, 1, 0)[3]) == values(3)
        assert c.call("delete_topics", {"topics": [name]})["results"] == {name: None}
        assert name not in c.call("metadata", {})["topics"]
        assert fetch(c, name, 1, 0)[0][0] == ErrorCode.NOT_FOUND
    server.stop()
    assert sorted(os.listdir(data_dir)) == ["LOCK", "__consumer_offsets-0", "topic-configs", "topics-being-created"]
    assert os.listdir(data_dir / "topic-configs") == ["__consumer_offsets.json"]
    server = start_minilog(data_dir)
    with connect(server) as c:
        assert name not in c.call("metadata", {})["topics"]
        create(c, name, partitions=1)  # and the name can be used again
        assert produce(c, name, 0, batch(values(1)))[0][2] == 0


def test_a_250_character_topic_name_is_refused(server):
    with connect(server) as c:
        result = c.call("create_topics", {"topics": [{"name": "x" * 250, "num_partitions": 1}]})
        assert result["results"]["x" * 250][0] == ErrorCode.BAD_REQUEST


@pytest.mark.parametrize("key,value", [("segment.index.bytes", 2**40), ("index.interval.bytes", 2**31),
                                       ("max.message.bytes", 2**32), ("retention.ms", 2**63),
                                       ("segment.bytes", 2**31)])
def test_configs_are_bounded_as_kafka_types_them(server, key, value):
    with connect(server) as c:
        result = c.call("create_topics", {"topics": [{"name": "big", "num_partitions": 2, "config": {key: value}}]})
        code, message = result["results"]["big"]
        assert code == ErrorCode.BAD_REQUEST and key in message
        assert "big" not in c.call("metadata", {})["topics"]
        create(c, "big", partitions=2, config={key: 2**31 - 1 if key != "segment.index.bytes" else 1 << 20})
