"""One capture: packet sockets on every chosen interface, merged into one
pcapng stream in time order, bounded by a packet count and/or a duration.

Every pcapng block is written whole, so the output is a valid file at every
moment: after the count, the duration, Ctrl-C, SIGTERM, a closed pipe, or
the lab going away underneath (its interfaces vanish: the capture ends).
"""

from __future__ import annotations

import heapq
import itertools
import selectors
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from netlab.capture.pcapng import PcapngWriter
from netlab.capture.sockets import Interface, PacketSocket

HOLDBACK_NS = 50_000_000  # packets wait this long so later reads of earlier packets sort first
LAB_CHECK = 0.5  # seconds between checks that the lab still exists
Summary = Callable[[int, str, int, bytes], None]  # (index, interface label, ts ns, frame)


@dataclass
class Result:
    packets: int = 0
    bytes: int = 0
    reason: str = ""
    per_interface: dict[str, int] = field(default_factory=dict)


class CaptureSession:
    def __init__(
        self,
        interfaces: list[Interface],
        program: list | None = None,
        names: list[tuple[str, str]] | None = None,
        count: int | None = None,
        duration: float | None = None,
        on_packet: Summary | None = None,
        lab_alive: Callable[[], bool] | None = None,
    ):
        self.interfaces = interfaces
        self.program = program
        self.names = names or []
        self.count = count
        self.duration = duration
        self.on_packet = on_packet
        # an open socket keeps its namespace alive after the lab unmounts it,
        # so the lab's going is noticed by asking, not by the sockets
        self.lab_alive = lab_alive
        self.sockets: list[PacketSocket] = []
        self.stop_reason: str | None = None

    def open(self) -> None:
        """Open every socket first (a wrong interface fails before any output)."""
        try:
            for interface in self.interfaces:
                self.sockets.append(PacketSocket(interface, self.program))
        except BaseException:
            self.close()
            raise

    def stop(self, reason: str) -> None:
        """Ask the loop to end (safe from a signal handler)."""
        self.stop_reason = self.stop_reason or reason

    def run(self, output: BinaryIO) -> Result:
        """Capture into `output` until the count, the duration, stop() or a
        closed output ends it."""
        writer = PcapngWriter(output)
        ids = [writer.add_interface(s.interface.label, s.interface.ifname) for s in self.sockets]
        if self.names:
            writer.write_names(self.names)
        writer.flush()
        result = Result(per_interface={s.interface.label: 0 for s in self.sockets})
        selector = selectors.DefaultSelector()
        for index, sock in enumerate(self.sockets):
            selector.register(sock, selectors.EVENT_READ, index)
        pending: list[tuple[int, int, int, bytes, bool]] = []  # heap: (ts, seq, iface, frame, out)
        sequence = itertools.count()
        deadline = time.monotonic() + self.duration if self.duration else None
        open_sockets = len(self.sockets)
        next_check = time.monotonic() + LAB_CHECK

        def emit(upto_ns: int | None) -> None:
            while pending and (upto_ns is None or pending[0][0] <= upto_ns):
                if self.count is not None and result.packets >= self.count:
                    pending.clear()
                    return
                ts, _, index, frame, outbound = heapq.heappop(pending)
                writer.write_packet(ids[index], ts, frame, len(frame), outbound)
                label = self.sockets[index].interface.label
                result.packets += 1
                result.bytes += len(frame)
                result.per_interface[label] += 1
                if self.on_packet:
                    self.on_packet(result.packets, label, ts, frame)
            writer.flush()

        try:
            while self.stop_reason is None and open_sockets:
                timeout = 0.05
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self.stop("duration")
                        break
                    timeout = min(timeout, remaining)
                for key, _ in selector.select(timeout):
                    try:
                        packets = self.sockets[key.data].read()
                    except OSError:  # the interface went away (lab torn down)
                        selector.unregister(key.fileobj)
                        open_sockets -= 1
                        continue
                    for ts, frame, outbound in packets:
                        heapq.heappush(pending, (ts, next(sequence), key.data, frame, outbound))
                if pending:
                    emit(time.time_ns() - HOLDBACK_NS)
                if self.count is not None and result.packets >= self.count:
                    self.stop("count")
                if self.lab_alive and time.monotonic() >= next_check:
                    next_check = time.monotonic() + LAB_CHECK
                    if not self.lab_alive():
                        self.stop("the lab going down")
            if not open_sockets:
                self.stop("interfaces gone")
            emit(None)
        except BrokenPipeError:
            self.stop("output closed")
        finally:
            selector.close()
        result.reason = self.stop_reason or "stopped"
        return result

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets = []


def stop_on_signals(session: CaptureSession) -> Callable[[], None]:
    """SIGINT and SIGTERM end the capture cleanly; returns a function that
    restores the previous handlers."""
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, lambda signum, _frame: session.stop(f"signal {signum}"))

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
