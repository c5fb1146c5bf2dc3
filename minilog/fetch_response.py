"""The fetch reply, written as one frame whose record bytes may go out with `os.sendfile`.

A fetch answers with stored batches, byte for byte. Packing them with msgpack would first read
them into Python `bytes` and then copy them again into the packed frame. Instead
`FetchResponse` writes the frame by hand around the file slices the storage engine returns
(`minilog.storage.FileSlice`):

    4-byte frame length (computed up front from the slice lengths)
    [1, id, {"results": [[topic, partition, error, high_watermark, log_start_offset, <records>], ...]}]

where each `<records>` is a msgpack bin 32 header (0xc6 + 4-byte length) that we write
ourselves, followed by the slice's bytes. A decoder cannot tell it from a frame msgpack
packed itself (bin 32 is valid for any length).

`send(conn)` keeps the frame in order with the connection's other output: it first flushes
the connection's queued replies; when the transport then holds nothing unsent, the headers go
out with `os.writev` and each large slice with `os.sendfile` straight from the page cache to
the socket. uvloop does not implement `loop.sendfile` (it raises NotImplementedError), hence
the raw fd. The moment the socket would block, the rest of the frame is handed to the
transport (slices read with `os.pread`), which keeps the order and handles backpressure.
Small slices are always read and written: a syscall per slice would cost more than the copy.
A reply under the sendfile size (a live consumer's few records) is joined into one bytes object
and written with one `transport.write`.
"""

from __future__ import annotations

import os
from struct import Struct

import msgpack

from clients.protocol.frames import RESPONSE
from minilog.storage import FileSlice

_LENGTH = Struct(">I")
_BIN32 = Struct(">BI")
# Below this, a slice is pread and written with the headers: cheaper than its own syscall.
SENDFILE_MIN_BYTES = 64 * 1024
# Bytes of one partition's row besides its records (a 249-byte topic name, the numbers, an error
# message naming the topic): a bound the fetch path uses to keep the reply under max_frame.
PARTITION_OVERHEAD = 1024

# One packer for every reply: the event loop builds one reply at a time, and with autoreset each
# pack returns its own bytes (a packer per reply cost as much as packing the row).
_PACKER = msgpack.Packer(use_bin_type=True, autoreset=True)
# [1, id, {"results": [...]}] around the request id and the row count.
_REPLY_START = _PACKER.pack_array_header(3) + _PACKER.pack(RESPONSE)
_RESULTS_KEY = _PACKER.pack_map_header(1) + _PACKER.pack("results")


class FetchResponse:
    __slots__ = ("_pieces", "_size", "_count", "_records_bytes")

    def __init__(self):
        self._pieces: list = []     # bytes and FileSlice, in wire order, after the results header
        self._size = 0
        self._count = 0
        self._records_bytes = 0

    @property
    def records_bytes(self) -> int:
        return self._records_bytes

    def add(self, topic: str, partition: int, error, high_watermark: int, log_start_offset: int,
            records, start: int | None = None) -> None:
        """One partition's result; `records` is a FileSlice, bytes, or None (no records). `start`,
        in a fetch session's reply, is the offset the row was read from: a seventh field."""
        pack = _PACKER.pack
        length = records_size(records)
        head = b"".join((b"\x96" if start is None else b"\x97", pack(topic), pack(partition), pack(error),
                         pack(high_watermark), pack(log_start_offset), _BIN32.pack(0xC6, length)))
        self._pieces.append(head)
        self._size += len(head) + length
        if length:
            self._pieces.append(records)
            self._records_bytes += length
        if start is not None:
            tail = pack(start)
            self._pieces.append(tail)
            self._size += len(tail)
        self._count += 1

    def pieces(self, request_id: int, more: int | None = None) -> list:
        """The whole frame: bytes pieces and FileSlices. With `more` (a fetch that asked for
        several answers), the map also says how many answers follow this one."""
        results_key = _RESULTS_KEY if more is None else b"".join(
            (_PACKER.pack_map_header(2), _PACKER.pack("more"), _PACKER.pack(more), _PACKER.pack("results")))
        head = b"".join((_REPLY_START, _PACKER.pack(request_id), results_key, _PACKER.pack_array_header(self._count)))
        return [_LENGTH.pack(len(head) + self._size), head, *self._pieces]

    def send(self, conn, request_id: int, use_sendfile: bool = True, more: int | None = None) -> int:
        """Write the reply on `conn` (`more`: see `pieces`); returns the record bytes that went
        out with os.sendfile."""
        conn.flush()  # replies queued before this one go first
        transport = conn.transport
        if conn.closed or transport is None or transport.is_closing():
            return 0
        if use_sendfile and self._records_bytes >= SENDFILE_MIN_BYTES:
            return write_pieces(transport, self.pieces(request_id, more), True)
        # A small reply (a live consumer's): one bytes object, one write.
        transport.write(b"".join([p.read() if type(p) is FileSlice else p for p in self.pieces(request_id, more)]))
        return 0


