"""The embedded store on disk: a new Store restored from the journal holds the same state."""

from __future__ import annotations

import asyncio

import pytest

from netlab.errors import ApiError
from netlab.journal import Journal
from netlab.store import Store


def pod(name: str, n: int = 0) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"n": n}}


def test_restore_gives_the_same_objects_and_revision(tmp_path):
    store = Store()
    store.apply(pod("before"))  # written before persisting: in the first snapshot
    store.persist(Journal(tmp_path))
    store.apply(pod("a"))
    store.apply(pod("a", 1))
    store.apply(pod("b"))
    store.delete("pods", "default", "b")
    store.apply({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": {}})
    again = Store.restore(Journal(tmp_path))
    assert again.revision == store.revision
    assert again.list("pods")[0] == store.list("pods")[0]
    assert [n["metadata"]["name"] for n in again.list("nodes")[0]] == ["n1"]
    assert (
        again.get("pods", "default", "a")["metadata"]["resourceVersion"]
        == (store.get("pods", "default", "a")["metadata"]["resourceVersion"])
    )
    # a write to the restored store continues the revisions, with compare-and-swap intact
    stale = dict(pod("a", 2), metadata={"name": "a", "resourceVersion": "2"})
    with pytest.raises(ApiError):
        again.update(stale)
    assert int(again.apply(pod("c"))["metadata"]["resourceVersion"]) == store.revision + 1


def test_compaction_and_a_line_cut_short(tmp_path):
    store = Store()
    store.persist(Journal(tmp_path, compact_at=5))
    for i in range(12):
        store.apply(pod(f"p{i % 4}", i))
    journal = Journal(tmp_path)
    assert journal.log_path.read_text().count("\n") < 5  # compacted into the snapshot
    with journal.log_path.open("a") as f:
        f.write('{"rev": 99, "res": "pods", "ns": "default", "na')  # a crash mid-write
    again = Store.restore(journal)
    assert again.revision == store.revision
    assert again.list("pods")[0] == store.list("pods")[0]


def test_watches_from_before_the_restore_relist(tmp_path):
    store = Store()
    store.persist(Journal(tmp_path))
    old = store.apply(pod("a"))["metadata"]["resourceVersion"]
    store.apply(pod("a", 1))
    again = Store.restore(Journal(tmp_path))

    async def watch():
        with pytest.raises(ApiError) as err:
            again.watch("pods", "default", resource_version=old)
        return err.value.status

    assert asyncio.run(watch()) == 410
