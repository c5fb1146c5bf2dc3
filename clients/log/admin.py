"""AdminClient, NewTopic and the cluster metadata classes, as confluent_kafka.admin has them.

confluent-kafka's admin calls return `concurrent.futures.Future`s per topic or group; here
the request is made at once (one round trip for the whole list) and the futures come back
already resolved, so `fs[topic].result()` works exactly as a confluent-kafka program expects.
minilog has one broker and no replication: metadata names broker 0 as leader of everything.
"""

import concurrent.futures
import enum

from ..protocol.errors import BrokerError
from ..rpc import ConnectionClosed
from .config import Config
from .connection import LogConnection, parse_bootstrap, tls_context
from .errors import KafkaError, KafkaException, error_from_field, exception_from
from .topic_partition import TopicPartition


class NewTopic:
    def __init__(self, topic, num_partitions=-1, replication_factor=-1, replica_assignment=None, config=None):
        if not isinstance(topic, str) or not topic:
            raise TypeError("NewTopic topic must be a non-empty str")
        self.topic = topic
        self.num_partitions = num_partitions
        self.replication_factor = replication_factor
        self.replica_assignment = replica_assignment
        self.config = dict(config or {})

    def __repr__(self):
        return f"NewTopic(topic={self.topic},num_partitions={self.num_partitions})"


class BrokerMetadata:
    def __init__(self, broker_id, host, port):
        self.id, self.host, self.port = broker_id, host, port

    def __repr__(self):
        return f"BrokerMetadata({self.id}, {self.host}:{self.port})"


class PartitionMetadata:
    def __init__(self, partition_id, start_offset=-1, end_offset=-1):
        self.id = partition_id
        self.leader = 0
        self.replicas = [0]
        self.isrs = [0]
        self.error = None
        # minilog extras: the partition's offsets when the metadata was taken.
        self.start_offset = start_offset
        self.end_offset = end_offset

    def __repr__(self):
        return f"PartitionMetadata({self.id})"


class TopicMetadata:
    def __init__(self, topic, partitions, config=None, error=None):
        self.topic = topic
        self.partitions = partitions
        self.config = config or {}
        self.error = error

    def __repr__(self):
        return f"TopicMetadata({self.topic}, {len(self.partitions)} partitions)"


class ClusterMetadata:
    def __init__(self, host, port):
        self.cluster_id = "minilog"
        self.controller_id = 0
        self.brokers = {0: BrokerMetadata(0, host, port)}
        self.topics = {}
        self.orig_broker_id = 0
        self.orig_broker_name = f"{host}:{port}/0"

    def __repr__(self):
        return f"ClusterMetadata({self.cluster_id})"


def fetch_cluster_metadata(conn: LogConnection, topic=None, timeout=-1) -> ClusterMetadata:
    """`list_topics()` for all three client kinds: one metadata request."""
    wait = 30.0 if timeout is None or timeout < 0 else timeout
    try:
        meta = conn.call("metadata", {"topics": None if topic is None else [topic]}, timeout=wait)
    except BrokerError as exc:
        if topic is not None and exc.code == "NOT_FOUND":
            meta = {"topics": {}}
        else:
            raise exception_from(exc) from None
    except TimeoutError as exc:
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, str(exc))) from None
    host, port = conn.sock.getpeername()[:2]
    cluster = ClusterMetadata(host, port)
    for name, info in (meta.get("topics") or {}).items():
        parts = {}
        for p in info.get("partitions") or ():
            parts[p["partition"]] = PartitionMetadata(p["partition"], p.get("start_offset", -1), p.get("end_offset", -1))
        err = error_from_field(info.get("error"))
        if err is not None and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART and topic is None:
            continue
        cluster.topics[name] = TopicMetadata(name, parts, info.get("config"), err)
    if topic is not None and topic not in cluster.topics:
        cluster.topics[topic] = TopicMetadata(topic, {}, error=KafkaError(
            KafkaError.UNKNOWN_TOPIC_OR_PART, f"topic {topic!r} does not exist"))
    return cluster


class ConsumerGroupState(enum.Enum):
    UNKNOWN = 0
    PREPARING_REBALANCING = 1
    COMPLETING_REBALANCING = 2
    STABLE = 3
    DEAD = 4
    EMPTY = 5


_STATES = {"PreparingRebalance": ConsumerGroupState.PREPARING_REBALANCING,
           "CompletingRebalance": ConsumerGroupState.COMPLETING_REBALANCING,
           "Stable": ConsumerGroupState.STABLE, "Dead": ConsumerGroupState.DEAD, "Empty": ConsumerGroupState.EMPTY}


class ConsumerGroupListing:
    def __init__(self, group_id, is_simple_consumer_group, state):
        self.group_id, self.is_simple_consumer_group, self.state = group_id, is_simple_consumer_group, state


class ListConsumerGroupsResult:
    def __init__(self, valid, errors):
        self.valid, self.errors = valid, errors


class MemberAssignment:
    def __init__(self, topic_partitions):
        self.topic_partitions = topic_partitions


class MemberDescription:
    def __init__(self, member_id, client_id, host, assignment, group_instance_id=None):
        self.member_id, self.client_id, self.host = member_id, client_id, host
        self.assignment = assignment
        self.group_instance_id = group_instance_id


