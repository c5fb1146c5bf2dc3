"""A trace subscriber on a client connection: each event becomes a `trace` push.

Both servers' `trace` ops use it (minibroker/trace.py, `LogBroker.set_tracing`). A subscriber
whose client does not read fast enough must not make the server buffer without bound, so while
the connection's transport is paused (backpressure) events are dropped and counted, and the
next event that goes out carries `trace_dropped` with that count.
"""


def push_tracer(conn):
    dropped = 0

    def tracer(event: dict) -> None:
        nonlocal dropped
        if conn.closed:
            return
        if conn.writing_paused:
            dropped += 1
            return
        if dropped:
            event = dict(event, trace_dropped=dropped)
            dropped = 0
        conn.push("trace", event)
    return tracer
