"""`Wire`, the raw client of the minibroker wire tests: it sorts the server's pushes.

`Wire` wraps `clients.rpc.RpcConnection` (the raw ops, no pika-style client) and files each
push by kind, so a test can wait for "5 deliveries" or "the confirm of seq 10" with a deadline.
It lives here, not in conftest.py, so tests can import it whatever other conftest modules
pytest loaded in the same run.
"""

import time

from clients.rpc import RpcConnection


class Wire:
    def __init__(self, server, max_frame=None):
        kwargs = {} if max_frame is None else {"max_frame": max_frame}
        self.conn = RpcConnection(server.host, server.port, client_name="minibroker-test", **kwargs)
        self.deliveries = []   # (ch, [consumer_tag, delivery_tag, redelivered, exchange, routing_key, body, properties])
        self.deliver_frames = 0
        self.confirms = []     # [ch, ack, seq, multiple]
        self.returns = []
        self.cancels = []

    def call(self, op, **args):
        return self.conn.call(op, args)

    def send(self, op, **args):
        """A request with id 0: no reply unless it fails."""
        self.conn.send(op, args, want_reply=False)

    def flush(self):
        self.conn.flush()

    def pump(self, timeout=0.0):
        self.conn.read(timeout)
        self._sort()

    def _sort(self):
        while self.conn.pushes:
            push = self.conn.pushes.popleft()
            if push.event == "deliver":
                ch, entries = push.body
                self.deliver_frames += 1
                self.deliveries.extend((ch, e) for e in entries)
            elif push.event == "confirm":
                self.confirms.append(push.body)
            elif push.event == "return":
                self.returns.append(push.body)
            elif push.event == "cancel":
                self.cancels.append(push.body)
            else:
                raise AssertionError(f"unexpected push {push}")

    def wait(self, predicate, timeout=5.0, message="condition"):
        deadline = time.monotonic() + timeout
        self.flush()
        self._sort()
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {message}; deliveries={len(self.deliveries)} "
                                     f"confirms={self.confirms[-3:]} errors={list(self.conn.async_errors)}")
            self.pump(min(remaining, 0.2))
        return True

    def take_deliveries(self, n, timeout=5.0):
        self.wait(lambda: len(self.deliveries) >= n, timeout, f"{n} deliveries")
        got, self.deliveries = self.deliveries[:n], self.deliveries[n:]
        return [e for _, e in got]

    def expect_no_deliveries(self):
        """A check that nothing more arrives, by a ping round trip, no waiting on the clock.

        The broker applies every request read in a loop iteration, then runs one turn
        (`Broker.run_turn`, scheduled with call_soon) that pushes the deliveries they caused,
        to this connection or any other, before the next read. The ping goes out after the
        replies to our earlier requests came back, so it is read in a later iteration, and its
        reply leaves after any delivery those requests caused, on this connection's one ordered
        stream. Nothing here is a timer (TTL expiry removes messages, it does not push them).
        """
        self.call("ping")
        self._sort()
        assert self.deliveries == []

    def confirmed(self):
        """{seq: ack} from the confirm pushes, expanding `multiple`."""
        out = {}
        last = 0
        for _, ack, seq, multiple in self.confirms:
            if multiple:
                for s in range(1, seq + 1):
                    out.setdefault(s, ack)
            out[seq] = ack
            last = max(last, seq)
        return out

    def async_error(self, timeout=5.0):
        self.wait(lambda: self.conn.async_errors, timeout, "an asynchronous error")
        return self.conn.async_errors.popleft()

    def close(self):
        self.conn.close()
