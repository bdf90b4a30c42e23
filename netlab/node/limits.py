"""A container's resources as the OCI runtime enforces them: the `linux.resources`
section of its config.json, computed as kubelet computes the CRI's
LinuxContainerResources (pkg/kubelet/kuberuntime, pkg/kubelet/cm) and containerd
turns them into OCI fields.

- cpu.shares from the cpu request (MilliCPUToShares: millicores * 1024 / 1000, at
  least 2, at most 262144; 2 with no request, the kernel's minimum, so a BestEffort
  container yields to every other);
- cpu.quota from the cpu limit over a 100 ms period (MilliCPUToQuota: millicores * 100
  microseconds, at least 1 ms); no limit, no quota;
- memory.limit from the memory limit, and memory.swap equal to it, so the container
  cannot swap past its limit; memory.reservation from the memory request (a soft
  limit: cgroup v1 memory.soft_limit_in_bytes, v2 memory.low);
- on cgroup v2, `memory.oom.group = 1` (kubelet's default there): an OOM kill takes
  the whole container, not one of its processes.

runc converts all of these for cgroup v2 itself (shares to cpu.weight, quota and
period to cpu.max, swap to memory.swap.max). No pids limit is set (kubelet's
default: none per container).
"""

from __future__ import annotations

from typing import Any

from netlab.spec.model import Resources

MIN_SHARES = 2
MAX_SHARES = 262144
SHARES_PER_CPU = 1024
MILLI_CPU_TO_CPU = 1000
QUOTA_PERIOD = 100_000  # microseconds: CFS' default period, kubelet's
MIN_QUOTA_PERIOD = 1000  # microseconds: the kernel refuses a smaller quota


def milli_cpu_to_shares(millis: int) -> int:
    """Kubernetes' MilliCPUToShares."""
    if millis == 0:
        return MIN_SHARES
    return max(MIN_SHARES, min(MAX_SHARES, millis * SHARES_PER_CPU // MILLI_CPU_TO_CPU))


def milli_cpu_to_quota(millis: int, period: int = QUOTA_PERIOD) -> int:
    """Kubernetes' MilliCPUToQuota: microseconds of cpu per period (0: no limit)."""
    if millis == 0:
        return 0
    return max(MIN_QUOTA_PERIOD, millis * period // MILLI_CPU_TO_CPU)


def linux_resources(resources: Resources, cgroup2: bool = False) -> dict[str, Any]:
    """The OCI `linux.resources` of a container with these requests and limits
    (`cgroup2`: the host's cgroups are v2 only, as on Debian 12)."""
    requests, limits = resources.requests, resources.limits
    cpu: dict[str, int] = {
        "shares": milli_cpu_to_shares(requests.cpu or 0),
        "period": QUOTA_PERIOD,
    }
    quota = milli_cpu_to_quota(limits.cpu or 0)
    if quota:
        cpu["quota"] = quota
    out: dict[str, Any] = {"cpu": cpu}
    memory: dict[str, int] = {}
    if limits.memory:
        memory["limit"] = memory["swap"] = limits.memory
    if requests.memory:
        memory["reservation"] = requests.memory
    if memory:
        out["memory"] = memory
    if cgroup2:
        out["unified"] = {"memory.oom.group": "1"}
    return out
