"""The versioned store: revisions, no-op writes, selectors, watches, 410, threads."""

from __future__ import annotations

import asyncio
import threading

import pytest

from netlab.errors import ApiError
from netlab.resources import DEFAULT_TABLE, FieldSelector, LabelSelector
from netlab.store import Store, merge_patch


def pod(name: str, ns: str = "default", labels: dict | None = None, **spec) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": spec,
        "status": {"phase": "Pending"},
    }


def node(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}


def collect(store: Store, *args, count: int, timeout: float = 2.0, **kwargs) -> list:
    """Open a watch, run `kwargs.pop('then')` (writes) and return the first `count` events."""
    then = kwargs.pop("then", lambda: None)

    async def main():
        out = []
        async with store.watch(*args, **kwargs) as watch:
            then()
            while len(out) < count:
                batch = await watch.next(timeout)
                assert batch, f"timed out after {out}"
                out.extend(batch)
        return [(e.type, e.object["metadata"]["name"], e.revision) for e in out]

    return asyncio.run(main())


# -- resources table ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name, plural, api_version",
    [
        ("pods", "pods", "v1"),
        ("po", "pods", "v1"),
        ("Pod", "pods", "v1"),
        ("deploy", "deployments", "apps/v1"),
        ("deployments.apps", "deployments", "apps/v1"),
        ("no", "nodes", "v1"),
        ("ns", "namespaces", "v1"),
    ],
)
def test_resource_lookup(name, plural, api_version):
    res = DEFAULT_TABLE.resolve(name)
    assert (res.plural, res.api_version) == (plural, api_version)


def test_resource_paths_and_unknown():
    assert DEFAULT_TABLE.resolve("pods").path("ns1", "a") == "/api/v1/namespaces/ns1/pods/a"
    assert DEFAULT_TABLE.resolve("deploy").path() == "/apis/apps/v1/deployments"
    assert DEFAULT_TABLE.resolve("nodes").path("ignored", "n1") == "/api/v1/nodes/n1"
    with pytest.raises(ApiError) as err:
        DEFAULT_TABLE.resolve("gadgets")
    assert err.value.status == 404


# -- writes and revisions ------------------------------------------------------------


def test_create_fills_metadata_and_bumps_revision():
    store = Store()
    assert store.revision == 1
    created = store.create(pod("a", labels={"app": "web"}))
    meta = created["metadata"]
    assert meta["resourceVersion"] == "2" and store.revision == 2
    assert len(meta["uid"]) == 36 and meta["creationTimestamp"].endswith("Z")
    assert meta["annotations"] == {} and meta["generation"] == 1
    with pytest.raises(ApiError) as err:
        store.create(pod("a"))
    assert err.value.status == 409 and err.value.reason == "AlreadyExists"
    assert store.revision == 2


def test_update_keeps_identity_and_noop_writes_do_not_bump():
    store = Store()
    first = store.create(pod("a"))
    events = []
    store.subscribe(events.append)
    again = store.apply(pod("a"))  # same content: no write
    assert again["metadata"]["resourceVersion"] == "2" and store.revision == 2 and not events
    changed = store.apply(pod("a", nodeName="n1"))
    assert changed["metadata"]["uid"] == first["metadata"]["uid"]
    assert changed["metadata"]["creationTimestamp"] == first["metadata"]["creationTimestamp"]
    assert changed["metadata"]["resourceVersion"] == "3" and changed["metadata"]["generation"] == 2
    assert [(e.type, e.revision) for e in events] == [("MODIFIED", 3)]
    store.patch_status("pods", "default", "a", {"phase": "Pending"})  # no-op patch
    assert store.revision == 3
    patched = store.patch_status("pods", "default", "a", {"phase": "Running", "podIP": "10.1.0.2"})
    assert patched["status"] == {"phase": "Running", "podIP": "10.1.0.2"}
    assert patched["metadata"]["generation"] == 2  # status changes keep the generation
    assert changed["metadata"]["resourceVersion"] == "3"  # earlier copies are untouched


def test_update_with_stale_resource_version_conflicts():
    store = Store()
    obj = store.create(pod("a"))
    store.apply(pod("a", nodeName="n1"))
    obj["spec"] = {"nodeName": "n2"}
    with pytest.raises(ApiError) as err:
        store.update(obj)
    assert err.value.status == 409 and err.value.reason == "Conflict"


def test_delete_returns_object_at_deletion_revision():
    store = Store()
    store.create(node("n1"))
    gone = store.delete("nodes", None, "n1")
    assert gone["metadata"]["resourceVersion"] == "3"
    for call in (lambda: store.get("nodes", None, "n1"), lambda: store.delete("no", None, "n1")):
        with pytest.raises(ApiError) as err:
            call()
        assert err.value.status == 404


