"""The Job controller against the real Store, a runtime that only writes Pod objects and
a clock the test moves: Kubernetes' back-off between failed pods, what a Job's end
does to its pods and counts, and the Events it records."""

from __future__ import annotations

import pytest

from netlab.controllers.job import JobController, backoff
from netlab.events import EventRecorder
from netlab.store import Store


@pytest.mark.parametrize(
    ("failures", "start", "expected"),
    [
        (0, 10.0, 0.0),
        (1, 10.0, 10.0),
        (2, 10.0, 20.0),
        (3, 10.0, 40.0),
        (6, 10.0, 320.0),
        (7, 10.0, 360.0),  # capped at 6 minutes, as Kubernetes' job controller does
        (50, 10.0, 360.0),
        (1, 0.1, 0.1),
        (9, 0.1, 3.6),  # a lab's faster back-off keeps the same shape
    ],
)
def test_back_off_doubles_from_its_first_step_up_to_36_of_them(failures, start, expected):
    assert backoff(failures, start) == pytest.approx(expected)


class PodWriter:
    """Writes the Pod objects the lab would (Running), and deletes them when told."""

    def __init__(self, store: Store):
        self.store, self.serial, self.deleted = store, 0, []

    def compile_job(self, obj):
        return obj

    def run_job_pods(self, job, count):
        meta = job["metadata"]
        for _ in range(count):
            self.serial += 1
            self.store.create(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"{meta['name']}-{self.serial}",
                        "namespace": meta["namespace"],
                        "ownerReferences": [
                            {"kind": "Job", "name": meta["name"], "controller": True}
                        ],
                    },
                    "spec": {},
                    "status": {"phase": "Running"},
                }
            )

    def delete_pods(self, namespace, names):
        for name in names:
            self.deleted.append(name)
            self.store.delete("pods", namespace, name)

    def end(self, name: str, phase: str) -> None:
        pod = self.store.get("pods", "default", name)
        self.store.update(dict(pod, status={"phase": phase}))


def job(name: str, **spec) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {**spec, "template": {"spec": {"restartPolicy": "Never", "containers": []}}},
        "status": {},
    }


def setup(obj: dict, start: float = 10.0):
    store, now = Store(), [1000.0]
    store.apply(obj)
    pods = PodWriter(store)
    controller = JobController(store, pods, lambda: now[0], start, EventRecorder(store))
    return store, pods, controller, now


def events(store: Store, name: str) -> list[tuple[str, str, str]]:
    items = store.list("events", "default")[0]
    return [
        (e["type"], e["reason"], e["message"])
        for e in sorted(items, key=lambda e: e["metadata"]["name"])
        if e["involvedObject"]["name"] == name
        and e["involvedObject"]["kind"] == "Job"
        and e["involvedObject"]["apiVersion"] == "batch/v1"
    ]


def test_a_failed_pod_is_replaced_after_10_then_20_seconds_and_the_job_fails():
    store, pods, controller, now = setup(job("broken", backoffLimit=2))
    key = ("default", "broken")
    assert controller.reconcile(key) is None
    assert [p["metadata"]["name"] for p in store.list("pods")[0]] == ["broken-1"]
    pods.end("broken-1", "Failed")
    now[0] += 1
    assert controller.reconcile(key) == pytest.approx(10.0)  # no pod before 10 s have passed
    now[0] += 9.5
    assert controller.reconcile(key) == pytest.approx(0.5)
    assert pods.serial == 1
    now[0] += 0.5
    controller.reconcile(key)
    assert pods.serial == 2
    pods.end("broken-2", "Failed")
    now[0] += 3
    assert controller.reconcile(key) == pytest.approx(20.0)  # the second wait is twice as long
    now[0] += 20
    controller.reconcile(key)
    pods.end("broken-3", "Failed")
    controller.reconcile(key)
    status = store.get("jobs", "default", "broken")["status"]
    assert status["failed"] == 3 and "active" not in status
    (failed,) = [c for c in status["conditions"] if c["type"] == "Failed"]
    assert failed["reason"] == "BackoffLimitExceeded" and failed["lastTransitionTime"]
    assert events(store, "broken") == [
        ("Normal", "SuccessfulCreate", "Created pod: broken-1"),
        ("Normal", "SuccessfulCreate", "Created pod: broken-2"),
        ("Normal", "SuccessfulCreate", "Created pod: broken-3"),
        ("Warning", "BackoffLimitExceeded", "Job has reached the specified backoff limit"),
    ]


def test_the_pod_a_deadline_kills_counts_as_failed_and_the_counts_stay():
    store, pods, controller, now = setup(job("slow", activeDeadlineSeconds=5))
    key = ("default", "slow")
    assert controller.reconcile(key) == pytest.approx(5.0)  # looked at again at the deadline
    now[0] += 5
    controller.reconcile(key)
    assert pods.deleted == ["slow-1"] and not store.list("pods")[0]
    status = store.get("jobs", "default", "slow")["status"]
    assert status["failed"] == 1 and "active" not in status
    assert [c["reason"] for c in status["conditions"]] == ["DeadlineExceeded"]
    now[0] += 60  # its pods are gone: an ended Job's counts are final all the same
    assert controller.reconcile(key) is None
    assert store.get("jobs", "default", "slow")["status"] == status
    assert events(store, "slow") == [
        ("Normal", "SuccessfulCreate", "Created pod: slow-1"),
        ("Normal", "SuccessfulDelete", "Deleted pod: slow-1"),
        ("Warning", "DeadlineExceeded", "Job was active longer than specified deadline"),
    ]


def test_a_job_completes_and_says_so():
    store, pods, controller, now = setup(job("count", completions=2, parallelism=2))
    key = ("default", "count")
    controller.reconcile(key)
    assert store.get("jobs", "default", "count")["status"]["active"] == 2
    pods.end("count-1", "Succeeded")
    pods.end("count-2", "Succeeded")
    now[0] += 2
    controller.reconcile(key)
    status = store.get("jobs", "default", "count")["status"]
    assert status["succeeded"] == 2 and status["completionTime"]
    assert [c["type"] for c in status["conditions"]] == ["Complete"]
    assert events(store, "count")[-1] == ("Normal", "Completed", "Job completed")


def test_a_success_resets_the_back_off():
    store, pods, controller, now = setup(job("flaky", completions=3, backoffLimit=6))
    key = ("default", "flaky")
    controller.reconcile(key)
    pods.end("flaky-1", "Failed")
    controller.reconcile(key)
    now[0] += 10
    controller.reconcile(key)
    pods.end("flaky-2", "Succeeded")  # a success: the next pod goes at once
    now[0] += 1
    assert controller.reconcile(key) is None and pods.serial == 3
    pods.end("flaky-3", "Failed")  # and a failure after it waits the first step again
    now[0] += 1
    assert controller.reconcile(key) == pytest.approx(10.0)
