"""The Kafka APIs, translated to minilog's core (`minilog.broker.LogBroker`).

`KafkaApis.handler(api_key)` gives the method that answers one API; it takes the connection and
the parsed `KafkaRequest` and returns the response body (a dict in the field names of
`messages.py`), an awaitable of one, or `NO_RESPONSE`. Every check of a field a client controls
happens here, at the edge, and every failure becomes the Kafka error code a Kafka client
expects (the core's own codes are translated by `_code`, with the context the API gives).

One broker: every partition's leader is node 0 at the advertised address, which is also
every group's coordinator. Which APIs are served (and so advertised by ApiVersions) depends on
the server: SASL only when `--user` is set.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from clients.protocol.errors import BrokerError, ErrorCode
from minilog.batch_formats import KAFKA
from minilog.consumer_protocol import translate_assignment, translate_metadata
from minilog.storage.log_manager import check_topic_name
from minilog.topics import MAX_PARTITIONS

from . import errors as E
from .codec import api_versions_body
from .messages import (API_VERSIONS, CREATE_PARTITIONS, CREATE_TOPICS, DELETE_GROUPS, DELETE_TOPICS, DESCRIBE_CONFIGS, DESCRIBE_GROUPS, FETCH,
                       FIND_COORDINATOR, HEARTBEAT, INIT_PRODUCER_ID, JOIN_GROUP, LEAVE_GROUP, LIST_GROUPS, LIST_OFFSETS, METADATA,
                       OFFSET_COMMIT, OFFSET_FETCH, PRODUCE, SASL_AUTHENTICATE, SASL_HANDSHAKE, SYNC_GROUP)

log = logging.getLogger("minilog.kafka")

NO_RESPONSE = object()
NODE_ID = 0
CLUSTER_ID = "minilog"
# Kafka's group.min/max.session.timeout.ms defaults.
MIN_SESSION_TIMEOUT_MS = 10
MAX_SESSION_TIMEOUT_MS = 30 * 60 * 1000
MAX_REBALANCE_TIMEOUT_MS = 30 * 60 * 1000
# Bytes of a fetch reply besides records, per partition (a 249-byte name and the numbers).
FETCH_OVERHEAD = 512
MAX_FETCH_WAIT_MS = 5 * 60 * 1000
_CONFIG_SOURCE_DEFAULT = 5       # DescribeConfigs: DEFAULT_CONFIG
_CONFIG_SOURCE_TOPIC = 1         # DYNAMIC_TOPIC_CONFIG
_RESOURCE_TOPIC, _RESOURCE_BROKER = 2, 4

# The core's error codes in a group API's context.
# ... in Produce's context
_PRODUCE_CODES = {ErrorCode.NOT_AUTHORIZED: E.TOPIC_AUTHORIZATION_FAILED, ErrorCode.BAD_REQUEST: E.CORRUPT_MESSAGE}
_GROUP_CODES = {ErrorCode.NOT_FOUND: E.UNKNOWN_MEMBER_ID, ErrorCode.PRECONDITION_FAILED: E.INCONSISTENT_GROUP_PROTOCOL,
                ErrorCode.BAD_REQUEST: E.INVALID_REQUEST}


def _code(error, context: dict | None = None) -> int:
    """The Kafka code for a core error (`[code, message]`, a BrokerError, or None)."""
    if error is None:
        return E.NONE
    code = error.code if isinstance(error, BrokerError) else error[0]
    if code == ErrorCode.NOT_AUTHORIZED and not (context and code in context):
        # minilog/acl.py: a denied call names its resource; a denied row is always a topic's.
        if getattr(error, "resource", "topic") == "group":
            return E.GROUP_AUTHORIZATION_FAILED
        return E.TOPIC_AUTHORIZATION_FAILED
    if context and code in context:
        return context[code]
    return E.from_minilog(code)


def _by_topic(rows, make) -> dict:
    """{topic: [make(row), ...]} for per-partition rows `(topic, partition, ...)`, topics in first-seen order."""
    topics: dict[str, list] = {}
    for row in rows:
        topics.setdefault(row[0], []).append(make(row))
    return topics


class KafkaApis:
    def __init__(self, server, advertised):
        self.server = server
        self.advertised = advertised   # (conn) -> (host, port): known once the listener is open
        self._handlers = {
            API_VERSIONS.key: self.api_versions,
            PRODUCE.key: self.produce,
            FETCH.key: self.fetch,
            INIT_PRODUCER_ID.key: self.init_producer_id,
            METADATA.key: self.metadata,
            FIND_COORDINATOR.key: self.find_coordinator,
            LIST_OFFSETS.key: self.list_offsets,
            JOIN_GROUP.key: self.join_group,
            SYNC_GROUP.key: self.sync_group,
            HEARTBEAT.key: self.heartbeat,
            LEAVE_GROUP.key: self.leave_group,
            OFFSET_COMMIT.key: self.offset_commit,
            OFFSET_FETCH.key: self.offset_fetch,
            LIST_GROUPS.key: self.list_groups,
            DESCRIBE_GROUPS.key: self.describe_groups,
            CREATE_TOPICS.key: self.create_topics,
            DELETE_TOPICS.key: self.delete_topics,
            DESCRIBE_CONFIGS.key: self.describe_configs,
            CREATE_PARTITIONS.key: self.create_partitions,
            DELETE_GROUPS.key: self.delete_groups,
        }
        if server.authenticator.enabled:
            self._handlers[SASL_HANDSHAKE.key] = self.sasl_handshake
            self._handlers[SASL_AUTHENTICATE.key] = self.sasl_authenticate
        self._versions_body = api_versions_body()
        self._versions_body["api_keys"] = [k for k in self._versions_body["api_keys"]
                                           if k["api_key"] in self._handlers]

    @property
    def broker(self):
        return self.server.broker

    def handler(self, api_key: int):
        return self._handlers.get(api_key)

    # ---- connection set-up ------------------------------------------------------------
    def api_versions(self, conn, req) -> dict:
        return self._versions_body

    def sasl_handshake(self, conn, req) -> dict:
        mechanism = req.body["mechanism"]
        if mechanism != "PLAIN":
            return {"error_code": E.UNSUPPORTED_SASL_MECHANISM, "mechanisms": ["PLAIN"]}
        conn.sasl_mechanism = mechanism
        return {"error_code": E.NONE, "mechanisms": ["PLAIN"]}

    def sasl_authenticate(self, conn, req) -> dict:
        if conn.sasl_mechanism is None or conn.authenticated:
            conn.close()   # Kafka: a SASL exchange out of order ends the connection
            return {"error_code": E.ILLEGAL_SASL_STATE, "error_message": "SaslHandshake PLAIN first"}
        # PLAIN (RFC 4616): [authzid] NUL authcid NUL passwd
        parts = bytes(req.body["auth_bytes"]).split(b"\x00")
        try:
            if len(parts) != 3:
                raise ValueError("not a PLAIN message")
            user, password = parts[1].decode(), parts[2].decode()
        except (ValueError, UnicodeDecodeError) as exc:
            return self._sasl_failed(conn, str(exc))
        conn.sasl_mechanism = None   # one exchange per connection; a second one is out of order
        return self._sasl_login(conn, user, password)

    async def _sasl_login(self, conn, user, password) -> dict:
        """The same login as every front door's (serverbase/auth.py): the users, the backoff, the log."""
        try:
            principal = await self.server.authenticator.login(user, password, conn.peer)
        except BrokerError as exc:
            return self._sasl_failed(conn, exc.message)
        conn.authenticated = True
        conn.user = principal.name
        conn.access = principal.access
        return {"error_code": E.NONE, "error_message": None, "auth_bytes": b""}

    @staticmethod
    def _sasl_failed(conn, why: str) -> dict:
        log.warning("kafka connection %s: SASL PLAIN refused: %s", conn.id, why)
        asyncio.get_running_loop().call_soon(conn.close)   # after the reply goes
        return {"error_code": E.SASL_AUTHENTICATION_FAILED, "error_message": f"authentication failed: {why}",
                "auth_bytes": b""}

    # ---- produce and fetch ------------------------------------------------------------
    def produce(self, conn, req):
        b = req.body
        acks = b["acks"]
        bad = None
        if b["transactional_id"] is not None:
            bad = E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "transactions are not supported"
        elif acks not in (0, 1, -1):
            bad = E.INVALID_REQUIRED_ACKS, f"acks must be 0, 1 or -1 (all), got {acks}"
        entries, rows = [], []
        for t in b["topic_data"]:
            for p in t["partition_data"]:
                if bad is None:
                    try:
                        check_topic_name(t["name"])
                    except ValueError as exc:
                        rows.append([t["name"], p["index"], -1, (E.INVALID_TOPIC_EXCEPTION, str(exc))])
                        continue
                    if p["records"] is None or not len(p["records"]):
                        rows.append([t["name"], p["index"], -1, (E.CORRUPT_MESSAGE, "no record batch")])
                        continue
                    entries.append([t["name"], p["index"], p["records"]])   # a view of the frame: no copy
                    rows.append(None)   # filled from the core's answer, in order
                else:
                    rows.append([t["name"], p["index"], -1, bad])
        result = self.server.core(conn).produce(entries, acks, KAFKA) if entries else []
        if acks == 0:
            return NO_RESPONSE   # Kafka sends nothing back; a failed batch is the client's loss
        if isinstance(result, list):
            return self._produced(rows, result, req.api_version)

        async def durable():
            return self._produced(rows, await result, req.api_version)
        return durable()

    @staticmethod
    def _produced(rows, results, version) -> dict:
        it = iter(results)
        topics: dict[str, list] = {}
        for row in rows:
            append_time = -1
            if row is None:
                topic, partition, base, error, *stamped = next(it)
                code, message = _code(error, _PRODUCE_CODES), (error[1] if error else None)
                if stamped and error is None:
                    append_time = stamped[0]
            else:
                topic, partition, base, (code, message) = row
            topics.setdefault(topic, []).append({"index": partition, "error_code": code, "base_offset": base,
                                                 "log_append_time_ms": append_time, "log_start_offset": -1,
                                                 "record_errors": [], "error_message": message})
        return {"responses": [{"name": t, "partition_responses": ps} for t, ps in topics.items()]}

    def fetch(self, conn, req):
        b = req.body
        if b.get("session_id", 0) != 0:   # v7+
            # We never hand out fetch sessions (session id 0 in every answer), so this id is unknown.
            return {"error_code": E.FETCH_SESSION_ID_NOT_FOUND, "session_id": 0, "responses": []}
        parts = [(t["topic"], p["partition"], p["fetch_offset"], p["partition_max_bytes"])
                 for t in b["topics"] for p in t["partitions"]]
        for _, _, _, pmax in parts:
            if pmax < 0:
                return {"error_code": E.INVALID_REQUEST, "session_id": 0, "responses": []}
        # The whole reply must fit in one frame of the client's (and our) size limit.
        max_bytes = max(1, min(b["max_bytes"], self.server.max_frame - FETCH_OVERHEAD * (len(parts) + 1)))
        min_bytes = max(b["min_bytes"], 0)
        rows, ready = self.server.core(conn).read(parts, max_bytes, min_bytes, KAFKA)
        if ready or b["max_wait_ms"] <= 0:
            return self._fetched(rows)
        return self._fetch_waiting(conn, parts, max_bytes, min_bytes, b["max_wait_ms"])

    async def _fetch_waiting(self, conn, parts, max_bytes, min_bytes, max_wait_ms) -> dict:
        rows = await self.server.core(conn).wait_for_records(parts, max_bytes, min_bytes,
                                                             min(max_wait_ms, MAX_FETCH_WAIT_MS), KAFKA)
        return self._fetched(rows)

    @staticmethod
    def _fetched(rows) -> dict:
        topics: dict[str, list] = {}
        for topic, partition, error, hw, start, records in rows:
            topics.setdefault(topic, []).append({
                "partition_index": partition, "error_code": _code(error), "high_watermark": hw,
                "last_stable_offset": hw, "log_start_offset": start, "aborted_transactions": [],
                "records": b"" if records is None else [records]})   # Kafka sends empty, never null
        return {"error_code": E.NONE, "session_id": 0,
                "responses": [{"topic": t, "partitions": ps} for t, ps in topics.items()]}

    def init_producer_id(self, conn, req) -> dict:
        b = req.body
        if b["transactional_id"] is not None:
            return {"error_code": E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "producer_id": -1, "producer_epoch": -1}
        try:
            pid, epoch = self.broker.init_producer_id(None, b.get("producer_id", -1), b.get("producer_epoch", -1))
        except BrokerError as exc:
            return {"error_code": _code(exc), "producer_id": -1, "producer_epoch": -1}
        return {"error_code": E.NONE, "producer_id": pid, "producer_epoch": epoch}

    # ---- topics -----------------------------------------------------------------------
    def _partition_rows(self, partitions) -> list:
        return [{"error_code": E.NONE, "partition_index": p["partition"], "leader_id": NODE_ID, "leader_epoch": 0,
                 "replica_nodes": [NODE_ID], "isr_nodes": [NODE_ID], "offline_replicas": []} for p in partitions]

    def metadata(self, conn, req) -> dict:
        body = req.body
        wanted = body["topics"]
        if wanted is not None and not wanted and req.api_version == 0:
            wanted = None   # v0: an empty list means every topic
        names = None if wanted is None else [t["name"] for t in wanted]
        # Before v4 a Metadata request always let the broker auto-create, as in Kafka.
        allow = body.get("allow_auto_topic_creation", True) if wanted is not None else False
        topics = []
        valid = []
        for name in names or ():
            try:
                check_topic_name(name)
                valid.append(name)
            except ValueError as exc:
                topics.append({"error_code": E.INVALID_TOPIC_EXCEPTION, "name": name, "partitions": []})
                log.debug("metadata: %s", exc)
        described = self.server.core(conn).describe_topics(None if names is None else valid, allow)
        if type(described) is not dict:   # topics being auto-created: answered once they exist
            return self._metadata_when_created(conn, topics, described)
        return self._metadata_body(conn, topics, described)

    async def _metadata_when_created(self, conn, topics, described) -> dict:
        return self._metadata_body(conn, topics, await described)

    def _metadata_body(self, conn, topics, described) -> dict:
        for name, info in described.items():
            topics.append({"error_code": _code(info["error"]), "name": name, "is_internal": False,
                           "partitions": self._partition_rows(info["partitions"])})
        host, port = self.advertised(conn)
        return {"brokers": [{"node_id": NODE_ID, "host": host, "port": port}],
                "cluster_id": CLUSTER_ID, "controller_id": NODE_ID, "topics": topics}

    def create_topics(self, conn, req):
        body = req.body
        validate_only = body.get("validate_only", False)
        try:
            self.broker.topics.check_request_size(
                len(t["assignments"]) if t["assignments"] else t["num_partitions"] for t in body["topics"])
            too_big = None
        except BrokerError as exc:
            too_big = exc.message
        rows, creates = [], []
        core = self.server.core(conn)
        named = Counter(t["name"] for t in body["topics"])
        for t in body["topics"]:
            name = t["name"]
            code, message = E.NONE, None
            partitions = t["num_partitions"]
            if t["assignments"]:
                partitions = len(t["assignments"])
            try:
                check_topic_name(name)
            except ValueError as exc:
                code, message = E.INVALID_TOPIC_EXCEPTION, str(exc)
            else:
                if partitions == -1:
                    partitions = None
                if named[name] > 1:
                    # As Kafka: every entry of a name given twice fails, and none is created.
                    code, message = E.INVALID_REQUEST, f"the request names topic {name!r} more than once"
                elif too_big is not None:
                    code, message = E.INVALID_REQUEST, too_big
                elif partitions is not None and not 1 <= partitions <= MAX_PARTITIONS:
                    code, message = E.INVALID_PARTITIONS, f"num_partitions must be in [1, {MAX_PARTITIONS}]"
                elif t["replication_factor"] not in (-1, 1):
                    code, message = (E.INVALID_REPLICATION_FACTOR,
                                     f"replication factor {t['replication_factor']}: this server is one broker, so 1")
                elif any(a["broker_ids"] not in ([NODE_ID], []) for a in t["assignments"]):
                    code, message = E.INVALID_REPLICA_ASSIGNMENT, f"the only broker is node {NODE_ID}"
            row = {"name": name, "error_code": code, "error_message": message}
            rows.append(row)
            if code == E.NONE:
                config = {c["name"]: c["value"] for c in t["configs"] if c["value"] is not None}
                try:
                    # Claims the name now; the files are made on the broker's creation thread.
                    creates.append((row, partitions, core.create_topic_off_loop(name, partitions, config,
                                                                                validate_only)))
                except BrokerError as exc:
                    self._create_failed(row, exc)
        return self._created(rows, creates)

    async def _created(self, rows, creates) -> dict:
        for row, partitions, created in creates:
            try:
                await asyncio.shield(created)
            except BrokerError as exc:
                self._create_failed(row, exc)
                continue
            row["num_partitions"] = partitions if partitions is not None else self.broker.default_partitions
            row["replication_factor"] = 1
        return {"topics": rows}

    @staticmethod
    def _create_failed(row, exc: BrokerError) -> None:
        # name and partitions were checked before: a BAD_REQUEST left is the config
        row["error_code"] = _code(exc, {ErrorCode.BAD_REQUEST: E.INVALID_CONFIG})
        row["error_message"] = exc.message

    def delete_topics(self, conn, req) -> dict:
        results = []
        for name in req.body["topic_names"]:
            code, message = E.NONE, None
            try:
                self.server.core(conn).delete_topic(name)
            except BrokerError as exc:
                code = _code(exc, {ErrorCode.NOT_AUTHORIZED: E.INVALID_REQUEST,
                                   ErrorCode.PRECONDITION_FAILED: E.INVALID_REQUEST})   # being grown
                message = exc.message
            results.append({"name": name, "error_code": code, "error_message": message})
        return {"responses": results}

    _PARTITIONS_ERRORS = {ErrorCode.BAD_REQUEST: E.INVALID_PARTITIONS, ErrorCode.NOT_AUTHORIZED: E.INVALID_REQUEST,
                          ErrorCode.PRECONDITION_FAILED: E.INVALID_REQUEST}

    def create_partitions(self, conn, req):
        b = req.body
        topics = self.broker.topics
        try:   # the new partitions of the whole request, bounded as a CreateTopics' are
            topics.check_request_size(t["count"] - topics.partition_count(t["name"]) for t in b["topics"]
                                      if t["count"] > topics.partition_count(t["name"]) > 0)
            too_big = None
        except BrokerError as exc:
            too_big = exc.message
        core = self.server.core(conn)
        results, pending = [], []
        for t in b["topics"]:
            row = {"name": t["name"], "error_code": E.NONE, "error_message": None}
            results.append(row)
            if too_big is not None:
                row["error_code"], row["error_message"] = E.INVALID_REQUEST, too_big
            elif t["assignments"] and any(a["broker_ids"] not in ([NODE_ID], []) for a in t["assignments"]):
                row["error_code"], row["error_message"] = E.INVALID_REPLICA_ASSIGNMENT, f"the only broker is node {NODE_ID}"
            else:
                try:
                    # Checked and claimed now; the new logs are made on the broker's creation thread.
                    pending.append((row, core.create_partitions_off_loop(t["name"], t["count"], b["validate_only"])))
                except BrokerError as exc:
                    row["error_code"], row["error_message"] = _code(exc, self._PARTITIONS_ERRORS), exc.message
        return self._partitions_created(results, pending)

    async def _partitions_created(self, results, pending) -> dict:
        for row, created in pending:
            try:
                await asyncio.shield(created)
            except BrokerError as exc:
                row["error_code"], row["error_message"] = _code(exc, self._PARTITIONS_ERRORS), exc.message
        return {"results": results}

    def delete_groups(self, conn, req):
        codes = {ErrorCode.NOT_FOUND: E.GROUP_ID_NOT_FOUND, ErrorCode.PRECONDITION_FAILED: E.NON_EMPTY_GROUP}
        results, waits = [], []
        for group_id in req.body["groups_names"]:
            code = E.NONE
            try:
                durable = self.server.core(conn).delete_group(group_id)
            except BrokerError as exc:
                code = _code(exc, codes)
            else:
                if durable is not None:
                    waits.append((len(results), durable))
            results.append({"group_id": group_id, "error_code": code})
        if not waits:
            return {"results": results}

        async def durable_all():
            for row, wait in waits:
                try:
                    await wait
                except BrokerError as exc:
                    results[row]["error_code"] = _code(exc)
            return {"results": results}
        return durable_all()

    def describe_configs(self, conn, req) -> dict:
        results = []
        for res in req.body["resources"]:
            row = {"error_code": E.NONE, "error_message": None, "resource_type": res["resource_type"],
                   "resource_name": res["resource_name"], "configs": []}
            results.append(row)
            if res["resource_type"] == _RESOURCE_BROKER:
                continue   # no broker settings are described; an empty list is a valid answer
            if res["resource_type"] != _RESOURCE_TOPIC:
                row["error_code"], row["error_message"] = E.INVALID_REQUEST, "only topic and broker resources"
                continue
            info = self.server.core(conn).describe_topics([res["resource_name"]]).get(res["resource_name"])
            if info is None or info["error"] is not None:
                row["error_code"] = E.UNKNOWN_TOPIC_OR_PARTITION
                row["error_message"] = f"topic {res['resource_name']!r} does not exist"
                continue
            keys = res["configuration_keys"]
            defaults = self.broker.logs.default_config.to_dict()
            for key, value in sorted(info["config"].items()):
                if keys is not None and key not in keys:
                    continue
                source = _CONFIG_SOURCE_DEFAULT if defaults.get(key) == value else _CONFIG_SOURCE_TOPIC
                row["configs"].append({"name": key, "value": _config_text(value), "read_only": False,
                                       "is_default": source == _CONFIG_SOURCE_DEFAULT, "config_source": source,
                                       "is_sensitive": False, "synonyms": []})
        return {"results": results}

    # ---- offsets by time --------------------------------------------------------------
    def list_offsets(self, conn, req) -> dict:
        items = [(t["name"], p["partition_index"], p["timestamp"])
                 for t in req.body["topics"] for p in t["partitions"]]
        rows = self.server.core(conn).list_offsets(items, timestamps=True)
        topics = _by_topic(rows, lambda r: {"partition_index": r[1], "error_code": _code(r[3]),
                                            "timestamp": r[4], "offset": r[2], "leader_epoch": 0})
        return {"topics": [{"name": t, "partitions": ps} for t, ps in topics.items()]}

    # ---- groups -----------------------------------------------------------------------
    def find_coordinator(self, conn, req) -> dict:
        host, port = self.advertised(conn)
        return {"error_code": E.NONE, "error_message": None, "node_id": NODE_ID, "host": host, "port": port}

    def join_group(self, conn, req):
        b = req.body
        failed = {"error_code": E.NONE, "generation_id": -1, "protocol_name": "", "leader": "",
                  "member_id": b["member_id"], "members": []}
        if not b["group_id"]:
            return dict(failed, error_code=E.INVALID_GROUP_ID)
        if not MIN_SESSION_TIMEOUT_MS <= b["session_timeout_ms"] <= MAX_SESSION_TIMEOUT_MS:
            return dict(failed, error_code=E.INVALID_SESSION_TIMEOUT)
        rebalance = b.get("rebalance_timeout_ms", -1)
        if rebalance < 0:
            rebalance = b["session_timeout_ms"]
        # A join waits for the other members up to the largest rebalance timeout: bound it.
        rebalance = min(rebalance, MAX_REBALANCE_TIMEOUT_MS)
        protocols = [(p["name"], bytes(p["metadata"])) for p in b["protocols"]]
        try:
            # KAFKA: this member's metadata and assignments are in Kafka's ConsumerProtocol layout;
            # the core translates for members of the other door (a group may mix both).
            fut = self.server.core(conn).join_group(b["group_id"], b["member_id"], req.client_id or "",
                                         b["session_timeout_ms"], rebalance, b["protocol_type"], protocols, KAFKA)
        except BrokerError as exc:
            return dict(failed, error_code=_code(exc, _GROUP_CODES))
        return self._joined(fut, b["protocol_type"], failed)

    @staticmethod
    async def _joined(fut, protocol_type, failed) -> dict:
        try:
            # shield: a client that hangs up must not cancel the future the others wait on
            result = await asyncio.shield(fut)
        except BrokerError as exc:
            return dict(failed, error_code=_code(exc, _GROUP_CODES))
        return {"error_code": E.NONE, "generation_id": result["generation_id"], "protocol_type": protocol_type,
                "protocol_name": result["protocol"], "leader": result["leader_id"],
                "member_id": result["member_id"],
                "members": [{"member_id": m, "metadata": meta} for m, meta in result["members"]]}

    def sync_group(self, conn, req):
        b = req.body
        assignments = [(a["member_id"], bytes(a["assignment"])) for a in b["assignments"]]
        try:
            fut = self.server.core(conn).sync_group(b["group_id"], b["generation_id"], b["member_id"], assignments)
        except BrokerError as exc:
            return {"error_code": _code(exc, _GROUP_CODES), "assignment": b""}
        return self._synced(fut, b.get("protocol_type"), b.get("protocol_name"))

    @staticmethod
    async def _synced(fut, protocol_type, protocol_name) -> dict:
        try:
            result = await asyncio.shield(fut)
        except BrokerError as exc:
            return {"error_code": _code(exc, _GROUP_CODES), "assignment": b""}
        return {"error_code": E.NONE, "assignment": result["assignment"], "protocol_type": protocol_type,
                "protocol_name": protocol_name}

    def heartbeat(self, conn, req) -> dict:
        b = req.body
        try:
            self.server.core(conn).heartbeat(b["group_id"], b["generation_id"], b["member_id"])
        except BrokerError as exc:
            return {"error_code": _code(exc, _GROUP_CODES)}
        return {"error_code": E.NONE}

    def leave_group(self, conn, req) -> dict:
        b = req.body
        if req.api_version < 3:
            try:
                self.server.core(conn).leave_group(b["group_id"], b["member_id"])
            except BrokerError as exc:
                return {"error_code": _code(exc, _GROUP_CODES)}
            return {"error_code": E.NONE}
        members = []
        for m in b["members"]:
            code = E.NONE
            try:
                self.server.core(conn).leave_group(b["group_id"], m["member_id"])
            except BrokerError as exc:
                code = _code(exc, _GROUP_CODES)
            members.append({"member_id": m["member_id"], "group_instance_id": m["group_instance_id"],
                            "error_code": code})
        return {"error_code": E.NONE, "members": members}

    def offset_commit(self, conn, req):
        b = req.body
        offsets = [(t["name"], p["partition_index"], p["committed_offset"], p["committed_metadata"] or "")
                   for t in b["topics"] for p in t["partitions"]]

        def answer(rows, code=None):
            topics = _by_topic(rows, lambda r: {"partition_index": r[1],
                                                "error_code": code if code is not None else _code(r[2])})
            return {"topics": [{"name": t, "partitions": ps} for t, ps in topics.items()]}

        try:
            result = self.server.core(conn).commit_offsets(b["group_id"], b.get("generation_id", -1), b.get("member_id", ""),
                                                offsets)
        except BrokerError as exc:
            return answer([(t, p, None) for t, p, _, _ in offsets], _code(exc, _GROUP_CODES))
        if isinstance(result, list):
            return answer(result)

        async def durable():
            try:
                rows = await result
            except BrokerError as exc:
                return answer([(t, p, None) for t, p, _, _ in offsets], _code(exc))
            return answer(rows)
        return durable()

    def offset_fetch(self, conn, req) -> dict:
        b = req.body
        wanted = None if b["topics"] is None else [(t["name"], p) for t in b["topics"] for p in t["partition_indexes"]]
        rows = self.server.core(conn).fetch_offsets(b["group_id"], wanted)
        topics = _by_topic(rows, lambda r: {"partition_index": r[1], "committed_offset": r[2],
                                            "committed_leader_epoch": -1, "metadata": r[3] or "",
                                            "error_code": E.NONE})
        return {"topics": [{"name": t, "partitions": ps} for t, ps in topics.items()], "error_code": E.NONE}

    def list_groups(self, conn, req) -> dict:
        states = req.body.get("states_filter") or None
        groups = []
        for group_id, state in self.server.core(conn).list_groups():
            if states is not None and state not in states:
                continue
            group = self.broker.groups.describe(group_id)
            groups.append({"group_id": group_id, "protocol_type": (group.protocol_type if group else "") or "consumer",
                           "group_state": state})
        return {"error_code": E.NONE, "groups": groups}

    def describe_groups(self, conn, req) -> dict:
        out = []
        for group_id in req.body["groups"]:
            if conn.access is not None and not conn.access.allows("group", group_id, "describe"):
                out.append({"error_code": E.GROUP_AUTHORIZATION_FAILED, "group_id": group_id, "group_state": "",
                            "protocol_type": "", "protocol_data": "", "members": []})
                continue
            group = self.broker.groups.describe(group_id)
            if group is None:
                state = "Empty" if self.server.core(conn).fetch_offsets(group_id) else "Dead"
                out.append({"error_code": E.NONE, "group_id": group_id, "group_state": state,
                            "protocol_type": "", "protocol_data": "", "members": []})
                continue
            host = f"/{conn.peer[0]}" if conn.peer else ""
            # Every member described in Kafka's layout, whichever door it came through.
            members = [{"member_id": m.member_id, "client_id": m.client, "client_host": host,
                        "member_metadata": translate_metadata(m.metadata_for(group.protocol), m.fmt, KAFKA),
                        "member_assignment": translate_assignment(m.assignment, m.fmt, KAFKA)}
                       for m in group.members.values()]
            out.append({"error_code": E.NONE, "group_id": group_id, "group_state": group.state,
                        "protocol_type": group.protocol_type, "protocol_data": group.protocol, "members": members})
        return {"groups": out}


def _config_text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)
