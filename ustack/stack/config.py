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


@dataclass(slots=True)
class HostConfig:
    ephemeral_low: int = EPHEMERAL_LOW
    ephemeral_high: int = EPHEMERAL_HIGH
    ttl: int = DEFAULT_TTL
    icmp_error_rate: float = ICMP_ERROR_RATE  # tokens per second
    icmp_error_burst: int = ICMP_ERROR_BURST

    def __post_init__(self) -> None:
        if not 1 <= self.ephemeral_low <= self.ephemeral_high <= 65535:
            raise ValueError(f"bad ephemeral port range {self.ephemeral_low}-{self.ephemeral_high}")
        if not 1 <= self.ttl <= 255:
            raise ValueError(f"bad TTL {self.ttl}")
