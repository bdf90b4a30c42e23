"""The node agents' heartbeats: each live node renews its Lease in `kube-node-lease`
(as kubelet does), so the node lifecycle controller can tell a dead node by its silence,
and posts its Node's status every 5 minutes (kubelet's nodeStatusReportFrequency): the
conditions' lastHeartbeatTime, which `kubectl describe node` shows.

A failed node (`netlab node fail`) stops renewing: its agent is as frozen as its pods.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from netlab.errors import ApiError
from netlab.objects import timestamp
from netlab.store import Store

log = logging.getLogger(__name__)
LEASE_NAMESPACE = "kube-node-lease"
STATUS_REPORT = 300.0  # seconds between a node's status posts when nothing changed


def lease_object(node: str, renewed: float, duration: float) -> dict:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": node, "namespace": LEASE_NAMESPACE},
        "spec": {
            "holderIdentity": node,
            "leaseDurationSeconds": max(1, round(duration)),
            "renewTime": timestamp(renewed, micro=True),
        },
    }


class NodeAgents:
    """One thread renewing the Lease of every node that is not failed, every `interval`."""

    def __init__(
        self,
        store: Store,
        nodes: Callable[[], Iterable[str]],
        interval: float,
        grace: float,
        clock: Callable[[], float],
    ):
        self.store, self.nodes = store, nodes
        self.interval, self.grace, self.clock = interval, grace, clock
        self.failed: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported: dict[str, float] = {}  # node: when its status was last posted

    def start(self) -> None:
        self.beat()
        self._thread = threading.Thread(target=self._run, name="node-agents", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def fail(self, node: str) -> None:
        self.failed.add(node)

    def recover(self, node: str) -> None:
        self.failed.discard(node)
        self.beat([node])

    def beat(self, nodes: Iterable[str] | None = None) -> None:
        """Renew the leases of these nodes (default: every live one) now."""
        now, error = self.clock(), None
        live = [n for n in (self.nodes() if nodes is None else nodes) if n not in self.failed]
        for node in live:
            try:  # one lost renewal must not cost the other nodes theirs
                self.store.apply(lease_object(node, now, self.grace))
            except Exception as exc:
                error = exc
        if error is not None:
            raise error
        for node in live:  # the leases first: a lost renewal is raised before any report
            if now - self._reported.setdefault(node, now) >= STATUS_REPORT:
                self._reported[node] = now
                self.report(node, now)

    def report(self, node: str, now: float) -> None:
        """Post the node's status: a Ready node's conditions heard from now (a node the
        lifecycle controller found silent is its to mark Ready again)."""
        try:
            obj = self.store.get("nodes", None, node)
        except ApiError:
            return
        conditions = (obj.get("status") or {}).get("conditions") or []
        if not conditions or any(c.get("status") == "Unknown" for c in conditions):
            return
        stamp = timestamp(now)
        for condition in conditions:
            condition["lastHeartbeatTime"] = stamp
        try:
            self.store.update(obj)
        except ApiError:  # changed meanwhile (a cordon, the lifecycle controller): next time
            self._reported[node] = now - STATUS_REPORT  # tried again at the next beat

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception:  # a heartbeat that fails once must not end them all
                log.exception("node agents: heartbeat failed")
