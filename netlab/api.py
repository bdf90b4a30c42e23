"""The lab API: Kubernetes-shaped HTTP over a unix socket (aiohttp), routes made from the table.

Lifecycle follows aiohttp's runner: `runner = await serve(make_app(store, actions), path)`,
later `await runner.cleanup()`; cleanup ends every open watch and log stream first.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol

from aiohttp import web

from netlab import __version__, api_exec, crilog, kube_table, openapi
from netlab.api_base import ACTIONS, CLOSING, STORE, STREAMS, TASKS, status
from netlab.api_writes import create_item, get_scale, patch_item, write_scale
from netlab.errors import ApiError
from netlab.resources import Resource, discovery_documents
from netlab.store import Store, parse_revision

log = logging.getLogger(__name__)

STORM_GAP = 0.02  # a batch this soon after the last one means a storm of events...
STORM_HOLD = 0.01  # ...so the next batch waits this long to gather more (one write, not ten)
QUIET_POLL = 2.0  # a quiet watch checks its client is there (and may send a BOOKMARK) this often
LOG_POLL = 0.2  # seconds between checks of a followed log file


class Actions(Protocol):
    """What the lab does for API calls that are more than a store write."""

    async def delete_pod(self, namespace: str, name: str) -> dict:
        """Delete a pod (stop its processes, remove it from the store); return the object."""
        ...

    async def delete_deployment(self, namespace: str, name: str) -> dict:
        """Delete a deployment and its pods; return the object."""
        ...

    async def shutdown(self, leave: bool = False) -> None:
        """Tear the lab down, or (`leave`) end only the supervisor (runs as a task after
        the API has answered 202)."""
        ...

    def log_path(self, namespace: str, pod: str, container: str | None) -> Path:
        """The log file of a container; ApiError 404 (no such container) or 400 (ambiguous)."""
        ...

    def topology(self) -> dict:
        """Racks, routers, nodes and their namespaces (objects.topology_object)."""
        ...


def _status_response(code: int, message: str, reason: str | None = None) -> web.Response:
    return web.json_response(status(code, message, reason), status=code)


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable]):
    """Every failure becomes a `Status`; nothing a client sends takes the server down."""
    try:
        return await handler(request)
    except ApiError as exc:
        return _status_response(exc.status, str(exc), getattr(exc, "reason", None))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = f"the server could not find the requested resource ({request.path})"
        if exc.status != 404:
            message = f"{exc.reason}: {request.method} {request.path}"
        return _status_response(exc.status, message)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:  # a bug in a handler or an action: report it, keep serving
        log.exception("lab API: %s %s failed", request.method, request.path_qs)
        return _status_response(500, f"internal error handling {request.method} {request.path}")


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "")
    if value in ("", "0", "f", "F", "false", "False", "FALSE"):
        return False
    if value in ("1", "t", "T", "true", "True", "TRUE"):
        return True
    raise ApiError(400, f"invalid {name}={value!r}: must be true or false")


def _int(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise ApiError(400, f"invalid {name}={value!r}: must be a non-negative integer")
    return number


def _gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


# -- discovery -------------------------------------------------------------------


def _static(doc: dict | str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(_request: web.Request) -> web.Response:
        if isinstance(doc, str):
            return web.Response(text=doc)
        return web.json_response(doc)

    return handler


async def _openapi_v2(request: web.Request) -> web.Response:
    if "protobuf" in request.headers.get("Accept", ""):
        return web.Response(body=openapi.v2_document(True), content_type=openapi.V2_PROTOBUF)
    return web.Response(body=openapi.v2_document(False), content_type="application/json")


def _add_discovery(app: web.Application, store: Store) -> None:
    for path, doc in discovery_documents(store.resources).items():
        app.router.add_get(path, _static(doc))
    version = {
        "major": "1",
        "minor": "30",
        "gitVersion": "v1.30.0-netlab",
        "gitCommit": __version__,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "python3",
        "compiler": "cpython",
        "platform": "linux/amd64",
    }
    app.router.add_get("/version", _static(version))
    root, by_path = openapi.documents(store.resources)
    app.router.add_get("/openapi/v3", _static(root))
    app.router.add_get("/openapi/v2", _openapi_v2)
    for path, doc in by_path.items():
        app.router.add_get(f"/openapi/v3/{path}", _static(doc))
    for path in ("/healthz", "/livez", "/readyz"):
        app.router.add_get(path, _static("ok"))


# -- resources -------------------------------------------------------------------


def _add_resource(app: web.Application, res: Resource) -> None:
    """Collection, item (and subresource) routes for one table row."""
    prefix = f"{res.base_path}/namespaces/{{namespace}}" if res.namespaced else res.base_path
    collection = f"{prefix}/{res.plural}"
    app.router.add_get(collection, functools.partial(_get_collection, res=res))
    if res.namespaced:  # all namespaces
        all_ns = f"{res.base_path}/{res.plural}"
        app.router.add_get(all_ns, functools.partial(_get_collection, res=res))
    app.router.add_get(f"{collection}/{{name}}", functools.partial(_get_item, res=res))
    app.router.add_delete(f"{collection}/{{name}}", functools.partial(_delete_item, res=res))
    if "log" in res.subresources:
        app.router.add_get(f"{collection}/{{name}}/log", _get_log)
    if "patch" in res.verbs:
        app.router.add_patch(f"{collection}/{{name}}", functools.partial(patch_item, res=res))
    if "create" in res.verbs:
        app.router.add_post(collection, functools.partial(create_item, res=res))
    if "scale" in res.subresources:
        scale = f"{collection}/{{name}}/scale"
        app.router.add_get(scale, functools.partial(get_scale, res=res))
        app.router.add_patch(scale, functools.partial(write_scale, res=res))
        app.router.add_put(scale, functools.partial(write_scale, res=res))


async def _get_collection(request: web.Request, res: Resource) -> web.StreamResponse:
    store = request.app[STORE]
    namespace = request.match_info.get("namespace")
    labels, fields = request.query.get("labelSelector"), request.query.get("fieldSelector")
    if _flag(request, "watch"):
        return await _watch(request, res, namespace, labels, fields)
    parse_revision(request.query.get("resourceVersion"))  # validated; lists are always current
    items, revision = store.list(res, namespace, labels, fields)
    version = kube_table.wanted(request.headers.get("Accept", ""))
    if version is not None:  # kubectl get: the server prints
        include = request.query.get("includeObject", "Metadata")
        return web.json_response(kube_table.table(res, items, version, revision, include))
    body = {
        "apiVersion": res.api_version,
        "kind": res.list_kind,
        "metadata": {"resourceVersion": str(revision)},
        "items": items,
    }
    return web.json_response(body)


async def _get_item(request: web.Request, res: Resource) -> web.StreamResponse:
    name = request.match_info["name"]
    namespace = request.match_info.get("namespace")
    if _flag(request, "watch"):  # the old single-object watch form
        return await _watch(request, res, namespace, None, f"metadata.name={name}")
    obj = request.app[STORE].get(res, namespace, name)
    version = kube_table.wanted(request.headers.get("Accept", ""))
    if version is not None:
        include = request.query.get("includeObject", "Metadata")
        return web.json_response(kube_table.table(res, [obj], version, None, include))
    return web.json_response(obj)


async def _delete_item(request: web.Request, res: Resource) -> web.StreamResponse:
    action = getattr(request.app[ACTIONS], f"delete_{res.singular}", None)
    if "delete" not in res.verbs or action is None:
        raise ApiError(405, f"{res.full_name} cannot be deleted through the lab API")
    if request.can_read_body:  # DeleteOptions (kubectl sends one): must be a JSON object
        try:
            options = json.loads(await request.read() or b"{}")
        except ValueError as exc:
            raise ApiError(400, f"request body is not valid JSON: {exc}") from None
        if not isinstance(options, dict):
            raise ApiError(400, "request body must be a DeleteOptions object")
    name = request.match_info["name"]
    namespace = request.match_info.get("namespace")
    request.app[STORE].get(res, namespace, name)  # 404 before asking the lab
    return web.json_response(await action(namespace, name))


# -- watch -----------------------------------------------------------------------


def _line(type_: str, object_json: str) -> bytes:
    return f'{{"type":"{type_}","object":{object_json}}}\n'.encode()


def _bookmark(res: Resource, revision: int, initial_end: bool = False) -> bytes:
    meta: dict = {"resourceVersion": str(revision)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    obj = {"kind": res.kind, "apiVersion": res.api_version, "metadata": meta}
    return _line("BOOKMARK", json.dumps(obj))


async def _watch(request, res, namespace, labels, fields) -> web.StreamResponse:
    """Stream events as JSON lines until timeoutSeconds, client disconnect or server shutdown."""
    timeout = _int(request, "timeoutSeconds")
    bookmarks = _flag(request, "allowWatchBookmarks")
    initial_end = _flag(request, "sendInitialEvents")
    rv = request.query.get("resourceVersion")
    if initial_end:  # WatchList: current state as ADDED, then a bookmark marking its end
        rv = None
    try:
        watch = request.app[STORE].watch(res, namespace, rv, labels, fields, copy_objects=False)
    except ApiError as exc:
        if exc.status != 410:
            raise
        # as kube-apiserver answers it: the watch is made, and its one event says 410 Gone
        gone = web.StreamResponse(headers={"Content-Type": "application/json"})
        await gone.prepare(request)
        body = json.dumps(status(410, str(exc), "Expired"))
        await gone.write(_line("ERROR", body))
        await gone.write_eof()
        return gone
    version = kube_table.wanted(request.headers.get("Accept", ""))
    first = [True]

    def encode(event) -> bytes:
        if version is None:
            return _line(event.type, event.object_json())
        obj_json = kube_table.event_object_json(res, event.object_json(), version, first[0])
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
        data = b"".join(encode(e) for e in watch.take_initial())
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
            if batch is None or _gone(request):
                break
            if batch:
                await response.write(b"".join(encode(e) for e in batch))
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


# -- logs ------------------------------------------------------------------------


def _tail_offset(path: Path, lines: int) -> int:
    """Byte offset where the last `lines` lines of the file start."""
    try:
        with path.open("rb") as f:
            end = f.seek(0, os.SEEK_END)
            if lines == 0:
                return end
            pos, found, block = end, 0, 8192
            while pos > 0:
                start = max(0, pos - block)
                f.seek(start)
                chunk = f.read(pos - start)
                if start + len(chunk) == end and chunk.endswith(b"\n"):
                    chunk = chunk[:-1]  # the final newline does not start a line
                for i in range(len(chunk) - 1, -1, -1):
                    if chunk[i] == 0x0A:
                        found += 1
                        if found == lines:
                            return start + i + 1
                pos = start
            return 0
    except FileNotFoundError:
        return 0


def _log_since(request: web.Request) -> int | None:
    """`sinceSeconds` or `sinceTime` as nanoseconds since the epoch (None: all)."""
    seconds, since_time = _int(request, "sinceSeconds"), request.query.get("sinceTime")
    if seconds is not None and since_time:
        raise ApiError(400, "at most one of sinceTime or sinceSeconds may be specified")
    if seconds is not None:
        if seconds == 0:
            raise ApiError(400, "invalid sinceSeconds=0: must be greater than 0")
        return time.time_ns() - seconds * 1_000_000_000
    if since_time:
        try:
            return crilog.parse_time(since_time)
        except ValueError as exc:
            raise ApiError(400, f"invalid sinceTime: {exc}") from None
    return None


async def _get_log(request: web.Request) -> web.StreamResponse:
    """GET .../pods/NAME/log: the container's output as it wrote it (the records of its
    CRI log file), with kubelet's query: container, follow, tailLines (counted in
    records), sinceSeconds or sinceTime, timestamps (each line prefixed with its time)."""
    store = request.app[STORE]
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    follow = _flag(request, "follow")
    tail = _int(request, "tailLines")
    reader = crilog.Reader(timestamps=_flag(request, "timestamps"), since=_log_since(request))
    uid = store.get("pods", namespace, name)["metadata"]["uid"]
    path = Path(request.app[ACTIONS].log_path(namespace, name, request.query.get("container")))
    position = _tail_offset(path, tail) if tail is not None else 0
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    response.enable_chunked_encoding()
    closed = asyncio.Event()
    request.app[STREAMS].add(closed.set)
    if request.app[CLOSING].is_set():
        closed.set()
    try:
        await response.prepare(request)
        await response.write(b"")
        while True:
            last = not follow or _gone(request) or not _same_pod(store, namespace, name, uid)
            try:
                with path.open("rb") as f:
                    if f.seek(0, os.SEEK_END) < position:
                        position = 0  # truncated: start over
                    f.seek(position)
                    while chunk := f.read(65536):
                        # whole records only; a last piece without newline waits, unless
                        # this is the last read (a file not written by the lab's writer)
                        end = len(chunk) if last and len(chunk) < 65536 else chunk.rfind(b"\n") + 1
                        if end == 0:
                            if len(chunk) < 65536:
                                break
                            end = len(chunk)  # one record longer than a read: send it as is
                        position += end
                        out = b"".join(reader.render(line) for line in _lines(chunk[:end]))
                        if out:
                            await response.write(out)
                        f.seek(position)
            except FileNotFoundError:
                pass
            if last:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closed.wait(), LOG_POLL)
            if closed.is_set():
                break
        await response.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        request.app[STREAMS].discard(closed.set)
    return response


def _lines(data: bytes) -> list[bytes]:
    """Split at newlines only (a record may hold a carriage return), keeping them."""
    lines = [line + b"\n" for line in data.split(b"\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def _same_pod(store: Store, namespace: str, name: str, uid: str) -> bool:
    try:
        return store.get("pods", namespace, name)["metadata"]["uid"] == uid
    except ApiError:
        return False


# -- netlab's own endpoints --------------------------------------------------------


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
    evicted = await action(name, verb, _flag(request, "force"))
    return web.json_response(
        {"kind": "NodeActionResult", "node": name, "action": verb, "evicted": evicted}
    )


async def _topology(request: web.Request) -> web.Response:
    return web.json_response(request.app[ACTIONS].topology())


async def _on_shutdown(app: web.Application) -> None:
    app[CLOSING].set()
    for close in list(app[STREAMS]):
        close()


def make_app(store: Store, actions: Actions, middlewares: Sequence = ()) -> web.Application:
    """The lab API application over `store`, calling `actions` for deletes, logs and shutdown.
    `middlewares` run first (the TLS endpoint's authentication)."""
    app = web.Application(middlewares=[*middlewares, _errors])
    app[STORE], app[ACTIONS] = store, actions
    app[STREAMS], app[TASKS], app[CLOSING] = set(), set(), asyncio.Event()
    _add_discovery(app, store)
    for res in store.resources:
        _add_resource(app, res)
    entry = getattr(actions, "exec_entry", None)
    if entry is not None:  # kubectl exec (WebSocket); POST: SPDY, refused with a reason
        handler = api_exec.make_handler(entry)
        app.router.add_get("/api/v1/namespaces/{namespace}/pods/{name}/exec", handler)
        app.router.add_post("/api/v1/namespaces/{namespace}/pods/{name}/exec", handler)
    app.router.add_post("/netlab/v1/shutdown", _shutdown)
    app.router.add_post("/netlab/v1/apply", _apply)
    app.router.add_post("/netlab/v1/nodes/{name}/{action}", _node_action)
    app.router.add_get("/netlab/v1/topology", _topology)
    app.on_shutdown.append(_on_shutdown)
    return app


async def serve(
    app: web.Application,
    socket_path: str | os.PathLike,
    tls: tuple[str, int, ssl.SSLContext] | None = None,
) -> web.AppRunner:
    """Serve `app` on a unix socket (mode 0600; parent made 0700; a stale socket replaced),
    and with `tls` (host, port, context) also on that TCP port.

    Returns the started runner; stop with `await runner.cleanup()`. ApiError 409 if another
    server is live on the socket or the path is not a socket.
    """
    path = Path(socket_path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if not path.is_socket():
            raise ApiError(409, f"{path} exists and is not a socket; not replacing it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:  # nobody listening: a stale socket from an earlier run
            path.unlink()
        else:
            raise ApiError(409, f"a lab API is already serving on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
    except OSError:
        sock.close()
        raise
    app.on_cleanup.append(functools.partial(_remove_socket, path=path))
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        if tls is not None:
            host, port, context = tls
            try:
                await web.TCPSite(
                    runner, host, port, ssl_context=context, reuse_address=True
                ).start()
            except OSError as exc:
                raise ApiError(
                    409,
                    f"cannot serve the lab API on {host}:{port} ({exc.strerror}); "
                    f"remove {Path(socket_path).parent / 'api.port'} to have another port chosen",
                ) from exc
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def _remove_socket(_app: web.Application, path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_socket():
            path.unlink()
