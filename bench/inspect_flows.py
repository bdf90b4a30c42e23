"""Flow summary of `netlab inspect --flows` against tshark's conv,ip.

The capture is generated here with netlab's pcapng writer: overlay traffic
of a lab of 2 racks x 4 nodes, as the nodes' eth0 see it (VXLAN, UDP 8472,
VNI 1, between node underlay addresses) plus some same-node traffic on
cni0 (not encapsulated). Inside: HTTP-ish keep-alive connections from
client pods to Service endpoints (requests carry traceparent and
x-request-id), DNS queries to the lab's DNS pod, and one-way UDP metrics;
several hundred flows in all, the same flows at every size, more packets
per flow for bigger files. The address book goes beside it (FILE.names.json).

For each size, interleaved for --runs rounds: `netlab inspect --flows -o json
FILE` and `tshark -n -q -d udp.port==8472,vxlan -z conv,ip -r FILE`, each as a
child process, wall time and peak RSS (os.wait4's ru_maxrss). Before any
timing counts, the IP conversations netlab reports must be tshark's: same
pairs, same frames each way, same bytes (compared as tshark prints them: it
rounds bytes down to kB/MB/GB from 10 units up). A mismatch fails the bench.

    python bench/inspect_flows.py                          # 100k and 1M packets, 3 rounds
    python bench/inspect_flows.py --packets 20000 --runs 1 # a quick look
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import common
from common import fmt, goal, median, paired_ratio, say, table

from netlab.capture.addressbook import AddressBook, Entry, ServicePorts
from netlab.capture.pcapng import PcapngWriter

GOAL_RATIO = 10.0  # netlab packets/s over tshark's
GOAL_1M_SECONDS = 5.0
GOAL_MEMORY_GROWTH = 1.5  # peak RSS at the largest size over the smallest
VXLAN_PORT, VNI = 8472, 1
RACKS, NODES_PER_RACK = 2, 4
TCP_FLOWS, DNS_FLOWS, UDP_FLOWS, LOCAL_FLOWS = 240, 80, 60, 20
T0 = 1_764_000_000 * 10**9


# ---------------------------------------------------------------- the lab


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    ip: str
    node: int  # 1-based


def node_ip(n: int) -> str:
    return f"192.168.{(n - 1) // NODES_PER_RACK + 1}.{10 + n}"


def ip4(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


def mac(text: str) -> bytes:
    return b"\x02" + hashlib.sha256(text.encode()).digest()[:5]


def lab_pods() -> dict[str, list[Pod]]:
    nodes = RACKS * NODES_PER_RACK

    def suffix(i: int) -> str:
        return hashlib.sha256(str(i).encode()).hexdigest()[:5]

    pods = {
        "dns": [Pod(f"netlab-dns-{suffix(0)}", "kube-system", "10.244.1.2", 1)],
        "web": [Pod(f"web-7f9c-{suffix(i)}", "default", f"10.244.{i}.3", i) for i in (2, 5, 7)],
        "api": [Pod(f"api-5d4b-{suffix(i)}", "default", f"10.244.{i}.4", i) for i in (3, 6)],
        "metrics": [Pod(f"metrics-0-{suffix(9)}", "monitoring", "10.244.8.5", 8)],
        "client": [
            Pod(f"client-{k}-{suffix(100 + n * 10 + k)}", "default", f"10.244.{n}.{10 + k}", n)
            for n in range(1, nodes + 1)
            for k in range(3)
        ],
    }
    return pods


SERVICES = {  # deployment -> (namespace, service name, VIP, port, target port)
    "dns": ("kube-system", "kube-dns", "10.96.0.10", 53, 53),
    "web": ("default", "web", "10.96.0.20", 80, 8080),
    "api": ("default", "api", "10.96.0.21", 80, 9000),
}


def address_book(pods: dict[str, list[Pod]]) -> AddressBook:
    book = AddressBook(lab="bench", overlay_port=VXLAN_PORT, vni=VNI)
    for n in range(1, RACKS * NODES_PER_RACK + 1):
        name, rack = f"n{n}", f"rack{(n - 1) // NODES_PER_RACK + 1}"
        book.addresses[node_ip(n)] = Entry("node", name, rack=rack)
        book.addresses[f"10.244.{n}.0"] = Entry("vtep", name, node=name, rack=rack)
        book.addresses[f"10.244.{n}.1"] = Entry("cni", name, node=name, rack=rack)
    for group in pods.values():
        for p in group:
            n = p.node
            book.addresses[p.ip] = Entry(
                "pod", p.name, p.namespace, f"n{n}", f"rack{(n - 1) // NODES_PER_RACK + 1}"
            )
    for deployment, (ns, name, vip, port, target) in SERVICES.items():
        entry = Entry("service", name, ns)
        book.addresses[vip] = entry
        book.services.append(
            ServicePorts(entry.label, vip, (port,), tuple((p.ip, target) for p in pods[deployment]))
        )
    return book


# ---------------------------------------------------------------- packets


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack("!10H", header))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


class Builder:
    """Frames from per-direction templates; IPv4 headers cached by length."""

    def __init__(self):
        self._ip: dict[tuple, bytes] = {}

    def ip(self, src: bytes, dst: bytes, proto: int, payload: int) -> bytes:
        key = (src, dst, proto, payload)
        header = self._ip.get(key)
        if header is None:
            raw = struct.pack(
                "!BBHHHBBH4s4s", 0x45, 0, 20 + payload, 0, 0x4000, 64, proto, 0, src, dst
            )
            header = raw[:10] + struct.pack("!H", _checksum(raw)) + raw[12:]
            self._ip[key] = header
        return header


@dataclass
class Direction:
    """One direction of a flow: its Ethernet header(s) and addresses."""

    inner_eth: bytes
    src: bytes
    dst: bytes
    outer: tuple[bytes, bytes, bytes, int] | None  # outer Ethernet, src, dst, UDP sport


def frame(b: Builder, d: Direction, proto: int, l4: bytes) -> bytes:
    inner = d.inner_eth + b.ip(d.src, d.dst, proto, len(l4)) + l4
    if d.outer is None:
        return inner
    eth, src, dst, sport = d.outer
    udp = struct.pack("!HHHH", sport, VXLAN_PORT, 16 + len(inner), 0)
    vxlan = struct.pack("!BxxxI", 0x08, VNI << 8)
    return eth + b.ip(src, dst, 17, 16 + len(inner)) + udp + vxlan + inner


def tcp(sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 0x50, flags, 64240, 0, 0) + payload


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def dns_query(qid: int, name: str) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)


def dns_answer(query: bytes, address: str) -> bytes:
    head = struct.pack("!HHHHHH", struct.unpack("!H", query[:2])[0], 0x8180, 1, 1, 0, 0)
    rdata = bytes(int(x) for x in address.split("."))
    answer = struct.pack("!HHHIH", 0xC00C, 1, 1, 5, 4) + rdata
    return head + query[12:] + answer


F_FIN, F_SYN, F_PSH_ACK, F_ACK, F_SYN_ACK, F_FIN_ACK = 0x01, 0x02, 0x18, 0x10, 0x12, 0x11


def tcp_flow(b: Builder, up: Direction, down: Direction, sport: int, dport: int, host: str, rng):
    """A keep-alive HTTP connection: handshake, request/response/ack rounds, close."""
    cseq, sseq = rng.randrange(1 << 32), rng.randrange(1 << 32)
    m = 0xFFFFFFFF
    yield 0, frame(b, up, 6, tcp(sport, dport, cseq, 0, F_SYN))
    yield 1, frame(b, down, 6, tcp(dport, sport, sseq, cseq + 1, F_SYN_ACK))
    cseq, sseq = (cseq + 1) & m, (sseq + 1) & m
    yield 0, frame(b, up, 6, tcp(sport, dport, cseq, sseq, F_ACK))
    n = 0
    while True:
        trace = rng.getrandbits(128)
        request = (
            f"GET /items/{n} HTTP/1.1\r\nHost: {host}\r\n"
            f"traceparent: 00-{trace:032x}-{rng.getrandbits(64):016x}-01\r\n"
            f"x-request-id: {trace:032x}\r\n\r\n"
        ).encode()
        body = b'{"ok": true, "n": %d}' % n
        response = (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(body) + body
        )
        yield 0, frame(b, up, 6, tcp(sport, dport, cseq, sseq, F_PSH_ACK, request))
        cseq = (cseq + len(request)) & m
        yield 1, frame(b, down, 6, tcp(dport, sport, sseq, cseq, F_PSH_ACK, response))
        sseq = (sseq + len(response)) & m
        yield 0, frame(b, up, 6, tcp(sport, dport, cseq, sseq, F_ACK))
        n += 1


def dns_flow(b: Builder, up: Direction, down: Direction, sport: int, names: list, rng):
    while True:
        name, address = rng.choice(names)
        query = dns_query(rng.randrange(1 << 16), name)
        yield 0, frame(b, up, 17, udp(sport, 53, query))
        yield 1, frame(b, down, 17, udp(53, sport, dns_answer(query, address)))


def metrics_flow(b: Builder, up: Direction, sport: int, rng):
    while True:
        line = f"requests.count:{rng.randrange(100)}|c|#pod:{sport}".encode()
        yield 0, frame(b, up, 17, udp(sport, 8125, line))


def write_capture(path: Path, packets: int, seed: int = 7) -> tuple[int, int]:
    """The capture and its address book; returns (packets, flows)."""
    rng = random.Random(seed)
    pods = lab_pods()
    book = address_book(pods)
    b = Builder()
    nodes = RACKS * NODES_PER_RACK

    def directions(a: Pod, z: Pod, sport: int) -> tuple[Direction, Direction, int, int]:
        """(client->server, server->client, the interfaces each is seen on)."""
        a_mac, z_mac = mac(a.ip), mac(z.ip)
        if a.node == z.node:  # same node: cni0, no tunnel
            up = Direction(z_mac + a_mac + b"\x08\x00", ip4(a.ip), ip4(z.ip), None)
            down = Direction(a_mac + z_mac + b"\x08\x00", ip4(z.ip), ip4(a.ip), None)
            return up, down, cni[a.node], cni[z.node]
        vtep_a, vtep_z = mac(f"vtep{a.node}"), mac(f"vtep{z.node}")
        eth_a, eth_z = mac(f"eth{a.node}"), mac(f"eth{z.node}")
        node_a, node_z = ip4(node_ip(a.node)), ip4(node_ip(z.node))
        up = Direction(
            vtep_z + vtep_a + b"\x08\x00",
            ip4(a.ip),
            ip4(z.ip),
            (eth_z + eth_a + b"\x08\x00", node_a, node_z, sport),
        )
        down = Direction(
            vtep_a + vtep_z + b"\x08\x00",
            ip4(z.ip),
            ip4(a.ip),
            (eth_a + eth_z + b"\x08\x00", node_z, node_a, sport + 1),
        )
        return up, down, eth[a.node], eth[z.node]

    with open(path, "wb") as stream:
        w = PcapngWriter(stream)
        eth = {
            n: w.add_interface(f"node/n{n}:eth0", f"underlay of n{n}") for n in range(1, nodes + 1)
        }
        cni = {
            n: w.add_interface(f"node/n{n}:cni0", f"pod bridge of n{n}")
            for n in range(1, nodes + 1)
        }
        w.write_names((ip, e.label) for ip, e in book.addresses.items())

        flows = []  # (generator, interface up, interface down, weight)
        clients = pods["client"]
        names = [(f"{s[1]}.{s[0]}.svc.cluster.local", s[2]) for s in SERVICES.values()]
        for i in range(TCP_FLOWS + LOCAL_FLOWS):
            if i < LOCAL_FLOWS:  # a client and a server pod on one node
                server = pods["web"][i % 3] if i % 2 else pods["api"][i % 2]
                client = next(
                    c for c in clients if c.node == server.node and c.ip.endswith(str(10 + i % 3))
                )
            else:
                client = rng.choice(clients)
                server = rng.choice(pods["web"] + pods["api"])
                while server.node == client.node:
                    server = rng.choice(pods["web"] + pods["api"])
            port = 8080 if server.name.startswith("web") else 9000
            sport = 32768 + i * 7
            up, down, ifu, ifd = directions(client, server, 40000 + 2 * i)
            host = "web" if port == 8080 else "api"
            flows.append((tcp_flow(b, up, down, sport, port, host, rng), (ifu, ifd), 6))
        for i in range(DNS_FLOWS):
            client = (
                clients[i % len(clients)] if clients[i % len(clients)].node != 1 else clients[-1]
            )
            up, down, ifu, ifd = directions(client, pods["dns"][0], 50000 + 2 * i)
            flows.append((dns_flow(b, up, down, 40000 + i, names, rng), (ifu, ifd), 2))
        for i in range(UDP_FLOWS):
            client = clients[(i * 5) % len(clients)]
            if client.node == 8:
                client = clients[0]
            up, _down, ifu, _ifd = directions(client, pods["metrics"][0], 60000 + 2 * i)
            flows.append((metrics_flow(b, up, 45000 + i, rng), (ifu, ifu), 1))

        # the interleaving: a fixed random schedule of flows, weighted
        schedule = [k for k, (_g, _i, weight) in enumerate(flows) for _ in range(weight)]
        rng.shuffle(schedule)
        written = 0
        ts = T0
        write = w.write_packet
        while written < packets:
            for k in schedule:
                gen, ifaces, _weight = flows[k]
                way, data = next(gen)
                write(ifaces[way], ts, data)
                written += 1
                ts += 7_000 + (written * 7919) % 5_000
                if written >= packets:
                    break
    book.save(AddressBook.beside(path))
    return written, len(flows)


# ---------------------------------------------------------------- running


@dataclass
class Run:
    seconds: float = float("nan")
    rss_mb: float = float("nan")
    error: str = ""
    output: str = ""


def measure(argv: list[str], out_path: Path, timeout: float) -> Run:
    """Run a child, wait for it with os.wait4: wall time and its peak RSS."""
    with open(out_path, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, cwd=common.REPO)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                common.end_process(proc, 0)
                return Run(error=f"timed out after {timeout:.0f} s")
            time.sleep(0.005)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        return Run(error=f"exit {proc.returncode}: {err.strip()[-300:]}")
    return Run(seconds, usage.ru_maxrss / 1024, output=out_path.read_text())


def tshark_bytes(n: int) -> str:
    """Bytes as tshark 4.0's conv tables print them (format_size, SI, truncating)."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n // scale >= 10:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


