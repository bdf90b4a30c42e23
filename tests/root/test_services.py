"""Services on a real lab: DNS answers from the lab's DNS pod through the
kube-dns VIP (dig, getent, curl inside pods), and nftables round-robin to
endpoints (real connections)."""

from __future__ import annotations

import collections
import sys
import time

import pytest

from netlab.lab import Lab
from tests.root.conftest import lab_namespaces, two_rack_builder, wait_for

pytestmark = pytest.mark.root

ZONE = "cluster.local"
ECHO = [sys.executable, "-m", "netlab.apps.echo", "8080"]
MANY = 40  # endpoints of a headless Service whose A answer does not fit 512 bytes


@pytest.fixture(scope="module")
def slab():
    b = two_rack_builder("tsvc")
    b.add_deployment(
        "web", replicas=3, command=ECHO, ports=[{"containerPort": 8080, "name": "http"}]
    )
    b.add_deployment("many", replicas=MANY, command=["sleep", "infinity"])
    b.add_service("web", ports=[{"name": "http", "port": 80, "targetPort": "http"}],
                  selector={"app": "web"})  # fmt: skip
    b.add_service("web-headless", ports=[{"name": "http", "port": 8080}],
                  selector={"app": "web"}, headless=True)  # fmt: skip
    b.add_service("sticky", ports=[{"port": 80, "targetPort": 8080}], selector={"app": "web"},
                  session_affinity="ClientIP")  # fmt: skip
    b.add_service("empty", ports=[{"port": 80, "targetPort": 8080}], selector={"app": "nothing"})
    b.add_service("many", ports=[], selector={"app": "many"}, headless=True)
    b.add_service("idle", ports=[], selector={"app": "nothing"}, headless=True)
    with Lab(b.build()) as running:
        running.wait_endpoints("default", "web", count=3)
        running.wait_endpoints("default", "many", count=MANY)
        yield running
    assert not [n for n in lab_namespaces() if n.startswith("nl-tsvc")]


def sh(lab: Lab, script: str, pod: str = "a", timeout: float = 60) -> str:
    result = lab.exec(pod, ["sh", "-c", script], timeout=timeout)
    assert result.returncode == 0, f"{script}: {result.stdout}{result.stderr}"
    return result.stdout


