"""Real Kubernetes clients against a running lab: kubectl 1.35 and Debian's 1.20
(scripts/kubectl.sh fetches both into .tools/), and the `kubernetes` Python client,
over the lab's TLS endpoint on loopback."""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest

from netlab.lab import Lab
from netlab.store import Store
from tests.root.conftest import two_rack_builder, wait_for

pytestmark = pytest.mark.root

TOOLS = Path(__file__).resolve().parents[2] / ".tools"
KUBECTL = {"1.35": TOOLS / "kubectl-1.35" / "kubectl", "1.20": TOOLS / "kubectl-1.20" / "kubectl"}
ECHO = ["python3", "-m", "netlab.apps.echo", "8080"]

HELLO = textwrap.dedent(
    """\
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: hello}
    spec:
      replicas: REPLICAS
      selector: {matchLabels: {app: hello}}
      template:
        metadata: {labels: {app: hello}}
        spec:
          containers:
            - name: hello
              command: [python3, -m, netlab.apps.echo, "8080"]
              ports: [{containerPort: 8080}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: hello}
    spec:
      selector: {app: hello}
      ports: [{port: 80, targetPort: 8080}]
    """
)


@pytest.fixture(scope="module")
def klab():
    b = two_rack_builder("tkube")
    b.add_deployment("web", replicas=2, command=ECHO, ports=[8080])
    b.add_service("web", selector={"app": "web"}, ports=[(80, 8080)])
    # a short history: an old resourceVersion expires soon (the watch relist test)
    with Lab(b.build(), store=Store(history=12)) as lab:
        lab.settle()
        yield lab


