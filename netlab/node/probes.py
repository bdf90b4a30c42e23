"""Readiness checks the way kubelet runs them: TCP connects and HTTP GETs
from the pod's node, commands inside the pod.

TCP checks of one node go out together: non-blocking sockets made inside the
node's namespace, one poll for all of them, so probing hundreds of pods costs
a few milliseconds.
"""

from __future__ import annotations

import errno
import select
import socket
import subprocess
import time
from collections.abc import Sequence
from ipaddress import IPv4Address

from netlab.realize import netns

Target = tuple[IPv4Address, int]


def _sockets(node_path: str, count: int) -> list[socket.socket]:
    with netns.entered(node_path):
        return [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]


def tcp_many(node_path: str, targets: Sequence[Target], timeout: float) -> dict[Target, bool]:
    """Whether each ip:port accepts a TCP connection from the node, within timeout."""
    results = dict.fromkeys(targets, False)
    if not targets:
        return results
    socks = _sockets(node_path, len(targets))
    poller = select.poll()
    pending: dict[int, tuple[socket.socket, Target]] = {}
    try:
        for sock, target in zip(socks, targets, strict=True):
            sock.setblocking(False)
            code = sock.connect_ex((str(target[0]), target[1]))
            if code == 0:
                results[target] = True
            elif code in (errno.EINPROGRESS, errno.EAGAIN):
                pending[sock.fileno()] = (sock, target)
                poller.register(sock, select.POLLOUT | select.POLLERR | select.POLLHUP)
        deadline = time.monotonic() + timeout
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for fd, _event in poller.poll(left * 1000):
                sock, target = pending.pop(fd)
                poller.unregister(fd)
                results[target] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    finally:
        for sock in socks:
            sock.close()
    return results


def http_get(node_path: str, ip: IPv4Address, port: int, path: str, timeout: float) -> bool:
    """kubelet's httpGet: a status from 200 to 399 passes."""
    (sock,) = _sockets(node_path, 1)
    try:
        sock.settimeout(timeout)
        sock.connect((str(ip), port))
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/netlab\r\n"
            "Accept: */*\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(request.encode())
        head = b""
        while b"\r\n" not in head and len(head) < 1024:
            chunk = sock.recv(1024)
            if not chunk:
                break
            head += chunk
        parts = head.split(b" ", 2)
        return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
    except OSError:
        return False
    finally:
        sock.close()


def run_command(entry: Sequence[str], argv: Sequence[str], timeout: float) -> bool:
    """kubelet's exec: the command, run in the container (`entry` enters it), exits 0."""
    try:
        done = subprocess.run(
            [*entry, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
        )
    except (subprocess.TimeoutExpired, OSError):
        return False
    return done.returncode == 0
