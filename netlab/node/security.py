"""What a pod's and a container's securityContext mean for the OCI runtime config.

Pure decisions, made as kubelet and containerd's CRI plugin make them:
`effective_context` merges the pod's context with the container's (kubelet's
DetermineEffectiveSecurityContext); `oci_process_security` gives config.json's
`process.user`, `process.capabilities` and `process.noNewPrivileges`;
`oci_linux_security` the rest (read-only root, what privileged changes) as flags
for the bundle writer; `run_as_non_root_error` is kubelet's check before it creates
a container (its CreateContainerConfigError messages). The only files read are the
image root's /etc/passwd and /etc/group (to resolve a user name, as containerd does)
and /proc/self/status (what "every capability" means: the ones this process has).
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass
from pathlib import Path

from netlab.errors import NetlabError
from netlab.spec.security import (
    ALL,
    CAPABILITIES,
    MAX_ID,
    ContainerSecurity,
    PodSecurity,
    SeccompProfile,
)

# containerd's default capabilities (and so the CRI's): not all of root's
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
# kubelet's linux.maskedPaths and readonlyPaths for procMount Default (none when privileged)
MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
SELF_STATUS = Path("/proc/self/status")
SYMLINK_HOPS = 40  # as the kernel's MAXSYMLINKS


class UserLookupError(NetlabError):
    """The image's user (or runAsUser's name) is not in the image's /etc/passwd."""


@dataclass(frozen=True)
class SecurityContext:
    """A container's effective securityContext: the container's fields over the pod's,
    and the pod-only ones (fsGroup, supplementalGroups, sysctls)."""

    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool = False
    read_only_root_filesystem: bool = False
    privileged: bool = False
    allow_privilege_escalation: bool | None = None  # None: not set (escalation allowed)
    capabilities_add: tuple[str, ...] = ()  # canonical: CAP_NET_ADMIN, ALL
    capabilities_drop: tuple[str, ...] = ()
    fs_group: int | None = None
    supplemental_groups: tuple[int, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()  # recorded
    seccomp_profile: SeccompProfile | None = None  # recorded
    proc_mount: str | None = None  # recorded


def effective_context(
    pod: PodSecurity | None, container: ContainerSecurity | None
) -> SecurityContext:
    """kubelet's DetermineEffectiveSecurityContext: each field the container sets wins
    over the pod's (runAsUser, runAsGroup, runAsNonRoot, seccompProfile); the rest are
    the container's or the pod's alone. Either may be None (no securityContext)."""
    p = pod or PodSecurity()
    c = container or ContainerSecurity()

    def first(mine, theirs):
        return theirs if mine is None else mine

    return SecurityContext(
        run_as_user=first(c.run_as_user, p.run_as_user),
        run_as_group=first(c.run_as_group, p.run_as_group),
        run_as_non_root=bool(first(c.run_as_non_root, p.run_as_non_root)),
        read_only_root_filesystem=bool(c.read_only_root_filesystem),
        privileged=bool(c.privileged),
        allow_privilege_escalation=c.allow_privilege_escalation,
        capabilities_add=c.capabilities_add,
        capabilities_drop=c.capabilities_drop,
        fs_group=p.fs_group,
        supplemental_groups=p.supplemental_groups,
        sysctls=p.sysctls,
        seccomp_profile=first(c.seccomp_profile, p.seccomp_profile),
        proc_mount=c.proc_mount,
    )


# -- capabilities --------------------------------------------------------------------


def current_capabilities(status: Path = SELF_STATUS) -> tuple[str, ...]:
    """Every capability this process has (its CapEff), by name: what "all" means for the
    containers it starts, as containerd's cap.Current() decides it. Not simply every one
    the kernel has (cap_last_cap): a runtime cannot grant one outside its own bounding
    set, and runc then fails the container ("unable to apply caps") — a sandbox without
    CAP_SYS_RESOURCE, as this machine's, is such a case. A bit beyond the table (a
    kernel newer than it) is left out."""
    for line in status.read_text().splitlines():
        if line.startswith("CapEff:"):
            bits = int(line.split()[1], 16)
            return tuple(name for i, name in enumerate(CAPABILITIES) if bits >> i & 1)
    raise ValueError(f"no CapEff line in {status}")


def capability_set(ctx: SecurityContext, all_caps: tuple[str, ...]) -> list[str]:
    """The container's capabilities (bounding = effective = permitted), as containerd
    computes them: privileged gets every one; otherwise the default set, then "ALL" in
    add (every one), then "ALL" in drop (none), then each named add, then each named
    drop. One outside all_caps is left out (the kernel or the runtime lacks it)."""
    if ctx.privileged:
        return list(all_caps)
    caps = list(DEFAULT_CAPABILITIES)
    if ALL in ctx.capabilities_add:
        caps = list(all_caps)
    if ALL in ctx.capabilities_drop:
        caps = []
    caps += [c for c in ctx.capabilities_add if c != ALL and c not in caps]
    return [c for c in caps if c not in ctx.capabilities_drop and c in all_caps]


def no_new_privileges(ctx: SecurityContext) -> bool:
    """no_new_privs: set when allowPrivilegeEscalation is false, which Kubernetes never
    lets a privileged container or one given CAP_SYS_ADMIN have (escalation is always
    allowed for those)."""
    return (
        ctx.allow_privilege_escalation is False
        and not ctx.privileged
        and "CAP_SYS_ADMIN" not in ctx.capabilities_add
    )


# -- users ---------------------------------------------------------------------------


def image_user_id(image_user: str | None) -> tuple[int | None, str]:
    """The image config's User as the runtime reports it to kubelet (containerd's
    getUserFromImage): (uid, "") if the part before ':' is numeric, else (None, name);
    the group part is not reported. (None, "") for an image with no user."""
    user = (image_user or "").split(":")[0]
    if not user:
        return None, ""
    try:
        return int(user), ""
    except ValueError:
        return None, user


def _in_root(root: Path, path: str) -> Path:
    """root/path with every symbolic link resolved inside root (as containerd's
    fs.RootPath): an image's /etc/passwd -> /x names root/x, never the host's /x."""
    parts = [p for p in path.split("/") if p]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            resolved = resolved[:-1]
            continue
        candidate = root.joinpath(*resolved, part)
        if not candidate.is_symlink():
            resolved.append(part)
            continue
        hops += 1
        if hops > SYMLINK_HOPS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(candidate))
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p] + parts
    return root.joinpath(*resolved)


