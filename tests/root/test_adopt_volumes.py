"""A supervisor restarted, not the lab, with volumes: `kill -9` of `netlab up`, then
`netlab up --adopt`: every volume mount stays as it was (no container restarted, no
disk detached), kubelet's sync goes on (a changed ConfigMap reaches its files), a
replica's disk still follows it, and `netlab down` leaves nothing."""

from __future__ import annotations

import json
import os
import signal
import textwrap

import pytest

from netlab.node import loopdisks
from netlab.node.mounts import mounted_under
from netlab.paths import RUN_ROOT, state_dir
from netlab.realize.processes import PidRecord
from tests.root.conftest import wait_for
from tests.root.leftovers import leftovers
from tests.root.test_adopt import containers, supervisor
from tests.root.test_cli import netlab
from tests.root.test_persistence import statefulset

pytestmark = pytest.mark.root

NAME = "tadoptv"
LAB = (
    textwrap.dedent(
        f"""\
    lab:
      name: {NAME}
      racks:
        - {{name: rack1, subnet: 192.168.1.0/24, nodes: [n1, n2]}}
        - {{name: rack2, subnet: 192.168.2.0/24, nodes: [n3]}}
    ---
    apiVersion: v1
    kind: ConfigMap
    metadata: {{name: settings}}
    data: {{mode: calm}}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {{name: scratch}}
    spec:
      volumes:
        - {{name: disk, emptyDir: {{}}}}
        - {{name: ram, emptyDir: {{medium: Memory, sizeLimit: 8Mi}}}}
        - {{name: settings, configMap: {{name: settings}}}}
      containers:
        - name: app
          image: busybox
          command: [sh, -c, "echo kept > /disk/note; echo kept > /ram/note; sleep 3600"]
          volumeMounts:
            - {{name: disk, mountPath: /disk}}
            - {{name: ram, mountPath: /ram}}
            - {{name: settings, mountPath: /etc/settings}}
    """
    )
    + "---"
    + statefulset("db", 1)
)  # db-0 counts its starts on its disk


def running(pod: str) -> bool:
    result = netlab("--lab", NAME, "get", "pods", "-o", "json", check=False)
    if result.returncode != 0:
        return False
    for obj in json.loads(result.stdout)["items"]:
        if obj["metadata"]["name"] == pod and not obj["metadata"].get("deletionTimestamp"):
            states = obj["status"].get("containerStatuses") or []
            return bool(states) and all("running" in s["state"] for s in states)
    return False


def cat(pod: str, path: str) -> str:
    return netlab("--lab", NAME, "exec", pod, "--", "cat", path, check=False).stdout


def volume_mounts() -> set[str]:
    return set(mounted_under(state_dir(NAME))) | set(mounted_under(RUN_ROOT / NAME / "pods"))


def test_volumes_outlive_a_supervisor_kill_and_are_adopted(tmp_path):
    path = tmp_path / f"{NAME}.yaml"
    path.write_text(LAB)
    netlab("up", "-d", str(path))
    try:
        assert wait_for(lambda: running("scratch") and running("db-0"), 30, 0.2)
        assert wait_for(lambda: cat("db-0", "/data/count") == "1\n", 5, 0.2)  # as it starts
        mounted = volume_mounts()
        assert len(mounted) == 2  # the memory emptyDir's tmpfs, db-0's disk on its node
        before = containers(NAME)

        os.kill(supervisor(NAME), signal.SIGKILL)
        assert wait_for(lambda: netlab("--lab", NAME, "get", "pods", check=False).returncode, 5)
        assert volume_mounts() == mounted  # nothing of them went with the supervisor
        netlab("up", "-d", "--adopt", str(path))

        assert volume_mounts() == mounted
        now = containers(NAME)
        assert {k: now.get(k) for k in before} == before  # not one container restarted
        assert cat("scratch", "/disk/note") == "kept\n" and cat("scratch", "/ram/note") == "kept\n"
        assert cat("db-0", "/data/count") == "1\n"
        # kubelet's sync runs again: a change reaches the mounted files
        cm = json.loads(netlab("--lab", NAME, "get", "configmap", "settings", "-o", "json").stdout)
        cm["data"]["mode"] = "busy"
        (tmp_path / "cm.json").write_text(json.dumps(cm))
        netlab("--lab", NAME, "apply", "-f", str(tmp_path / "cm.json"))
        assert wait_for(lambda: cat("scratch", "/etc/settings/mode") == "busy", 10, 0.2)
        # the new supervisor's attach/detach: db-0 deleted comes back with its disk
        netlab("--lab", NAME, "delete", "pod", "db-0")
        assert wait_for(lambda: running("db-0") and cat("db-0", "/data/count") == "2\n", 30, 0.2)
    finally:
        netlab("--lab", NAME, "down", check=False)
        if not wait_for(lambda: not (RUN_ROOT / NAME).exists(), 10):
            netlab("clean", "--force", "--lab", NAME, check=False)
    assert not leftovers(NAME)
    assert not [d for d in loopdisks.loop_devices() if f"/{NAME}/" in d.backing_file]


def test_clean_after_a_crash_leaves_no_mount_disk_or_state(tmp_path):
    """The supervisor and the runtime killed: `netlab clean` unmounts every volume,
    detaches every disk and removes the lab's state directory."""
    name = "tcrashv"
    path = tmp_path / f"{name}.yaml"
    path.write_text(LAB.replace(f"name: {NAME}", f"name: {name}", 1))
    netlab("up", "-d", str(path))
    try:
        ready = lambda: all(  # noqa: E731
            pod in netlab("--lab", name, "get", "pods", check=False).stdout
            and "Running" in netlab("--lab", name, "get", "pod", pod, check=False).stdout
            for pod in ("scratch", "db-0")
        )
        assert wait_for(ready, 30, 0.2)
        records = PidRecord.read(RUN_ROOT / name / "pids")
        os.kill(supervisor(name), signal.SIGKILL)
        for pid, _, role, _ in records:
            if role == "runtime":  # nobody is left to stop the containers
                os.kill(pid, signal.SIGKILL)
        left = leftovers(name)
        assert any(x.startswith("mount ") for x in left)
        assert any(x.startswith("state directory ") for x in left)
        assert [d for d in loopdisks.loop_devices() if f"/{name}/" in d.backing_file]
        netlab("clean", "--lab", name)
        assert not leftovers(name)
        assert not [d for d in loopdisks.loop_devices() if f"/{name}/" in d.backing_file]
        assert not state_dir(name).exists()
    finally:
        netlab("clean", "--force", "--lab", name, check=False)
