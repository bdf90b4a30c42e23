"""The lab API as Kubernetes clients meet it, without root: Table printing, OpenAPI
documents, exec statuses, the TLS endpoint's authentication (a real server on a
loopback port), and what a restarted supervisor reads back."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading

import pytest

from netlab.apiserver import openapi
from netlab.apiserver import tables as kube_table
from netlab.apiserver.app import make_app
from netlab.apiserver.auth import HOST, auth_middleware, endpoint_for
from netlab.apiserver.runner import serve
from netlab.apiserver.streams import exit_status
from netlab.objects import PodStatus, pod_status_of
from netlab.pki import make_pki
from netlab.realize.checkpoint import Checkpoints
from netlab.resources import DEFAULT_TABLE
from netlab.spec.model import ContainerSpec, PodTemplate, frozen_map
from netlab.store import Store

ACCEPT_KUBECTL = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,"
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)


@pytest.mark.parametrize(
    "accept, version",
    [
        (ACCEPT_KUBECTL, "meta.k8s.io/v1"),
        ("application/json;as=Table;v=v1beta1;g=meta.k8s.io", "meta.k8s.io/v1beta1"),
        ("application/json", None),
        ("", None),
        ("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io", None),
        ("application/json;as=Table;v=v9;g=meta.k8s.io,application/json", None),
    ],
)
def test_table_is_what_the_client_asks_for_first(accept, version):
    assert kube_table.wanted(accept) == version


def pod(name: str, ip: str, node: str, rack: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "annotations": {"netlab.io/rack": rack, "netlab.io/netns": f"nl-x.{name}"},
        },
        "spec": {"nodeName": node, "containers": [{"name": "main"}]},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "containerStatuses": [{"ready": True, "state": {"running": {}}}],
        },
    }


def test_a_pod_table_has_the_labs_columns_and_wide_ones_at_priority_1():
    pods = DEFAULT_TABLE.resolve("pods")
    table = kube_table.table(pods, [pod("web-1", "10.244.1.2", "n1", "rack1")], "meta.k8s.io/v1", 7)
    assert table["kind"] == "Table" and table["metadata"]["resourceVersion"] == "7"
    names = [(c["name"], c["priority"]) for c in table["columnDefinitions"]]
    assert names[:3] == [("Name", 0), ("Ready", 0), ("Status", 0)]
    assert names[-4:] == [("Ip", 1), ("Node", 1), ("Rack", 1), ("Netns", 1)]
    (row,) = table["rows"]
    assert row["cells"][:3] == ["web-1", "1/1", "Running"]
    assert row["cells"][-4:] == ["10.244.1.2", "n1", "rack1", "nl-x.web-1"]
    assert row["object"]["kind"] == "PartialObjectMetadata"
    whole = kube_table.table(
        pods, [pod("a", "1.1.1.1", "n", "r")], "meta.k8s.io/v1", include="Object"
    )
    assert whole["rows"][0]["object"]["kind"] == "Pod"
    later = json.loads(
        kube_table.event_object_json(
            pods, json.dumps(pod("a", "1.1.1.1", "n", "r")), "meta.k8s.io/v1", False
        )
    )
    assert later["columnDefinitions"] is None and len(later["rows"]) == 1


def test_a_terminating_pod_says_so():
    terminating = pod("a", "1.1.1.1", "n", "r")
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:01Z"
    table = kube_table.table(DEFAULT_TABLE.resolve("pods"), [terminating], "meta.k8s.io/v1")
    assert table["rows"][0]["cells"][2] == "Terminating"


def test_openapi_v3_shows_field_validation_on_every_write():
    root, docs = openapi.documents(DEFAULT_TABLE)
    assert set(root["paths"]) == set(docs) and "api/v1" in docs and "apis/apps/v1" in docs
    assert all(
        p["serverRelativeURL"].startswith(f"/openapi/v3/{k}?hash=")
        for k, p in root["paths"].items()
    )
    patch = docs["apis/apps/v1"]["paths"][
        "/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
    ]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {
        "group": "apps",
        "version": "v1",
        "kind": "Deployment",
    }
    assert [p["name"] for p in patch["parameters"]] == ["dryRun", "fieldValidation"]
    # kubectl checks a kind's PATCH: every kind it can apply has one
    for res in DEFAULT_TABLE:
        if "create" in res.verbs and res.stored:  # reviews are answered, not applied
            doc = docs["api/v1" if res.api_version == "v1" else f"apis/{res.api_version}"]
            assert any("patch" in item for item in doc["paths"].values()), res.kind


def test_openapi_v2_is_a_gnostic_document_with_the_definitions():
    docs = openapi.Documents(DEFAULT_TABLE)
    swagger = json.loads(docs.v2(False))
    pod = swagger["definitions"]["io.k8s.api.core.v1.Pod"]
    assert pod["properties"]["spec"]["$ref"] == "#/definitions/io.k8s.api.core.v1.PodSpec"
    assert "allOf" not in json.dumps(swagger)
    encoded = docs.v2(True)
    # Document: swagger (field 1) "2.0", info (2), paths (8, empty), definitions (9)
    assert encoded.startswith(b"\n\x032.0\x12")
    assert b"io.k8s.api.core.v1.PodSpec" in encoded and b"x-kubernetes-patch-merge-key" in encoded


@pytest.mark.parametrize("code, status, cause", [(0, "Success", None), (3, "Failure", "3")])
def test_exec_ends_with_the_status_kubectl_reads_the_exit_code_from(code, status, cause):
    answer = exit_status(code)
    assert answer["status"] == status
    if cause:
        assert answer["details"]["causes"] == [{"reason": "ExitCode", "message": cause}]


def test_a_stored_pod_gives_back_its_status():
    template = PodTemplate(
        labels=frozen_map({}), containers=(ContainerSpec("main"), ContainerSpec("side"))
    )
    obj = {
        "metadata": {},
        "status": {
            "startTime": "2026-01-01T00:00:00Z",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": "main", "restartCount": 2, "state": {"running": {"startedAt": "t1"}}},
                {"name": "side", "state": {"terminated": {"exitCode": 1}}},
            ],
        },
    }
    status = pod_status_of(obj, template)
    assert isinstance(status, PodStatus) and status.probes_ready
    main, side = status.containers
    assert (main.state, main.restarts, main.started_at) == ("running", 2, "t1")
    assert (side.state, side.exit_code) == ("terminated", 1)


def test_checkpoints_keep_frozen_maps_and_replace_atomically(tmp_path):
    checkpoints = Checkpoints(tmp_path / "c")
    template = PodTemplate(labels=frozen_map({"app": "web"}), containers=(ContainerSpec("m"),))
    checkpoints.save("pods", "default_a", template)
    checkpoints.save("pods", "default_a", template)
    (loaded,) = checkpoints.load("pods")
    assert loaded == template and loaded.labels["app"] == "web"
    checkpoints.remove("pods", "default_a")
    assert checkpoints.load("pods") == [] and not list((tmp_path / "c" / "pods").iterdir())


def test_an_owner_reference_gets_its_owners_uid():
    store = Store()
    owner = store.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {},
        }
    )
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "controller": True}
    child = store.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "ownerReferences": [ref]},
            "spec": {},
        }
    )
    assert child["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
    orphan_ref = dict(ref, name="gone")
    orphan = store.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "q", "namespace": "default", "ownerReferences": [orphan_ref]},
            "spec": {},
        }
    )
    assert len(orphan["metadata"]["ownerReferences"][0]["uid"]) == 36


class _Actions:
    async def shutdown(self, leave: bool = False) -> None:
        pass


@pytest.fixture
def endpoint(tmp_path):
    """The API over TLS on a loopback port, with the lab's PKI and token."""
    kube = endpoint_for("tunit", tmp_path)
    app = make_app(Store(), _Actions(), [auth_middleware(kube.token)])
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = asyncio.run_coroutine_threadsafe(
        serve(app, tmp_path / "api.sock", (HOST, kube.port, kube.ssl_context())), loop
    ).result(10)
    yield kube
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)


