"""The configMap and secret volume plugin (kubelet's AtomicWriter) and env resolution
from ConfigMaps, Secrets and the pod's fields, against a real in-memory Store."""

from __future__ import annotations

import base64
import os
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from netlab.node.configvolumes import AtomicWriter, ConfigVolumes, FileProjection
from netlab.node.containers import ContainerConfigError
from netlab.node.envsources import SkippedKeys, resolve_env
from netlab.node.volumeplugin import VolumeContext, VolumeNotReady
from netlab.plan import PodPlan
from netlab.spec.model import ContainerSpec, PodTemplate, frozen_map
from netlab.spec.volumes import (
    EnvFromSource,
    EnvRef,
    FieldRef,
    KeyRef,
    KeyToPath,
    ObjectSource,
    VolumeSpec,
)
from netlab.store import Store


def pod_plan(**recorded) -> PodPlan:
    template = PodTemplate(
        frozen_map({"app": "web"}), (ContainerSpec("c"),), recorded=frozen_map(recorded)
    )
    return PodPlan(
        "web-1", "default", "n2", "nl-t.n2.web-1", IPv4Interface("10.244.2.5/24"),
        IPv4Address("10.244.2.1"), "vethab", frozen_map({"app": "web"}), template,
    )  # fmt: skip


def config_map(store: Store, name: str, data: dict, binary: dict | None = None) -> None:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"},
           "data": data}  # fmt: skip
    if binary:
        obj["binaryData"] = {k: base64.b64encode(v).decode() for k, v in binary.items()}
    store.apply(obj)


def secret(store: Store, name: str, data: dict[str, bytes]) -> None:
    store.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                 "metadata": {"name": name, "namespace": "default"},
                 "data": {k: base64.b64encode(v).decode() for k, v in data.items()}})  # fmt: skip


@pytest.fixture
def ctx(tmp_path) -> VolumeContext:
    return VolumeContext("t", pod_plan(), tmp_path / "pod", tmp_path / "disk")


def volume(kind="configMap", name="cfg", items=(), optional=False, mode=0o644) -> VolumeSpec:
    return VolumeSpec("conf", ObjectSource(kind, name, tuple(items), mode, optional))


def listing(root: Path) -> dict[str, str]:
    """Each entry of the volume dir: a symlink's target, or 'dir'."""
    return {p.name: os.readlink(p) if p.is_symlink() else "dir" for p in sorted(root.iterdir())}


# -- the atomic writer -------------------------------------------------------


def test_the_writer_lays_files_out_as_kubelet_does(tmp_path):
    writer = AtomicWriter(tmp_path / "vol")
    payload = {"app.conf": FileProjection(b"port=80\n", 0o644),
               "nested/deep/key": FileProjection(b"x", 0o400)}  # fmt: skip
    assert writer.write(payload)
    entries = listing(tmp_path / "vol")
    stamped = [n for n in entries if n.startswith("..2")]
    assert len(stamped) == 1 and entries[stamped[0]] == "dir"
    assert entries["..data"] == stamped[0]
    assert entries["app.conf"] == "..data/app.conf" and entries["nested"] == "..data/nested"
    assert (tmp_path / "vol/app.conf").read_bytes() == b"port=80\n"
    assert (tmp_path / "vol/nested/deep/key").stat().st_mode & 0o777 == 0o400
    assert writer.current() == payload


def test_an_update_is_a_new_directory_and_the_old_one_goes(tmp_path):
    writer = AtomicWriter(tmp_path / "vol")
    writer.write({"a": FileProjection(b"one", 0o644), "b": FileProjection(b"b", 0o644)})
    old_real = (tmp_path / "vol/a").resolve()
    with open(old_real, "rb") as held:  # what a subPath bind holds: the old file itself
        assert not writer.write(
            {"a": FileProjection(b"one", 0o644), "b": FileProjection(b"b", 0o644)}
        )
        assert (tmp_path / "vol/a").resolve() == old_real  # unchanged content: no write
        assert writer.write({"a": FileProjection(b"two", 0o644)})
        assert held.read() == b"one"  # never rewritten in place
    assert (tmp_path / "vol/a").read_bytes() == b"two"
    assert (tmp_path / "vol/a").resolve() != old_real and not old_real.exists()
    assert set(listing(tmp_path / "vol")) == {
        "..data",
        "a",
        (tmp_path / "vol/a").resolve().parent.name,
    }
    assert writer.write({"a": FileProjection(b"two", 0o600)})  # a mode change is a change


