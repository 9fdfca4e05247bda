"""Per-connection TCP settings.

One :class:`TcpConfig` is shared by every connection of a host (the host may copy and adjust it
per connection). Each default names the rule it comes from. Latency-sensitive defaults (the RTO
floor, the delayed-ACK timer) follow Linux rather than the RFC's WAN-oriented numbers, because a
TUN link is fast and a 1 s RTO floor would make every loss look like a stall; both are settings.
"""

from __future__ import annotations

from dataclasses import dataclass

# RFC 9293 3.7.1: a host that receives no MSS option assumes 536 (576 - 40).
DEFAULT_PEER_MSS = 536
ETHERNET_MSS = 1460  # 1500-byte MTU minus 40 bytes of IPv4 and TCP headers
# RFC 9293 3.8.6.3: ACK at least every second full-sized segment; the delay is below 0.5 s.
DELAYED_ACK = 0.040
# RFC 6298 (2.1): initial RTO of one second; (2.4) a maximum of at least 60 s may be placed.
RTO_INITIAL = 1.0
RTO_MAX = 60.0
# Linux's floor; RFC 6298 (2.4) says 1 s, which is tuned for the WAN.
RTO_MIN = 0.2
# RFC 6298 (2): G, the clock granularity the RTO computation adds as max(G, K*RTTVAR).
CLOCK_GRANULARITY = 0.001
# RFC 9293 3.8.3 (R2 for SYN) and Linux's tcp_syn_retries / tcp_synack_retries.
SYN_RETRIES = 6
SYNACK_RETRIES = 5
# Linux's tcp_retries2: R2 for data segments (RFC 9293 3.8.3 asks for at least 100 s).
DATA_RETRIES = 15
# RFC 9293 3.3.2: MSL is 2 minutes in the RFC; Linux's TIME-WAIT is 60 s, i.e. MSL = 30 s.
MSL = 30.0
# Linux's tcp_fin_timeout for orphaned connections in FIN-WAIT-2.
FIN_WAIT2_TIMEOUT = 60.0
# RFC 1122 4.2.3.6: keep-alives off by default, idle interval no less than two hours.
KEEPALIVE_IDLE = 7200.0
KEEPALIVE_INTERVAL = 75.0
KEEPALIVE_COUNT = 9
# RFC 5961 7: challenge ACKs are rate limited; Linux allows a small budget per second.
CHALLENGE_ACK_LIMIT = 10
CHALLENGE_ACK_WINDOW = 1.0
SYN_COOKIE_MODES = ("auto", "always", "never")  # TcpConfig.syn_cookies


@dataclass(slots=True)
class TcpConfig:
    # The MSS we advertise. 0 means "what the link carries": the host uses its MTU minus 40
    # (RFC 9293 3.7.1); a non-zero value caps that. A Connection made without a host and with
    # 0 here advertises ETHERNET_MSS.
    mss: int = 0
    # The send buffer holds unacknowledged bytes too, so it must exceed the largest flight
    # (the peer's window) by enough to keep the window full while the application refills it;
    # bytes are only held when written, so a large limit costs nothing until used.
    send_buffer: int = 1024 * 1024
    recv_buffer: int = 256 * 1024  # the largest receive window we will advertise
    send_low_water: int = 512 * 1024  # WriteSpace fires when queued bytes fall below this
    window_scale: bool = True  # offer RFC 7323 window scaling on active open
    nagle: bool = True  # RFC 9293 3.7.4; per connection via set_nodelay()
    delayed_ack: float = DELAYED_ACK
    rto_initial: float = RTO_INITIAL
    rto_min: float = RTO_MIN
    rto_max: float = RTO_MAX
    clock_granularity: float = CLOCK_GRANULARITY
    syn_retries: int = SYN_RETRIES
    synack_retries: int = SYNACK_RETRIES
    data_retries: int = DATA_RETRIES
    user_timeout: float | None = None  # RFC 9293 3.10.1 USER TIMEOUT; None = only data_retries
    msl: float = MSL
    fin_wait2_timeout: float = FIN_WAIT2_TIMEOUT
    keepalive: bool = False
    keepalive_idle: float = KEEPALIVE_IDLE
    keepalive_interval: float = KEEPALIVE_INTERVAL
    keepalive_count: int = KEEPALIVE_COUNT
    challenge_ack_limit: int = CHALLENGE_ACK_LIMIT
    challenge_ack_window: float = CHALLENGE_ACK_WINDOW
    persist_min: float = RTO_MIN  # first zero-window probe interval floor
    persist_max: float = RTO_MAX  # the probe interval backs off up to this
    congestion: str = "cubic"  # RFC 9438; any name from ustack.tcp.congestion.available()
    hystart: bool = True  # RFC 9406 HyStart++ slow start (ignored by controllers without it)
    sack: bool = True  # RFC 2018 SACK (and RFC 2883 D-SACK), offered and accepted
    timestamps: bool = True  # RFC 7323 timestamps (RTTM and PAWS), offered and accepted
    rack: bool = True  # RFC 8985 RACK time-based loss detection (needs SACK); off: DupThresh
    tlp: bool = True  # RFC 8985 tail loss probe (needs SACK)
    max_ooo_segments: int = 256  # out-of-order chunks held; the window bounds the bytes
    # Header prediction: ESTABLISHED's common segments (a pure ACK of new data, the next
    # in-order data) skip the general RFC 9293 3.10.7.4 dispatch; same effect, less work.
    header_prediction: bool = True
    # TSO: the largest payload of one segment handed to a link that cuts it into MSS-sized
    # packets itself (a TUN device with offloads); 0 = every segment is at most one MSS. The
    # host sets it; the scoreboard keeps such a segment as one record and splits it as needed.
    tso_max: int = 0
    initial_window: int | None = None  # bytes; None = RFC 6928 min(10*MSS, max(2*MSS, 14600))
    # RFC 4987 3.6 SYN cookies, per listener: "auto" answers with a cookie only while the
    # listener's SYN-RECEIVED queue is full (Linux's tcp_syncookies=1), "always" answers every
    # SYN with one and keeps no state (=2), "never" drops the SYN when the queue is full.
    syn_cookies: str = "auto"

    def __post_init__(self) -> None:
        if self.syn_cookies not in SYN_COOKIE_MODES:
            raise ValueError(
                f"syn_cookies must be one of {', '.join(SYN_COOKIE_MODES)}, "
                f"not {self.syn_cookies!r}"
            )