def _entries(rootfs: Path | None, name: str) -> list[list[str]] | None:
    """The lines of rootfs/etc/<name> with at least 4 fields, split at ':' (comments
    and short lines skipped); None if there is no such file."""
    if rootfs is None:
        return None
    try:
        text = _in_root(rootfs, f"/etc/{name}").read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    lines = (line.strip() for line in text.splitlines())
    return [line.split(":") for line in lines if not line.startswith("#") and line.count(":") >= 3]


def _passwd(rootfs: Path | None) -> list[tuple[str, int, int]] | None:
    """(name, uid, gid) of each user in rootfs/etc/passwd; None if there is none."""
    lines = _entries(rootfs, "passwd")
    if lines is None:
        return None
    return [(f[0], int(f[2]), int(f[3])) for f in lines if f[2].isdigit() and f[3].isdigit()]


def _groups(rootfs: Path | None) -> list[tuple[str, int, tuple[str, ...]]]:
    """(name, gid, members) of each group in rootfs/etc/group (none if no file)."""
    lines = _entries(rootfs, "group") or []
    return [
        (f[0], int(f[2]), tuple(m for m in f[3].split(",") if m)) for f in lines if f[2].isdigit()
    ]


def _user(ctx: SecurityContext, image_user: str | None, rootfs: Path | None) -> dict:
    """process.user: kubelet passes runAsUser, else the image's numeric uid or its user
    name, else uid 0; containerd resolves it against the image's /etc/passwd (a uid's
    gid is its passwd entry's, or 0), runAsGroup overrides the gid, and additionalGids
    are the gid, the user's groups in /etc/group, fsGroup and supplementalGroups.

    As with kubelet and containerd, an image User's group ("1000:1000") is not used:
    kubelet reports the uid alone (kubernetes/kubernetes#61967, containerd#11607);
    runAsGroup sets the gid.
    """
    uid, name = ctx.run_as_user, ""
    if uid is None:
        uid, name = image_user_id(image_user)
        if uid is None and not name:
            uid = 0  # kubelet: an image with no user runs as root
    users = _passwd(rootfs)
    if name:
        match = [u for u in users or () if u[0] == name]
        if not match:
            raise UserLookupError(f"unable to find user {name}: no matching entries in passwd file")
        uid, gid = match[0][1], match[0][2]
    else:
        match = [u for u in users or () if u[1] == uid]
        name, gid = (match[0][0], match[0][2]) if match else ("", 0)
    if ctx.run_as_group is not None:
        gid = ctx.run_as_group
    member_of = [g[1] for g in _groups(rootfs) if name and g[0] != name and name in g[2]]
    gids = {gid, *member_of, *([ctx.fs_group] if ctx.fs_group is not None else ())}
    gids.update(ctx.supplemental_groups)
    return {"uid": uid, "gid": gid, "additionalGids": sorted(gids)}


