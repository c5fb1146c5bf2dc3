"""The Kafka APIs minilog serves: key, version range, and every field of request and response.

Written from Apache Kafka's message definitions (`clients/src/main/resources/common/message/`)
for the versions we advertise and no others; the field names are theirs in snake_case, the
version notation theirs ("3+", "0-7"). Tagged fields are left out (see `schema.py`). The
ranges are what `ApiVersions` advertises; each reaches at least as high as the versions
librdkafka, aiokafka and kafka-python pick, and starts no lower than we can honour (Produce
and Fetch start at the first versions that carry magic 2 record batches).
"""

from __future__ import annotations

from .schema import Array, F, Struct


class Api:
    __slots__ = ("key", "name", "min_version", "max_version", "flexible_from", "request", "response")

    def __init__(self, key, name, versions, flexible_from, request, response):
        self.key = key
        self.name = name
        self.min_version, self.max_version = versions
        self.flexible_from = flexible_from
        self.request = request
        self.response = response

    def is_flexible(self, version: int) -> bool:
        return version >= self.flexible_from


NEVER = 0x7FFF

PRODUCE = Api(0, "Produce", (3, 9), 9, [
    F("transactional_id", "string", "3+", "3+"),
    F("acks", "int16"),
    F("timeout_ms", "int32"),
    F("topic_data", Array(Struct(
        F("name", "string"),
        F("partition_data", Array(Struct(
            F("index", "int32"),
            F("records", "records", nullable="0+"))))))),
], [
    F("responses", Array(Struct(
        F("name", "string"),
        F("partition_responses", Array(Struct(
            F("index", "int32"),
            F("error_code", "int16"),
            F("base_offset", "int64"),
            F("log_append_time_ms", "int64", "2+", default=-1),
            F("log_start_offset", "int64", "5+", default=-1),
            F("record_errors", Array(Struct(
                F("batch_index", "int32"),
                F("batch_index_error_message", "string", nullable="8+"))), "8+"),
            F("error_message", "string", "8+", "8+"))))))),
    F("throttle_time_ms", "int32", "1+"),
])

FETCH = Api(1, "Fetch", (4, 12), 12, [
    F("replica_id", "int32", "0-14", default=-1),
    F("max_wait_ms", "int32"),
    F("min_bytes", "int32"),
    F("max_bytes", "int32", "3+", default=0x7FFFFFFF),
    F("isolation_level", "int8", "4+"),
    F("session_id", "int32", "7+"),
    F("session_epoch", "int32", "7+", default=-1),
    F("topics", Array(Struct(
        F("topic", "string", "0-12"),
        F("partitions", Array(Struct(
            F("partition", "int32"),
            F("current_leader_epoch", "int32", "9+", default=-1),
            F("fetch_offset", "int64"),
            F("last_fetched_epoch", "int32", "12+", default=-1),
            F("log_start_offset", "int64", "5+", default=-1),
            F("partition_max_bytes", "int32"))))))),
    F("forgotten_topics_data", Array(Struct(
        F("topic", "string", "7-12"),
        F("partitions", Array("int32")))), "7+"),
    F("rack_id", "string", "11+"),
], [
    F("throttle_time_ms", "int32", "1+"),
    F("error_code", "int16", "7+"),
    F("session_id", "int32", "7+"),
    F("responses", Array(Struct(
        F("topic", "string", "0-12"),
        F("partitions", Array(Struct(
            F("partition_index", "int32"),
            F("error_code", "int16"),
            F("high_watermark", "int64"),
            F("last_stable_offset", "int64", "4+", default=-1),
            F("log_start_offset", "int64", "5+", default=-1),
            F("aborted_transactions", Array(Struct(
                F("producer_id", "int64"),
                F("first_offset", "int64"))), "4+", "4+"),
            F("preferred_read_replica", "int32", "11+", default=-1),
            F("records", "records", nullable="0+"))))))),
])

LIST_OFFSETS = Api(2, "ListOffsets", (1, 7), 6, [
    F("replica_id", "int32"),
    F("isolation_level", "int8", "2+"),
    F("topics", Array(Struct(
        F("name", "string"),
        F("partitions", Array(Struct(
            F("partition_index", "int32"),
            F("current_leader_epoch", "int32", "4+", default=-1),
            F("timestamp", "int64"))))))),
], [
    F("throttle_time_ms", "int32", "2+"),
    F("topics", Array(Struct(
        F("name", "string"),
        F("partitions", Array(Struct(
            F("partition_index", "int32"),
            F("error_code", "int16"),
            F("timestamp", "int64", "1+", default=-1),
            F("offset", "int64", "1+", default=-1),
            F("leader_epoch", "int32", "4+", default=-1))))))),
])

