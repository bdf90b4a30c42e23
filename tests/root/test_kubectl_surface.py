"""What kubectl and the Python client reach for first, against a real lab: EndpointSlices
(`kubectl describe svc` reads them), `kubectl get all`, `kubectl auth can-i` and
`auth whoami`, the API server's /metrics and health checks, and a server version
kubectl 1.35 takes without a skew warning."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from netlab.apiserver.version import GIT_VERSION
from netlab.endpointslices import SERVICE_NAME_LABEL
from netlab.lab import Lab
from netlab.pki import ADMIN_USER
from tests.root.conftest import two_rack_builder, wait_for
from tests.root.test_kubectl import ECHO, KUBECTL, kubectl

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def slab():
    b = two_rack_builder("tsurf")
    b.add_deployment("web", replicas=2, command=ECHO, ports=[8080])
    b.add_service("web", selector={"app": "web"}, ports=[(80, 8080)])
    with Lab(b.build()) as lab:
        lab.settle()
        yield lab


def slice_ips(lab: Lab, ready: bool = True) -> set[str]:
    items = lab.store.list("endpointslices", "default", f"{SERVICE_NAME_LABEL}=web")[0]
    return {
        e["addresses"][0]
        for s in items
        for e in s["endpoints"]
        if e["conditions"]["ready"] is ready
    }


def described_endpoints(lab: Lab, version: str) -> set[str]:
    text = kubectl(lab, "describe", "svc", "web", version=version).stdout
    line = next(x for x in text.splitlines() if x.startswith("Endpoints:"))
    return set(line.split(None, 1)[1].split(","))


def test_describe_svc_and_get_endpointslices_show_the_ready_pods(slab):
    ips = slab.endpoint_ips("web")
    assert len(ips) == 2 and slice_ips(slab) == ips
    expected = {f"{ip}:8080" for ip in ips}
    assert described_endpoints(slab, "1.35") == expected  # from the EndpointSlices
    assert described_endpoints(slab, "1.20") == expected  # from the Endpoints
    listed = json.loads(
        kubectl(
            slab, "get", "endpointslices", "-l", f"{SERVICE_NAME_LABEL}=web", "-o", "json"
        ).stdout
    )
    (eps,) = listed["items"]
    assert eps["addressType"] == "IPv4"
    assert eps["ports"] == [{"name": "", "port": 8080, "protocol": "TCP"}]
    assert (
        eps["metadata"]["ownerReferences"][0]["uid"]
        == (slab.store.get("services", "default", "web")["metadata"]["uid"])
    )
    pods = {p.name: p for p in slab.ready_pods("web")}
    for endpoint in eps["endpoints"]:
        pod = pods[endpoint["targetRef"]["name"]]
        assert endpoint["addresses"] == [str(pod.address.ip)]
        assert endpoint["nodeName"] == pod.node
        assert endpoint["conditions"] == {"ready": True, "serving": True, "terminating": False}
    table = kubectl(slab, "get", "endpointslices").stdout.splitlines()
    assert table[0].split() == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    # read-only: the lab writes them
    refused = kubectl(slab, "delete", "endpointslice", eps["metadata"]["name"], check=False)
    assert refused.returncode != 0 and "MethodNotAllowed" in refused.stderr + refused.stdout
    assert slice_ips(slab) == ips


def test_slices_follow_a_scale_through_the_python_clients_watch(slab):
    from kubernetes import client, config, watch

    api = config.new_client_from_config(str(slab.run_dir / "kubeconfig"))
    discovery, apps = client.DiscoveryV1Api(api), client.AppsV1Api(api)
    listed = discovery.list_namespaced_endpoint_slice(
        "default", label_selector=f"{SERVICE_NAME_LABEL}=web"
    )
    (eps,) = listed.items
    assert {e.addresses[0] for e in eps.endpoints} == slab.endpoint_ips("web")
    name = eps.metadata.name
    assert discovery.read_namespaced_endpoint_slice(name, "default").address_type == "IPv4"
    apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 3}})
    seen: set[str] = set()
    events = watch.Watch()
    for event in events.stream(
        discovery.list_namespaced_endpoint_slice,
        "default",
        field_selector=f"metadata.name={name}",
        resource_version=listed.metadata.resource_version,
        timeout_seconds=30,
    ):
        obj = event["object"]
        seen = {e.addresses[0] for e in obj.endpoints or [] if e.conditions.ready}
        if len(seen) == 3:
            events.stop()
    assert len(seen) == 3
    assert wait_for(lambda: slab.endpoint_ips("web") == seen, 10)
    apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 2}})
    assert wait_for(
        lambda: len(slice_ips(slab)) == 2 and slice_ips(slab) == slab.endpoint_ips("web"), 15
    )


def test_kubectl_get_all_lists_the_workloads_and_services(slab):
    for version in ("1.35", "1.20"):
        out = kubectl(slab, "get", "all", version=version).stdout
        names = {row[0] for row in map(str.split, out.splitlines()) if row and "/" in row[0]}
        assert "service/web" in names and "deployment.apps/web" in names, out
        assert {f"pod/{p.name}" for p in slab.ready_pods("web")} <= names
        assert any(n.startswith("replicaset.apps/web-") for n in names)
        assert not any(n.startswith(("endpoints", "endpointslice", "event")) for n in names)


def test_kubectl_auth_can_i_and_whoami(slab, tmp_path):
    for version in ("1.35", "1.20"):
        assert kubectl(slab, "auth", "can-i", "get", "pods", version=version).stdout == "yes\n"
        assert (
            kubectl(slab, "auth", "can-i", "delete", "nodes", "-A", version=version).stdout
            == "yes\n"
        )
    rules = kubectl(slab, "auth", "can-i", "--list").stdout.splitlines()
    assert rules[1].split()[:1] == ["*.*"]
    who = kubectl(slab, "auth", "whoami", "-o", "json")
    info = json.loads(who.stdout)["status"]["userInfo"]
    assert info == {"username": ADMIN_USER, "groups": ["system:masters", "system:authenticated"]}
    table = kubectl(slab, "auth", "whoami").stdout
    assert re.search(rf"Username\s+{ADMIN_USER}", table)
    # the token stands for the lab's admin too
    config = json.loads((slab.run_dir / "kubeconfig").read_text())
    config["users"][0]["user"] = {"token": (slab.run_dir / "token").read_text().strip()}
    with_token = tmp_path / "token.kubeconfig"
    with_token.write_text(json.dumps(config))
    result = subprocess.run(
        [str(KUBECTL["1.35"]), "--kubeconfig", str(with_token), "auth", "whoami", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"]["userInfo"]["username"] == ADMIN_USER
    # the Python client's typed reviews
    from kubernetes import client
    from kubernetes import config as kube_config

    api = kube_config.new_client_from_config(str(slab.run_dir / "kubeconfig"))
    review = client.AuthorizationV1Api(api).create_self_subject_access_review(
        client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    namespace="default", verb="create", resource="deployments", group="apps"
                )
            )
        )
    )
    assert review.status.allowed is True
    me = client.AuthenticationV1Api(api).create_self_subject_review(client.V1SelfSubjectReview())
    assert me.status.user_info.username == ADMIN_USER


def request_count(text: str, verb: str, resource: str) -> float:
    """apiserver_request_total summed over codes and scopes, for one verb and resource."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{") and (
            f'verb="{verb}"' in line and f'resource="{resource}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_requests_and_health_checks_list_themselves(slab):
    before = kubectl(slab, "get", "--raw", "/metrics").stdout
    assert "# TYPE apiserver_request_duration_seconds histogram" in before
    for _ in range(3):
        kubectl(slab, "get", "deployments")
    after = kubectl(slab, "get", "--raw", "/metrics").stdout
    assert (
        request_count(after, "LIST", "deployments")
        >= request_count(before, "LIST", "deployments") + 3
    )
    assert 'apiserver_request_duration_seconds_bucket{component="apiserver"' in after
    # the lab's own watchers (DNS, sidecars, controllers) keep watches open
    assert re.search(r'apiserver_longrunning_requests\{[^}]*verb="WATCH"[^}]*\} [1-9]', after)
    assert re.search(r"apiserver_watch_events_total\{[^}]*\} [1-9]", after)
    livez = kubectl(slab, "get", "--raw", "/livez?verbose").stdout
    assert livez.splitlines()[0] == "[+]ping ok" and livez.endswith("livez check passed\n")
    readyz = kubectl(slab, "get", "--raw", "/readyz?verbose").stdout
    assert "[+]poststarthook/netlab-lab-built ok" in readyz
    assert readyz.endswith("readyz check passed\n")
    assert kubectl(slab, "get", "--raw", "/healthz").stdout == "ok"


def test_kubectl_1_35_sees_no_version_skew(slab):
    version = kubectl(slab, "version")
    assert re.search(r"Server Version: v1\.3[4-6]\.\d+\+netlab", version.stdout)
    assert "version difference" not in version.stderr + version.stdout
    assert kubectl(slab, "get", "pods").stderr == ""
    old = kubectl(slab, "version", version="1.20")
    assert f'GitVersion:"{GIT_VERSION}"' in old.stdout and old.stderr == ""
