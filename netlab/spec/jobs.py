"""`kind: Job` (batch/v1): pods that run to completion, checked as the apiserver checks them."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from netlab.spec.model import PodTemplate, frozen_map
from netlab.spec.validate import Checker, join

JOB_FIELDS = (
    "completions",
    "parallelism",
    "backoffLimit",
    "activeDeadlineSeconds",
    "template",
    "selector",
    "ttlSecondsAfterFinished",
)
JOB_NAME_MAX = 63  # a label value (job-name), as Kubernetes limits it; pod names are cut
JOB_MAX_PODS = 1000
JOB_RESTART_POLICIES = ("Never", "OnFailure")


@dataclass(frozen=True)
class JobSpec:
    name: str
    namespace: str
    completions: int
    parallelism: int
    backoff_limit: int
    active_deadline: float | None  # seconds from the Job's start; None: no deadline
    template: PodTemplate
    labels: MappingProxyType = field(default_factory=frozen_map)
    manifest: dict[str, Any] = field(compare=False, hash=False, default_factory=dict)


def read_job(manifest, value: Any, checker: Checker) -> JobSpec | None:
    from netlab.spec import manifests  # which imports this module for its table of kinds

    path = manifest.prefix + "spec"
    spec = checker.mapping(value, path, JOB_FIELDS, required=("template",))
    if spec is None:
        return None
    completions = checker.int_in(spec, "completions", path, 1, JOB_MAX_PODS, 1)
    parallelism = checker.int_in(spec, "parallelism", path, 0, JOB_MAX_PODS, 1)
    backoff = checker.int_in(spec, "backoffLimit", path, 0, 100, 6)
    deadline = checker.int_in(spec, "activeDeadlineSeconds", path, 1, 7 * 24 * 3600, None)
    template, labels = manifests.read_template(spec, path, checker)
    if template is None:
        return None
    tpath = join(path, "template")
    pod_spec = template.get("spec")
    policy = pod_spec.get("restartPolicy") if isinstance(pod_spec, dict) else None
    if isinstance(pod_spec, dict) and policy not in JOB_RESTART_POLICIES:
        checker.add(
            join(tpath, "spec.restartPolicy"),
            f"a Job's pods must use restartPolicy Never or OnFailure, not {policy or 'Always'!r}",
            "set restartPolicy: Never (a failed pod is replaced) or OnFailure (restarted in place)",
        )
    pod = manifests.pod_template(pod_spec, join(tpath, "spec"), labels or {}, checker)
    if pod is None or None in (completions, parallelism, backoff):
        return None
    return JobSpec(
        manifest.name,
        manifest.namespace,
        completions,
        parallelism,
        backoff,
        None if deadline is None else float(deadline),
        pod,
        frozen_map(manifest.labels),
        manifest.body,
    )
