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


class TestOutOfOrderRanges:
    """The merged ranges SACK blocks are read from always match the pieces held."""

    @staticmethod
    def merged(buf: ReceiveBuffer) -> list[list[int]]:
        out: list[list[int]] = []
        for start, piece in buf._ooo:
            end = start + len(piece)
            if out and out[-1][1] == start:
                out[-1][1] = end
            else:
                out.append([start, end])
        return out

    def test_ranges_follow_every_insert_and_drain(self) -> None:
        rng = random.Random(3)
        stream = bytes(rng.randrange(256) for _ in range(20_000))
        for _ in range(20):
            buf = ReceiveBuffer(1 << 20, 10_000)
            nxt = 0
            for _ in range(300):
                start = nxt + rng.randrange(0, 4000)
                end = min(start + rng.randrange(1, 1500), len(stream))
                if start >= end:
                    continue
                if start == nxt:
                    nxt += buf.add_in_order(memoryview(stream)[start:end])
                else:
                    buf.add_out_of_order(start - nxt, memoryview(stream)[start:end])
                assert buf.ooo_ranges() == self.merged(buf)
                for a, b in buf.ooo_ranges():
                    assert buf.ooo_range_at(a) == [a, b] and buf.ooo_range_at(b - 1) == [a, b]
                    assert buf.ooo_range_at(b) != [a, b]
            assert buf.read() == stream[:nxt]

    def test_last_dup_names_the_first_duplicate_range(self) -> None:
        buf = ReceiveBuffer(1 << 20, 100)
        buf.add_out_of_order(100, b"x" * 100)  # [100, 200)
        assert buf.last_dup is None
        buf.add_out_of_order(150, b"y" * 100)  # [150, 250): 150..200 is a duplicate
        assert buf.last_dup == (150, 200)
        assert buf.ooo_ranges() == [[100, 250]]