def send_rows(conn, request_id: int, rows, use_sendfile: bool = True) -> int:
    """Write the reply of a fetch that read `rows` (`LogBroker.read`); returns the record bytes
    that went out with os.sendfile. A live consumer's reply (one partition, a few records) is
    packed in one go (`one_row_frame`); any other goes through `FetchResponse`."""
    if len(rows) == 1:
        frame = one_row_frame(request_id, rows[0])
        if frame is not None:
            write_frame(conn, frame)
            return 0
    resp = FetchResponse()
    for row in rows:
        resp.add(*row)
    return resp.send(conn, request_id, use_sendfile)


def write_frame(conn, frame: bytes) -> None:
    """Write one whole frame on `conn`, after the replies queued before it."""
    conn.flush()
    transport = conn.transport
    if not conn.closed and transport is not None and not transport.is_closing():
        transport.write(frame)


def records_size(records) -> int:
    """The bytes of a row's records: a FileSlice, bytes, or None."""
    if records is None:
        return 0
    return records.length if type(records) is FileSlice else len(records)


def one_row_frame(request_id: int, row, start: int | None = None, more: int | None = None) -> bytes | None:
    """The frame `FetchResponse` writes for the one row `row` (with a fetch session's `start`
    and a streamed fetch's `more`, as `add` and `pieces` take them), byte for byte, with one
    pack of the envelope instead of a pack per field and two joins; None when the records are
    not small (they may go out with sendfile: `FetchResponse`).

    The envelope is packed with nil where the records go, the row's sixth field: that nil is
    the byte before the packed `start` (or the last byte without one), replaced by the bin 32
    header and the records."""
    topic, partition, error, high_watermark, log_start_offset, records = row
    if records_size(records) >= SENDFILE_MIN_BYTES:
        return None   # before reading it: a replaying consumer's MiB is not read here for nothing
    data = b"" if records is None else (records.read() if type(records) is FileSlice else records)
    if start is None:
        result = {"results": [(topic, partition, error, high_watermark, log_start_offset, None)]}
        tail = b""
    else:
        fields = (topic, partition, error, high_watermark, log_start_offset, None, start)
        result = {"results": [fields]} if more is None else {"more": more, "results": [fields]}
        tail = _PACKER.pack(start)
    packed = _PACKER.pack([RESPONSE, request_id, result])
    n = len(data)
    nil = len(packed) - len(tail) - 1
    with memoryview(packed) as head:
        return b"".join((_LENGTH.pack(len(packed) + 4 + n), head[:nil], _BIN32.pack(0xC6, n), data, tail))


# The packed positive fixints, for a streamed answer's `more` (at most MAX_ANSWERS).
_FIXINT = [bytes((i,)) for i in range(128)]


def streamed_frame_head(request_id: int, topic: str, partition: int) -> tuple:
    """What every answer of a streamed one-partition fetch shares (`streamed_frame`): the
    envelope up to `more`'s value, then from after it to the row's high watermark."""
    pack = _PACKER.pack
    before_more = b"".join((_REPLY_START, pack(request_id), _PACKER.pack_map_header(2), pack("more")))
    before_hw = b"".join((pack("results"), _PACKER.pack_array_header(1), _PACKER.pack_array_header(7), pack(topic),
                          pack(partition), pack(None)))
    return before_more, before_hw


