"""The lab API as Kubernetes clients see it: list latency with 128 and 512 pods,
watch event delay, and kubectl's wall time against a lab.

For each lab size (a Deployment of 128 or 512 `sleep` pods over 4x4 or 8x8 nodes),
interleaved rounds of:

  list      GET /api/v1/pods over the TLS endpoint with the admin certificate, on
            one kept-alive connection, as the kubernetes client lists (JSON), and as
            kubectl does (a Table: the server prints)
  watch     a write to the store (a Namespace's label) to its event read by a client
            watching over TLS
  kubectl   `kubectl get pods` against the lab, against `kubectl annotate --local -f
            pods.json` with the same pods in a file (kubectl's own start, parsing and
            printing, with no server at all): the ratio is what talking to the lab costs

No kube-apiserver runs here (no binary in this machine's registries, no container
engine), so there is no live peer: the table quotes Kubernetes' API call latency SLO
(the threshold its scalability tests hold kube-apiserver to) for scale.

    python bench/api.py [--rounds 15] [--sizes 128,512]
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from common import median, say, table

from netlab import objects
from netlab.lab import Lab
from netlab.spec import LabBuilder

ROOT = Path(__file__).resolve().parents[1]
KUBECTL = ROOT / ".tools" / "kubectl-1.35" / "kubectl"
SIZES = {128: (4, 4), 512: (8, 8)}
TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
# sig-scalability/slos/api_call_latency.md: read-only calls, p99 per cluster-day, <= 1 s for one
# object, <= 5 s in a namespace, <= 30 s across the cluster (a list of all pods is the last)
SLO_CLUSTER = "<= 30 s (p99, cluster scope)"
SLO_WRITE = "<= 1 s (p99, one object)"  # mutating calls: the same SLO as one object's read


def build(pods: int) -> Lab:
    racks, per_rack = SIZES[pods]
    b = LabBuilder(f"bapi{pods}")
    for r in range(1, racks + 1):
        b.add_rack(f"rack{r}", f"192.168.{r}.0/24")
        for k in range(1, per_rack + 1):
            b.add_node(f"n{r}{k}", rack=f"rack{r}")
    b.add_deployment("pause", replicas=pods, command=["sleep", "infinity"], labels={"app": "pause"})
    return Lab(b.build())


def tls_context(lab: Lab) -> ssl.SSLContext:
    pki = lab.run_dir / "pki"
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(pki / "admin.crt", pki / "admin.key")
    return context


def port_of(lab: Lab) -> int:
    return int((lab.run_dir / "api.port").read_text())


class Lister:
    """One kept-alive HTTPS connection, as a client's connection pool keeps one."""

    def __init__(self, lab: Lab):
        self.conn = http.client.HTTPSConnection(
            "127.0.0.1", port_of(lab), context=tls_context(lab), timeout=30
        )

    def list_ms(self, accept: str) -> float:
        started = time.perf_counter()
        self.conn.request("GET", "/api/v1/pods", headers={"Accept": accept})
        body = self.conn.getresponse().read()
        elapsed = (time.perf_counter() - started) * 1000
        assert json.loads(body)["kind"] in ("PodList", "Table")
        return elapsed

    def patch_ms(self, index: int, dry: bool) -> float:
        """A merge patch of the Deployment's annotations: through the write gate (the
        whole object validated against the lab), then stored, or not (a dry run)."""
        body = json.dumps({"metadata": {"annotations": {"bench": str(index)}}})
        path = "/apis/apps/v1/namespaces/default/deployments/pause"
        started = time.perf_counter()
        self.conn.request(
            "PATCH",
            path + ("?dryRun=All" if dry else ""),
            body=body,
            headers={"Content-Type": "application/merge-patch+json"},
        )
        answer = self.conn.getresponse()
        answer.read()
        elapsed = (time.perf_counter() - started) * 1000
        assert answer.status == 200, answer.status
        return elapsed


