"""netlab's own endpoints beside the Kubernetes API: apply a YAML stream, act on a
node, show the topology, shut the lab down (or leave it running, to be adopted)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from netlab.apiserver.base import ACTIONS, STORE, TASKS, flag, status
from netlab.errors import ApiError


async def _shutdown(request: web.Request) -> web.Response:
    """`?leave=true`: only the supervisor goes; the lab keeps running, to be adopted."""
    leave = request.query.get("leave") in ("1", "true")
    actions = request.app[ACTIONS]
    task = asyncio.create_task(actions.shutdown(leave=True) if leave else actions.shutdown())
    request.app[TASKS].add(task)
    task.add_done_callback(request.app[TASKS].discard)
    what = "the supervisor is leaving the lab running" if leave else "the lab is shutting down"
    return web.json_response(status(202, what, "Accepted"), status=202)


MAX_APPLY_BYTES = 1 << 20


async def _apply(request: web.Request) -> web.Response:
    """`netlab apply`: a YAML stream of manifests, validated against the running
    lab as a whole before anything changes; what was done to each object."""
    action = getattr(request.app[ACTIONS], "apply", None)
    if action is None:
        raise ApiError(405, "this lab does not take manifests")
    body = await request.content.read(MAX_APPLY_BYTES + 1)
    if len(body) > MAX_APPLY_BYTES:
        raise ApiError(400, f"manifests larger than {MAX_APPLY_BYTES} bytes; split the file")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"manifests are not UTF-8: {exc}") from exc
    results = await action(text)
    return web.json_response({"kind": "ApplyResult", "items": results})


NODE_ACTIONS = ("fail", "recover", "cordon", "uncordon", "drain")


async def _node_action(request: web.Request) -> web.Response:
    """`netlab node fail|recover NAME`, `netlab cordon|uncordon|drain NAME`."""
    name, verb = request.match_info["name"], request.match_info["action"]
    if verb not in NODE_ACTIONS:
        raise ApiError(404, f"no node action {verb!r}; use one of {', '.join(NODE_ACTIONS)}")
    action = getattr(request.app[ACTIONS], "node_action", None)
    if action is None:
        raise ApiError(405, "this lab does not take node actions")
    request.app[STORE].get("nodes", None, name)  # 404 before asking the lab
    evicted = await action(name, verb, flag(request, "force"))
    return web.json_response(
        {"kind": "NodeActionResult", "node": name, "action": verb, "evicted": evicted}
    )


async def _topology(request: web.Request) -> web.Response:
    return web.json_response(request.app[ACTIONS].topology())


def add_routes(app: web.Application) -> None:
    """Under /netlab/v1: shutdown, apply, node actions, topology."""
    app.router.add_post("/netlab/v1/shutdown", _shutdown)
    app.router.add_post("/netlab/v1/apply", _apply)
    app.router.add_post("/netlab/v1/nodes/{name}/{action}", _node_action)
    app.router.add_get("/netlab/v1/topology", _topology)
