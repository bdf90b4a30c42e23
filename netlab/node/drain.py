"""Connection draining: a pod that has left its Services' endpoints keeps running while
clients that connected to it before still hold connections open, for at most a limit,
as a load balancer drains a target it deregisters (AWS's deregistration delay, Envoy's
drain). No new connection reaches it once the nodes' rules lost it; one made just
before (its request not yet sent, e.g. by a client the CPU has not run) is answered
instead of reset when the pod's processes end.

A pod's connections are read from its network namespace's /proc/net/tcp and tcp6: an
accepted connection is one in ESTABLISHED or SYN_RECV on a port something listens on,
from a peer outside the pod (a sidecar's connections to its own app do not count).
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Iterable

from netlab.realize import netns

ESTABLISHED, SYN_RECV, LISTEN = 0x01, 0x03, 0x0A
POLL = 0.02  # seconds between looks


def _address(field: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """An `ADDR:PORT` of /proc/net/tcp(6): the address in the kernel's byte order, 32
    bits at a time, the port in hex."""
    text, port = field.rsplit(":", 1)
    raw = bytes.fromhex(text)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words), int(port, 16)


def _local_peer(local, remote) -> bool:
    if remote.version == 6 and remote.ipv4_mapped is not None:
        remote = remote.ipv4_mapped
    if local.version == 6 and local.ipv4_mapped is not None:
        local = local.ipv4_mapped
    return remote.is_loopback or remote == local


def accepted_connections(tables: Iterable[str]) -> int:
    """How many connections in these /proc/net/tcp(6) texts a listener in the namespace
    accepted (or is accepting) from a peer outside it."""
    listening: set[int] = set()
    open_ones: list[tuple[int, bool]] = []  # (local port, from inside the pod)
    for text in tables:
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) < 4:
                continue
            try:
                local, port = _address(fields[1])
                remote, _ = _address(fields[2])
                state = int(fields[3], 16)
            except ValueError:
                continue
            if state == LISTEN:
                listening.add(port)
            elif state in (ESTABLISHED, SYN_RECV):
                open_ones.append((port, _local_peer(local, remote)))
    return sum(1 for port, inside in open_ones if port in listening and not inside)


def connections_of(netns_path: str) -> int:
    """Accepted connections from outside in the network namespace at `netns_path` (0 if
    it is gone)."""
    tables = []
    try:
        with netns.entered(netns_path):
            for name in ("tcp", "tcp6"):
                with contextlib.suppress(FileNotFoundError):
                    with open(f"/proc/thread-self/net/{name}") as f:
                        tables.append(f.read())
    except OSError:
        return 0
    return accepted_connections(tables)


def wait_drained(netns_paths: Iterable[str], minimum: float, maximum: float) -> float:
    """Wait `minimum` seconds, then until no namespace has a connection from outside, for
    `maximum` seconds at most from the start; the seconds waited."""
    start = time.monotonic()
    time.sleep(minimum)
    pending = list(netns_paths)
    while pending and time.monotonic() - start < maximum:
        pending = [path for path in pending if connections_of(path)]
        if pending:
            time.sleep(POLL)
    return time.monotonic() - start
