"""BrokerStore: the durable store plugged under the broker core (`store_interface.Store`).

It translates the core's hooks into the two storage components and back:

- definition hooks (`exchange_declared`, `queue_declared`, `bound`, ...) -> `DefinitionsStore`
  (only durable things; exclusive queues are never stored, as in RabbitMQ they die with their
  connection);
- `enqueue(queue, msg)` -> one PUBLISH record per (durable queue, persistent message) in the
  `MessageJournal`; the message id becomes `msg.store_id`;
- `settle(queue, msg)` and `delivered(queue, msg)` are collected during the loop turn and
  written as one SETTLE / DELIVERY record per queue per turn (`_flush_turn`);
  `deliveries_leaving()` writes the turn's DELIVERY records to the kernel before the core
  sends those deliveries, so a kill -9 cannot forget a delivery the client saw;
- `when_durable(callback)` -> `MessageJournal.commit()`: the confirm callback runs once the
  turn's records are as safe as the fsync policy promises (after the fdatasync under `always`),
  or with a failure sentence when the disk failed them (the broker then nacks);
- disk failures: the journal reports the messages it could not make durable (`_drop_lost`
  removes them from their queues) and refuses new persistent publishes (`enqueue` raises
  STORAGE_ERROR) until a retry succeeds;
- `read_body(msg)`: bodies of messages deep in a backlog are dropped from memory after the
  turn that journaled them (`KEEP_BODY_BYTES`) and read back from the journal when delivered;
- `recover(broker)`: rebuilds durable exchanges, queues, bindings and the persistent
  messages (with their redelivered flag, delivery count and remaining TTL), and logs it.

Routing, queue rules and the wire stay in the core; files and fsyncs stay in definitions.py
and journal.py.
"""

import asyncio
import logging
import os
import time

from clients.protocol.errors import BrokerError, ErrorCode
from serverbase.data_dir_lock import DataDirLock

from ..message import parse_expiration
from .definitions import DefinitionsStore
from .journal import (ACK, DEFAULT_FSYNC_INTERVAL_MS, DEFAULT_SEGMENT_BYTES, MessageJournal, StorageFailure,
                      describe_os_error)

log = logging.getLogger("minibroker.store")

# A queue keeps the bodies of the first KEEP_BODY_BYTES of its ready messages in memory; deeper
# in the backlog, bodies live only in the journal until they are about to be delivered.
KEEP_BODY_BYTES = 4 * 1024 * 1024
# Distinct property maps and routing keys remembered for sharing (the cache is reset when full).
SHARED_PROPERTIES = 10_000


