"""labwatch: lists fetched once elsewhere (a fork server's snapshot) seed a
reflector, which then only watches, from the snapshot's versions, against the
fake lab API of the labdns tests (a real aiohttp server on a unix socket)."""

from __future__ import annotations

import asyncio

import pytest

from labwatch import ApiSource, Objects, SourceError, fetch_lists
from tests.unit.test_labdns_records import cluster_objects, service
from tests.unit.test_labdns_updates import FakeApi

PATHS = {"services": "/api/v1/services", "pods": "/api/v1/pods"}


@pytest.fixture
def api(tmp_path):
    fake = FakeApi(tmp_path / "api.sock", cluster_objects()).start()
    yield fake
    fake.stop()


def test_fetch_lists_then_seed_lists_nothing_and_watches_from_the_snapshot(api):
    snapshot = fetch_lists(str(api.socket_path), PATHS)
    assert set(snapshot) == {"services", "pods"}
    assert all(doc["metadata"]["resourceVersion"] == "1" for doc in snapshot.values())
    listed = len(api.requests)
    api.change("ADDED", service("late", "default", "10.96.0.99", [{"name": "http", "port": 80}]))

    async def go() -> set[str]:
        objects = Objects({"services": "Service", "pods": "Pod"})
        changed = asyncio.Event()
        source = ApiSource(str(api.socket_path), objects, changed.set, PATHS)
        source.seed(snapshot)
        await source.start()
        assert source.lists == 0
        before = {name for _, name in objects.items["services"]}
        watching = asyncio.ensure_future(source.run())
        try:
            await asyncio.wait_for(changed.wait(), 5)  # the event after the snapshot
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
            await source.close()
        assert "late" not in before
        return {name for _, name in objects.items["services"]}

    names = asyncio.run(go())
    assert "late" in names
    assert not [r for r in api.requests[listed:] if "watch" not in r]  # no list
    assert all("resourceVersion=1" in r for r in api.requests[listed:])


def test_fetch_lists_names_what_failed(api, tmp_path):
    with pytest.raises(SourceError, match="/api/v1/nothing: HTTP 404"):
        fetch_lists(str(api.socket_path), {"nothing": "/api/v1/nothing"})
    with pytest.raises(OSError):
        fetch_lists(str(tmp_path / "no.sock"), PATHS)
