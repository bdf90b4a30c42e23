"""securityContext -> the OCI runtime config, as kubelet and containerd decide it."""

from __future__ import annotations

from pathlib import Path

import pytest

from netlab.node.security import (
    DEFAULT_CAPABILITIES,
    MASKED_PATHS,
    READONLY_PATHS,
    SecurityContext,
    UserLookupError,
    capability_set,
    current_capabilities,
    effective_context,
    image_user_id,
    oci_linux_security,
    oci_process_security,
    pod_desc,
    run_as_non_root_error,
)
from netlab.spec import parse_lab
from netlab.spec.security import CAPABILITIES, ContainerSecurity, PodSecurity

KERNEL = CAPABILITIES  # a kernel with every capability of the table (cap_last_cap 40)
POD = pod_desc("web", "default", "1234")


def process(ctx: SecurityContext, image_user: str | None = None, rootfs: Path | None = None):
    return oci_process_security(ctx, image_user, rootfs, all_caps=KERNEL)


def caps(**fields) -> list[str]:
    return process(SecurityContext(**fields))["capabilities"]["bounding"]


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """An image root with a passwd and group file as Debian's base-passwd has them."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "# a comment\n"
        "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
        "app:x:1000:1000::/home/app:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        "broken line\n"
    )
    (etc / "group").write_text(
        "root:x:0:\nadm:x:4:app,daemon\nstaff:x:50:app\napp:x:1000:app\nnogroup:x:65534:\n"
    )
    return tmp_path


def test_defaults_are_containerds_set_and_root() -> None:
    found = process(SecurityContext())
    assert found == {
        "user": {"uid": 0, "gid": 0, "additionalGids": [0]},
        "capabilities": {
            "bounding": list(DEFAULT_CAPABILITIES),
            "effective": list(DEFAULT_CAPABILITIES),
            "permitted": list(DEFAULT_CAPABILITIES),
            "inheritable": [],
            "ambient": [],
        },
        "noNewPrivileges": False,
    }
    assert len(DEFAULT_CAPABILITIES) == 14 and "CAP_SYS_ADMIN" not in DEFAULT_CAPABILITIES


def test_no_security_context_at_all_is_the_default() -> None:
    assert effective_context(None, None) == SecurityContext()


def test_drop_all_then_add_one() -> None:
    assert caps(capabilities_drop=("ALL",), capabilities_add=("CAP_NET_BIND_SERVICE",)) == [
        "CAP_NET_BIND_SERVICE"
    ]


def test_add_and_drop_named() -> None:
    found = caps(capabilities_add=("CAP_NET_ADMIN",), capabilities_drop=("CAP_KILL", "CAP_CHOWN"))
    assert "CAP_NET_ADMIN" in found and "CAP_KILL" not in found and "CAP_CHOWN" not in found
    assert len(found) == 13


def test_add_all_then_drop_one() -> None:
    found = caps(capabilities_add=("ALL",), capabilities_drop=("CAP_CHOWN",))
    assert found == [c for c in KERNEL if c != "CAP_CHOWN"]


def test_add_all_and_drop_all_leaves_the_named_adds() -> None:
    # containerd: ALL in add, then ALL in drop, then the named adds
    assert caps(capabilities_add=("ALL", "CAP_KILL"), capabilities_drop=("ALL",)) == ["CAP_KILL"]


def test_a_capability_the_kernel_lacks_is_left_out() -> None:
    ctx = SecurityContext(capabilities_add=("CAP_BPF",))
    old_kernel = CAPABILITIES[:38]  # cap_last_cap 37: no PERFMON, BPF, CHECKPOINT_RESTORE
    assert "CAP_BPF" not in capability_set(ctx, old_kernel)
    assert "CAP_BPF" in capability_set(ctx, KERNEL)


def test_no_new_privileges() -> None:
    assert process(SecurityContext(allow_privilege_escalation=False))["noNewPrivileges"] is True
    assert process(SecurityContext(allow_privilege_escalation=True))["noNewPrivileges"] is False
    added = SecurityContext(allow_privilege_escalation=False, capabilities_add=("CAP_SYS_ADMIN",))
    assert process(added)["noNewPrivileges"] is False  # CAP_SYS_ADMIN can always escalate


def test_privileged_gets_every_capability_and_no_masks() -> None:
    ctx = SecurityContext(privileged=True, capabilities_drop=("ALL",))  # drop is not applied
    found = process(ctx)
    assert found["capabilities"]["bounding"] == list(KERNEL)
    assert found["capabilities"]["effective"] == list(KERNEL)
    assert found["noNewPrivileges"] is False
    linux = oci_linux_security(ctx)
    assert linux.privileged and linux.all_devices
    assert linux.masked_paths == () and linux.readonly_paths == ()
    assert not linux.sysfs_readonly and not linux.cgroupfs_readonly


def test_unprivileged_linux_defaults_and_readonly_root() -> None:
    linux = oci_linux_security(SecurityContext(read_only_root_filesystem=True))
    assert linux.readonly_root and not linux.privileged and not linux.all_devices
    assert linux.masked_paths == MASKED_PATHS and linux.readonly_paths == READONLY_PATHS
    assert linux.sysfs_readonly and linux.cgroupfs_readonly
    assert not oci_linux_security(SecurityContext()).readonly_root


def test_current_capabilities_from_cap_eff(tmp_path: Path) -> None:
    status = tmp_path / "status"
    # this machine's sandbox: every capability but CAP_SYS_RESOURCE (bit 24)
    status.write_text("Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n")
    found = current_capabilities(status)
    assert found == tuple(c for c in CAPABILITIES if c != "CAP_SYS_RESOURCE")
    status.write_text("CapEff:\tffffffffffffffff\n")  # a kernel newer than the table
    assert current_capabilities(status) == CAPABILITIES
    status.write_text("CapEff:\t0000000000000000\n")
    assert current_capabilities(status) == ()
    real = current_capabilities()  # this process's (root)
    assert set(DEFAULT_CAPABILITIES) <= set(real) and "CAP_SYS_ADMIN" in real


def test_privileged_all_means_this_process_s(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("CapEff:\t000001fffeffffff\n")
    ctx = SecurityContext(privileged=True)
    found = oci_process_security(ctx, None, all_caps=current_capabilities(status))
    assert "CAP_SYS_RESOURCE" not in found["capabilities"]["bounding"]
    assert len(found["capabilities"]["bounding"]) == 40


def test_container_fields_override_the_pods() -> None:
    pod = PodSecurity(run_as_user=1000, run_as_group=3000, run_as_non_root=True, fs_group=2000)
    ctx = effective_context(pod, ContainerSecurity(run_as_user=2000))
    assert (ctx.run_as_user, ctx.run_as_group, ctx.run_as_non_root) == (2000, 3000, True)
    assert ctx.fs_group == 2000
    assert effective_context(pod, None).run_as_user == 1000
    off = effective_context(pod, ContainerSecurity(run_as_non_root=False))
    assert off.run_as_non_root is False
    user = process(effective_context(pod, ContainerSecurity(run_as_user=2000)))["user"]
    assert user == {"uid": 2000, "gid": 3000, "additionalGids": [2000, 3000]}


def test_run_as_user_beats_the_image_user(rootfs: Path) -> None:
    assert process(SecurityContext(run_as_user=1000), "nobody", rootfs)["user"] == {
        "uid": 1000,
        "gid": 1000,
        "additionalGids": [4, 50, 1000],
    }


def test_image_user_numeric(rootfs: Path) -> None:
    # kubelet reports only the uid; its gid comes from the image's /etc/passwd...
    assert process(SecurityContext(), "1000:1000", rootfs)["user"]["gid"] == 1000
    # ...or is 0 when the uid has no entry (the image's group is not used, as in Kubernetes)
    assert process(SecurityContext(), "1234:1234", rootfs)["user"] == {
        "uid": 1234,
        "gid": 0,
        "additionalGids": [0],
    }
    assert process(SecurityContext(), "1000:1000")["user"]["gid"] == 0  # no rootfs
    assert process(SecurityContext(run_as_group=1000), "1234:5")["user"]["gid"] == 1000


def test_image_user_by_name(rootfs: Path) -> None:
    assert process(SecurityContext(), "nobody", rootfs)["user"] == {
        "uid": 65534,
        "gid": 65534,
        "additionalGids": [65534],
    }
    app = process(SecurityContext(), "app", rootfs)["user"]
    assert app == {"uid": 1000, "gid": 1000, "additionalGids": [4, 50, 1000]}
    with pytest.raises(UserLookupError, match="unable to find user ghost"):
        process(SecurityContext(), "ghost", rootfs)
    with pytest.raises(UserLookupError):
        process(SecurityContext(), "nobody")  # no rootfs: a name cannot be resolved


def test_root_groups_fs_group_and_supplemental(rootfs: Path) -> None:
    ctx = SecurityContext(fs_group=2000, supplemental_groups=(50, 3000))
    assert process(ctx, None, rootfs)["user"] == {
        "uid": 0,
        "gid": 0,
        "additionalGids": [0, 50, 2000, 3000],
    }


def test_passwd_symlink_resolves_inside_the_image(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "passwd").write_text("someone:x:4242:4242::/:/bin/sh\n")
    (tmp_path / "etc" / "passwd").symlink_to("/data/passwd")  # absolute: inside the image
    user = process(SecurityContext(), "someone", tmp_path)["user"]
    assert (user["uid"], user["gid"]) == (4242, 4242)


def test_image_user_id() -> None:
    assert image_user_id("1000:1000") == (1000, "")
    assert image_user_id("nobody:nogroup") == (None, "nobody")
    assert image_user_id("") == (None, "") and image_user_id(None) == (None, "")


@pytest.mark.parametrize(
    ("ctx", "image_user", "message"),
    [
        (SecurityContext(run_as_non_root=True), None, "image will run as root"),
        (SecurityContext(run_as_non_root=True), "0", "image will run as root"),
        (SecurityContext(run_as_non_root=True), "0:1000", "image will run as root"),
        (
            SecurityContext(run_as_non_root=True),
            "nobody",
            "image has non-numeric user (nobody), cannot verify user is non-root",
        ),
        (
            SecurityContext(run_as_non_root=True, run_as_user=0),
            "1000",
            "container's runAsUser breaks non-root policy",
        ),
        (
            SecurityContext(run_as_non_root=True),
            "4294967295",
            "image has an invalid user id (4294967295)",
        ),
    ],
)
def test_run_as_non_root_refuses(ctx: SecurityContext, image_user, message: str) -> None:
    found = run_as_non_root_error(ctx, image_user, pod=POD, container="app")
    assert found is not None and message in found
    assert found.endswith('(pod: "web_default(1234)", container: app)')


def test_run_as_non_root_exact_message() -> None:
    ctx = SecurityContext(run_as_non_root=True)
    assert run_as_non_root_error(ctx, "nobody", pod=POD, container="app") == (
        "container has runAsNonRoot and image has non-numeric user (nobody), cannot verify "
        'user is non-root (pod: "web_default(1234)", container: app)'
    )


@pytest.mark.parametrize(
    ("ctx", "image_user"),
    [
        (SecurityContext(run_as_non_root=True), "1000"),
        (SecurityContext(run_as_non_root=True), "1000:0"),
        (SecurityContext(run_as_non_root=True, run_as_user=1000), "nobody"),
        (SecurityContext(run_as_non_root=True, run_as_user=1000), None),
        (SecurityContext(), None),  # not asked: root is fine
        (SecurityContext(run_as_non_root=False), "nobody"),
    ],
)
def test_run_as_non_root_allows(ctx: SecurityContext, image_user) -> None:
    assert run_as_non_root_error(ctx, image_user, pod=POD, container="app") is None


def test_from_a_manifest_to_the_process() -> None:
    """The spec's typed fields feed effective_context: a pod and container as written."""
    text = """\
lab:
  name: t
  racks: [{name: rack1, subnet: 192.168.1.0/24, nodes: [n1]}]
---
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  securityContext: {runAsUser: 1000, runAsNonRoot: true, fsGroup: 2000}
  containers:
    - name: app
      command: [sleep, infinity]
      securityContext:
        runAsUser: 1001
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {drop: [all], add: [net_bind_service]}
"""
    template = parse_lab(text, "t.yaml").pods[0].template
    container = template.containers[0]
    ctx = effective_context(template.security, container.security)
    result = process(ctx, None)
    assert result["user"] == {"uid": 1001, "gid": 0, "additionalGids": [0, 2000]}
    assert result["capabilities"]["bounding"] == ["CAP_NET_BIND_SERVICE"]
    assert result["noNewPrivileges"] is True
    assert oci_linux_security(ctx).readonly_root
    assert run_as_non_root_error(ctx, None, pod=POD, container="app") is None
