"""Dropping root once the TUN device is set up.

Creating and configuring a TUN device needs ``CAP_NET_ADMIN``; reading and writing its open fd
does not. So a server can open everything it needs as root and then become an ordinary user,
the way daemons do: :func:`resolve` looks the names up first (so a typo fails before anything is
set up), :func:`drop_privileges` then changes, in the only order that works, the supplementary
groups (``setgroups``: the user's own, from ``getgrouplist``, or none), the group (``setgid``)
and last the user (``setuid``, after which the others are no longer allowed), and checks that
it worked -- including that ``setuid(0)`` now fails, so root cannot be taken back.

What still needs root afterwards is up to the caller: files opened before the drop (a pcap
capture) stay writable through their open descriptors, but nothing new can be created where
only root may write, and a network namespace or device cannot be removed (the device goes
away by itself when its fd is closed).
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
from typing import NamedTuple

from ustack.link.errors import LinkError


class Identity(NamedTuple):
    """Who to become: a user, its primary (or the chosen) group, its supplementary groups."""

    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def resolve(user: str, group: str | None = None) -> Identity:
    """Look up ``user`` (a name or a numeric uid) and ``group`` (default: the user's primary
    group). Raises :class:`LinkError` (``errno.EINVAL``) with one line if either is unknown."""
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, OverflowError):
        raise LinkError(f"unknown user {user!r}", errno.EINVAL) from None
    gid = entry.pw_gid
    if group is not None:
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except (KeyError, OverflowError):
            raise LinkError(f"unknown group {group!r}", errno.EINVAL) from None
    groups = tuple(dict.fromkeys(os.getgrouplist(entry.pw_name, gid)))
    return Identity(entry.pw_name, entry.pw_uid, gid, groups)


def drop_privileges(identity: Identity) -> None:
    """Become ``identity`` for good. Raises :class:`LinkError` with one line if a step fails
    or root could be taken back afterwards."""
    step = "setgroups"
    try:
        os.setgroups(list(identity.groups))
        step = "setgid"
        os.setgid(identity.gid)
        step = "setuid"
        os.setuid(identity.uid)
    except OSError as exc:
        code = exc.errno or errno.EPERM
        raise LinkError(
            f"cannot become user {identity.user}: {step} failed: {os.strerror(code)}", code
        ) from None
    if os.getuid() != identity.uid or os.geteuid() != identity.uid:
        raise LinkError(f"cannot become user {identity.user}: uid is still {os.getuid()}")
    if identity.uid != 0:
        try:
            os.setuid(0)
        except OSError:
            pass  # as it must: root is gone for good
        else:
            raise LinkError(f"dropping root for user {identity.user} did not stick", errno.EPERM)
