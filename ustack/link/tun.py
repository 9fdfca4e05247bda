"""A Linux TUN device as a link.

``TunLink.open()`` creates a TUN interface (``IFF_TUN | IFF_NO_PI``: every read and write is
one bare IP packet, IPv4 or IPv6 by its version nibble, no 4-byte packet-information prefix)
with pytun-pmd3, then configures the *kernel's* side of it over netlink with pyroute2: MTU, the
kernel's address and prefix (IPv6 too, if asked: see below), link up. ustack plays the host
at ``peer`` on the other side of that subnet, so the kernel routes traffic for ``peer`` into
the device and we read it from the fd.

Setup runs in a short-lived helper thread (see ``netns.run_in_netns``) for two reasons: it can
join a given network namespace without moving the caller, and pyroute2's synchronous API
cannot run on a thread that already runs an asyncio loop. The TUN fd itself is not tied to a
thread; the device stays in the namespace it was created in for as long as the fd is open, and
disappears when ``close()`` closes it.

Reading and writing are the shared loops of ``base.FdLink``: drain until EAGAIN up to
``limit``, write the caller's buffer as is, count EAGAIN as ``tx_full``.

The device can disappear under an open fd (``ip link del``, the namespace torn down). The fd
then stays open but detached: the kernel's tun driver answers every read, write and ioctl with
``EBADFD`` and poll reports ``POLLERR`` (never EOF). A failed read or write batch therefore
asks the kernel once (``TUNGETIFF``, which needs the device) whether the device is still
there; if not, ``failure`` says so as a :class:`LinkError` and ``at_eof`` turns true, which is
how the driver learns that the link is gone for good. Transient errors (``EAGAIN``, ``ENOBUFS``)
never get that far: they stay counted drops.

Offloads (``offload="auto"``, the default, or ``"on"``). The device is opened with
``IFF_VNET_HDR`` as well, so every read and write starts with a ten-byte virtio-net header
(``ustack.wire.virtio``); ``TUNSETVNETHDRSZ`` fixes its size, ``TUNSETVNETLE`` its byte order,
and ``TUNSETOFFLOAD`` tells the kernel what we can take: packets whose TCP checksum is not
computed yet (``TUN_F_CSUM``) and TCP super-segments (``TUN_F_TSO4``/``TUN_F_TSO6``). The kernel
then gives the tun interface checksum offload and TSO/GSO, so its TCP hands us up to 64 KB per
read instead of one MTU, and takes super-segments of that size from us. The MTU stays what it
was: it is the size of a segment on the (imaginary) wire, and the MSS both sides advertise.
If any step fails, ``"auto"`` closes the fd, opens the device again without the header and
logs why (``offload_reason``); ``"on"`` raises :class:`LinkError` instead. The probe goes
through the module-level ``_ioctl`` and ``OFFLOAD_FEATURES``, so a test can play a kernel that
refuses.

IPv6 (``address6="fd00:7::1/64"``, ``peer6="fd00:7::2"``) is configured the same way, over
netlink with pyroute2, so both families have one path: the kernel's address with
``IFA_F_NODAD``, which brings the prefix route through the device with it. The device is a
point-to-point layer-3 link, so the kernel is also asked to keep quiet on it: no link-local
address (``IFLA_INET6_ADDR_GEN_MODE`` none, set while the link is still down), hence no router
solicitations, and ``accept_ra``/``router_solicitations`` off where those sysctls are writable
(each alone silences the link; the sysctls keep it so if a link-local address is added by
hand). Without any of this a fresh TUN device gets a random link-local address (a device
without a hardware address gets ``addr_gen_mode`` random) and sends router solicitations from
it to ff02::2 right after ``up`` and then at growing intervals (0 s, ~4 s, ~13 s, ...); it
sends no DAD probes (``IFF_NOARP`` skips DAD) and, measured on Linux 6.18, no MLD reports.
Whatever the kernel still sends, ustack has to ignore. The link itself stays family-agnostic:
it moves packets and never looks at the version nibble.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import logging
import os
import struct
import sys
from collections.abc import Callable, Sequence

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pytun_pmd3.linux import IFF_NO_PI, IFF_TUN, TunTapDevice

from ustack.link.base import FdLink, Gathered, Packet, check_mtu
from ustack.link.errors import LinkError
from ustack.link.netns import run_in_netns
from ustack.wire import ipv6, virtio

log = logging.getLogger(__name__)

TUN_DEVICE = "/dev/net/tun"
IFNAMSIZ = 16  # <linux/if.h>: names hold at most 15 bytes plus the NUL

NEED_CAP = "needs CAP_NET_ADMIN (run as root, or docker run --cap-add NET_ADMIN)"

# <linux/if_tun.h>
IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0  # _IOW('T', 208, unsigned int); the argument is the value itself
TUNSETVNETHDRSZ = 0x400454D8  # _IOW('T', 216, int); the argument points to an int
TUNSETVNETLE = 0x400454DC  # _IOW('T', 220, int); the argument points to an int
TUN_F_CSUM = 0x01  # "You can hand me unchecksummed packets."
TUN_F_TSO4 = 0x02  # "I can handle TSO for IPv4 packets"
TUN_F_TSO6 = 0x04  # "I can handle TSO for IPv6 packets"
TUNGETIFF = 0x800454D2  # _IOR('T', 210, unsigned int); fills a struct ifreq (40 bytes)
IFREQ_SIZE = 40

# <linux/if_addr.h>: no duplicate address detection. Linux already skips DAD on an IFF_NOARP
# device such as TUN, but the flag states the intent and does not depend on that: on a
# point-to-point layer-3 link there is no other node that could hold the address, nobody to
# answer a Neighbor Solicitation (ustack speaks no ND), and a tentative address would be
# unusable for the second that DAD takes (RFC 4862 5.4).
IFA_F_NODAD = 0x02
# <linux/if_link.h> enum in6_addr_gen_mode: generate no link-local address. Nothing on this link
# needs one (no ND, no router), and without it the kernel sends no router solicitations.
IN6_ADDR_GEN_MODE_NONE = 1
# The same as IFLA_AF_SPEC in pyroute2's nested-attribute form.
_NO_LINK_LOCAL = {
    "attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_NONE)]})]
}
PROC_IPV6 = "/proc/sys/net/ipv6"  # absent when the kernel has no IPv6 (ipv6.disable=1)
# Per-device sysctls turned off on the kernel's side, written where writable: no router
# solicitations, and no autoconfiguration from a Router Advertisement ustack would never send.
QUIET_SYSCTLS = (("accept_ra", "0"), ("router_solicitations", "0"))

OFFLOAD_FEATURES = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
OFFLOAD_MODES = ("auto", "on", "off")
NOT_REQUESTED = "not requested"

_FEATURE_NAMES = {TUN_F_CSUM: "TUN_F_CSUM", TUN_F_TSO4: "TUN_F_TSO4", TUN_F_TSO6: "TUN_F_TSO6"}

# fcntl.ioctl, replaceable by tests that need a kernel which refuses.
_ioctl: Callable[..., object] = fcntl.ioctl


def _check_name(name: str) -> None:
    # The kernel's dev_valid_name(): 1..15 bytes, not "." or "..", no '/', ':' or whitespace.
    size = len(name.encode())
    if (
        not 0 < size < IFNAMSIZ
        or name in (".", "..")
        or any(c in "/:" or c.isspace() for c in name)
    ):
        raise LinkError(
            f"bad interface name {name!r}: use 1-15 characters without '/', ':' or spaces",
            errno.EINVAL,
        )


def _check_addresses(address: str, peer: str, prefixlen: int) -> None:
    try:
        iface = ipaddress.IPv4Interface(f"{address}/{prefixlen}")
        peer_ip = ipaddress.IPv4Address(peer)
    except ValueError as exc:
        raise LinkError(f"bad address: {exc}", errno.EINVAL) from None
    net = iface.network
    if peer_ip == iface.ip:
        raise LinkError(f"bad address: peer {peer} is the kernel's own address", errno.EINVAL)
    if peer_ip not in net:
        raise LinkError(f"bad address: peer {peer} is not in {net}", errno.EINVAL)
    if net.prefixlen <= 30 and peer_ip in (net.network_address, net.broadcast_address):
        raise LinkError(f"bad address: peer {peer} is not a host address in {net}", errno.EINVAL)


def _check_addresses6(
    address6: str | None, peer6: str | None, mtu: int
) -> tuple[str, int, str] | None:
    """Validate the IPv6 pair; return (kernel's address, prefix length, peer) or None."""
    if address6 is None and peer6 is None:
        return None
    if address6 is None or peer6 is None:
        raise LinkError(
            "bad IPv6 address: give address6 (the kernel's, e.g. fd00:7::1/64) and peer6 "
            "(ustack's, e.g. fd00:7::2) together",
            errno.EINVAL,
        )
    if "/" not in address6:
        raise LinkError(
            f"bad IPv6 address {address6!r}: give the kernel's address with its prefix length, "
            "e.g. fd00:7::1/64",
            errno.EINVAL,
        )
    try:
        iface = ipaddress.IPv6Interface(address6)
        peer_ip = ipaddress.IPv6Address(peer6)
    except ValueError as exc:
        raise LinkError(f"bad IPv6 address: {exc}", errno.EINVAL) from None
    net = iface.network
    for ip in (iface.ip, peer_ip):
        if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip.ipv4_mapped:
            raise LinkError(f"bad IPv6 address: {ip} is not a unicast address", errno.EINVAL)
    if peer_ip == iface.ip:
        raise LinkError(
            f"bad IPv6 address: peer6 {peer_ip} is the kernel's own address", errno.EINVAL
        )
    if peer_ip not in net:
        raise LinkError(f"bad IPv6 address: peer6 {peer_ip} is not in {net}", errno.EINVAL)
    if net.prefixlen < 127 and peer_ip == net.network_address:
        # RFC 4291 2.6.1; RFC 6164 lifts it for /127 point-to-point links.
        raise LinkError(
            f"bad IPv6 address: peer6 {peer_ip} is the Subnet-Router anycast address of {net}",
            errno.EINVAL,
        )
    if mtu < ipv6.MIN_MTU:
        # Linux takes IPv6 off a device whose MTU is below the minimum link MTU.
        raise LinkError(
            f"bad MTU {mtu} for IPv6: every IPv6 link carries {ipv6.MIN_MTU} (RFC 8200 5)",
            errno.EINVAL,
        )
    return str(iface.ip), net.prefixlen, str(peer_ip)


def _read_sysctl(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _ipv6_unavailable(ifname: str, netns: str | None) -> LinkError | None:
    """Why IPv6 cannot be configured on ``ifname``, or None. Runs in the setup thread, whose
    namespace is the one ``/proc/sys/net`` shows."""
    where = f"network namespace {netns!r}" if netns else "this network namespace"
    if not os.path.isdir(PROC_IPV6):
        return LinkError(
            f"cannot configure IPv6 on {ifname!r}: the kernel has no IPv6 "
            f"({PROC_IPV6} is missing: booted with ipv6.disable=1, or built without IPv6); "
            "open the link without address6",
            errno.EAFNOSUPPORT,
        )
    if _read_sysctl(f"{PROC_IPV6}/conf/{ifname}/disable_ipv6") != "1":
        return None
    # A new device copies "default", and writing "all" writes "default" too: name what is set.
    causes = [
        f"net.ipv6.conf.{scope}.disable_ipv6=1"
        for scope in ("all", "default")
        if _read_sysctl(f"{PROC_IPV6}/conf/{scope}/disable_ipv6") == "1"
    ] or [f"net.ipv6.conf.{ifname}.disable_ipv6=1"]
    return LinkError(
        f"cannot configure IPv6 on {ifname!r}: IPv6 is disabled in {where} "
        f"({', '.join(causes)}); set it to 0 or open the link without address6",
        errno.EAFNOSUPPORT,
    )


def _quiet_ipv6(ifname: str) -> None:
    """Turn off router solicitations and RA processing on the device where the sysctls are
    writable (a read-only /proc/sys, as in Docker, leaves them on; ustack ignores the chatter)."""
    for key, value in QUIET_SYSCTLS:
        path = f"{PROC_IPV6}/conf/{ifname}/{key}"
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError as exc:
            log.debug("TUN device %s: cannot write %s: %s", ifname, path, exc)


def _open_error(exc: OSError, name: str, device: str, kind: str = "TUN") -> LinkError:
    """The one-line error for a failed open of ``device`` as a ``kind`` ("TUN" or "TAP")."""
    code = exc.errno or 0
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        message = (
            f"no {kind} support at {device}: load the tun module (modprobe tun), "
            "or docker run --device /dev/net/tun"
        )
    elif code in (errno.EPERM, errno.EACCES):
        message = f"not allowed to create {kind} device {name!r}: {NEED_CAP}"
    elif code == errno.EBUSY:
        message = f"{kind} device {name!r} is busy: another process has it open"
    elif code == errno.EINVAL:
        message = (
            f"cannot use {name!r} as a {kind} device: an interface of another type has that name"
        )
    else:
        message = f"cannot open {kind} device {name!r}: {os.strerror(code) if code else exc}"
    return LinkError(message, code)


def _netlink_error(exc: NetlinkError, name: str, what: str) -> LinkError:
    code = int(exc.code)
    if code in (errno.EPERM, errno.EACCES):
        return LinkError(f"not allowed to configure {name!r}: {NEED_CAP}", code)
    return LinkError(f"cannot {what} on {name!r}: {os.strerror(code)}", code)


class _TunDevice(TunTapDevice):  # type: ignore[misc]
    """pytun-pmd3's device with two fixes: a clean failure, and a way to take the fd."""

    def __init__(self, name: str, flags: int, dev: str) -> None:
        try:
            super().__init__(name, flags, dev)
        except BaseException:
            # On a failed TUNSETIFF pytun closes its fd but keeps the number, and its __del__
            # closes it again later -- by then possibly someone else's fd (an epoll, a socket).
            self._fd = -1
            raise

    def detach(self) -> int:
        fd, self._fd = self._fd, -1
        return int(fd)


class _Refused(Exception):
    """The kernel would not set up the virtio-net header or the offloads; the message says why."""


def _feature_names(features: int) -> str:
    names = [text for bit, text in _FEATURE_NAMES.items() if features & bit]
    rest = features & ~sum(_FEATURE_NAMES)
    if rest:
        names.append(hex(rest))
    return "|".join(names)


def _enable_offload(fd: int) -> None:
    """Ask for the ten-byte little-endian header and for the offloads; raise _Refused if not."""
    step = "TUNSETVNETHDRSZ"
    try:
        _ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", virtio.HEADER_LEN))
        step = "TUNSETVNETLE"
        try:
            _ioctl(fd, TUNSETVNETLE, struct.pack("i", 1))
        except OSError:
            # Without it the legacy header is in the host's order, which is what we parse on a
            # little-endian host; elsewhere there is no way to read it.
            if sys.byteorder != "little":
                raise
        features = OFFLOAD_FEATURES
        step = f"TUNSETOFFLOAD ({_feature_names(features)})"
        _ioctl(fd, TUNSETOFFLOAD, features)
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise _Refused(f"the kernel refused {step}: {why}") from None


def _open_plain(name: str, device: str) -> _TunDevice:
    try:
        return _TunDevice(name, IFF_TUN | IFF_NO_PI, dev=device)
    except OSError as exc:
        raise _open_error(exc, name, device) from None


def _open_device(name: str, device: str, offload: str) -> tuple[int, str, int, str]:
    """Open the TUN fd, with the virtio-net header and offloads if ``offload`` asks and the
    kernel agrees. Returns (fd, real name, header length, reason offload is off or "")."""
    if offload == "off":
        dev = _open_plain(name, device)
        return dev.detach(), dev.name, 0, NOT_REQUESTED
    try:
        dev = _TunDevice(name, IFF_TUN | IFF_NO_PI | IFF_VNET_HDR, dev=device)
    except OSError as exc:
        if offload == "on":
            raise _open_error(exc, name, device) from None
        # Perhaps the header is the problem; if not, the plain open fails the same way.
        reason = f"TUNSETIFF with IFF_VNET_HDR failed: {os.strerror(exc.errno or 0)}"
        dev = _open_plain(name, device)
    else:
        fd = dev.detach()
        try:
            _enable_offload(fd)
        except _Refused as exc:
            os.close(fd)
            if offload == "on":
                raise LinkError(
                    f"cannot turn on offloads for TUN device {dev.name!r}: {exc}", errno.EINVAL
                ) from None
            reason = str(exc)
            # Closing the fd removed the device (unless it is persistent, and then the next
            # TUNSETIFF replaces its flags); open it again, plain, under the name it got.
            dev = _open_plain(dev.name, device)
        else:
            return fd, dev.name, virtio.HEADER_LEN, ""
    log.warning("TUN device %s: offloads off, %s", dev.name, reason)
    return dev.detach(), dev.name, 0, reason


def _add_address(ipr: IPRoute, index: int, address: str, prefixlen: int, flags: int = 0) -> None:
    try:
        ipr.addr("add", index=index, address=address, prefixlen=prefixlen, flags=flags)
    except NetlinkError as exc:
        # Re-opening a persistent device finds its address already there.
        if exc.code != errno.EEXIST:
            raise


def _create(
    name: str,
    mtu: int,
    address: str,
    prefixlen: int,
    v6: tuple[str, int, str] | None,
    netns: str | None,
    device: str,
    offload: str,
) -> tuple[int, str, int, str]:
    """Open the device and configure it; runs in the setup thread (inside ``netns``).

    Returns (fd, real name, header length, reason offload is off or "")."""
    fd, ifname, header_len, reason = _open_device(name, device, offload)
    step = "look up the interface"
    try:
        with IPRoute() as ipr:
            (index,) = ipr.link_lookup(ifname=ifname)
            step = f"set MTU {mtu}"
            ipr.link("set", index=index, mtu=mtu)
            step = f"add address {address}/{prefixlen}"
            _add_address(ipr, index, address, prefixlen)
            if v6 is not None:
                address6, prefixlen6, _ = v6
                unavailable = _ipv6_unavailable(ifname, netns)
                if unavailable is not None:
                    raise unavailable
                # Before "up": a link-local address is generated when the link comes up.
                step = "turn off IPv6 link-local address generation"
                ipr.link("set", index=index, IFLA_AF_SPEC=_NO_LINK_LOCAL)
                _quiet_ipv6(ifname)
                # The kernel adds the route for the prefix through the device with the address
                # (proto kernel, metric 256), which is the route to peer6.
                step = f"add address {address6}/{prefixlen6}"
                try:
                    _add_address(ipr, index, address6, prefixlen6, IFA_F_NODAD)
                except NetlinkError as exc:
                    # The kernel's answer when IPv6 was disabled after the check above; not
                    # the missing privilege that EACCES means everywhere else.
                    if exc.code == errno.EACCES:
                        raise _ipv6_unavailable(ifname, netns) or LinkError(
                            f"cannot configure IPv6 on {ifname!r}: IPv6 is disabled on it",
                            errno.EAFNOSUPPORT,
                        ) from None
                    raise
            step = "set the link up"
            ipr.link("set", index=index, state="up")
    except NetlinkError as exc:
        os.close(fd)
        raise _netlink_error(exc, ifname, step) from None
    except BaseException:
        os.close(fd)
        raise
    return fd, ifname, header_len, reason


class TunLink(FdLink):
    """An open, configured TUN device. Create with :meth:`open`.

    ``offload`` tells whether the virtio-net header and the kernel's offloads are in use;
    ``offload_reason`` says why not ("" when they are).
    """

    __slots__ = (
        "address",
        "address6",
        "failure",
        "name",
        "netns",
        "offload_reason",
        "peer",
        "peer6",
        "prefixlen",
        "prefixlen6",
    )

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
        header_len: int = 0,
        offload_reason: str = NOT_REQUESTED,
        address6: str | None = None,
        peer6: str | None = None,
        prefixlen6: int = 0,
    ) -> None:
        super().__init__(fd, mtu, header_len=header_len)
        self.name = name
        self.address = address
        self.peer = peer
        self.prefixlen = prefixlen
        self.address6 = address6  # the kernel's IPv6 address, or None without IPv6
        self.peer6 = peer6
        self.prefixlen6 = prefixlen6
        self.netns = netns
        self.offload_reason = "" if header_len else offload_reason
        self.failure: LinkError | None = None  # set once the device is gone (module docstring)

    def read_batch(self, now: float, limit: int) -> list[bytes | memoryview]:
        stats = self.stats
        errors = stats.rx_error
        packets = super().read_batch(now, limit)
        if stats.rx_error != errors:
            self._check_attached()
        return packets

    def write_batch(self, packets: Sequence[Packet | Gathered], now: float) -> None:
        stats = self.stats
        errors = stats.tx_error
        super().write_batch(packets, now)
        if stats.tx_error != errors:
            self._check_attached()

    def _check_attached(self) -> None:
        """After a failed read or write: is the device still there? (See the module
        docstring.) Sets ``failure`` and ``at_eof`` if not."""
        fd = self.fileno()
        if fd < 0 or self.failure is not None:
            return
        try:
            _ioctl(fd, TUNGETIFF, bytes(IFREQ_SIZE))
        except OSError as exc:
            if exc.errno != errno.EBADFD:
                return  # not the tun driver's "no device behind this fd"
            self.failure = LinkError(
                f"TUN device {self.name} disappeared: {os.strerror(exc.errno)}", exc.errno
            )
            self.at_eof = True
            log.info("%s", self.failure)

    def __repr__(self) -> str:
        where = f" netns={self.netns}" if self.netns else ""
        offload = " offload" if self.header_len else ""
        v6 = f" {self.address6}/{self.prefixlen6} peer6={self.peer6}" if self.address6 else ""
        return (
            f"<TunLink {self.name} {self.address}/{self.prefixlen} peer={self.peer}"
            f"{v6}{where}{offload}>"
        )

    @classmethod
    def open(
        cls,
        name: str = "ustack0",
        *,
        mtu: int = 1500,
        address: str = "10.7.0.1",
        peer: str = "10.7.0.2",
        prefixlen: int = 24,
        netns: str | None = None,
        device: str = TUN_DEVICE,
        offload: str = "auto",
        address6: str | None = None,
        peer6: str | None = None,
    ) -> TunLink:
        """Create TUN device ``name`` (inside namespace ``netns`` if given), give the kernel
        ``address/prefixlen``, set ``mtu`` and bring it up. ustack is then host ``peer``.

        ``address6`` (the kernel's IPv6 address with its prefix length, e.g. ``fd00:7::1/64``)
        and ``peer6`` (ustack's, e.g. ``fd00:7::2``, inside that prefix) add IPv6 to the kernel's
        side (see the module docstring); without them IPv6 on the device is left as the kernel
        sets it up. IPv6 disabled or missing in the namespace is a :class:`LinkError`.

        ``offload``: ``"auto"`` uses the virtio-net header and the kernel's checksum and TSO
        offloads when the kernel agrees, and falls back to plain packets (logging why) when it
        does not; ``"on"`` insists; ``"off"`` never asks. ``link.offload`` tells the outcome.

        Raises :class:`LinkError` with a one-line reason on any failure.
        """
        check_mtu(mtu)
        _check_name(name)
        _check_addresses(address, peer, prefixlen)
        v6 = _check_addresses6(address6, peer6, mtu)
        if offload not in OFFLOAD_MODES:
            raise LinkError(
                f"bad offload mode {offload!r}: use one of {', '.join(OFFLOAD_MODES)}",
                errno.EINVAL,
            )
        fd, ifname, header_len, reason = run_in_netns(
            netns, lambda: _create(name, mtu, address, prefixlen, v6, netns, device, offload)
        )
        link = cls(
            fd,
            mtu,
            name=ifname,
            address=address,
            peer=peer,
            prefixlen=prefixlen,
            netns=netns,
            header_len=header_len,
            offload_reason=reason,
            address6=v6[0] if v6 else None,
            peer6=v6[2] if v6 else None,
            prefixlen6=v6[1] if v6 else 0,
        )
        log.info("opened %r", link)
        return link
