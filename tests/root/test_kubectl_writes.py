"""Every write validated, dry runs that change nothing, and the writes tutorials type
first (run, replace, label, annotate, delete ns), through the real kubectl 1.35 and the
`kubernetes` Python client against a running lab."""

from __future__ import annotations

import json
import textwrap

import pytest

from netlab.lab import Lab
from tests.root.conftest import two_rack_builder, wait_for
from tests.root.test_kubectl import ECHO, kubectl, web_pods

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def wlab():
    b = two_rack_builder("tkwr")
    b.add_deployment("web", replicas=2, command=ECHO, ports=[8080])
    b.add_service("web", selector={"app": "web"}, ports=[(80, 8080)])
    with Lab(b.build()) as lab:
        lab.settle()
        yield lab


def live(lab: Lab, *what: str) -> dict:
    return json.loads(kubectl(lab, "get", *what, "-o", "json").stdout)


def test_negative_replicas_are_refused_on_every_write_path(wlab, tmp_path):
    before = web_pods(wlab)
    stored = live(wlab, "deploy", "web")
    wording = "spec.replicas: Invalid value: -2: must be greater than or equal to 0"
    patch = kubectl(
        wlab, "patch", "deploy", "web", "--type", "merge", "-p", '{"spec":{"replicas":-2}}',
        check=False,
    )  # fmt: skip
    assert patch.returncode != 0 and 'The Deployment "web" is invalid' in patch.stderr
    assert wording in patch.stderr
    for kind in ("json", "strategic"):
        body = (
            '[{"op":"replace","path":"/spec/replicas","value":-2}]'
            if kind == "json"
            else '{"spec":{"replicas":-2}}'
        )
        refused = kubectl(wlab, "patch", "deploy", "web", "--type", kind, "-p", body, check=False)
        assert refused.returncode != 0 and wording in refused.stderr, refused.stderr
    exported = live(wlab, "deploy", "web")
    exported["spec"]["replicas"] = -2
    manifest = tmp_path / "web.json"
    manifest.write_text(json.dumps(exported))
    for verb in (["apply", "-f"], ["replace", "-f"], ["apply", "--server-side", "-f"]):
        refused = kubectl(wlab, *verb, str(manifest), check=False)
        assert refused.returncode != 0 and wording in refused.stderr, (verb, refused.stderr)
    from kubernetes import client, config

    apps = client.AppsV1Api(config.new_client_from_config(str(wlab.run_dir / "kubeconfig")))
    with pytest.raises(client.ApiException) as err:
        apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": -1}})
    assert err.value.status == 422
    after = live(wlab, "deploy", "web")
    assert after["spec"]["replicas"] == 2
    assert after["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
    wlab.settle()
    assert web_pods(wlab) == before


def test_dry_runs_and_diff_change_nothing(wlab, tmp_path):
    stored = live(wlab, "deploy", "web")
    writes: list[tuple[str, str]] = []
    stop = wlab.store.subscribe(
        lambda e: writes.append((e.resource.plural, e.object["metadata"]["name"])),
        copy_objects=False,
    )
    changed = json.loads(json.dumps(stored))
    changed["spec"]["replicas"] = 5
    manifest = tmp_path / "web.json"
    manifest.write_text(json.dumps(changed))
    diff = kubectl(wlab, "diff", "-f", str(manifest), check=False)
    assert diff.returncode == 1, diff.stderr  # 1: there are differences
    assert "-  replicas: 2" in diff.stdout and "+  replicas: 5" in diff.stdout
    assert "+  generation: 2" in diff.stdout
    out = kubectl(wlab, "apply", "--dry-run=server", "-f", str(manifest)).stdout
    assert "(server dry run)" in out
    kubectl(wlab, "scale", "deploy", "web", "--replicas", "4", "--dry-run=server")
    kubectl(wlab, "delete", "pod", "a", "--dry-run=server")
    kubectl(wlab, "run", "drypod", "--image=busybox", "--dry-run=server", "--", "sleep", "9")
    kubectl(wlab, "create", "namespace", "dryns", "--dry-run=server")
    after = live(wlab, "deploy", "web")
    assert after["spec"]["replicas"] == 2
    for field in ("generation", "resourceVersion"):
        assert after["metadata"][field] == stored["metadata"][field]
    assert "a" in {p.name for p in wlab.pod_list()}
    assert "drypod" not in {p.name for p in wlab.pod_list()}
    assert kubectl(wlab, "get", "ns", "dryns", check=False).returncode != 0
    stop()
    told = [w for w in writes if w[1] in ("web", "a", "drypod", "dryns")]
    assert told == []  # no write: no watcher was told anything


def test_typed_objects_without_kind_and_api_version(wlab):
    from kubernetes import client, config

    core = client.CoreV1Api(config.new_client_from_config(str(wlab.run_dir / "kubeconfig")))
    made = core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="typed")))
    assert made.kind == "Namespace" and made.metadata.uid
    assert core.read_namespace("typed").status.phase == "Active"


