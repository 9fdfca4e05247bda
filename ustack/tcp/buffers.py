"""Send and receive buffers.

Theory of operation
-------------------
:class:`SendBuffer` holds every byte the application queued that the peer has not acknowledged:
unacknowledged bytes first, then unsent ones. The connection addresses it by offset from its
first byte (which sits at a known sequence number), so the buffer needs no sequence arithmetic.
Chunks are immutable ``bytes`` kept in a list; a segment that falls inside one chunk is handed
out as a ``memoryview`` slice (no copy, and no export that could block a later resize); only a
segment spanning chunks is joined. Small writes are coalesced into the tail chunk so the list
stays short.

:class:`ReceiveBuffer` holds in-order bytes the application has not read yet plus out-of-order
pieces for reassembly. Out-of-order pieces are keyed by *stream offset* (a Python int counting
in-order bytes since the start), so reassembly never deals with sequence wrap-around. New data
only ever fills gaps: overlaps with bytes already held are trimmed (and counted), adjacent pieces
are kept apart (merging would copy), and the number of pieces is bounded. The connection trims every segment to the
advertised window first, so the bytes held never exceed the buffer's capacity.

Both buffers cost almost nothing while empty, which is most of a connection's life: the chunk
list, the reassembly lists and the bytes waiting to be read are created on first use and
dropped again when they empty. The first in-order segment is kept as the ``bytes`` it was
copied into, and a read of everything hands that same object out, so the common "one segment
arrives, the application reads it" costs one copy, not two.
"""

from __future__ import annotations

from bisect import bisect_right, insort

# Writes smaller than this are appended to a tail chunk of at most _COALESCE_MAX bytes.
_SMALL_WRITE = 4096
_COALESCE_MAX = 16384


