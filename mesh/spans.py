"""Zipkin v2 spans off the request path: a bounded buffer and a shipper.

The data path only appends a finished span dict to the `SpanRecorder` (a
deque append, nothing else); the `SpanShipper` task wakes every `interval`,
takes batches and POSTs them to the lab's collector (Zipkin's
`POST /api/v2/spans`), as Envoy's Zipkin tracer does. Spans are telemetry:
when the collector is down or slow a batch is counted as failed and dropped,
and when there is no collector yet the buffer keeps at most `limit` spans
(the oldest go first). Nothing here ever slows down or fails a request.

The shipper's socket is made by hand so that it carries the sidecar's
`SO_MARK` from before the SYN: the pod's nftables interception returns on
that mark, so the POST is not redirected into the sidecar's own outbound
listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from mesh.http1 import marked_socket

log = logging.getLogger("mesh.spans")

SPANS_PATH = "/api/v2/spans"
MAX_ANSWER = 64 << 10  # what is read of a collector's answer before closing
WARN_EVERY = 30.0  # seconds between two warnings about failed shipping


class SpanRecorder:
    """A bounded FIFO of finished spans, with the counters `/stats` shows."""

    def __init__(self, limit: int = 10000) -> None:
        self.limit = max(1, int(limit))
        self._spans: deque[dict] = deque()
        self.recorded = 0
        self.dropped = 0
        self._shipped = 0
        self._failed = 0

    def record(self, span: dict) -> None:
        """Keep a finished span; beyond `limit` the oldest one is dropped."""
        spans = self._spans
        if len(spans) >= self.limit:
            spans.popleft()
            self.dropped += 1
        spans.append(span)
        self.recorded += 1

    def take(self, n: int) -> list[dict]:
        """Remove and return up to `n` of the oldest spans."""
        spans = self._spans
        count = min(max(0, n), len(spans))
        return [spans.popleft() for _ in range(count)]

    def shipped(self, n: int) -> None:
        """The shipper delivered `n` spans."""
        self._shipped += n

    def failed(self, n: int) -> None:
        """The shipper could not deliver `n` spans (they are gone)."""
        self._failed += n

    def __len__(self) -> int:
        return len(self._spans)

    @property
    def stats(self) -> dict[str, int]:
        return {
            "recorded": self.recorded,
            "dropped": self.dropped,
            "shipped": self._shipped,
            "failed": self._failed,
            "pending": len(self._spans),
        }


class SpanShipper:
    """POSTs the recorder's spans in batches to the collectors, rotating between them.

    `collectors` is called before every batch, so a new route table's
    collector endpoints are used as soon as they are swapped in.
    """

    def __init__(
        self,
        recorder: SpanRecorder,
        collectors: Callable[[], Sequence[tuple[str, int]]],
        mark: int | None,
        interval: float = 0.5,
        batch: int = 500,
        timeout: float = 2.0,
    ) -> None:
        self.recorder = recorder
        self.collectors = collectors
        self.mark = mark
        self.interval = interval
        self.batch = max(1, int(batch))
        self.timeout = timeout
        self._turn = 0  # rotation over the collectors
        self._last_warning = float("-inf")
        self._quiet_failures = 0  # failures since the last warning

    async def run(self) -> None:
        """Ship what is pending every `interval` seconds, until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._drain(None)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end the shipping for good
                log.exception("span shipping failed")

    async def flush(self) -> None:
        """Ship what is pending now, once, within `timeout` seconds; never raises
        (used at shutdown: what cannot be sent in time is lost)."""
        try:
            async with asyncio.timeout(self.timeout):
                await self._drain(len(self.recorder))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._warn(f"flush incomplete: {_reason(exc)}")

    def _targets(self) -> Sequence[tuple[str, int]]:
        try:
            return tuple(self.collectors() or ())
        except Exception as exc:
            self._warn(f"no collector list: {_reason(exc)}")
            return ()

    async def _drain(self, budget: int | None) -> None:
        """Ship batches while spans are pending (at most `budget` spans if given).

        A round stops early once every collector failed once in it: the next
        round, `interval` later, tries again, rather than spinning through
        the whole buffer against a collector that is down.
        """
        failures = 0
        while len(self.recorder) and (budget is None or budget > 0):
            targets = self._targets()
            if not targets:
                return  # no collector (yet): the recorder keeps up to its limit
            target = targets[self._turn % len(targets)]
            self._turn += 1
            size = self.batch if budget is None else min(self.batch, budget)
            spans = self.recorder.take(size)
            if budget is not None:
                budget -= len(spans)
            if await self._ship(target, spans):
                self.recorder.shipped(len(spans))
            else:
                self.recorder.failed(len(spans))
                failures += 1
                if failures >= len(targets):
                    return

    async def _ship(self, target: tuple[str, int], spans: list[dict]) -> bool:
        """One POST of `spans` to `target`; False (logged) on any failure."""
        host, port = target[0], int(target[1])
        try:
            async with asyncio.timeout(self.timeout):
                status = await self._post(host, port, spans)
        except asyncio.CancelledError:
            self.recorder.failed(len(spans))  # in flight when flush() ran out of time
            raise
        except Exception as exc:  # refused, reset, timed out, not HTTP: the batch is lost
            self._warn(f"cannot ship {len(spans)} spans to {host}:{port}: {_reason(exc)}")
            return False
        if not 200 <= status < 300:
            self._warn(f"collector {host}:{port} answered {status} to {len(spans)} spans")
            return False
        return True

    async def _post(self, host: str, port: int, spans: list[dict]) -> int:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if _is_ipv6(host) else socket.AF_INET
        sock = marked_socket(self.mark, family)
        writer = None
        try:
            await loop.sock_connect(sock, (host, port))
            body = zipkin_json(spans)  # once connected: a collector that is down costs nothing
            reader, writer = await asyncio.open_connection(sock=sock)
            hostport = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
            writer.write(
                (
                    f"POST {SPANS_PATH} HTTP/1.1\r\n"
                    f"Host: {hostport}\r\n"
                    "Content-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n"
                ).encode("latin-1")
                + body
            )
            await writer.drain()
            line = await reader.readline()
            parts = line.split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
                raise ValueError(f"not an HTTP answer: {line[:60]!r}")
            status = int(parts[1])
            with contextlib.suppress(OSError):  # read the rest, politely, up to a bound
                seen = 0
                while seen < MAX_ANSWER and (chunk := await reader.read(MAX_ANSWER)):
                    seen += len(chunk)
            return status
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            else:
                sock.close()

    def _warn(self, message: str) -> None:
        """A warning at most every WARN_EVERY seconds, the rest at debug level."""
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY:
            suppressed = self._quiet_failures
            self._last_warning, self._quiet_failures = now, 0
            more = f" ({suppressed} more since the last warning)" if suppressed else ""
            log.warning("%s%s", message, more)
        else:
            self._quiet_failures += 1
            log.debug("%s", message)


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)  # asyncio's own text repeats the address
    return str(exc) or type(exc).__name__


def zipkin_json(spans: Sequence[dict[str, Any]]) -> bytes:
    """The POST body for `spans` (what the shipper sends)."""
    return json.dumps(list(spans), separators=(",", ":"), default=str).encode()
