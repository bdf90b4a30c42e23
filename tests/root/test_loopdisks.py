"""Loop disks on the real kernel: ext4 images attached as loop devices, mounted at a
node's global mount, written, unmounted, detached and attached again with their data;
the fence refusing a second attach while anything holds the first; the lab sweep."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from netlab.node import loopdisks
from netlab.node.attachments import global_mount
from netlab.node.loopdisks import DiskFenced, LabDisks, LoopDisks
from netlab.node.mounts import mounted_under
from netlab.realize import cleanup

pytestmark = pytest.mark.root


def make_image(path: Path, size: str = "16M") -> str:
    subprocess.run(["truncate", "-s", size, str(path)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(path)], check=True)
    return str(path)


@pytest.fixture
def workdir():
    root = Path(tempfile.mkdtemp(prefix="t-loopdisks-"))
    try:
        yield root
    finally:
        loopdisks.sweep(root)
        assert [d for d in loopdisks.loop_devices() if d.backing_file.startswith(str(root))] == []
        assert mounted_under(root) == []
        shutil.rmtree(root)


def test_attach_mount_write_detach_and_attach_again_with_the_data(workdir):
    image = make_image(workdir / "pv-a.img")
    target = workdir / "nodes/n1/plugins/pv/pv-a/globalmount"
    disks = LoopDisks()
    timings = []
    try:
        started = time.perf_counter()
        device = disks.attach(image)
        loopdisks.mount_global(device, target)
        timings.append(time.perf_counter() - started)
        assert loopdisks.attached(image) == device
        assert loopdisks.backing_file(device) == image
        assert loopdisks.mounted_device(target) == device
        loopdisks.mount_global(device, target)  # idempotent: no second mount
        assert mounted_under(target) == [str(target)]
        (target / "counter").write_text("41\n")
        assert loopdisks.unmount_global(target)
        assert not target.exists()  # its empty directory goes with it
        assert loopdisks.attached(image) == device  # still attached: held until detached
        disks.detach(device)
        assert loopdisks.attached(image) is None

        started = time.perf_counter()
        again = disks.attach(image)
        loopdisks.mount_global(again, target)
        timings.append(time.perf_counter() - started)
        assert (target / "counter").read_text() == "41\n"
        loopdisks.unmount_global(target)
        disks.detach(again)
        assert loopdisks.attached(image) is None
    finally:
        disks.close()
    print(f"attach + mount: {', '.join(f'{t * 1000:.1f} ms' for t in timings)}")


def test_the_fence_refuses_a_second_attach_while_a_mount_holds_the_first(workdir):
    image = make_image(workdir / "pv-b.img")
    first, second = LoopDisks(), LoopDisks()  # two holders, as two processes would be
    target = global_mount(workdir / "nodes/n1", "pv-b")
    try:
        device = first.attach(image)
        with pytest.raises(DiskFenced, match="still attached"):
            second.attach(image)
        loopdisks.mount_global(device, target)
        first.detach(device)  # let go while mounted: the device stays with its mount
        assert loopdisks.attached(image) == device
        with pytest.raises(DiskFenced):
            second.attach(image)
        assert loopdisks.unmount_global(target)  # the last user lets go: autoclear frees it
        assert loopdisks.attached(image) is None
        assert second.attach(image)
    finally:
        first.close()
        second.close()


def test_the_fence_sees_a_device_made_by_someone_else(workdir):
    image = make_image(workdir / "pv-c.img")
    device = subprocess.run(
        ["losetup", "--find", "--show", image], capture_output=True, text=True, check=True
    ).stdout.strip()
    disks = LoopDisks()
    try:
        assert loopdisks.attached(image) == device
        with pytest.raises(DiskFenced):
            disks.attach(image)
    finally:
        subprocess.run(["losetup", "-d", device], check=True)
        disks.close()


def test_a_held_device_goes_with_its_holder(workdir):
    """Autoclear: a supervisor that ends leaves no unmounted loop device behind."""
    image = make_image(workdir / "pv-d.img")
    disks = LoopDisks()
    disks.attach(image)
    disks.close()
    assert loopdisks.attached(image) is None


def test_lab_disks_detach_unmounts_the_nodes_global_mount(workdir, monkeypatch):
    monkeypatch.setattr(loopdisks.paths, "STATE_ROOT", workdir)
    image = make_image(workdir / "pv-e.img")
    lab = LabDisks("t-attach")
    try:
        device = lab.attach(image)
        target = global_mount(workdir / "t-attach/nodes/n2", "pv-e")
        loopdisks.mount_global(device, target)
        lab.detach("n2", "pv-e", image)
        assert loopdisks.mounted_device(target) is None
        assert loopdisks.attached(image) is None
    finally:
        lab.close()


def test_the_sweep_removes_every_device_and_mount_under_a_directory(workdir):
    disks = LoopDisks()
    images = [make_image(workdir / f"pv-{i}.img") for i in range(2)]
    outside = tempfile.mkdtemp(prefix="t-loopdisks-other-")
    other = make_image(Path(outside) / "keep.img")
    try:
        devices = [disks.attach(image) for image in images]
        kept = disks.attach(other)
        target = global_mount(workdir / "nodes/n1", "pv-0")
        loopdisks.mount_global(devices[0], target)
        bind = workdir / "pod-bind"
        bind.mkdir()
        subprocess.run(["mount", "--bind", str(target), str(bind)], check=True)
        disks.close()  # a supervisor killed: the mounted one stays
        assert loopdisks.attached(images[0]) == devices[0]
        done = loopdisks.sweep(workdir)
        assert str(bind) in done and str(target) in done
        assert all(loopdisks.attached(image) is None for image in images)
        assert mounted_under(workdir) == []
        assert loopdisks.attached(other) is None  # held by nobody: autoclear took it
        kept = LoopDisks()
        device = kept.attach(other)
        assert loopdisks.sweep(workdir) == []  # nothing of the swept directory is left
        assert loopdisks.attached(other) == device  # another directory's disk is not touched
        kept.close()
    finally:
        loopdisks.sweep(outside)
        shutil.rmtree(outside)


def test_a_labs_cleanup_sweeps_its_disks(monkeypatch, tmp_path):
    """clean_lab after a crash: the lab's disks, mounted or not, leave with it."""
    state_root = Path(tempfile.mkdtemp(prefix="t-loopdisks-state-"))
    monkeypatch.setattr(loopdisks.paths, "STATE_ROOT", state_root)
    lab = "t-attach-clean"
    crashed, disks = LoopDisks(), LoopDisks()
    try:
        image = make_image(state_root / "disk.img")  # outside the lab's state dir: kept
        (state_root / lab / "disks").mkdir(parents=True)
        ours = make_image(state_root / lab / "disks/pvc-1.img")
        target = global_mount(state_root / lab / "nodes/n1", "pvc-1")
        loopdisks.mount_global(crashed.attach(ours), target)
        crashed.close()  # the supervisor is gone; its mount stays
        other = disks.attach(image)
        report = cleanup.clean_lab(lab, tmp_path / "run")
        assert str(target) in report.files
        assert loopdisks.attached(ours) is None and mounted_under(state_root) == []
        assert loopdisks.attached(image) == other
    finally:
        disks.close()
        loopdisks.sweep(state_root)
        shutil.rmtree(state_root)
