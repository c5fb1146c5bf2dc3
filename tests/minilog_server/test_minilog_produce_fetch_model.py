"""A model check: whatever mix of produce requests, fetches read back exactly what was acknowledged."""

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clients.record_batch import decode_batches
from minilog_wire_helpers import batch, connect, create

_topics = itertools.count()

entry = st.tuples(st.integers(0, 2),                                   # partition
                  st.lists(st.binary(max_size=300), min_size=1, max_size=20),  # one batch's values
                  st.booleans())                                        # corrupt it?
requests = st.lists(st.tuples(st.sampled_from([1, -1]), st.lists(entry, min_size=1, max_size=5)),
                    min_size=1, max_size=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=requests, fetch_bytes=st.integers(1, 5000))
def test_fetches_return_exactly_the_acknowledged_records_in_order(server, requests, fetch_bytes):
    topic = f"model-{next(_topics)}"
    model = {p: [] for p in range(3)}
    with connect(server) as c:
        create(c, topic, partitions=3)
        for acks, entries in requests:
            data = []
            for partition, vals, corrupt in entries:
                b = bytearray(batch(vals))
                if corrupt:
                    b[-1] ^= 0x5A
                data.append([topic, partition, bytes(b)])
            rows = c.call("produce", {"acks": acks, "data": data})["results"]
            for (partition, vals, corrupt), row in zip(entries, rows):
                if corrupt:
                    assert row[3][0] == "CORRUPT_MESSAGE" and row[2] == -1
                else:
                    assert row[3] is None and row[2] == len(model[partition])
                    model[partition].extend(vals)
        for partition in range(3):
            got, offset = [], 0
            while True:
                result = c.call("fetch", {"partitions": [[topic, partition, offset, fetch_bytes]]})["results"][0]
                assert result[2] is None and result[3] == len(model[partition])
                records = [r for r in decode_batches(result[5]) if r[0] >= offset]
                if not records:
                    break
                assert records[0][0] == offset
                got.extend(r[3] for r in records)
                offset = records[-1][0] + 1
            assert got == model[partition]
