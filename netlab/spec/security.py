"""`securityContext` of a pod and of its containers: the typed fields, and reading them.

Checked as kube-apiserver checks them (ValidatePodSecurityContext and
ValidateSecurityContext), in its words where it has them, plus one check it leaves
to the runtime: capability names must exist (runc would skip an unknown one with a
warning, so `CAP_FLY` would silently grant nothing). What the fields mean for the
OCI runtime config is `netlab.node.security`'s business.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from netlab.spec.validate import Checker, did_you_mean, item, join

# Linux capabilities by number (linux/capability.h); the running kernel has the first
# cap_last_cap + 1 of them.
CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
BARE_CAPABILITIES = tuple(c.removeprefix("CAP_") for c in CAPABILITIES)  # as manifests write them
ALL = "ALL"  # in capabilities.add or drop: every capability
MAX_ID = 2147483647  # uids and gids: validation.IsValidUserID / IsValidGroupID
ID_RANGE = f"must be between 0 and {MAX_ID}, inclusive"
SECCOMP_TYPES = ("Localhost", "RuntimeDefault", "Unconfined")
PROC_MOUNT_TYPES = ("Default", "Unmasked")
SYSCTL_SEGMENT = r"[a-z0-9]([-_a-z0-9]*[a-z0-9])?"
SYSCTL_FMT = rf"({SYSCTL_SEGMENT}[\./])*{SYSCTL_SEGMENT}"
SYSCTL_RE = re.compile(SYSCTL_FMT)
SYSCTL_MAX = 253

# Kubernetes fields netlab takes, type-checks and keeps in the object, and does not act on
KEPT_POD_FIELDS = {
    "seLinuxOptions": "mapping",
    "windowsOptions": "mapping",
    "appArmorProfile": "mapping",
    "fsGroupChangePolicy": "string",
    "supplementalGroupsPolicy": "string",
    "seLinuxChangePolicy": "string",
}
KEPT_CONTAINER_FIELDS = {
    "seLinuxOptions": "mapping",
    "windowsOptions": "mapping",
    "appArmorProfile": "mapping",
}
POD_ONLY = ("fsGroup", "supplementalGroups", "sysctls")
CONTAINER_ONLY = (
    "privileged",
    "allowPrivilegeEscalation",
    "capabilities",
    "readOnlyRootFilesystem",
    "procMount",
)
COMMON = ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile")
POD_SECURITY_FIELDS = (*COMMON, *POD_ONLY, *KEPT_POD_FIELDS)
CONTAINER_SECURITY_FIELDS = (*COMMON, *CONTAINER_ONLY, *KEPT_CONTAINER_FIELDS)


@dataclass(frozen=True)
class SeccompProfile:
    """seccompProfile, recorded (netlab writes no seccomp filter; Kubernetes' default
    without one is Unconfined)."""

    type: str  # RuntimeDefault | Unconfined | Localhost
    localhost_profile: str | None = None


@dataclass(frozen=True)
class PodSecurity:
    """spec.securityContext as read; None in a field: not set."""

    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool | None = None
    fs_group: int | None = None
    supplemental_groups: tuple[int, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()  # recorded
    seccomp_profile: SeccompProfile | None = None  # recorded


@dataclass(frozen=True)
class ContainerSecurity:
    """spec.containers[].securityContext as read; None in a field: not set (the pod's
    value, or the default, applies). Capability names are canonical: CAP_NET_ADMIN, ALL."""

    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool | None = None
    read_only_root_filesystem: bool | None = None
    privileged: bool | None = None
    allow_privilege_escalation: bool | None = None
    capabilities_add: tuple[str, ...] = ()
    capabilities_drop: tuple[str, ...] = ()
    proc_mount: str | None = None  # recorded: Default (Unmasked needs user namespaces)
    seccomp_profile: SeccompProfile | None = None  # recorded


def capability_name(word: str) -> str | None:
    """The canonical name of a capability as a manifest may write it (NET_ADMIN,
    cap_net_admin, CAP_NET_ADMIN -> CAP_NET_ADMIN; all -> ALL); None if there is none."""
    upper = word.strip().upper()
    if upper == ALL:
        return ALL
    name = upper if upper.startswith("CAP_") else f"CAP_{upper}"
    return name if name in CAPABILITIES else None


def _quoted(value: Any) -> str:
    """A value as kube-apiserver quotes it in a message (JSON)."""
    return json.dumps(value)


def _id(obj: dict, key: str, path: str, checker: Checker, fix: str) -> int | None:
    """A uid or gid field: an integer 0..2147483647."""
    value = checker.take(obj, key, path, "integer")
    if value is not None and not 0 <= value <= MAX_ID:
        checker.add(join(path, key), f"Invalid value: {value}: {ID_RANGE}", fix)
        return None
    return value


def _misplaced(
    value: dict, path: str, fields: tuple[str, ...], where: str, fix: str, checker: Checker
) -> None:
    """A field of the other level's securityContext (capabilities on the pod's)."""
    for key in fields:
        if key in value:
            checker.add(join(path, key), f"unknown field {key!r}: it belongs in {where}", fix)


def _seccomp(sc: dict, path: str, checker: Checker) -> SeccompProfile | None:
    if sc.get("seccompProfile") is None:
        return None
    here = join(path, "seccompProfile")
    profile = checker.mapping(sc["seccompProfile"], here, ("type", "localhostProfile"), ["type"])
    if profile is None:
        return None
    kind = checker.take(profile, "type", here, "string")
    local = checker.take(profile, "localhostProfile", here, "string")
    if kind is not None and kind not in SECCOMP_TYPES:
        checker.add(
            join(here, "type"),
            f"Unsupported value: {_quoted(kind)}: supported values: "
            + ", ".join(_quoted(t) for t in SECCOMP_TYPES),
            did_you_mean(kind, SECCOMP_TYPES, "use one of"),
        )
        return None
    if kind == "Localhost" and local is None and "localhostProfile" not in profile:
        checker.add(
            join(here, "localhostProfile"),
            "Required value: must be set when seccomp type is Localhost",
            "name a profile file under the kubelet's seccomp directory",
        )
    elif kind not in (None, "Localhost") and local is not None:
        checker.add(
            join(here, "localhostProfile"),
            f"Invalid value: {_quoted(local)}: can only be set when seccomp type is Localhost",
            "remove localhostProfile, or use type: Localhost",
        )
    return None if kind is None else SeccompProfile(kind, local)


def _sysctls(sc: dict, path: str, checker: Checker) -> tuple[tuple[str, str], ...]:
    entries = checker.take(sc, "sysctls", path, "list", default=[]) or []
    found: dict[str, str] = {}
    for i, entry in enumerate(entries):
        here = item(join(path, "sysctls"), i)
        sysctl = checker.mapping(entry, here, ("name", "value"), required=("name", "value"))
        if sysctl is None:
            continue
        name = checker.take(sysctl, "name", here, "string")
        value = checker.take(sysctl, "value", here, "string")
        if name is not None and (len(name) > SYSCTL_MAX or not SYSCTL_RE.fullmatch(name)):
            checker.add(
                join(here, "name"),
                f"Invalid value: {_quoted(name)}: must have at most {SYSCTL_MAX} characters "
                f"and match regex {SYSCTL_FMT}",
                "write a sysctl name such as net.ipv4.ip_local_port_range",
            )
        elif name is not None and name in found:
            checker.add(join(here, "name"), f"Duplicate value: {_quoted(name)}", "set it once")
        elif name is not None and value is not None:
            found[name] = value
    return tuple(found.items())


def _kept(sc: dict, path: str, fields: dict[str, str], checker: Checker) -> None:
    for key, kind in fields.items():
        checker.take(sc, key, path, kind)


def read_pod_security(value: Any, path: str, checker: Checker) -> PodSecurity | None:
    """A pod's spec.securityContext at path (None: absent or not a mapping)."""
    if value is None:
        return None
    sc = checker.mapping(value, path, (*POD_SECURITY_FIELDS, *CONTAINER_ONLY))
    if sc is None:
        return None
    _misplaced(
        sc,
        path,
        CONTAINER_ONLY,
        "a container's securityContext",
        "move it to containers[*].securityContext",
        checker,
    )
    _kept(sc, path, KEPT_POD_FIELDS, checker)
    groups = checker.take(sc, "supplementalGroups", path, "list", default=[]) or []
    good: list[int] = []
    for i, gid in enumerate(groups):
        here = item(join(path, "supplementalGroups"), i)
        if not checker.check_type(gid, here, "integer"):
            continue
        if not 0 <= gid <= MAX_ID:
            checker.add(here, f"Invalid value: {gid}: {ID_RANGE}", "use a gid, e.g. 2000")
            continue
        good.append(gid)
    return PodSecurity(
        run_as_user=_id(sc, "runAsUser", path, checker, "use a uid, e.g. 1000 (0 is root)"),
        run_as_group=_id(sc, "runAsGroup", path, checker, "use a gid, e.g. 1000 (0 is root)"),
        run_as_non_root=checker.take(sc, "runAsNonRoot", path, "boolean"),
        fs_group=_id(sc, "fsGroup", path, checker, "use a gid, e.g. 2000"),
        supplemental_groups=tuple(good),
        sysctls=_sysctls(sc, path, checker),
        seccomp_profile=_seccomp(sc, path, checker),
    )


