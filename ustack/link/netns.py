"""Private network namespaces for tests, benchmarks and ``ustack demo``.

Anything in this project that creates a TUN device or sends real packets does it inside a
namespace it created itself, never in the root namespace. :class:`NetNamespace` is that
sandbox: it creates a uniquely named namespace with pyroute2 (the same bind mount under
``/var/run/netns`` that ``ip netns add`` makes, so ``ip -n NAME`` and ``ip netns exec NAME``
see it), brings its loopback up, and removes it on exit, exceptions included.

A network namespace belongs to a *thread*, not a process, and sockets, netlink sockets and TUN
devices stay in the namespace of the thread that created them. Two ways in follow from that:

* :func:`run_in_netns` runs a function in a short-lived thread that joins the namespace, so the
  caller's thread never moves. Setup code uses it (``TunLink.open`` does), and it also works
  from inside a running event loop, where pyroute2's synchronous API cannot run.
* ``enter()``/``exit()`` move the calling thread in and back, for code that wants to create a
  few sockets in the namespace inline.
"""

from __future__ import annotations

import errno
import functools
import itertools
import os
import subprocess
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns
from pyroute2.netlink.exceptions import NetlinkError

from ustack.link.errors import LinkError

T = TypeVar("T")

NETNS_DIR = "/var/run/netns"
TUN_PATH = "/dev/net/tun"
SETUP_TIMEOUT = 30.0  # seconds; netlink setup takes milliseconds, this only catches a hang

_serial = itertools.count()


def _thread_netns_fd() -> int:
    # /proc/self would name the main thread's namespace, which may differ from ours.
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


def _setns(fd: int) -> None:
    pr_netns.setns(fd, flags=0)


def _open_netns(name: str) -> int:
    try:
        return os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise LinkError(f"no network namespace named {name!r}", errno.ENOENT) from None


def run_in_netns(name: str | None, fn: Callable[[], T], timeout: float = SETUP_TIMEOUT) -> T:
    """Call ``fn()`` in a new thread inside namespace ``name`` (``None``: the caller's) and
    return its result or raise its exception. The caller's thread does not change namespace."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            if name is not None:
                fd = _open_netns(name)
                try:
                    _setns(fd)
                finally:
                    os.close(fd)
            outcome.append((True, fn()))
        except BaseException as exc:
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise LinkError(f"setup in network namespace {name!r} did not finish in {timeout} s")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def _loopback_up() -> None:
    try:
        with IPRoute() as ipr:
            (index,) = ipr.link_lookup(ifname="lo")
            ipr.link("set", index=index, state="up")
    except NetlinkError as exc:
        code = int(exc.code)
        if code in (errno.EPERM, errno.EACCES):
            raise LinkError(
                "cannot configure a network namespace: needs CAP_NET_ADMIN", code
            ) from None
        raise LinkError(f"cannot bring up loopback: {os.strerror(code)}", code) from None


class NetNamespace:
    """A private network namespace that exists for the duration of a ``with`` block."""

    def __init__(self, name: str | None = None, *, prefix: str = "ustack") -> None:
        self.name = name or f"{prefix}-{os.getpid()}-{next(_serial)}"
        self.created = False
        self._saved_fd = -1
        self._entered_by: int | None = None

    def __repr__(self) -> str:
        return f"NetNamespace({self.name!r}, created={self.created})"

    @property
    def path(self) -> str:
        return os.path.join(NETNS_DIR, self.name)

    def create(self) -> NetNamespace:
        if self.created:
            return self
        if os.path.exists(self.path):
            raise LinkError(f"network namespace {self.name!r} already exists", errno.EEXIST)
        try:
            pr_netns.create(self.name)
        except OSError as exc:
            try:
                self._remove_mount()
            except OSError:
                pass  # the half-made mountpoint may not exist, or may not be ours to remove
            code = exc.errno or 0
            if code in (errno.EPERM, errno.EACCES):
                raise LinkError(
                    "cannot create a network namespace: needs root (CAP_SYS_ADMIN)", code
                ) from None
            raise LinkError(f"cannot create network namespace {self.name!r}: {exc}", code) from None
        self.created = True
        try:
            run_in_netns(self.name, _loopback_up)
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        """Leave (if this thread entered) and delete the namespace; safe to call twice."""
        if self._entered_by == threading.get_ident():
            self.exit()
        if self.created:
            self.created = False
            self._remove_mount()

    def _remove_mount(self) -> None:
        try:
            pr_netns.remove(self.name)
        except FileNotFoundError:
            pass

    def __enter__(self) -> NetNamespace:
        return self.create()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def enter(self) -> None:
        """Move the calling thread into the namespace; ``exit()`` moves it back."""
        if self._entered_by is not None:
            raise RuntimeError(f"already inside {self.name!r}; call exit() first")
        fd = _open_netns(self.name)
        saved = _thread_netns_fd()
        try:
            _setns(fd)
        except BaseException:
            os.close(saved)
            raise
        finally:
            os.close(fd)
        self._saved_fd = saved
        self._entered_by = threading.get_ident()

    def exit(self) -> None:
        if self._entered_by is None:
            return
        if self._entered_by != threading.get_ident():
            raise RuntimeError("exit() must be called by the thread that called enter()")
        _setns(self._saved_fd)
        os.close(self._saved_fd)
        self._saved_fd = -1
        self._entered_by = None

    def call(self, fn: Callable[[], T], timeout: float = SETUP_TIMEOUT) -> T:
        """Run ``fn()`` in a helper thread inside the namespace (see :func:`run_in_netns`)."""
        return run_in_netns(self.name, fn, timeout)

    def run(
        self, cmd: Sequence[str], *, check: bool = False, timeout: float = 30.0, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside the namespace via ``ip netns exec``; output captured as text."""
        kwargs.setdefault("capture_output", True)
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *cmd],
            check=check,
            timeout=timeout,
            text=True,
            **kwargs,
        )


def _probe_tun() -> None:
    from ustack.link.tun import TunLink

    TunLink.open("probe0").close()


@functools.cache
def have_net_admin() -> tuple[bool, str]:
    """Whether this process can create a namespace and a TUN device in it, and if not, why.

    Meant for skip markers: ``pytest.mark.skipif(not have_net_admin()[0], reason=...)``.
    The probe creates and removes a throwaway namespace; it never touches the root one.
    """
    if not os.path.exists(TUN_PATH):
        return False, "no /dev/net/tun (load the tun module, or docker run --device /dev/net/tun)"
    try:
        with NetNamespace(prefix="ustack-probe") as ns:
            ns.call(_probe_tun)
    except OSError as exc:
        return False, str(exc)
    return True, "ok"