def oci_process_security(
    ctx: SecurityContext,
    image_user: str | None,
    rootfs: Path | None = None,
    *,
    all_caps: tuple[str, ...] | None = None,
) -> dict:
    """config.json's `process` security fields for a container:

        {"user": {"uid": int, "gid": int, "additionalGids": [int, ...]},
         "capabilities": {"bounding": [...], "effective": [...], "permitted": [...],
                          "inheritable": [], "ambient": []},
         "noNewPrivileges": bool}

    `image_user` is the image config's User ("1000", "1000:1000", "nobody"; None or ""
    for none); `rootfs` the image's root, whose /etc/passwd and /etc/group resolve
    names and groups (None: no lookups, a name cannot be resolved); `all_caps` every
    capability there is (None: this process's, current_capabilities()). Raises UserLookupError for a user name
    the image does not have (containerd fails the container then)."""
    caps = capability_set(ctx, current_capabilities() if all_caps is None else all_caps)
    return {
        "user": _user(ctx, image_user, rootfs),
        "capabilities": {
            "bounding": list(caps),
            "effective": list(caps),
            "permitted": list(caps),
            "inheritable": [],
            "ambient": [],
        },
        "noNewPrivileges": no_new_privileges(ctx),
    }


# -- the rest of config.json ------------------------------------------------------------


@dataclass(frozen=True)
class LinuxSecurity:
    """What the securityContext changes in config.json outside `process`, for the
    bundle writer to apply (containerd's WithPrivileged and WithRootFSReadonly)."""

    readonly_root: bool  # root.readonly
    privileged: bool
    masked_paths: tuple[str, ...]  # linux.maskedPaths: kubelet's defaults, none if privileged
    readonly_paths: tuple[str, ...]  # linux.readonlyPaths: likewise
    sysfs_readonly: bool  # the /sys mount has "ro" (runc's default); not when privileged
    cgroupfs_readonly: bool  # the /sys/fs/cgroup mount has "ro"; not when privileged
    # privileged: linux.resources.devices is [{"allow": true, "access": "rwm"}] and the
    # host's devices appear under /dev (containerd's WithHostDevices, WithAllDevicesAllowed)
    all_devices: bool


def oci_linux_security(ctx: SecurityContext) -> LinuxSecurity:
    """The decisions for root, mounts, masked paths and devices."""
    privileged = ctx.privileged
    return LinuxSecurity(
        readonly_root=ctx.read_only_root_filesystem,
        privileged=privileged,
        masked_paths=() if privileged else MASKED_PATHS,
        readonly_paths=() if privileged else READONLY_PATHS,
        sysfs_readonly=not privileged,
        cgroupfs_readonly=not privileged,
        all_devices=privileged,
    )


# -- kubelet's runAsNonRoot check --------------------------------------------------------


def pod_desc(name: str, namespace: str, uid: str) -> str:
    """How kubelet names a pod in messages (format.Pod): name_namespace(uid)."""
    return f"{name}_{namespace}({uid})"


def run_as_non_root_error(
    ctx: SecurityContext, image_user: str | None, *, pod: str, container: str
) -> str | None:
    """kubelet's verifyRunAsNonRoot: the CreateContainerConfigError message if
    runAsNonRoot is set and the container would (or might) run as root, else None.
    `pod` is pod_desc(...); `image_user` the image config's User (a name is never
    resolved here: kubelet cannot, so it refuses it)."""
    if not ctx.run_as_non_root:
        return None
    where = f"(pod: {json.dumps(pod)}, container: {container})"
    if ctx.run_as_user is not None:
        if ctx.run_as_user == 0:
            return f"container's runAsUser breaks non-root policy {where}"
        return None
    uid, name = image_user_id(image_user)
    if uid is None and name:
        return (
            f"container has runAsNonRoot and image has non-numeric user ({name}), "
            f"cannot verify user is non-root {where}"
        )
    if not uid:  # no user in the image: root
        return f"container has runAsNonRoot and image will run as root {where}"
    if not 0 <= uid <= MAX_ID:
        return (
            f"container has runAsNonRoot and image has an invalid user id ({uid}). "
            f"(Must be 1-({MAX_ID})): must be between 0 and {MAX_ID}, inclusive {where}"
        )
    return None