def kubectl(lab: Lab, *args: str, version: str = "1.35", check: bool = True, stdin: str = ""):
    binary = KUBECTL[version]
    assert binary.exists(), f"{binary} is missing: scripts/kubectl.sh fetches it"
    result = subprocess.run(
        [str(binary), "--kubeconfig", str(lab.run_dir / "kubeconfig"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def web_pods(lab: Lab, app: str = "web") -> set[str]:
    return {p.name for p in lab.ready_pods(app)}


def test_kubectl_gets_nodes_and_pods_with_the_labs_columns(klab):
    nodes = kubectl(klab, "get", "nodes").stdout.splitlines()
    assert nodes[0].split()[:3] == ["NAME", "STATUS", "RACK"]
    assert {line.split()[0] for line in nodes[1:]} == set(klab.nodes)
    wide = kubectl(klab, "get", "pods", "-o", "wide").stdout
    header = wide.splitlines()[0].split()
    assert header[-4:] == ["IP", "NODE", "RACK", "NETNS"]
    for pod in [p for p in klab.pod_list() if p.namespace == "default"]:
        row = next(line.split() for line in wide.splitlines() if line.startswith(pod.name + " "))
        node = klab.nodes[pod.node]
        assert row[-4:] == [str(pod.address.ip), pod.node, node.rack, pod.netns]
    listed = json.loads(kubectl(klab, "get", "pods", "-l", "app=web", "-o", "json").stdout)
    assert {p["metadata"]["name"] for p in listed["items"]} == web_pods(klab)
    everywhere = kubectl(klab, "get", "pods", "-A").stdout
    assert everywhere.startswith("NAMESPACE") and "kube-system" in everywhere
    assert "podIP:" in kubectl(klab, "get", "pod", "a", "-o", "yaml").stdout
    described = kubectl(klab, "describe", "pod", "a").stdout
    assert "Node:" in described and "n1/" in described and "Status:" in described
    events = described[described.index("Events:") :]
    assert "Scheduled" in events and "default-scheduler" in events and "to n1" in events


def test_kubectl_apply_scale_rollout_delete_logs_exec(klab, tmp_path):
    manifest = tmp_path / "hello.yaml"
    manifest.write_text(HELLO.replace("REPLICAS", "1"))
    out = kubectl(klab, "apply", "-f", str(manifest)).stdout
    assert "deployment.apps/hello created" in out and "service/hello created" in out
    kubectl(klab, "rollout", "status", "deployment/hello", "--timeout", "20s")
    assert wait_for(lambda: len(web_pods(klab, "hello")) == 1, 10)
    manifest.write_text(HELLO.replace("REPLICAS", "2"))
    assert "deployment.apps/hello configured" in kubectl(klab, "apply", "-f", str(manifest)).stdout
    assert wait_for(lambda: len(web_pods(klab, "hello")) == 2, 15)
    kubectl(klab, "scale", "deployment/hello", "--replicas", "3")
    assert wait_for(lambda: len(web_pods(klab, "hello")) == 3, 15)
    # a deleted pod is replaced by its Deployment
    victim = sorted(web_pods(klab, "hello"))[0]
    kubectl(klab, "delete", "pod", victim)
    assert wait_for(
        lambda: len(web_pods(klab, "hello")) == 3 and victim not in web_pods(klab, "hello"), 15
    )
    killed = kubectl(klab, "get", "events", "--field-selector", "reason=Killing").stdout
    assert f"pod/{victim}" in killed
    # exec runs in the pod's own network namespace; stdin and exit codes come through
    pod = klab.pod("a")
    addr = kubectl(klab, "exec", "a", "--", "ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert f"{pod.address.ip}/" in addr
    assert kubectl(klab, "exec", "-i", "a", "--", "cat", stdin="through stdin\n").stdout == (
        "through stdin\n"
    )
    failed = kubectl(klab, "exec", "a", "--", "sh", "-c", "exit 3", check=False)
    assert failed.returncode == 3
    # logs: what a pod wrote, with --since, -c and -f
    target = sorted(web_pods(klab, "hello"))[0]
    ip = str(klab.pod(target).address.ip)
    klab.exec(
        "a",
        ["python3", "-c", f"import urllib.request; urllib.request.urlopen('http://{ip}:8080/')"],
    )
    assert wait_for(lambda: '"GET / HTTP/1.1" 200' in kubectl(klab, "logs", target).stdout, 5)
    assert '"GET /' in kubectl(klab, "logs", target, "-c", "hello", "--since", "60s").stdout
    follow = subprocess.Popen(
        [
            str(KUBECTL["1.35"]),
            "--kubeconfig",
            str(klab.run_dir / "kubeconfig"),
            "logs",
            "-f",
            target,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    klab.exec(
        "a",
        [
            "python3",
            "-c",
            f"import urllib.request; urllib.request.urlopen('http://{ip}:8080/followed')",
        ],
    )
    time.sleep(0.5)
    follow.terminate()
    assert "/followed" in follow.communicate(timeout=5)[0]
    # get -w: the list, then a line per change
    watch = subprocess.Popen(
        [
            str(KUBECTL["1.35"]),
            "--kubeconfig",
            str(klab.run_dir / "kubeconfig"),
            "get",
            "pods",
            "-w",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    victim = sorted(web_pods(klab, "hello"))[0]
    kubectl(klab, "delete", "pod", victim)
    time.sleep(1.0)
    watch.terminate()
    seen = watch.communicate(timeout=5)[0]
    assert seen.splitlines()[0].split()[:3] == ["NAME", "READY", "STATUS"]
    assert any(line.startswith(victim) and "Terminating" in line for line in seen.splitlines())
    assert "deleted" in kubectl(klab, "delete", "-f", str(manifest)).stdout
    assert wait_for(lambda: not web_pods(klab, "hello"), 10)


def test_kubectl_server_side_apply_creates_and_changes(klab, tmp_path):
    manifest = tmp_path / "ssa.yaml"
    service = "apiVersion: v1\nkind: Service\nmetadata: {name: ssa}\nspec:\n  selector: {app: web}\n  ports: [{port: PORT, targetPort: 8080}]\n"
    manifest.write_text(service.replace("PORT", "80"))
    out = kubectl(klab, "apply", "--server-side", "-f", str(manifest)).stdout
    assert "service/ssa serverside-applied" in out
    manifest.write_text(service.replace("PORT", "81"))
    kubectl(klab, "apply", "--server-side", "-f", str(manifest))
    ports = klab.store.get("services", "default", "ssa")["spec"]["ports"]
    assert [p["port"] for p in ports] == [81]
    kubectl(klab, "delete", "service", "ssa")


def test_kubectl_create_generators_send_protobuf_the_lab_reads(klab):
    kubectl(klab, "create", "namespace", "gen-ns")
    assert klab.store.get("namespaces", None, "gen-ns")
    kubectl(
        klab, "create", "deployment", "gen", "--image=host", "--port=8080", "--replicas=2",
        "--", *ECHO,
    )  # fmt: skip
    assert wait_for(lambda: len(web_pods(klab, "gen")) == 2, 15)
    kubectl(klab, "create", "service", "clusterip", "gen", "--tcp=80:8080")
    service = klab.store.get("services", "default", "gen")
    assert service["spec"]["ports"][0]["port"] == 80 and service["spec"]["selector"] == {
        "app": "gen"
    }
    assert wait_for(lambda: len(klab.endpoint_ips("gen")) == 2, 10)
    kubectl(klab, "create", "job", "gen-job", "--image=host", "--", "sh", "-c", "echo once")
    assert wait_for(
        lambda: klab.store.get("jobs", "default", "gen-job")["status"].get("succeeded") == 1, 15
    )
    refused = kubectl(klab, "create", "quota", "nope", check=False)
    assert refused.returncode != 0
    for args in (["deployment", "gen"], ["service", "gen"], ["job", "gen-job"]):
        kubectl(klab, "delete", *args)


def test_debians_kubectl_1_20_does_the_core_verbs(klab, tmp_path):
    manifest = tmp_path / "old.yaml"
    manifest.write_text(HELLO.replace("hello", "old").replace("REPLICAS", "1"))
    wide = kubectl(klab, "get", "pods", "-o", "wide", version="1.20").stdout
    assert "RACK" in wide.splitlines()[0] and str(klab.pod("a").address.ip) in wide
    assert "created" in kubectl(klab, "apply", "-f", str(manifest), version="1.20").stdout
    kubectl(klab, "rollout", "status", "deployment/old", "--timeout", "20s", version="1.20")
    kubectl(klab, "scale", "deployment/old", "--replicas", "2", version="1.20")
    assert wait_for(lambda: len(web_pods(klab, "old")) == 2, 15)
    assert "Node:" in kubectl(klab, "describe", "pod", "a", version="1.20").stdout
    # kubectl before 1.30 speaks SPDY to exec, which the lab refuses with the reason
    refused = kubectl(klab, "exec", "a", "--", "true", version="1.20", check=False)
    assert refused.returncode != 0 and "kubectl 1.30 or newer" in refused.stderr
    kubectl(klab, "delete", "-f", str(manifest), version="1.20")
    assert wait_for(lambda: not web_pods(klab, "old"), 10)


def _https(lab: Lab, context: ssl.SSLContext, headers: str = "") -> str:
    port = int((lab.run_dir / "api.port").read_text())
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(
                f"GET /api/v1/pods HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode()
            )
            return tls.recv(65536).decode(errors="replace")


def test_only_the_labs_certificate_or_token_get_in(klab, tmp_path):
    from netlab.pki import make_pki

    trusting = ssl.create_default_context(cafile=str(klab.run_dir / "pki" / "ca.crt"))
    anonymous = _https(klab, trusting)
    assert anonymous.startswith("HTTP/1.1 401") and '"reason": "Unauthorized"' in anonymous
    assert _https(klab, trusting, "Authorization: Bearer not-the-token\r\n").startswith(
        "HTTP/1.1 401"
    )
    token = (klab.run_dir / "token").read_text().strip()
    assert _https(klab, trusting, f"Authorization: Bearer {token}\r\n").startswith("HTTP/1.1 200")
    # a client certificate from another CA: the handshake itself fails
    other = make_pki(tmp_path / "other", "other")
    stranger = ssl.create_default_context(cafile=str(klab.run_dir / "pki" / "ca.crt"))
    stranger.load_cert_chain(other.client_cert, other.client_key)
    try:  # TLS 1.3: the server's alert may only show at the first read
        answer = _https(klab, stranger)
    except (ssl.SSLError, OSError):
        answer = ""
    assert not answer.startswith("HTTP/")
    # kubectl with the lab's server and a wrong token is refused too
    config = json.loads((klab.run_dir / "kubeconfig").read_text())
    config["users"][0]["user"] = {"token": "not-the-token"}
    anon = tmp_path / "anon.kubeconfig"
    anon.write_text(json.dumps(config))
    result = subprocess.run(
        [str(KUBECTL["1.35"]), "--kubeconfig", str(anon), "get", "pods"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0 and "Unauthorized" in result.stderr + result.stdout
    assert oct((klab.run_dir / "kubeconfig").stat().st_mode)[-3:] == "600"


def test_bad_requests_get_a_status_and_change_nothing(klab, tmp_path):
    unknown = kubectl(klab, "get", "gadgets", check=False)
    assert unknown.returncode != 0 and "gadgets" in unknown.stderr
    before = klab.store.get("deployments", "default", "web")
    broken = kubectl(
        klab, "patch", "deployment", "web", "--type", "merge", "-p",
        '{"spec":{"template":{"spec":{"containers":[{"name":"web","bogus":1}]}}}}', check=False,
    )  # fmt: skip
    assert broken.returncode != 0 and "bogus" in broken.stderr
    assert klab.store.get("deployments", "default", "web")["spec"] == before["spec"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: {ports: [{port: 99999}]}\n"
    )
    refused = kubectl(klab, "apply", "-f", str(bad), check=False)
    assert refused.returncode != 0 and "port" in refused.stderr
    assert "bad" not in {s["metadata"]["name"] for s in klab.store.list("services", "default")[0]}
    token = (klab.run_dir / "token").read_text().strip()
    context = ssl.create_default_context(cafile=str(klab.run_dir / "pki" / "ca.crt"))
    port = int((klab.run_dir / "api.port").read_text())
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            body = b"{not json"
            tls.sendall(
                b"POST /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: x\r\n"
                + f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n".encode()
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            answer = tls.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 400") and '"kind": "Status"' in answer


def test_the_kubernetes_python_client(klab):
    from kubernetes import client, config, watch
    from kubernetes.stream import stream

    api = config.new_client_from_config(str(klab.run_dir / "kubeconfig"))
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    listed = core.list_namespaced_pod("default")
    assert {p.metadata.name for p in listed.items} >= {"a", "b", "c"} | web_pods(klab)
    old_version = listed.metadata.resource_version
    # a watch from a version the store has forgotten gets 410 Gone; the client relists
    for replicas in (4, 2, 4, 2):
        apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": replicas}})
        assert wait_for(lambda r=replicas: len(web_pods(klab)) == r, 15)
    with pytest.raises(client.ApiException) as gone:
        for _ in watch.Watch().stream(
            core.list_namespaced_pod, "default", resource_version=old_version, timeout_seconds=3
        ):
            pass
    assert gone.value.status == 410
    relisted = core.list_namespaced_pod("default")
    seen: list[tuple[str, str]] = []
    events = watch.Watch()
    victim = sorted(web_pods(klab))[0]

    def follow() -> None:
        for event in events.stream(
            core.list_namespaced_pod,
            "default",
            resource_version=relisted.metadata.resource_version,
            timeout_seconds=10,
        ):
            seen.append((event["type"], event["object"].metadata.name))
            if seen[-1] == ("DELETED", victim):
                events.stop()

    watcher = threading.Thread(target=follow)
    watcher.start()
    time.sleep(0.5)
    core.delete_namespaced_pod(victim, "default")
    watcher.join(15)
    assert ("DELETED", victim) in seen
    out = stream(
        core.connect_get_namespaced_pod_exec, "a", "default",
        command=["sh", "-c", "echo $POD_NAME; ip -4 -o addr show eth0"],
        stderr=True, stdin=False, stdout=True, tty=False,
    )  # fmt: skip
    assert out.startswith("a\n") and f"{klab.pod('a').address.ip}/" in out


SIZED = textwrap.dedent(
    """\
    apiVersion: v1
    kind: Pod
    metadata: {name: sized}
    spec:
      containers:
        - name: app
          command: [sleep, infinity]
          resources:
            requests: {cpu: 100m, memory: 32Mi}
            limits: {cpu: "0.2", memory: 64Mi}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: huge}
    spec:
      replicas: 1
      selector: {matchLabels: {app: huge}}
      template:
        metadata: {labels: {app: huge}}
        spec:
          containers:
            - name: app
              command: [sleep, infinity]
              resources: {limits: {cpu: "1000", memory: 1Gi}}
    """
)


def test_resources_qos_class_and_a_pod_too_big_for_any_node(klab, tmp_path):
    manifest = tmp_path / "sized.yaml"
    manifest.write_text(SIZED)
    kubectl(klab, "apply", "-f", str(manifest))
    try:
        described = kubectl(klab, "describe", "pod", "sized").stdout
        assert re.search(r"QoS Class:\s+Burstable\n", described), described
        limits = described[described.index("Limits:") : described.index("Environment:")]
        assert limits.split() == [
            "Limits:",
            *("cpu:", "200m", "memory:", "64Mi"),
            "Requests:",
            *("cpu:", "100m", "memory:", "32Mi"),
        ]

        def pending() -> list[dict]:
            pods = json.loads(kubectl(klab, "get", "pods", "-l", "app=huge", "-o", "json").stdout)
            return [p for p in pods["items"] if p["status"].get("phase") == "Pending"]

        assert wait_for(lambda: len(pending()) == 1, 10)
        (stuck,) = pending()
        name = stuck["metadata"]["name"]
        assert stuck["status"]["qosClass"] == "Guaranteed"
        wanted = f"0/{len(klab.nodes)} nodes are available: {len(klab.nodes)} Insufficient cpu."
        assert wanted in stuck["status"]["conditions"][0]["message"]
        events = kubectl(
            klab, "get", "events", "--field-selector", f"involvedObject.name={name}"
        ).stdout
        assert "FailedScheduling" in events and wanted in events, events
        described = kubectl(klab, "describe", "pod", name).stdout
        assert re.search(r"QoS Class:\s+Guaranteed\n", described), described
        assert re.search(r"Warning\s+FailedScheduling\s.*default-scheduler", described), described
    finally:
        kubectl(klab, "delete", "-f", str(manifest), "--wait=false", check=False)
