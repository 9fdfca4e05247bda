"""A Linux TAP device as a link: whole Ethernet frames on the fd.

``TapLink.open()`` creates a TAP interface (``IFF_TAP | IFF_NO_PI``: every read and write is one
Ethernet II frame without its FCS, and no packet-information prefix) with pytun-pmd3 and
configures the kernel's side over netlink with pyroute2, as ``TunLink.open`` does: MTU, the
kernel's address and prefix, link up. ustack is to be the host at ``peer`` on that Ethernet
segment, with its own MAC address (``mac``; by default a random locally administered one).

This link moves frames and nothing else, like every link (it knows no protocol above it). The
Ethernet/ARP layer (``ustack.stack.arp``, sans-IO) turns frames into IP packets and back, and
``ustack.aio.ethernet.EthernetLink`` puts it between this link and the driver, so that the host
and the driver stay as they are over TUN; ``Stack.tap(...)`` builds both. Reads, writes and the
detection of a device that disappeared are TunLink's (the same tun driver answers).

IPv6 (``address6="fd00:7::1/64"``, ``peer6="fd00:7::2"``, checked as for TUN): the kernel's
address is added without DAD (``IFA_F_NODAD``; ustack is the only other node and has another
address), and the device gets no link-local address and sends no router solicitations, as on TUN;
the Ethernet/ARP layer resolves IPv6 neighbours with Neighbor Discovery (RFC 4861 NS/NA). The
kernel still sends MLD reports for its groups, which ustack counts and drops (``eth_not_for_us``).

Limits. No offloads: the virtio-net header is not used on TAP, so every frame carries one
MTU-sized packet. ``mtu`` is the IP MTU; frames are 14 octets longer, and the byte counters count
frames. No VLANs, no multicast groups beyond ND's own.
"""

from __future__ import annotations

import errno
import logging
import os

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pytun_pmd3.linux import IFF_NO_PI, IFF_TAP

from ustack.link.base import check_mtu
from ustack.link.errors import LinkError
from ustack.link.netns import run_in_netns
from ustack.link.tun import (
    _NO_LINK_LOCAL,
    IFA_F_NODAD,
    PROC_IPV6,
    TUN_DEVICE,
    TunLink,
    _add_address,
    _check_addresses,
    _check_addresses6,
    _check_name,
    _ipv6_unavailable,
    _netlink_error,
    _open_error,
    _quiet_ipv6,
    _TunDevice,
)
from ustack.wire import ethernet

log = logging.getLogger(__name__)


def _create(
    name: str,
    mtu: int,
    address: str,
    prefixlen: int,
    v6: tuple[str, int, str] | None,
    netns: str | None,
    device: str,
) -> tuple[int, str, bytes]:
    """Open the TAP device and configure the kernel's side; runs in the setup thread (inside
    the namespace). Returns (fd, real name, the kernel's MAC on it)."""
    try:
        dev = _TunDevice(name, IFF_TAP | IFF_NO_PI, dev=device)
    except OSError as exc:
        raise _open_error(exc, name, device, "TAP") from None
    fd, ifname = dev.detach(), dev.name
    step = "look up the interface"
    try:
        with IPRoute() as ipr:
            (index,) = ipr.link_lookup(ifname=ifname)
            step = f"set MTU {mtu}"
            ipr.link("set", index=index, mtu=mtu)
            if os.path.isdir(PROC_IPV6):
                # Before "up": no link-local address, hence no DAD, MLD or router
                # solicitations for ustack to count and drop (see the module docstring).
                step = "turn off IPv6 link-local address generation"
                ipr.link("set", index=index, IFLA_AF_SPEC=_NO_LINK_LOCAL)
                _quiet_ipv6(ifname)
            step = f"add address {address}/{prefixlen}"
            _add_address(ipr, index, address, prefixlen)
            if v6 is not None:
                unavailable = _ipv6_unavailable(ifname, netns)
                if unavailable is not None:
                    raise unavailable
                address6, prefixlen6, _ = v6
                # No DAD: ustack is the only other node, with another address (see TunLink).
                step = f"add address {address6}/{prefixlen6}"
                _add_address(ipr, index, address6, prefixlen6, IFA_F_NODAD)
            step = "set the link up"
            ipr.link("set", index=index, state="up")
            kernel_mac = ethernet.mac_from_text(ipr.get_links(index)[0].get_attr("IFLA_ADDRESS"))
    except NetlinkError as exc:
        os.close(fd)
        raise _netlink_error(exc, ifname, step) from None
    except BaseException:
        os.close(fd)
        raise
    return fd, ifname, kernel_mac


