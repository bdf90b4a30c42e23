"""pyroute2 handles bound to a namespace, and waiting for the kernel."""

from __future__ import annotations

import errno
import time
from collections.abc import Iterable
from ipaddress import IPv4Interface

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netlab.realize import netns

RTNH_F_ONLINK = 4
IFF_UP = 1
OPER_UP = "UP"


def iproute(path: str) -> IPRoute:
    """An IPRoute in the namespace at path, made without pyroute2's fork-per-namespace."""
    return IPRoute(use_socket=netns.netlink_socket(path))


def index(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LookupError(f"no interface {ifname}")
    return found[0]


def set_address(ipr: IPRoute, ifindex: int, address: IPv4Interface) -> None:
    """Put `address` (with its prefix length) on a link, replacing it if there."""
    ipr.addr("replace", index=ifindex, address=str(address.ip), prefixlen=address.network.prefixlen)


def ignore_missing(call, *args, **kwargs) -> None:
    """Run a delete; an object already gone is fine."""
    try:
        call(*args, **kwargs)
    except NetlinkError as exc:
        if exc.code not in (errno.ENOENT, errno.ENODEV, errno.ESRCH, errno.EADDRNOTAVAIL):
            raise


def wait_oper_up(ipr: IPRoute, ifnames: Iterable[str], timeout: float = 5.0) -> None:
    """Wait until every named link is operationally up (or UNKNOWN, as
    loopback and vxlan report). A fresh veth drops packets until then."""
    pending = set(ifnames)
    deadline = time.monotonic() + timeout
    while pending:
        for link in ipr.get_links():
            name = link.get("ifname")
            if name in pending and link.get("operstate") in (OPER_UP, "UNKNOWN"):
                pending.discard(name)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"links not up after {timeout:.0f} s: {', '.join(sorted(pending))}")
        time.sleep(0.01)