def test_paths_that_leave_the_volume_are_refused(tmp_path):
    writer = AtomicWriter(tmp_path / "vol")
    for bad in ("../x", "/etc/passwd", "a/../../x", "..hidden", ""):
        with pytest.raises(ValueError):
            writer.write({bad: FileProjection(b"x", 0o644)})


# -- the plugin --------------------------------------------------------------


def test_a_config_map_volume_holds_every_key_and_follows_changes(ctx):
    store = Store()
    config_map(store, "cfg", {"app.conf": "v1"}, binary={"blob": b"\x00\xff"})
    plugin = ConfigVolumes(store)
    spec = volume()
    root = plugin.setup(ctx, spec)
    assert root == ctx.volume_dir("configMap", "conf")
    assert (root / "app.conf").read_text() == "v1" and (root / "blob").read_bytes() == b"\x00\xff"
    before = (root / "app.conf").resolve()
    plugin.resync(ctx, spec)
    assert (root / "app.conf").resolve() == before  # nothing changed: nothing written
    config_map(store, "cfg", {"app.conf": "v2"})
    plugin.resync(ctx, spec)
    assert (root / "app.conf").read_text() == "v2" and not (root / "blob").exists()
    plugin.teardown(ctx, spec)
    assert not root.exists()
    plugin.teardown(ctx, spec)  # idempotent


def test_a_secret_volume_holds_the_decoded_bytes_with_items_and_modes(ctx):
    store = Store()
    secret(store, "creds", {"user": b"admin", "pass": b"s3cret", "other": b"x"})
    spec = volume(
        "secret", "creds", [KeyToPath("pass", "db/password", 0o400), KeyToPath("user", "user")]
    )
    root = ConfigVolumes(store).setup(ctx, spec)
    assert (root / "db/password").read_bytes() == b"s3cret"
    assert (root / "db/password").stat().st_mode & 0o777 == 0o400
    assert (root / "user").stat().st_mode & 0o777 == 0o644
    assert not (root / "other").exists()


def test_missing_objects_and_keys_hold_the_pod_with_kubelets_words(ctx):
    store = Store()
    plugin = ConfigVolumes(store)
    with pytest.raises(VolumeNotReady) as missing:
        plugin.setup(ctx, volume(name="nope"))
    assert (
        missing.value.message
        == 'MountVolume.SetUp failed for volume "conf" : configmap "nope" not found'
    )
    assert missing.value.event == "FailedMount"
    with pytest.raises(VolumeNotReady) as missing_secret:
        plugin.setup(ctx, volume("secret", "nope"))
    assert missing_secret.value.message.endswith(': secret "nope" not found')
    config_map(store, "cfg", {"a": "1"})
    with pytest.raises(VolumeNotReady) as no_key:
        plugin.setup(ctx, volume(items=[KeyToPath("b", "b")]))
    assert no_key.value.message.endswith(": configmap references non-existent config key: b")
    # optional: an empty volume for a missing object, a missing key left out
    empty = plugin.setup(ctx, volume(name="nope", optional=True))
    assert set(listing(empty)) == {"..data", os.readlink(empty / "..data")}
    root = plugin.setup(
        ctx, volume(items=[KeyToPath("a", "x"), KeyToPath("b", "y")], optional=True)
    )
    assert (root / "x").read_text() == "1" and not (root / "y").exists()


def test_a_deleted_config_map_leaves_the_files_and_says_so(ctx):
    store = Store()
    config_map(store, "cfg", {"a": "1"})
    plugin, spec = ConfigVolumes(store), volume()
    root = plugin.setup(ctx, spec)
    store.delete("configmaps", "default", "cfg")
    with pytest.raises(VolumeNotReady):
        plugin.resync(ctx, spec)
    assert (root / "a").read_text() == "1"