def _check_mac(mac: str | bytes | None) -> bytes:
    if mac is None:
        return ethernet.local_mac(os.urandom(ethernet.MAC_LEN))
    try:
        value = ethernet.mac_from_text(mac) if isinstance(mac, str) else bytes(mac)
    except (ValueError, TypeError) as exc:
        raise LinkError(str(exc), errno.EINVAL) from None
    if len(value) != ethernet.MAC_LEN or ethernet.is_group(value) or value == ethernet.ZERO_MAC:
        raise LinkError(
            f"bad MAC address {mac!r}: ustack's must be a unicast address (first octet even), "
            "e.g. 02:00:00:00:00:02",
            errno.EINVAL,
        )
    return value


class TapLink(TunLink):
    """An open, configured TAP device: it moves whole Ethernet frames. Create with :meth:`open`.

    ``mac`` is the MAC address ustack is to use on the segment (chosen here, so that it can
    never be the kernel's), ``kernel_mac`` the kernel's own on the device. The Ethernet/ARP
    layer that turns frames into IP packets wraps it: ``ustack.aio.ethernet.EthernetLink``.
    """

    __slots__ = ("kernel_mac", "mac")

    def __init__(
        self,
        fd: int,
        mtu: int,
        *,
        name: str,
        address: str,
        peer: str,
        prefixlen: int,
        netns: str | None,
        mac: bytes,
        kernel_mac: bytes = ethernet.ZERO_MAC,
        address6: str | None = None,
        peer6: str | None = None,
        prefixlen6: int = 0,
    ) -> None:
        super().__init__(
            fd,
            mtu,
            name=name,
            address=address,
            peer=peer,
            prefixlen=prefixlen,
            netns=netns,
            address6=address6,
            peer6=peer6,
            prefixlen6=prefixlen6,
        )
        self.offload_reason = "not available on TAP"
        # A frame is an IP packet of up to ``mtu`` octets plus the Ethernet header; longer
        # reads are oversize (see FdLink).
        self._max_frame = mtu + ethernet.HEADER_LEN
        self._read_size = self._max_frame + 1
        self.mac = mac
        self.kernel_mac = kernel_mac

    def __repr__(self) -> str:
        where = f" netns={self.netns}" if self.netns else ""
        v6 = f" {self.address6}/{self.prefixlen6} peer6={self.peer6}" if self.address6 else ""
        return (
            f"<TapLink {self.name} {self.address}/{self.prefixlen} peer={self.peer}{v6} "
            f"mac={ethernet.mac_to_text(self.mac)}{where}>"
        )

    @classmethod
    def open(  # type: ignore[override]
        cls,
        name: str = "ustack0",
        *,
        mtu: int = 1500,
        address: str = "10.7.0.1",
        peer: str = "10.7.0.2",
        prefixlen: int = 24,
        netns: str | None = None,
        mac: str | bytes | None = None,
        device: str = TUN_DEVICE,
        address6: str | None = None,
        peer6: str | None = None,
    ) -> TapLink:
        """Create TAP device ``name`` (inside namespace ``netns`` if given), give the kernel
        ``address/prefixlen``, set ``mtu`` (the IP MTU: frames are 14 octets longer) and bring
        it up. ustack is then host ``peer`` with MAC ``mac`` (``"02:00:00:00:00:02"`` or six
        bytes; default a random locally administered address), and the kernel its router.

        ``address6`` (the kernel's IPv6 address with its prefix length) and ``peer6`` (ustack's)
        add IPv6, as for :meth:`TunLink.open`; IPv6 disabled or missing in the namespace is a
        :class:`LinkError` (errno ``EAFNOSUPPORT``).

        Raises :class:`LinkError` with a one-line reason on any failure.
        """
        check_mtu(mtu)
        _check_name(name)
        _check_addresses(address, peer, prefixlen)
        v6 = _check_addresses6(address6, peer6, mtu)
        mac_bytes = _check_mac(mac)
        fd, ifname, kernel_mac = run_in_netns(
            netns, lambda: _create(name, mtu, address, prefixlen, v6, netns, device)
        )
        if kernel_mac == mac_bytes:
            os.close(fd)
            raise LinkError(
                f"bad MAC address: {ethernet.mac_to_text(mac_bytes)} is the kernel's own on "
                f"{ifname}",
                errno.EINVAL,
            )
        link = cls(
            fd,
            mtu,
            name=ifname,
            address=address,
            peer=peer,
            prefixlen=prefixlen,
            netns=netns,
            mac=mac_bytes,
            kernel_mac=kernel_mac,
            address6=v6[0] if v6 else None,
            peer6=v6[2] if v6 else None,
            prefixlen6=v6[1] if v6 else 0,
        )
        log.info("opened %r", link)
        return link
