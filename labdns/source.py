"""Where the Services, Endpoints and Pods come from: a JSON file, or the lab API.

The API source is a small client-go reflector per resource: list (remember
the resourceVersion), then watch from it with bookmarks; a watch that ends is
resumed from the last version seen; a 410 (HTTP status or ERROR event) means
the history is gone, so list again. Every batch of events read calls
`on_change()` once; the caller coalesces rebuilds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import aiohttp

from labdns.records import split_objects

log = logging.getLogger("labdns")

RESOURCES = {"services": "Service", "endpoints": "Endpoints", "pods": "Pod"}
WATCH_TIMEOUT = 300  # seconds; the server ends the watch then and we resume it
BACKOFF_MAX = 2.0


class SourceError(Exception):
    """The objects could not be loaded (bad file, API unreachable or answering nonsense)."""


class Gone(SourceError):
    """HTTP 410 / ERROR 410: the watch's resourceVersion is too old; relist."""


class Objects:
    """The current objects, by resource and (namespace, name)."""

    def __init__(self) -> None:
        self.items: dict[str, dict[tuple[str, str], dict]] = {r: {} for r in RESOURCES}

    @staticmethod
    def key(obj: dict) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        return str(meta.get("namespace") or "default"), str(meta.get("name") or "")

    def replace(self, resource: str, items: list) -> None:
        self.items[resource] = {self.key(o): o for o in items if isinstance(o, dict)}

    def apply(self, resource: str, event_type: str, obj: dict) -> None:
        if event_type in ("ADDED", "MODIFIED"):
            self.items[resource][self.key(obj)] = obj
        elif event_type == "DELETED":
            self.items[resource].pop(self.key(obj), None)

    def lists(self) -> tuple[list[dict], list[dict], list[dict]]:
        """(services, endpoints, pods)."""
        return tuple(list(self.items[r].values()) for r in RESOURCES)  # type: ignore[return-value]


class FileSource:
    """`{"items": [objects...]}` from a file; reloaded when the file changes."""

    def __init__(
        self, path: str, objects: Objects, on_change: Callable[[], None], poll: float = 0.5
    ):
        self.path, self.objects, self.on_change, self.poll = Path(path), objects, on_change, poll
        self._stamp: tuple | None = None

    def load(self) -> None:
        """Read the file into `objects` (SourceError if unreadable or not the right shape)."""
        try:
            stat = self.path.stat()
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise SourceError(f"{self.path}: {exc}") from exc
        items = doc.get("items") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            raise SourceError(f'{self.path}: want {{"items": [objects...]}}')
        for resource, objs in zip(RESOURCES, split_objects(items), strict=True):
            self.objects.replace(resource, objs)
        self._stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    async def start(self) -> None:
        self.load()

    async def run(self) -> None:
        """Reload when the file's mtime, size or inode changes; keep the old table on errors."""
        while True:
            await asyncio.sleep(self.poll)
            try:
                st = self.path.stat()
            except OSError:
                continue
            if (st.st_mtime_ns, st.st_size, st.st_ino) == self._stamp:
                continue
            try:
                self.load()
            except SourceError as exc:
                log.warning("keeping the old records: %s", exc)
                self._stamp = (st.st_mtime_ns, st.st_size, st.st_ino)  # until it changes again
                continue
            self.on_change()

    async def close(self) -> None:
        pass


class ApiSource:
    """List+watch of services, endpoints and pods over the lab API's unix socket."""

    def __init__(self, socket_path: str, objects: Objects, on_change: Callable[[], None]):
        self.socket_path, self.objects, self.on_change = socket_path, objects, on_change
        self._session: aiohttp.ClientSession | None = None
        self._versions: dict[str, str] = {}

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.UnixConnector(path=self.socket_path)
            timeout = aiohttp.ClientTimeout(total=None, connect=5, sock_read=None)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=timeout, base_url="http://lab"
            )
        return self._session

    async def start(self) -> None:
        """The initial lists; retried until all three succeed (the API may still be starting)."""
        delay = 0.05
        while True:
            try:
                for resource in RESOURCES:
                    await self._list(resource)
                return
            except (SourceError, aiohttp.ClientError, OSError, ValueError) as exc:
                log.warning("initial list failed (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    async def run(self) -> None:
        """Watch all three resources until cancelled."""
        async with asyncio.TaskGroup() as group:
            for resource in RESOURCES:
                group.create_task(self._reflect(resource))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _list(self, resource: str) -> None:
        async with self._client().get(f"/api/v1/{resource}") as resp:
            if resp.status != 200:
                raise SourceError(f"GET /api/v1/{resource}: HTTP {resp.status}")
            doc = await resp.json(content_type=None)
        if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
            raise SourceError(f"GET /api/v1/{resource}: not a list")
        self.objects.replace(resource, doc["items"])
        self._versions[resource] = str((doc.get("metadata") or {}).get("resourceVersion") or "")

    async def _reflect(self, resource: str) -> None:
        delay = 0.05
        while True:
            try:
                await self._watch(resource)
                delay = 0.05
                continue  # the watch ended normally: resume from the last version
            except Gone:
                log.info("%s: watch expired (410); listing again", resource)
            except Exception as exc:  # keep serving the last table, retry
                log.warning("%s: watch failed (%s); listing again in %.1f s", resource, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            try:
                await self._list(resource)
                self.on_change()
            except Exception as exc:
                log.warning("%s: list failed (%s)", resource, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    async def _watch(self, resource: str) -> None:
        params = {
            "watch": "1",
            "resourceVersion": self._versions.get(resource, ""),
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_TIMEOUT),
        }
        async with self._client().get(f"/api/v1/{resource}", params=params) as resp:
            if resp.status == 410:
                raise Gone(f"{resource}: HTTP 410")
            if resp.status != 200:
                raise SourceError(f"watch {resource}: HTTP {resp.status}")
            pending = b""
            async for chunk in resp.content.iter_any():
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                if self._apply(resource, [line for line in lines if line.strip()]):
                    self.on_change()

    def _apply(self, resource: str, lines: list[bytes]) -> bool:
        """Apply watch events; True if the objects changed."""
        changed = False
        for line in lines:
            event = json.loads(line)
            if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
                raise SourceError(f"{resource}: not a watch event: {line[:80]!r}")
            etype, obj = event.get("type"), event["object"]
            if etype == "ERROR":
                if obj.get("code") == 410:
                    raise Gone(f"{resource}: {obj.get('message', 'expired')}")
                raise SourceError(
                    f"{resource}: watch error {obj.get('code')}: {obj.get('message')}"
                )
            version = (obj.get("metadata") or {}).get("resourceVersion")
            if version:
                self._versions[resource] = str(version)
            if etype in ("ADDED", "MODIFIED", "DELETED"):
                self.objects.apply(resource, etype, obj)
                changed = True
        return changed


def make_source(
    objects: Objects,
    on_change: Callable[[], None],
    api_socket: str | None = None,
    records: str | None = None,
) -> FileSource | ApiSource:
    """The source the CLI asked for (exactly one of the two)."""
    if (api_socket is None) == (records is None):
        raise SourceError("give exactly one of --api-socket and --records")
    if api_socket is not None:
        return ApiSource(os.fspath(api_socket), objects, on_change)
    return FileSource(os.fspath(records), objects, on_change)