def _get(kube, context: ssl.SSLContext, headers: str = "") -> str:
    with socket.create_connection((HOST, kube.port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=HOST) as tls:
            tls.sendall(
                f"GET /api/v1/pods HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode()
            )
            return tls.recv(65536).decode(errors="replace")


def test_tls_lets_in_the_admin_certificate_or_the_token_and_nobody_else(endpoint, tmp_path):
    trusting = ssl.create_default_context(cafile=str(endpoint.pki.ca_cert))
    assert _get(endpoint, trusting).startswith("HTTP/1.1 401")
    assert _get(endpoint, trusting, "Authorization: Bearer nope\r\n").startswith("HTTP/1.1 401")
    assert _get(endpoint, trusting, f"Authorization: Bearer {endpoint.token}\r\n").startswith(
        "HTTP/1.1 200"
    )
    admin = ssl.create_default_context(cafile=str(endpoint.pki.ca_cert))
    admin.load_cert_chain(endpoint.pki.client_cert, endpoint.pki.client_key)
    assert _get(endpoint, admin).startswith("HTTP/1.1 200")
    other = make_pki(tmp_path / "other", "other")
    stranger = ssl.create_default_context(cafile=str(endpoint.pki.ca_cert))
    stranger.load_cert_chain(other.client_cert, other.client_key)
    try:
        answer = _get(endpoint, stranger)
    except (ssl.SSLError, OSError):
        answer = ""
    assert not answer.startswith("HTTP/")


def test_the_endpoint_is_kept_for_the_next_supervisor(tmp_path):
    first = endpoint_for("tkeep", tmp_path)
    again = endpoint_for("tkeep", tmp_path)
    assert (again.port, again.token) == (first.port, first.token)
    assert again.pki.ca_cert.read_bytes() == first.pki.ca_cert.read_bytes()
    config = json.loads(first.kubeconfig())
    assert config["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{first.port}"
    assert oct(first.pki.client_key.stat().st_mode)[-3:] == "600"


def test_events_count_up_and_the_oldest_go():
    from netlab.events import EventRecorder

    store = Store()
    store.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {},
        }
    )
    recorder = EventRecorder(store, limit=2)
    recorder.pod("default", "p", "BackOff", "Back-off restarting failed container", type_="Warning")
    recorder.pod("default", "p", "BackOff", "Back-off restarting failed container", type_="Warning")
    (event,) = store.list("events", "default")[0]
    assert event["count"] == 2 and event["type"] == "Warning"
    assert event["involvedObject"]["uid"] == store.get("pods", "default", "p")["metadata"]["uid"]
    assert event["firstTimestamp"] <= event["lastTimestamp"]
    recorder.pod("default", "p", "Started", "Started container a")
    recorder.pod("default", "p", "Started", "Started container b")
    reasons = sorted(e["message"] for e in store.list("events", "default")[0])
    assert reasons == ["Started container a", "Started container b"]  # the oldest went
    found = store.list("events", "default", field_selector="involvedObject.name=p,reason=Started")[
        0
    ]
    assert len(found) == 2


