"""labdns: the CLI as other code runs it, over real UDP and TCP sockets on 127.0.0.1.

`python -m labdns --listen 127.0.0.1:0 --records FILE --ready-file PATH`: the
ready file appears (HOST:PORT) once the records are loaded and both sockets
are bound; SIGTERM ends it with status 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib import DNSRecord

from labdns import mmsg
from labdns.server import DnsServer, parse_listen
from tests.unit.test_labdns_records import (
    BIG,
    cluster_objects,
    make_answerer,
    query,
    rrs,
    service,
)

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def running_server(*source_args: str, tmp: Path) -> Iterator[tuple[int, subprocess.Popen, Path]]:
    """Start the CLI on an ephemeral port; yield (port, process, log path); SIGTERM at the end."""
    ready = tmp / f"ready-{time.monotonic_ns()}"
    log = tmp / f"{ready.name}.log"
    cmd = [sys.executable, "-m", "labdns", "--listen", "127.0.0.1:0", "--ready-file", str(ready)]
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [*cmd, *source_args], cwd=REPO, stderr=err, stdin=subprocess.DEVNULL
        )
    try:
        deadline = time.monotonic() + 15
        while not ready.exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"not ready in time:\n{log.read_text()}"
            time.sleep(0.01)
        port = int(ready.read_text().strip().rsplit(":", 1)[1])
        yield port, proc, log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise


def write_records(path: Path, objects: list[dict]) -> Path:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"items": objects}))
    tmp.replace(path)
    return path


def udp_ask(port: int, packet: bytes, timeout: float = 2.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def recv_exact(s: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = s.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def tcp_ask(port: int, *packets: bytes) -> list[bytes]:
    """Send the packets on one connection (pipelined), read one answer each."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"".join(struct.pack("!H", len(p)) + p for p in packets))
        return [recv_exact(s, struct.unpack("!H", recv_exact(s, 2))[0]) for _ in packets]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[int, subprocess.Popen, Path]]:
    tmp = tmp_path_factory.mktemp("labdns")
    records = write_records(tmp / "records.json", cluster_objects())
    with running_server("--records", str(records), tmp=tmp) as running:
        yield running


def test_udp_and_tcp_on_the_same_port(server):
    port = server[0]
    raw = udp_ask(port, query("web.default.svc.cluster.local"))
    assert rrs(DNSRecord.parse(raw).rr) == {"web.default.svc.cluster.local. A 10.96.0.10"}
    (raw,) = tcp_ask(port, query("web.default.svc.cluster.local"))
    assert rrs(DNSRecord.parse(raw).rr) == {"web.default.svc.cluster.local. A 10.96.0.10"}


def test_synced_before_listening(server):
    log = server[2].read_text()
    assert log.index("table rebuilt") < log.index("listening on 127.0.0.1:")


def test_truncated_over_udp_whole_over_tcp(server):
    port = server[0]
    q = query("_http._tcp.big.default.svc.cluster.local", "SRV", edns=4096)
    resp = DNSRecord.parse(udp_ask(port, q))
    assert resp.header.tc == 1 and not resp.rr
    (raw,) = tcp_ask(port, q)
    assert len(raw) > 1232 and len(DNSRecord.parse(raw).rr) == BIG
    resp = DNSRecord.parse(udp_ask(port, query("big.default.svc.cluster.local")))
    assert resp.header.tc == 1  # 40 A records do not fit in 512 bytes
    resp = DNSRecord.parse(udp_ask(port, query("big.default.svc.cluster.local", edns=1232)))
    assert resp.header.tc == 0 and len(resp.rr) == BIG


def test_tcp_pipelined_queries_come_back_in_order(server):
    names = [f"{n}.default.svc.cluster.local" for n in ("web", "db", "nope", "big")]
    answers = tcp_ask(server[0], *(query(n, qid=i) for i, n in enumerate(names)))
    assert [DNSRecord.parse(a).header.id for a in answers] == [0, 1, 2, 3]
    assert [DNSRecord.parse(a).header.rcode for a in answers] == [0, 0, 3, 0]


def test_qr_set_gets_no_answer_and_the_server_goes_on(server):
    q = bytearray(query("web.default.svc.cluster.local"))
    q[2] |= 0x80
    assert udp_ask(server[0], bytes(q), timeout=0.3) is None
    assert udp_ask(server[0], query("web.default.svc.cluster.local")) is not None


def test_out_of_zone_is_refused_not_forwarded(server):
    resp = DNSRecord.parse(udp_ask(server[0], query("example.com")))
    assert resp.header.rcode == 5 and not resp.rr


def test_tcp_half_messages_and_idle_connections_do_not_hurt(server):
    port = server[0]
    with socket.create_connection(("127.0.0.1", port)) as idle:
        with socket.create_connection(("127.0.0.1", port)) as half:
            half.sendall(b"\x00\x40\x12\x34")  # promises 64 bytes, sends 2, then goes away
        idle.sendall(b"\x00")
        assert tcp_ask(port, query("web.default.svc.cluster.local"))


def test_records_file_changes_are_picked_up(tmp_path):
    records = write_records(tmp_path / "r.json", [service("one", cluster_ip="10.96.1.1")])
    with running_server("--records", str(records), tmp=tmp_path) as (port, _, _):
        assert (
            DNSRecord.parse(udp_ask(port, query("two.default.svc.cluster.local"))).header.rcode == 3
        )
        write_records(records, [service("two", cluster_ip="10.96.2.2")])
        deadline = time.monotonic() + 5
        while DNSRecord.parse(udp_ask(port, query("two.default.svc.cluster.local"))).header.rcode:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert (
            DNSRecord.parse(udp_ask(port, query("one.default.svc.cluster.local"))).header.rcode == 3
        )


def test_sigterm_exits_zero_and_removes_the_ready_file(tmp_path):
    records = write_records(tmp_path / "r.json", cluster_objects())
    with running_server("--records", str(records), tmp=tmp_path) as (_, proc, _):
        ready = next(tmp_path.glob("ready-*[0-9]"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert not ready.exists()


def test_a_bad_records_file_fails_without_listening(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    proc = subprocess.run(
        [sys.executable, "-m", "labdns", "--listen", "127.0.0.1:0", "--records", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode != 0 and "bad.json" in proc.stderr


def test_cli_arguments_are_checked():
    for args in (["--listen", "nope"], ["--listen", "127.0.0.1:53"], []):
        proc = subprocess.run(
            [sys.executable, "-m", "labdns", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=20,
            env={**os.environ},
        )
        assert proc.returncode == 2, proc.stderr


@pytest.mark.parametrize(
    "host, batched",
    [("127.0.0.1", False), ("127.0.0.1", True), ("::1", True), ("::1", False)],
)
def test_in_process_server_batched_and_plain(host, batched):
    """recvmmsg batches and the plain recvfrom fallback, IPv4 and IPv6 loopback."""
    if host == "::1" and not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    if batched and not mmsg.available():
        pytest.skip("no recvmmsg/sendmmsg in this libc")
    answerer = make_answerer()

    def ask_all(port: int) -> list:
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            for i in range(50):  # a burst: several queries per batch
                s.sendto(query("web.default.svc.cluster.local", qid=i), (host, port))
            got = sorted(DNSRecord.parse(s.recv(4096)).header.id for _ in range(50))
        with socket.create_connection((host, port), timeout=2) as t:
            t.sendall(struct.pack("!H", len(query("db.default.svc.cluster.local"))))
            t.sendall(query("db.default.svc.cluster.local"))
            size = struct.unpack("!H", recv_exact(t, 2))[0]
            tcp_rrs = len(DNSRecord.parse(recv_exact(t, size)).rr)
        return [got, tcp_rrs]

    async def main():
        server = DnsServer(answerer.answer, host, 0, batched=batched)
        try:
            await server.start()
        except OSError as exc:
            pytest.skip(f"cannot bind {host}: {exc}")
        try:
            assert server.udp.batched == batched
            return await asyncio.to_thread(ask_all, server.port)
        finally:
            await server.stop()

    got, tcp_rrs = asyncio.run(main())
    assert got == list(range(50)) and tcp_rrs == 2


@pytest.mark.parametrize(
    "text, want",
    [("0.0.0.0:53", ("0.0.0.0", 53)), ("[::1]:5353", ("::1", 5353)), (":53", ("0.0.0.0", 53))],
)
def test_parse_listen(text, want):
    assert parse_listen(text) == want