METADATA = Api(3, "Metadata", (0, 9), 9, [
    F("topics", Array(Struct(F("name", "string"))), nullable="1+"),
    F("allow_auto_topic_creation", "bool", "4+", default=True),
    F("include_cluster_authorized_operations", "bool", "8+"),
    F("include_topic_authorized_operations", "bool", "8+"),
], [
    F("throttle_time_ms", "int32", "3+"),
    F("brokers", Array(Struct(
        F("node_id", "int32"),
        F("host", "string"),
        F("port", "int32"),
        F("rack", "string", "1+", "1+")))),
    F("cluster_id", "string", "2+", "2+"),
    F("controller_id", "int32", "1+", default=-1),
    F("topics", Array(Struct(
        F("error_code", "int16"),
        F("name", "string"),
        F("is_internal", "bool", "1+"),
        F("partitions", Array(Struct(
            F("error_code", "int16"),
            F("partition_index", "int32"),
            F("leader_id", "int32"),
            F("leader_epoch", "int32", "7+", default=-1),
            F("replica_nodes", Array("int32")),
            F("isr_nodes", Array("int32")),
            F("offline_replicas", Array("int32"), "5+")))),
        F("topic_authorized_operations", "int32", "8+", default=-2147483648)))),
    F("cluster_authorized_operations", "int32", "8+", default=-2147483648),
])

OFFSET_COMMIT = Api(8, "OffsetCommit", (0, 7), 8, [
    F("group_id", "string"),
    F("generation_id", "int32", "1+", default=-1),
    F("member_id", "string", "1+"),
    F("group_instance_id", "string", "7+", "7+"),
    F("retention_time_ms", "int64", "2-4", default=-1),
    F("topics", Array(Struct(
        F("name", "string"),
        F("partitions", Array(Struct(
            F("partition_index", "int32"),
            F("committed_offset", "int64"),
            F("committed_leader_epoch", "int32", "6+", default=-1),
            F("commit_timestamp", "int64", "1", default=-1),
            F("committed_metadata", "string", nullable="0+"))))))),
], [
    F("throttle_time_ms", "int32", "3+"),
    F("topics", Array(Struct(
        F("name", "string"),
        F("partitions", Array(Struct(
            F("partition_index", "int32"),
            F("error_code", "int16"))))))),
])

OFFSET_FETCH = Api(9, "OffsetFetch", (1, 7), 6, [
    F("group_id", "string"),
    F("topics", Array(Struct(
        F("name", "string"),
        F("partition_indexes", Array("int32")))), nullable="2+"),
    F("require_stable", "bool", "7+"),
], [
    F("throttle_time_ms", "int32", "3+"),
    F("topics", Array(Struct(
        F("name", "string"),
        F("partitions", Array(Struct(
            F("partition_index", "int32"),
            F("committed_offset", "int64"),
            F("committed_leader_epoch", "int32", "5+", default=-1),
            F("metadata", "string", nullable="0+"),
            F("error_code", "int16"))))))),
    F("error_code", "int16", "2+"),
])

FIND_COORDINATOR = Api(10, "FindCoordinator", (0, 3), 3, [
    F("key", "string"),
    F("key_type", "int8", "1+"),
], [
    F("throttle_time_ms", "int32", "1+"),
    F("error_code", "int16"),
    F("error_message", "string", "1+", "1+"),
    F("node_id", "int32"),
    F("host", "string"),
    F("port", "int32"),
])

JOIN_GROUP = Api(11, "JoinGroup", (0, 7), 6, [
    F("group_id", "string"),
    F("session_timeout_ms", "int32"),
    F("rebalance_timeout_ms", "int32", "1+", default=-1),
    F("member_id", "string"),
    F("group_instance_id", "string", "5+", "5+"),
    F("protocol_type", "string"),
    F("protocols", Array(Struct(
        F("name", "string"),
        F("metadata", "bytes")))),
], [
    F("throttle_time_ms", "int32", "2+"),
    F("error_code", "int16"),
    F("generation_id", "int32", default=-1),
    F("protocol_type", "string", "7+", "7+"),
    F("protocol_name", "string", nullable="7+"),
    F("leader", "string"),
    F("member_id", "string"),
    F("members", Array(Struct(
        F("member_id", "string"),
        F("group_instance_id", "string", "5+", "5+"),
        F("metadata", "bytes")))),
])

