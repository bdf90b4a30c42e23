"""The Job controller: runs a Job's pods to completion.

`completions` pods must succeed, at most `parallelism` run at once; more than
`backoffLimit` failures (failed pods, and restarts under OnFailure) fail the Job, and
so does running past `activeDeadlineSeconds`. A failed Job's running pods are killed;
finished pods stay, so their logs can be read. Like the Deployment controller it reads
the store and acts through the lab's runtime.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Protocol

from netlab.controllers.base import Controller
from netlab.errors import ApiError, NetlabError
from netlab.objects import condition_status, parse_time, timestamp
from netlab.store import Event, Store

BACKOFF_START = (
    0.5  # seconds before a failed pod is replaced; doubles per failure (Kubernetes: 10 s)
)
BACKOFF_MAX = 30.0


class JobRuntime(Protocol):
    def compile_job(self, obj: dict):
        """The Job's template, checked; NetlabError if it cannot run here."""
        ...

    def run_job_pods(self, compiled, count: int) -> None:
        """Start `count` more pods of the Job; Unschedulable if none fit."""
        ...

    def delete_pods(self, namespace: str, names: Sequence[str]) -> None: ...


def _restarts(pod: dict) -> int:
    return sum(
        c.get("restartCount", 0) for c in pod.get("status", {}).get("containerStatuses") or ()
    )


def finished(job: dict) -> str | None:
    """Complete or Failed once the Job has ended; None while it runs."""
    return next((t for t in ("Complete", "Failed") if condition_status(job, t) == "True"), None)


class JobController(Controller):
    name = "job-controller"
    watches = ("jobs", "pods")
    resync = 10.0

    def __init__(self, store: Store, runtime: JobRuntime, clock: Callable[[], float] = time.time):
        super().__init__(store)
        self.runtime, self.clock = runtime, clock
        # finer than the status' whole seconds: when each Job started, and when it last
        # saw a new failure (the replacement waits its back-off from then)
        self._started: dict[Hashable, float] = {}
        self._seen_failures: dict[Hashable, tuple[int, float]] = {}

    def keys_for(self, event: Event) -> Iterable[Hashable]:
        meta = event.object["metadata"]
        if event.resource.plural == "jobs":
            return [(meta["namespace"], meta["name"])]
        return self.owner_key(event.object, "Job")

    def all_keys(self) -> Iterable[Hashable]:
        return self.keys_of("jobs")

    def _pods(self, namespace: str, name: str) -> list[dict]:
        return self.controlled("pods", namespace, "Job", name)

    def reconcile(self, key: Hashable) -> float | None:
        namespace, name = key  # type: ignore[misc]
        try:
            job = self.store.get("jobs", namespace, name)
        except ApiError:  # deleted: its pods go with it
            self._started.pop(key, None)
            self._seen_failures.pop(key, None)
            pods = [p["metadata"]["name"] for p in self._pods(namespace, name)]
            if pods:
                self.runtime.delete_pods(namespace, pods)
            return None
        spec, status = job.get("spec") or {}, dict(job.get("status") or {})
        now = self.clock()
        started = self._started.setdefault(key, parse_time(status.get("startTime")) or now)
        status.setdefault("startTime", timestamp(started))
        pods = self._pods(namespace, name)
        phase = {p["metadata"]["name"]: p.get("status", {}).get("phase") for p in pods}
        succeeded = sum(1 for v in phase.values() if v == "Succeeded")
        failed = sum(1 for v in phase.values() if v == "Failed") + sum(_restarts(p) for p in pods)
        active = [n for n, v in phase.items() if v not in ("Succeeded", "Failed")]
        completions = int(spec.get("completions", 1))
        parallelism = int(spec.get("parallelism", 1))
        limit = int(spec.get("backoffLimit", 6))
        deadline = spec.get("activeDeadlineSeconds")
        again: float | None = None
        ended = finished(job)
        if ended is None:
            if succeeded >= completions:
                ended = "Complete"
                status["completionTime"] = timestamp(now)
                self._condition(status, "Complete", "", "", now)
            elif failed > limit:
                ended = "Failed"
                self._condition(
                    status,
                    "Failed",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                    now,
                )
            elif deadline is not None and now - started >= float(deadline):
                ended = "Failed"
                self._condition(
                    status,
                    "Failed",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                    now,
                )
        if ended is not None:
            if active:
                self.runtime.delete_pods(namespace, active)
                active = []
        else:
            want = min(parallelism, completions - succeeded) - len(active)
            wait = 0.0 if not failed else min(BACKOFF_MAX, BACKOFF_START * 2 ** (failed - 1))
            seen, last_failure = self._seen_failures.get(key, (0, 0.0))
            if failed > seen:
                self._seen_failures[key] = (failed, now)
                last_failure = now
            if want > 0 and now - last_failure < wait:
                again = wait - (now - last_failure)
            elif want > 0:
                try:
                    self.runtime.run_job_pods(self.runtime.compile_job(job), want)
                except NetlabError as exc:
                    self._condition(status, "FailureTarget", "Unschedulable", str(exc), now)
                    again = 1.0
                pods = self._pods(namespace, name)
                active = [
                    p["metadata"]["name"]
                    for p in pods
                    if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
                ]
            if deadline is not None:  # look again when it runs out
                left = float(deadline) - (now - started)
                again = left if again is None else min(again, left)
        status.update({"active": len(active), "succeeded": succeeded, "failed": failed})
        if not status["active"]:
            status.pop("active")
        if status != job.get("status"):
            self.store.update(dict(job, status=status))
        return None if again is None else max(0.01, again)

    @staticmethod
    def _condition(status: dict, type_: str, reason: str, message: str, now: float) -> None:
        conditions = [c for c in status.get("conditions") or () if c.get("type") != type_]
        entry = {"type": type_, "status": "True", "lastTransitionTime": timestamp(now)}
        if reason:
            entry.update(reason=reason, message=message)
        status["conditions"] = [*conditions, entry]
