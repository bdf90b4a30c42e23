"""A work queue and the loop every controller shares (client-go's workqueue + informer shape)."""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable

from netlab.errors import ApiError
from netlab.objects import controller_of
from netlab.store import Event, Store

log = logging.getLogger(__name__)

RETRY_START = 0.05  # seconds before the first retry of a failed key; doubles to RETRY_MAX
RETRY_MAX = 5.0


class WorkQueue:
    """Keys to reconcile: a key queued twice before a worker takes it is reconciled once;
    a key being reconciled that is queued again is reconciled again afterwards."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._cond = threading.Condition()
        self._ready: list[Hashable] = []
        self._queued: set[Hashable] = set()
        self._active: set[Hashable] = set()
        self._again: set[Hashable] = set()  # queued while active
        self._later: list[tuple[float, int, Hashable]] = []
        self._seq = 0
        self.closed = False

    def add(self, key: Hashable) -> None:
        with self._cond:
            if self.closed or key in self._queued:
                return
            if key in self._active:
                self._again.add(key)
                return
            self._queued.add(key)
            self._ready.append(key)
            self._cond.notify()

    def add_after(self, key: Hashable, delay: float) -> None:
        """Queue `key` once `delay` seconds have passed."""
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            self._seq += 1
            heapq.heappush(self._later, (self._clock() + delay, self._seq, key))
            self._cond.notify()

    def get(self, timeout: float | None = None) -> Hashable | None:
        """The next key (now active until `done(key)`); None on timeout or once closed."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                if self.closed:
                    return None
                self._promote()
                if self._ready:
                    key = self._ready.pop(0)
                    self._queued.discard(key)
                    self._active.add(key)
                    return key
                wait = None if deadline is None else deadline - self._clock()
                if self._later:
                    until_due = self._later[0][0] - self._clock()
                    wait = until_due if wait is None else min(wait, until_due)
                if wait is not None and wait <= 0:
                    if deadline is not None and self._clock() >= deadline:
                        return None
                    continue
                self._cond.wait(wait)

    def done(self, key: Hashable) -> None:
        with self._cond:
            self._active.discard(key)
            if key in self._again:
                self._again.discard(key)
                if key not in self._queued:
                    self._queued.add(key)
                    self._ready.append(key)
                    self._cond.notify()

    def _promote(self) -> None:
        now = self._clock()
        while self._later and self._later[0][0] <= now:
            _, _, key = heapq.heappop(self._later)
            if key in self._active:
                self._again.add(key)
            elif key not in self._queued:
                self._queued.add(key)
                self._ready.append(key)

    def __len__(self) -> int:
        with self._cond:
            return len(self._ready) + len(self._later)

    def busy(self) -> bool:
        """A key is waiting for a worker, or being reconciled (delayed keys don't count)."""
        with self._cond:
            return bool(self._ready or self._active)

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class Controller:
    """One reconcile loop. Subclasses name the resources they watch, map each event to the
    keys it concerns (`keys_for`) and reconcile a key (`reconcile`). A reconcile that
    raises is retried with backoff; one that returns a number is run again after that
    many seconds (a deadline or a grace period to check)."""

    name = "controller"
    watches: tuple[str, ...] = ()  # resource plurals
    resync: float | None = None  # seconds: reconcile every known key this often

    def __init__(self, store: Store):
        self.store = store
        self.queue = WorkQueue()
        self._failures: dict[Hashable, int] = {}
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None

    # -- what subclasses write ---------------------------------------------

    def keys_for(self, event: Event) -> Iterable[Hashable]:
        raise NotImplementedError

    def all_keys(self) -> Iterable[Hashable]:
        """Every key there is now (reconciled at start and on each resync)."""
        return ()

    def reconcile(self, key: Hashable) -> float | None:
        raise NotImplementedError

    # -- helpers for controllers of owned objects ----------------------------------

    def keys_of(self, plural: str) -> list[tuple[str, str]]:
        """(namespace, name) of every object of a resource."""
        items, _ = self.store.list(plural)
        return [(o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in items]

    def controlled(self, plural: str, namespace: str, kind: str, name: str) -> list[dict]:
        """The objects of `plural` in `namespace` that the `kind` named `name` controls."""
        items, _ = self.store.list(plural, namespace)
        return [o for o in items if controller_of(o, kind) == name]

    @staticmethod
    def owner_key(obj: dict, kind: str) -> list[tuple[str, str]]:
        """The key of the `kind` that controls `obj`, if one does."""
        owner = controller_of(obj, kind)
        return [(obj["metadata"]["namespace"], owner)] if owner else []

    # -- the loop ----------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if event.resource.plural in self.watches:
            for key in self.keys_for(event):
                self.queue.add(key)

    def start(self) -> None:
        self._unsubscribe = self.store.subscribe(self._on_event, copy_objects=False)
        for key in self.all_keys():
            self.queue.add(key)
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.queue.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        next_resync = time.monotonic() + self.resync if self.resync else None
        while True:
            wait = None if next_resync is None else max(0.0, next_resync - time.monotonic())
            key = self.queue.get(timeout=wait)
            if self.queue.closed:
                return
            if key is None:  # resync: level-triggered, so a lost event heals here
                for k in self.all_keys():
                    self.queue.add(k)
                next_resync = time.monotonic() + (self.resync or 0)
                continue
            try:
                again = self.reconcile(key)
            except Exception as exc:
                failures = self._failures.get(key, 0)
                self._failures[key] = failures + 1
                delay = min(RETRY_MAX, RETRY_START * 2**failures)
                if isinstance(exc, ApiError) and exc.status == 404:  # deleted meanwhile
                    log.info("%s: %r: %s; looking again in %.2f s", self.name, key, exc, delay)
                else:
                    log.exception(
                        "%s: reconciling %r failed; retrying in %.2f s", self.name, key, delay
                    )
                self.queue.add_after(key, delay)
            else:
                self._failures.pop(key, None)
                if again is not None:
                    self.queue.add_after(key, again)
            finally:
                self.queue.done(key)


class ControllerManager:
    """Starts and stops a set of controllers together (kube-controller-manager's role)."""

    def __init__(self, controllers: Iterable[Controller] = ()):
        self.controllers = list(controllers)

    def start(self) -> None:
        for controller in self.controllers:
            controller.start()

    def stop(self) -> None:
        for controller in self.controllers:
            controller.stop()

    def idle(self) -> bool:
        """No controller has work queued (used by tests and `netlab up` to settle)."""
        return not any(c.queue.busy() for c in self.controllers)
