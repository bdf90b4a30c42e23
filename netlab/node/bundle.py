"""OCI runtime bundles: the `config.json` runc reads, written the way containerd's
CRI plugin writes it for a pod's container (the runtime spec's defaults, the pod
sandbox's shared namespaces joined by path, kubelet's /etc files bind-mounted)."""

from __future__ import annotations

import json
import os
import resource
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from netlab.node.sandbox import SandboxPaths
from netlab.node.security import (
    LinuxSecurity,
    effective_context,
    oci_linux_security,
    oci_process_security,
)

OCI_VERSION = "1.0.2"
NOFILE = 1048576  # as Docker and containerd give a container, where the host allows it


def nofile() -> int:
    """Open files a container may have: NOFILE, or the host's hard limit if lower."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)


def default_process_security() -> dict:
    """Root, the runtime's default capabilities, privilege escalation allowed."""
    return oci_process_security(effective_context(None, None), None)


@dataclass(frozen=True)
class Bind:
    source: Path
    destination: str
    readonly: bool = True


@dataclass(frozen=True)
class ContainerConfig:
    """What one container's config.json says."""

    args: Sequence[str]
    env: Mapping[str, str]
    cwd: str
    rootfs: Path
    netns: Path
    sandbox: SandboxPaths
    cgroups_path: str
    etc: Mapping[str, Path]  # /etc/hosts etc. -> the pod's file
    binds: Sequence[Bind] = ()
    pid_namespace: Path | None = None  # the pod's (shareProcessNamespace), else its own
    process_security: Mapping = field(default_factory=default_process_security)
    linux_security: LinuxSecurity = field(
        default_factory=lambda: oci_linux_security(effective_context(None, None))
    )
    resources: Mapping = field(default_factory=dict)  # OCI linux.resources


def _mounts(config: ContainerConfig) -> list[dict]:
    security = config.linux_security
    sys_options = ["nosuid", "noexec", "nodev"] + (["ro"] if security.sysfs_readonly else [])
    cgroup_options = ["nosuid", "noexec", "nodev", "relatime"]
    cgroup_options += ["ro"] if security.cgroupfs_readonly else []
    if security.all_devices:  # privileged: the host's devices
        dev = {"destination": "/dev", "type": "bind", "source": "/dev", "options": ["rbind"]}
    else:
        dev = {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        }
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        dev,
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_options},
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": cgroup_options,
        },
    ]
    for destination, source in config.etc.items():
        mounts.append(
            {
                "destination": destination,
                "type": "bind",
                "source": str(source),
                "options": ["rbind", "rprivate", "rw"],
            }
        )
    for bind in config.binds:
        options = ["rbind", "rprivate", "ro" if bind.readonly else "rw"]
        mounts.append(
            {
                "destination": bind.destination,
                "type": "bind",
                "source": str(bind.source),
                "options": options,
            }
        )
    return mounts


def config_json(config: ContainerConfig) -> dict:
    """The OCI runtime spec document for runc."""
    namespaces = [
        {"type": "network", "path": str(config.netns)},
        {"type": "uts", "path": str(config.sandbox.uts)},
        {"type": "ipc", "path": str(config.sandbox.ipc)},
        {"type": "mount"},
        {"type": "pid", "path": str(config.pid_namespace)}
        if config.pid_namespace is not None
        else {"type": "pid"},
    ]
    linux: dict = {
        "namespaces": namespaces,
        "cgroupsPath": config.cgroups_path,
        "resources": {"devices": [{"allow": False, "access": "rwm"}], **config.resources},
        # the host's copy of the root is unmounted once the container runs: nothing of
        # the host's mount events may reach the container's mounts, nor theirs ours
        "rootfsPropagation": "private",
    }
    security = config.linux_security
    if security.all_devices:
        linux["resources"]["devices"] = [{"allow": True, "access": "rwm"}]
    if security.masked_paths:
        linux["maskedPaths"] = list(security.masked_paths)
    if security.readonly_paths:
        linux["readonlyPaths"] = list(security.readonly_paths)
    process = {
        "terminal": False,
        "args": list(config.args),
        "env": [f"{k}={v}" for k, v in config.env.items()],
        "cwd": config.cwd or "/",
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile(), "soft": nofile()}],
        **config.process_security,
    }
    return {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": str(config.rootfs), "readonly": security.readonly_root},
        "mounts": _mounts(config),
        "linux": linux,
    }


def write(bundle: Path, config: ContainerConfig) -> None:
    """Write `bundle/config.json` (the bundle directory exists)."""
    path = bundle / "config.json"
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(config_json(config), f)
    os.replace(tmp, path)
