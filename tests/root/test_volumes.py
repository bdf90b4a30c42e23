"""Pods' own volumes on the real kernel: an emptyDir shared by a pod's containers and
gone with the pod (in memory: a tmpfs its writer's memory pays for; past its sizeLimit
on disk: the pod evicted), hostPath on each node's own disk, and a volume a pod waits
for in ContainerCreating with kubelet's event."""

from __future__ import annotations

import os

import pytest

from netlab.errors import SpecError
from netlab.lab import Lab
from netlab.node.mounts import mounted_under
from netlab.paths import node_disk
from tests.root.conftest import module_lab_name, two_rack_builder, wait_for
from tests.root.leftovers import leftovers
from tests.root.test_cli import netlab
from tests.root.test_persistence import running_on

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def vlab(request):
    name = module_lab_name(request, "tvol")
    with Lab(two_rack_builder(name).build()) as running:
        yield running
    assert not leftovers(name)


def bare_pod(name: str, node: str, volumes: str, containers: str) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  volumes:
{volumes}
  containers:
{containers}
"""


def events_of(lab: Lab, pod: str) -> list[tuple[str, str]]:
    return [
        (e["reason"], e["message"])
        for e in lab.store.list("events", "default")[0]
        if e["involvedObject"]["name"] == pod
    ]


def running(lab: Lab, pod: str) -> bool:
    return running_on(lab, pod) is not None


SHARED = bare_pod(
    "share",
    "n2",
    """  - {name: scratch, emptyDir: {}}""",
    """  - name: writer
    image: busybox
    command: [sh, -c, "echo hello > /scratch/msg; sleep 3600"]
    volumeMounts: [{name: scratch, mountPath: /scratch}]
  - name: reader
    image: busybox
    command: [sleep, "3600"]
    volumeMounts:
    - {name: scratch, mountPath: /in, readOnly: true}
    - {name: scratch, mountPath: /part, subPath: deeper/part}""",
)


def test_an_empty_dir_is_shared_by_the_pods_containers_and_goes_with_it(vlab):
    vlab.apply_text(SHARED)
    assert wait_for(lambda: running(vlab, "share"), 10)
    assert wait_for(
        lambda: vlab.exec("share", ["cat", "/in/msg"], container="reader").stdout == "hello\n", 5
    )
    refused = vlab.exec("share", ["sh", "-c", "echo x > /in/other"], container="reader")
    assert "Read-only file system" in refused.stderr
    # a subPath that did not exist is made, as a directory of the volume
    vlab.exec("share", ["sh", "-c", "echo deep > /part/f"], container="reader")
    assert vlab.exec("share", ["cat", "/scratch/deeper/part/f"], container="writer").stdout == (
        "deep\n"
    )
    pod = vlab.pod("share")
    on_disk = node_disk(vlab.spec.name, "n2") / "pods" / pod.netns
    assert (on_disk / "kubernetes.io~empty-dir" / "scratch" / "msg").read_text() == "hello\n"
    # not in any other pod
    assert vlab.exec("a", ["test", "-e", "/scratch/msg"]).returncode != 0
    vlab.delete_pod("share")
    assert not on_disk.exists()


def memory_usage(lab: Lab, pod: str) -> int:
    """The pod's container's memory cgroup usage, read inside it (v1 or v2)."""
    out = lab.exec(
        pod,
        ["sh", "-c", "cat /sys/fs/cgroup/memory/memory.usage_in_bytes 2>/dev/null "
         "|| cat /sys/fs/cgroup/memory.current"],
    ).stdout  # fmt: skip
    return int(out.split()[0])


def test_a_memory_empty_dir_is_a_tmpfs_its_writer_pays_for(vlab):
    vlab.apply_text(
        bare_pod(
            "ram",
            "n1",
            """  - {name: cache, emptyDir: {medium: Memory, sizeLimit: 48Mi}}""",
            """  - name: app
    image: busybox
    command: [sh, -c, "until [ -e /cache/go ]; do sleep 0.05; done;
      dd if=/dev/zero of=/cache/f bs=1M count=32 && touch /cache/done; sleep 3600"]
    volumeMounts: [{name: cache, mountPath: /cache}]""",
        )
    )
    assert wait_for(lambda: running(vlab, "ram"), 10)
    mounted = [p for p in mounted_under(vlab.run_dir / "pods") if p.endswith("/cache")]
    assert len(mounted) == 1
    df = vlab.exec("ram", ["df", "-k", "/cache"]).stdout.splitlines()[-1].split()
    assert df[0] == "tmpfs" and int(df[1]) == 48 * 1024
    before = memory_usage(vlab, "ram")
    # the app writes (an exec'd command is not in the container's cgroup)
    vlab.exec("ram", ["touch", "/cache/go"])
    assert wait_for(lambda: vlab.exec("ram", ["test", "-e", "/cache/done"]).returncode == 0, 10)
    assert memory_usage(vlab, "ram") - before >= 30 << 20
    # what is exec'd into the container is in its cgroup too (as with runc exec)
    before = memory_usage(vlab, "ram")
    wrote = vlab.exec("ram", ["dd", "if=/dev/zero", "of=/cache/e", "bs=1M", "count=8"])
    assert wrote.returncode == 0, wrote.stderr
    assert memory_usage(vlab, "ram") - before >= 7 << 20
    # no more than its sizeLimit
    full = vlab.exec("ram", ["dd", "if=/dev/zero", "of=/cache/g", "bs=1M", "count=32"])
    assert "No space left on device" in full.stderr
    vlab.delete_pod("ram")
    assert not mounted_under(vlab.run_dir / "pods")


def test_an_empty_dir_past_its_size_limit_gets_the_pod_evicted(vlab):
    vlab.apply_text(
        bare_pod(
            "greedy",
            "n3",
            """  - {name: scratch, emptyDir: {sizeLimit: 4Mi}}""",
            """  - name: app
    image: busybox
    command: [sh, -c, "dd if=/dev/zero of=/scratch/f bs=1M count=8; sleep 3600"]
    volumeMounts: [{name: scratch, mountPath: /scratch}]""",
        )
    )

    def evicted() -> bool:
        status = vlab.store.get("pods", "default", "greedy")["status"]
        return status.get("reason") == "Evicted"

    assert wait_for(evicted, 10)
    status = vlab.store.get("pods", "default", "greedy")["status"]
    assert status["phase"] == "Failed"
    assert status["message"] == 'Usage of EmptyDir volume "scratch" exceeds the limit "4Mi". '
    assert ("Evicted", status["message"]) in events_of(vlab, "greedy")
    pod = vlab.pod("greedy")
    assert not (node_disk(vlab.spec.name, "n3") / "pods" / pod.netns).exists()
    vlab.delete_pod("greedy")


def host_path_pod(name: str, node: str, type_: str = "DirectoryOrCreate") -> str:
    return bare_pod(
        name,
        node,
        f"""  - {{name: disk, hostPath: {{path: /srv/shared, type: {type_}}}}}""",
        """  - name: app
    image: busybox
    command: [sleep, "3600"]
    volumeMounts: [{name: disk, mountPath: /srv}]""",
    )


def test_host_path_is_each_nodes_own_disk(vlab):
    vlab.apply_text(host_path_pod("hp1", "n1"))
    assert wait_for(lambda: running(vlab, "hp1"), 10)
    vlab.exec("hp1", ["sh", "-c", "echo from-n1 > /srv/note"])
    vlab.delete_pod("hp1")
    # the node's files outlive the pod: the next pod on n1 finds them...
    vlab.apply_text(host_path_pod("hp2", "n1"))
    assert wait_for(lambda: running(vlab, "hp2"), 10)
    assert vlab.exec("hp2", ["cat", "/srv/note"]).stdout == "from-n1\n"
    # ...and a pod on another node has a disk of its own
    vlab.apply_text(host_path_pod("hp3", "n2"))
    assert wait_for(lambda: running(vlab, "hp3"), 10)
    assert vlab.exec("hp3", ["test", "-e", "/srv/note"]).returncode != 0
    assert (node_disk(vlab.spec.name, "n1") / "hostpath/srv/shared/note").exists()
    assert not os.path.exists("/srv/shared/note")  # not the host's own /srv
    for name in ("hp2", "hp3"):
        vlab.delete_pod(name)


def test_a_missing_host_path_directory_holds_the_pod_in_container_creating(vlab):
    vlab.apply_text(host_path_pod("hp4", "n4", "Directory").replace("/srv/shared", "/nothing"))
    expected = (
        'MountVolume.SetUp failed for volume "disk" : hostPath type check failed: '
        "/nothing is not a directory"
    )
    assert wait_for(
        lambda: any(
            r == "FailedMount" and m.startswith(expected) for r, m in events_of(vlab, "hp4")
        ),
        5,
    )
    (status,) = vlab.store.get("pods", "default", "hp4")["status"]["containerStatuses"]
    assert status["state"] == {"waiting": {"reason": "ContainerCreating"}}
    # the node's directory appears: the pod starts at its next try
    (node_disk(vlab.spec.name, "n4") / "hostpath/nothing").mkdir(parents=True)
    assert wait_for(lambda: running(vlab, "hp4"), 10)
    vlab.delete_pod("hp4")


def test_a_mount_of_an_undeclared_volume_is_refused_before_anything_is_built(vlab):
    bad = bare_pod(
        "undeclared",
        "n1",
        """  - {name: data, emptyDir: {}}""",
        """  - name: app
    image: busybox
    command: [sleep, "3600"]
    volumeMounts: [{name: dta, mountPath: /data}, {name: data, mountPath: /data}]""",
    )
    with pytest.raises(SpecError) as info:
        vlab.apply_text(bad)
    text = str(info.value)
    assert 'spec.containers[0].volumeMounts[0].name: Not found: "dta"' in text
    assert "declare a volume named 'dta'" in text
    assert "undeclared" not in {p.name for p in vlab.pod_list()}


CONFIG = """
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data:
  level: debug
  app.conf: |
    port=8080
---
apiVersion: v1
kind: Secret
metadata: {name: db}
stringData: {password: s3cret}
"""

CONFIGURED = bare_pod(
    "configured",
    "n3",
    """  - {name: config, configMap: {name: app-config}}
  - name: creds
    secret: {secretName: db, items: [{key: password, path: db/password, mode: 0400}]}""",
    """  - name: app
    image: busybox
    command: [sleep, "3600"]
    env:
    - name: LEVEL
      valueFrom: {configMapKeyRef: {name: app-config, key: level}}
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: db, key: password}}
    - name: NODE
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
    - name: MISSING
      valueFrom: {configMapKeyRef: {name: app-config, key: nothing, optional: true}}
    envFrom:
    - {configMapRef: {name: app-config}, prefix: CFG_}
    volumeMounts:
    - {name: config, mountPath: /etc/app}
    - {name: config, mountPath: /etc/fixed.conf, subPath: app.conf}
    - {name: creds, mountPath: /secrets}""",
)


def test_config_maps_and_secrets_as_files_and_env_and_a_change_reaching_the_files(vlab):
    vlab.apply_text(CONFIG)
    vlab.apply_text(CONFIGURED)
    assert wait_for(lambda: running(vlab, "configured"), 10)
    lines = vlab.exec("configured", ["env"]).stdout.splitlines()
    env = dict(line.split("=", 1) for line in lines if "=" in line)  # app.conf: two lines
    assert env["LEVEL"] == "debug" and env["PASSWORD"] == "s3cret" and env["NODE"] == "n3"
    assert env["CFG_level"] == "debug" and "MISSING" not in env
    # `netlab exec` too: the environment the container was started with, no more
    shown = netlab("--lab", vlab.spec.name, "exec", "configured", "--", "env").stdout
    cli_env = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
    assert cli_env["LEVEL"] == "debug" and cli_env["PASSWORD"] == "s3cret"
    assert "SUDO_USER" not in cli_env and "PYTEST_CURRENT_TEST" not in cli_env
    assert vlab.exec("configured", ["cat", "/etc/app/app.conf"]).stdout == "port=8080\n"
    assert vlab.exec("configured", ["cat", "/secrets/db/password"]).stdout == "s3cret"
    mode = vlab.exec("configured", ["stat", "-L", "-c", "%a", "/secrets/db/password"])
    assert mode.stdout.strip() == "400"
    refused = vlab.exec("configured", ["sh", "-c", "echo x > /etc/app/new"])
    assert "Read-only file system" in refused.stderr
    # kubelet's sync: the change reaches the mounted files, not the subPath one
    cm = vlab.store.get("configmaps", "default", "app-config")
    cm["data"]["app.conf"] = "port=9090\n"
    vlab.store.update(cm)
    assert wait_for(
        lambda: vlab.exec("configured", ["cat", "/etc/app/app.conf"]).stdout == "port=9090\n", 5
    )
    assert vlab.exec("configured", ["cat", "/etc/fixed.conf"]).stdout == "port=8080\n"
    vlab.delete_pod("configured")
    assert not (vlab.run_dir / "pods" / vlab.spec.name).exists()


def test_a_pod_waits_for_a_config_map_it_needs(vlab):
    vlab.apply_text(
        bare_pod(
            "waiting",
            "n2",
            """  - {name: config, configMap: {name: later}}""",
            """  - name: app
    image: busybox
    command: [sleep, "3600"]
    volumeMounts: [{name: config, mountPath: /etc/later}]
    env:
    - name: GREETING
      valueFrom: {configMapKeyRef: {name: later, key: greeting}}""",
        )
    )
    missing = 'MountVolume.SetUp failed for volume "config" : configmap "later" not found'
    assert wait_for(lambda: ("FailedMount", missing) in events_of(vlab, "waiting"), 5)
    (status,) = vlab.store.get("pods", "default", "waiting")["status"]["containerStatuses"]
    assert status["state"] == {"waiting": {"reason": "ContainerCreating"}}
    # the ConfigMap without the key: the volume mounts, the env cannot be made
    vlab.apply_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: later}\ndata: {other: x}\n")

    def waiting_reason() -> dict:
        (state,) = vlab.store.get("pods", "default", "waiting")["status"]["containerStatuses"]
        return state["state"].get("waiting") or {}

    assert wait_for(lambda: waiting_reason().get("reason") == "CreateContainerConfigError", 5)
    assert waiting_reason()["message"] == "couldn't find key greeting in ConfigMap default/later"
    cm = vlab.store.get("configmaps", "default", "later")
    cm["data"]["greeting"] = "hello"
    vlab.store.update(cm)
    assert wait_for(lambda: running(vlab, "waiting"), 10)
    assert vlab.exec("waiting", ["sh", "-c", "echo $GREETING"]).stdout == "hello\n"
    vlab.delete_pod("waiting")


def test_kubectl_applies_describes_and_execs_a_pod_with_volumes(vlab):
    from tests.root.test_configdata import kubectl

    kubectl(vlab, "create", "configmap", "motd", "--from-literal=text=hi from kubectl")
    pod = bare_pod(
        "kube",
        "n4",
        """  - {name: motd, configMap: {name: motd}}
  - {name: scratch, emptyDir: {sizeLimit: 16Mi}}""",
        """  - name: app
    image: busybox
    command: [sleep, "3600"]
    env:
    - name: TEXT
      valueFrom: {configMapKeyRef: {name: motd, key: text}}
    volumeMounts:
    - {name: motd, mountPath: /etc/motd.d}
    - {name: scratch, mountPath: /scratch}""",
    )
    assert "pod/kube created" in kubectl(vlab, "apply", "-f", "-", stdin=pod).stdout
    kubectl(vlab, "wait", "--for=condition=Ready", "pod/kube", "--timeout=30s")
    assert "pod/kube unchanged" in kubectl(vlab, "apply", "-f", "-", stdin=pod).stdout
    described = kubectl(vlab, "describe", "pod", "kube").stdout
    assert "ConfigMap (a volume populated by a ConfigMap)" in described
    assert "EmptyDir (a temporary directory that shares a pod's lifetime)" in described
    # as written (kubelet makes a configMap read-only whatever the spec says)
    assert "/etc/motd.d from motd (rw)" in described and "/scratch from scratch (rw)" in described
    shown = kubectl(vlab, "exec", "kube", "--", "sh", "-c", 'cat /etc/motd.d/text; echo " $TEXT"')
    assert shown.stdout == "hi from kubectl hi from kubectl\n"
    kubectl(vlab, "delete", "pod", "kube", "--wait=true")
    kubectl(vlab, "delete", "configmap", "motd")
