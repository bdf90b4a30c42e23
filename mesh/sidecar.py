"""One sidecar: watch the lab's objects, compile this pod's route table, proxy.

The control side is the shape of Envoy fed by istiod over xDS: a `labwatch`
list+watch of Services, Endpoints, Pods, Nodes and the mesh policies; every
batch of changes is coalesced into one `compile_table` per loop turn and the
new table swapped in whole (requests in flight keep the one they started
with). The admin server (aiohttp, like Envoy's admin) binds only after the
first table is in place, so "admin port accepts" means "routes are synced":
that is the container's readiness.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from labwatch import ApiSource, FileSource, Objects, SourceError, serve_synced, split_by_kind
from mesh.balance import Balancer
from mesh.compile import compile_table, pod_inputs
from mesh.metrics import Metrics
from mesh.proxy import Proxy
from mesh.ratelimit import RateLimiter
from mesh.spans import SpanRecorder, SpanShipper
from mesh.table import RouteTable, Workload
from mesh.tracing import Tracer

log = logging.getLogger("mesh")

RESOURCES = {
    "services": "Service",
    "endpoints": "Endpoints",
    "pods": "Pod",
    "nodes": "Node",
    "virtualservices": "VirtualService",
    "destinationrules": "DestinationRule",
    "ratelimitpolicies": "RateLimitPolicy",
}
PATHS = {
    "services": "/api/v1/services",
    "endpoints": "/api/v1/endpoints",
    "pods": "/api/v1/pods",
    "nodes": "/api/v1/nodes",
    "virtualservices": "/apis/networking.istio.io/v1/virtualservices",
    "destinationrules": "/apis/networking.istio.io/v1/destinationrules",
    "ratelimitpolicies": "/apis/netlab.io/v1alpha1/ratelimitpolicies",
}


@dataclasses.dataclass
class Settings:
    namespace: str
    pod: str
    api_socket: str | None = None
    objects_file: str | None = None
    zone: str = "cluster.local"
    sampling: float = 1.0  # 0..1
    mark: int | None = 0x4E4C
    outbound: tuple[str, int] = ("0.0.0.0", 15001)
    inbound: tuple[str, int] = ("0.0.0.0", 15006)
    admin: tuple[str, int] = ("0.0.0.0", 15000)
    drain: float = 2.0  # seconds in-flight requests get at shutdown
    ready_file: str | None = None
    snapshot: dict | None = None  # lists made by a fork server (mesh.zygote), to watch from


MIN_REBUILD_INTERVAL = 0.5  # seconds between tables while changes keep coming (a lab coming up)


class WatchedObjects(Objects):
    """The watched objects, and whether anything the table depends on changed."""

    def __init__(self, resources: Mapping[str, str]) -> None:
        super().__init__(resources)
        self.dirty = True

    def replace(self, resource: str, items: Any) -> None:
        super().replace(resource, items)
        self.dirty = True

    def apply(self, resource: str, event_type: str, obj: dict) -> None:
        if resource == "pods" and event_type == "MODIFIED" and isinstance(obj, dict):
            old = self.items[resource].get(self.key(obj))
            if old is not None and pod_inputs(old) == pod_inputs(obj):
                self.items[resource][self.key(obj)] = obj
                return
        super().apply(resource, event_type, obj)
        self.dirty = True


class TableRef:
    """The current table; the data path reads `.table` per request."""

    def __init__(self, table: RouteTable) -> None:
        self.table = table


class Sidecar:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.objects = WatchedObjects(RESOURCES)
        self.ref = TableRef(RouteTable(0, Workload(settings.namespace, settings.pod, "")))
        self.balancer = Balancer()
        self.limiter = RateLimiter()
        self.tracer = Tracer(settings.sampling)
        self.metrics = Metrics(zone=settings.zone)
        self.spans = SpanRecorder()
        self.shipper = SpanShipper(self.spans, lambda: self.ref.table.collector, settings.mark)
        self.proxy = Proxy(
            self.ref,
            self.balancer,
            self.limiter,
            self.tracer,
            self.metrics,
            self.spans,
            mark=settings.mark,
        )
        if settings.api_socket:
            self.source: ApiSource | FileSource = ApiSource(
                settings.api_socket, self.objects, self.changed, PATHS
            )
            if settings.snapshot:
                try:
                    self.source.seed(settings.snapshot)
                except SourceError as exc:  # then it lists by itself
                    log.warning("snapshot not usable: %s", exc)
        else:
            self.source = FileSource(
                str(settings.objects_file), self.objects, self.changed, split_by_kind(RESOURCES)
            )
        self._pending = False
        self._last_rebuild = -1.0
        self.rebuilds = 0
        self.rebuild_ms_total = 0.0
        self.rebuild_cpu_ms = 0.0
        self.startup_cpu_ms = 0.0  # process CPU until the admin port listened (ready)
        self.last_rebuild_ms = 0.0
        self._runner: web.AppRunner | None = None

    # -- the table -----------------------------------------------------------

    def changed(self) -> None:
        """A batch of watch events arrived: compile once for all of them, at most every
        MIN_REBUILD_INTERVAL (the first change after a quiet spell at once)."""
        if self._pending or not self.objects.dirty:
            return
        self._pending = True
        loop = asyncio.get_running_loop()
        wait = self._last_rebuild + MIN_REBUILD_INTERVAL - loop.time()
        if wait > 0:
            loop.call_later(wait, self.rebuild)
        else:
            loop.call_soon(self.rebuild)

    def rebuild(self) -> None:
        self._pending = False
        self.objects.dirty = False
        self._last_rebuild = asyncio.get_running_loop().time()
        started = time.perf_counter()
        cpu = time.process_time()
        lists = {r: self.objects.list(r) for r in RESOURCES}
        revision = getattr(self.source, "revision", 0)
        table = compile_table(
            self.settings.namespace,
            self.settings.pod,
            lists["services"],
            lists["endpoints"],
            lists["pods"],
            lists["virtualservices"],
            lists["destinationrules"],
            lists["ratelimitpolicies"],
            revision=revision,
            zone=self.settings.zone,
            sampling=self.settings.sampling,
            nodes=lists["nodes"],
        )
        self.ref.table = table
        self.proxy.pool.retain(table.endpoint_addresses())
        self.limiter.retain(limit for port in table.inbound.values() for limit in port.rate_limits)
        self.rebuilds += 1
        self.last_rebuild_ms = (time.perf_counter() - started) * 1000
        self.rebuild_ms_total += self.last_rebuild_ms
        self.rebuild_cpu_ms += (time.process_time() - cpu) * 1000
        log.info(
            "table %d at revision %d: %d service addresses, %d inbound ports, in %.1f ms",
            self.rebuilds,
            revision,
            len(table.by_address),
            len(table.inbound),
            self.last_rebuild_ms,
        )

    # -- admin -----------------------------------------------------------------

    def admin_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/stats/prometheus", self._prometheus)
        app.router.add_get("/stats", self._stats)
        app.router.add_get("/config_dump", self._config_dump)
        return app

    async def _ready(self, _request: web.Request) -> web.Response:
        return web.Response(text="LIVE\n")

    async def _prometheus(self, _request: web.Request) -> web.Response:
        return web.Response(text=self.metrics.render(), content_type="text/plain")

    async def _stats(self, _request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _config_dump(self, _request: web.Request) -> web.Response:
        return web.Response(
            text=json.dumps(table_dump(self.ref.table), indent=2, default=str),
            content_type="application/json",
        )

    def stats(self) -> dict[str, Any]:
        return {
            "pod": f"{self.settings.namespace}/{self.settings.pod}",
            "revision": self.ref.table.revision,
            "rebuilds": self.rebuilds,
            "last_rebuild_ms": round(self.last_rebuild_ms, 3),
            "rebuild_ms_total": round(self.rebuild_ms_total, 3),
            "rebuild_cpu_ms": round(self.rebuild_cpu_ms, 3),
            "startup_cpu_ms": round(self.startup_cpu_ms, 3),
            "cpu_ms": round(time.process_time() * 1000, 3),
            "proxy": self.proxy.stats(),
            "watch": {
                key: getattr(self.source, key, 0)
                for key in ("revision", "lists", "events", "event_bytes")
            },
            "pending": self._pending or self.objects.dirty,  # seen, not yet in the table
            "spans": self.spans.stats,
        }

    # -- lifecycle -------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> int:
        """First sync, then serve until `stop` is set; 1 if the source failed."""
        shipping: asyncio.Future | None = None

        async def synced() -> None:
            nonlocal shipping
            self.rebuild()
            await self.proxy.start(outbound=self.settings.outbound, inbound=self.settings.inbound)
            self._runner = web.AppRunner(self.admin_app(), access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, *self.settings.admin).start()
            self.startup_cpu_ms = time.process_time() * 1000
            if self.settings.ready_file:
                _write_ready(self.settings.ready_file)
            shipping = asyncio.ensure_future(self.shipper.run())

        try:
            return await serve_synced(self.source, stop, synced)
        finally:
            if shipping is not None:
                shipping.cancel()
                with contextlib.suppress(BaseException):
                    await shipping
            with contextlib.suppress(Exception):
                await self.proxy.close(grace=self.settings.drain)
            with contextlib.suppress(Exception):
                await self.shipper.flush()
            if self._runner is not None:
                await self._runner.cleanup()
            await self.source.close()
            if self.settings.ready_file:
                with contextlib.suppress(OSError):
                    Path(self.settings.ready_file).unlink()


def table_dump(table: RouteTable) -> dict[str, Any]:
    """The table as JSON-able data (Envoy's /config_dump in spirit)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Mapping):
            return {
                ":".join(map(str, k)) if isinstance(k, tuple) else str(k): plain(v)
                for k, v in value.items()
            }
        if isinstance(value, tuple | list | frozenset | set):
            return [plain(v) for v in value]
        if hasattr(value, "pattern") and hasattr(value, "flags"):
            return value.pattern
        return value

    return plain(table)


def _write_ready(path: str) -> None:
    tmp = Path(f"{path}.tmp{os.getpid()}")
    tmp.write_text("ready\n")
    tmp.replace(path)
