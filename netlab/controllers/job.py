"""The Job controller: runs a Job's pods to completion.

`completions` pods must succeed, at most `parallelism` run at once; more than
`backoffLimit` failures (failed pods, and restarts under OnFailure) fail the Job, and
so does running past `activeDeadlineSeconds`. A failed pod is replaced after
Kubernetes' back-off: 10 s, doubled for each failure since the last success, at most
6 minutes (the lab's `controlPlane.jobBackoff` sets the first step; the cap is 36 of
them). A failed Job's running pods are killed and count as failed; finished pods stay,
so their logs can be read; once a Job has ended its counts are final. It records
Events as kube-controller-manager's job controller does (SuccessfulCreate,
SuccessfulDelete, Completed, BackoffLimitExceeded, DeadlineExceeded). Like the
Deployment controller it reads the store and acts through the lab's runtime.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from netlab.controllers.base import Controller
from netlab.errors import ApiError, NetlabError
from netlab.events import EventRecorder
from netlab.objects import condition_status, parse_time, timestamp
from netlab.store import Event, Store

BACKOFF_START = 10.0  # seconds before a failed pod is replaced (Kubernetes' default)
BACKOFF_STEPS_MAX = 36  # the back-off stops doubling at this many starts: 6 min for 10 s
COMPONENT = "job-controller"


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


def backoff(failures: int, start: float = BACKOFF_START) -> float:
    """Seconds before the next pod after `failures` failures since the last success."""
    if failures <= 0:
        return 0.0
    return min(start * BACKOFF_STEPS_MAX, start * 2 ** min(failures - 1, 16))


@dataclass
class _Backoff:
    """What the controller saw of a Job's failures: the counts last seen, the failures
    since its last success, and when the latest was seen."""

    failed: int = 0
    succeeded: int = 0
    streak: int = 0
    last: float = 0.0


def finished(job: dict) -> str | None:
    """Complete or Failed once the Job has ended; None while it runs."""
    return next((t for t in ("Complete", "Failed") if condition_status(job, t) == "True"), None)


class JobController(Controller):
    name = COMPONENT
    watches = ("jobs", "pods")
    resync = 10.0

    def __init__(
        self,
        store: Store,
        runtime: JobRuntime,
        clock: Callable[[], float] = time.time,
        backoff_start: float = BACKOFF_START,
        events: EventRecorder | None = None,
    ):
        super().__init__(store)
        self.runtime, self.clock = runtime, clock
        self.backoff_start, self.events = backoff_start, events
        # finer than the status' whole seconds: when each Job started, and its failures
        self._started: dict[Hashable, float] = {}
        self._backoff: dict[Hashable, _Backoff] = {}

    def keys_for(self, event: Event) -> Iterable[Hashable]:
        meta = event.object["metadata"]
        if event.resource.plural == "jobs":
            return [(meta["namespace"], meta["name"])]
        return self.owner_key(event.object, "Job")

    def all_keys(self) -> Iterable[Hashable]:
        return self.keys_of("jobs")

    def _pods(self, namespace: str, name: str) -> list[dict]:
        return self.controlled("pods", namespace, "Job", name)

    def _record(self, job: dict, reason: str, message: str, type_: str = "Normal") -> None:
        if self.events is None:
            return
        meta = job["metadata"]
        self.events.record(
            "Job", meta["namespace"], meta["name"], meta.get("uid", ""), reason, message,
            COMPONENT, type_, api_version="batch/v1",
        )  # fmt: skip

    def _delete(self, job: dict, names: list[str]) -> None:
        self.runtime.delete_pods(job["metadata"]["namespace"], names)
        for pod in names:
            self._record(job, "SuccessfulDelete", f"Deleted pod: {pod}")

    def reconcile(self, key: Hashable) -> float | None:
        namespace, name = key  # type: ignore[misc]
        try:
            job = self.store.get("jobs", namespace, name)
        except ApiError:  # deleted: its pods go with it
            self._started.pop(key, None)
            self._backoff.pop(key, None)
            pods = [p["metadata"]["name"] for p in self._pods(namespace, name)]
            if pods:
                self.runtime.delete_pods(namespace, pods)
            return None
        spec, status = job.get("spec") or {}, dict(job.get("status") or {})
        pods = self._pods(namespace, name)
        phase = {p["metadata"]["name"]: p.get("status", {}).get("phase") for p in pods}
        active = [n for n, v in phase.items() if v not in ("Succeeded", "Failed")]
        if finished(job) is not None:  # ended before: its counts are final, nothing runs
            if active:
                self._delete(job, active)
            return None
        now = self.clock()
        started = self._started.setdefault(key, parse_time(status.get("startTime")) or now)
        status.setdefault("startTime", timestamp(started))
        succeeded = sum(1 for v in phase.values() if v == "Succeeded")
        failed = sum(1 for v in phase.values() if v == "Failed") + sum(_restarts(p) for p in pods)
        completions = int(spec.get("completions", 1))
        parallelism = int(spec.get("parallelism", 1))
        limit = int(spec.get("backoffLimit", 6))
        deadline = spec.get("activeDeadlineSeconds")
        seen = self._backoff.setdefault(key, _Backoff())
        if failed > seen.failed:
            seen.streak, seen.last = seen.streak + failed - seen.failed, now
        elif succeeded > seen.succeeded:  # a success with no new failure: back-off resets
            seen.streak = 0
        seen.failed, seen.succeeded = failed, succeeded
        again: float | None = None
        ended = None
        if succeeded >= completions:
            ended = ("Complete", "", "")
        elif failed > limit:
            ended = (
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            )
        elif deadline is not None and now - started >= float(deadline):
            ended = ("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
        if ended is not None:
            type_, reason, message = ended
            if active:  # killed: for a failed Job they count as failed
                self._delete(job, active)
                if type_ == "Failed":
                    failed += len(active)
                active = []
            self._condition(status, type_, reason, message, now)
            if type_ == "Complete":
                status["completionTime"] = timestamp(now)
                self._record(job, "Completed", "Job completed")
            else:
                self._record(job, reason, message, "Warning")
        else:
            want = min(parallelism, completions - succeeded) - len(active)
            wait = backoff(seen.streak, self.backoff_start)
            if want > 0 and now - seen.last < wait:
                again = wait - (now - seen.last)
            elif want > 0:
                before = set(phase)
                try:
                    self.runtime.run_job_pods(self.runtime.compile_job(job), want)
                except NetlabError as exc:
                    self._condition(status, "FailureTarget", "Unschedulable", str(exc), now)
                    again = 1.0
                pods = self._pods(namespace, name)
                for pod in sorted(p["metadata"]["name"] for p in pods):
                    if pod not in before:
                        self._record(job, "SuccessfulCreate", f"Created pod: {pod}")
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
        stamp = timestamp(now)
        entry = {"type": type_, "status": "True", "lastProbeTime": stamp}
        entry["lastTransitionTime"] = stamp
        if reason:
            entry.update(reason=reason, message=message)
        status["conditions"] = [*conditions, entry]
