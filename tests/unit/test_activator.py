"""The activator on loopback: a request held until a pod is ready, then passed on."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from labwatch import Objects
from mesh.activator import Activator


def service(cluster_ip: str = "10.96.0.50") -> dict:
    return {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "clusterIP": cluster_ip,
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }


def pod(ready: bool, port: int) -> dict:
    return {
        "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "containers": [{"name": "web", "ports": [{"name": "http", "containerPort": port}]}]
        },
        "status": {
            "podIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


def test_names_and_ports():
    objects = Objects({"services": "Service", "pods": "Pod"})
    objects.apply("services", "ADDED", service())
    objects.apply("pods", "ADDED", pod(True, 9999))
    act = Activator(objects)
    for host in ("web", "web.default", "web.default.svc.cluster.local", "10.96.0.50", "web:80"):
        assert act.service_for(host, None)[0]["metadata"]["name"] == "web", host
    assert act.service_for("web.other", None) is None
    svc, port = act.service_for("web", None)
    assert act.backend(svc, port) == ("127.0.0.1", 9999)  # the named port resolved on the pod


def test_a_held_request_goes_through_once_a_pod_is_ready_and_times_out_otherwise():
    async def main():
        async def answer(request: web.Request) -> web.Response:
            return web.Response(text=f"from backend {request.query['q']}")

        backend = web.Application()
        backend.router.add_get("/x", answer)
        backend_runner, backend_port = await serve(backend)
        objects = Objects({"services": "Service", "pods": "Pod"})
        objects.apply("services", "ADDED", service())
        objects.apply("pods", "ADDED", pod(False, backend_port))
        act = Activator(objects, hold=2.0)
        act.session = aiohttp.ClientSession()
        front = web.Application()
        front.router.add_route("*", "/{tail:.*}", act.handle)
        front_runner, front_port = await serve(front)
        async with aiohttp.ClientSession() as client:
            url = f"http://127.0.0.1:{front_port}/x?q=1"
            held = asyncio.ensure_future(client.get(url, headers={"Host": "web"}))
            await asyncio.sleep(0.3)
            assert act.waiting == {"default/web": 1}  # the autoscaler's demand signal
            objects.apply("pods", "MODIFIED", pod(True, backend_port))
            act.on_change()
            response = await asyncio.wait_for(held, 2)
            assert response.status == 200 and await response.text() == "from backend 1"
            assert act.waiting == {} and act.activated == 1
            objects.apply("pods", "MODIFIED", pod(False, backend_port))
            act.hold = 0.3
            late = await client.get(url, headers={"Host": "web"})
            assert late.status == 503 and act.timed_out == 1
            unknown = await client.get(url, headers={"Host": "nothing"})
            assert unknown.status == 404
        await act.session.close()
        await front_runner.cleanup()
        await backend_runner.cleanup()

    asyncio.run(main())
