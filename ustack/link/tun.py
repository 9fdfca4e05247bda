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
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pytun_pmd3.linux import IFF_NO_PI, IFF_TUN, TunTapDevice

from ustack.link.base import FdLink, check_mtu
from ustack.link.errors import LinkError
from ustack.link.netns import run_in_netns

log = logging.getLogger(__name__)

TUN_DEVICE = "/dev/net/tun"
IFNAMSIZ = 16  # <linux/if.h>: names hold at most 15 bytes plus the NUL

NEED_CAP = "needs CAP_NET_ADMIN (run as root, or docker run --cap-add NET_ADMIN)"


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


def _create(name: str, mtu: int, address: str, prefixlen: int, device: str) -> tuple[int, str]:
    """Open the device and configure it; runs in the setup thread. Returns (fd, real name)."""
    try:
        dev = _TunDevice(name, IFF_TUN | IFF_NO_PI, dev=device)
    except OSError as exc:
        raise _open_error(exc, name, device) from None
    ifname = dev.name
    fd = dev.detach()
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
    return fd, ifname


class TunLink(FdLink):
    """An open, configured TUN device. Create with :meth:`open`."""

    __slots__ = ("address", "name", "netns", "peer", "prefixlen")

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
    ) -> None:
        super().__init__(fd, mtu)
        self.name = name
        self.address = address
        self.peer = peer
        self.prefixlen = prefixlen
        self.netns = netns

    def __repr__(self) -> str:
        where = f" netns={self.netns}" if self.netns else ""
        return f"<TunLink {self.name} {self.address}/{self.prefixlen} peer={self.peer}{where}>"

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
    ) -> TunLink:
        """Create TUN device ``name`` (inside namespace ``netns`` if given), give the kernel
        ``address/prefixlen``, set ``mtu`` and bring it up. ustack is then host ``peer``.

        Raises :class:`LinkError` with a one-line reason on any failure.
        """
        check_mtu(mtu)
        _check_name(name)
        _check_addresses(address, peer, prefixlen)
        fd, ifname = run_in_netns(netns, lambda: _create(name, mtu, address, prefixlen, device))
        link = cls(
            fd, mtu, name=ifname, address=address, peer=peer, prefixlen=prefixlen, netns=netns
        )
        log.info("opened %r", link)
        return link
