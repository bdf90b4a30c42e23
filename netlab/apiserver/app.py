"""The lab API's application: Kubernetes-shaped HTTP whose routes are made from the
resource table, with discovery, OpenAPI, exec and netlab's own endpoints.

`make_app(store, actions)` gives a finished aiohttp Application; `runner.serve` puts it
on its sites (the unix socket, and TLS on loopback for kubectl).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from netlab.apiserver import (
    fieldvalidation,
    health,
    labroutes,
    logs,
    metrics,
    openapi,
    podmetrics,
    portforward,
    reads,
    reviews,
    streams,
)
from netlab.apiserver.base import ACTIONS, CLOSING, STORE, STREAMS, TASKS, Actions, status
from netlab.apiserver.version import version_info
from netlab.apiserver.writes import (
    create_item,
    delete_item,
    get_scale,
    patch_item,
    replace_item,
    write_scale,
    write_status,
)
from netlab.errors import ApiError
from netlab.resources import Resource, discovery_documents
from netlab.store import Store

log = logging.getLogger(__name__)


def _status_response(
    code: int, message: str, reason: str | None = None, details: dict | None = None
) -> web.Response:
    return web.json_response(status(code, message, reason, details), status=code)


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable]):
    """Every failure becomes a `Status`; nothing a client sends takes the server down."""
    try:
        return await handler(request)
    except ApiError as exc:
        details = getattr(exc, "details", None)
        return _status_response(exc.status, str(exc), getattr(exc, "reason", None), details)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = f"the server could not find the requested resource ({request.path})"
        if exc.status != 404:
            message = f"{exc.reason}: {request.method} {request.path}"
        return _status_response(exc.status, message)
    except ConnectionResetError:
        raise
    except Exception:  # a bug in a handler or an action: report it, keep serving
        log.exception("lab API: %s %s failed", request.method, request.path_qs)
        return _status_response(500, f"internal error handling {request.method} {request.path}")


# -- discovery -------------------------------------------------------------------


def _static(doc: dict | str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(_request: web.Request) -> web.Response:
        if isinstance(doc, str):
            return web.Response(text=doc)
        return web.json_response(doc)

    return handler


def _add_discovery(app: web.Application, store: Store) -> None:
    docs = discovery_documents(store.resources)
    podmetrics.add_discovery(docs)  # metrics.k8s.io: served beside the store's kinds
    for path, doc in docs.items():
        app.router.add_get(path, _static(doc))
    for path in ("/api", "/apis"):  # as kube-apiserver, also with a slash (the Python client's)
        app.router.add_get(path + "/", _static(docs[path]))
    app.router.add_get("/version", _static(version_info()))
    openapi.add_routes(app, store.resources)
    health.add_routes(app)


# -- resources -------------------------------------------------------------------


def _add_resource(app: web.Application, res: Resource) -> None:
    """Collection, item (and subresource) routes for one table row."""
    if not res.stored:  # a review: answered by apiserver.reviews
        return
    prefix = f"{res.base_path}/namespaces/{{namespace}}" if res.namespaced else res.base_path
    collection = f"{prefix}/{res.plural}"
    app.router.add_get(collection, functools.partial(reads.get_collection, res=res))
    if res.namespaced:  # all namespaces
        all_ns = f"{res.base_path}/{res.plural}"
        app.router.add_get(all_ns, functools.partial(reads.get_collection, res=res))
    app.router.add_get(f"{collection}/{{name}}", functools.partial(reads.get_item, res=res))
    app.router.add_delete(f"{collection}/{{name}}", functools.partial(delete_item, res=res))
    if "log" in res.subresources:
        app.router.add_get(f"{collection}/{{name}}/log", logs.get_log)
    if "patch" in res.verbs:
        app.router.add_patch(f"{collection}/{{name}}", functools.partial(patch_item, res=res))
        app.router.add_put(f"{collection}/{{name}}", functools.partial(replace_item, res=res))
        status_path = f"{collection}/{{name}}/status"
        app.router.add_get(status_path, functools.partial(reads.get_item, res=res))
        app.router.add_patch(status_path, functools.partial(write_status, res=res))
        app.router.add_put(status_path, functools.partial(write_status, res=res))
    if "create" in res.verbs:
        app.router.add_post(collection, functools.partial(create_item, res=res))
    if "scale" in res.subresources:
        scale = f"{collection}/{{name}}/scale"
        app.router.add_get(scale, functools.partial(get_scale, res=res))
        app.router.add_patch(scale, functools.partial(write_scale, res=res))
        app.router.add_put(scale, functools.partial(write_scale, res=res))


async def _on_shutdown(app: web.Application) -> None:
    app[CLOSING].set()
    for close in list(app[STREAMS]):
        close()


def make_app(store: Store, actions: Actions, middlewares: Sequence = ()) -> web.Application:
    """The lab API application over `store`, calling `actions` for deletes, logs and shutdown.
    `middlewares` run first (the TLS endpoint's authentication)."""
    counted = metrics.Metrics()
    app = web.Application(middlewares=[*middlewares, metrics.middleware(counted), _errors])
    metrics.add_routes(app, counted)
    app[STORE], app[ACTIONS] = store, actions
    app[STREAMS], app[TASKS], app[CLOSING] = set(), set(), asyncio.Event()
    _add_discovery(app, store)
    for res in store.resources:
        _add_resource(app, res)
    reviews.add_routes(app, list(store.resources))
    podmetrics.add_routes(app)
    entry = getattr(actions, "exec_entry", None)
    if entry is not None:  # kubectl exec (WebSocket); POST: SPDY, refused with a reason
        handler = streams.make_handler(entry)
        app.router.add_get("/api/v1/namespaces/{namespace}/pods/{name}/exec", handler)
        app.router.add_post("/api/v1/namespaces/{namespace}/pods/{name}/exec", handler)
    dialer_for = getattr(actions, "port_dialer", None)
    if dialer_for is not None:  # kubectl port-forward (WebSocket); POST: SPDY, refused
        handler = portforward.make_handler(dialer_for)
        app.router.add_get("/api/v1/namespaces/{namespace}/pods/{name}/portforward", handler)
        app.router.add_post("/api/v1/namespaces/{namespace}/pods/{name}/portforward", handler)
    labroutes.add_routes(app)
    app.on_shutdown.append(_on_shutdown)
    app.on_response_prepare.append(fieldvalidation.add_warnings)
    return app
