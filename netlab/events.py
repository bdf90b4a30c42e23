"""Events, as kubelet, the scheduler and the controllers record them (`kubectl get
events`, the Events of `kubectl describe`): a pod scheduled, a container started,
stopped or backing off, a Job's pods created and its end. The same event again within
a recorder's life counts up (`count`, `lastTimestamp`) instead of adding one; the
oldest go once there are `limit` (as kube-apiserver's event TTL keeps them few)."""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict

from netlab.errors import ApiError
from netlab.objects import now
from netlab.store import Store

LIMIT = 1000


class EventRecorder:
    def __init__(self, store: Store, limit: int = LIMIT) -> None:
        self.store, self.limit = store, limit
        self.lock = threading.Lock()
        self.counter = itertools.count(1)
        self.recorded: OrderedDict[tuple, tuple[str, str, int]] = OrderedDict()

    def pod(
        self,
        namespace: str,
        name: str,
        reason: str,
        message: str,
        component: str = "kubelet",
        type_: str = "Normal",
    ) -> None:
        """An event about a pod (looked up for its uid: describe selects by it)."""
        self.pod_all(namespace, name, [(reason, message)], component, type_)

    def pod_all(
        self,
        namespace: str,
        name: str,
        events: list[tuple[str, str]],
        component: str = "kubelet",
        type_: str = "Normal",
    ) -> None:
        """Several events about one pod, its uid looked up once: (reason, message)."""
        try:
            uid = self.store.get("pods", namespace, name)["metadata"]["uid"]
        except ApiError:
            uid = ""
        for reason, message in events:
            self.record("Pod", namespace, name, uid, reason, message, component, type_)

    def record(
        self,
        kind: str,
        namespace: str,
        name: str,
        uid: str,
        reason: str,
        message: str,
        component: str,
        type_: str = "Normal",
        api_version: str = "v1",
    ) -> None:
        """An event about any object (`api_version`: the object's, batch/v1 for a Job)."""
        key = (kind, namespace, name, uid, reason, message)
        stamp = now()
        with self.lock:
            known = self.recorded.pop(key, None)
            if known is not None:
                event_ns, event_name, count = known
                first = None
                count += 1
            else:
                event_ns, event_name, count = namespace, f"{name}.{next(self.counter):x}", 1
                first = stamp
            self.recorded[key] = (event_ns, event_name, count)
            dropped = []
            while len(self.recorded) > self.limit:
                dropped.append(self.recorded.popitem(last=False)[1])
        obj = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": event_name, "namespace": event_ns},
            "involvedObject": {
                "kind": kind,
                "namespace": namespace,
                "name": name,
                "uid": uid,
                "apiVersion": api_version,
            },
            "reason": reason,
            "message": message,
            "source": {"component": component},
            "count": count,
            "lastTimestamp": stamp,
            "type": type_,
            "reportingComponent": component,
        }
        if first is not None:
            obj["firstTimestamp"] = first
        else:
            try:
                obj["firstTimestamp"] = self.store.get("events", event_ns, event_name).get(
                    "firstTimestamp", stamp
                )
            except ApiError:
                obj["firstTimestamp"] = stamp
        self.store.apply(obj)
        for old_ns, old_name, _ in dropped:
            try:
                self.store.delete("events", old_ns, old_name)
            except ApiError:
                pass
