"""Watchers of the lab API: the list+watch contract every server of the lab uses.

`labdns` (the DNS server) and `mesh` (the sidecars) are pods of the lab that
follow the lab's objects the way client-go informers follow the Kubernetes
API: a `Reflector` per resource lists (and remembers the resourceVersion),
then watches from it with bookmarks; a watch that ends is resumed from the
last version seen; a 410 (HTTP status or ERROR event) means the history is
gone, so it lists again. Every batch of events calls `on_change()` once; the
caller coalesces its rebuilds. `FileSource` serves the same objects from a
JSON file, for running a server without a lab.

No netlab imports: only aiohttp and the standard library.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path

import aiohttp

log = logging.getLogger("labwatch")

WATCH_TIMEOUT = 300  # seconds; the server ends the watch then and we resume it
BACKOFF_MAX = 2.0


class SourceError(Exception):
    """The objects could not be loaded (bad file, API unreachable or answering nonsense)."""


class Gone(SourceError):
    """HTTP 410 / ERROR 410: the watch's resourceVersion is too old; relist."""


class Objects:
    """The current objects, by resource and (namespace, name).

    `resources` maps a resource's key (its plural) to its kind, e.g.
    {"services": "Service"}: the kind sorts a file's mixed list."""

    def __init__(self, resources: Mapping[str, str]) -> None:
        self.kinds = dict(resources)
        self.items: dict[str, dict[tuple[str, str], dict]] = {r: {} for r in self.kinds}

    @staticmethod
    def key(obj: dict) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        return str(meta.get("namespace") or "default"), str(meta.get("name") or "")

    def replace(self, resource: str, items: Iterable) -> None:
        self.items[resource] = {self.key(o): o for o in items if isinstance(o, dict)}

    def apply(self, resource: str, event_type: str, obj: dict) -> None:
        if event_type in ("ADDED", "MODIFIED"):
            self.items[resource][self.key(obj)] = obj
        elif event_type == "DELETED":
            self.items[resource].pop(self.key(obj), None)

    def list(self, resource: str) -> list[dict]:
        return list(self.items[resource].values())


class FileSource:
    """`{"items": [objects...]}` from a file, reloaded when the file changes.
    `split(items)` sorts the file's objects into {resource: [objects]}."""

    def __init__(
        self,
        path: str,
        objects: Objects,
        on_change: Callable[[], None],
        split: Callable[[list], Mapping[str, list]],
        poll: float = 0.5,
    ):
        self.path, self.objects, self.on_change = Path(path), objects, on_change
        self.split, self.poll = split, poll
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
        by_resource = self.split(items)
        for resource in self.objects.kinds:
            self.objects.replace(resource, by_resource.get(resource, ()))
        self._stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    async def start(self) -> None:
        self.load()

    async def run(self) -> None:
        """Reload when the file's mtime, size or inode changes; keep the old objects on errors."""
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
                log.warning("keeping the old objects: %s", exc)
                self._stamp = (st.st_mtime_ns, st.st_size, st.st_ino)  # until it changes again
                continue
            self.on_change()

    async def close(self) -> None:
        pass


def split_by_kind(resources: Mapping[str, str]) -> Callable[[list], dict[str, list]]:
    """A FileSource `split` that sorts objects by their `kind`."""
    by_kind = {kind: resource for resource, kind in resources.items()}

    def split(items: list) -> dict[str, list]:
        out: dict[str, list] = {r: [] for r in resources}
        for obj in items:
            if isinstance(obj, dict) and obj.get("kind") in by_kind:
                out[by_kind[obj["kind"]]].append(obj)
        return out

    return split


