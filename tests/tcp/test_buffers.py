"""Send and receive buffers."""

from __future__ import annotations

import random

from ustack.tcp.buffers import ReceiveBuffer, SendBuffer


class TestSendBuffer:
    def test_bounded_write_and_consume(self) -> None:
        b = SendBuffer(10)
        assert b.write(b"abcdefgh") == 8
        assert b.write(b"ijkl") == 2 and b.free == 0
        b.consume(3)
        assert b.size == 7 and bytes(b.peek(0, 100)) == b"defghij"

    def test_peek_within_a_chunk_does_not_copy(self) -> None:
        b = SendBuffer(1 << 20)
        big = bytes(100_000)
        b.write(big)
        view = b.peek(1000, 1460)
        assert isinstance(view, memoryview) and view.obj is big
        assert b.peek(0, 100_000) is big

    def test_peek_across_chunks_and_offsets(self) -> None:
        b = SendBuffer(1 << 20)
        parts = [bytes([i]) * (5000 + i) for i in range(10)]
        for p in parts:
            b.write(p)
        whole = b"".join(parts)
        rng = random.Random(1)
        consumed = 0
        while consumed < len(whole):
            off = rng.randrange(0, b.size)
            n = rng.randrange(1, 3000)
            assert bytes(b.peek(off, n)) == whole[consumed + off : consumed + off + n]
            step = rng.randrange(1, 4000)
            b.consume(step)
            consumed = min(consumed + step, len(whole))
        assert b.size == 0 and b.peek(0, 10) == b""

    def test_small_writes_are_coalesced(self) -> None:
        b = SendBuffer(1 << 20)
        for _ in range(1000):
            b.write(b"x")
        assert len(b._chunks) == 1 and b.size == 1000

    def test_views_survive_later_writes(self) -> None:
        b = SendBuffer(1 << 20)
        b.write(b"a" * 100)
        v = b.peek(0, 50)
        b.write(b"b" * 100)  # coalescing replaces the chunk; the view stays valid
        b.consume(100)
        assert bytes(v) == b"a" * 50


class TestReceiveBuffer:
    def test_in_order_and_read(self) -> None:
        r = ReceiveBuffer(100, 8)
        assert r.add_in_order(memoryview(b"hello")) == 5
        assert r.readable == 5 and r.free() == 95
        assert r.read(2) == b"he" and r.read() == b"llo" and r.read() == b""

    def test_reassembly_with_overlaps(self) -> None:
        r = ReceiveBuffer(1000, 16)
        assert r.add_out_of_order(10, b"KLMNO") == (5, 0)
        assert r.add_out_of_order(8, b"IJklmnoPQ") == (4, 5)  # IJ and PQ are new
        assert r.ooo_pieces == 3
        assert r.add_out_of_order(12, b"mn") == (0, 2)
        assert r.add_in_order(b"ABCDEFGH") == 8 + 9
        assert r.read() == b"ABCDEFGHIJKLMNOPQ"
        assert not r.has_ooo

    def test_in_order_data_overlapping_held_pieces(self) -> None:
        r = ReceiveBuffer(1000, 16)
        r.add_out_of_order(3, b"defg")
        assert r.add_in_order(b"abcdef") == 7  # 6 new in order, then "g" from the piece
        assert r.read() == b"abcdefg"

    def test_piece_bound(self) -> None:
        r = ReceiveBuffer(1000, 2)
        r.add_out_of_order(10, b"a")
        r.add_out_of_order(20, b"b")
        assert r.add_out_of_order(30, b"c") == (-1, 0)
        assert r.ooo_pieces == 2

    def test_random_reassembly_matches_the_stream(self) -> None:
        rng = random.Random(5)
        stream = rng.randbytes(20_000)
        r = ReceiveBuffer(1 << 20, 10_000)
        nxt = 0
        for _ in range(3000):
            start = rng.randrange(0, len(stream))
            end = min(len(stream), start + rng.randrange(1, 1500))
            if end <= nxt:
                continue
            start = max(start, nxt)
            if start == nxt:
                nxt += r.add_in_order(memoryview(stream[start:end]))
            else:
                r.add_out_of_order(start - nxt, stream[start:end])
        r.add_in_order(b"")
        assert r.read() == stream[:nxt]