def test_returned_objects_are_copies():
    store = Store()
    store.create(pod("a", labels={"app": "web"}))
    store.get("pods", "default", "a")["metadata"]["labels"]["app"] = "evil"
    items, _ = store.list("pods")
    items[0]["spec"]["x"] = 1
    assert store.get("pods", "default", "a")["metadata"]["labels"] == {"app": "web"}
    assert store.get("pods", "default", "a")["spec"] == {}


@pytest.mark.parametrize(
    "bad, status",
    [
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {}}, 400),
        ({"apiVersion": "v1", "kind": "Gadget", "metadata": {"name": "x"}}, 400),
        ({"kind": "Pod"}, 400),
        ("not an object", 400),
    ],
)
def test_create_rejects_malformed_objects(bad, status):
    with pytest.raises(ApiError) as err:
        Store().create(bad)
    assert err.value.status == status


def test_merge_patch():
    assert merge_patch({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": None, "e": 3}, "d": [1]}) == {
        "a": {"c": 2, "e": 3},
        "d": [1],
    }


# -- selectors -------------------------------------------------------------------


@pytest.mark.parametrize(
    "selector, labels, expected",
    [
        ("", {}, True),
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "web"}, True),
        ("app=web", {"app": "db"}, False),
        ("app!=web", {"app": "db"}, True),
        ("app!=web", {}, True),
        ("app=web,tier!=front", {"app": "web", "tier": "back"}, True),
        ("app=web,tier!=front", {"app": "web", "tier": "front"}, False),
        ("app", {"app": "x"}, True),
        ("app", {}, False),
        ("!app", {}, True),
        ("!app", {"app": "x"}, False),
        ("app in (web, db)", {"app": "db"}, True),
        ("app in (web,db)", {"app": "cache"}, False),
        ("app in (web)", {}, False),
        ("app notin (web)", {"app": "db"}, True),
        ("app notin (web)", {}, True),
        ("app notin (web,db)", {"app": "web"}, False),
        ("app in (a,b),version", {"app": "b", "version": "v1"}, True),
        ("example.com/team=net", {"example.com/team": "net"}, True),
        (" app = web , tier ", {"app": "web", "tier": "x"}, True),
        ("app=", {"app": ""}, True),
    ],
)
def test_label_selector(selector, labels, expected):
    assert LabelSelector.parse(selector).matches(labels) is expected


@pytest.mark.parametrize(
    "selector",
    ["app=web=x", "app in web", "app in (a", "=web", "app>1", "a b", ",", "app in (a b)"],
)
def test_label_selector_rejects(selector):
    with pytest.raises(ApiError) as err:
        LabelSelector.parse(selector)
    assert err.value.status == 400


@pytest.mark.parametrize(
    "selector, expected",
    [
        ("metadata.name=a", True),
        ("metadata.name==b", False),
        ("metadata.namespace=default,spec.nodeName=n1", True),
        ("spec.nodeName!=n1", False),
        ("status.phase=Running", True),
        ("status.podIP=", True),  # a missing field is ""
    ],
)
def test_field_selector(selector, expected):
    obj = pod("a", nodeName="n1")
    obj["status"]["phase"] = "Running"
    pods = DEFAULT_TABLE.resolve("pods").field_selectors
    assert FieldSelector.parse(selector, pods).matches(obj) is expected


@pytest.mark.parametrize("selector", ["spec.containers=x", "metadata.name", "bogus"])
def test_field_selector_rejects(selector):
    with pytest.raises(ApiError) as err:
        FieldSelector.parse(selector, DEFAULT_TABLE.resolve("pods").field_selectors)
    assert err.value.status == 400


def test_list_filters_by_namespace_and_selectors():
    store = Store()
    store.create(pod("a", labels={"app": "web"}, nodeName="n1"))
    store.create(pod("b", labels={"app": "db"}, nodeName="n2"))
    store.create(pod("c", ns="other", labels={"app": "web"}, nodeName="n1"))
    names = lambda items: [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in items]  # noqa: E731
    items, rev = store.list("pods")
    assert names(items) == [("default", "a"), ("default", "b"), ("other", "c")] and rev == 4
    assert names(store.list("pods", "default")[0]) == [("default", "a"), ("default", "b")]
    assert names(store.list("pods", label_selector="app=web")[0]) == [
        ("default", "a"),
        ("other", "c"),
    ]
    assert names(store.list("po", "other", field_selector="spec.nodeName=n1")[0]) == [
        ("other", "c")
    ]


# -- watches ---------------------------------------------------------------------