def _capabilities(sc: dict, path: str, checker: Checker) -> dict[str, tuple[str, ...]]:
    """capabilities.add and .drop, each name canonical; unknown names are problems."""
    found: dict[str, tuple[str, ...]] = {"add": (), "drop": ()}
    if sc.get("capabilities") is None:
        return found
    here = join(path, "capabilities")
    caps = checker.mapping(sc["capabilities"], here, ("add", "drop"))
    for key in ("add", "drop") if caps is not None else ():
        names = checker.str_list(caps, key, here) or []
        canonical = []
        for i, word in enumerate(names):
            name = capability_name(word)
            if name is None:
                bare = word.strip().upper().removeprefix("CAP_")
                checker.add(
                    item(join(here, key), i),
                    f"Unsupported value: {_quoted(word)}",
                    did_you_mean(bare, [*BARE_CAPABILITIES, ALL], "Linux capabilities are"),
                )
            elif name not in canonical:
                canonical.append(name)
        found[key] = tuple(canonical)
    return found


def read_container_security(value: Any, path: str, checker: Checker) -> ContainerSecurity | None:
    """A container's securityContext at path (None: absent or not a mapping)."""
    if value is None:
        return None
    sc = checker.mapping(value, path, (*CONTAINER_SECURITY_FIELDS, *POD_ONLY))
    if sc is None:
        return None
    _misplaced(
        sc,
        path,
        POD_ONLY,
        "the pod's securityContext",
        "move it to the pod's securityContext (beside containers:)",
        checker,
    )
    _kept(sc, path, KEPT_CONTAINER_FIELDS, checker)
    caps = _capabilities(sc, path, checker)
    privileged = checker.take(sc, "privileged", path, "boolean")
    escalation = checker.take(sc, "allowPrivilegeEscalation", path, "boolean")
    proc_mount = checker.take(sc, "procMount", path, "string")
    if proc_mount is not None and proc_mount not in PROC_MOUNT_TYPES:
        checker.add(
            join(path, "procMount"),
            f"Unsupported value: {_quoted(proc_mount)}: supported values: "
            + ", ".join(_quoted(t) for t in PROC_MOUNT_TYPES),
            "remove procMount (Default is the default)",
        )
    elif proc_mount == "Unmasked":
        checker.add(
            join(path, "procMount"),
            'Invalid value: "Unmasked": `hostUsers` must be false to use `Unmasked`',
            "remove procMount: netlab runs pods without user namespaces",
        )
    if escalation is False and privileged:
        checker.add(
            path,
            "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            "remove allowPrivilegeEscalation: false (a privileged container can always "
            "escalate), or privileged: true",
        )
    if escalation is False and "CAP_SYS_ADMIN" in caps["add"]:
        checker.add(
            path,
            "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN",
            "remove allowPrivilegeEscalation: false (CAP_SYS_ADMIN can always escalate), "
            "or SYS_ADMIN from capabilities.add",
        )
    return ContainerSecurity(
        run_as_user=_id(sc, "runAsUser", path, checker, "use a uid, e.g. 1000 (0 is root)"),
        run_as_group=_id(sc, "runAsGroup", path, checker, "use a gid, e.g. 1000 (0 is root)"),
        run_as_non_root=checker.take(sc, "runAsNonRoot", path, "boolean"),
        read_only_root_filesystem=checker.take(sc, "readOnlyRootFilesystem", path, "boolean"),
        privileged=privileged,
        allow_privilege_escalation=escalation,
        capabilities_add=caps["add"],
        capabilities_drop=caps["drop"],
        proc_mount=proc_mount if proc_mount in PROC_MOUNT_TYPES else None,
        seccomp_profile=_seccomp(sc, path, checker),
    )