class ConsumerGroupDescription:
    def __init__(self, group_id, is_simple_consumer_group, members, partition_assignor, state, coordinator,
                 generation_id=-1):
        self.group_id = group_id
        self.is_simple_consumer_group = is_simple_consumer_group
        self.members = members
        self.partition_assignor = partition_assignor
        self.state = state
        self.coordinator = coordinator
        self.generation_id = generation_id  # minilog extra


def _done(value=None, exc=None) -> concurrent.futures.Future:
    f = concurrent.futures.Future()
    if exc is not None:
        f.set_exception(exc)
    else:
        f.set_result(value)
    return f


class AdminClient:
    """`AdminClient({'bootstrap.servers': 'host:port'})`, as confluent_kafka.admin.AdminClient."""

    def __init__(self, config=None, **kwargs):
        conf = dict(config or {})
        conf.update(kwargs)
        cfg = Config(conf, set(), "AdminClient")
        self._host, self._port = parse_bootstrap(cfg.get("bootstrap.servers"))
        self._client_id = cfg.str("client.id", "rdkafka")
        self._credentials = cfg.credentials()
        self._ssl_context = tls_context(cfg)   # security.protocol SSL / SASL_SSL (clients/tls.py)
        self._conn = None

    def _connection(self) -> LogConnection:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = LogConnection(self._host, self._port, self._client_id, credentials=self._credentials,
                                           ssl_context=self._ssl_context)
            except (OSError, BrokerError) as exc:
                raise KafkaException(KafkaError(KafkaError._TRANSPORT,
                                                f"cannot connect to {self._host}:{self._port}: {exc}")) from None
        return self._conn

    def _call(self, op, args, timeout=None):
        try:
            return self._connection().call(op, args, timeout=30.0 if timeout is None or timeout <= 0 else timeout)
        except ConnectionClosed as exc:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, str(exc))) from None
        except BrokerError as exc:
            raise exception_from(exc) from None
        except TimeoutError as exc:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, str(exc))) from None

    def _per_name(self, names, op, args, request_timeout):
        try:
            result = self._call(op, args, request_timeout)
        except KafkaException as exc:
            return {n: _done(exc=KafkaException(exc.args[0])) for n in names}
        results = result.get("results") or {}
        out = {}
        for n in names:
            err = error_from_field(results.get(n)) if n in results else None
            out[n] = _done(exc=KafkaException(err)) if err is not None else _done(None)
        return out

    def create_topics(self, new_topics, operation_timeout=0, request_timeout=None, validate_only=False):
        topics = []
        for nt in new_topics:
            if not isinstance(nt, NewTopic):
                raise TypeError("create_topics() takes a list of NewTopic")
            n = nt.num_partitions if nt.num_partitions is not None and nt.num_partitions > 0 else 1
            topics.append({"name": nt.topic, "num_partitions": n,
                           "config": {str(k): str(v) for k, v in nt.config.items()}})
        return self._per_name([t["name"] for t in topics], "create_topics",
                              {"topics": topics, "validate_only": bool(validate_only)}, request_timeout)

    def delete_topics(self, topics, operation_timeout=0, request_timeout=None):
        topics = list(topics)
        return self._per_name(topics, "delete_topics", {"topics": topics}, request_timeout)

    def list_topics(self, topic=None, timeout=-1):
        return fetch_cluster_metadata(self._connection(), topic, timeout)

    def list_groups(self, group=None, timeout=-1):
        return [g.group_id for g in self.list_consumer_groups().result().valid]

    def list_consumer_groups(self, request_timeout=None, states=None, **kwargs):
        try:
            result = self._call("list_groups", {}, request_timeout)
        except KafkaException as exc:
            return _done(exc=exc)
        wanted = set(states or ())
        valid = []
        for gid, state in result.get("groups", ()):
            st = _STATES.get(state, ConsumerGroupState.UNKNOWN)
            if not wanted or st in wanted:
                valid.append(ConsumerGroupListing(gid, False, st))
        return _done(ListConsumerGroupsResult(valid, []))

    def describe_consumer_groups(self, group_ids, request_timeout=None, **kwargs):
        group_ids = list(group_ids)
        try:
            result = self._call("describe_groups", {"groups": group_ids}, request_timeout)
        except KafkaException as exc:
            return {g: _done(exc=exc) for g in group_ids}
        found = {g.get("group_id"): g for g in result.get("groups", ())}
        out = {}
        for gid in group_ids:
            g = found.get(gid)
            if g is None:
                out[gid] = _done(exc=KafkaException(KafkaError(KafkaError.GROUP_ID_NOT_FOUND, f"no group {gid!r}")))
                continue
            members = [MemberDescription(m.get("member_id"), m.get("client", ""), "127.0.0.1",
                                         MemberAssignment([TopicPartition(t, p) for t, ps in
                                                           (m.get("assignment") or {}).items() for p in ps]))
                       for m in g.get("members", ())]
            out[gid] = _done(ConsumerGroupDescription(gid, False, members, g.get("protocol", ""),
                                                      _STATES.get(g.get("state"), ConsumerGroupState.UNKNOWN),
                                                      BrokerMetadata(0, self._host, self._port),
                                                      g.get("generation_id", -1)))
        return out

    def close(self):
        if self._conn is not None:
            self._conn.close()