def _varint(value: int) -> bytes:
    out = b""
    while True:
        byte, value = value & 0x7F, value >> 7
        if not value:
            return out + bytes([byte])
        out += bytes([byte | 0x80])


def _pb(number: int, payload: bytes | int) -> bytes:
    """One protobuf field, for the tests: a varint, or bytes (lengths under 128)."""
    if isinstance(payload, int):
        return bytes([number << 3]) + _varint(payload)
    return bytes([number << 3 | 2, len(payload)]) + payload


def _envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = _pb(1, api_version.encode()) + _pb(2, kind.encode())
    return b"k8s\x00" + _pb(1, type_meta) + _pb(2, raw) + _pb(3, b"") + _pb(4, b"")


def test_a_generators_protobuf_body_reads_as_its_json():
    from netlab.apiserver.protobuf import to_object

    meta = _pb(1, b"web") + _pb(3, b"") + _pb(11, _pb(1, b"app") + _pb(2, b"web")) + _pb(8, b"")
    container = _pb(1, b"web") + _pb(2, b"host") + _pb(3, b"python3") + _pb(3, b"-m")
    container += _pb(6, _pb(3, 80) + _pb(2, 0)) + _pb(8, b"")
    template = _pb(1, _pb(11, _pb(1, b"app") + _pb(2, b"web"))) + _pb(2, _pb(2, container))
    spec = _pb(1, 2) + _pb(2, _pb(1, _pb(1, b"app") + _pb(2, b"web"))) + _pb(3, template)
    obj = to_object(_envelope("apps/v1", "Deployment", _pb(1, meta) + _pb(2, spec) + _pb(3, b"")))
    assert obj["kind"] == "Deployment" and obj["apiVersion"] == "apps/v1"
    assert obj["metadata"] == {"name": "web", "labels": {"app": "web"}}
    assert obj["spec"]["replicas"] == 2 and obj["spec"]["selector"] == {
        "matchLabels": {"app": "web"}
    }
    (c,) = obj["spec"]["template"]["spec"]["containers"]
    assert c == {
        "name": "web",
        "image": "host",
        "command": ["python3", "-m"],
        "ports": [{"containerPort": 80}],
    }
    port = _pb(1, b"80-8080") + _pb(2, b"TCP") + _pb(3, 80) + _pb(4, _pb(2, 8080))
    service = to_object(_envelope("v1", "Service", _pb(1, _pb(1, b"web")) + _pb(2, _pb(1, port))))
    assert service["spec"]["ports"] == [
        {"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}
    ]


@pytest.mark.parametrize(
    "body, code",
    [
        (b"not protobuf", 400),
        (b"k8s\x00\x0a\x05", 400),  # a field runs past the end
        (_envelope("v1", "Binding", b""), 415),  # not a kind the lab reads
        (_envelope("v1", "Namespace", _pb(1, _pb(1, b"x")) + _pb(9, b"unknown")), 415),
    ],
)
def test_a_protobuf_body_the_lab_cannot_read_is_refused_with_a_status(body, code):
    from netlab.apiserver.protobuf import to_object
    from netlab.errors import ApiError

    with pytest.raises(ApiError) as refused:
        to_object(body)
    assert refused.value.status == code