def test_kubectl_run_replace_label_and_annotate(wlab):
    out = kubectl(wlab, "run", "tmp", "--image=busybox", "--", "sleep", "600").stdout
    assert "pod/tmp created" in out
    assert wait_for(lambda: wlab.store.get("pods", "default", "tmp")["status"].get("phase")
                    == "Running", 15)  # fmt: skip
    pod = live(wlab, "pod", "tmp")
    assert pod["spec"]["dnsPolicy"] == "ClusterFirst"
    assert pod["spec"]["containers"][0]["args"] == ["sleep", "600"]
    kubectl(wlab, "annotate", "pod", "tmp", "note=kept")
    kubectl(wlab, "label", "pod", "tmp", "tier=debug")
    pod = live(wlab, "pod", "tmp")
    assert pod["metadata"]["annotations"]["note"] == "kept"
    assert pod["metadata"]["labels"] == {"run": "tmp", "tier": "debug"}
    kubectl(wlab, "label", "pod", "tmp", "tier-")
    assert live(wlab, "pod", "tmp")["metadata"]["labels"] == {"run": "tmp"}
    # the spec of a running pod stays as it was made
    moved = live(wlab, "pod", "tmp")
    moved["spec"]["nodeName"] = "n2" if pod["spec"]["nodeName"] != "n2" else "n1"
    refused = kubectl(wlab, "replace", "-f", "-", stdin=json.dumps(moved), check=False)
    assert refused.returncode != 0 and "Forbidden" in refused.stderr
    # kubectl replace of a Deployment: the whole object, read and written back
    web = live(wlab, "deploy", "web")
    web["spec"]["replicas"] = 3
    assert "replaced" in kubectl(wlab, "replace", "-f", "-", stdin=json.dumps(web)).stdout
    assert wait_for(lambda: len(web_pods(wlab)) == 3, 15)
    web = live(wlab, "deploy", "web")
    web["spec"]["replicas"] = 2
    kubectl(wlab, "replace", "-f", "-", stdin=json.dumps(web))
    assert wait_for(lambda: len(web_pods(wlab)) == 2, 15)
    # no ephemeral containers here: kubectl says so (it read a nil securityContext before)
    debug = kubectl(wlab, "debug", "tmp", "--image=busybox", "--profile=general", check=False)
    assert debug.returncode != 0 and "panic" not in debug.stderr
    assert "ephemeral containers are disabled" in debug.stderr
    kubectl(wlab, "delete", "pod", "tmp", "--wait=false")


def test_relabeling_a_pod_out_of_its_service(wlab):
    wlab.settle()
    victim = sorted(web_pods(wlab))[0]
    address = str(wlab.pod(victim).address.ip)
    assert address in wlab.endpoint_ips("web")
    kubectl(wlab, "label", "pod", victim, "app=debug", "--overwrite")
    # it leaves the Service's endpoints, and the Deployment replaces it
    assert wait_for(lambda: address not in wlab.endpoint_ips("web"), 10)
    assert wait_for(lambda: len(wlab.endpoint_ips("web")) == 2, 15)
    assert victim not in web_pods(wlab) and len(web_pods(wlab)) == 2
    orphan = live(wlab, "pod", victim)
    assert "ownerReferences" not in orphan["metadata"]
    assert orphan["metadata"]["labels"]["app"] == "debug"
    slices = live(wlab, "endpoints", "web")["subsets"]
    assert address not in json.dumps(slices)
    # the orphan keeps running on its own
    assert orphan["status"]["phase"] == "Running"
    kubectl(wlab, "delete", "pod", victim)


def test_long_names_as_kubernetes_allows_them(wlab):
    name = "long-" + "x" * 95
    manifest = textwrap.dedent(
        f"""\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: {name}}}
        spec:
          replicas: 1
          selector: {{matchLabels: {{app: long}}}}
          template:
            metadata: {{labels: {{app: long}}}}
            spec:
              containers: [{{name: c, command: [sleep, infinity]}}]
        """
    )
    kubectl(wlab, "apply", "-f", "-", stdin=manifest)
    assert wait_for(lambda: len(wlab.ready_pods(name)) == 1, 15)
    (pod,) = wlab.ready_pods(name)
    assert len(pod.name) == 63 and pod.name.startswith(name[:50])
    assert wlab.exec(pod.name, ["true"]).returncode == 0
    kubectl(wlab, "delete", "deploy", name)


