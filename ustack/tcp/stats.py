"""Every counter in the stack, in one dataclass.

One :class:`Stats` is shared by a host and all its connections. Each decision that drops,
answers or retransmits something bumps exactly one plain ``int`` field (``stats.x += 1`` on the
hot path), and log lines use the same names. Tests assert the whole set with :meth:`nonzero`.

The TCP machine's counters come first; the host (``ustack/stack``) appends its own block below.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(slots=True)
class Stats:
    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def nonzero(self) -> dict[str, int]:
        return {k: v for k, v in self.as_dict().items() if v}

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, 0)

    # --- TCP connection machine (ustack/tcp) ---
    # lifecycle
    tcp_active_opens: int = 0
    tcp_passive_opens: int = 0
    tcp_established: int = 0
    tcp_closed: int = 0
    tcp_aborts: int = 0  # abort() by the application (RST sent when synchronized)
    tcp_close_unread_rst: int = 0  # close() with unread data -> RST (RFC 2525 2.17)
    tcp_resets_received: int = 0  # an acceptable RST tore the connection down
    tcp_refused: int = 0  # RST answered our SYN
    tcp_synrcvd_back_to_listen: int = 0  # RST in SYN-RECEIVED of a passive open
    tcp_time_wait_expired: int = 0
    tcp_time_wait_restarted: int = 0  # retransmitted FIN in TIME-WAIT re-ACKed
    tcp_timeout_syn: int = 0
    tcp_timeout_synack: int = 0
    tcp_timeout_retransmit: int = 0
    tcp_timeout_user: int = 0
    tcp_timeout_keepalive: int = 0
    tcp_timeout_fin_wait2: int = 0
    # segments in/out
    tcp_segments_received: int = 0
    tcp_segments_sent: int = 0
    tcp_data_segments_sent: int = 0
    tcp_bytes_sent: int = 0  # new payload bytes, not counting retransmissions
    tcp_bytes_received: int = 0  # in-order payload bytes made readable
    tcp_acks_sent: int = 0  # segments with no payload and no SYN/FIN/RST
    tcp_fast_path_acks: int = 0  # pure ACKs of new data taken by header prediction
    tcp_fast_path_data: int = 0  # in-order data segments taken by header prediction
    tcp_delayed_acks: int = 0  # ACKs sent by the delayed-ACK timer
    tcp_quick_acks: int = 0  # immediate ACKs for out-of-order data or filling a hole
    tcp_window_updates: int = 0  # ACKs sent because the receive window opened
    tcp_rsts_sent: int = 0
    tcp_timeout_rsts: int = 0  # RST sent because a synchronized connection gave up (ABORT)
    tcp_challenge_acks: int = 0  # RFC 5961
    tcp_challenge_acks_suppressed: int = 0  # over the RFC 5961 7 rate limit
    # retransmission and congestion control
    tcp_rto_expired: int = 0
    tcp_retransmits: int = 0  # segments sent again (any cause)
    tcp_retransmitted_bytes: int = 0
    tcp_syn_retransmits: int = 0
    tcp_synack_retransmits: int = 0
    tcp_fin_retransmits: int = 0
    tcp_fast_retransmits: int = 0  # segments resent because ACKs showed them lost (not a timer)
    tcp_partial_ack_retransmits: int = 0  # RFC 6582 3.2 step 5 (a peer without SACK)
    tcp_recoveries: int = 0  # fast/SACK recovery entered (RFC 6675 5)
    tcp_recoveries_completed: int = 0  # an ACK beyond the recovery point ended it
    tcp_dup_acks: int = 0  # RFC 5681 2 duplicate ACKs received
    tcp_rescue_retransmits: int = 0  # RFC 6675 NextSeg rule 4
    tcp_lost_retransmits: int = 0  # a retransmission presumed lost again (RACK)
    tcp_tlp_probes: int = 0  # RFC 8985 7 tail loss probes sent
    tcp_tlp_recoveries: int = 0  # a probe repaired a loss (congestion response taken)
    tcp_tlp_spurious: int = 0  # a probe D-SACKed: nothing had been lost
    tcp_reordering_seen: int = 0  # RACK saw reordering for the first time (per connection)
    tcp_dsack_received: int = 0  # RFC 2883 D-SACK blocks received
    tcp_dsack_sent: int = 0  # D-SACK blocks queued for our next ACK
    tcp_undo_dsack: int = 0  # a congestion response undone: every retransmission D-SACKed
    tcp_undo_timestamps: int = 0  # undone by RFC 3522 Eifel detection (timestamps)
    tcp_sack_reneging: int = 0  # an ACK stopped at data the peer had SACKed (RFC 2018 8)
    tcp_sack_invalid: int = 0  # SACK blocks outside what was sent, ignored
    tcp_rtt_samples: int = 0
    tcp_window_probes: int = 0  # zero-window probes (RFC 9293 3.8.6.1)
    tcp_keepalive_probes: int = 0
    # received data
    tcp_ooo_queued: int = 0  # out-of-order segments held for reassembly
    tcp_ooo_dropped: int = 0  # out-of-order segment not held (queue bound)
    tcp_dup_segments: int = 0  # payload entirely old (already received)
    tcp_dup_bytes_trimmed: int = 0  # old bytes trimmed from a segment's front
    tcp_window_trimmed_bytes: int = 0  # bytes beyond the receive window cut off
    tcp_urgent_received: int = 0  # segments with URG; data delivered inline (RFC 6093)
    # drops (each with its reason)
    tcp_drop_closed: int = 0  # segment reached a CLOSED connection
    tcp_drop_listen_rst: int = 0  # RST in LISTEN is ignored
    tcp_drop_listen_ack: int = 0  # ACK in LISTEN answered with RST
    tcp_drop_listen_no_syn: int = 0  # neither SYN, RST nor ACK in LISTEN
    tcp_drop_syn_sent_bad_ack: int = 0  # unacceptable ACK in SYN-SENT (RST sent unless RST)
    tcp_drop_syn_sent_rst_no_ack: int = 0  # RST in SYN-SENT without an acceptable ACK
    tcp_drop_syn_sent_no_syn: int = 0  # neither SYN nor RST in SYN-SENT
    tcp_drop_synrcvd_bad_ack: int = 0  # unacceptable ACK in SYN-RECEIVED -> RST
    tcp_drop_out_of_window: int = 0  # unacceptable segment (RFC 9293 3.10.7.4 first check)
    tcp_drop_paws: int = 0  # RFC 7323 5.3 R1: TSval older than TS.Recent (ACK sent)
    tcp_paws_idle_reset: int = 0  # RFC 7323 5.5: TS.Recent older than 24 days, not trusted
    tcp_drop_no_timestamp: int = 0  # RFC 7323 3.2: no TSopt on a connection that uses them
    tcp_drop_rst_out_of_window: int = 0  # RST outside the window (RFC 5961 3.2)
    tcp_drop_rst_time_wait: int = 0  # RST in TIME-WAIT ignored (RFC 1337)
    tcp_drop_syn_synchronized: int = 0  # SYN in a synchronized state (challenge ACK)
    tcp_drop_no_ack: int = 0  # segment without ACK in a synchronized state
    tcp_drop_ack_old: int = 0  # ACK below SND.UNA - MAX.SND.WND (RFC 5961 5.2)
    tcp_drop_ack_unsent: int = 0  # ACK of data never sent (ACK sent and segment dropped)
    tcp_drop_data_after_fin: int = 0  # payload after the peer's FIN
    tcp_rst_data_after_close: int = 0  # data for an orphaned connection -> RST (as Linux)
    tcp_drop_unexpected: int = 0  # the machine's `case _:`
    # ICMP errors about our segments, validated by the host (RFC 5927, RFC 1122 4.2.3.9)
    tcp_icmp_refused: int = 0  # port/protocol unreachable aborted a connection in SYN-SENT
    tcp_icmp_synrcvd_dropped: int = 0  # hard error dropped a listener's half-open connection
    tcp_icmp_soft_errors: int = 0  # remembered; reported only if the connection times out
    tcp_pmtu_lowered: int = 0  # RFC 1191 6.1: a smaller path MTU lowered the send MSS
    tcp_pmtu_not_lower: int = 0  # RFC 1191 6.1: next-hop MTU not below the path MTU, ignored
    tcp_pmtu_clamped: int = 0  # next-hop MTU below 576 raised to it (MSS 536)
    tcp_pmtu_retransmits: int = 0  # sent segments (a super-segment once) too big, to go again

    # --- host (ustack/stack): IPv4, ICMP, demux and listeners; appended by the host, one
    # counter per decision the host takes before (or instead of) handing a segment to a
    # connection ---
    ip_rx: int = 0  # datagrams handed to receive_packet
    ip_tx: int = 0  # datagrams returned by packets_to_send
    offload_malformed: int = 0  # offload on, but no whole virtio-net header in front
    offload_rx_super: int = 0  # coalesced TCP super-segments taken in (the kernel's GRO/TSO)
    offload_rx_csum_trusted: int = 0  # checksum left unverified: the kernel vouched for it
    offload_tx_super: int = 0  # TCP super-segments handed to the kernel to cut (TSO)
    ip_bad_checksum: int = 0
    ip_truncated: int = 0
    ip_bad_version: int = 0
    ip_bad_ihl: int = 0
    ip_bad_total_length: int = 0
    ip_malformed: int = 0  # any other IPv4 parse error
    ip_not_for_us: int = 0  # destination is none of our addresses
    # zero, broadcast, multicast or loopback source (RFC 1122 3.2.1.3), or one of our own
    ip_bad_source: int = 0
    # IPv4 reassembly (ustack/stack/reassembly.py): each fragment is counted once in
    # ip_reasm_fragments and, if not held, once more by the reason it was dropped
    ip_reasm_fragments: int = 0  # fragments that reached reassembly
    ip_reasm_ok: int = 0  # datagrams reassembled and passed on as if they had arrived whole
    ip_reasm_timeout: int = 0  # datagram incomplete after HostConfig.reasm_timeout, discarded
    ip_reasm_overlap: int = 0  # fragment overlapping another or moving the end: datagram dropped
    ip_reasm_discarded: int = 0  # fragment of a datagram already dropped, until it times out
    ip_reasm_duplicate: int = 0  # exact copy of a fragment already held, dropped alone
    ip_reasm_bad_length: int = 0  # empty fragment, or a non-final one not a multiple of 8
    ip_reasm_too_long: int = 0  # would reassemble to over 65,535 octets: datagram dropped
    ip_reasm_evicted: int = 0  # oldest datagram dropped to stay under reasm_max_bytes
    ip_reasm_per_source_limit: int = 0  # a source's oldest datagram dropped for its newest
    # IPv6 reassembly (same module, same bounds; per family as Linux's Ip6Reasm* in snmp6): the
    # same meanings as the ip_reasm_* above, plus RFC 6946 atomic fragments and RFC 7112
    ip6_reasm_fragments: int = 0  # fragments that reached reassembly (atomic ones not counted)
    ip6_reasm_ok: int = 0  # packets reassembled and passed on to be parsed from the top
    ip6_reasm_timeout: int = 0  # incomplete after HostConfig.reasm_timeout6 (RFC 8200 4.5: 60 s)
    ip6_reasm_overlap: int = 0  # overlap or a moved end: packet dropped silently (RFC 5722)
    ip6_reasm_discarded: int = 0  # fragment of a packet already dropped, until it times out
    ip6_reasm_duplicate: int = 0  # exact copy of a fragment already held, dropped alone
    ip6_reasm_bad_length: int = 0  # empty, or M set and not a multiple of 8 (Parameter Problem)
    ip6_reasm_too_long: int = 0  # reassembled Payload Length over 65,535: packet dropped
    ip6_reasm_evicted: int = 0  # oldest packet dropped to stay under reasm_max_bytes
    ip6_reasm_per_source_limit: int = 0  # a source's oldest packet dropped for its newest
    ip6_reasm_incomplete_chain: int = 0  # first fragment without the whole header chain (RFC 7112)
    ip6_reasm_atomic: int = 0  # atomic fragment (offset 0, M clear) taken alone (RFC 6946)
    ip_unknown_protocol: int = 0  # answered with ICMP protocol unreachable (rate limited)
    icmp_rx: int = 0
    icmp_bad_checksum: int = 0
    icmp_truncated: int = 0
    icmp_malformed: int = 0  # any other ICMP parse error
    icmp_ignored: int = 0  # a valid message of a type the host does not act on
    icmp_echo_replies: int = 0  # echo request answered
    ip_frag_created: int = 0  # fragments sent: echo replies to requests that came in fragments
    icmp_unreach_sent: int = 0  # protocol unreachable sent
    icmp_time_exceeded_sent: int = 0  # fragment reassembly time exceeded (RFC 792 code 1)
    icmp_rate_limited: int = 0  # an ICMP error not sent because of the rate limit
    # an ICMP or ICMPv6 error not sent because the packet it was about is itself an ICMP error
    # (RFC 1122 3.2.2, RFC 4443 2.4 (e.1)) or an ICMPv6 Redirect (2.4 (e.2))
    icmp_error_about_error: int = 0
    # ICMP errors received, routed to the connection they quote (ustack/stack/icmp_errors.py)
    icmp_source_quench: int = 0  # ignored (RFC 6633 deprecates source quench)
    icmp_quote_malformed: int = 0  # quoted datagram truncated or unparseable
    icmp_quote_not_ours: int = 0  # quoted source is none of our addresses: not ours
    icmp_quote_not_tcp: int = 0  # quoted protocol is not TCP (ustack sends nothing else)
    icmp_error_no_connection: int = 0  # RFC 5927 4.1: no connection on the quoted 4-tuple
    icmp_error_out_of_window: int = 0  # RFC 5927 4.1: quoted SEQ not in SND.UNA..SND.NXT
    icmp_error_time_wait: int = 0  # about a TIME-WAIT connection: nothing left to tell
    icmp_error_delivered: int = 0  # unreachable, time exceeded or parameter problem taken
    icmp_frag_needed: int = 0  # RFC 1191 fragmentation needed taken by a connection
    icmp_frag_needed_plateau: int = 0  # next-hop MTU 0: RFC 1191 7 plateau used instead
    # IPv6 (RFC 8200) and ICMPv6 (RFC 4443) input and output (ustack/stack/network.py); the
    # datagram totals are ip_rx/ip_tx above, for both families
    ip6_rx: int = 0  # IPv6 packets that reached the IPv6 parse
    ip6_truncated: int = 0
    ip6_bad_version: int = 0
    ip6_ext_header_malformed: int = 0  # extension header truncated, too long, too many of them
    ip6_option_dropped: int = 0  # an option that drops the packet (bad padding, unknown 01)
    ip6_routing_dropped: int = 0  # Segments Left > 0, routing type 0 included (RFC 5095)
    ip6_jumbogram: int = 0  # RFC 2675 jumbogram or Jumbo option: never on TUN, dropped
    ip6_malformed: int = 0  # any other IPv6 parse error
    ip6_not_for_us: int = 0  # destination is none of our IPv6 addresses
    # unspecified, multicast or loopback source (RFC 4291 2.5.2, 2.7), or one of our own
    ip6_bad_source: int = 0
    ip6_no_next_header: int = 0  # Next Header 59: nothing to deliver (RFC 8200 4.7)
    ip6_unknown_next_header: int = 0  # answered with Parameter Problem code 1 (rate limited)
    ip6_reasm_nested: int = 0  # a reassembled packet still a fragment after the nesting bound
    icmp6_rx: int = 0
    icmp6_bad_checksum: int = 0
    icmp6_truncated: int = 0
    icmp6_malformed: int = 0  # any other ICMPv6 parse error
    icmp6_nd_ignored: int = 0  # ND, MLD, router messages: no ND on a layer-3 TUN link (RFC 4861)
    icmp6_ignored: int = 0  # a valid message of a type the host does not act on
    icmp6_echo_replies: int = 0  # echo request answered (RFC 4443 4.2)
    ip6_frag_created: int = 0  # fragments sent (RFC 8200 4.5): echo replies, as for IPv4
    icmp6_param_problem_sent: int = 0  # Parameter Problem sent (RFC 4443 3.4)
    icmp6_time_exceeded_sent: int = 0  # fragment reassembly time exceeded (RFC 8200 4.5)
    icmp6_quote_malformed: int = 0  # quoted packet truncated, not first fragment, unparseable
    icmp6_quote_not_ours: int = 0  # quoted source is none of our addresses
    icmp6_quote_not_tcp: int = 0  # quoted upper layer is not TCP
    icmp6_error_delivered: int = 0  # unreachable, time exceeded or parameter problem taken
    icmp6_packet_too_big: int = 0  # RFC 8201 Packet Too Big taken by a connection
    icmp6_packet_too_big_clamped: int = 0  # MTU below 1280 raised to it (RFC 8201 4)
    tcp_rx: int = 0  # segments that reached TCP parsing
    tcp_truncated: int = 0
    tcp_bad_data_offset: int = 0
    tcp_bad_checksum: int = 0
    tcp_bad_flags: int = 0  # impossible SYN/FIN/RST combination
    tcp_bad_options: int = 0  # malformed option list
    tcp_malformed: int = 0  # any other TCP parse error
    tcp_bad_port: int = 0  # source or destination port 0
    tcp_demuxed: int = 0  # segments handed to an existing connection
    rst_sent_closed_port: int = 0  # RFC 9293 3.10.7.1 reply for a segment to no connection
    rst_closed_port_ignored: int = 0  # a RST to no connection is never answered
    listen_syn: int = 0  # SYN to a listener that created a SYN-RECEIVED connection
    # SYN dropped: SYN-RECEIVED queue full and no cookie sent (syn_cookies="never", or no key)
    listen_syn_queue_overflow: int = 0
    syncookies_sent: int = 0  # SYN answered with a SYN cookie SYN,ACK, no state kept (RFC 4987)
    syncookies_accepted: int = 0  # ACK returned a valid cookie: connection made in ESTABLISHED
    syncookies_failed: int = 0  # ACK to a listener using cookies, cookie invalid -> RST
    listen_accept_queue_overflow: int = 0  # handshake ACK dropped: accept queue full
    listen_rst_for_ack: int = 0  # ACK to a listener without a connection -> RST (3.10.7.2)
    listen_drop_rst: int = 0  # RST to a listener without a connection is ignored
    listen_drop_no_syn: int = 0  # neither SYN, ACK nor RST to a listener
    # segment to a listener's port of the family it does not take (start_server(host=
    # "0.0.0.0") and an IPv6 SYN): answered as a closed port (RFC 9293 3.10.7.1)
    listen_wrong_family: int = 0
    listen_queued: int = 0  # connection entered a listener's accept queue
    listen_accepted: int = 0  # connection popped by Listener.accept()
    listen_close_reset: int = 0  # unaccepted connection reset by Listener.close()
    time_wait_reused: int = 0  # new SYN above RCV.NXT replaced a TIME-WAIT connection
    host_internal_error: int = 0  # a bug caught by receive_packet's last-resort handler
    # --- forward mode (ustack/stack, for ``ustack forward``): the host terminates traffic to
    # any unicast destination; see IpLayer.enable_forwarding and TcpDemux.listen_transparent
    forward_syn_requested: int = 0  # SYN to a foreign address reported as ConnectionRequested
    forward_syn_pending_dropped: int = 0  # SYN again while its request is unanswered
    forward_request_overflow: int = 0  # SYN dropped: too many requests unanswered
    forward_request_answered: int = 0  # request answered: SYN,ACK sent (the relay connected)
    forward_request_refused: int = 0  # request refused: RST sent (the relay could not connect)
    forward_request_stale: int = 0  # answer() or refuse() for a request that is not pending
    forward_handshake_reset: int = 0  # RST in SYN-RECEIVED of an answered request
    forward_udp_delivered: int = 0  # datagram to a foreign address handed to the relay
    forward_udp_queue_full: int = 0  # datagram dropped: the relay's queue is full
    forward_udp_sent: int = 0  # datagram the relay sent back in
    forward_udp_too_big: int = 0  # reply longer than the link's MTU: not sent (no fragmenting)
    udp_rx: int = 0  # UDP datagrams received (parsed and checked)
    udp_truncated: int = 0
    udp_bad_length: int = 0  # Length field shorter than the header or beyond the IP payload
    udp_bad_checksum: int = 0
    udp_zero_checksum_ipv6: int = 0  # RFC 8200 8.1: a zero checksum is invalid over IPv6
    udp_bad_port: int = 0  # source or destination port 0
    # --- live ladders and trace clients of a daemon (ustack/live.py, ustack/control.py):
    # counted by the observers ``ustack serve`` attaches, not by the host ---
    ladder_untracked: int = 0  # opening SYN not drawn: max_connections already tracked
    ladder_rows_elided: int = 0  # rows left out of a printed ladder (its max_rows bound)
    ladder_abandoned: int = 0  # a SYN that led to no connection and no reply: record freed
    trace_lines_dropped: int = 0  # trace/ladder line not sent: that client's buffer was full
    control_refused_peer: int = 0  # control client neither root nor serve's own uid (SO_PEERCRED)
    control_refused_busy: int = 0  # control client refused: MAX_CLIENTS already attached
    control_bad_request: int = 0  # control client's request unreadable, too long or too late
    # --- Ethernet and ARP (ustack/stack/arp.py, owned by the TAP link and shared with the
    # host's Stats once a stack starts on it): frames in and out, and the neighbour cache ---
    eth_rx: int = 0  # frames handed to the layer
    eth_truncated: int = 0  # shorter than the 14-octet header
    eth_not_ethernet_ii: int = 0  # type field below 0x0600: an IEEE 802.3 length (LLC, STP)
    eth_not_for_us: int = 0  # destination neither our MAC nor broadcast (no multicast joined)
    eth_bad_source: int = 0  # source a group address, or our own MAC (a loop)
    eth_ipv6_unsupported: int = 0  # IPv6 frame: no Neighbour Discovery, TAP is IPv4-only
    eth_unknown_type: int = 0  # any other EtherType (VLAN tags included)
    eth_tx_ipv6_unsupported: int = 0  # IPv6 packet to send on an IPv4-only TAP link
    eth_tx_malformed: int = 0  # outgoing packet too short to name its destination
    eth_tx_no_route: int = 0  # destination off the subnet and no gateway
    arp_rx: int = 0  # ARP packets received (before parsing)
    arp_truncated: int = 0  # shorter than 28 octets
    arp_unsupported_hardware: int = 0  # ar$hrd not Ethernet (RFC 826)
    arp_unsupported_protocol: int = 0  # ar$pro not IPv4
    arp_bad_address_length: int = 0  # ar$hln not 6 or ar$pln not 4
    arp_bad_op: int = 0  # neither request nor reply
    arp_malformed: int = 0  # any other ARP parse error
    arp_bad_sender: int = 0  # sender MAC a group/zero address, or sender IP not a host's
    arp_conflict: int = 0  # another interface claims our address (RFC 5227 2.4): not learned
    arp_merged: int = 0  # RFC 826 merge: the sender's entry updated
    arp_learned: int = 0  # RFC 826: we are the target, sender added to the cache
    arp_other_target: int = 0  # for another address: merged only, never answered
    arp_requests_answered: int = 0  # request for our address answered with a reply
    arp_probes_answered: int = 0  # RFC 5227 probe (sender 0.0.0.0) for our address answered
    arp_replies_received: int = 0  # reply addressed to us
    arp_announcements_sent: int = 0  # RFC 5227 2.3 gratuitous ARP at start
    arp_requests_sent: int = 0  # broadcast request to resolve a next hop (first one)
    arp_request_retransmits: int = 0  # the same request again after retrans_time
    arp_resolution_failed: int = 0  # no reply after max_requests: entry removed
    arp_unresolved_dropped: int = 0  # packets that waited for a resolution that failed
    arp_queued: int = 0  # packets held for an address being resolved
    arp_queue_sent: int = 0  # held packets sent once the address was resolved
    arp_queue_overflow: int = 0  # an address's oldest held packet dropped for its newest
    arp_queue_total_full: int = 0  # packet dropped: every queue together holds queue_total
    arp_cache_full: int = 0  # packet dropped: every cache entry is still being resolved
    arp_evicted: int = 0  # oldest resolved entry removed to make room
    arp_reachable_expired: int = 0  # REACHABLE entry older than reachable_time: now STALE
    arp_probes_sent: int = 0  # unicast request confirming a STALE neighbour (RFC 4861 7.3.3)
    arp_probe_failed: int = 0  # probes unanswered: entry removed
    arp_stale_forgotten: int = 0  # STALE entry unused for stale_time: resolved afresh
    # IPv6 over TAP: Neighbor Discovery's address resolution (RFC 4861 7.2) in the same cache,
    # whose arp_queue*/arp_resolution_failed/arp_probe* counters (and arp_requests_sent and
    # arp_request_retransmits, for Neighbor Solicitations) count both families
    nd_rx: int = 0  # NS and NA received (before validation)
    nd_truncated: int = 0  # shorter than 24 octets
    nd_bad_hop_limit: int = 0  # RFC 4861 7.1: not 255, so not from this link
    nd_bad_checksum: int = 0
    nd_bad_code: int = 0
    nd_multicast_target: int = 0
    nd_bad_option: int = 0  # an option of length 0 or running past the message
    nd_bad_dad: int = 0  # NS from :: not to the solicited-node group, or with a source address
    nd_solicited_to_multicast: int = 0  # NA with S set sent to a multicast address
    nd_malformed: int = 0  # any other ND or IPv6 parse error
    nd_ns_other_target: int = 0  # NS for another address
    nd_ns_answered: int = 0  # NS for our address answered with a solicited NA
    nd_dad_answered: int = 0  # DAD probe for our address: NA to all-nodes (RFC 4862 5.4.3)
    nd_learned: int = 0  # NS source added to the cache, STALE (RFC 4861 7.2.3)
    nd_merged: int = 0  # NS source's entry updated
    nd_na_received: int = 0  # NA for an entry we hold: taken
    nd_na_unsolicited: int = 0  # NA for no entry: discarded (RFC 4861 7.2.5)
    nd_na_no_lladdr: int = 0  # NA without a link-layer address for an INCOMPLETE entry
    nd_na_ignored: int = 0  # NA with Override clear and another address: ours kept
    nd_conflict: int = 0  # NA advertising our own address (RFC 4862 5.4.4)