class BrokerStore:
    def __init__(self, data_dir: str, fsync: str = "always", fsync_interval_ms: int = DEFAULT_FSYNC_INTERVAL_MS,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES, keep_body_bytes: int = KEEP_BODY_BYTES):
        self.data_dir = data_dir
        self.definitions = DefinitionsStore(data_dir)
        self.journal = MessageJournal(os.path.join(data_dir, "journal"), fsync=fsync,
                                      fsync_interval_ms=fsync_interval_ms, segment_bytes=segment_bytes)
        self.keep_body_bytes = keep_body_bytes
        self._recovering = False
        self._settles: dict[str, list] = {}
        self._deliveries: dict[str, list] = {}
        self._drop_bodies: list = []
        self._shared_props: dict[bytes, dict] = {}
        self._shared_keys: dict[str, str] = {}
        self._shared_sizes: dict[int, int] = {}   # one int object per distinct body size
        # Bytes of message bodies dropped from memory (kept only in the journal) and not yet
        # paged back in or settled: what the memory alarm must not count.
        self.paged_bytes = 0
        self._turn_scheduled = False
        self._callbacks_running = 0
        self._loop = None
        self._broker = None
        self.journal.on_lost = self._drop_lost
        self.recovered = None
        self._retry_handle = None       # a pending `_retry_save`

    # ==== recovery ============================================================================
    def recover(self, broker) -> None:
        began = time.monotonic()
        self._loop = asyncio.get_running_loop()
        self._broker = broker
        self._lock_data_dir()
        self.definitions.load()
        self._recovering = True
        try:
            self._recover_definitions(broker)
            restore, counter = self._recover_messages(broker)
            # Definitions recovered from a backup (or lost) may lack a queue the journal still holds
            # messages for: keep those messages, re-creating their queues, rather than drop them.
            trusted = self.definitions.recovered_from is None
            rec = self.journal.open(durable_queues=set(self.definitions.queues) if trusted else None,
                                    on_message=restore)
            messages = counter[0]
        finally:
            self._recovering = False
        if self.definitions.recovered_from is not None:
            self.definitions.save()   # a whole definitions.msgpack again, from what was recovered
        self.journal.start()
        d = self.definitions
        self.recovered = {"exchanges": len(d.exchanges), "queues": len(d.queues), "bindings": len(d.bindings),
                          "messages": messages, "bytes": rec.bytes, "truncated_bytes": rec.truncated_bytes,
                          "from_snapshot": rec.from_snapshot, "seconds": round(time.monotonic() - began, 3)}
        log.info("recovered %d durable exchanges, %d durable queues, %d bindings, %d persistent messages "
                 "(%d bytes) in %.3f s (fsync policy %s)", len(d.exchanges), len(d.queues), len(d.bindings),
                 messages, rec.bytes, time.monotonic() - began, self.journal.policy)

    def _recover_definitions(self, broker) -> None:
        """Re-create durable exchanges, queues and bindings with the core's `Broker.restore_*`."""
        d = self.definitions
        # A definition the broker now refuses (say, an argument a newer version validates more
        # strictly) is reported and skipped: start-up never fails on one bad entry.
        for name, spec in d.exchanges.items():
            try:
                broker.restore_exchange(name, spec["type"], durable=True, auto_delete=spec.get("auto_delete", False),
                                        internal=spec.get("internal", False), arguments=spec.get("arguments") or {})
            except Exception as exc:
                log.error("durable exchange %r could not be restored: %s: %s", name, type(exc).__name__, exc)
        for name, spec in d.queues.items():
            try:
                broker.restore_queue(name, auto_delete=spec.get("auto_delete", False),
                                     arguments=spec.get("arguments") or {})
            except Exception as exc:
                log.error("durable queue %r could not be restored (its messages stay in the journal "
                          "until it is declared again): %s: %s", name, type(exc).__name__, exc)
        for b in d.bindings:
            try:
                broker.restore_binding(b["source"], b["destination"], b["routing_key"], b.get("arguments") or {},
                                       destination_is_queue=b.get("destination_kind", "queue") == "queue")
            except Exception as exc:   # a binding whose end is gone: report it, start anyway
                log.warning("durable binding %r could not be restored: %s: %s", b, type(exc).__name__, exc)

    def _recover_messages(self, broker):
        """A callback for `MessageJournal.open`: each live message goes straight into its queue.

        `Broker.restore_message` puts it at the tail of its queue; then the store's part: the body
        stays on disk (`body` None, `size` from the journal), and TTL counts from the original
        publish, so time spent down counts towards expiry.
        """
        now = broker.clock()
        wall_ms = int(time.time() * 1000)
        queues = broker.queues
        counter = [0]
        sizes: dict = {}

        def restore(qname, rm):
            q = queues.get(qname)
            if q is None:
                if self.definitions.recovered_from is None:
                    return
                log.error("durable queue %r holds messages in the journal but is missing from the recovered "
                          "definitions; re-created with default arguments", qname)
                q = broker.restore_queue(qname)
                self.definitions.queues[qname] = {"durable": True, "exclusive": False, "auto_delete": False,
                                                  "arguments": {}}
            props = rm.properties or None
            try:
                msg = broker.restore_message(qname, rm.exchange, rm.routing_key, b"", props, rm.msg_id,
                                             rm.delivery_count, rm.redelivered)
            except Exception:
                # Properties the broker now refuses: keep the message rather than lose it.
                msg = broker.restore_message(qname, rm.exchange, rm.routing_key, b"", None, rm.msg_id,
                                             rm.delivery_count, rm.redelivered)
                msg.properties = props
            msg.body = None                      # read from the journal when delivered
            size = msg.size = sizes.setdefault(rm.body_size, rm.body_size)   # one int object per distinct size
            q.ready_bytes += size
            msg.persistent = True
            if rm.deadline_ms is not None:
                deadline = rm.deadline_ms or None     # from the clean-stop snapshot, as the broker had it
            else:
                deadline = None
                ttl_ms = q.settings.message_ttl
                if ttl_ms is not None:
                    deadline = rm.published_at + ttl_ms
                expiration = props.get("expiration") if props else None
                if expiration is not None:
                    try:
                        own = rm.published_at + parse_expiration(expiration)
                        deadline = own if deadline is None else min(deadline, own)
                    except Exception:
                        pass
            if deadline is not None:
                msg.expires_at = max(now + (deadline - wall_ms) / 1000.0, 1e-9)
            self.paged_bytes += size
            counter[0] += 1

        return restore, counter

    def _lock_data_dir(self) -> None:
        """One server per data dir: two journals appending to the same segments would corrupt them."""
        self._lock_file = DataDirLock(self.data_dir, "minibroker")

    # ==== definitions =========================================================================
    def _saved(self, what: str, change, *args, refuse: bool = True) -> None:
        """Apply a change to the definitions file; a failed save fails only this change.

        Declarations and binds (`refuse`): `DefinitionsStore` undoes a change it could not save,
        and the core has not applied it either (`Broker.declare_queue` saves before it adds the
        queue; the binds undo theirs), so the request fails and nothing is in effect that is not
        on disk: STORAGE_ERROR for a disk failure, PRECONDITION_FAILED for a value the encoder
        refuses. Deletions and unbinds (also run by auto-delete and connection cleanup, which
        must finish) are in effect in the core already and stay in the store's memory; the file
        is written again (`_retry_save`) every second until it takes them, and at shutdown.
        """
        try:
            change(*args)
        except OSError as exc:
            if not refuse:
                log.error("definitions file could not be saved after %s: %s; retrying every second", what, exc)
                self._schedule_retry()
                return
            log.error("definitions file could not be saved for %s: %s; refused", what, exc)
            if self.definitions.unsaved:
                self._schedule_retry()
            raise BrokerError(ErrorCode.STORAGE_ERROR,
                              f"{describe_os_error(exc)} ({exc.strerror or exc}): {what} could not be saved "
                              f"to disk and was not made; nothing changed") from None
        except Exception as exc:
            log.error("definitions file could not be saved for %s: %s: %s", what, type(exc).__name__, exc)
            if not refuse:
                self._schedule_retry()
                return
            raise BrokerError(ErrorCode.PRECONDITION_FAILED,
                              f"{what} cannot be stored ({type(exc).__name__}: {exc}) and was not made; "
                              f"nothing changed") from None

    def _schedule_retry(self) -> None:
        if self._retry_handle is None and self._loop is not None and not self._loop.is_closed():
            self._retry_handle = self._loop.call_later(1.0, self._retry_save)

    def _retry_save(self) -> None:
        """Write the definitions again while a deletion is not yet on disk."""
        self._retry_handle = None
        if not self.definitions.unsaved:
            return                  # a later change's save took it
        try:
            self.definitions.save()
        except Exception:
            self._schedule_retry()
            return
        log.warning("definitions file saved again: the deletions it missed are on disk now")

    def exchange_declared(self, exchange) -> None:
        if not self._recovering:
            self._saved(f"durable exchange '{exchange.name}'", self.definitions.put_exchange, exchange.name, {
                "type": exchange.type_name, "durable": True, "auto_delete": exchange.auto_delete,
                "internal": exchange.internal, "arguments": exchange.arguments or {}})

    def exchange_deleted(self, exchange) -> None:
        self._saved(f"the deletion of exchange '{exchange.name}'", self.definitions.delete_exchange, exchange.name,
                    refuse=False)

    def queue_declared(self, queue) -> None:
        if not self._recovering and queue.exclusive_owner is None:
            self._saved(f"durable queue '{queue.name}'", self.definitions.put_queue, queue.name, {
                "durable": True, "exclusive": False, "auto_delete": queue.auto_delete,
                "arguments": queue.arguments or {}})

    def queue_deleted(self, queue) -> None:
        self._flush_turn()   # its settlements go to the journal before the definition goes
        self._saved(f"the deletion of queue '{queue.name}'", self.definitions.delete_queue, queue.name, refuse=False)

    def _binding(self, source, destination, routing_key, arguments) -> dict:
        return {"source": source.name, "destination": destination.name,
                "destination_kind": "queue" if destination.is_queue else "exchange",
                "routing_key": routing_key, "arguments": arguments or {}}

    def bound(self, source, destination, routing_key, arguments) -> None:
        if self._recovering or (destination.is_queue and destination.exclusive_owner is not None):
            return
        self._saved(f"a binding of '{destination.name}' to '{source.name}'", self.definitions.add_binding,
                    self._binding(source, destination, routing_key, arguments))

    def unbound(self, source, destination, routing_key, arguments) -> None:
        self._saved(f"the removal of a binding of '{destination.name}' to '{source.name}'",
                    self.definitions.remove_binding, self._binding(source, destination, routing_key, arguments),
                    refuse=False)

    # ==== messages ============================================================================
    def enqueue(self, queue, msg) -> None:
        if queue.exclusive_owner is not None:
            return
        props = msg.properties
        props_bin = self.journal.pack_properties(props)
        if props:
            # Messages deep in a backlog share one properties dict per distinct value instead
            # of each keeping the one decoded from its frame (they are read-only to the core).
            shared = self._shared_props.get(props_bin)
            if shared is None:
                if len(self._shared_props) >= SHARED_PROPERTIES:
                    self._shared_props.clear()
                shared = self._shared_props[props_bin] = props
            msg.properties = shared
        rk = msg.routing_key
        shared_rk = self._shared_keys.get(rk)
        if shared_rk is None:
            if len(self._shared_keys) >= SHARED_PROPERTIES:
                self._shared_keys.clear()
            shared_rk = self._shared_keys[rk] = rk
        msg.routing_key = shared_rk
        size = msg.size
        if size > 256:        # ints up to 256 are shared by Python already
            shared_size = self._shared_sizes.get(size)
            if shared_size is None:
                if len(self._shared_sizes) >= SHARED_PROPERTIES:
                    self._shared_sizes.clear()
                shared_size = self._shared_sizes[size] = size
            msg.size = shared_size
        try:
            msg.store_id = self.journal.append_publish_one(queue.name, msg.exchange, shared_rk, props_bin, msg.body)
        except StorageFailure as exc:
            # The queue does not take it (Broker.publish nacks it and names the channel).
            raise BrokerError(ErrorCode.STORAGE_ERROR,
                              f"{exc.strerror}: persistent message to durable queue '{queue.name}' refused; "
                              f"persistent publishes are refused until the disk recovers") from None
        if queue.ready_bytes >= self.keep_body_bytes:
            # Not now: the core may still copy this message's body to other queues this turn.
            self._drop_bodies.append(msg)
            self._want_flush()

    def settle(self, queue, msg) -> None:
        if msg.body is None:
            self.paged_bytes -= msg.size
        ids = self._settles.get(queue.name)
        if ids is None:
            ids = self._settles[queue.name] = []
            self._want_flush()
        ids.append(msg.store_id)

    def delivered(self, queue, msg) -> None:
        counts = self._deliveries.get(queue.name)
        if counts is None:
            counts = self._deliveries[queue.name] = []
            self._want_flush()
        counts.append((msg.store_id, msg.delivery_count + 1))

    def deliveries_leaving(self) -> None:
        """Before the turn's deliveries go out: their DELIVERY records into the page cache.

        Otherwise they wait in the journal's buffer for the committer (one turn later under
        `always`, up to a confirm or an interval under the others), and a kill -9 in between
        brings the message back with redelivered=False although a client has seen it. One
        pwritev per turn that delivered persistent messages with acks pending."""
        if self._deliveries:
            self._flush_turn()
            self.journal.write_out_now()

    def read_body(self, msg) -> bytes:
        """Page a body back in for delivery; it stays in memory while the message is unacked."""
        body = self.journal.read_body(msg.store_id)
        if msg.body is None:
            msg.body = body
            self.paged_bytes -= msg.size
        return body

    def _want_flush(self) -> None:
        if not self._turn_scheduled and self._loop is not None:
            self._turn_scheduled = True
            self._loop.call_soon(self._flush_turn)

    def _flush_turn(self) -> None:
        """Write the turn's settlements and delivery counts, one record per queue; drop bodies."""
        self._turn_scheduled = False
        if self._settles:
            settles, self._settles = self._settles, {}
            for qname, ids in settles.items():
                self.journal.append_settle(qname, ids, ACK)
        if self._deliveries:
            deliveries, self._deliveries = self._deliveries, {}
            for qname, counts in deliveries.items():
                self.journal.append_delivery(qname, counts)
        if self._drop_bodies:
            drop, self._drop_bodies = self._drop_bodies, []
            journal = self.journal
            paged = 0
            for m in drop:
                if m.store_id in journal and m.body is not None:
                    m.body = None
                    paged += m.size
            self.paged_bytes += paged

    def _drop_lost(self, msg_ids, exc) -> None:
        """The journal could not make these messages durable (`MessageJournal._fail`): their
        publishes are nacked, so they leave their queues rather than be delivered after a nack.

        Two kinds stay, as transient messages (delivered, not kept across a restart): one already
        handed to a consumer (it cannot be recalled; its ack or requeue no longer touches the
        journal), and a dead-lettered copy (an `x-death` header): its original has left its
        queue, so dropping the copy would lose the message, and no publisher is waiting for it.
        """
        lost = set(msg_ids)
        dropped = kept = 0
        for q in list(self._broker.queues.values()) if self._broker is not None else ():
            if not q.durable or q.exclusive_owner is not None or not q.ready:
                continue
            gone = q.ready.remove_if(lambda m: m.store_id in lost)
            back = []
            for m in gone:
                headers = m.properties.get("headers") if m.properties else None
                if type(headers) is dict and "x-death" in headers:
                    try:
                        if m.body is None:
                            m.body = self.journal.read_body(m.store_id)   # still in the buffer
                            self.paged_bytes -= m.size
                        m.store_id = None
                        back.append(m)
                        continue
                    except (OSError, KeyError) as read_exc:
                        log.error("dead-lettered message %s could not be kept: %s", m.store_id, read_exc)
                q.ready_bytes -= m.size
                if m.body is None:
                    self.paged_bytes -= m.size
            if back:
                q.ready.requeue(back)     # at their places again (positions are unchanged)
            dropped += len(gone) - len(back)
            kept += len(back)
        log.error("%d of %d persistent messages the disk did not take (%s) were removed from their queues; "
                  "%d dead-lettered ones stay in memory only; the others were already delivered",
                  dropped, len(lost), describe_os_error(exc), kept)

    # ==== confirms ============================================================================
    def when_durable(self, callback) -> None:
        """Run callback() once the turn's records are durable, or callback(failure) when the disk
        failed them (failure: a sentence for the publisher; the broker nacks instead of acking)."""
        self._flush_turn()
        fut = self.journal.commit()
        if fut.done() and not self._callbacks_running and fut.exception() is None:
            callback()
            return
        # Callbacks of futures run in the order they were added (the journal resolves its
        # waiters in append order), so confirms never overtake each other.
        self._callbacks_running += 1

        def done(f):
            self._callbacks_running -= 1
            exc = f.exception()
            if exc is not None:
                callback(f"{exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}: "
                         f"publishes not yet confirmed were nacked (their persistent messages were not "
                         f"kept); persistent publishes are refused until the disk recovers")
                return
            callback()

        fut.add_done_callback(done)

    def describe(self) -> dict:
        """Figures for server_info: policy, fsyncs, journal size, what recovery found."""
        j = self.journal
        return {"fsync": j.policy, "fsyncs": j.stats["fsyncs"],
                "fsync_ms_avg": round(j.stats["fsync_us"] / j.stats["fsyncs"] / 1000, 3) if j.stats["fsyncs"] else None, "journal_records": j.records_appended,
                "journal_bytes_written": j.stats["bytes_written"], "live_messages": j.live_messages, "paged_out_bytes": self.paged_bytes,
                "segments": len(j.segments), "disk_bytes": j.disk_bytes(),
                "compactions": j.stats["compactions"], "segments_deleted": j.stats["segments_deleted"],
                "failure": describe_os_error(j.failure) + f" ({j.failure.strerror})" if j.failure else None,
                "storage_failures": j.stats["storage_failures"],
                "recovered": self.recovered}

    # ==== shutdown ============================================================================
    def _snapshot_queues(self):
        """What the clean-stop snapshot needs from the core (`MessageJournal.write_snapshot`): per
        durable queue, its stored messages with exchange, routing key, packed properties and
        expiry deadline (ms since the epoch). Connections are closed by now, so unacked
        messages are back in their queues; one that is not makes the journal skip the snapshot."""
        broker = self._broker
        now = broker.clock()
        wall_ms = time.time() * 1000
        pack = self.journal.pack_properties
        packed: dict[int, bytes] = {}     # id(properties) -> packed: equal messages share one dict
        for q in list(broker.queues.values()):
            if not q.durable or q.exclusive_owner is not None:
                continue
            msgs = []
            for m in q.ready:
                store_id = m.store_id
                if store_id is None:
                    continue
                props = m.properties
                if props:
                    props_bin = packed.get(id(props))
                    if props_bin is None:
                        props_bin = packed[id(props)] = pack(props)
                else:
                    props_bin = b""
                deadline = int(wall_ms + (m.expires_at - now) * 1000) if m.expires_at else None
                msgs.append((store_id, m.exchange, m.routing_key, props_bin, deadline))
            yield q.name, msgs

    def close(self) -> None:
        self._flush_turn()
        if self._retry_handle is not None:
            self._retry_handle.cancel()
            self._retry_handle = None
        if self.definitions.unsaved:
            try:
                self.definitions.save()
            except Exception as exc:
                log.error("definitions file could not be saved at shutdown (%s: %s): deleted durable queues, "
                          "exchanges or bindings may come back after the restart", type(exc).__name__, exc)
        self.journal.close_sync(snapshot=self._snapshot_queues if self._broker is not None else None)
        lock = getattr(self, "_lock_file", None)
        if lock is not None:
            lock.release()
