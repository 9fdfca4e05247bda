"""Host-wide settings (per-connection TCP settings live in :mod:`ustack.tcp.config`)."""

from __future__ import annotations

from dataclasses import dataclass

from ustack.wire.ipv4 import DEFAULT_TTL

# RFC 6335 6: the Dynamic and/or Private Ports, which is also what connect() draws from.
EPHEMERAL_LOW = 49152
EPHEMERAL_HIGH = 65535
# RFC 1812 4.3.2.8 / RFC 1122 3.2.2: ICMP error messages must be rate limited. Linux's defaults
# are a token bucket of icmp_msgs_per_sec=1000 with icmp_msgs_burst=50.
ICMP_ERROR_RATE = 1000.0
ICMP_ERROR_BURST = 50
# Reassembly bounds (see ustack/stack/reassembly.py); the byte and per-source bounds are shared by
# IPv4 and IPv6, the timeout is per family. RFC 791 3.2 suggests an IPv4 reassembly
# timer of 15 s and RFC 1122 3.3.2 a fixed 60-120 s; Linux's ipfrag_time is 30 s, which we follow.
REASM_TIMEOUT = 30.0
# RFC 8200 4.5: an IPv6 packet not reassembled "within 60 seconds of the reception of the
# first-arriving fragment of that packet" is abandoned (Linux's ip6frag_time is 60 s too).
REASM_TIMEOUT6 = 60.0
# Memory charged to datagrams in reassembly, all sources together: Linux's ipfrag_high_thresh.
REASM_MAX_BYTES = 4 * 1024 * 1024
# Datagrams in reassembly per source address, so one source (or one spoofing a source) cannot
# take every slot; Linux bounds this with ipfrag_max_dist instead, we count datagrams.
REASM_MAX_PER_SOURCE = 64


@dataclass(slots=True)
class HostConfig:
    ephemeral_low: int = EPHEMERAL_LOW
    ephemeral_high: int = EPHEMERAL_HIGH
    ttl: int = DEFAULT_TTL
    icmp_error_rate: float = ICMP_ERROR_RATE  # tokens per second
    icmp_error_burst: int = ICMP_ERROR_BURST
    reasm_timeout: float = REASM_TIMEOUT  # seconds from a datagram's first fragment
    reasm_timeout6: float = REASM_TIMEOUT6  # the same for IPv6 packets
    reasm_max_bytes: int = REASM_MAX_BYTES  # data plus a fixed cost per piece and per datagram
    reasm_max_per_source: int = REASM_MAX_PER_SOURCE

    def __post_init__(self) -> None:
        if not 1 <= self.ephemeral_low <= self.ephemeral_high <= 65535:
            raise ValueError(f"bad ephemeral port range {self.ephemeral_low}-{self.ephemeral_high}")
        if not 1 <= self.ttl <= 255:
            raise ValueError(f"bad TTL {self.ttl}")
        if (
            not self.reasm_timeout > 0
            or not self.reasm_timeout6 > 0
            or self.reasm_max_bytes < 0
            or self.reasm_max_per_source < 1
        ):
            raise ValueError("bad reassembly bounds")
