"""Reading the lab's objects: lists and single objects (as JSON, or as the Table
kubectl prints), and the watch streams every watcher of the lab keeps open."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from netlab.apiserver import tables
from netlab.apiserver.base import CLOSING, STORE, STREAMS, flag, gone, int_query, status
from netlab.apiserver.metrics import watch_events_sent
from netlab.errors import ApiError
from netlab.resources import Resource
from netlab.store import parse_revision

STORM_GAP = 0.02  # a batch this soon after the last one means a storm of events...
STORM_HOLD = 0.01  # ...so the next batch waits this long to gather more (one write, not ten)
QUIET_POLL = 2.0  # a quiet watch checks its client is there (and may send a BOOKMARK) this often


async def get_collection(request: web.Request, res: Resource) -> web.StreamResponse:
    store = request.app[STORE]
    namespace = request.match_info.get("namespace")
    labels, fields = request.query.get("labelSelector"), request.query.get("fieldSelector")
    if flag(request, "watch"):
        return await serve_watch(request, res, namespace, labels, fields)
    parse_revision(request.query.get("resourceVersion"))  # validated; lists are always current
    items, revision = store.list(res, namespace, labels, fields)
    version = tables.wanted(request.headers.get("Accept", ""))
    if version is not None:  # kubectl get: the server prints
        include = request.query.get("includeObject", "Metadata")
        return web.json_response(tables.table(res, items, version, revision, include))
    body = {
        "apiVersion": res.api_version,
        "kind": res.list_kind,
        "metadata": {"resourceVersion": str(revision)},
        "items": items,
    }
    return web.json_response(body)


async def get_item(request: web.Request, res: Resource) -> web.StreamResponse:
    name = request.match_info["name"]
    namespace = request.match_info.get("namespace")
    if flag(request, "watch"):  # the old single-object watch form
        return await serve_watch(request, res, namespace, None, f"metadata.name={name}")
    obj = request.app[STORE].get(res, namespace, name)
    version = tables.wanted(request.headers.get("Accept", ""))
    if version is not None:
        include = request.query.get("includeObject", "Metadata")
        return web.json_response(tables.table(res, [obj], version, None, include))
    return web.json_response(obj)


def _line(type_: str, object_json: str) -> bytes:
    return f'{{"type":"{type_}","object":{object_json}}}\n'.encode()


def _bookmark(res: Resource, revision: int, initial_end: bool = False) -> bytes:
    meta: dict = {"resourceVersion": str(revision)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    obj = {"kind": res.kind, "apiVersion": res.api_version, "metadata": meta}
    return _line("BOOKMARK", json.dumps(obj))


async def serve_watch(request, res, namespace, labels, fields) -> web.StreamResponse:
    """Stream events as JSON lines until timeoutSeconds, client disconnect or server shutdown."""
    timeout = int_query(request, "timeoutSeconds")
    bookmarks = flag(request, "allowWatchBookmarks")
    initial_end = flag(request, "sendInitialEvents")
    rv = request.query.get("resourceVersion")
    if initial_end:  # WatchList: current state as ADDED, then a bookmark marking its end
        rv = None
    try:
        watch = request.app[STORE].watch(res, namespace, rv, labels, fields, copy_objects=False)
    except ApiError as exc:
        if exc.status != 410:
            raise
        # as kube-apiserver answers it: the watch is made, and its one event says 410 Gone
        expired = web.StreamResponse(headers={"Content-Type": "application/json"})
        await expired.prepare(request)
        body = json.dumps(status(410, str(exc), "Expired"))
        await expired.write(_line("ERROR", body))
        await expired.write_eof()
        return expired
    version = tables.wanted(request.headers.get("Accept", ""))
    first = [True]

    def encode(event) -> bytes:
        if version is None:
            return _line(event.type, event.object_json())
        obj_json = tables.event_object_json(res, event.object_json(), version, first[0])
        first[0] = False
        return _line(event.type, obj_json)

    request.app[STREAMS].add(watch.close)
    if request.app[CLOSING].is_set():
        watch.close()
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout if timeout else None
    try:
        await response.prepare(request)
        await response.write(b"")  # send the headers now: the watch is established
        initial = watch.take_initial()
        watch_events_sent(request, res, len(initial))
        data = b"".join(encode(e) for e in initial)
        if initial_end:
            data += _bookmark(res, watch.cursor, initial_end=True)
        if data:
            await response.write(data)
        sent = watch.cursor
        last_batch = 0.0
        while True:
            wait = QUIET_POLL
            if deadline is not None:
                wait = min(wait, deadline - loop.time())
                if wait <= 0:
                    break
            try:
                batch = await watch.next(wait)
            except ApiError as exc:  # history expired under a slow watcher
                body = json.dumps(status(exc.status, str(exc), getattr(exc, "reason", None)))
                await response.write(_line("ERROR", body))
                break
            if batch is None or gone(request):
                break
            if batch:
                await response.write(b"".join(encode(e) for e in batch))
                watch_events_sent(request, res, len(batch))
                sent = watch.cursor
                now = loop.time()
                if now - last_batch < STORM_GAP:  # events keep coming (a lab starting):
                    await asyncio.sleep(STORM_HOLD)  # let them gather, write fewer batches
                last_batch = now
            elif bookmarks and watch.cursor > sent:
                await response.write(_bookmark(res, watch.cursor))
                sent = watch.cursor
        await response.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away
    finally:
        watch.close()
        request.app[STREAMS].discard(watch.close)
    return response
