"""How many frames per second the sans-IO decoder sustains in-process (no sockets).

    python -m bench.codec [--frames 200000] [--size 100] [--chunk 65536] [--runs 5] [--json PATH]

Encodes request frames of about `size` bytes, cuts the stream into `chunk`-byte reads (as a
socket would deliver it) and times `FrameDecoder.feed` over all of them. Prints the median of
several runs and the spread, beside a plain `msgpack.unpackb` loop over the same bodies (the
ceiling: decoding without framing).
"""

import argparse
import json
import statistics
import time

import msgpack

from clients.protocol.framing import FrameDecoder, encode_frame, new_packer


def build_stream(frames: int, size: int) -> tuple[bytes, list[bytes]]:
    packer = new_packer()
    payload = b"x" * max(size - 30, 1)
    encoded = [encode_frame([0, i + 1, "publish", {"body": payload}], packer) for i in range(frames)]
    return b"".join(encoded), [e[4:] for e in encoded]


def time_decoder(stream: bytes, chunk: int, expected: int) -> float:
    decoder = FrameDecoder()
    chunks = [stream[i:i + chunk] for i in range(0, len(stream), chunk)]
    start = time.perf_counter()
    count = 0
    for piece in chunks:
        count += len(decoder.feed(piece))
    elapsed = time.perf_counter() - start
    assert count == expected
    return elapsed


def time_unpack(bodies: list[bytes]) -> float:
    unpackb = msgpack.unpackb
    start = time.perf_counter()
    for body in bodies:
        unpackb(body, raw=False)
    return time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=65536)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    stream, bodies = build_stream(args.frames, args.size)
    decode = [args.frames / time_decoder(stream, args.chunk, args.frames) for _ in range(args.runs)]
    unpack = [args.frames / time_unpack(bodies) for _ in range(args.runs)]
    result = {
        "benchmark": "codec",
        "frames": args.frames, "frame_bytes": len(stream) // args.frames, "chunk": args.chunk,
        "decoder_frames_per_s_median": statistics.median(decode),
        "decoder_frames_per_s_runs": decode,
        "unpackb_only_per_s_median": statistics.median(unpack),
    }
    print(f"FrameDecoder: {result['decoder_frames_per_s_median']:,.0f} frames/s median of {args.runs} "
          f"(min {min(decode):,.0f}, max {max(decode):,.0f}); {result['frame_bytes']} B frames, {args.chunk} B reads")
    print(f"msgpack.unpackb alone on the same bodies: {result['unpackb_only_per_s_median']:,.0f} /s "
          f"(decoder at {result['decoder_frames_per_s_median'] / result['unpackb_only_per_s_median']:.0%} of it)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
