"""The lab's controllers: each watches the store and reconciles one kind of object.

Like Kubernetes' controller-manager: event handlers only enqueue keys, a worker
reconciles one key at a time by reading the store as it is now (level-triggered,
so order and lost events do not matter), and a failed reconcile is retried with
backoff. Controllers act on the kernel only through the lab's runtime (the node
agent's role), never directly.
"""

from netlab.controllers.base import Controller, ControllerManager, WorkQueue

__all__ = ["Controller", "ControllerManager", "WorkQueue"]