class ApiSource:
    """List+watch of several resources over the lab API's unix socket.

    `paths` maps each resource key of `objects` to its collection path,
    e.g. {"services": "/api/v1/services"}."""

    def __init__(
        self,
        socket_path: str,
        objects: Objects,
        on_change: Callable[[], None],
        paths: Mapping[str, str],
    ):
        self.socket_path, self.objects, self.on_change = socket_path, objects, on_change
        self.paths = dict(paths)
        self._session: aiohttp.ClientSession | None = None
        self._versions: dict[str, str] = {}
        self._seeded: set[str] = set()
        self.events = 0  # watch events received, and their bytes (for stats)
        self.event_bytes = 0
        self.lists = 0
        self.revision = 0  # the highest resourceVersion seen (lists and events)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.UnixConnector(path=self.socket_path)
            timeout = aiohttp.ClientTimeout(total=None, connect=5, sock_read=None)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=timeout, base_url="http://lab"
            )
        return self._session

    def seed(self, snapshot: Mapping[str, object]) -> None:
        """Take lists made elsewhere (a `fetch_lists` result: a fork's parent lists
        once for many children) instead of listing; watches start from their versions."""
        for resource, doc in snapshot.items():
            if resource in self.paths:
                self._accept(resource, doc)
                self._seeded.add(resource)

    async def start(self) -> None:
        """The initial lists (of what `seed` did not give); retried until all succeed
        (the API may still be starting)."""
        delay = 0.05
        while True:
            try:
                for resource in self.paths:
                    if resource not in self._seeded:
                        await self._list(resource)
                return
            except (SourceError, aiohttp.ClientError, OSError, ValueError) as exc:
                log.warning("initial list failed (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    async def run(self) -> None:
        """Watch every resource until cancelled."""
        async with asyncio.TaskGroup() as group:
            for resource in self.paths:
                group.create_task(self._reflect(resource))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _seen(self, resource: str, version: object) -> None:
        if version:
            self._versions[resource] = str(version)
            if str(version).isdigit():
                self.revision = max(self.revision, int(str(version)))

    async def _list(self, resource: str) -> None:
        path = self.paths[resource]
        async with self._client().get(path) as resp:
            if resp.status != 200:
                raise SourceError(f"GET {path}: HTTP {resp.status}")
            doc = await resp.json(content_type=None)
        self.lists += 1
        self._accept(resource, doc)

    def _accept(self, resource: str, doc: object) -> None:
        if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
            raise SourceError(f"GET {self.paths[resource]}: not a list")
        self.objects.replace(resource, doc["items"])
        self._seen(resource, (doc.get("metadata") or {}).get("resourceVersion"))

    async def _reflect(self, resource: str) -> None:
        delay = 0.05
        while True:
            try:
                await self._watch(resource)
                delay = 0.05
                continue  # the watch ended normally: resume from the last version
            except Gone:
                log.info("%s: watch expired (410); listing again", resource)
            except Exception as exc:  # keep serving the last objects, retry
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
        path = self.paths[resource]
        async with self._client().get(path, params=params) as resp:
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
        self.events += len(lines)
        for line in lines:
            self.event_bytes += len(line)
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
            self._seen(resource, (obj.get("metadata") or {}).get("resourceVersion"))
            if etype in ("ADDED", "MODIFIED", "DELETED"):
                self.objects.apply(resource, etype, obj)
                changed = True
        return changed


async def serve_synced(
    source: ApiSource | FileSource,
    stop: asyncio.Event,
    synced: Callable[[], Awaitable[None]],
) -> int:
    """A watcher's life: the first sync (unless `stop` comes first: 0), then
    `synced()` (build from it, start serving), then watch until `stop`; 1 if the
    source failed. The watch is cancelled on the way out; closing the source and
    whatever `synced` started is the caller's."""
    starting = asyncio.ensure_future(source.start())
    waiting = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        return 0  # stopped before the first sync
    waiting.cancel()
    starting.result()  # a source that cannot start raises here
    await synced()
    watcher = asyncio.ensure_future(source.run())
    watcher.add_done_callback(lambda _: stop.set())  # a source that ends has failed
    try:
        await stop.wait()
        if watcher.done() and not watcher.cancelled() and watcher.exception():
            log.error("source failed: %s", watcher.exception())
            return 1
        return 0
    finally:
        watcher.cancel()
        with contextlib.suppress(BaseException):
            await watcher


def fetch_lists(socket_path: str, paths: Mapping[str, str], timeout: float = 5.0) -> dict:
    """The lists of `paths` over the unix socket, blocking (for a process without
    an event loop, such as a fork server); {resource: list document}."""
    out = {}
    conn = _UnixHTTPConnection(socket_path, timeout)
    try:
        for resource, path in paths.items():
            conn.request("GET", path, headers={"Host": "lab"})
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise SourceError(f"GET {path}: HTTP {resp.status}")
            try:
                out[resource] = json.loads(body)
            except ValueError as exc:
                raise SourceError(f"GET {path}: {exc}") from None
    finally:
        conn.close()
    return out


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("lab", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock
