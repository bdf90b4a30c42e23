"""labdns keeps a flat memory over a long, bounded run of good, bad and
never-seen queries (no per-query state survives a query)."""

from __future__ import annotations

import random
import socket
import struct

from dnslib import DNSRecord

from tests.unit.test_labdns_records import cluster_objects
from tests.unit.test_labdns_server import running_server, udp_ask, write_records

ROUNDS = 4
PER_ROUND = 6000  # queries per round, a third each good, unknown names, garbage


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def burst(port: int, rng: random.Random) -> None:
    """PER_ROUND datagrams, at most 64 in flight, answers drained."""
    names = ["web.default.svc.cluster.local", "nosuch.default.svc.cluster.local"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.setblocking(False)
        for i in range(PER_ROUND):
            kind = i % 3
            if kind == 0:
                packet = DNSRecord.question(names[0], "A").pack()
            elif kind == 1:  # a fresh unknown name every time: nothing may be cached for it
                packet = DNSRecord.question(f"n{rng.getrandbits(48):x}.{names[1]}", "A").pack()
            else:
                packet = struct.pack("!H", i) + rng.randbytes(rng.randrange(0, 80))
            s.sendto(packet, ("127.0.0.1", port))
            if i % 64 == 63:
                try:
                    while s.recv(65535):
                        pass
                except BlockingIOError:
                    pass


def test_memory_stays_flat(tmp_path):
    records = write_records(tmp_path / "records.json", cluster_objects())
    rng = random.Random(7)
    with running_server("--records", str(records), tmp=tmp_path) as (port, proc, _log):
        burst(port, rng)  # warm-up: code paths, caches of packed answers
        before = rss_kib(proc.pid)
        for _ in range(ROUNDS):
            burst(port, rng)
        after = rss_kib(proc.pid)
        assert udp_ask(port, DNSRecord.question("web.default.svc.cluster.local").pack())
    assert after - before < 2048, f"RSS grew from {before} to {after} KiB"
