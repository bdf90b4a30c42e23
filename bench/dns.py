"""Queries per second of the lab's DNS server (labdns) against dnsmasq.

Both servers get the same records, generated here: 100 ClusterIP Services in
5 namespaces (2 pods behind each), 10 headless Services with 3-5 endpoints
each, and their pods. labdns reads them as Kubernetes objects (a JSON file of
Service, Endpoints and Pod v1 items), dnsmasq as an equivalent config file
(`host-record`, `srv-host`; `local=/cluster.local/` and no upstream server at
all, so it forwards nothing and answers NXDOMAIN for unknown names in the
zone). Both listen on 127.0.0.1 only, on free high ports.

Before timing, a few queries answered by both (dig) must give the same answer
sets, and every query of the query file must get the same response code
from both (one dnsperf pass over the file). Then dnsperf runs for the same
bounded time against each server, interleaved (labdns, dnsmasq, labdns,
dnsmasq, ...), with one client, no rate limit and the same query file (a mix
of mostly Service A queries, some SRV, PTR, pod A and NXDOMAIN); medians and
the median of per-round labdns/dnsmasq ratios are printed.

    python bench/dns.py            # 5 rounds of 5 s per server, about 1.2 min
    python bench/dns.py --quick    # 2 rounds of 3 s
    python bench/dns.py --server-cmd 'dnsmasq --conf-file={dnsmasq_conf} --port={port}'
                                   # any other server in place of labdns
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import ipaddress
import json
import math
import random
import re
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import common
from common import fmt, goal, median, paired_ratio, say, table

HOST = "127.0.0.1"
ZONE = "cluster.local"
TTL = 5
NAMESPACES = ["default", "kube-system", "shop", "payments", "monitoring"]
GOAL_RATIO = 1.0  # labdns qps / dnsmasq qps, with zero lost queries
STRETCH_RATIO = 1.2
LABDNS_CMD = (
    "{python} -m labdns --listen {host}:{port} --zone {zone} --ttl {ttl} --records {records}"
)
DNSMASQ_CMD = "dnsmasq --conf-file={dnsmasq_conf} --port={port}"
# share of the query file per kind of query
QUERY_MIX = {
    "service A": 60,
    "headless A": 10,
    "SRV": 10,
    "PTR": 7,
    "pod A": 8,
    "NXDOMAIN": 5,
}
QUERY_LINES = 10_000


# ---------------------------------------------------------------- records


@dataclass
class Records:
    """The generated cluster: Kubernetes objects plus what each name resolves to."""

    items: list[dict] = field(default_factory=list)
    a: dict[str, list[str]] = field(default_factory=dict)  # fqdn -> IPs (service, pod)
    headless: set[str] = field(default_factory=set)  # fqdns of headless services
    srv: dict[str, tuple[int, str]] = field(default_factory=dict)  # name -> (port, target)
    ptr: dict[str, str] = field(default_factory=dict)  # VIP -> service fqdn
    pods: dict[str, str] = field(default_factory=dict)  # pod fqdn -> IP
    unknown: list[str] = field(default_factory=list)  # names that must be NXDOMAIN

    def summary(self) -> str:
        services = [i for i in self.items if i["kind"] == "Service"]
        endpoints = sum(len(self.a[n]) for n in self.headless)
        return (
            f"{len(services) - len(self.headless)} ClusterIP services and "
            f"{len(self.headless)} headless ({endpoints} endpoints) in {len(NAMESPACES)} "
            f"namespaces, {len(self.pods)} pods, {len(self.srv)} SRV names"
        )


BASES = [
    "api", "web", "cart", "checkout", "catalog", "auth", "users", "orders", "search",
    "redis", "postgres", "metrics", "grafana", "prometheus", "gateway", "billing",
    "ledger", "inventory", "notify", "frontend",
]  # fmt: skip
VARIANTS = ["", "-api", "-v2", "-internal", "-admin"]
HEADLESS = [
    "kafka", "zookeeper", "etcd", "cassandra", "mongo", "elasticsearch", "nats",
    "consul", "minio", "rabbitmq",
]  # fmt: skip


def svc_fqdn(name: str, ns: str) -> str:
    return f"{name}.{ns}.svc.{ZONE}"


def pod_fqdn(ip: str, ns: str) -> str:
    return f"{ip.replace('.', '-')}.{ns}.pod.{ZONE}"


def make_records(services: int = 100, headless: int = 10, seed: int = 7) -> Records:
    rnd = random.Random(seed)
    rec = Records()
    pod_ips = (f"10.244.{n // 200}.{n % 200 + 10}" for n in range(100_000))

    def add_pod(name: str, ns: str) -> str:
        ip = next(pod_ips)
        rec.items.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": ns},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
            }
        )
        rec.pods[pod_fqdn(ip, ns)] = ip
        return ip

    def add_service(name: str, ns: str, vip: str, ports: list[tuple[str, str, int]], pods):
        rec.items.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "clusterIP": vip,
                    "ports": [
                        {"name": p, "protocol": proto, "port": port, "targetPort": port + 8000}
                        for p, proto, port in ports
                    ],
                },
            }
        )
        addresses = []
        for pod_name, hostname in pods:
            address = {
                "ip": add_pod(pod_name, ns),
                "targetRef": {"kind": "Pod", "name": pod_name, "namespace": ns},
            }
            if hostname:
                address["hostname"] = hostname
            addresses.append(address)
        rec.items.append(
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": name, "namespace": ns},
                "subsets": [
                    {
                        "addresses": addresses,
                        "ports": [
                            {"name": p, "protocol": proto, "port": port + 8000}
                            for p, proto, port in ports
                        ],
                    }
                ],
            }
        )
        fqdn = svc_fqdn(name, ns)
        if vip == "None":
            rec.headless.add(fqdn)
            rec.a[fqdn] = [a["ip"] for a in addresses]
        else:
            rec.a[fqdn] = [vip]
            rec.ptr[vip] = fqdn
            for p, proto, port in ports:  # (headless services' SRV: not in dnsmasq, not queried)
                rec.srv[f"_{p}._{proto.lower()}.{fqdn}"] = (port, fqdn)

    names = [b + v for v in VARIANTS for b in BASES]
    for i in range(services):
        name = names[i % len(names)] + (f"-{i // len(names)}" if i >= len(names) else "")
        ns = NAMESPACES[i % len(NAMESPACES)]
        ports = [("http", "TCP", 80)]
        if i % 3 == 0:
            ports.append(("grpc", "TCP", 9090))
        if i % 7 == 0:
            ports.append(("metrics", "TCP", 9100))
        if i % 10 == 0:
            ports.append(("dns", "UDP", 53))
        vip = str(ipaddress.IPv4Address("10.96.0.10") + i)
        pods = [(f"{name}-{rnd.getrandbits(32):08x}-{k}", None) for k in range(2)]
        add_service(name, ns, vip, ports, pods)
    for i in range(headless):
        name = HEADLESS[i % len(HEADLESS)] + (
            f"-{i // len(HEADLESS)}" if i >= len(HEADLESS) else ""
        )
        ns = NAMESPACES[(i + 2) % len(NAMESPACES)]
        stateful = i % 2 == 0  # StatefulSet-like: endpoints with hostnames
        pods = [(f"{name}-{k}", f"{name}-{k}" if stateful else None) for k in range(3 + i % 3)]
        add_service(
            name, ns, "None", [("client", "TCP", 7000 + i), ("peer", "TCP", 7100 + i)], pods
        )
    for i in range(20):  # unknown services, namespaces and kinds of name in the zone
        ns = NAMESPACES[i % len(NAMESPACES)]
        rec.unknown.append(
            [
                svc_fqdn(f"missing-{i}", ns),
                svc_fqdn(f"api-{i}", f"nosuchns{i}"),
                f"web.{ns}.svc.{ZONE}.{ns}.svc.{ZONE}",  # a search-path expansion
                f"api.{ns}.{ZONE}",
            ][i % 4]
        )
    return rec


def labdns_json(rec: Records) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": rec.items}, indent=1)


def dnsmasq_conf(rec: Records) -> str:
    """dnsmasq serving the same names: authoritative-ish for the zone, no
    upstream at all (no-resolv, no server=), nothing read from the host."""
    lines = [
        "keep-in-foreground",
        "no-resolv",  # no upstream servers: forwards nothing
        "no-hosts",
        "no-poll",
        "pid-file=",  # no pid file
        "log-facility=-",  # to stderr (our log file), not the host's syslog
        f"listen-address={HOST}",
        "bind-interfaces",
        f"local=/{ZONE}/",  # unknown names in the zone: NXDOMAIN, never forwarded
        f"local-ttl={TTL}",
        "cache-size=10000",
    ]
    for name, ips in rec.a.items():  # services (A; PTR for VIPs comes with it)
        lines += [f"host-record={name},{ip}" for ip in ips]
    for name, ip in rec.pods.items():
        lines.append(f"host-record={name},{ip}")
    for name, (port, target) in rec.srv.items():
        lines.append(f"srv-host={name},{target},{port},0,100")
    return "\n".join(lines) + "\n"


def reverse_name(ip: str) -> str:
    return ipaddress.IPv4Address(ip).reverse_pointer


def query_file(rec: Records, lines: int = QUERY_LINES, seed: int = 11) -> tuple[str, Counter]:
    """dnsperf's input: `name type` lines, the mix of QUERY_MIX, shuffled."""
    rnd = random.Random(seed)
    pools = {
        "service A": [(n, "A") for n in rec.a if n not in rec.headless],
        "headless A": [(n, "A") for n in sorted(rec.headless)],
        "SRV": [(n, "SRV") for n in rec.srv],
        "PTR": [(reverse_name(ip), "PTR") for ip in rec.ptr],
        "pod A": [(n, "A") for n in rec.pods],
        "NXDOMAIN": [(n, "A") for n in rec.unknown],
    }
    kinds = rnd.choices(list(QUERY_MIX), weights=list(QUERY_MIX.values()), k=lines)
    out = [rnd.choice(pools[k]) for k in kinds]
    return "".join(f"{n} {t}\n" for n, t in out), Counter(kinds)


