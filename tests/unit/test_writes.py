"""The pure parts of the API's one write path: dry-run previews, the 422 wording,
dryRun parsing, names bounded to fit files, generated pod names, recorded fields."""

from __future__ import annotations

import random

import pytest
from aiohttp.test_utils import make_mocked_request

from netlab.apiserver.base import dry_run, invalid, status
from netlab.errors import ApiError, Problem, SpecError
from netlab.plan.names import FILE_NAME_MAX, bounded, pod_netns
from netlab.plan.scheduler import job_pod_name, pod_name
from netlab.spec.load import parse_manifests
from netlab.spec.model import Resources
from netlab.spec.validate import DNS_SUBDOMAIN_RE
from netlab.store import Store
from tests.unit.test_spec import TWO_RACKS


def deployment(replicas: int = 2) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": replicas},
    }


def test_preview_of_a_change_stores_nothing_and_bumps_generation():
    store = Store()
    stored = store.create(deployment())
    seen = []
    store.subscribe(seen.append)
    changed = dict(stored, spec={"replicas": 5})
    preview = store.preview(changed)
    assert preview["spec"]["replicas"] == 5
    assert preview["metadata"]["generation"] == stored["metadata"]["generation"] + 1
    assert preview["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
    assert preview["metadata"]["uid"] == stored["metadata"]["uid"]
    assert store.get("deployments", "default", "web") == stored
    assert seen == [] and store.revision == int(stored["metadata"]["resourceVersion"])


def test_preview_of_an_unchanged_spec_keeps_the_generation():
    store = Store()
    stored = store.create(deployment())
    relabeled = dict(stored, metadata=dict(stored["metadata"], labels={"a": "b"}))
    assert store.preview(relabeled)["metadata"]["generation"] == 1


def test_preview_of_a_new_object_is_stamped_but_not_stored():
    store = Store()
    preview = store.preview(deployment())
    assert preview["metadata"]["uid"] and preview["metadata"]["creationTimestamp"]
    assert "resourceVersion" not in preview["metadata"]
    with pytest.raises(ApiError):
        store.get("deployments", "default", "web")


@pytest.mark.parametrize(
    "problems,message",
    [
        (
            [Problem("Deployment/web: spec.replicas", "Invalid value: -1: must be greater than "
                     "or equal to 0")],
            'Deployment.apps "web" is invalid: spec.replicas: Invalid value: -1: must be '
            "greater than or equal to 0",
        ),
        (
            [Problem("Pod/p: spec.a", "one", "fix a"), Problem("Pod/p: spec.b", "two")],
            'Deployment.apps "web" is invalid: [spec.a: one (fix a), spec.b: two]',
        ),
    ],
)  # fmt: skip
def test_invalid_is_worded_as_kube_apiserver_words_it(problems, message):
    error = invalid("Deployment.apps", "web", problems)
    assert error.status == 422 and error.reason == "Invalid" and str(error) == message
    assert error.details["kind"] == "Deployment" and error.details["group"] == "apps"
    assert [c["field"] for c in error.details["causes"]] == [
        p.path.split(": ")[1] for p in problems
    ]
    assert status(422, str(error), "Invalid", error.details)["details"]["name"] == "web"


def test_replicas_below_zero_are_refused_in_kubernetes_words():
    manifest = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: -1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, command: [sleep, "1"]}]}
"""
    from netlab.spec.load import parse_lab

    lab = parse_lab(TWO_RACKS)
    with pytest.raises(SpecError) as err:
        parse_manifests(manifest, lab)
    (problem,) = err.value.problems
    assert problem.message == "Invalid value: -1: must be greater than or equal to 0"


@pytest.mark.parametrize(
    "query,body,expected",
    [
        ("", None, False),
        ("?dryRun=All", None, True),
        ("", {"dryRun": ["All"]}, True),
        ("", {"kind": "DeleteOptions"}, False),
    ],
)
def test_dry_run_is_read_from_the_query_or_delete_options(query, body, expected):
    assert dry_run(make_mocked_request("POST", "/x" + query), body) is expected


def test_an_unknown_dry_run_value_is_refused():
    with pytest.raises(ApiError) as err:
        dry_run(make_mocked_request("POST", "/x?dryRun=Some"))
    assert err.value.status == 400 and 'supported values: "All"' in str(err.value)


def test_long_names_are_bounded_to_fit_a_file_name_without_collisions():
    short = pod_netns("nl-lab", "default", "web-0")
    assert short == "nl-lab.web-0"
    long_a = pod_netns("nl-lab", "shop", "a" * 253)
    long_b = pod_netns("nl-lab", "shop", "a" * 252 + "b")
    assert len(long_a) <= FILE_NAME_MAX and len(long_b) <= FILE_NAME_MAX
    assert long_a != long_b and "~" in long_a
    assert bounded("x" * FILE_NAME_MAX) == "x" * FILE_NAME_MAX


def test_generated_pod_names_fit_63_as_kubernetes_cuts_them():
    rng, taken = random.Random(1), set()
    name = pod_name("d" * 253, "abcdef1234", rng, taken)
    assert len(name) == 63 and name.startswith("d" * 58)
    assert len(job_pod_name("j" * 63, rng, taken)) == 63
    assert pod_name("web", "abcdef1234", rng, taken).startswith("web-abcdef1234-")


def test_kubectl_run_fields_are_accepted_and_recorded():
    """What `kubectl run tmp --image=busybox -- sleep 10` sends."""
    manifest = """
apiVersion: v1
kind: Pod
metadata: {name: tmp, labels: {run: tmp}, creationTimestamp: null}
spec:
  containers:
  - name: tmp
    image: busybox
    args: [sleep, "10"]
    resources: {}
  dnsPolicy: ClusterFirst
  restartPolicy: Always
status: {}
"""
    from netlab.spec.load import parse_lab

    (pod,) = parse_manifests(manifest, parse_lab(TWO_RACKS)).pods
    assert pod.template.recorded == {"dnsPolicy": "ClusterFirst"}
    (container,) = pod.template.containers
    assert container.recorded == {} and container.argv == ("sleep", "10")
    assert container.resources == Resources()  # typed now: none requested
    assert "status" not in pod.manifest and "creationTimestamp" not in pod.manifest["metadata"]


def test_pod_and_deployment_names_follow_the_dns_subdomain_rule():
    assert DNS_SUBDOMAIN_RE.fullmatch("web.v2-canary")
    assert not DNS_SUBDOMAIN_RE.fullmatch("Web")
