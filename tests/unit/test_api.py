"""The lab API over a real unix socket: a real aiohttp server in a thread, the real LabClient."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

from netlab.apiserver.app import make_app
from netlab.apiserver.runner import serve
from netlab.apiserver.version import GIT_VERSION
from netlab.client import LabClient, UnixHTTPConnection
from netlab.errors import ApiError, LabNotFound
from netlab.store import Store


def pod(name: str, ns: str = "default", labels: dict | None = None, **spec) -> dict:
    meta = {"name": name, "namespace": ns, "labels": labels or {}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def deployment(name: str, ns: str = "default") -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
    }


class FakeLab:
    """The Actions a real lab implements, recorded."""

    def __init__(self, store: Store, log_dir: Path):
        self.store, self.log_dir = store, log_dir
        self.deleted: list[tuple[str, str, str]] = []
        self.shut_down = threading.Event()

    async def delete_pod(self, namespace: str, name: str) -> dict:
        self.deleted.append(("pod", namespace, name))
        return self.store.delete("pods", namespace, name)

    async def delete_deployment(self, namespace: str, name: str) -> dict:
        self.deleted.append(("deployment", namespace, name))
        return self.store.delete("deployments", namespace, name)

    async def shutdown(self) -> None:
        self.shut_down.set()

    async def update_deployment(self, obj: dict) -> dict:
        replicas = (obj.get("spec") or {}).get("replicas", 1)
        if not isinstance(replicas, int):  # the real lab validates the whole manifest
            raise ApiError(422, "spec.replicas: must be an integer")
        return self.store.update(obj)

    def topology(self) -> dict:
        return {"apiVersion": "netlab.io/v1", "kind": "Topology", "racks": [{"name": "r1"}]}

    def log_path(self, namespace: str, pod: str, container: str | None) -> Path:
        if container not in (None, "main"):
            raise ApiError(404, f"container {container} is not valid for pod {pod}")
        return self.log_dir / f"{namespace}_{pod}_main.log"


class ServerThread:
    """The lab API on its own asyncio loop in a background thread."""

    def __init__(self, store: Store, actions: FakeLab, path: Path):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner = self.call(serve(make_app(store, actions), path))

    def call(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            self.call(runner.cleanup())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


class Lab:
    def __init__(self, tmp_path: Path, history: int = 10_000):
        self.path = tmp_path / "run" / "api.sock"
        self.store = Store(history=history)
        self.actions = FakeLab(self.store, tmp_path)
        self.server = ServerThread(self.store, self.actions, self.path)
        self.client = LabClient(self.path, timeout=5)

    def raw(self, method: str, url: str, body: bytes | None = None) -> tuple[int, dict | str]:
        conn = UnixHTTPConnection(str(self.path), timeout=5)
        try:
            conn.request(method, url, body=body)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(data)
        except ValueError:
            return response.status, data.decode()


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    yield lab
    lab.server.stop()


def in_thread(target, *args) -> tuple[threading.Thread, list]:
    """Run `target(*args)` in a thread; its result (or exception) lands in the list."""
    out: list = []

    def run():
        try:
            out.append(target(*args))
        except Exception as exc:  # handed to the test
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


# -- discovery and shapes ---------------------------------------------------------------


def test_discovery_documents(lab):
    assert lab.raw("GET", "/version")[1]["gitVersion"] == GIT_VERSION
    assert lab.raw("GET", "/api")[1]["versions"] == ["v1"]
    groups = lab.raw("GET", "/apis")[1]
    assert groups["kind"] == "APIGroupList"
    assert groups["groups"][0]["preferredVersion"]["groupVersion"] == "apps/v1"
    core = {r["name"]: r for r in lab.raw("GET", "/api/v1")[1]["resources"]}
    assert core["pods"]["shortNames"] == ["po"] and core["pods"]["namespaced"] is True
    assert "delete" in core["pods"]["verbs"] and "watch" in core["pods"]["verbs"]
    assert core["nodes"]["namespaced"] is False and "pods/log" in core
    apps = lab.raw("GET", "/apis/apps/v1")[1]
    assert apps["groupVersion"] == "apps/v1"
    assert apps["resources"][0]["kind"] == "Deployment"
    assert lab.client.healthz() is True
    # kubectl get all: the kinds Kubernetes puts in the "all" category, and only those
    listed = [
        r
        for path in ("/api/v1", "/apis/apps/v1", "/apis/batch/v1", "/apis/discovery.k8s.io/v1")
        for r in lab.raw("GET", path)[1]["resources"]
    ]
    in_all = {r["name"] for r in listed if "all" in r.get("categories", [])}
    assert in_all == {"pods", "services", "deployments", "replicasets", "jobs", "statefulsets"}


def test_list_and_get_shapes(lab):
    lab.store.create(pod("a", labels={"app": "web"}))
    lab.store.create(pod("b", ns="other"))
    lab.store.create(deployment("web"))
    pods = lab.client.list("pods")
    assert pods["kind"] == "PodList" and pods["apiVersion"] == "v1"
    assert pods["metadata"]["resourceVersion"] == "4"
    assert [p["metadata"]["name"] for p in pods["items"]] == ["a"]
    assert pods["items"][0]["kind"] == "Pod" and pods["items"][0]["apiVersion"] == "v1"
    everywhere = lab.client.list("po", all_namespaces=True)
    assert [p["metadata"]["name"] for p in everywhere["items"]] == ["a", "b"]
    assert lab.client.list("pods", label_selector="app!=web", all_namespaces=True)["items"][0][
        "metadata"
    ]["name"] == ("b")
    deploys = lab.client.list("deploy")
    assert deploys["kind"] == "DeploymentList" and deploys["apiVersion"] == "apps/v1"
    assert lab.client.get("deployments", "web")["metadata"]["namespace"] == "default"
    assert lab.client.get("pods", "b", "other")["metadata"]["uid"]
    with pytest.raises(ApiError) as err:
        lab.client.get("pods", "nope")
    assert err.value.status == 404 and 'pods "nope" not found' in str(err.value)
    code, body = lab.raw("GET", "/api/v1/namespaces/default/pods/nope")
    assert code == 404 and body["kind"] == "Status" and body["reason"] == "NotFound"


# -- watch over HTTP --------------------------------------------------------------------


def test_list_then_watch_over_http_sees_later_writes_in_order(lab):
    lab.store.create(pod("a"))
    rev = lab.client.list("pods")["metadata"]["resourceVersion"]

    def writer():
        time.sleep(0.2)  # the watch is open and idle by now
        for i in range(20):
            lab.store.create(pod(f"p{i}"))
        lab.store.delete("pods", "default", "a")

    thread = threading.Thread(target=writer)
    thread.start()
    seen = []
    for event in lab.client.watch("pods", "default", resource_version=rev, timeout=10):
        seen.append((event["type"], event["object"]["metadata"]["name"]))
        if len(seen) == 21:
            break
    thread.join()
    assert seen == [("ADDED", f"p{i}") for i in range(20)] + [("DELETED", "a")]
    revs = [
        int(e["object"]["metadata"]["resourceVersion"])
        for e in lab.client.watch("pods", resource_version=rev, timeout=1)
    ]
    assert revs == list(range(int(rev) + 1, int(rev) + 22))


def test_watch_without_resource_version_sends_current_objects(lab):
    lab.store.create(pod("a", labels={"app": "web"}))
    lab.store.create(pod("b", ns="other", labels={"app": "web"}))
    lab.store.create(pod("c", labels={"app": "db"}))
    events = list(lab.client.watch("pods", timeout=1, label_selector="app=web"))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
    ]
    one = list(lab.client.watch("pods", "default", timeout=1, field_selector="metadata.name=c"))
    assert [e["object"]["metadata"]["name"] for e in one] == ["c"]


def test_watch_too_old_resource_version_is_410(tmp_path):
    lab = Lab(tmp_path, history=3)
    try:
        for i in range(6):
            lab.store.create(pod(f"p{i}"))
        with pytest.raises(ApiError) as err:
            list(lab.client.watch("pods", resource_version="2", timeout=1))
        assert err.value.status == 410
        # as kube-apiserver answers: the watch is made, and its one event is a 410 Status
        code, body = lab.raw("GET", "/api/v1/pods?watch=1&resourceVersion=2")
        assert code == 200 and body["type"] == "ERROR"
        assert body["object"]["reason"] == "Expired" and body["object"]["code"] == 410
        # expiring mid-stream: writes land in the loop with no chance for the watch to read
        rev = str(lab.store.revision)

        async def burst():
            for i in range(10):
                lab.store.create(pod(f"q{i}"))

        events = lab.client.watch("pods", resource_version=rev, timeout=5)
        thread, out = in_thread(lambda: list(events))
        time.sleep(0.3)
        lab.server.call(burst())
        thread.join(5)
        assert isinstance(out[0], ApiError) and out[0].status == 410
    finally:
        lab.server.stop()


def test_client_leaving_a_watch_frees_it_on_the_server(lab):
    lab.store.create(pod("a"))
    events = lab.client.watch("pods")
    assert next(events)["type"] == "ADDED"
    assert len(lab.store._watches) == 1
    events.close()  # the client hangs up
    lab.store.create(pod("b"))  # the next write finds the connection gone
    deadline = time.monotonic() + 5
    while lab.store._watches and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not lab.store._watches
    assert lab.client.healthz()


def test_watch_timeout_ends_the_stream(lab):
    start = time.monotonic()
    assert list(lab.client.watch("nodes", timeout=1)) == []
    assert 0.9 < time.monotonic() - start < 3


def test_send_initial_events_ends_with_a_bookmark(lab):
    lab.store.create(pod("a"))
    conn = UnixHTTPConnection(str(lab.path), timeout=5)
    conn.request("GET", "/api/v1/pods?watch=1&sendInitialEvents=true&timeoutSeconds=1")
    lines = [json.loads(line) for line in conn.getresponse().read().splitlines()]
    conn.close()
    assert [e["type"] for e in lines] == ["ADDED", "BOOKMARK"]
    meta = lines[1]["object"]["metadata"]
    assert meta["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert meta["resourceVersion"] == "2"


# -- delete, logs, shutdown -----------------------------------------------------------


def test_delete_calls_the_lab(lab):
    lab.store.create(pod("a"))
    lab.store.create(deployment("web"))
    lab.store.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    assert lab.client.delete("pods", "a", "default")["metadata"]["name"] == "a"
    assert lab.client.delete("deploy", "web", None)["kind"] == "Deployment"
    assert lab.actions.deleted == [("pod", "default", "a"), ("deployment", "default", "web")]
    with pytest.raises(ApiError) as err:
        lab.client.delete("pods", "a", "default")
    assert err.value.status == 404
    code, body = lab.raw("DELETE", "/api/v1/nodes/n1")
    assert code == 405 and body["reason"] == "MethodNotAllowed"
    lab.store.create(pod("b"))
    options = json.dumps({"kind": "DeleteOptions", "propagationPolicy": "Background"}).encode()
    assert lab.raw("DELETE", "/api/v1/namespaces/default/pods/b", options)[0] == 200


def test_logs_tail_and_follow(lab, tmp_path):
    lab.store.create(pod("a"))
    log = tmp_path / "default_a_main.log"
    log.write_bytes(b"one\ntwo\nthree\n")
    assert b"".join(lab.client.logs("default", "a")) == b"one\ntwo\nthree\n"
    assert b"".join(lab.client.logs("default", "a", tail=2)) == b"two\nthree\n"
    assert b"".join(lab.client.logs("default", "a", container="main", tail=0)) == b""
    with pytest.raises(ApiError) as err:
        list(lab.client.logs("default", "a", container="sidecar"))
    assert err.value.status == 404
    with pytest.raises(ApiError) as err:
        list(lab.client.logs("default", "nope"))
    assert err.value.status == 404

    def follow():
        chunks = []
        for chunk in lab.client.logs("default", "a", follow=True, tail=1):
            chunks.append(chunk)
        return b"".join(chunks)

    thread, out = in_thread(follow)
    time.sleep(0.3)
    with log.open("ab") as f:
        f.write(b"four\n")
        f.flush()
        time.sleep(0.4)
        f.write(b"five\n")
    time.sleep(0.4)
    assert thread.is_alive()  # still following
    lab.store.delete("pods", "default", "a")  # the pod is gone: the stream ends
    thread.join(5)
    assert out == [b"three\nfour\nfive\n"]


def test_topology_comes_from_the_lab(lab):
    topology = lab.client.topology()
    assert topology["kind"] == "Topology" and topology["racks"] == [{"name": "r1"}]


def test_shutdown_endpoint_calls_the_lab(lab):
    lab.client.shutdown()
    assert lab.actions.shut_down.wait(5)
    code, body = lab.raw("POST", "/netlab/v1/shutdown")
    assert code == 202 and body["kind"] == "Status"


def test_server_shutdown_ends_open_watches_and_log_follows(lab, tmp_path):
    lab.store.create(pod("a"))
    (tmp_path / "default_a_main.log").write_bytes(b"x\n")
    watch_thread, watched = in_thread(lambda: list(lab.client.watch("pods")))
    log_thread, logged = in_thread(lambda: list(lab.client.logs("default", "a", follow=True)))
    time.sleep(0.3)
    start = time.monotonic()
    lab.server.stop()
    assert time.monotonic() - start < 3
    watch_thread.join(3)
    log_thread.join(3)
    assert not watch_thread.is_alive() and not log_thread.is_alive()
    assert [e["type"] for e in watched[0]] == ["ADDED"]
    assert logged == [[b"x\n"]]


# -- malformed requests --------------------------------------------------------------


@pytest.mark.parametrize(
    "method, url, code, reason",
    [
        ("GET", "/api/v1/pods?labelSelector=app%20in%20web", 400, "BadRequest"),
        ("GET", "/api/v1/pods?fieldSelector=spec.bogus%3Dx", 400, "BadRequest"),
        ("GET", "/api/v1/pods?watch=1&resourceVersion=abc", 400, "BadRequest"),
        ("GET", "/api/v1/pods?resourceVersion=-3", 400, "BadRequest"),
        ("GET", "/api/v1/pods?watch=maybe", 400, "BadRequest"),
        ("GET", "/api/v1/pods?watch=1&timeoutSeconds=soon", 400, "BadRequest"),
        ("GET", "/api/v1/namespaces/default/pods/a/log?tailLines=-1", 400, "BadRequest"),
        ("GET", "/api/v1/gadgets", 404, "NotFound"),
        ("GET", "/nowhere/at/all", 404, "NotFound"),
        ("POST", "/api/v1/namespaces/default/endpoints", 405, "MethodNotAllowed"),
        ("POST", "/api/v1/namespaces/default/pods", 400, "BadRequest"),  # no body
        ("DELETE", "/api/v1/namespaces/default/pods/a", 400, "BadRequest"),  # with a bad body
    ],
)
def test_malformed_requests_get_a_status(lab, method, url, code, reason):
    lab.store.create(pod("a"))
    body = b"{not json" if method == "DELETE" else None
    status, answer = lab.raw(method, url, body)
    assert status == code
    assert answer["kind"] == "Status" and answer["reason"] == reason and answer["code"] == code
    assert lab.client.healthz()
    assert lab.actions.deleted == []


def test_garbage_on_the_socket_gets_400_and_the_server_keeps_serving(lab):
    for garbage in (b"\x00\xff\xfe garbage\r\n\r\n", b"GET /api/v1/pods HTTP/9.9\r\nHost\r\n\r\n"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(str(lab.path))
        sock.sendall(garbage)
        answer = sock.recv(4096)
        sock.close()
        # aiohttp's parser answers these itself (plain text, not a Status): any 4xx will do
        assert re.match(rb"HTTP/1\.[01] 4\d\d ", answer), answer
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(lab.path))
    sock.close()  # a client that connects and leaves
    assert lab.client.healthz()
    assert lab.client.list("pods")["items"] == []


# -- the socket ------------------------------------------------------------------------


def test_socket_permissions_and_stale_socket(tmp_path):
    lab = Lab(tmp_path)
    try:
        assert stat.S_IMODE(os.stat(lab.path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(lab.path.parent).st_mode) == 0o700
        with pytest.raises(ApiError) as err:  # a live server is not replaced
            lab.server.call(serve(make_app(lab.store, lab.actions), lab.path))
        assert err.value.status == 409
    finally:
        lab.server.stop()
    assert not lab.path.exists()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(lab.path))  # bound, never listening: what a crashed lab leaves
    stale.close()
    with pytest.raises(LabNotFound) as err:
        lab.client.list("pods")
    assert "netlab up" in str(err.value) and str(lab.path) in str(err.value)
    again = Lab(tmp_path)  # replaces the stale socket
    try:
        assert again.client.healthz()
    finally:
        again.server.stop()


def test_missing_socket_is_lab_not_found(tmp_path):
    client = LabClient(tmp_path / "nope.sock")
    assert client.healthz() is False
    with pytest.raises(LabNotFound) as err:
        client.get("pods", "a")
    assert "netlab up" in str(err.value) and "nope.sock" in str(err.value)


# -- PATCH and /scale ------------------------------------------------------------------


def _patch(lab, path: str, body, kind: str) -> tuple[int, dict]:
    conn = UnixHTTPConnection(str(lab.path), timeout=5)
    try:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request("PATCH", path, body=data, headers={"Content-Type": kind})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_patch_and_scale_a_deployment(lab):
    dep = dict(deployment("web"), spec={"replicas": 2, "selector": {"matchLabels": {"app": "web"}}})
    lab.store.create(dep)
    base = "/apis/apps/v1/namespaces/default/deployments/web"
    status, obj = _patch(lab, base, {"spec": {"replicas": 3}}, "application/merge-patch+json")
    assert status == 200 and obj["spec"]["replicas"] == 3
    ops = [{"op": "replace", "path": "/spec/replicas", "value": 4}]
    assert _patch(lab, base, ops, "application/json-patch+json")[1]["spec"]["replicas"] == 4
    code, scale = lab.raw("GET", base + "/scale")
    assert code == 200 and scale["kind"] == "Scale" and scale["spec"]["replicas"] == 4
    assert scale["status"]["selector"] == "app=web"
    status, scale = _patch(
        lab, base + "/scale", {"spec": {"replicas": 1}}, "application/merge-patch+json"
    )
    assert status == 200 and scale["spec"]["replicas"] == 1
    assert lab.store.get("deployments", "default", "web")["spec"]["replicas"] == 1
    assert (
        lab.client.patch("deployments", "web", {"spec": {"replicas": 2}}, subresource="scale")[
            "spec"
        ]["replicas"]
        == 2
    )


@pytest.mark.parametrize(
    "path,body,kind,code",
    [
        ("", {"spec": {"replicas": "many"}}, "application/merge-patch+json", 422),
        ("", {"metadata": {"name": "other"}}, "application/merge-patch+json", 422),
        ("", {"spec": {}}, "text/plain", 415),
        ("", b"{nope", "application/merge-patch+json", 400),
        (
            "",
            [{"op": "test", "path": "/spec/replicas", "value": 9}],
            "application/json-patch+json",
            422,
        ),
        ("/scale", {"spec": {"replicas": -1}}, "application/merge-patch+json", 422),
        ("/scale", {"spec": {"replicas": True}}, "application/merge-patch+json", 422),
    ],
)
def test_bad_patches_answer_with_a_status_and_change_nothing(lab, path, body, kind, code):
    dep = dict(deployment("web"), spec={"replicas": 2})
    lab.store.create(dep)
    before = lab.store.get("deployments", "default", "web")
    status, answer = _patch(
        lab, "/apis/apps/v1/namespaces/default/deployments/web" + path, body, kind
    )
    assert status == code and answer["kind"] == "Status", answer
    assert lab.store.get("deployments", "default", "web") == before


def test_patch_of_a_kind_that_takes_none_is_405(lab):
    lab.store.create(pod("a"))
    status, _ = _patch(
        lab, "/api/v1/namespaces/default/pods/a", {"spec": {}}, "application/merge-patch+json"
    )
    assert status == 405


def test_a_body_of_megabytes_is_read_whole_and_one_too_large_refused(lab):
    """A ConfigMap of nearly 1 MiB arrives in many chunks (kube-apiserver takes up to
    3 MiB): read to its end, not cut at the first chunk."""
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"},
          "data": {"a": "x" * (2 << 20)}}  # fmt: skip
    status, body = lab.raw("POST", "/api/v1/namespaces/default/configmaps", json.dumps(cm).encode())
    assert status == 405, body  # parsed whole; this fake lab takes no manifests
    cm["data"]["a"] = "x" * (3 << 20)
    status, body = lab.raw("POST", "/api/v1/namespaces/default/configmaps", json.dumps(cm).encode())
    assert status == 413 and "request body larger than" in body["message"], body