def check_queries(rec: Records) -> list[tuple[str, str]]:
    """A few queries of every kind, for the answer comparison."""
    clusterip = [n for n in rec.a if n not in rec.headless]
    return [
        (clusterip[0], "A"),
        (clusterip[-1], "A"),
        (sorted(rec.headless)[0], "A"),
        (sorted(rec.headless)[-1], "A"),
        (next(iter(rec.srv)), "SRV"),
        (list(rec.srv)[-1], "SRV"),
        (reverse_name(next(iter(rec.ptr))), "PTR"),
        (next(iter(rec.pods)), "A"),
        (rec.unknown[0], "A"),
        (rec.unknown[2], "A"),
        ("example.com", "A"),  # outside the zone: REFUSED (neither forwards)
    ]


# ---------------------------------------------------------------- servers


def free_port() -> int:
    """A high port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((HOST, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((HOST, port))
                except OSError:
                    continue
        if port >= 10000:
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def dns_query(name: str, qtype: int = 1) -> bytes:
    header = struct.pack("!HHHHHH", random.getrandbits(16), 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return header + qname + struct.pack("!HH", qtype, 1)


class DnsServer:
    """A server process we started, on 127.0.0.1:port, stopped by its PID."""

    def __init__(self, label: str, argv: list[str], port: int, log: Path, probe: str):
        self.label, self.argv, self.port, self.log = label, argv, port, log
        self.started = time.monotonic()
        self.log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            cwd=common.REPO,  # `python -m labdns` finds the checkout's package
        )
        self.probe = probe

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            text = self.log.read_text(errors="replace").strip().splitlines()
            return "\n".join("      " + line for line in text[-lines:])
        return ""

    def wait_ready(self, timeout: float) -> float:
        """Wait until it answers a UDP query (it binds only once its records
        are loaded). Returns the seconds since it was started."""
        deadline = time.monotonic() + timeout
        query = dns_query(self.probe)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.label} exited with {self.proc.returncode} before answering"
                    f" (command: {shlex.join(self.argv)}); its output:\n{self.log_tail()}"
                )
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(0.2)
                try:
                    s.connect((HOST, self.port))
                    s.send(query)
                    if s.recv(4096)[:2] == query[:2]:
                        return time.monotonic() - self.started
                except OSError:  # refused (not bound yet) or timed out
                    pass
            time.sleep(0.05)
        raise RuntimeError(
            f"{self.label} did not answer on {HOST}:{self.port} within {timeout:g} s;"
            f" its output:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 3 s, by PID; says so if it needed the kill."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3.0)
            except subprocess.TimeoutExpired:
                say(f"  note: {self.label} did not exit within 3 s of SIGTERM: killed")
                common.end_process(self.proc, wait=0.0)
        self.log_file.close()


# ---------------------------------------------------------------- dig


ANSWER_TYPES = {"A", "SRV", "PTR", "AAAA", "CNAME"}


def dig(port: int, name: str, qtype: str, tcp: bool) -> tuple[str, frozenset]:
    """(rcode, answer set) with dig. SRV answers are compared on port and
    target (priority and weight are the server's choice)."""
    argv = ["dig", f"@{HOST}", "-p", str(port), "+time=2", "+tries=1", "+noedns"]
    argv += ["+noall", "+comments", "+answer", "+tcp" if tcp else "+notcp", name, qtype]
    out = common.run(argv, timeout=10, check=False).stdout
    status = re.search(r"status: (\w+)", out)
    if not status:
        return f"no answer ({out.strip().splitlines()[-1:] or 'nothing'})", frozenset()
    answers = set()
    for line in out.splitlines():
        parts = line.split()
        if line.startswith(";") or len(parts) < 5 or parts[3] not in ANSWER_TYPES:
            continue
        owner, rtype, rdata = parts[0].lower(), parts[3], parts[4:]
        if rtype == "SRV":
            rdata = rdata[2:]
        answers.add((owner, rtype, " ".join(rdata).lower()))
    return status.group(1), frozenset(answers)


def compare_answers(servers: list[DnsServer], queries) -> list[str]:
    """Mismatches between the servers' answers to the same queries, over
    UDP, and the first query once more over TCP."""
    problems = []
    for name, qtype, tcp in [(n, t, False) for n, t in queries] + [(*queries[0], True)]:
        got = {s.label: dig(s.port, name, qtype, tcp) for s in servers}
        if len(set(got.values())) > 1:
            detail = "; ".join(
                f"{label}: {rcode} {sorted(' '.join(a[1:]) for a in ans)}"
                for label, (rcode, ans) in got.items()
            )
            problems.append(f"{name} {qtype}{' over TCP' if tcp else ''}: {detail}")
    return problems


# ---------------------------------------------------------------- dnsperf


@dataclass
class Run:
    qps: float = math.nan
    mean_ms: float = math.nan
    p99_ms: float = math.nan
    lost: int = 0
    sent: int = 0
    completed: int = 0
    rcodes: dict[str, int] = field(default_factory=dict)
    response_bytes: float = math.nan
    per_query_rcode: dict[str, set] = field(default_factory=dict)
    error: str = ""

    def line(self) -> str:
        if self.error:
            return f"FAILED: {self.error}"
        return (
            f"{self.qps:>9,.0f} qps  mean {fmt(self.mean_ms, 3)} ms  p99 {fmt(self.p99_ms, 3)} ms"
            f"  lost {self.lost}  completed {self.completed:,}"
        )


STAT = {
    "sent": re.compile(r"Queries sent:\s+(\d+)"),
    "completed": re.compile(r"Queries completed:\s+(\d+)"),
    "lost": re.compile(r"Queries lost:\s+(\d+)"),
    "qps": re.compile(r"Queries per second:\s+([\d.]+)"),
    "mean": re.compile(r"Average Latency \(s\):\s+([\d.]+)"),
    "size": re.compile(r"Average packet size:\s+request \d+, response (\d+)"),
    "rcodes": re.compile(r"Response codes:\s*(.*)"),
}


def percentile(hist: Counter, q: float) -> float:
    """Nearest-rank percentile of a {value: count} histogram."""
    total = sum(hist.values())
    if not total:
        return math.nan
    rank, seen = math.ceil(q * total), 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return value
    return max(hist)


def parse_dnsperf(path: Path, keep_rcodes: bool) -> Run:
    """dnsperf -v output: a `> RCODE name type latency` line per response
    (`> T name type` for a timeout), then the statistics."""
    run = Run()
    hist: Counter = Counter()  # latency in microseconds -> count
    stats = []
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("> "):
                parts = line.split()
                if len(parts) == 5:
                    hist[round(float(parts[4]) * 1e6)] += 1
                    if keep_rcodes:
                        run.per_query_rcode.setdefault(f"{parts[2]} {parts[3]}", set()).add(
                            parts[1]
                        )
            else:
                stats.append(line)
    text = "".join(stats)
    found = {k: r.search(text) for k, r in STAT.items()}
    if not found["qps"]:
        raise RuntimeError(f"no statistics in dnsperf output: {text.strip()[-300:]!r}")
    run.sent, run.completed = int(found["sent"].group(1)), int(found["completed"].group(1))
    run.lost, run.qps = int(found["lost"].group(1)), float(found["qps"].group(1))
    run.mean_ms = float(found["mean"].group(1)) * 1e3
    if found["size"]:
        run.response_bytes = float(found["size"].group(1))
    if found["rcodes"]:
        for code, count in re.findall(r"([A-Z]+) (\d+) \(", found["rcodes"].group(1)):
            run.rcodes[code] = int(count)
    run.p99_ms = percentile(hist, 0.99) / 1e3
    return run


@dataclass
class Perf:
    """How dnsperf is run: the same for both servers."""

    query_path: Path
    workdir: Path
    clients: int
    threads: int
    outstanding: int

    def argv(self, port: int, seconds: float | None) -> list[str]:
        argv = ["dnsperf", "-f", "inet", "-m", "udp", "-s", HOST, "-p", str(port)]
        argv += ["-d", str(self.query_path), "-c", str(self.clients), "-T", str(self.threads)]
        argv += ["-q", str(self.outstanding), "-v"]
        # -l: bounded time; without it (the rcode check) one pass over the file
        return argv + (["-l", f"{seconds:g}"] if seconds else ["-n", "1"])

    def run(self, server: DnsServer, seconds: float | None, keep_rcodes: bool = False) -> Run:
        out = self.workdir / f"dnsperf-{server.label}.out"
        try:
            with open(out, "wb") as f:
                proc = subprocess.run(
                    self.argv(server.port, seconds),
                    stdout=f,
                    stderr=subprocess.PIPE,
                    timeout=(seconds or 5) + 30,  # -l, then -t 5 s for the last answers
                    check=False,
                )
            if proc.returncode != 0:
                raise RuntimeError(f"dnsperf exit {proc.returncode}: {proc.stderr.decode()[-300:]}")
            if server.proc.poll() is not None:
                raise RuntimeError(f"{server.label} exited with {server.proc.returncode}")
            return parse_dnsperf(out, keep_rcodes)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            return Run(error=str(exc))
        finally:
            out.unlink(missing_ok=True)


# ---------------------------------------------------------------- driver


def server_argv(template: str, **values) -> list[str]:
    return [token.format(**values) for token in shlex.split(template)]


def rcode_mismatches(runs: dict[str, Run]) -> list[str]:
    """Queries of the file whose response code differs between the servers."""
    (a_label, a), (b_label, b) = runs.items()
    problems = []
    for query in sorted(set(a.per_query_rcode) | set(b.per_query_rcode)):
        ra, rb = a.per_query_rcode.get(query, {"T"}), b.per_query_rcode.get(query, {"T"})
        if ra != rb:
            problems.append(f"{query}: {a_label} {'/'.join(ra)}, {b_label} {'/'.join(rb)}")
    return problems


def rcode_text(run: Run) -> str:
    total = sum(run.rcodes.values()) or 1
    return " ".join(f"{c} {100 * n / total:.1f}%" for c, n in sorted(run.rcodes.items()))


def report(label: str, results: dict[str, list[Run]]) -> str:
    ours, ref = results[label], results["dnsmasq"]
    ratio = paired_ratio(
        [r.qps if not r.error else math.nan for r in ours],
        [r.qps if not r.error else math.nan for r in ref],
    )
    rows = []
    for name, runs in results.items():
        ok = [r for r in runs if not r.error]
        qps = [r.qps for r in ok]
        lost = sum(r.lost for r in ok)
        failed = len(runs) - len(ok)
        row = [
            name,
            f"{len(ok)}" + (f" ({failed} FAILED)" if failed else ""),
            f"{median(qps):,.0f}" if qps else "n/a",
            f"{min(qps):,.0f}-{max(qps):,.0f}" if qps else "n/a",
            fmt(median(r.mean_ms for r in ok), 3),
            fmt(median(r.p99_ms for r in ok), 3),
            str(lost),
            f"{sum(r.completed for r in ok):,}",
        ]
        if name == label:
            zero_lost = not failed and lost == 0
            met = goal(ratio, GOAL_RATIO, at_least=True)
            row += [
                fmt(ratio),
                f">= {GOAL_RATIO:.1f}x, 0 lost: " + ("ok" if met == "ok" and zero_lost else "MISS"),
                f">= {STRETCH_RATIO:.1f}x: {goal(ratio, STRETCH_RATIO, at_least=True)}",
            ]
        else:
            row += ["-", "-", "-"]
        rows.append(row)
    headers = [
        "server",
        "rounds",
        "qps",
        "qps min-max",
        "mean ms",
        "p99 ms",
        "lost",
        "completed",
        "ratio qps",
        "goal",
        "stretch",
    ]
    return table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 3 s")
    parser.add_argument("--rounds", type=int, help="rounds (default 5)")
    parser.add_argument("--seconds", type=float, help="dnsperf -l per run (default 5)")
    parser.add_argument("--clients", type=int, default=1, help="dnsperf -c (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="dnsperf -T (default 1)")
    parser.add_argument(
        "--outstanding", type=int, default=100, help="dnsperf -q: queries in flight (default 100)"
    )
    parser.add_argument(
        "--server-cmd",
        help="command of the server measured instead of labdns; placeholders {python} {host}"
        " {port} {zone} {ttl} {records} (the JSON file) {dnsmasq_conf} (dnsmasq's config)",
    )
    parser.add_argument("--skip-check", action="store_true", help="time even if answers differ")
    parser.add_argument("--start-timeout", type=float, default=30.0, help="seconds (default 30)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    seconds = args.seconds or (3.0 if args.quick else 5.0)
    label = "labdns" if not args.server_cmd else "server"

    missing = [tool for tool in ("dnsperf", "dnsmasq", "dig") if not shutil.which(tool)]
    if missing:
        say(f"dns: missing {', '.join(missing)}: run scripts/bootstrap.sh (make bootstrap)")
        return 2
    if not args.server_cmd and importlib.util.find_spec("labdns") is None:
        say(
            "dns: the labdns package is not in this checkout (yet); --server-cmd runs the"
            " bench against another server, e.g. --server-cmd"
            f" '{DNSMASQ_CMD}'"
        )
        return 2

    deadline = common.Deadline(0)  # for the elapsed time
    servers: list[DnsServer] = []
    with tempfile.TemporaryDirectory(prefix="netlab-bench-dns-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # dnsmasq may read its config after dropping root
        rec = make_records()
        records, conf, queries = (
            workdir / "records.json",
            workdir / "dnsmasq.conf",
            workdir / "queries.txt",
        )
        records.write_text(labdns_json(rec))
        conf.write_text(dnsmasq_conf(rec))
        qtext, mix = query_file(rec)
        queries.write_text(qtext)
        for path in (records, conf, queries):
            path.chmod(0o644)
        perf = Perf(queries, workdir, args.clients, args.threads, args.outstanding)
        say(
            f"dns: {label} vs dnsmasq, dnsperf -c {args.clients} -T {args.threads}"
            f" -q {args.outstanding} -l {seconds:g} (UDP, {HOST}, no rate limit),"
            f" {rounds} rounds interleaved, medians"
        )
        say(f"  records: {rec.summary()}")
        say(
            f"  queries: {sum(mix.values()):,} lines, "
            + ", ".join(f"{k} {100 * mix[k] / sum(mix.values()):.0f}%" for k in QUERY_MIX)
        )
        try:
            values = {
                "python": sys.executable,
                "host": HOST,
                "zone": ZONE,
                "ttl": TTL,
                "records": records,
                "dnsmasq_conf": conf,
            }
            probe = next(iter(rec.a))
            for name, template in (
                (label, args.server_cmd or LABDNS_CMD),
                ("dnsmasq", DNSMASQ_CMD),
            ):
                port = free_port()
                cmd = server_argv(template, port=port, **values)
                servers.append(DnsServer(name, cmd, port, workdir / f"{name}.log", probe))
                ready = servers[-1].wait_ready(args.start_timeout)
                say(f"  {name}: {shlex.join(cmd)}  (answering after {ready:.2f} s)")

            problems = compare_answers(servers, check_queries(rec))
            passes = {s.label: perf.run(s, None, keep_rcodes=True) for s in servers}
            for s in servers:
                if passes[s.label].error:
                    problems.append(
                        f"{s.label}: one pass over the query file: {passes[s.label].error}"
                    )
            if not problems:
                problems += rcode_mismatches(passes)
            if problems:
                say(f"  check: the servers' answers DIFFER ({len(problems)}):")
                for p in problems[:20]:
                    say(f"    {p}")
                if not args.skip_check:
                    say("dns: FAILED the answer check (--skip-check times anyway)")
                    return 1
            else:
                say(
                    f"  check: same answers to {len(check_queries(rec))} queries (dig +noedns;"
                    " SRV on port and target; the first also over TCP) and same response code to all"
                    f" {len(passes[label].per_query_rcode)} distinct queries of the file: ok"
                )
            for s in servers:  # warm-up (not recorded)
                perf.run(s, 1.0)

            def step(server: DnsServer):
                done = Counter()

                def one() -> Run:
                    common.settle(0.2, 2.0)
                    done[0] += 1
                    result = perf.run(server, seconds)
                    say(f"  round {done[0]}/{rounds} {server.label:>7}: {result.line()}")
                    return result

                return server.label, one

            results = common.interleave(rounds, [step(s) for s in servers])
        except RuntimeError as exc:  # a server that does not start, dnsperf missing output
            say(f"dns: FAILED: {exc}")
            return 1
        except Exception:
            traceback.print_exc()
            say("dns: FAILED (see the traceback above)")
            return 1
        finally:
            for s in servers:
                s.stop()

    say("")
    say(report(label, results))
    say(
        "qps and mean latency as dnsperf reports them; p99 = 99th percentile of every"
        " response's latency (dnsperf -v), with up to"
        f" {args.outstanding} queries in flight (latency under full load);"
        f" ratio = median of per-round {label}/dnsmasq qps"
    )
    for name, runs in results.items():
        ok = [r for r in runs if not r.error]
        if ok:
            say(
                f"  {name}: response codes {rcode_text(ok[-1])}; response"
                f" {fmt(median(r.response_bytes for r in ok), 0)} bytes on average"
            )
    say(f"total {deadline.elapsed():.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
