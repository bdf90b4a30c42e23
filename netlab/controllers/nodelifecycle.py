"""The node lifecycle controller: a node whose Lease has not been renewed within the
grace period is NotReady and tainted unreachable; its pods are evicted (their
Deployments start them elsewhere) and the other nodes drop its overlay lease. A node
that renews again is Ready, and the overlay takes it back.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Protocol

from netlab import nodeinfo
from netlab.controllers.base import Controller
from netlab.controllers.nodeagent import LEASE_NAMESPACE
from netlab.errors import ApiError
from netlab.objects import condition_status, parse_time, timestamp
from netlab.store import Event, Store

UNREACHABLE = "node.kubernetes.io/unreachable"


class NodeRuntime(Protocol):
    def node_lost(self, name: str) -> None:
        """Evict the node's pods and withdraw its overlay lease from every other node."""
        ...

    def node_back(self, name: str) -> None:
        """Give every other node the node's overlay lease again."""
        ...


def node_ready(node: dict) -> bool:
    return condition_status(node, "Ready") == "True"


class NodeLifecycleController(Controller):
    name = "node-lifecycle-controller"
    watches = ("leases", "nodes")
    resync = 5.0

    def __init__(
        self, store: Store, runtime: NodeRuntime, grace: float, clock: Callable[[], float]
    ):
        super().__init__(store)
        self.runtime, self.grace, self.clock = runtime, grace, clock

    def keys_for(self, event: Event) -> Iterable[Hashable]:
        meta = event.object["metadata"]
        if event.resource.plural == "leases":
            if meta.get("namespace") != LEASE_NAMESPACE:
                return []
            # a renewal matters only to a node that is not Ready: a Ready node's expiry
            # is checked by the timer its last reconcile set (not 5 times a second)
            try:
                if node_ready(self.store.get("nodes", None, meta["name"])):
                    return []
            except ApiError:
                return []
        return [meta["name"]]

    def all_keys(self) -> Iterable[Hashable]:
        return [n["metadata"]["name"] for n in self.store.list("nodes")[0]]

    def reconcile(self, key: Hashable) -> float | None:
        name = str(key)
        try:
            node = self.store.get("nodes", None, name)
        except ApiError:
            return None  # the node left the lab
        try:
            lease = self.store.get("leases", LEASE_NAMESPACE, name)
            renewed = parse_time(lease["spec"].get("renewTime"))
        except ApiError:
            renewed = None
        now = self.clock()
        age = float("inf") if renewed is None else now - renewed
        alive = age <= self.grace
        outage = self.store.last_write_failure
        if (
            not alive
            and node_ready(node)
            and (self._all_silent(now) or (outage is not None and now - outage < 2 * self.grace))
        ):
            # every node silent at once, or the store in trouble lately (an etcd member
            # not answering, a leader election): the heartbeats were held up or lost in
            # the control plane, not by the nodes. Evicting then would turn a blip into an outage, so wait, as
            # Kubernetes' node lifecycle controller does in a full disruption.
            return self.grace
        if alive != node_ready(node):
            self._set_ready(node, alive, now)
            if alive:
                self.runtime.node_back(name)
            else:
                self.runtime.node_lost(name)
        # look again when the lease would run out (an event may come first)
        return max(0.01, self.grace - age + 0.01) if alive else None

    def _all_silent(self, now: float) -> bool:
        leases = {
            lease["metadata"]["name"]: parse_time(lease["spec"].get("renewTime"))
            for lease in self.store.list("leases", LEASE_NAMESPACE)[0]
        }
        names = [n["metadata"]["name"] for n in self.store.list("nodes")[0]]
        if len(names) < 2:
            return False
        return all((leases.get(n) or 0) < now - self.grace for n in names)

    def _set_ready(self, node: dict, ready: bool, now: float) -> None:
        stamp = timestamp(now)
        posted = nodeinfo.conditions(True, stamp)  # the types kubelet posts
        kinds = {c["type"] for c in posted}
        old = node.get("status", {}).get("conditions") or ()
        heartbeat = next(
            (c.get("lastHeartbeatTime") for c in old if c.get("type") == "Ready"), None
        )
        others = [c for c in old if c.get("type") not in kinds]
        node["status"]["conditions"] = [*others, *nodeinfo.conditions(ready, stamp, heartbeat)]
        taints = [
            t for t in (node.get("spec") or {}).get("taints") or () if t.get("key") != UNREACHABLE
        ]
        if not ready:
            taints.append({"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": stamp})
        node.setdefault("spec", {})["taints"] = taints
        if not taints:
            node["spec"].pop("taints")
        self.store.update(node)  # a conflict raises: retried with the newer node
