"""A small synchronous client of the lab API over its unix socket (stdlib only), for the CLI."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

from netlab.errors import ApiError, LabNotFound
from netlab.resources import DEFAULT_TABLE, ResourceTable
from netlab.unixhttp import UnixHTTPConnection  # noqa: F401 (importers find it here too)


@dataclass(frozen=True)
class LabView:
    """The lab at one moment: its topology and its pods, Services and Endpoints."""

    topology: dict
    pods: list[dict]
    services: list[dict]
    endpoints: list[dict]


class LabClient:
    """Talks to a running lab's API; raises `LabNotFound` if no lab serves `socket_path`."""

    def __init__(
        self,
        socket_path: str | os.PathLike,
        timeout: float = 30.0,
        resources: ResourceTable = DEFAULT_TABLE,
    ):
        self.socket_path = os.fspath(socket_path)
        self.timeout = timeout
        self.resources = resources

    # -- resources -------------------------------------------------------------

    def get(self, resource: str, name: str, namespace: str | None = None) -> dict:
        """One object; namespaced resources default to namespace `default`."""
        res = self.resources.resolve(resource)
        return self._json("GET", res.path(namespace or "default", name))

    def list(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        all_namespaces: bool = False,
        field_selector: str | None = None,
    ) -> dict:
        """The `<Kind>List` (items and `metadata.resourceVersion`); namespace defaults to `default`."""
        res = self.resources.resolve(resource)
        ns = None if all_namespaces else (namespace or "default")
        query = {"labelSelector": label_selector, "fieldSelector": field_selector}
        return self._json("GET", res.path(ns), query)

    def get_path(self, path: str, query: dict | None = None) -> dict:
        """GET any API path (an API outside the resource table, e.g. metrics.k8s.io)."""
        return self._json("GET", path, query)

    def delete(self, resource: str, name: str, namespace: str | None) -> dict:
        """Delete one object through the lab; returns what the lab deleted."""
        res = self.resources.resolve(resource)
        return self._json("DELETE", res.path(namespace or "default", name))

    def patch(
        self,
        resource: str,
        name: str,
        patch: dict | list,
        namespace: str | None = None,
        patch_type: str = "application/merge-patch+json",
        subresource: str | None = None,
    ) -> dict:
        """PATCH one object (or its `scale` subresource); returns the stored result."""
        res = self.resources.resolve(resource)
        path = res.path(namespace or "default", name)
        if subresource:
            path += f"/{subresource}"
        return self._json("PATCH", path, body=json.dumps(patch).encode(), content_type=patch_type)

    def watch(
        self,
        resource: str,
        namespace: str | None = None,
        resource_version: str | None = None,
        timeout: float | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Iterator[dict]:
        """Watch events `{"type", "object"}` (all namespaces if `namespace` is None).

        Without `resource_version` the current objects come first as ADDED. Ends after
        `timeout` seconds (server side) or when the lab stops; an ERROR event (e.g. 410
        Expired: relist, then watch again) raises ApiError.
        """
        res = self.resources.resolve(resource)
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": None if timeout is None else str(max(1, round(timeout))),
            "labelSelector": label_selector,
            "fieldSelector": field_selector,
        }
        read_timeout = None if timeout is None else timeout + self.timeout
        conn, response = self._open("GET", res.path(namespace), query, read_timeout)
        try:
            while line := self._guard(response.readline):
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    obj = event.get("object") or {}
                    raise ApiError(obj.get("code", 500), obj.get("message", "watch failed"))
                yield event
        finally:
            conn.close()

    def logs(
        self,
        namespace: str,
        pod: str,
        container: str | None = None,
        follow: bool = False,
        tail: int | None = None,
        since_seconds: int | None = None,
        since_time: str | datetime | None = None,
        timestamps: bool = False,
    ) -> LogStream:
        """A container's log as chunks of bytes; with `follow`, until the pod is deleted.

        `since_seconds` / `since_time` (RFC3339 text or an aware datetime) leave out older
        lines; `timestamps` prefixes each line with its RFC3339Nano time and a space.
        The stream can be closed from another thread (it then just ends)."""
        if isinstance(since_time, datetime):
            since_time = since_time.astimezone(UTC).isoformat().replace("+00:00", "Z")
        query = {
            "container": container,
            "follow": "true" if follow else None,
            "tailLines": None if tail is None else str(tail),
            "sinceSeconds": None if since_seconds is None else str(since_seconds),
            "sinceTime": since_time,
            "timestamps": "true" if timestamps else None,
        }
        path = self.resources.resolve("pods").path(namespace, pod) + "/log"
        conn, response = self._open("GET", path, query, None if follow else self.timeout)
        return LogStream(conn, response, self._guard)

    # -- the lab ---------------------------------------------------------------

    def shutdown(self, leave: bool = False) -> None:
        """Ask the lab to shut down (it answers at once and tears down afterwards);
        `leave`: only its supervisor ends, the lab runs on (`netlab up --adopt`)."""
        self._json("POST", "/netlab/v1/shutdown", {"leave": "true"} if leave else None)

    def apply(self, text: str) -> list[dict]:
        """Send a YAML stream of manifests; what the lab did with each object."""
        return self._json("POST", "/netlab/v1/apply", body=text.encode())["items"]

    def node_action(self, name: str, action: str, force: bool = False) -> dict:
        """fail, recover, cordon, uncordon or drain a node."""
        query = {"force": "true"} if force else None
        return self._json("POST", f"/netlab/v1/nodes/{name}/{action}", query, body=b"")

    def topology(self) -> dict:
        """Racks, routers and nodes with their namespaces and interfaces."""
        return self._json("GET", "/netlab/v1/topology")

    def view(self, namespace: str | None = None, all_namespaces: bool = False) -> LabView:
        """What capture and draw name and draw: topology, pods, services, endpoints."""

        def items(resource: str) -> list[dict]:
            listing = self.list(resource, namespace, all_namespaces=all_namespaces)
            return listing.get("items") or []

        return LabView(self.topology(), items("pods"), items("services"), items("endpoints"))

    def healthz(self) -> bool:
        """True if a lab answers on the socket."""
        try:
            conn, response = self._open("GET", "/healthz", None, self.timeout)
        except (LabNotFound, ApiError):
            return False
        try:
            return response.read().strip() == b"ok"
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    # -- plumbing --------------------------------------------------------------

    def _json(
        self,
        method: str,
        path: str,
        query: dict | None = None,
        body: bytes | None = None,
        content_type: str = "application/yaml",
    ) -> dict:
        conn, response = self._open(method, path, query, self.timeout, body, content_type)
        try:
            body = self._guard(response.read)
        finally:
            conn.close()
        try:
            return json.loads(body)
        except ValueError:
            raise ApiError(502, f"the lab API sent a malformed answer to {method} {path}") from None

    def _open(
        self,
        method: str,
        path: str,
        query: dict | None,
        timeout: float | None,
        body: bytes | None = None,
        content_type: str = "application/yaml",
    ) -> tuple[UnixHTTPConnection, http.client.HTTPResponse]:
        """Send a request; return the open connection and a successful response, or raise."""
        url = quote(path)
        params = {k: v for k, v in (query or {}).items() if v is not None}
        if params:
            url += "?" + urlencode(params)
        conn = UnixHTTPConnection(self.socket_path, timeout)
        try:
            try:
                headers = {"Accept": "application/json"}
                if body is not None:
                    headers["Content-Type"] = content_type
                conn.request(method, url, body=body, headers=headers)
            except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as exc:
                raise LabNotFound(
                    f"no lab is running (nothing answers on {self.socket_path}): "
                    "start the lab with `netlab up`"
                ) from exc
            except PermissionError as exc:
                raise ApiError(
                    403,
                    f"permission denied on {self.socket_path}: the lab API is only "
                    "for the user who started the lab (try sudo)",
                ) from exc
            response = self._guard(conn.getresponse)
            if response.status >= 400:
                raise self._error(response)
        except BaseException:
            conn.close()
            raise
        return conn, response

    def _error(self, response: http.client.HTTPResponse) -> ApiError:
        body = self._guard(response.read)
        try:
            obj = json.loads(body)
            message = obj["message"]
        except (ValueError, KeyError, TypeError):
            message = body.decode("utf-8", "replace").strip() or response.reason
        return ApiError(response.status, message)

    def _guard(self, call):
        """Run a socket read, turning a lost connection into `LabNotFound`."""
        try:
            return call()
        except TimeoutError as exc:
            raise ApiError(504, f"the lab API at {self.socket_path} did not answer") from exc
        except (ConnectionError, http.client.HTTPException) as exc:
            raise LabNotFound(
                f"lost the connection to the lab API at {self.socket_path} ({exc}); "
                "is the lab still running? (`netlab up`)"
            ) from exc


class LogStream:
    """The body of a log request as an iterator of byte chunks; `close()` (from any
    thread) ends it, and so does its end of file."""

    def __init__(self, conn: UnixHTTPConnection, response: http.client.HTTPResponse, guard):
        self.conn, self.response, self.guard = conn, response, guard
        self.closed = False

    def __iter__(self) -> LogStream:
        return self

    def __next__(self) -> bytes:
        if self.closed:
            raise StopIteration
        try:
            chunk = self.guard(lambda: self.response.read1(65536))
        except Exception:
            if self.closed:  # closed by another thread: just the end
                raise StopIteration from None
            self.close()
            raise
        if not chunk:
            self.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        self.closed = True
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a read blocked in another thread
        self.conn.close()

    def __enter__(self) -> LogStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
