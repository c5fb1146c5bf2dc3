"""How many messages per second the minibroker core moves in-process: publish → deliver → ack.

    python -m bench.minibroker_core [--messages 300000] [--batch 1000] [--size 256]
                                    [--prefetch 1000] [--runs 5] [--profile] [--json PATH]

No network and no event loop: one Broker, one session whose sink only counts what it is
given, one queue on the default exchange. Each round publishes a batch (`Broker.publish_batch`,
as the `publish_batch` op does), runs a turn (the queue drains into the consumer up to its
prefetch, the channel hands the batch to the sink) and acks the last delivery tag with
multiple=true, as a fast consumer does. This is the server's share of the end-to-end path,
without msgpack and sockets; `--profile` prints where the time goes (cProfile).
"""

import argparse
import json
import statistics
import time

from minibroker.broker import Broker


class CountingSink:
    paused = False
    send_limit = 16 * 1024 * 1024

    def __init__(self):
        self.delivered = 0
        self.last_tag = 0

    def deliver(self, ch, entries, body_bytes):
        self.delivered += len(entries)
        self.last_tag = entries[-1][1]
        return None

    def confirm(self, *args):
        pass

    def return_message(self, *args):
        pass

    def cancel(self, *args):
        pass


def run_once(messages: int, batch: int, size: int, prefetch: int, confirms: bool) -> float:
    broker = Broker()
    sink = CountingSink()
    session = broker.open_session(sink)
    broker.declare_queue(session, "bench")
    producer = session.channel(1)
    if confirms:
        producer.confirm_mode = True
    consumer_channel = session.channel(2)
    consumer_channel.qos(prefetch, False)
    consumer_channel.consume(broker.queues["bench"], "c", False, False, {}, 0.0)
    body = b"x" * size
    entries = [["", "bench", body, None, False]] * batch
    start = time.perf_counter()
    sent = 0
    while sent < messages:
        broker.publish_batch(producer, entries)
        sent += batch
        broker.run_turn()
        if sink.last_tag:
            consumer_channel.ack(sink.last_tag, True)
            sink.last_tag = 0
            broker.run_turn()
    while sink.delivered < messages:
        broker.run_turn()
        if sink.last_tag:
            consumer_channel.ack(sink.last_tag, True)
            sink.last_tag = 0
    elapsed = time.perf_counter() - start
    assert sink.delivered == messages, (sink.delivered, messages)
    return messages / elapsed


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--prefetch", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--confirms", action="store_true", help="publish in confirm mode")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if args.profile:
        import cProfile
        import pstats
        prof = cProfile.Profile()
        prof.enable()
        run_once(args.messages, args.batch, args.size, args.prefetch, args.confirms)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    rates = [run_once(args.messages, args.batch, args.size, args.prefetch, args.confirms) for _ in range(args.runs)]
    result = {
        "benchmark": "minibroker_core",
        "messages": args.messages, "batch": args.batch, "size": args.size, "prefetch": args.prefetch,
        "confirms": args.confirms,
        "messages_per_s_median": statistics.median(rates),
        "messages_per_s_runs": rates,
    }
    print(f"minibroker core publish→deliver→ack: {result['messages_per_s_median']:,.0f} msg/s median of "
          f"{args.runs} (min {min(rates):,.0f}, max {max(rates):,.0f}); {args.size} B bodies, batches of "
          f"{args.batch}, prefetch {args.prefetch}{', confirms' if args.confirms else ''}")
    print(f"  = {1e6 / result['messages_per_s_median']:.2f} µs per message in the core")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