HEARTBEAT = Api(12, "Heartbeat", (0, 4), 4, [
    F("group_id", "string"),
    F("generation_id", "int32"),
    F("member_id", "string"),
    F("group_instance_id", "string", "3+", "3+"),
], [
    F("throttle_time_ms", "int32", "1+"),
    F("error_code", "int16"),
])

LEAVE_GROUP = Api(13, "LeaveGroup", (0, 4), 4, [
    F("group_id", "string"),
    F("member_id", "string", "0-2"),
    F("members", Array(Struct(
        F("member_id", "string"),
        F("group_instance_id", "string", nullable="0+"))), "3+"),
], [
    F("throttle_time_ms", "int32", "1+"),
    F("error_code", "int16"),
    F("members", Array(Struct(
        F("member_id", "string"),
        F("group_instance_id", "string", nullable="0+"),
        F("error_code", "int16"))), "3+"),
])

SYNC_GROUP = Api(14, "SyncGroup", (0, 5), 4, [
    F("group_id", "string"),
    F("generation_id", "int32"),
    F("member_id", "string"),
    F("group_instance_id", "string", "3+", "3+"),
    F("protocol_type", "string", "5+", "5+"),
    F("protocol_name", "string", "5+", "5+"),
    F("assignments", Array(Struct(
        F("member_id", "string"),
        F("assignment", "bytes")))),
], [
    F("throttle_time_ms", "int32", "1+"),
    F("error_code", "int16"),
    F("protocol_type", "string", "5+", "5+"),
    F("protocol_name", "string", "5+", "5+"),
    F("assignment", "bytes"),
])

DESCRIBE_GROUPS = Api(15, "DescribeGroups", (0, 5), 5, [
    F("groups", Array("string")),
    F("include_authorized_operations", "bool", "3+"),
], [
    F("throttle_time_ms", "int32", "1+"),
    F("groups", Array(Struct(
        F("error_code", "int16"),
        F("group_id", "string"),
        F("group_state", "string"),
        F("protocol_type", "string"),
        F("protocol_data", "string"),
        F("members", Array(Struct(
            F("member_id", "string"),
            F("group_instance_id", "string", "4+", "4+"),
            F("client_id", "string"),
            F("client_host", "string"),
            F("member_metadata", "bytes"),
            F("member_assignment", "bytes")))),
        F("authorized_operations", "int32", "3+", default=-2147483648)))),
])

LIST_GROUPS = Api(16, "ListGroups", (0, 4), 3, [
    F("states_filter", Array("string"), "4+"),
], [
    F("throttle_time_ms", "int32", "1+"),
    F("error_code", "int16"),
    F("groups", Array(Struct(
        F("group_id", "string"),
        F("protocol_type", "string"),
        F("group_state", "string", "4+")))),
])

SASL_HANDSHAKE = Api(17, "SaslHandshake", (1, 1), NEVER, [
    F("mechanism", "string"),
], [
    F("error_code", "int16"),
    F("mechanisms", Array("string")),
])

API_VERSIONS = Api(18, "ApiVersions", (0, 3), 3, [
    F("client_software_name", "string", "3+"),
    F("client_software_version", "string", "3+"),
], [
    F("error_code", "int16"),
    F("api_keys", Array(Struct(
        F("api_key", "int16"),
        F("min_version", "int16"),
        F("max_version", "int16")))),
    F("throttle_time_ms", "int32", "1+"),
])

CREATE_TOPICS = Api(19, "CreateTopics", (0, 5), 5, [
    F("topics", Array(Struct(
        F("name", "string"),
        F("num_partitions", "int32"),
        F("replication_factor", "int16"),
        F("assignments", Array(Struct(
            F("partition_index", "int32"),
            F("broker_ids", Array("int32"))))),
        F("configs", Array(Struct(
            F("name", "string"),
            F("value", "string", nullable="0+"))))))),
    F("timeout_ms", "int32", default=60000),
    F("validate_only", "bool", "1+"),
], [
    F("throttle_time_ms", "int32", "2+"),
    F("topics", Array(Struct(
        F("name", "string"),
        F("error_code", "int16"),
        F("error_message", "string", "1+", "0+"),
        F("num_partitions", "int32", "5+", default=-1),
        F("replication_factor", "int16", "5+", default=-1),
        F("configs", Array(Struct(
            F("name", "string"),
            F("value", "string", nullable="5+"),
            F("read_only", "bool"),
            F("config_source", "int8", default=-1),
            F("is_sensitive", "bool"))), "5+", "5+")))),
])