def dig(lab: Lab, *args: str, pod: str = "a") -> str:
    result = lab.exec(pod, ["dig", "+time=2", "+tries=1", *args], timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def web_ips(lab: Lab) -> set[str]:
    return {str(p.address.ip) for p in lab.pod_list() if p.labels.get("app") == "web"}


def web_names(lab: Lab) -> set[str]:
    return {p.name for p in lab.pod_list() if p.labels.get("app") == "web"}


def test_resolv_conf_points_at_the_dns_service(slab):
    text = sh(slab, "cat /etc/resolv.conf")
    assert f"nameserver {slab.service_vip('kube-dns', 'kube-system')}" in text
    assert f"search default.svc.{ZONE} svc.{ZONE} {ZONE}" in text
    assert "options ndots:5" in text


def test_clusterip_service_a_record(slab):
    assert dig(slab, "+short", f"web.default.svc.{ZONE}").split() == [slab.service_vip("web")]


def test_headless_service_has_one_a_per_endpoint(slab):
    assert set(dig(slab, "+short", f"web-headless.default.svc.{ZONE}").split()) == web_ips(slab)


def test_srv_with_target_address_in_additional(slab):
    out = dig(slab, "SRV", f"_http._tcp.web.default.svc.{ZONE}")
    assert f"0 100 80 web.default.svc.{ZONE}." in out
    assert ";; ADDITIONAL SECTION:" in out
    additional = out.split(";; ADDITIONAL SECTION:")[1]
    assert slab.service_vip("web") in additional
    headless = dig(slab, "+short", "SRV", f"_http._tcp.web-headless.default.svc.{ZONE}")
    assert len(headless.splitlines()) == 3
    assert all(" 8080 " in line for line in headless.splitlines())


def test_ptr_for_vip_and_pod_a_record(slab):
    vip = slab.service_vip("web")
    assert dig(slab, "+short", "-x", vip).strip() == f"web.default.svc.{ZONE}."
    pod_ip = str(slab.pod("b").address.ip)
    dashed = pod_ip.replace(".", "-")
    assert dig(slab, "+short", f"{dashed}.default.pod.{ZONE}").strip() == pod_ip


def test_nxdomain_and_nodata(slab):
    assert "status: NXDOMAIN" in dig(slab, f"nosuch.default.svc.{ZONE}")
    nodata = dig(slab, "AAAA", f"web.default.svc.{ZONE}")
    assert "status: NOERROR" in nodata and "ANSWER: 0" in nodata
    assert "SOA" in nodata.split(";; AUTHORITY SECTION:")[1]
    assert "status: NXDOMAIN" in dig(slab, f"idle.default.svc.{ZONE}")
    assert "status: REFUSED" in dig(slab, "example.com")


def test_large_answer_falls_back_to_tcp(slab):
    out = dig(slab, "+noedns", "+ignore", f"many.default.svc.{ZONE}")
    assert "flags: qr aa" in out and " tc" in out.split("flags:")[1].split(";")[0]
    full = dig(slab, "+noedns", "+short", f"many.default.svc.{ZONE}")  # dig retries over TCP
    assert len(full.split()) == MANY


def test_getent_and_curl_through_the_search_path(slab):
    assert sh(slab, "getent hosts web").split()[0] == slab.service_vip("web")
    answer = sh(slab, "curl -s --max-time 5 http://web/hello")
    assert answer.split()[0] in web_names(slab) and answer.split()[3] == "/hello"


def test_dns_rotation_is_strict(slab):
    n, k = 30, 3
    out = sh(
        slab,
        f"for i in $(seq {n}); do dig +short web-headless.default.svc.{ZONE} | head -1; done",
    )
    firsts = collections.Counter(out.split())
    assert set(firsts) == web_ips(slab)
    assert sorted(firsts.values()) == [n // k] * k


def test_round_robin_connections(slab):
    out = sh(slab, "for i in $(seq 30); do curl -s --max-time 5 http://web/; done")
    landed = collections.Counter(line.split()[0] for line in out.splitlines())
    assert set(landed) == web_names(slab)
    assert sorted(landed.values()) == [10, 10, 10]


def test_client_ip_affinity_pins(slab):
    out = sh(slab, "for i in $(seq 10); do curl -s --max-time 5 http://sticky/; done")
    assert len({line.split()[0] for line in out.splitlines()}) == 1


def test_service_without_endpoints_rejects_at_once(slab):
    started = time.monotonic()
    result = slab.exec("a", ["curl", "-s", "--max-time", "5", "http://empty/"])
    assert result.returncode == 7  # connection refused: a TCP reset, not a timeout
    assert time.monotonic() - started < 3


def test_hairpin_a_pod_reaches_its_own_service(slab):
    web = sorted(web_names(slab))[0]
    out = sh(slab, "for i in $(seq 6); do curl -s --max-time 5 http://web/; done", pod=web)
    assert web in {line.split()[0] for line in out.splitlines()}


def test_endpoint_churn(slab):
    """A deleted pod leaves the Endpoints at once, then DNS answers and the
    VIP rules; its Deployment's replacement joins when it is ready."""
    victim = sorted(slab.pod_list(), key=lambda p: p.name)
    victim = next(p for p in victim if p.labels.get("app") == "web")
    gone = str(victim.address.ip)
    slab.delete_pod(victim.name)

    assert gone not in slab.endpoint_ips("web")
    assert wait_for(lambda: gone not in dig(slab, "+short", f"web-headless.default.svc.{ZONE}"), 1)
    out = sh(slab, "for i in $(seq 12); do curl -s --max-time 5 http://web/; done")
    assert victim.name not in out
    assert wait_for(lambda: len(slab.endpoint_ips("web")) == 3, 15)
    assert slab.endpoint_ips("web") == web_ips(slab)


def test_apply_adds_and_changes_a_service(slab):
    manifest = """
apiVersion: v1
kind: Service
metadata: {name: added}
spec:
  selector: {app: web}
  ports: [{name: http, port: 81, targetPort: 8080}]
"""
    assert slab.apply_text(manifest) == [
        {"kind": "Service", "namespace": "default", "name": "added", "action": "created"}
    ]
    vip = slab.service_vip("added")
    assert wait_for(lambda: dig(slab, "+short", f"added.default.svc.{ZONE}").split() == [vip], 1)
    assert sh(slab, "curl -s --max-time 5 http://added:81/").split()[0] in web_names(slab)
    changed = manifest.replace("port: 81", "port: 82")
    assert slab.apply_text(changed)[0]["action"] == "configured"
    assert slab.service_vip("added") == vip
    assert sh(slab, "curl -s --max-time 5 http://added:82/").split()[0] in web_names(slab)
    assert slab.apply_text(changed)[0]["action"] == "unchanged"
    slab.delete_service("added")
    assert wait_for(lambda: "NXDOMAIN" in dig(slab, f"added.default.svc.{ZONE}"), 1)


def test_apply_creates_and_scales_a_deployment_behind_a_service(slab):
    manifest = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: api}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: api}}}}
  template:
    metadata: {{labels: {{app: api}}}}
    spec:
      containers:
        - name: api
          command: {ECHO!r}
          ports: [{{name: http, containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: api}}
spec:
  selector: {{app: api}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"""
    actions = {(r["kind"], r["action"]) for r in slab.apply_text(manifest)}
    assert actions == {("Deployment", "created"), ("Service", "created")}
    assert len(slab.wait_endpoints("default", "api", count=2, timeout=15)) == 2
    out = sh(slab, "for i in $(seq 4); do curl -s --max-time 5 http://api/; done")
    assert len({line.split()[0] for line in out.splitlines()}) == 2
    scaled = slab.apply_text(manifest.replace("replicas: 2", "replicas: 1"))
    assert ("Deployment", "configured") in {(r["kind"], r["action"]) for r in scaled}
    # the Deployment controller stops the surplus pod (asynchronously, as in Kubernetes)
    assert wait_for(
        lambda: len([p for p in slab.pod_list() if p.labels.get("app") == "api"]) == 1, 15
    )
    api_pods = [p for p in slab.pod_list() if p.labels.get("app") == "api"]
    assert len(api_pods) == 1
    ep = slab.store.get("endpoints", "default", "api")
    assert [a["ip"] for s in ep["subsets"] for a in s["addresses"]] == [str(api_pods[0].address.ip)]