def test_deleting_a_namespace_deletes_what_it_holds(wlab):
    kubectl(wlab, "create", "namespace", "shop")
    kubectl(wlab, "-n", "shop", "create", "deployment", "cart", "--replicas=2", "--image=host",
            "--", *ECHO)  # fmt: skip
    kubectl(wlab, "-n", "shop", "expose", "deployment", "cart", "--port=80", "--target-port=8080")
    assert wait_for(lambda: len(wlab.ready_pods("cart", "shop")) == 2, 15)
    kubectl(wlab, "delete", "namespace", "shop", "--wait=false")
    refused = kubectl(wlab, "-n", "shop", "run", "late", "--image=busybox", "--", "sleep", "9",
                      check=False)  # fmt: skip
    terminating = kubectl(wlab, "get", "ns", "shop", check=False).stdout
    assert "Terminating" in terminating or refused.returncode != 0
    assert refused.returncode != 0
    assert wait_for(lambda: kubectl(wlab, "get", "ns", "shop", check=False).returncode != 0, 20)
    assert wait_for(lambda: not [p for p in wlab.pod_list() if p.namespace == "shop"], 10)
    assert not wlab.store.list("services", "shop")[0]
    assert not wlab.store.list("deployments", "shop")[0]
    protected = kubectl(wlab, "delete", "namespace", "default", check=False)
    assert protected.returncode != 0 and "may not be deleted" in protected.stderr


def test_debians_kubectl_1_20_labels_replaces_and_dry_runs(wlab):
    old = {"version": "1.20"}
    kubectl(wlab, "label", "pod", "b", "old=client", **old)
    assert live(wlab, "pod", "b")["metadata"]["labels"]["old"] == "client"
    kubectl(wlab, "label", "pod", "b", "old-", **old)
    kubectl(wlab, "delete", "pod", "b", "--dry-run=server", **old)
    assert "b" in {p.name for p in wlab.pod_list()}
    kubectl(wlab, "scale", "deploy", "web", "--replicas=5", "--dry-run=server", **old)
    web = live(wlab, "deploy", "web")
    web["spec"]["replicas"] = -1
    refused = kubectl(wlab, "replace", "-f", "-", stdin=json.dumps(web), check=False, **old)
    assert refused.returncode != 0 and "must be greater than or equal to 0" in refused.stderr
    assert live(wlab, "deploy", "web")["spec"]["replicas"] == 2


def test_every_kind_takes_labels_and_annotations(wlab):
    """The write gate validates the stored object as it would a new one: whatever the
    lab stores of a kind (a Namespace's finalizers, a Job's spec) passes it again."""
    kubectl(wlab, "create", "job", "once", "--image=busybox", "--", "true")
    kubectl(wlab, "create", "namespace", "labelled")
    targets = [
        ("pod", "a"), ("deployment", "web"), ("service", "web"), ("job", "once"),
        ("namespace", "labelled"), ("namespace", "default"),
    ]  # fmt: skip
    for kind, name in targets:
        kubectl(wlab, "annotate", kind, name, "lesson=one", "--overwrite")
        kubectl(wlab, "label", kind, name, "tier=lab", "--overwrite")
        meta = live(wlab, kind, name)["metadata"]
        assert meta["annotations"]["lesson"] == "one", (kind, meta)
        assert meta["labels"]["tier"] == "lab", (kind, meta)
        kubectl(wlab, "label", kind, name, "tier-")
        assert "tier" not in live(wlab, kind, name)["metadata"].get("labels", {}), kind
    kubectl(wlab, "delete", "job", "once")
    kubectl(wlab, "delete", "namespace", "labelled", "--wait=false")


def test_kubectl_cordons_and_drains_nodes(wlab):
    kubectl(wlab, "cordon", "n4")
    assert "SchedulingDisabled" in kubectl(wlab, "get", "node", "n4").stdout
    assert live(wlab, "node", "n4")["spec"]["unschedulable"] is True
    kubectl(wlab, "uncordon", "n4")
    assert not live(wlab, "node", "n4")["spec"].get("unschedulable")
    wlab.settle()
    kubectl(wlab, "drain", "n2", "--ignore-daemonsets", "--force", "--timeout=60s")
    assert live(wlab, "node", "n2")["spec"]["unschedulable"] is True
    assert not [p for p in wlab.pod_list() if p.node == "n2"]
    assert wait_for(lambda: len(web_pods(wlab)) == 2, 15)
    assert all(p.node != "n2" for p in wlab.ready_pods("web"))
    kubectl(wlab, "uncordon", "n2")
    refused = kubectl(wlab, "label", "node", "n1", "disk=ssd", check=False)
    assert refused.returncode != 0 and "lab.racks[].nodes[].labels" in refused.stderr
    assert "disk" not in live(wlab, "node", "n1")["metadata"].get("labels", {})
