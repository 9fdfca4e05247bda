"""ICMP errors about our own segments: which ones the host believes, and RFC 1191's plateaus.

Theory of operation. An ICMP error (destination unreachable, time exceeded, parameter problem)
quotes the IP header and the first 8 octets of the datagram it is about (RFC 792), which for
TCP are the ports and the sequence number. The host routes such an error to the connection the
quote names -- quoted destination and port are the remote end, quoted source and port ours --
after the checks here and in two layers: the network layer (``IpLayer._receive_icmp_error``)
makes sure the quote is of a TCP segment *we* sent (its source one of our addresses) and hands
the TCP layer the type, code, MTU, quoted 4-tuple and quoted sequence number; the demux
(``TcpDemux.icmp_error``) makes sure the connection exists and that RFC 5927 4.1's check
passes -- the quoted sequence number lies in SND.UNA =< SEG.SEQ < SND.NXT, so a blind
attacker has to guess a sequence number in the send window to be believed. Every message that
fails a check is dropped with a counter of its own. The connection then decides what the error
means (``Connection.icmp_error``): a smaller path MTU, a hard error that aborts an opening
connection, or a soft error it remembers.

RFC 1191 4 routers say the next-hop MTU in "fragmentation needed"; older ones put 0 there, and
then RFC 1191 5 guesses from the quoted datagram's total length: the next plateau of its
section 7 table below it.
"""

from __future__ import annotations

from typing import Final

from ustack.tcp.connection import Connection
from ustack.wire import icmp
from ustack.wire import seq as sq

# The ICMP types that report a problem with a datagram we sent and are routed to a connection
# (source quench is an error too, but RFC 6633 says to ignore it).
ERROR_TYPES: Final = frozenset({icmp.DEST_UNREACH, icmp.TIME_EXCEEDED, icmp.PARAM_PROBLEM})

# RFC 1191 7, table 7-1: the MTU plateaus, largest first (68 is IPv4's minimum, RFC 791).
PLATEAUS: Final = (65535, 32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68)


def plateau_below(total_length: int) -> int:
    """RFC 1191 5: "the largest plateau value that is less than the returned Total Length"
    (68 if none is)."""
    for mtu in PLATEAUS:
        if mtu < total_length:
            return mtu
    return PLATEAUS[-1]


def sequence_acceptable(conn: Connection, seg_seq: int) -> bool:
    """RFC 5927 4.1: SND.UNA =< SEG.SEQ < SND.NXT for the quoted sequence number (in SYN-SENT
    that is SEG.SEQ = ISS: our SYN is the only segment sent)."""
    return sq.le(conn.snd_una, seg_seq) and sq.lt(seg_seq, conn.snd_nxt)