# -- env ---------------------------------------------------------------------


def container(env_from=(), env_refs=()) -> ContainerSpec:
    return ContainerSpec("c", env_from=tuple(env_from), env_refs=tuple(env_refs))


def test_env_from_and_value_from_resolve_in_kubelets_order():
    store = Store()
    config_map(store, "base", {"MODE": "dev", "LEVEL": "info", "1st": "ok"})
    config_map(store, "over", {"LEVEL": "debug"})
    secret(store, "creds", {"PASSWORD": b"s3cret"})
    plan = pod_plan(serviceAccountName="robot")
    store.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "default",
                 "annotations": {"team": "blue"}}, "spec": {"containers": []}})  # fmt: skip
    uid = store.get("pods", "default", "web-1")["metadata"]["uid"]
    c = container(
        [EnvFromSource("configMap", "base"), EnvFromSource("configMap", "over"),
         EnvFromSource("secret", "creds", prefix="DB_"), EnvFromSource("configMap", "gone", optional=True)],
        [EnvRef("MODE_REF", KeyRef("configMap", "base", "MODE")),
         EnvRef("PW", KeyRef("secret", "creds", "PASSWORD")),
         EnvRef("OPT", KeyRef("configMap", "base", "missing", optional=True)),
         *(EnvRef(f"F{i}", FieldRef(path)) for i, path in enumerate(
             ["metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName",
              "spec.serviceAccountName", "status.podIP", "status.hostIP",
              "metadata.labels['app']", "metadata.annotations['team']"]))],
    )  # fmt: skip
    env = resolve_env(store, plan, c, "10.244.2.5", "192.168.1.3")
    # envFrom: a later source wins; a prefix goes before each key; 1.35 keeps `1st`
    assert env.env_from == {"MODE": "dev", "LEVEL": "debug", "1st": "ok", "DB_PASSWORD": "s3cret"}
    assert env.refs == {
        "MODE_REF": "dev", "PW": "s3cret",
        "F0": "web-1", "F1": "default", "F2": uid, "F3": "n2", "F4": "robot",
        "F5": "10.244.2.5", "F6": "192.168.1.3", "F7": "web", "F8": "blue",
    }  # fmt: skip
    assert env.skipped == []


def test_a_prefix_that_makes_names_unusable_is_reported():
    store = Store()
    config_map(store, "cfg", {"A": "1", "B": "2"})
    env = resolve_env(
        store, pod_plan(), container([EnvFromSource("configMap", "cfg", prefix="X=")]), "", ""
    )
    assert env.env_from == {}
    (skipped,) = env.skipped
    assert skipped == SkippedKeys("configMap", "default", "cfg", ("X=A", "X=B"))
    assert skipped.message == (
        "Keys [X=A, X=B] from the EnvFrom configmap default/cfg were skipped since they are "
        "considered invalid environment variable names."
    )


@pytest.mark.parametrize(
    "source, text",
    [
        (EnvFromSource("configMap", "x"), 'configmap "x" not found'),
        (EnvFromSource("secret", "s"), 'secret "s" not found'),
        (
            EnvRef("V", KeyRef("configMap", "cfg", "k")),
            "couldn't find key k in ConfigMap default/cfg",
        ),
        (
            EnvRef("V", KeyRef("secret", "creds", "k")),
            "couldn't find key k in Secret default/creds",
        ),
        (EnvRef("V", KeyRef("secret", "s", "k")), 'secret "s" not found'),
    ],
)
def test_missing_sources_stop_the_container_with_kubelets_words(source, text):
    store = Store()
    config_map(store, "cfg", {"a": "1"})
    secret(store, "creds", {"a": b"1"})
    spec = container([source]) if isinstance(source, EnvFromSource) else container((), [source])
    with pytest.raises(ContainerConfigError) as stopped:
        resolve_env(store, pod_plan(), spec, "", "")
    assert stopped.value.reason == "CreateContainerConfigError"
    assert str(stopped.value) == text