DELETE_TOPICS = Api(20, "DeleteTopics", (0, 5), 4, [
    F("topic_names", Array("string")),
    F("timeout_ms", "int32"),
], [
    F("throttle_time_ms", "int32", "1+"),
    F("responses", Array(Struct(
        F("name", "string"),
        F("error_code", "int16"),
        F("error_message", "string", "5+", "5+")))),
])

INIT_PRODUCER_ID = Api(22, "InitProducerId", (0, 4), 2, [
    F("transactional_id", "string", nullable="0+"),
    F("transaction_timeout_ms", "int32"),
    F("producer_id", "int64", "3+", default=-1),
    F("producer_epoch", "int16", "3+", default=-1),
], [
    F("throttle_time_ms", "int32"),
    F("error_code", "int16"),
    F("producer_id", "int64", default=-1),
    F("producer_epoch", "int16"),
])

DESCRIBE_CONFIGS = Api(32, "DescribeConfigs", (0, 4), 4, [
    F("resources", Array(Struct(
        F("resource_type", "int8"),
        F("resource_name", "string"),
        F("configuration_keys", Array("string"), nullable="0+")))),
    F("include_synonyms", "bool", "1+"),
    F("include_documentation", "bool", "3+"),
], [
    F("throttle_time_ms", "int32"),
    F("results", Array(Struct(
        F("error_code", "int16"),
        F("error_message", "string", nullable="0+"),
        F("resource_type", "int8"),
        F("resource_name", "string"),
        F("configs", Array(Struct(
            F("name", "string"),
            F("value", "string", nullable="0+"),
            F("read_only", "bool"),
            F("is_default", "bool", "0"),
            F("config_source", "int8", "1+", default=-1),
            F("is_sensitive", "bool"),
            F("synonyms", Array(Struct(
                F("name", "string"),
                F("value", "string", nullable="0+"),
                F("source", "int8"))), "1+"),
            F("config_type", "int8", "3+"),
            F("documentation", "string", "3+", "0+"))))))),
])

SASL_AUTHENTICATE = Api(36, "SaslAuthenticate", (0, 2), 2, [
    F("auth_bytes", "bytes"),
], [
    F("error_code", "int16"),
    F("error_message", "string", nullable="0+"),
    F("auth_bytes", "bytes"),
    F("session_lifetime_ms", "int64", "1+"),
])

CREATE_PARTITIONS = Api(37, "CreatePartitions", (0, 3), 2, [
    F("topics", Array(Struct(
        F("name", "string"),
        F("count", "int32"),
        F("assignments", Array(Struct(F("broker_ids", Array("int32")))), nullable="0+")))),
    F("timeout_ms", "int32"),
    F("validate_only", "bool"),
], [
    F("throttle_time_ms", "int32"),
    F("results", Array(Struct(
        F("name", "string"),
        F("error_code", "int16"),
        F("error_message", "string", nullable="0+")))),
])

DELETE_GROUPS = Api(42, "DeleteGroups", (0, 2), 2, [
    F("groups_names", Array("string")),
], [
    F("throttle_time_ms", "int32"),
    F("results", Array(Struct(
        F("group_id", "string"),
        F("error_code", "int16")))),
])

APIS: dict[int, Api] = {api.key: api for api in (
    PRODUCE, FETCH, LIST_OFFSETS, METADATA, OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR,
    JOIN_GROUP, HEARTBEAT, LEAVE_GROUP, SYNC_GROUP, DESCRIBE_GROUPS, LIST_GROUPS, SASL_HANDSHAKE,
    API_VERSIONS, CREATE_TOPICS, DELETE_TOPICS, INIT_PRODUCER_ID, DESCRIBE_CONFIGS,
    SASL_AUTHENTICATE, CREATE_PARTITIONS, DELETE_GROUPS)}