_CONV = re.compile(
    r"^(\S+)\s+<->\s+(\S+)\s+(\d+)\s+(\d+ \S+)\s+(\d+)\s+(\d+ \S+)\s+(\d+)\s+(\d+ \S+)\s"
)


def parse_tshark(text: str) -> dict[tuple[str, str], tuple]:
    """{(A, B): (frames B->A, bytes B->A, frames A->B, bytes A->B)} from conv,ip."""
    convs = {}
    for line in text.splitlines():
        m = _CONV.match(line)
        if m:
            a, b, f_ba, b_ba, f_ab, b_ab = m.groups()[:6]
            convs[(a, b)] = (int(f_ba), b_ba, int(f_ab), b_ab)
    return convs


def parse_netlab(text: str) -> dict[tuple[str, str], tuple]:
    convs = {}
    for c in json.loads(text)["ip_conversations"]:
        convs[(c["a"], c["b"])] = (
            c["frames_b_to_a"],
            tshark_bytes(c["bytes_b_to_a"]),
            c["frames_a_to_b"],
            tshark_bytes(c["bytes_a_to_b"]),
        )
    return convs


def compare(ours: dict, theirs: dict) -> list[str]:
    problems = []
    for pair in sorted(set(ours) | set(theirs)):
        if ours.get(pair) != theirs.get(pair):
            problems.append(
                f"{pair[0]} <-> {pair[1]}: netlab {ours.get(pair)}, tshark {theirs.get(pair)}"
            )
    return problems


