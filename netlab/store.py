"""The lab's versioned object store: Kubernetes-shaped dicts, one revision counter, watches.

Writers may be any thread; watchers live on an asyncio loop. Stored dicts are never
mutated in place (a write stores a new dict), so the event rings share them; callers
always get deep copies. Watches read their resource's ring by revision, so a watcher
that falls further behind than the ring reaches gets `410 Expired` and relists.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import itertools
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

from netlab.errors import ApiError
from netlab.journal import Journal
from netlab.resources import (
    DEFAULT_TABLE,
    FieldSelector,
    LabelSelector,
    Resource,
    ResourceTable,
    Selection,
)

log = logging.getLogger(__name__)
ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"
_MANAGED = ("uid", "creationTimestamp", "resourceVersion", "generation")
STATUSLESS = (
    "Endpoints",
    "Event",
    "Lease",
    "EndpointSlice",
    "ConfigMap",
    "Secret",
    "StorageClass",
    "ControllerRevision",
)
"""Kinds Kubernetes defines without a `status`: the store gives them none."""


class Event:
    """One write: its revision, type, resource and the stored object (shared: never mutate)."""

    __slots__ = ("revision", "type", "resource", "object", "old", "_json")

    def __init__(self, revision: int, type: str, resource: Resource, obj: dict, old: dict | None):
        self.revision, self.type, self.resource = revision, type, resource
        self.object, self.old = obj, old
        self._json: str | None = None

    def __repr__(self) -> str:
        meta = self.object["metadata"]
        return f"Event({self.revision}, {self.type}, {self.resource.plural}/{meta['name']})"

    def object_json(self) -> str:
        """The object as JSON, computed once per event and shared by all watchers."""
        if self._json is None:
            self._json = json.dumps(self.object, separators=(",", ":"))
        return self._json


def conflict(message: str, reason: str) -> ApiError:
    err = ApiError(409, message)
    err.reason = reason  # type: ignore[attr-defined]  # read by the API's Status
    return err


def stale(full_name: str, name: str) -> ApiError:
    """409 for a write made against an older resourceVersion, in kube-apiserver's words."""
    return conflict(
        f'Operation cannot be fulfilled on {full_name} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        "Conflict",
    )


def expired(revision: int, oldest: int) -> ApiError:
    """The Kubernetes `410 Expired` error for a watch or list from a compacted revision."""
    err = ApiError(410, f"too old resource version: {revision} ({oldest})")
    err.reason = "Expired"  # type: ignore[attr-defined]
    return err