class SendBuffer:
    __slots__ = ("_chunks", "_head", "capacity", "size")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # A list (it stays short: writes are coalesced, 16 KiB chunks), created by the first
        # write and dropped when the last byte is acknowledged: an idle connection holds none.
        self._chunks: list[bytes] | None = None
        self._head = 0  # bytes of _chunks[0] already consumed
        self.size = 0  # bytes held (acknowledged bytes are gone)

    @property
    def free(self) -> int:
        return self.capacity - self.size

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Queue as much of ``data`` as fits; return how many bytes were taken."""
        n = min(len(data), self.capacity - self.size)
        if n <= 0:
            return 0
        chunk = data if type(data) is bytes and n == len(data) else bytes(data[:n])
        chunks = self._chunks
        if chunks is None:
            self._chunks = [chunk]
        elif n < _SMALL_WRITE and chunks and len(chunks[-1]) + n <= _COALESCE_MAX:
            # appending keeps every offset into the chunk (and _head) valid
            chunks[-1] = chunks[-1] + chunk
        else:
            chunks.append(chunk)
        self.size += n
        return n

    def consume(self, n: int) -> None:
        """Forget the first ``n`` bytes (they were acknowledged)."""
        n = min(n, self.size)
        chunks = self._chunks
        if chunks is None or n <= 0:
            return
        self.size -= n
        head = self._head + n
        while chunks and head >= len(chunks[0]):
            head -= len(chunks.pop(0))
        if chunks:
            self._head = head
        else:
            self._chunks = None
            self._head = 0

    def peek(self, offset: int, n: int) -> bytes | memoryview:
        """Up to ``n`` bytes starting ``offset`` bytes after the first held byte."""
        n = min(n, self.size - offset)
        if n <= 0:
            return b""
        pos = self._head + offset
        chunks = self._chunks
        if chunks is None:
            return b""
        for i, chunk in enumerate(chunks):
            clen = len(chunk)
            if pos < clen:
                if pos + n <= clen:
                    if pos == 0 and n == clen:
                        return chunk
                    return memoryview(chunk)[pos : pos + n]
                return self._join(i, pos, n)
            pos -= clen
        return b""

    def _join(self, i: int, pos: int, n: int) -> bytes:
        parts: list[bytes | memoryview] = []
        chunks = self._chunks
        assert chunks is not None
        while n > 0:
            chunk = chunks[i]
            take = min(len(chunk) - pos, n)
            parts.append(memoryview(chunk)[pos : pos + take])
            n -= take
            pos = 0
            i += 1
        return b"".join(parts)


class ReceiveBuffer:
    __slots__ = ("_data", "_ooo", "_ranges", "_stream", "capacity", "last_dup", "max_pieces")

    def __init__(self, capacity: int, max_pieces: int) -> None:
        self.capacity = capacity
        self.max_pieces = max_pieces
        # In order, not yet read: b"" when empty, the first segment's bytes as they came, a
        # bytearray once a second segment joins them.
        self._data: bytes | bytearray = b""
        self._stream = 0  # stream offset of the next in-order byte (RCV.NXT)
        # Sorted, disjoint (start, data); the shared empty _NO_PIECES until data arrives out of
        # order (replaced, never mutated), and again once reassembly has taken it all.
        self._ooo: list[tuple[int, bytes]] = _NO_PIECES
        # The same data as merged [start, end) ranges, kept up to date as pieces come and go,
        # because every ACK's SACK blocks are read from it (shared empty _NO_RANGES likewise).
        self._ranges: list[list[int]] = _NO_RANGES
        self.last_dup: tuple[int, int] | None = None

    @property
    def readable(self) -> int:
        return len(self._data)

    @property
    def has_ooo(self) -> bool:
        return bool(self._ooo)

    @property
    def ooo_bytes(self) -> int:
        return sum(len(d) for _, d in self._ooo)

    @property
    def ooo_pieces(self) -> int:
        return len(self._ooo)

    def free(self) -> int:
        """Bytes of window left: capacity minus what the application has not read."""
        return self.capacity - len(self._data)

    def read(self, max_bytes: int = -1) -> bytes:
        data = self._data
        if max_bytes < 0 or max_bytes >= len(data):
            self._data = b""
            return data if type(data) is bytes else bytes(data)
        out = bytes(data[:max_bytes])
        if type(data) is bytearray:
            del data[:max_bytes]
        else:
            self._data = data[max_bytes:]
        return out

    def _append(self, data: bytes | memoryview) -> None:
        held = self._data
        if not held:
            self._data = bytes(data)  # no copy when it already is bytes
        elif type(held) is bytearray:
            held += data
        else:
            grown = bytearray(held)
            grown += data
            self._data = grown

    def add_in_order(self, data: bytes | memoryview) -> int:
        """Append bytes at RCV.NXT; pull in any out-of-order pieces this joins up with.

        Returns the number of bytes RCV.NXT advances (``len(data)`` plus reassembled bytes).
        """
        advanced = len(data)
        if advanced:
            self._append(data)
            self._stream += advanced
        if self._ooo:
            advanced += self._drain_ooo()
        return advanced

    def _drain_ooo(self) -> int:
        advanced = 0
        ooo = self._ooo
        while ooo:
            start, piece = ooo[0]
            if start > self._stream:
                break
            del ooo[0]
            skip = self._stream - start
            if skip < len(piece):
                tail = piece[skip:]
                self._append(tail)
                self._stream += len(tail)
                advanced += len(tail)
        if not ooo:
            self._ooo = _NO_PIECES
            self._ranges = _NO_RANGES
            return advanced
        ranges = self._ranges
        while ranges and ranges[0][1] <= self._stream:
            del ranges[0]
        return advanced

    @property
    def stream(self) -> int:
        """The stream offset of RCV.NXT (in-order bytes received so far)."""
        return self._stream

    def ooo_ranges(self) -> list[list[int]]:
        """The out-of-order data held, as merged ``[start, end)`` stream-offset ranges (what
        SACK blocks report: adjacent pieces are one block). Read-only."""
        return self._ranges

    def drop_out_of_order(self) -> int:
        """Forget every out-of-order piece; return the bytes dropped."""
        dropped = sum(len(piece) for _, piece in self._ooo)
        self._ooo = _NO_PIECES
        self._ranges = _NO_RANGES
        return dropped

    def ooo_range_at(self, offset: int) -> list[int] | None:
        """The merged range holding stream offset ``offset``, if any. Read-only."""
        ranges = self._ranges
        i = bisect_right(ranges, offset, key=_first) - 1
        if i >= 0 and offset < ranges[i][1]:
            return ranges[i]
        return None

    def _add_range(self, a: int, b: int) -> None:
        ranges = self._ranges
        i = bisect_right(ranges, a, key=_first)
        if i and ranges[i - 1][1] >= a:
            i -= 1
            if b > ranges[i][1]:
                ranges[i][1] = b
        else:
            ranges.insert(i, [a, b])
        cur = ranges[i]
        j = i + 1
        while j < len(ranges) and ranges[j][0] <= cur[1]:
            if ranges[j][1] > cur[1]:
                cur[1] = ranges[j][1]
            j += 1
        del ranges[i + 1 : j]

    def add_out_of_order(self, offset: int, data: bytes | memoryview) -> tuple[int, int]:
        """Hold ``data`` that starts ``offset`` (> 0) bytes after RCV.NXT.

        Returns ``(new_bytes, duplicate_bytes)``; ``new_bytes`` is -1 when the new bytes had to
        be dropped because the piece bound was reached. The first duplicated range (stream
        offsets) is left in :attr:`last_dup` for D-SACK, or None.
        """
        start = self._stream + offset
        end = start + len(data)
        ooo = self._ooo
        new: list[tuple[int, bytes]] = []
        cur = start
        dup = 0
        self.last_dup = None
        # cut the new range into the gaps between held pieces, starting at the last piece that
        # begins at or before it
        j = max(bisect_right(ooo, start, key=_start) - 1, 0)
        while j < len(ooo):
            a, piece = ooo[j]
            b = a + len(piece)
            j += 1
            if b <= cur:
                continue
            if a >= end:
                break
            if a > cur:
                new.append((cur, bytes(data[cur - start : a - start])))
            if self.last_dup is None:
                self.last_dup = (max(a, cur), min(b, end))
            dup += min(b, end) - max(a, cur)
            cur = b
            if cur >= end:
                break
        if cur < end:
            new.append((cur, bytes(data[cur - start :])))
        if not new:
            return 0, dup
        if len(ooo) + len(new) > self.max_pieces:
            return -1, dup
        if ooo is _NO_PIECES:
            ooo = self._ooo = []
            self._ranges = []
        for item in new:
            insort(ooo, item, key=_start)
            self._add_range(item[0], item[0] + len(item[1]))
        return sum(len(p) for _, p in new), dup


# The shared "nothing held out of order" values (see ReceiveBuffer.__init__): never mutated.
_NO_PIECES: list[tuple[int, bytes]] = []
_NO_RANGES: list[list[int]] = []


def _start(piece: tuple[int, bytes]) -> int:
    return piece[0]


def _first(r: list[int]) -> int:
    return r[0]
