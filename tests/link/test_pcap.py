"""PcapWriter/PcapTap: files that scapy and tshark read back packet for packet."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.utils import rdpcap

from ustack.link.pair import LinkPair
from ustack.link.pcap import LINKTYPE_RAW, PcapTap, PcapWriter

from .packets import echo

REQUEST = echo("10.7.0.1", "10.7.0.2", ident=0x77, sequence=1, payload=b"hello")
REPLY = echo("10.7.0.2", "10.7.0.1", type=0, ident=0x77, sequence=1, payload=b"hello")


def capture_exchange(path: Path) -> None:
    """A requests, B answers; A's traffic goes through a tap into ``path``."""
    a, b = LinkPair.create()
    tap = PcapTap(a, PcapWriter(path))
    tap.write(REQUEST, now=0.0)
    assert b.read_batch(0.0, 8) == [REQUEST]
    b.write(REPLY, now=0.0)
    assert tap.read_batch(0.0, 8) == [REPLY]
    tap.close()
    b.close()


def test_scapy_reads_both_directions(tmp_path: Path) -> None:
    path = tmp_path / "tap.pcap"
    capture_exchange(path)
    packets = rdpcap(str(path))
    assert [bytes(p) for p in packets] == [REQUEST, REPLY]
    first, second = packets
    assert first.haslayer(IP) and first[IP].src == "10.7.0.1" and first[ICMP].type == 8
    assert second[IP].src == "10.7.0.2" and second[ICMP].type == 0
    assert bytes(second[ICMP].payload) == b"hello"


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_reads_both_directions(tmp_path: Path) -> None:
    path = tmp_path / "tap.pcap"
    capture_exchange(path)
    fields = ["-T", "fields", "-e", "ip.src", "-e", "ip.dst", "-e", "icmp.type", "-e", "icmp.seq"]
    result = subprocess.run(
        ["tshark", "-n", "-r", str(path), *fields],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert rows == [["10.7.0.1", "10.7.0.2", "8", "1"], ["10.7.0.2", "10.7.0.1", "0", "1"]]


def test_headers_timestamps_and_snaplen() -> None:
    out = io.BytesIO()
    writer = PcapWriter(out, snaplen=30)
    writer.write(REQUEST, timestamp=1_700_000_000.25)
    writer.write(b"\x45" * 20, timestamp=12.000001)
    writer.close()
    data = out.getvalue()
    assert struct.unpack_from("<IHHiIII", data) == (0xA1B2C3D4, 2, 4, 0, 0, 30, LINKTYPE_RAW)
    sec, usec, incl, orig = struct.unpack_from("<IIII", data, 24)
    assert (sec, usec, incl, orig) == (1_700_000_000, 250_000, 30, len(REQUEST))
    assert data[40:70] == REQUEST[:30]
    assert struct.unpack_from("<IIII", data, 70) == (12, 1, 20, 20)
    assert len(data) == 70 + 16 + 20
    assert not out.closed  # a file object we were given stays open


def test_buffer_is_bounded_and_flushed_on_close(tmp_path: Path) -> None:
    path = tmp_path / "buffered.pcap"
    writer = PcapWriter(path, buffer_size=200)
    writer.write(REQUEST)
    assert path.stat().st_size == 0  # still buffered
    for _ in range(5):
        writer.write(REQUEST)
    record = 16 + len(REQUEST)
    assert path.stat().st_size > 0 and len(writer._buffer) < 200
    assert path.stat().st_size + len(writer._buffer) == 24 + 6 * record
    writer.close()
    assert path.stat().st_size == 24 + 6 * record
    writer.write(REQUEST)  # after close: ignored, no error
    assert writer.closed and writer.packets == 6


def test_tap_is_transparent(tmp_path: Path) -> None:
    a, b = LinkPair.create(mtu=1400)
    tap = PcapTap(a, PcapWriter(tmp_path / "t.pcap"))
    assert tap.mtu == 1400 and tap.fileno() == a.fileno() and tap.next_deadline() is None
    tap.write_batch([REQUEST, REQUEST], now=0.0)
    assert tap.stats is a.stats and a.stats.tx_packets == 2
    assert len(b.read_batch(0.0, 8)) == 2
    tap.close()
    assert a.closed and tap.writer.closed
    b.close()
