"""labdns: answers follow the lab API's watch streams within 100 ms.

The lab API is replaced by a fake: an aiohttp server on a unix socket in a
temp dir, speaking the list+watch contract (lists with a resourceVersion;
`?watch=1&resourceVersion=N&allowWatchBookmarks=true` streams JSON lines;
an ERROR event with code 410, or HTTP 410, means "list again").
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from pathlib import Path

import pytest
from aiohttp import web
from dnslib import DNSRecord

from tests.unit.test_labdns_records import cluster_objects, endpoints, query, service
from tests.unit.test_labdns_server import running_server, udp_ask

RESOURCES = {"Service": "services", "Endpoints": "endpoints", "Pod": "pods"}
DEADLINE = 0.1  # an endpoint change must show in answers this fast


class FakeApi:
    """A list+watch API in a thread of its own; the test changes objects from outside."""

    def __init__(self, socket_path: Path, objects: list[dict]):
        self.socket_path = socket_path
        self.revision = 1
        self.oldest = 0  # watches from before this revision get 410
        self.objects: dict[str, dict[tuple, dict]] = {r: {} for r in RESOURCES.values()}
        for obj in objects:
            self.objects[RESOURCES[obj["kind"]]][self._key(obj)] = obj
        self.history: list[tuple[int, str, dict]] = []  # (revision, resource, event)
        self.watches: set[tuple[str, asyncio.Queue]] = set()
        self.requests: list[str] = []
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None

    @staticmethod
    def _key(obj: dict) -> tuple:
        return obj["metadata"].get("namespace", "default"), obj["metadata"]["name"]

    def start(self) -> FakeApi:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_get("/api/v1/{resource}", self._get)
        self._runner = web.AppRunner(app)
        self.loop.run_until_complete(self._runner.setup())
        site = web.UnixSite(self._runner, str(self.socket_path))
        self.loop.run_until_complete(site.start())
        self._ready.set()
        self.loop.run_forever()

    async def _stop(self) -> None:
        for _, queue in list(self.watches):
            queue.put_nowait(None)
        await self._runner.cleanup()

    # -- what the test does ----------------------------------------------------------

    def change(self, event_type: str, obj: dict) -> None:
        """ADDED/MODIFIED/DELETED: applied and streamed to the watches."""
        asyncio.run_coroutine_threadsafe(self._change(event_type, obj), self.loop).result(5)

    def expire(self, how: str) -> None:
        """Forget the history: 'event' sends ERROR 410 to open watches, 'http' only ends them."""
        asyncio.run_coroutine_threadsafe(self._expire(how), self.loop).result(5)

    async def _change(self, event_type: str, obj: dict) -> None:
        obj = copy.deepcopy(obj)
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)
        resource = RESOURCES[obj["kind"]]
        if event_type == "DELETED":
            self.objects[resource].pop(self._key(obj), None)
        else:
            self.objects[resource][self._key(obj)] = obj
        event = {"type": event_type, "object": obj}
        self.history.append((self.revision, resource, event))
        for res, queue in list(self.watches):
            if res == resource:
                queue.put_nowait(event)

    async def _expire(self, how: str) -> None:
        self.revision += 1
        self.oldest = self.revision
        self.history.clear()
        gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
        for _, queue in list(self.watches):
            if how == "event":
                queue.put_nowait({"type": "ERROR", "object": gone})
            queue.put_nowait(None)

    # -- the API ---------------------------------------------------------------------

    async def _get(self, request: web.Request) -> web.StreamResponse:
        resource = request.match_info["resource"]
        self.requests.append(request.path_qs)
        if resource not in self.objects:
            return web.json_response({"kind": "Status", "code": 404}, status=404)
        if request.query.get("watch") not in ("1", "true"):
            return web.json_response(
                {
                    "kind": f"{resource.title()}List",
                    "metadata": {"resourceVersion": str(self.revision)},
                    "items": list(self.objects[resource].values()),
                }
            )
        since = int(request.query.get("resourceVersion") or 0)
        if since < self.oldest:
            return web.json_response({"kind": "Status", "code": 410}, status=410)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        queue: asyncio.Queue = asyncio.Queue()
        entry = (resource, queue)
        self.watches.add(entry)
        try:
            for rev, res, event in self.history:
                if rev > since and res == resource:
                    await resp.write(json.dumps(event).encode() + b"\n")
            bookmark = {"metadata": {"resourceVersion": str(self.revision)}}
            await resp.write(json.dumps({"type": "BOOKMARK", "object": bookmark}).encode() + b"\n")
            while (event := await queue.get()) is not None:
                await resp.write(json.dumps(event).encode() + b"\n")
        except ConnectionError:
            pass
        finally:
            self.watches.discard(entry)
        return resp


def a_records(port: int, name: str) -> set[str] | None:
    """The A records of a name (None for NXDOMAIN)."""
    resp = DNSRecord.parse(udp_ask(port, query(name, edns=1232)))
    return None if resp.header.rcode == 3 else {str(rr.rdata) for rr in resp.rr}


def wait_for(port: int, name: str, want: set[str] | None, limit: float = DEADLINE) -> float:
    """Seconds until the answer for `name` is `want`; fails past `limit`."""
    start = time.monotonic()
    while (got := a_records(port, name)) != want:
        elapsed = time.monotonic() - start
        assert elapsed < limit, f"{name}: still {got} after {elapsed * 1000:.0f} ms, want {want}"
        time.sleep(0.002)
    return time.monotonic() - start


@pytest.fixture
def api(tmp_path):
    fake = FakeApi(tmp_path / "api.sock", cluster_objects()).start()
    yield fake
    fake.stop()


@pytest.fixture
def dns(api, tmp_path):
    with running_server("--api-socket", str(api.socket_path), tmp=tmp_path) as (port, proc, log):
        yield port
        assert proc.poll() is None, log.read_text()


DB = "db.default.svc.cluster.local"
PG = [{"name": "pg", "port": 5432, "protocol": "TCP"}]


def db_endpoints(*ips: str) -> dict:
    return endpoints("db", [{"ip": ip} for ip in ips], PG)


def test_endpoint_added_and_removed_within_100ms(api, dns):
    assert a_records(dns, DB) == {"10.244.1.5", "10.244.2.6"}
    api.change("MODIFIED", db_endpoints("10.244.1.5", "10.244.2.6", "10.244.5.9"))
    wait_for(dns, DB, {"10.244.1.5", "10.244.2.6", "10.244.5.9"})
    assert a_records(dns, "10-244-5-9.db.default.svc.cluster.local") == {"10.244.5.9"}
    api.change("MODIFIED", db_endpoints("10.244.5.9"))
    wait_for(dns, DB, {"10.244.5.9"})
    api.change("MODIFIED", db_endpoints())
    wait_for(dns, DB, None)  # a headless Service without ready endpoints: NXDOMAIN


def test_services_and_pods_come_and_go(api, dns):
    new = service("new", cluster_ip="10.96.9.9")
    api.change("ADDED", new)
    wait_for(dns, "new.default.svc.cluster.local", {"10.96.9.9"})
    api.change("DELETED", new)
    wait_for(dns, "new.default.svc.cluster.local", None)
    pod = {
        "kind": "Pod",
        "metadata": {"name": "px", "namespace": "default"},
        "status": {"podIP": "10.244.8.8"},
    }
    api.change("ADDED", pod)
    wait_for(dns, "10-244-8-8.default.pod.cluster.local", {"10.244.8.8"})
    api.change("DELETED", pod)
    wait_for(dns, "10-244-8-8.default.pod.cluster.local", None)


@pytest.mark.parametrize("how", ["event", "http"])
def test_410_means_list_again(api, dns, how):
    api.expire(how)  # the open watches end; resuming from their revision gets 410
    api.change("MODIFIED", db_endpoints("10.244.6.6"))
    wait_for(dns, DB, {"10.244.6.6"}, limit=3)  # the relist has a short backoff
    lists = [r for r in api.requests if r == "/api/v1/endpoints"]
    assert len(lists) >= 2
    api.change("MODIFIED", db_endpoints("10.244.6.7"))
    wait_for(dns, DB, {"10.244.6.7"})  # watching again, at full speed


def test_watch_uses_the_listed_revision_and_bookmarks(api, dns):
    deadline = time.monotonic() + 5  # the watches follow the lists; on a loaded machine, later
    while len(watches := [r for r in api.requests if "watch=1" in r]) < 3:
        assert time.monotonic() < deadline, api.requests
        time.sleep(0.01)
    assert len(watches) == 3
    for r in watches:
        assert "resourceVersion=1" in r and "allowWatchBookmarks=true" in r


def test_not_ready_until_the_api_answers(tmp_path):
    """The ready file (and the port) appear only after the first successful lists."""
    sock = tmp_path / "late.sock"
    fake = FakeApi(sock, cluster_objects())
    starter = threading.Timer(0.5, fake.start)
    starter.start()
    try:
        started = time.monotonic()
        with running_server("--api-socket", str(sock), tmp=tmp_path) as (port, _, _):
            assert time.monotonic() - started >= 0.4
            assert a_records(port, DB) == {"10.244.1.5", "10.244.2.6"}
    finally:
        starter.join()
        fake.stop()