class Watcher:
    """A watch on namespaces over TLS; `delay_ms` writes a label and times its event."""

    def __init__(self, lab: Lab):
        self.lab = lab
        raw = socket.create_connection(("127.0.0.1", port_of(lab)), timeout=30)
        self.sock = tls_context(lab).wrap_socket(raw, server_hostname="127.0.0.1")
        revision = lab.store.list("namespaces")[1]
        self.sock.sendall(
            f"GET /api/v1/namespaces?watch=1&resourceVersion={revision} HTTP/1.1\r\n"
            "Host: x\r\n\r\n".encode()
        )
        self.file = self.sock.makefile("rb")
        while self.file.readline() not in (b"\r\n", b""):  # the headers
            pass
        self.seen: dict[str, float] = {}
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            size_line = self.file.readline()  # chunked: size, then the chunk
            if not size_line:
                return
            size = int(size_line.strip() or b"0", 16)
            chunk = self.file.read(size)
            self.file.readline()
            now = time.perf_counter()
            for line in chunk.splitlines():
                if not line.strip():
                    continue
                event = json.loads(line)
                mark = (event["object"]["metadata"].get("labels") or {}).get("bench")
                if mark:
                    with self.changed:
                        self.seen[mark] = now
                        self.changed.notify_all()

    def delay_ms(self, index: int) -> float:
        mark = f"w{index}"
        started = time.perf_counter()
        self.lab.store.apply(objects.namespace_object("bench-watch", {"bench": mark}))
        with self.changed:
            self.changed.wait_for(lambda: mark in self.seen, 10)
        return (self.seen[mark] - started) * 1000

    def close(self) -> None:
        self.sock.close()


def kubectl_seconds(args: list[str], kubeconfig: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(kubeconfig), *args],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return time.perf_counter() - started


def measure(pods: int, rounds: int) -> dict[str, float]:
    lab = build(pods)
    with lab, tempfile.TemporaryDirectory() as tmp:
        lab.settle(60)
        say(f"  {pods} pods up; {rounds} interleaved rounds")
        lister, watcher = Lister(lab), Watcher(lab)
        listing = lab.store.list("pods", "default")[0]
        local = Path(tmp) / "pods.json"
        local.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": listing}))
        kubeconfig = lab.run_dir / "kubeconfig"
        results: dict[str, list[float]] = {
            k: [] for k in ("json", "table", "watch", "patch", "dry", "get", "local")
        }
        for index in range(rounds):
            results["json"].append(lister.list_ms("application/json"))
            results["table"].append(lister.list_ms(TABLE_ACCEPT))
            results["watch"].append(watcher.delay_ms(index))
            results["dry"].append(lister.patch_ms(index, dry=True))
            results["patch"].append(lister.patch_ms(index, dry=False))
            results["get"].append(kubectl_seconds(["get", "pods", "-A"], kubeconfig))
            results["local"].append(
                kubectl_seconds(
                    ["annotate", "--local", "-f", str(local), "bench=1", "-o", "name"], kubeconfig
                )
            )
        watcher.close()
    return {name: median(values) for name, values in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--sizes", default="128,512")
    args = parser.parse_args()
    if not KUBECTL.exists():
        raise SystemExit(f"{KUBECTL} is missing: run scripts/kubectl.sh (make bench-api does)")
    sizes = [int(s) for s in args.sizes.split(",")]
    say(f"api bench: lab API over TLS, kubectl {KUBECTL.parent.name}, medians of {args.rounds}")
    found = {pods: measure(pods, args.rounds) for pods in sizes}
    rows = []
    for pods, m in found.items():
        rows += [
            [f"{pods} pods: list (JSON, kubernetes client)", f"{m['json']:.1f} ms", SLO_CLUSTER],
            [f"{pods} pods: list (Table, kubectl)", f"{m['table']:.1f} ms", SLO_CLUSTER],
            [f"{pods} pods: write -> watch event", f"{m['watch']:.2f} ms", "- (no official SLO)"],
            [f"{pods} pods: PATCH a Deployment (validated)", f"{m['patch']:.1f} ms", SLO_WRITE],
            [f"{pods} pods: the same, dryRun=All", f"{m['dry']:.1f} ms", SLO_WRITE],
            [
                f"{pods} pods: kubectl get pods -A / annotate --local -f",
                f"{m['get']:.2f} s / {m['local']:.2f} s = {m['get'] / m['local']:.2f}",
                "-",
            ],
        ]
    print(table(["measure (median)", "lab", "Kubernetes SLO"], rows))


if __name__ == "__main__":
    main()
