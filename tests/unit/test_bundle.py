"""OCI bundles, runc ids, mount bookkeeping: the pure parts of the container runtime."""

from __future__ import annotations

import json
from pathlib import Path

from netlab.node import bundle as oci
from netlab.node.containers import container_pid, runc_id
from netlab.node.mounts import mounted_under, remove_tree
from netlab.node.runc import last_error
from netlab.node.sandbox import SandboxPaths
from netlab.node.security import SecurityContext, oci_linux_security


def config(**changes) -> oci.ContainerConfig:
    base = dict(
        args=("sleep", "infinity"),
        env={"PATH": "/bin", "POD_NAME": "a"},
        cwd="/",
        rootfs=Path("/run/netlab/t/containers/x/rootfs"),
        netns=Path("/run/netns/nl-t.a"),
        sandbox=SandboxPaths(Path("/s/uts"), Path("/s/ipc")),
        cgroups_path="nl-t/x",
        etc={"/etc/hosts": Path("/etc/netns/nl-t.a/hosts")},
    )
    base.update(changes)
    return oci.ContainerConfig(**base)


def test_a_container_joins_its_pods_namespaces_and_has_its_own_mount_and_pid():
    doc = oci.config_json(config())
    namespaces = {n["type"]: n.get("path") for n in doc["linux"]["namespaces"]}
    assert namespaces == {
        "network": "/run/netns/nl-t.a",
        "uts": "/s/uts",
        "ipc": "/s/ipc",
        "mount": None,
        "pid": None,
    }
    assert doc["process"]["args"] == ["sleep", "infinity"]
    assert "POD_NAME=a" in doc["process"]["env"]
    assert doc["linux"]["cgroupsPath"] == "nl-t/x"
    assert doc["linux"]["rootfsPropagation"] == "private"
    json.dumps(doc)  # what runc reads


def test_the_pods_etc_files_are_bound_and_sys_is_read_only():
    doc = oci.config_json(config())
    mounts = {m["destination"]: m for m in doc["mounts"]}
    assert mounts["/etc/hosts"]["source"] == "/etc/netns/nl-t.a/hosts"
    assert mounts["/etc/hosts"]["type"] == "bind"
    assert "ro" in mounts["/sys"]["options"]
    assert {"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue"} <= set(mounts)
    assert "/proc/kcore" in doc["linux"]["maskedPaths"]


def test_the_default_capabilities_are_the_runtimes_not_all_of_roots():
    caps = oci.config_json(config())["process"]["capabilities"]["bounding"]
    assert "CAP_NET_BIND_SERVICE" in caps and "CAP_SYS_ADMIN" not in caps
    assert "CAP_NET_ADMIN" not in caps and len(caps) == 14


def test_a_shared_pid_namespace_and_privileged_mode():
    privileged = oci_linux_security(SecurityContext(privileged=True))
    doc = oci.config_json(config(pid_namespace=Path("/proc/9/ns/pid"), linux_security=privileged))
    pid = next(n for n in doc["linux"]["namespaces"] if n["type"] == "pid")
    assert pid["path"] == "/proc/9/ns/pid"
    assert "maskedPaths" not in doc["linux"]
    assert "ro" not in next(m for m in doc["mounts"] if m["destination"] == "/sys")["options"]
    assert doc["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]


def test_a_read_only_root():
    read_only = oci_linux_security(SecurityContext(read_only_root_filesystem=True))
    assert oci.config_json(config(linux_security=read_only))["root"]["readonly"] is True
    assert oci.config_json(config())["root"]["readonly"] is False


def test_runc_ids_start_with_the_labs_prefix_and_use_only_runcs_characters():
    assert runc_id("nl-demo.web-0", "app") == "nl-demo.web-0+app"
    long = runc_id("nl-demo." + "x" * 300, "app")
    assert long.startswith("nl-demo.") and len(long) <= 200 and "~" not in long


def test_mounts_under_a_directory_deepest_first(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 0:1 / /run/netlab/t rw - tmpfs x rw\n"
        "23 22 0:2 / /run/netlab/t/sandboxes/a/uts rw - nsfs nsfs rw\n"
        "24 1 0:3 / /run/netlab/tt rw - tmpfs x rw\n"
        "25 1 0:4 / /run/netlab/t/with\\040space rw - tmpfs x rw\n"
    )
    found = mounted_under("/run/netlab/t", str(info))
    assert found[0] == "/run/netlab/t/sandboxes/a/uts"
    assert set(found) == {
        "/run/netlab/t",
        "/run/netlab/t/sandboxes/a/uts",
        "/run/netlab/t/with space",
    }


def test_remove_tree_removes_files_and_directories(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_text("x")
    (tmp_path / "a" / "link").symlink_to("/etc")
    remove_tree(tmp_path / "a")
    assert not (tmp_path / "a").exists()
    assert Path("/etc").is_dir()


def test_the_runtimes_last_error_from_its_log(tmp_path):
    log = tmp_path / "runtime.log"
    log.write_text(
        '{"level":"info","msg":"starting"}\n'
        '{"level":"error","msg":"unable to start container process: exec: \\"nope\\": '
        'executable file not found in $PATH"}\n'
    )
    assert "executable file not found" in last_error(log)
    log.write_text('time="x" level=error msg="cgroups: bad"\n')
    assert last_error(log) == "cgroups: bad"
    assert last_error(tmp_path / "none") == "failed (no log)"


def test_a_container_pid_only_from_a_runc_state_of_a_live_process(tmp_path):
    import os

    from netlab.realize.processes import start_time

    state = tmp_path / "runc" / "nl-t.a+app"
    state.mkdir(parents=True)
    me = os.getpid()
    (state / "state.json").write_text(
        json.dumps({"init_process_pid": me, "init_process_start": start_time(me)})
    )
    assert container_pid(tmp_path, "runc://nl-t.a+app") == me
    assert container_pid(tmp_path, "runc://nl-t.other+app") is None
    assert container_pid(tmp_path, "zygote://nl-t.a+netlab-proxy") is None
    assert container_pid(tmp_path, "runc://../../etc") is None
