"""Exec and port-forward through real clients against a running lab: kubectl 1.35 (which
tunnels SPDY through a WebSocket for port-forward) and the `kubernetes` Python client
(the v4 channel protocol; stdin in text or binary frames)."""

from __future__ import annotations

import hashlib
import http.client
import re
import select
import subprocess
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from netlab.lab import Lab
from tests.root.conftest import two_rack_builder, wait_for
from tests.root.test_kubectl import KUBECTL, kubectl

pytestmark = pytest.mark.root

BIG = 10 * 1024 * 1024
# GET /big: 10 MiB of a known pattern; POST: the sha256 of the body; else who answered
SERVER = textwrap.dedent(
    f"""\
    import hashlib, os
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    BIG = bytes(range(256)) * ({BIG} // 256)
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def answer(self, body):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def do_GET(self):
            self.answer(BIG if self.path == "/big" else os.environ["POD_NAME"].encode())
        def do_POST(self):
            n = int(self.headers["Content-Length"])
            digest, left = hashlib.sha256(), n
            while left:
                chunk = self.rfile.read(min(left, 65536))
                digest.update(chunk)
                left -= len(chunk)
            self.answer(digest.hexdigest().encode())
        def log_message(self, *args):
            pass
    ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
    """
)
PATTERN = bytes(range(256)) * (BIG // 256)
FORWARDS: list[subprocess.Popen] = []  # the kubectl port-forward processes started here


@pytest.fixture(scope="module")
def slab():
    b = two_rack_builder("tstream")
    b.add_pod(
        "srv", command=["python3", "-c", SERVER], node_name="n3", labels={"app": "srv"},
        readiness_probe={"tcpSocket": {"port": 8080}},
    )  # fmt: skip
    b.add_service("srv", selector={"app": "srv"}, ports=[(80, 8080)])
    with Lab(b.build()) as lab:
        lab.settle()
        kubectl(lab, "wait", "--for=condition=Ready", "pod/srv", "--timeout=30s")
        yield lab


@contextmanager
def port_forward(
    lab: Lab, target: str, remote: int, pod_port: int | None = None, namespace: str = "default"
) -> Iterator[int]:
    """`kubectl port-forward TARGET :REMOTE`; yields the local port, ends kubectl after.
    kubectl says which port of the pod it forwards to (`pod_port`, for a Service's port).
    Its requests are logged (-v=6, a few lines): if it never says it forwards, its
    stderr shows which request did not come back."""
    proc = subprocess.Popen(
        [str(KUBECTL["1.35"]), "--kubeconfig", str(lab.run_dir / "kubeconfig"), "-v=6",
         "-n", namespace, "port-forward", target, f":{remote}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    FORWARDS.append(proc)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        found = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)", line)
        assert found, f"kubectl port-forward said {line!r}; stderr: {_stderr(proc)}"
        assert int(found.group(2)) == (pod_port or remote)
        yield int(found.group(1))
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(10)


def _stderr(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.terminate()
    return proc.communicate(timeout=10)[1]


def answers(lab: Lab, pod: str, namespace: str, port: int, path: str) -> bool:
    """An HTTP GET from inside the pod, to its own loopback, answers 200."""
    probe = (
        "import urllib.request; "
        f"urllib.request.urlopen('http://127.0.0.1:{port}{path}', timeout=2).read()"
    )
    return lab.exec(pod, ["python3", "-c", probe], namespace=namespace).returncode == 0


def http_call(port: int, method: str, path: str, body: bytes | None = None) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        data = response.read()
        assert response.status == 200, (method, path, response.status, data[:300])
        return data
    finally:
        conn.close()


def test_kubectl_port_forward_to_a_pod_carries_http_and_10_mb(slab):
    with port_forward(slab, "pod/srv", 8080) as port:
        assert http_call(port, "GET", "/") == b"srv"
        assert http_call(port, "GET", "/big") == PATTERN  # 10 MiB from the pod
        upload = PATTERN[::-1]
        assert http_call(port, "POST", "/", upload) == hashlib.sha256(upload).hexdigest().encode()
        assert http_call(port, "GET", "/") == b"srv"  # a new connection on the same tunnel


def test_kubectl_port_forward_to_a_service_picks_its_pod(slab):
    with port_forward(slab, "svc/srv", 80, pod_port=8080) as port:
        assert http_call(port, "GET", "/") == b"srv"


def test_kubectl_port_forward_to_a_closed_port_says_why(slab):
    """kubelet's answer on the error stream; kubectl 1.35 then ends by itself."""
    with port_forward(slab, "pod/srv", 9999) as port:
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            http_call(port, "GET", "/")
        proc = FORWARDS[-1]
        _, stderr = proc.communicate(timeout=30)
    assert "error forwarding port 9999 to pod srv" in stderr and "connection refused" in stderr


def test_port_forward_reaches_only_the_pods_own_loopback(slab):
    """The pod "a" has nothing on 8080, though "srv" (elsewhere) does: the connection is
    made inside a's namespace, not from the host to a lab address."""
    from kubernetes import client, config
    from kubernetes.stream import portforward

    api = config.new_client_from_config(str(slab.run_dir / "kubeconfig"))
    core = client.CoreV1Api(api)
    pf = portforward(core.connect_get_namespaced_pod_portforward, "a", "default", ports="8080")
    sock = pf.socket(8080)
    sock.settimeout(15)
    assert sock.recv(10) == b""
    assert "error forwarding port 8080 to pod a" in pf.error(8080)
    assert "connection refused" in pf.error(8080)


def test_python_clients_portforward(slab):
    from kubernetes import client, config
    from kubernetes.stream import portforward

    api = config.new_client_from_config(str(slab.run_dir / "kubeconfig"))
    core = client.CoreV1Api(api)
    pf = portforward(core.connect_get_namespaced_pod_portforward, "srv", "default", ports="8080")
    sock = pf.socket(8080)
    sock.settimeout(30)
    sock.sendall(b"GET /big HTTP/1.1\r\nHost: srv\r\nConnection: close\r\n\r\n")
    got = b""
    while chunk := sock.recv(1 << 20):
        got += chunk
    sock.close()
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0]
    assert body == PATTERN and pf.error(8080) is None


@pytest.mark.parametrize("binary", [False, True])
def test_python_client_exec_stdin_in_text_and_binary_frames(slab, binary):
    from kubernetes import client, config
    from kubernetes.stream import stream

    api = config.new_client_from_config(str(slab.run_dir / "kubeconfig"))
    core = client.CoreV1Api(api)
    resp = stream(
        core.connect_get_namespaced_pod_exec, "a", "default", command=["sh", "-c", "head -n 1"],
        stdin=True, stdout=True, stderr=True, tty=False, binary=binary, _preload_content=False,
    )  # fmt: skip
    line = "through stdin, grüße\n"
    resp.write_stdin(line.encode() if binary else line)
    resp.run_forever(timeout=15)  # `head -n 1` ends after its line
    out = resp.read_stdout(timeout=0)
    assert resp.returncode == 0
    assert out == (line.encode() if binary else line)


def test_kubectl_exec_stdin_and_a_missing_container(slab):
    assert kubectl(slab, "exec", "-i", "a", "--", "cat", stdin="binary frames\n").stdout == (
        "binary frames\n"
    )
    missing = kubectl(slab, "exec", "a", "-c", "nosuch", "--", "true", check=False)
    assert missing.returncode != 0
    assert missing.stderr.strip() == (
        "Error from server (BadRequest): container nosuch is not valid for pod a"
    )  # kube-apiserver's words (kubectl 1.35 does not check the container itself)


MESHED = textwrap.dedent(
    """\
    lab:
      name: tstrmesh
      racks:
        - {name: rack1, subnet: 192.168.1.0/24, nodes: [n1, n2]}
      mesh: {}
    ---
    apiVersion: v1
    kind: Namespace
    metadata: {name: default, labels: {netlab.io/inject: "true"}}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: app, labels: {app: app}}
    spec:
      containers:
        - name: app
          command: [python3, -m, netlab.apps.echo, "8080"]
          ports: [{containerPort: 8080}]
          readinessProbe: {tcpSocket: {port: 8080}}
    """
)


def test_port_forward_reaches_the_collector_and_a_sidecars_admin_page():
    from netlab.spec import parse_lab

    with Lab(parse_lab(MESHED, "meshed.yaml")) as lab:
        lab.settle()
        lab.wait_endpoints("kube-system", "zipkin", timeout=30)
        kubectl(lab, "wait", "--for=condition=Ready", "pod/app", "--timeout=30s")
        # the sidecar's admin server and the collector's API may open a moment after
        # their pods are Ready on a loaded machine: port-forward once they answer
        (collector,) = lab.ready_pods("zipkin", "kube-system")
        assert wait_for(lambda: answers(lab, "app", "default", 15000, "/stats/prometheus"), 20)
        assert wait_for(
            lambda: answers(lab, collector.name, "kube-system", 9411, "/api/v2/services"), 20
        )
        with port_forward(lab, "svc/zipkin", 9411, namespace="kube-system") as port:
            assert http_call(port, "GET", "/api/v2/services").startswith(b"[")
        with port_forward(lab, "pod/app", 15000) as port:  # the sidecar's admin port
            assert b"istio_requests_total" in http_call(port, "GET", "/stats/prometheus")
        with port_forward(lab, "pod/app", 8080) as port:  # the app itself, past the sidecar
            assert http_call(port, "GET", "/").startswith(b"app ")