def test_list_then_watch_from_its_revision_sees_exactly_later_events():
    store = Store()
    store.create(pod("a"))
    store.create(pod("b"))
    items, rev = store.list("pods")

    def writes():
        store.create(pod("c"))
        store.create(node("n1"))  # another resource: not seen
        store.apply(pod("a", nodeName="n1"))
        store.delete("pods", "default", "b")

    events = collect(store, "pods", None, str(rev), count=3, then=writes)
    assert events == [("ADDED", "c", 4), ("MODIFIED", "a", 6), ("DELETED", "b", 7)]
    # history is replayed too: watching from the same revision after the fact is identical
    assert collect(store, "pods", None, rev, count=3) == events


def test_watch_without_resource_version_starts_with_current_objects():
    store = Store()
    store.create(pod("a"))
    store.create(pod("b", ns="other"))
    events = collect(store, "pods", "default", None, count=2, then=lambda: store.create(pod("c")))
    assert [e[:2] for e in events] == [("ADDED", "a"), ("ADDED", "c")]
    events = collect(store, "pods", None, "0", count=3)  # sorted by namespace, name
    assert [e[:2] for e in events] == [("ADDED", "a"), ("ADDED", "c"), ("ADDED", "b")]


def test_watch_from_compacted_revision_is_410():
    store = Store(history=3)
    for i in range(6):
        store.create(node(f"n{i}"))  # revisions 2..7; ring holds 5, 6, 7
    assert collect(store, "nodes", None, "4", count=3)[0] == ("ADDED", "n3", 5)

    async def main():
        store.watch("nodes", None, "3")

    with pytest.raises(ApiError) as err:
        asyncio.run(main())
    assert err.value.status == 410 and "too old resource version" in str(err.value)


def test_churn_in_another_resource_does_not_expire_a_quiet_watch():
    store = Store(history=3)
    store.create(pod("a"))
    rev = store.revision
    for i in range(10):
        store.create(node(f"n{i}"))
    then = lambda: store.create(pod("b"))  # noqa: E731
    assert collect(store, "pods", None, rev, count=1, then=then) == [("ADDED", "b", 13)]


def test_history_expiring_under_an_open_watch_is_410():
    store = Store(history=2)

    async def main():
        async with store.watch("nodes", None, store.revision) as watch:
            for i in range(5):
                store.create(node(f"n{i}"))
            await watch.next(1)

    with pytest.raises(ApiError) as err:
        asyncio.run(main())
    assert err.value.status == 410


def test_label_change_moves_objects_in_and_out_of_a_selected_watch():
    store = Store()
    store.create(pod("a", labels={"app": "db"}))
    rev = store.revision

    def writes():
        store.apply(pod("a", labels={"app": "web"}))  # enters the selection
        store.apply(pod("a", labels={"app": "web", "v": "2"}))
        store.apply(pod("a", labels={"app": "db"}))  # leaves it

    events = collect(store, "pods", None, rev, label_selector="app=web", count=3, then=writes)
    assert [e[0] for e in events] == ["ADDED", "MODIFIED", "DELETED"]


def test_writes_from_another_thread_reach_a_watch_on_the_loop():
    store = Store()

    def writer():
        for i in range(50):
            store.create(pod(f"p{i}"))

    thread = threading.Thread(target=writer)
    events = collect(store, "pods", None, store.revision, count=50, then=thread.start)
    thread.join()
    assert [e[1] for e in events] == [f"p{i}" for i in range(50)]
    assert [e[2] for e in events] == list(range(2, 52))


def test_concurrent_writers_and_watchers_see_every_revision_once_in_order():
    store = Store()

    def writer(prefix: str):
        for i in range(200):
            store.create(pod(f"{prefix}{i}"))

    async def main():
        watches = [store.watch("pods", None, store.revision) for _ in range(3)]
        threads = [threading.Thread(target=writer, args=(p,)) for p in "abcd"]
        for thread in threads:
            thread.start()
        seen = [[] for _ in watches]
        while any(len(s) < 800 for s in seen):
            for watch, revs in zip(watches, seen, strict=True):
                batch = await watch.next(0.01)
                revs.extend(e.revision for e in batch or [])
        for thread in threads:
            thread.join()
        return seen

    for revs in asyncio.run(main()):
        assert revs == list(range(2, 802))


def test_async_iteration_and_close():
    store = Store()

    async def main():
        watch = store.watch("pods")
        store.create(pod("a"))
        store.create(pod("b"))
        seen = []
        async for event in watch:
            seen.append(event.object["metadata"]["name"])
            event.object["metadata"]["name"] = "mutated"  # a copy: the store is unaffected
            if len(seen) == 2:
                watch.close()
        return seen

    assert asyncio.run(main()) == ["a", "b"]
    assert store.get("pods", "default", "a")["metadata"]["name"] == "a"


def test_subscribe_and_unsubscribe():
    store = Store()
    seen = []
    unsubscribe = store.subscribe(lambda e: seen.append((e.type, e.revision)))
    store.create(node("n1"))
    unsubscribe()
    store.delete("nodes", None, "n1")
    assert seen == [("ADDED", 2)]