def merge_patch(target: dict, patch: dict) -> dict:
    """RFC 7386 JSON merge patch: nested dicts merge, `None` deletes, anything else replaces."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_revision(value: str | int | None) -> int | None:
    """A resourceVersion as an int; None for unset, "" or "0" ("any"); 400 if malformed."""
    if value is None or value == "" or value == "0" or value == 0:
        return None
    try:
        rev = int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"invalid resourceVersion {value!r}: must be an integer") from None
    if rev < 0:
        raise ApiError(400, f"invalid resourceVersion {value!r}: must not be negative")
    return rev


class Store:
    """Thread-safe versioned store of Kubernetes-shaped objects with a bounded event ring."""

    def __init__(
        self,
        resources: ResourceTable = DEFAULT_TABLE,
        history: int = 10_000,
        clock: Callable[[], float] = time.time,
    ):
        self.resources = resources
        self._clock = clock
        self._lock = threading.Lock()  # guards the data below; held briefly
        self._write_lock = threading.RLock()  # serializes writes and their notifications
        self._revision = 1
        self._objects: dict[str, dict[tuple[str, str], dict]] = {r.full_name: {} for r in resources}
        # one ring per resource (like the apiserver's watch cache), so quiet watchers of one
        # resource never expire because of churn in another
        if history < 1:
            raise ValueError("history must keep at least one event")
        self._events: dict[str, deque[Event]] = {
            r.full_name: deque(maxlen=history) for r in resources
        }
        self._compacted = {r.full_name: 0 for r in resources}  # last revision dropped
        self._watches: set[Watch] = set()
        # when a write last ran into trouble with the backend (an etcd member that did
        # not answer, no leader): the node lifecycle controller does not take a silence
        # then for a dead node
        self.last_write_failure: float | None = None
        self.journal: Journal | None = None  # the embedded store's copy on disk
        self._subscribers: list[tuple[Callable[[Event], None], bool]] = []

    # -- on disk -------------------------------------------------------------

    def persist(self, journal: Journal) -> None:
        """From now on, every write also goes to `journal` (which starts from the
        state as it is, as its snapshot)."""
        with self._write_lock, self._lock:
            journal.start(self._revision, self._objects)
            self.journal = journal

    def close(self, forget: bool = False) -> None:
        """No more writes to the backend (the lab is going); `forget`: also remove what
        this lab left in it. Idempotent."""
        if self.journal is not None:
            self.journal.close()

    @classmethod
    def restore(cls, journal: Journal, **kwargs) -> Store:
        """A store holding what `journal` recorded, at its revision. Watches from
        before it get 410 (the history itself is not kept) and relist."""
        store = cls(**kwargs)
        store.load(journal)
        return store

    def load(self, journal: Journal) -> None:
        """Take what `journal` recorded, at its revision, into this store (one nothing
        has written to yet): whoever holds it already reads the restored objects."""
        revision, objects = journal.replay()
        with self._lock:
            for name, items in objects.items():
                if name in self._objects:
                    self._objects[name].update(items)
            self._revision = max(self._revision, revision)
            for name in self._compacted:
                self._compacted[name] = self._revision

    # -- reads ---------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The current global revision."""
        with self._lock:
            return self._revision

    def get(self, resource: str | Resource, namespace: str | None, name: str) -> dict:
        """A copy of one object; 404 if missing."""
        res = self.resources.resolve(resource)
        with self._lock:
            obj = self._objects[res.full_name].get(self._key(res, namespace, name))
            if obj is None:
                raise ApiError(404, f'{res.full_name} "{name}" not found')
            return copy.deepcopy(obj)

    def list(
        self,
        resource: str | Resource,
        namespace: str | None = None,
        label_selector: str | LabelSelector | None = None,
        field_selector: str | FieldSelector | None = None,
    ) -> tuple[list[dict], int]:
        """Copies of matching objects sorted by (namespace, name), and the revision they are at."""
        res = self.resources.resolve(resource)
        match = Selection(res, namespace, label_selector, field_selector)
        with self._lock:
            items = [o for _, o in sorted(self._objects[res.full_name].items()) if match(o)]
            return copy.deepcopy(items), self._revision

    # -- writes --------------------------------------------------------------

    def create(self, obj: dict) -> dict:
        """Store a new object (uid, creationTimestamp, resourceVersion filled in); 409 if it exists."""
        res, new = self._normalize(obj)
        with self._write_lock:
            key = self._key(res, new["metadata"].get("namespace"), new["metadata"]["name"])
            if key in self._objects[res.full_name]:
                name = new["metadata"]["name"]
                raise conflict(f'{res.full_name} "{name}" already exists', "AlreadyExists")
            return self._commit(res, key, self._stamp_new(new), None)

    def update(self, obj: dict) -> dict:
        """Create or replace; if `metadata.resourceVersion` is given it must be current (else 409)."""
        return self._put(obj, check_version=True)

    def apply(self, obj: dict) -> dict:
        """Create or replace, ignoring any `metadata.resourceVersion` in `obj`."""
        return self._put(obj, check_version=False)

    def preview(self, obj: dict) -> dict:
        """What `update(obj)` would store, stored nowhere and told to no watcher (a dry
        run): a new object stamped as `create` would stamp it (no resourceVersion), a
        changed one with its managed metadata kept and its generation bumped if its
        spec changed."""
        res, new = self._normalize(obj)
        meta = new["metadata"]
        with self._write_lock:
            key = self._key(res, meta.get("namespace"), meta["name"])
            current = self._objects[res.full_name].get(key)
            if current is None:
                meta.pop("resourceVersion", None)
                return self._stamp_new(new)
            return _over(current, new)

    def patch_status(
        self, resource: str | Resource, namespace: str | None, name: str, status: dict
    ) -> dict:
        """Merge-patch (RFC 7386) the object's `status`; 404 if missing; no-op patches don't write."""
        res = self.resources.resolve(resource)
        with self._write_lock:
            current = self._current(res, namespace, name)
            new = dict(current, metadata=dict(current["metadata"]))
            new["status"] = merge_patch(current.get("status") or {}, status)
            key = self._key(res, namespace, name)
            return self._replace(res, key, current, new)

    def delete(self, resource: str | Resource, namespace: str | None, name: str) -> dict:
        """Remove an object; returns it (stamped with the deletion's revision); 404 if missing."""
        res = self.resources.resolve(resource)
        with self._write_lock:
            current = self._current(res, namespace, name)
            return self._commit(res, self._key(res, namespace, name), None, current)

    # -- watching ------------------------------------------------------------

    def subscribe(
        self, callback: Callable[[Event], None], *, copy_objects: bool = True
    ) -> Callable[[], None]:
        """Call `callback(event)` synchronously after every write, in the writer's thread.

        The event's objects are private copies, or (`copy_objects=False`) the stored ones,
        which the callback must not mutate. Callbacks must be quick and must not write to
        the store (hand work to a queue). Returns a function that unsubscribes.
        """
        with self._lock:
            self._subscribers.append((callback, copy_objects))

        def unsubscribe() -> None:
            with self._lock:
                if (callback, copy_objects) in self._subscribers:
                    self._subscribers.remove((callback, copy_objects))

        return unsubscribe

    def watch(
        self,
        resource: str | Resource,
        namespace: str | None = None,
        resource_version: str | int | None = None,
        label_selector: str | LabelSelector | None = None,
        field_selector: str | FieldSelector | None = None,
        *,
        copy_objects: bool = True,
    ) -> Watch:
        """Events after `resource_version`, then live; call from a coroutine (binds to its loop).

        Without a resource version (None, "" or "0") the watch first sends every current
        matching object as ADDED. 410 if the revision is older than the retained history.
        """
        res = self.resources.resolve(resource)
        match = Selection(res, namespace, label_selector, field_selector)
        rev = parse_revision(resource_version)
        loop = asyncio.get_running_loop()
        with self._lock:
            if rev is None:
                objs = [o for _, o in sorted(self._objects[res.full_name].items()) if match(o)]
                initial = [Event(self._revision, ADDED, res, o, None) for o in objs]
                watch = Watch(self, match, self._revision, initial, loop, copy_objects)
            else:
                self._check_retained(res, rev)
                watch = Watch(self, match, rev, [], loop, copy_objects)
            self._watches.add(watch)
        return watch

    def _since(self, watch: Watch, limit: int = 1000) -> tuple[list[Event], bool]:
        """Ring events after the watch's cursor that it should see (up to `limit` looked at),
        and whether it has caught up. Advances the cursor; 410 if events it missed are gone."""
        res = watch.resource
        with self._lock:
            self._check_retained(res, watch.cursor)
            ring = self._events[res.full_name]
            start = bisect.bisect_right(ring, watch.cursor, key=lambda e: e.revision)
            batch = list(itertools.islice(ring, start, start + limit))
            caught_up = start + len(batch) == len(ring)
            # caught up: nothing for this resource up to now, so the cursor may jump ahead
            watch.cursor = max(watch.cursor, self._revision if caught_up else batch[-1].revision)
        return [out for ev in batch if (out := watch.translate(ev)) is not None], caught_up

    def _check_retained(self, res: Resource, rev: int) -> None:
        if rev < self._compacted[res.full_name]:
            raise expired(rev, self._compacted[res.full_name])

    def _forget(self, watch: Watch) -> None:
        with self._lock:
            self._watches.discard(watch)

    # -- internals -----------------------------------------------------------

    def _key(self, res: Resource, namespace: str | None, name: str) -> tuple[str, str]:
        if res.namespaced and not namespace:
            raise ApiError(400, f"{res.full_name} are namespaced: a namespace is required")
        return (namespace or "", name) if res.namespaced else ("", name)

    def _current(self, res: Resource, namespace: str | None, name: str) -> dict:
        obj = self._objects[res.full_name].get(self._key(res, namespace, name))
        if obj is None:
            raise ApiError(404, f'{res.full_name} "{name}" not found')
        return obj

    def _normalize(self, obj: dict) -> tuple[Resource, dict]:
        """A private, Kubernetes-shaped copy of `obj` and its resource."""
        if not isinstance(obj, dict):
            raise ApiError(400, "an object must be a JSON object")
        res = self.resources.for_object(obj)
        new = copy.deepcopy(obj)
        meta = new.get("metadata")
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
            raise ApiError(400, f"{res.kind}: metadata.name: Required value")
        new["apiVersion"], new["kind"] = res.api_version, res.kind
        if res.namespaced:
            meta["namespace"] = meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        for field in ("labels", "annotations"):
            if meta.get(field) is None:
                meta[field] = {}
        for ref in meta.get("ownerReferences") or ():
            if isinstance(ref, dict) and not ref.get("uid"):
                ref["uid"] = self._owner_uid(ref, meta.get("namespace"))
        if res.kind not in STATUSLESS:  # no default spec: clients validate required spec fields
            new.setdefault("status", {})
        return res, new

    def _owner_uid(self, ref: dict, namespace: str | None) -> str:
        """The uid of the object an owner reference names (clients require one), or a
        stable stand-in while the owner is not stored."""
        try:
            owner = self.resources.resolve(str(ref.get("kind", "")).lower())
            found = self._objects[owner.full_name].get(
                self._key(owner, namespace, str(ref.get("name")))
            )
        except (ApiError, KeyError):
            found = None
        if found is not None:
            return found["metadata"]["uid"]
        return str(
            uuid.uuid5(
                uuid.NAMESPACE_URL, f"netlab:{ref.get('kind')}/{namespace}/{ref.get('name')}"
            )
        )

    def _stamp_new(self, new: dict) -> dict:
        meta = new["metadata"]
        meta["uid"] = str(uuid.uuid4())
        stamp = datetime.fromtimestamp(self._clock(), UTC)
        meta["creationTimestamp"] = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
        meta["generation"] = 1
        return new

    def _put(self, obj: dict, check_version: bool) -> dict:
        res, new = self._normalize(obj)
        meta = new["metadata"]
        with self._write_lock:
            key = self._key(res, meta.get("namespace"), meta["name"])
            current = self._objects[res.full_name].get(key)
            if current is None:
                return self._commit(res, key, self._stamp_new(new), None)
            wanted = meta.get("resourceVersion")
            have = current["metadata"]["resourceVersion"]
            if check_version and wanted not in (None, "", have):
                raise stale(res.full_name, meta["name"])
            return self._replace(res, key, current, new)

    def _replace(self, res: Resource, key: tuple[str, str], current: dict, new: dict) -> dict:
        """Write `new` over `current` keeping managed metadata; no write if nothing changed."""
        new = _over(current, new)  # a changed spec bumps the generation: never equal then
        if new == current:
            return copy.deepcopy(current)
        return self._commit(res, key, new, current)

    def _next_revision(self, res: Resource, key: tuple[str, str], new: dict | None) -> int:
        """The revision of the write about to be recorded (a backend's record, such as
        etcd, is written here first). Called holding `_write_lock`."""
        return self._revision + 1

    def _commit(self, res: Resource, key: tuple[str, str], new: dict | None, old: dict | None):
        """Bump the revision, store (or remove), record the event, notify. Holds `_write_lock`."""
        revision = self._next_revision(res, key, new)
        with self._lock:
            self._revision = revision
            rev = str(self._revision)
            if new is None:  # delete: the object leaves stamped with the deletion's revision
                assert old is not None
                obj = dict(old, metadata=dict(old["metadata"], resourceVersion=rev))
                del self._objects[res.full_name][key]
                ev = Event(self._revision, DELETED, res, obj, old)
            else:
                new["metadata"]["resourceVersion"] = rev
                obj = self._objects[res.full_name][key] = new
                ev = Event(self._revision, ADDED if old is None else MODIFIED, res, obj, old)
            if self.journal is not None:
                # the event's JSON, made once here, is the one its watchers are sent
                self.journal.append(
                    self._revision, res.full_name, key, None if new is None else ev.object_json()
                )
                if self.journal.due():
                    self.journal.compact(self._revision, self._objects)
            ring = self._events[res.full_name]
            if len(ring) == ring.maxlen:
                self._compacted[res.full_name] = ring[0].revision
            ring.append(ev)
            watches = [w for w in self._watches if w.resource is res]
            subscribers = list(self._subscribers)
        _notify_all(watches)
        result = copy.deepcopy(obj)
        for callback, copies in subscribers:
            try:
                if copies:
                    callback(
                        Event(ev.revision, ev.type, res, copy.deepcopy(obj), copy.deepcopy(old))
                    )
                else:
                    callback(ev)
            except Exception:  # the write stands; a broken subscriber must not undo it
                log.exception("store subscriber %r failed on %r", callback, ev)
        return result


