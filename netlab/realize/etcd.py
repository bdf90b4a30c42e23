"""etcd members started by the lab (ended by PID): one on loopback for tests and benches,
or a cluster inside the lab, one member per control-plane node.

An in-lab member talks raft to its peers over the lab's underlay (real etcd traffic
across racks, to capture), and serves clients on a unix socket in its data directory,
which is how the supervisor (in the host's namespace) reaches it without a route
into the lab.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from netlab.errors import RealizeError
from netlab.realize.netns import netns_path
from netlab.realize.processes import Orphan
from netlab.unixhttp import UnixHTTPConnection

CLIENT_PORT, PEER_PORT = 2379, 2380
SOCKET_NAME = f"client:{CLIENT_PORT}"  # etcd's unix://client:2379 makes this file in its cwd


def etcd_binary() -> str:
    binary = shutil.which("etcd")
    if binary is None:
        raise RealizeError(
            "etcd is not installed: `sudo apt-get install etcd-server` (make test does it)"
        )
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connection(endpoint: str, timeout: float) -> http.client.HTTPConnection:
    """An HTTP connection to `unix:/path` or `http://host:port`."""
    if endpoint.startswith("unix:"):
        return UnixHTTPConnection(endpoint[len("unix:") :], timeout)
    host, _, port = endpoint.split("://", 1)[-1].partition(":")
    return http.client.HTTPConnection(host, int(port or CLIENT_PORT), timeout=timeout)


def healthy(endpoint: str, timeout: float = 1.0) -> bool:
    try:
        conn = connection(endpoint, timeout)
        conn.request("GET", "/health")
        ok = b"true" in conn.getresponse().read()
        conn.close()
        return ok
    except (OSError, http.client.HTTPException):
        return False


@dataclass(frozen=True)
class MemberPlan:
    name: str
    peer_ip: str  # where the other members reach it (a node's underlay address, or 127.0.0.1)
    netns: str | None  # the named namespace it runs in; None: the host's (loopback only)
    data_dir: Path
    peer_port: int = PEER_PORT


class EtcdMember:
    """One etcd process. Started again on the same data directory (the keeper does,
    after a crash) it is the same member: etcd ignores the --initial-cluster flags once
    its data directory holds a member, and catches up from the leader."""

    def __init__(self, plan: MemberPlan, cluster: str, client_url: str | None, log: Path):
        self.plan = plan
        plan.data_dir.mkdir(parents=True, exist_ok=True)
        # a member started again: the socket its killed process left refuses the bind
        (plan.data_dir / SOCKET_NAME).unlink(missing_ok=True)
        listen = f"unix://{SOCKET_NAME}" + (f",{client_url}" if client_url else "")
        peer = f"http://{plan.peer_ip}:{plan.peer_port}"
        argv = [
            etcd_binary(),
            "--name", plan.name,
            "--data-dir", str(plan.data_dir / "data"),
            "--listen-client-urls", listen,
            "--advertise-client-urls", client_url or f"unix://{SOCKET_NAME}",
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", cluster,
            "--initial-cluster-state", "new",
            "--heartbeat-interval", "50",
            "--election-timeout", "500",
            "--log-level", "error",
        ]  # fmt: skip
        if plan.netns:  # its network only: `ip netns exec` would also give it a mount
            # namespace, a copy of the host's that would pin the pods' volumes while it runs
            argv = ["nsenter", f"--net={netns_path(plan.netns)}", "--", *argv]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, cwd=plan.data_dir, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True,
            )  # fmt: skip

    @classmethod
    def adopted(cls, plan: MemberPlan, pid: int, started: int | None) -> EtcdMember:
        """The member an earlier supervisor started, still running."""
        member = cls.__new__(cls)
        member.plan, member.proc = plan, Orphan(pid, started)
        return member

    @property
    def endpoint(self) -> str:
        """The client endpoint the supervisor uses: the member's unix socket."""
        return f"unix:{self.plan.data_dir / SOCKET_NAME}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        """How it ended (-9: SIGKILL; -1: an adopted member, whose code nobody heard)."""
        return self.proc.poll()

    def kill(self) -> None:
        """SIGKILL (a crash, as a test or a user asks for one)."""
        if self.alive():
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def cluster_of(plans: Sequence[MemberPlan]) -> str:
    """etcd's --initial-cluster: `name=http://ip:port,...`."""
    return ",".join(f"{p.name}=http://{p.peer_ip}:{p.peer_port}" for p in plans)


def start_cluster(
    plans: Sequence[MemberPlan],
    log_dir: Path,
    record: Callable[[int, str], None] | None = None,
    timeout: float = 20.0,
    client_url: str | None = None,
) -> list[EtcdMember]:
    """Start every member at once (they elect a leader together), wait until each is healthy."""
    cluster = cluster_of(plans)
    members = []
    try:
        for plan in plans:
            member = EtcdMember(plan, cluster, client_url, log_dir / f"etcd-{plan.name}.log")
            members.append(member)
            if record is not None:
                record(member.pid, plan.name)
        deadline = time.monotonic() + timeout
        for member in members:
            while not healthy(member.endpoint):
                if not member.alive() or time.monotonic() > deadline:
                    raise RealizeError(
                        f"etcd member {member.plan.name} did not become healthy; "
                        f"see {log_dir / f'etcd-{member.plan.name}.log'}"
                    )
                time.sleep(0.05)
    except BaseException:
        for member in members:
            member.stop()
        raise
    return members


def member_status(endpoint: str, timeout: float = 1.0) -> dict | None:
    """A member's /v3/maintenance/status (its id, the leader it follows), or None if down."""
    try:
        conn = connection(endpoint, timeout)
        conn.request("POST", "/v3/maintenance/status", b"{}", {"Content-Type": "application/json"})
        answer = json.loads(conn.getresponse().read())
        conn.close()
        return answer
    except (OSError, ValueError, http.client.HTTPException):
        return None


class LoopbackEtcd:
    """A single etcd on 127.0.0.1 with a temporary data directory (tests, benches)."""

    def __init__(self, name: str = "netlab-test"):
        self.root = Path(tempfile.mkdtemp(prefix="netlab-etcd-"))
        self.port = free_port()
        peer = free_port()
        plan = MemberPlan(name, "127.0.0.1", None, self.root, peer)
        url = f"http://127.0.0.1:{self.port}"
        cluster = f"{name}=http://127.0.0.1:{peer}"
        self.member = EtcdMember(plan, cluster, url, self.root / "etcd.log")
        deadline = time.monotonic() + 15
        while not healthy(url):
            if not self.member.alive() or time.monotonic() > deadline:
                self.stop()
                raise RealizeError("etcd did not start on loopback")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"etcd://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.member.stop()
        shutil.rmtree(self.root, ignore_errors=True)
