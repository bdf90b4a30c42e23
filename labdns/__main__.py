"""CLI: python -m labdns --listen HOST:PORT (--api-socket PATH | --records FILE) ...

Loads (or lists) the objects first and binds UDP+TCP only then, so a port
that accepts connections means a synced server. Logs one line per table
rebuild. SIGTERM/SIGINT: close the sockets and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path

from labdns.answers import Answerer
from labdns.records import Memo, build_table
from labdns.server import DnsServer, parse_listen
from labdns.source import Objects, SourceError, make_source
from labdns.wire import to_wire
from labwatch import serve_synced

log = logging.getLogger("labdns")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m labdns", description="The lab's DNS server.")
    p.add_argument("--listen", required=True, help="HOST:PORT for UDP and TCP, e.g. 0.0.0.0:53")
    p.add_argument("--zone", default="cluster.local", help="cluster domain (default cluster.local)")
    p.add_argument("--ttl", type=int, default=5, help="TTL of every record (default 5)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--api-socket", help="the lab API's unix socket (list + watch)")
    src.add_argument("--records", help='a JSON file {"items": [Service, Endpoints, Pod...]}')
    p.add_argument("--ready-file", help="written (HOST:PORT) once synced and listening")
    args = p.parse_args(argv)
    try:
        args.host, args.port = parse_listen(args.listen)
    except ValueError as exc:
        p.error(str(exc))
    try:
        to_wire(args.zone)
    except (ValueError, UnicodeError):
        p.error(f"--zone {args.zone!r} is not a domain name")
    if not 0 <= args.ttl <= 0x7FFFFFFF:
        p.error("--ttl must be between 0 and 2147483647")
    return args


class Rebuilder:
    """Coalesces changes into one table rebuild per loop turn, then swaps it in."""

    def __init__(self, objects: Objects, answerer: Answerer, zone: str, ttl: int):
        self.objects, self.answerer, self.zone, self.ttl = objects, answerer, zone, ttl
        self.serial = int(time.time())
        self.memo = Memo()
        self._pending = False

    def changed(self) -> None:
        if not self._pending:
            self._pending = True
            asyncio.get_running_loop().call_soon(self.rebuild)

    def rebuild(self) -> None:
        self._pending = False
        start = time.perf_counter()
        self.serial = max(self.serial + 1, int(time.time())) & 0xFFFFFFFF
        services, endpoints, pods = self.objects.lists()
        table = build_table(
            services, endpoints, pods, self.zone, self.ttl, self.serial, memo=self.memo
        )
        self.answerer.update(table)
        ms = (time.perf_counter() - start) * 1000
        s = table.stats
        log.info(
            "table rebuilt: %d services, %d endpoints, %d pods -> %d names, %d records"
            " (%d skipped), serial %d, in %.1f ms",
            s["services"],
            len(endpoints),
            s["pods"],
            s["names"],
            s["records"],
            s["skipped"],
            self.serial,
            ms,
        )


def _write_ready(path: str, host: str, port: int) -> None:
    tmp = Path(f"{path}.tmp{os.getpid()}")
    tmp.write_text(f"{host}:{port}\n")
    tmp.replace(path)


async def run(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    objects = Objects()
    answerer = Answerer()
    rebuilder = Rebuilder(objects, answerer, args.zone, args.ttl)
    source = make_source(objects, rebuilder.changed, args.api_socket, args.records)
    server = DnsServer(answerer.answer, args.host, args.port)

    async def synced() -> None:
        rebuilder.rebuild()
        await server.start()
        if args.ready_file:
            _write_ready(args.ready_file, args.host, server.port)

    try:
        return await serve_synced(source, stop, synced)
    finally:
        await server.stop()
        await source.close()
        if args.ready_file:
            with contextlib.suppress(OSError):
                Path(args.ready_file).unlink()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="labdns: %(message)s")
    try:
        return asyncio.run(run(args))
    except SourceError as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:  # cannot bind, cannot write the ready file
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