def _over(current: dict, new: dict) -> dict:
    """`new` as it replaces `current`: the store's managed metadata kept, the generation
    bumped if the spec changed (what `update` stores and `preview` shows)."""
    for field in _MANAGED:
        new["metadata"][field] = current["metadata"][field]
    if new.get("spec") != current.get("spec"):
        new["metadata"]["generation"] = current["metadata"]["generation"] + 1
    return new


def _notify_all(watches: list[Watch]) -> None:
    """Wake these watches with one call per event loop, not one per watch: a write
    seen by a hundred sidecars' watches costs one wake-up of the API's loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Watch]] = {}
    for watch in watches:
        by_loop.setdefault(watch._loop, []).append(watch)
    for loop, group in by_loop.items():
        try:
            loop.call_soon_threadsafe(_wake, group)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            for watch in group:
                watch._store._forget(watch)


def _wake(watches: list[Watch]) -> None:
    for watch in watches:
        watch._wake.set()


class Watch:
    """A watch on a Store, bound to one asyncio loop: `async for event in watch`, or `next()`."""

    def __init__(self, store, match, cursor, initial, loop, copy_objects):
        self._store, self.match, self.cursor = store, match, cursor
        self._initial: list[Event] = initial
        self._loop: asyncio.AbstractEventLoop = loop
        self._copy = copy_objects
        self._wake = asyncio.Event()
        self._ready: deque[Event] = deque()  # delivered by next(), not yet by __anext__
        self.closed = False

    @property
    def resource(self) -> Resource:
        """The watched resource."""
        return self.match.resource

    def translate(self, ev: Event) -> Event | None:
        """The event as this watch sees it (objects entering or leaving its selection)."""
        if ev.resource is not self.match.resource:
            return None
        seen = self.match.seen_as(ev.type, ev.object, ev.old)
        if seen == ev.type or seen is None:
            return ev if seen else None
        return Event(ev.revision, seen, ev.resource, ev.object, ev.old)

    def take_initial(self) -> list[Event]:
        """The synthetic ADDED events of a watch started without a resource version (once)."""
        batch, self._initial = self._initial, []
        return self._deliver(batch)

    async def next(self, timeout: float | None = None) -> list[Event] | None:
        """The next batch of events; [] on timeout; None once closed. 410 if history expired."""
        if self._initial:
            return self.take_initial()
        while not self.closed:
            self._wake.clear()
            batch, caught_up = self._store._since(self)
            if batch:
                return self._deliver(batch)
            if not caught_up:
                continue  # a slice of events all for others: read on
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                return []
        return None

    def _deliver(self, batch: list[Event]) -> list[Event]:
        if not self._copy:
            return batch
        return [Event(e.revision, e.type, e.resource, copy.deepcopy(e.object), None) for e in batch]

    def close(self) -> None:
        """Stop the watch; a pending or later `next()` returns None. Idempotent; any thread."""
        if not self.closed:
            self.closed = True
            self._store._forget(self)
            try:
                self._loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:
                pass

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> Event:
        while not self._ready:
            batch = await self.next()
            if batch is None:
                raise StopAsyncIteration
            self._ready.extend(batch)
        return self._ready.popleft()

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()