def tools() -> dict[str, list[str]]:
    """The commands timed: `netlab inspect` through the CLI, and tshark."""
    found = {"netlab": [sys.executable, "-m", "netlab.cli", "inspect", "--flows", "-o", "json"]}
    found["tshark"] = [
        "tshark",
        "-n",
        "-q",
        "-d",
        f"udp.port=={VXLAN_PORT},vxlan",
        "-z",
        "conv,ip",
        "-r",
    ]
    return found


def check(size: int, runs: dict[str, Run]) -> bool:
    """netlab's IP conversations against tshark's, from one round's output."""
    ok = True
    theirs = runs["tshark"]
    for name, run in runs.items():
        if name == "tshark":
            continue
        if run.error or theirs.error:
            say(f"  check {size:,} {name}: cannot compare ({run.error or theirs.error})")
            ok = False
            continue
        problems = compare(parse_netlab(run.output), parse_tshark(theirs.output))
        if problems:
            ok = False
            say(
                f"  check {size:,} {name}: IP conversations DIFFER from tshark's ({len(problems)}):"
            )
            for p in problems[:15]:
                say(f"    {p}")
        else:
            n = len(parse_tshark(theirs.output))
            say(
                f"  check {size:,} {name}: same {n} IP conversations as tshark"
                " (pairs, frames and bytes each way): ok"
            )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--packets", type=int, nargs="+", default=[100_000, 1_000_000], help="capture sizes"
    )
    parser.add_argument("--runs", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--timeout", type=float, default=900.0, help="per child, seconds")
    parser.add_argument("--keep", help="write the captures into this directory and keep them")
    args = parser.parse_args(argv)
    if not shutil.which("tshark"):
        say("inspect: tshark is missing: apt-get install tshark (or make bootstrap)")
        return 2
    sizes = sorted(args.packets)
    commands = tools()
    ours = [name for name in commands if name != "tshark"]
    clock = common.Deadline(0)
    results: dict[int, dict[str, list[Run]]] = {n: {t: [] for t in commands} for n in sizes}
    matched = True
    with tempfile.TemporaryDirectory(prefix="netlab-bench-inspect-") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        files = {}
        for size in sizes:
            path = work / f"overlay-{size}.pcapng"
            start = time.perf_counter()
            written, nflows = write_capture(path, size)
            files[size] = path
            say(
                f"inspect: wrote {path.name}: {written:,} packets, {nflows} flows,"
                f" {path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s"
            )
        for name, argv_ in commands.items():
            shown = " ".join("python" if a == sys.executable else a for a in argv_)
            say(f"  {name:>6}: {shown} FILE")

        def step(size: int, name: str) -> Run:
            run = measure([*commands[name], str(files[size])], work / f"{name}.out", args.timeout)
            rate = size / run.seconds if run.seconds == run.seconds else float("nan")
            say(
                f"  {size:>9,} {name:>6}: "
                + (run.error or f"{run.seconds:.2f} s, {rate:,.0f} packets/s, {run.rss_mb:.0f} MB")
            )
            return run

        for round_ in range(args.runs):
            for size in sizes:
                runs = {name: step(size, name) for name in commands}
                for name, run in runs.items():
                    results[size][name].append(run)
                if round_ == 0:
                    matched = check(size, runs) and matched
                for run in runs.values():
                    run.output = ""
    say("")
    say(report(sizes, results, ours))
    verdicts(sizes, results, ours, matched)
    say(f"total {clock.elapsed():.0f} s")
    return 0 if matched else 1


def report(sizes: list[int], results: dict, ours: list[str]) -> str:
    rows = []
    for size in sizes:
        theirs = results[size]["tshark"]
        for name, runs in results[size].items():
            secs = median(r.seconds for r in runs)
            row = [f"{size:,}", name, fmt(secs), f"{size / secs:,.0f}" if secs == secs else "n/a"]
            row.append(fmt(median(r.rss_mb for r in runs), 0))
            if name in ours:
                ratio = paired_ratio([r.seconds for r in theirs], [r.seconds for r in runs])
                row += [
                    fmt(ratio, 1),
                    f">= {GOAL_RATIO:.0f}x: {goal(ratio, GOAL_RATIO, at_least=True)}",
                ]
            else:
                row += ["-", "-"]
            rows.append(row)
    headers = ["packets", "tool", "seconds", "packets/s", "peak MB", "x tshark", "goal"]
    return table(headers, rows) + (
        "\nseconds: the child's wall time, peak MB: its ru_maxrss (medians of the rounds);"
        " x tshark: median of per-round tshark/netlab time (= packets/s ratio)"
    )


def verdicts(sizes: list[int], results: dict, ours: list[str], matched: bool) -> None:
    largest, smallest = sizes[-1], sizes[0]
    for name in ours:
        runs = results[largest][name]
        ratio = paired_ratio(
            [r.seconds for r in results[largest]["tshark"]], [r.seconds for r in runs]
        )
        secs = median(r.seconds for r in runs) * 1_000_000 / largest
        say(
            f"  {name}: {fmt(ratio, 1)}x tshark's packets/s at {largest:,} packets:"
            f" >= {GOAL_RATIO:.0f}x: {goal(ratio, GOAL_RATIO, at_least=True)};"
            f" 1M packets in {fmt(secs)} s"
            + (f" (scaled from {largest:,})" if largest != 1_000_000 else "")
            + f": <= {GOAL_1M_SECONDS:.0f} s: {goal(secs, GOAL_1M_SECONDS)}"
        )
        if largest > smallest:
            growth = median(r.rss_mb for r in runs) / median(
                r.rss_mb for r in results[smallest][name]
            )
            say(
                f"  {name}: peak RSS at {largest:,} / at {smallest:,} packets = {fmt(growth)}x:"
                f" <= {GOAL_MEMORY_GROWTH}x (flat): {goal(growth, GOAL_MEMORY_GROWTH)}"
            )
    say(f"  IP conversations equal to tshark's: {'ok' if matched else 'MISMATCH'}")


if __name__ == "__main__":
    sys.exit(main())
