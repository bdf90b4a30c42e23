"""The activator, Knative's idea: while an autoscaled Deployment has no pods, its
Services' endpoints point here. A request is held (and counted, so the autoscaler
sees the demand) until a ready pod of the Service appears, then passed to it and its
answer passed back; after HOLD seconds without one it gets a 503.

The Service is the one the request's Host names (its ClusterIP, `web`, `web.ns`,
`web.ns.svc.<zone>`, with the client pod's namespace when none is given); the pods and Services come from
the lab API's watch (labwatch), as every server of the lab gets them.

    python -m mesh.activator --api-socket /run/netlab/LAB/api.sock [--port 8012] [--admin-port 15000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections import Counter

import aiohttp
from aiohttp import web

from labwatch import ApiSource, Objects, serve_synced

log = logging.getLogger("activator")
PORT = 8012  # Knative's activator port
HOLD = 15.0  # seconds a request waits for a pod
HOP = ("connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection", "host")
PATHS = {"services": "/api/v1/services", "pods": "/api/v1/pods"}


def _ready(pod: dict) -> bool:
    conditions = pod.get("status", {}).get("conditions") or ()
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class Activator:
    def __init__(self, objects: Objects, hold: float = HOLD):
        self.objects, self.hold = objects, hold
        self.waiting: Counter[str] = Counter()  # "namespace/service" -> requests held now
        self.activated = 0  # requests held, then passed to a pod
        self.timed_out = 0
        self.session: aiohttp.ClientSession | None = None
        self.changed = asyncio.Event()

    def on_change(self) -> None:
        self.changed.set()

    def _client_namespace(self, ip: str | None) -> str:
        for pod in self.objects.list("pods"):
            if pod.get("status", {}).get("podIP") == ip:
                return pod["metadata"].get("namespace", "default")
        return "default"

    def service_for(self, host: str, client_ip: str | None) -> tuple[dict, int] | None:
        """The Service a Host header names, and the port asked for."""
        name, _, port_text = host.partition(":")
        port = int(port_text) if port_text.isdigit() else 80
        for svc in self.objects.list("services"):  # the VIP itself, as a client may ask
            if name and (svc.get("spec") or {}).get("clusterIP") == name:
                return svc, port
        parts = name.split(".")
        namespace = parts[1] if len(parts) > 1 else self._client_namespace(client_ip)
        for svc in self.objects.list("services"):
            meta = svc["metadata"]
            if meta.get("name") == parts[0] and meta.get("namespace", "default") == namespace:
                return svc, port
        return None

    def backend(self, svc: dict, port: int) -> tuple[str, int] | None:
        """A ready pod the Service selects, and the container port its `port` targets."""
        spec = svc.get("spec") or {}
        ports = spec.get("ports") or []
        chosen = next((p for p in ports if p.get("port") == port), ports[0] if ports else None)
        if chosen is None:
            return None
        selector = spec.get("selector") or {}
        for pod in sorted(self.objects.list("pods"), key=lambda p: p["metadata"]["name"]):
            labels = pod["metadata"].get("labels") or {}
            if pod["metadata"].get("namespace") != svc["metadata"].get("namespace"):
                continue
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                continue
            if not _ready(pod) or not pod.get("status", {}).get("podIP"):
                continue
            target = chosen.get("targetPort", chosen.get("port"))
            if isinstance(target, str):  # a named port: the pod's container port of that name
                target = next(
                    (
                        cp.get("containerPort")
                        for c in pod.get("spec", {}).get("containers", [])
                        for cp in c.get("ports", [])
                        if cp.get("name") == target
                    ),
                    None,
                )
            if isinstance(target, int):
                return pod["status"]["podIP"], target
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        found = self.service_for(request.host, request.remote)
        if found is None:
            return web.Response(
                status=404, text=f"activator: no Service for Host {request.host!r}\n"
            )
        svc, port = found
        key = f"{svc['metadata'].get('namespace', 'default')}/{svc['metadata']['name']}"
        body = await request.read()
        deadline = time.monotonic() + self.hold
        self.waiting[key] += 1
        try:
            while (target := self.backend(svc, port)) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.timed_out += 1
                    return web.Response(
                        status=503, text=f"activator: no pod of {key} became ready\n"
                    )
                self.changed.clear()
                try:
                    await asyncio.wait_for(self.changed.wait(), min(left, 0.25))
                except TimeoutError:
                    pass
        finally:
            self.waiting[key] -= 1
            if not self.waiting[key]:
                del self.waiting[key]
        self.activated += 1
        return await self._forward(request, body, target)

    async def _forward(self, request: web.Request, body: bytes, target: tuple[str, int]):
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        headers["Host"] = request.host
        url = f"http://{target[0]}:{target[1]}{request.path_qs}"
        assert self.session is not None
        try:
            async with self.session.request(
                request.method, url, headers=headers, data=body or None, allow_redirects=False
            ) as upstream:
                payload = await upstream.read()
                out = {
                    k: v
                    for k, v in upstream.headers.items()
                    if k.lower() not in (*HOP, "content-length")
                }
                return web.Response(status=upstream.status, body=payload, headers=out)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return web.Response(status=502, text=f"activator: {target[0]}:{target[1]}: {exc}\n")

    async def stats(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "waiting": dict(self.waiting),
                "activated": self.activated,
                "timed_out": self.timed_out,
            }
        )


async def run(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    objects = Objects({"services": "Service", "pods": "Pod"})
    activator = Activator(objects, args.hold)
    source = ApiSource(args.api_socket, objects, activator.on_change, PATHS)
    runners: list[web.AppRunner] = []

    async def synced() -> None:
        activator.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        for port, routes in ((args.port, [web.route("*", "/{tail:.*}", activator.handle)]),
                             (args.admin_port, [web.get("/stats", activator.stats), web.get("/ready", activator.stats)])):  # fmt: skip
            app = web.Application(client_max_size=1 << 20)
            app.add_routes(routes)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "0.0.0.0", port).start()
            runners.append(runner)

    try:
        return await serve_synced(source, stop, synced)
    finally:
        for runner in runners:
            await runner.cleanup()
        if activator.session is not None:
            await activator.session.close()
        await source.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mesh.activator", description=__doc__.split("\n")[0])
    parser.add_argument("--api-socket", required=True)
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--admin-port", type=int, default=15000)
    parser.add_argument("--hold", type=float, default=HOLD)
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="activator: %(message)s")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
