"""The fetch session against a model, without sockets: whatever order requests are sent,
answered late, lost, and whatever the application does between them (seek, pause, resume,
take), the records handed out for a partition run on from where it was last positioned, one
offset after another, none skipped, none twice.

The test plays a server over a fixed log of batches of varying sizes: a fetch from offset o
gets whole batches from the one holding o, up to the request's byte limit (at least one
batch), as minilog's fetch does. Replies may come back in any order, after repositions.

With `continued` the server keeps a fetch session, as minilog's msgpack door does: a nil
offset continues where the session's previous fetch ended, so the session's requests are
answered in the order they were sent (here at once, the log being fixed) while their replies
still reach the client in any order, late or not at all. With `refuses` too, the server is an
older one that refuses session fetches, and the client must fall back to plain ones.
"""

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from clients.log.fetch_session import FetchSession, PartitionFetch
from clients.log.message import MessageBuilder
from clients.record_batch import build_batch

T0 = 1_700_000_000_000


class FetchSessionModel(RuleBasedStateMachine):
    CONTINUED = (False, True)   # the server keeps fetch sessions and the client continues in one
    REFUSES = (False, True)     # an older server that refuses them
    BATCHES = st.lists(st.integers(16, 150), min_size=1, max_size=8)   # records per batch
    LIMIT = st.integers(200, 6000)                                     # bytes per reply

    @initialize(data=st.data())
    def start(self, data):
        sizes = data.draw(self.BATCHES)
        limit = data.draw(self.LIMIT)
        continued = data.draw(st.sampled_from(self.CONTINUED))
        refuses = data.draw(st.sampled_from(self.REFUSES))
        self.batches = []  # (base offset, bytes)
        base = 0
        for n in sizes:
            self.batches.append((base, build_batch([(None, b"%d" % (base + i), T0 + base + i, None)
                                                    for i in range(n)], base_offset=base)))
            base += n
        self.end = base
        self.session = FetchSession(MessageBuilder(), partition_max_bytes=limit)
        self.session.continued = continued
        self.refuses = refuses
        self.server_position = None   # the server's fetch session: where its last answer ended
        self.part = PartitionFetch("t", 0)
        self.session.replace({("t", 0): self.part})
        self.session.seek(self.part, 0)
        self.expected = 0          # the next offset the application must get
        self.paused = False
        self.requests = []         # (args, token, reply) sent and not answered

    def _read(self, offset, limit):
        """Whole batches from the one holding `offset`, and the offset after them."""
        data, end = b"", offset
        for (base, blob), next_base in zip(self.batches, [b for b, _ in self.batches[1:]] + [self.end]):
            if next_base <= offset:
                continue  # wholly before the offset asked for
            if data and len(data) + len(blob) > limit:
                break
            data += blob
            end = next_base
        return data, end

    def _serve(self, args):
        """The server's answer, made when the request reaches it (in the order sent)."""
        [[topic, partition, offset, limit]] = args["partitions"]
        if "session" not in args:
            return {"results": [[topic, partition, None, self.end, 0, self._read(offset, limit)[0]]]}
        if self.refuses:
            return "refused"
        if offset is None:
            assert self.server_position is not None, "a nil offset the server's session has no position for"
            offset = self.server_position
        data, self.server_position = self._read(offset, limit)
        return {"results": [[topic, partition, None, self.end, 0, data, offset]]}

    def _deliver(self, token, reply):
        if reply == "refused":
            assert self.session.fetch_refused(token)
        else:
            self.session.accept(token, reply)

    @rule()
    def send(self):
        request = self.session.fetch_request()
        if request is not None:
            args, token = request
            self.requests.append((args, token, self._serve(args)))

    @rule()
    def fetch_now(self):
        """A request answered at once, with nothing in between (the common case)."""
        request = self.session.fetch_request()
        if request is not None:
            self._deliver(request[1], self._serve(request[0]))

    @precondition(lambda self: self.requests)
    @rule(data=st.data(), lose=st.booleans())
    def answer(self, data, lose):
        args, token, reply = self.requests.pop(data.draw(st.integers(0, len(self.requests) - 1)))
        if lose:
            self.session.fetch_failed(token)
        else:
            self._deliver(token, reply)

    @rule(n=st.integers(1, 15))
    def take(self, n):
        out = []
        self.session.take(n, out)
        offsets = [m.offset() for m in out]
        if self.paused:
            assert offsets == []
            return
        assert offsets == list(range(self.expected, self.expected + len(offsets)))
        assert all(m.value() == b"%d" % m.offset() and m.timestamp()[1] == T0 + m.offset() for m in out)
        self.expected += len(offsets)

    @rule(data=st.data())
    def seek(self, data):
        self.expected = data.draw(st.integers(0, self.end))
        self.session.seek(self.part, self.expected)

    @rule()
    def pause(self):
        self.session.pause(self.part)
        self.paused = True

    @rule()
    def resume(self):
        self.session.resume(self.part)
        self.paused = False

    @rule()
    def connection_lost(self):
        self.session.connection_lost()
        self.requests.clear()
        self.server_position = None   # a new connection has no fetch session yet

    @invariant()
    def position_is_where_the_application_is(self):
        if hasattr(self, "part"):
            assert self.part.position == self.expected
            assert 0 <= self.session.held_bytes

    def teardown(self):
        """Then fetching and taking until the end gets there: nothing is stuck."""
        if not hasattr(self, "part"):
            return
        self.resume()
        for _ in range(4 * len(self.batches) + 4):
            if self.expected >= self.end:
                break
            if self.session.should_fetch() or not self.requests:
                self.send()
            while self.requests:
                args, token, reply = self.requests.pop(0)
                self._deliver(token, reply)
            self.take(10_000)
        assert self.expected == self.end


class ContinuedFetchSessionModel(FetchSessionModel):
    """Every run in a fetch session the server keeps: replies carry their start offsets, and
    a reply lost or late leaves the server's session ahead of the client."""
    CONTINUED = (True,)
    REFUSES = (False,)
    # Replies that end before the log does, so a lost one leaves a gap for the next to show.
    BATCHES = st.lists(st.integers(16, 60), min_size=3, max_size=8)
    LIMIT = st.integers(200, 1500)


TestFetchSessionModel = FetchSessionModel.TestCase
TestContinuedFetchSessionModel = ContinuedFetchSessionModel.TestCase
