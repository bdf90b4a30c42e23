"""kubelet's volume manager on plain directories (no mounts, no root): the volumes set
up once per pod, binds at each volumeMounts path, a subPath made and kept inside its
volume, every unready volume named in one wait, teardown removing the pod's part."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from netlab.node import volumes as manager_module
from netlab.node.localvolumes import EmptyDirPlugin, HostPathPlugin
from netlab.node.volumeplugin import VolumeContext, VolumeNotReady
from netlab.node.volumes import VolumeManager
from netlab.plan import PodPlan
from netlab.spec.model import ContainerSpec, PodTemplate, frozen_map
from netlab.spec.volumes import (
    ClaimSource,
    EmptyDirSource,
    HostPathSource,
    VolumeMount,
    VolumeSpec,
)


class Waiting:
    """A plugin whose volume is never ready (a claim not yet attached)."""

    kinds = ("persistentVolumeClaim",)

    def setup(self, ctx: VolumeContext, volume: VolumeSpec) -> Path:
        raise VolumeNotReady(f"{volume.name} is not attached", "FailedAttachVolume", 0.5)

    def resync(self, ctx: VolumeContext, volume: VolumeSpec) -> None:
        return None

    def teardown(self, ctx: VolumeContext, volume: VolumeSpec) -> None:
        return None


def pod(volumes: tuple[VolumeSpec, ...], *containers: ContainerSpec) -> PodPlan:
    template = PodTemplate(frozen_map({}), containers, volumes=volumes)
    return PodPlan(
        "p", "default", "n1", "nl-t.p", IPv4Interface("10.244.1.2/24"),
        IPv4Address("10.244.1.1"), "veth", frozen_map({}), template,
    )  # fmt: skip


@pytest.fixture
def manager(tmp_path, monkeypatch):
    monkeypatch.setattr(manager_module, "node_disk", lambda lab, node: tmp_path / "disk" / node)
    return VolumeManager("t", tmp_path / "run", [EmptyDirPlugin(), HostPathPlugin(), Waiting()])


def test_binds_at_each_mount_with_a_sub_path_made_inside_the_volume(manager, tmp_path):
    app = ContainerSpec(
        "app",
        volume_mounts=(
            VolumeMount("scratch", "/scratch"),
            VolumeMount("scratch", "/part", "a/b", read_only=True),
            VolumeMount("node", "/srv"),
        ),
    )
    plan = pod(
        (VolumeSpec("scratch", EmptyDirSource()), VolumeSpec("node", HostPathSource("/srv/x"))),
        app,
    )
    binds = manager.binds(plan, app)
    scratch = tmp_path / "disk/n1/pods/nl-t.p/kubernetes.io~empty-dir/scratch"
    assert [(b.source, b.destination, b.readonly) for b in binds] == [
        (scratch, "/scratch", False),
        (scratch / "a/b", "/part", True),
        (tmp_path / "disk/n1/hostpath/srv/x", "/srv", False),
    ]
    assert (scratch / "a/b").is_dir() and oct(scratch.stat().st_mode & 0o777) == "0o777"
    manager.tear_down(plan)
    assert not (tmp_path / "disk/n1/pods/nl-t.p").exists()
    assert (tmp_path / "disk/n1/hostpath/srv/x").is_dir()  # the node's files stay


def test_a_sub_path_may_not_leave_its_volume(manager, tmp_path):
    app = ContainerSpec("app", volume_mounts=(VolumeMount("scratch", "/x", "link"),))
    plan = pod((VolumeSpec("scratch", EmptyDirSource()),), app)
    root = manager.set_up(plan)["scratch"]
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(VolumeNotReady) as info:
        manager.binds(plan, app)
    assert "leaves the volume" in info.value.message


def test_every_volume_that_is_not_ready_is_named_in_one_wait(manager):
    volumes = (
        VolumeSpec("ok", EmptyDirSource()),
        VolumeSpec("a", ClaimSource("a")),
        VolumeSpec("b", ClaimSource("b")),
    )
    plan = pod(volumes, ContainerSpec("app"))
    with pytest.raises(VolumeNotReady) as info:
        manager.set_up(plan)
    assert info.value.event == "FailedAttachVolume" and info.value.retry == 0.5
    assert info.value.message.endswith("(and 1 more: unmounted volumes=[a, b])")
    assert info.value.reason == "ContainerCreating"  # the pod's containers wait so
