"""The sidecar zygote: children forked into a namespace, their output, exit
codes and signals, without a lab around it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from netlab.realize import netns
from netlab.realize.zygote import Zygote

pytestmark = pytest.mark.root

NETNS = "nl-tzygote"


@pytest.fixture
def zygote(tmp_path):
    path = netns.create(NETNS)
    started: list[int] = []
    z = Zygote(tmp_path / "zygote.log", started.append)
    try:
        yield z, str(path), tmp_path, started
    finally:
        z.close()
        netns.remove(NETNS)


def test_children_run_in_the_namespace_with_their_output_and_exit_code(zygote):
    z, path, tmp, started = zygote
    child = z.spawn(path, ["--help"], {"PATH": "/usr/bin:/bin"}, tmp / "c.log")
    assert child.wait(timeout=10) == 0
    assert b"python -m mesh" in child.stdout.read()
    assert len(started) == 1  # the zygote's pid was reported for the PID record
    bad = z.spawn(path, ["--no-such-flag"], {}, tmp / "c.log")
    assert bad.wait(timeout=10) == 2  # argparse's usage error


def test_a_running_sidecar_is_signalled_by_pid_and_its_namespace_is_the_pods(zygote, tmp_path):
    z, path, tmp, _ = zygote
    objects = tmp / "objects.json"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": []},
        "status": {"podIP": "127.0.0.1"},
    }
    objects.write_text(json.dumps({"items": [pod]}))
    ready = tmp / "ready"
    argv = ["--objects", str(objects), "--pod", "default/p", "--mark", "none",
            "--ready-file", str(ready), "--admin-port", "127.0.0.1:15000"]  # fmt: skip
    child = z.spawn(path, argv, {}, tmp / "c.log")
    deadline = time.monotonic() + 10
    while not ready.exists() and time.monotonic() < deadline:
        assert child.poll() is None, child.stdout.read()
        time.sleep(0.05)
    assert ready.exists()
    mine, theirs = os.stat(f"/proc/{child.pid}/ns/net"), os.stat(path)
    assert (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)
    listening = subprocess.run(
        ["ip", "netns", "exec", NETNS, "ss", "-ltnH"], capture_output=True, text=True
    ).stdout
    assert ":15001" in listening and ":15006" in listening and ":15000" in listening
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=10) == 0  # a clean stop on SIGTERM
    again = z.spawn(path, argv[:-2], {}, tmp / "c.log")  # the port is free again
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            again.wait(timeout=0.5)  # it runs
    finally:
        again.send_signal(signal.SIGKILL)
        assert again.wait(timeout=10) == -signal.SIGKILL


def test_a_sidecar_lets_go_of_other_pods_volume_mounts(zygote, tmp_path):
    """Its new mount namespace starts as a copy of the host's: the volumes of other
    pods in it (a disk, a tmpfs) would stay pinned while it lives (a disk could not be
    detached), so it detaches those under the roots its sandbox names."""
    z, path, tmp, _ = zygote
    volumes = tmp_path / "volumes"
    disk = volumes / "pod" / "disk"
    disk.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    objects = tmp / "objects.json"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": []},
        "status": {"podIP": "127.0.0.1"},
    }
    objects.write_text(json.dumps({"items": [pod]}))
    sandbox = {"uts": "/proc/self/ns/uts", "ipc": "/proc/self/ns/ipc", "etc": {}}

    def mounts_seen(detach: list[str]) -> list[str]:
        """The mount points under `volumes` in a running sidecar's namespace."""
        ready = tmp / f"ready-{len(detach)}"
        argv = ["--objects", str(objects), "--pod", "default/p", "--mark", "none",
                "--ready-file", str(ready)]  # fmt: skip
        (child,) = z.spawn_many(
            [(path, argv, {}, tmp / "c.log")], sandboxes=[{**sandbox, "detach": detach}]
        )
        try:
            deadline = time.monotonic() + 10
            while not ready.exists() and time.monotonic() < deadline:
                assert child.poll() is None
                time.sleep(0.05)
            assert ready.exists()
            with open(f"/proc/{child.pid}/mountinfo") as f:
                points = [line.split()[4] for line in f]
            return [p for p in points if p.startswith(str(volumes))]
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)

    try:
        assert mounts_seen([]) == [str(disk)]  # the copy it would pin
        assert mounts_seen([str(volumes)]) == []  # let go of
    finally:
        subprocess.run(["umount", str(disk)], check=True)
