"""A Linux TUN device as a link.

``TunLink.open()`` creates a TUN interface (``IFF_TUN | IFF_NO_PI``: every read and write is
one bare IPv4 packet, no 4-byte packet-information prefix) with pytun-pmd3, then configures the
*kernel's* side of it over netlink with pyroute2: MTU, the kernel's address and prefix, link
up. ustack plays the host at ``peer`` on the other side of that subnet, so the kernel routes
traffic for ``peer`` into the device and we read it from the fd.

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
from ustack.wire import virtio

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


def _open_error(exc: OSError, name: str, device: str) -> LinkError:
    code = exc.errno or 0
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        message = (
            f"no TUN support at {device}: load the tun module (modprobe tun), "
            "or docker run --device /dev/net/tun"
        )
    elif code in (errno.EPERM, errno.EACCES):
        message = f"not allowed to create TUN device {name!r}: {NEED_CAP}"
    elif code == errno.EBUSY:
        message = f"TUN device {name!r} is busy: another process has it open"
    elif code == errno.EINVAL:
        message = f"cannot use {name!r} as a TUN device: an interface of another type has that name"
    else:
        message = f"cannot open TUN device {name!r}: {os.strerror(code) if code else exc}"
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


def _create(
    name: str, mtu: int, address: str, prefixlen: int, device: str, offload: str
) -> tuple[int, str, int, str]:
    """Open the device and configure it; runs in the setup thread.

    Returns (fd, real name, header length, reason offload is off or "")."""
    fd, ifname, header_len, reason = _open_device(name, device, offload)
    step = "look up the interface"
    try:
        with IPRoute() as ipr:
            (index,) = ipr.link_lookup(ifname=ifname)
            step = f"set MTU {mtu}"
            ipr.link("set", index=index, mtu=mtu)
            step = f"add address {address}/{prefixlen}"
            try:
                ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
            except NetlinkError as exc:
                # Re-opening a persistent device finds its address already there.
                if exc.code != errno.EEXIST:
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

    __slots__ = ("address", "failure", "name", "netns", "offload_reason", "peer", "prefixlen")

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
    ) -> None:
        super().__init__(fd, mtu, header_len=header_len)
        self.name = name
        self.address = address
        self.peer = peer
        self.prefixlen = prefixlen
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
        return (
            f"<TunLink {self.name} {self.address}/{self.prefixlen} peer={self.peer}"
            f"{where}{offload}>"
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
    ) -> TunLink:
        """Create TUN device ``name`` (inside namespace ``netns`` if given), give the kernel
        ``address/prefixlen``, set ``mtu`` and bring it up. ustack is then host ``peer``.

        ``offload``: ``"auto"`` uses the virtio-net header and the kernel's checksum and TSO
        offloads when the kernel agrees, and falls back to plain packets (logging why) when it
        does not; ``"on"`` insists; ``"off"`` never asks. ``link.offload`` tells the outcome.

        Raises :class:`LinkError` with a one-line reason on any failure.
        """
        check_mtu(mtu)
        _check_name(name)
        _check_addresses(address, peer, prefixlen)
        if offload not in OFFLOAD_MODES:
            raise LinkError(
                f"bad offload mode {offload!r}: use one of {', '.join(OFFLOAD_MODES)}",
                errno.EINVAL,
            )
        fd, ifname, header_len, reason = run_in_netns(
            netns, lambda: _create(name, mtu, address, prefixlen, device, offload)
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
        )
        log.info("opened %r", link)
        return link
