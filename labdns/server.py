"""Sockets: UDP in a thread (batched recvmmsg/sendmmsg), TCP on asyncio streams.

Both are bound to the same address and port. The UDP thread runs the fast
path without the event loop in the way; the event loop (TCP, the watch
streams, table rebuilds) shares the GIL with it but only works when something
happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Callable

from labdns import mmsg

log = logging.getLogger("labdns")

TCP_IDLE = 10.0  # seconds a TCP connection may sit idle (CoreDNS's default)
TCP_MAX_CONNECTIONS = 512
RCVBUF = 4 << 20
POLL = 0.2  # the UDP thread checks for shutdown this often

Answer = Callable[..., "bytes | None"]


def parse_listen(text: str) -> tuple[str, int]:
    """`0.0.0.0:53`, `[::1]:5353`, `:53` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen wants HOST:PORT, got {text!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bind_pair(host: str, port: int, tries: int = 20) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to the same host and port (an ephemeral one for port 0)."""
    fam = _family(host)
    for _ in range(tries if port == 0 else 1):
        udp = socket.socket(fam, socket.SOCK_DGRAM)
        tcp = socket.socket(fam, socket.SOCK_STREAM)
        try:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            udp.bind((host, port))
            tcp.bind((host, udp.getsockname()[1]))
            tcp.listen(128)
            return udp, tcp
        except OSError:
            udp.close()
            tcp.close()
            if port != 0:
                raise
    raise OSError(f"no free port for both UDP and TCP on {host}")


def _tune_udp(sock: socket.socket) -> None:
    for opt in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if opt is None:
            continue
        try:  # FORCE (root) lifts this one socket past rmem_max; sysctls stay untouched
            sock.setsockopt(socket.SOL_SOCKET, opt, RCVBUF)
            break
        except OSError:
            continue
    sock.setblocking(True)
    sec, usec = int(POLL), int((POLL % 1) * 1e6)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", sec, usec))


class UdpThread:
    """Answers UDP queries in a thread until stop()."""

    def __init__(self, sock: socket.socket, answer: Answer, batched: bool | None = None):
        self.sock = sock
        self.answer = answer
        self.batched = mmsg.available() if batched is None else batched
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="labdns-udp", daemon=True)
        _tune_udp(sock)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            if self.batched:
                self._run_batched()
            else:
                self._run_plain()
        except Exception:  # log why UDP died instead of dying silently
            log.exception("UDP loop failed")

    def _run_batched(self) -> None:
        batch = mmsg.MsgBatch(self.sock)
        stop, serve, answer = self._stop.is_set, batch.serve_once, self.answer
        while not stop():
            serve(answer)

    def _run_plain(self) -> None:
        recv, send, answer, stop = self.sock.recvfrom, self.sock.sendto, self.answer, self._stop
        while not stop.is_set():
            try:
                data, peer = recv(65535)
            except (BlockingIOError, TimeoutError, InterruptedError):
                continue
            try:
                resp = answer(data)
                if resp is not None:
                    send(resp, peer)
            except Exception:  # one bad query or peer must not stop the loop
                continue


class DnsServer:
    """UDP + TCP on one address; `start()` binds, `stop()` closes everything."""

    def __init__(self, answer: Answer, host: str, port: int, batched: bool | None = None):
        self.answer = answer
        self.host, self.port = host, port
        self.batched = batched
        self.udp: UdpThread | None = None
        self._tcp_server: asyncio.Server | None = None
        self._conns: set[asyncio.Task] = set()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    async def start(self) -> None:
        try:
            udp, tcp = bind_pair(self.host, self.port)
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot listen on {self.host}:{self.port}: {exc.strerror}"
            ) from exc
        self.port = udp.getsockname()[1]
        self.udp = UdpThread(udp, self.answer, self.batched)
        self._tcp_server = await asyncio.start_server(self._tcp_client, sock=tcp)
        self.udp.start()
        mode = "recvmmsg batches" if self.udp.batched else "recvfrom"
        log.info("listening on %s:%d (UDP with %s, TCP)", self.host, self.port, mode)

    async def stop(self) -> None:
        if self._tcp_server is not None:
            self._tcp_server.close()
            for task in list(self._conns):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp_server.wait_closed(), 2)
        if self.udp is not None:
            await asyncio.to_thread(self.udp.stop)
            self.udp.sock.close()

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._conns) >= TCP_MAX_CONNECTIONS or task is None:
            writer.close()
            return
        self._conns.add(task)
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
                size = int.from_bytes(head, "big")
                query = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE)
                try:
                    resp = self.answer(query, True)
                except Exception:  # drop the query, keep the connection
                    resp = None
                if resp is not None:
                    writer.write(len(resp).to_bytes(2, "big") + resp)
                    await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._conns.discard(task)
            writer.close()