def streamed_frame(head: tuple, row, start: int, more: int) -> bytes | None:
    """`one_row_frame(request_id, row, start, more)`, byte for byte, from the fetch's
    `streamed_frame_head`: the answer of a streamed fetch at the log end, one per record, packs
    only what changes (the offsets, the records). None where `one_row_frame` is needed: an
    error row, a `more` past a fixint, records not small."""
    records = row[5]
    if records is None:
        data = b""
    elif records.__class__ is FileSlice:
        if records.length >= SENDFILE_MIN_BYTES:
            return None
        data = records.read()
    else:
        data = records
    if row[2] is not None or not 0 <= more < 128 or len(data) >= SENDFILE_MIN_BYTES:
        return None
    pack = _PACKER.pack
    before_more, before_hw = head
    n = len(data)
    tail = pack(start)
    mid = b"".join((pack(row[3]), pack(row[4]), _BIN32.pack(0xC6, n)))
    return b"".join((_LENGTH.pack(len(before_more) + 1 + len(before_hw) + len(mid) + n + len(tail)),
                     before_more, _FIXINT[more], before_hw, mid, data, tail))


def write_pieces(transport, pieces: list, use_sendfile: bool = True) -> int:
    """Write `pieces` (bytes and FileSlices) on `transport`, in order; returns the bytes sent with
    os.sendfile. Any front door's reply built around file slices goes out through here (the msgpack
    fetch above, the Kafka door's Fetch).

    With `use_sendfile` and nothing buffered in the transport, bytes go out with `os.writev` on the
    socket's fd and each large slice with `os.sendfile`; the moment the socket would block, the
    rest is handed to the transport (slices read with `os.pread`), which keeps the order.
    Otherwise every slice is read and the lot written with one `writelines`.
    """
    fd = -1
    # Never around TLS: os.sendfile and writev on the raw socket would bypass the encryption.
    if (use_sendfile and transport.get_write_buffer_size() == 0
            and transport.get_extra_info("sslcontext") is None):
        sock = transport.get_extra_info("socket")
        fd = sock.fileno() if sock is not None else -1
    if fd < 0:
        transport.writelines([p.read() if type(p) is FileSlice else p for p in pieces])
        return 0
    by_sendfile = 0
    pending: list = []   # small pieces waiting to be written before the next sendfile
    direct = True        # True while everything so far went straight to the socket
    for piece in pieces:
        if type(piece) is not FileSlice:
            pending.append(piece)
            continue
        if not direct or piece.length < SENDFILE_MIN_BYTES:
            pending.append(piece.read())
            continue
        direct = _write_direct(fd, pending, transport)
        pending = []
        if direct:
            sent = _sendfile(fd, piece, transport)
            if sent is None:
                return by_sendfile  # the connection broke and was closed
            by_sendfile += sent
            if sent < piece.length:
                direct = False
                pending.append(os.pread(piece.fd, piece.length - sent, piece.position + sent))
        else:
            pending.append(piece.read())
    if pending:
        if direct:
            _write_direct(fd, pending, transport)
        else:
            transport.writelines(pending)
    return by_sendfile


def _write_direct(fd: int, pending: list, transport) -> bool:
    """writev `pending` to the socket; hand any unsent rest to the transport. True if all went out."""
    if not pending:
        return True
    total = sum(len(p) for p in pending)
    try:
        sent = os.writev(fd, pending)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:
        transport.writelines(pending)  # the transport sees the broken socket and closes it
        return False
    if sent == total:
        return True
    rest = b"".join(pending)[sent:]
    transport.write(rest)
    return False


def _sendfile(fd: int, piece: FileSlice, transport) -> int | None:
    """Send as much of `piece` as the socket takes without blocking; returns bytes sent."""
    sent = 0
    while sent < piece.length:
        try:
            n = os.sendfile(fd, piece.fd, piece.position + sent, piece.length - sent)
        except (BlockingIOError, InterruptedError):
            return sent
        except OSError:
            transport.abort()
            return None
        if n == 0:
            return sent
        sent += n
    return sent
