"""Volumes: netlab's disks against the kernel's own tools, in one run, interleaved
rounds, medians.

  (1) disks: a PersistentVolumeClaim applied through the lab's API until it is Bound
      (a user's `kubectl apply` + wait), against making the same disk by hand
      (`truncate` + `mkfs.ext4`); attach + mount of a real ext4 image as the lab does
      it (netlab.node.loopdisks: one LOOP_CONFIGURE ioctl, then mount_global at the
      node's global mount, as the attach/detach controller and kubelet do) against
      `losetup --find --show` + `mount` on a copy of the same image; detach (unmount
      + detach) against `umount` + `losetup -d`;
  (2) mkfs options: a fresh image made with the lab's lazy mkfs.ext4 options
      (lazy_itable_init=1,lazy_journal_init=1) and with eager ones (=0): mkfs time,
      the host disk it takes, and its first and second write (busybox dd, conv=fsync)
      against the host filesystem's;
  (3) write throughput: /bin/busybox dd (conv=fsync) inside a busybox pod into a
      disk-backed emptyDir and into a PersistentVolumeClaim, against the same binary
      writing to the host's own filesystem where the lab's state lives
      (netlab.paths.STATE_ROOT): only the storage differs;
  (4) node failure: a StatefulSet `db` (1 replica, busybox, a volumeClaimTemplate;
      its container serves its disk with busybox httpd) and a ClusterIP Service over
      it; a file written to db-0's disk, then `netlab node fail NODE` (the command) on
      db-0's node: the time until a client pod on another node gets that file back
      through the Service (db-0 running on another node with its old disk), with the
      lab's default grace period (lab.controlPlane.nodeGracePeriod, 1 s); the node
      recovered between rounds. Kubernetes cannot run here: its timing is stated,
      not measured (a node is NotReady after node-monitor-grace-period, 40 s; the
      attach/detach controller force-detaches a lost node's disk only after
      maxWaitForUnmountDuration, 6 min).

Every lab (`benchvol`), loop device, mount and file it makes goes at the end, also on
failure or Ctrl-C; traffic only inside the lab's namespaces; only processes it started
are ended, by PID.

    python bench/volumes.py            # 5 rounds, about 40 s
    python bench/volumes.py --quick    # 2 rounds, about 20 s
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import common
from common import fmt, goal, median, paired_ratio, say, table
from containers import client, end_lab, netlab, running

from netlab import loadgen, paths
from netlab.node import diskimages, loopdisks, mounts
from netlab.node.containers import container_pid, enter_argv

LAB = "benchvol"
WORK = "benchvold"  # paths.state_dir(WORK): the bench's own images, mounts and host files
GIB = 1 << 30
MIB = 1 << 20
DISK_BYTES = GIB  # the claims' and the direct images' size
GOAL_ATTACH_MS = 100.0
GOAL_FAILOVER_S = 3.0
GOAL_THROUGHPUT = 0.8
K8S_NODE_MONITOR_GRACE_S = 40
K8S_FORCE_DETACH_S = 6 * 60
BUDGET = 5 * 60
BUSYBOX = "/bin/busybox"  # Debian's busybox-static: the binary of the lab's busybox image
EAGER_MKFS = tuple(
    "lazy_itable_init=0,lazy_journal_init=0,nodiscard" if o.startswith("lazy_itable") else o
    for o in diskimages.MKFS_OPTIONS
)

# db-0 counts its starts on its disk and serves the disk over HTTP
DB_COMMAND = (
    "n=$(cat /data/count 2>/dev/null || echo 0); echo $((n+1)) > /data/count; sync; "
    "exec httpd -f -p 8080 -h /data"
)


# ---------------------------------------------------------------- small tools


def timed(call: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def sh(*argv: str, timeout: float = 60.0) -> str:
    """Run a command to its exit (RuntimeError if it failed); its stdout."""
    return common.run(argv, timeout=timeout).stdout


def wait_until(predicate: Callable[[], object], timeout: float, what: str, step=0.01) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"{what}: not within {timeout:g} s")
        time.sleep(step)
    return time.monotonic() - start


def device_free(device: str) -> bool:
    return loopdisks.backing_file(device) is None


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def dd_argv(target: Path, mib: int) -> list[str]:
    return ["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={mib}", "conv=fsync"]


def host_dd(target: Path, mib: int, keep: bool = False) -> float:
    """Seconds of /bin/busybox dd writing `mib` MiB to `target` with fsync, less the
    start of a busybox process (busybox true); then the file removed (untimed) unless
    `keep`."""
    try:
        os.sync()  # nothing dirty left from the step before (untimed)
        spent = timed(lambda: sh(BUSYBOX, *dd_argv(target, mib)))
        base = timed(lambda: sh(BUSYBOX, "true"))
        return max(spent - base, 1e-6)
    finally:
        if not keep:
            target.unlink(missing_ok=True)


def mib_s(mib: int, seconds: float) -> float:
    return mib / seconds if seconds == seconds and seconds > 0 else float("nan")


# ---------------------------------------------------------------- (1) attach, detach


class DirectDisks:
    """The bench's own images under paths.state_dir(WORK) (the host filesystem the
    lab's disks live on), attached by netlab's LoopDisks or by losetup."""

    def __init__(self) -> None:
        self.root = paths.state_dir(WORK)
        if self.root.exists():
            self.remove()
        self.root.mkdir(parents=True, mode=0o700)
        self.loops = loopdisks.LoopDisks()
        self.ref_devices: list[str] = []

    def image(self, name: str, options: tuple[str, ...] | None = None) -> tuple[Path, float]:
        """A fresh image (the lab's mkfs options, or `options`), and seconds to make it."""
        path = self.root / f"{name}.img"
        path.unlink(missing_ok=True)
        if options is None:
            return path, timed(lambda: diskimages.create(path, DISK_BYTES))
        t0 = time.perf_counter()
        with open(path, "wb") as f:
            f.truncate(DISK_BYTES)
        sh(shutil.which("mkfs.ext4") or "/sbin/mkfs.ext4", *options, str(path))
        return path, time.perf_counter() - t0

    def netlab_attach(self, image: Path, target: Path) -> tuple[str, float]:
        """netlab's attach + mount, as the attach/detach controller and kubelet: the
        device and seconds."""
        t0 = time.perf_counter()
        device = self.loops.attach(image)
        loopdisks.mount_global(device, target)
        return device, time.perf_counter() - t0

    def netlab_detach(self, device: str, target: Path) -> float:
        t0 = time.perf_counter()
        loopdisks.unmount_global(target)
        self.loops.detach(device)
        return time.perf_counter() - t0

    def ref_attach(self, image: Path, target: Path) -> tuple[str, float]:
        target.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        device = sh("losetup", "--find", "--show", str(image)).strip()
        self.ref_devices.append(device)
        sh("mount", device, str(target))
        return device, time.perf_counter() - t0

    def ref_detach(self, device: str, target: Path) -> float:
        t0 = time.perf_counter()
        sh("umount", str(target))
        sh("losetup", "-d", device)
        seconds = time.perf_counter() - t0
        self.ref_devices.remove(device)
        return seconds

    def remove(self) -> None:
        """Every mount and loop device on our images, then the files."""
        for point in mounts.mounted_under(self.root):
            with contextlib.suppress(OSError):
                mounts.unmount(point)
        if hasattr(self, "loops"):
            self.loops.close()
        loopdisks.sweep(self.root)
        with contextlib.suppress(Exception):
            wait_until(lambda: not self.devices(), 5, "loop devices on the bench's images")
        mounts.remove_tree(self.root)

    def devices(self) -> list[str]:
        base = str(self.root) + "/"
        return [d.device for d in loopdisks.loop_devices() if d.backing_file.startswith(base)]


@dataclass
class AttachRound:
    attach: float
    detach: float
    lingered: float  # seconds the device stayed configured after detach returned


def attach_round(disks: DirectDisks, image: Path, netlab_side: bool) -> AttachRound:
    target = disks.root / ("mnt-netlab" if netlab_side else "mnt-ref") / "globalmount"
    if netlab_side:
        device, attach = disks.netlab_attach(image, target)
    else:
        device, attach = disks.ref_attach(image, target)
    if loopdisks.mounted_device(target) != device:
        raise RuntimeError(f"{image} is not mounted at {target}")
    (target / "probe").write_text("x")
    detach = (disks.netlab_detach if netlab_side else disks.ref_detach)(device, target)
    lingered = wait_until(lambda: device_free(device), 5, f"{device} detached")
    return AttachRound(attach, detach, lingered)


@dataclass
class MkfsRound:
    mkfs: float
    disk: int  # bytes of the host's disk the fresh image takes
    first: float  # dd seconds, first write on the fresh filesystem
    second: float


def mkfs_round(disks: DirectDisks, options: tuple[str, ...] | None, mib: int) -> MkfsRound:
    name = "lazy" if options is None else "eager"
    image, made = disks.image(f"mkfs-{name}", options)
    used = allocated(image)
    target = disks.root / f"mnt-{name}" / "globalmount"
    device, _ = disks.netlab_attach(image, target)
    try:
        first = host_dd(target / "f", mib)
        second = host_dd(target / "f", mib)
    finally:
        disks.netlab_detach(device, target)
        wait_until(lambda: device_free(device), 5, f"{device} detached")
        image.unlink()
    return MkfsRound(made, used, first, second)


# ---------------------------------------------------------------- the lab


def lab_file(directory: Path) -> Path:
    text = textwrap.dedent(
        f"""\
        lab:
          name: {LAB}
          racks:
            - name: rack1
              subnet: 192.168.1.0/24
              nodes: [n1, n2]
            - name: rack2
              subnet: 192.168.2.0/24
              nodes: [n3, n4]
        ---
        apiVersion: v1
        kind: Service
        metadata: {{name: db}}
        spec: {{clusterIP: None, selector: {{app: db}}}}
        ---
        apiVersion: v1
        kind: Service
        metadata: {{name: db-http}}
        spec:
          selector: {{app: db}}
          ports: [{{port: 80, targetPort: 8080}}]
        ---
        apiVersion: apps/v1
        kind: StatefulSet
        metadata: {{name: db}}
        spec:
          replicas: 1
          serviceName: db
          selector: {{matchLabels: {{app: db}}}}
          template:
            metadata: {{labels: {{app: db}}}}
            spec:
              containers:
              - name: db
                image: busybox
                command: [sh, -c, "{DB_COMMAND}"]
                volumeMounts: [{{name: data, mountPath: /data}}]
          volumeClaimTemplates:
          - metadata: {{name: data}}
            spec:
              accessModes: [ReadWriteOnce]
              resources: {{requests: {{storage: 64Mi}}}}
        ---
        apiVersion: v1
        kind: PersistentVolumeClaim
        metadata: {{name: io-data}}
        spec:
          accessModes: [ReadWriteOnce]
          resources: {{requests: {{storage: 1Gi}}}}
        """
    )
    for name, node in (("client1", "n1"), ("client3", "n3")):
        text += textwrap.dedent(
            f"""\
            ---
            apiVersion: v1
            kind: Pod
            metadata: {{name: {name}}}
            spec:
              nodeName: {node}
              containers:
              - {{name: c, image: busybox, command: [sleep, infinity]}}
            """
        )
    text += textwrap.dedent(
        """\
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: io}
        spec:
          nodeName: n2
          volumes:
          - {name: scratch, emptyDir: {}}
          - {name: data, persistentVolumeClaim: {claimName: io-data}}
          containers:
          - name: io
            image: busybox
            command: [sleep, infinity]
            volumeMounts:
            - {name: scratch, mountPath: /scratch}
            - {name: data, mountPath: /data}
        """
    )
    path = directory / f"{LAB}.yaml"
    path.write_text(text)
    return path


def pod(name: str) -> dict | None:
    items = client(LAB).list("pods", field_selector=f"metadata.name={name}")["items"]
    return items[0] if items else None


def running_on(name: str) -> str | None:
    obj = pod(name)
    if obj is None or obj["metadata"].get("deletionTimestamp") or not running(obj):
        return None
    return obj["spec"]["nodeName"]


def pid_of(name: str) -> int:
    obj = pod(name)
    (status,) = obj["status"]["containerStatuses"]
    pid = container_pid(paths.RUN_ROOT / LAB, status["containerID"])
    if pid is None:
        raise RuntimeError(f"pod {name}: its container is not running")
    return pid


def in_pod(name: str, *argv: str, timeout: float = 60.0) -> str:
    """Run a command in a pod's container (what `netlab exec` runs once it found it)."""
    return sh(*enter_argv(pid_of(name)), *argv, timeout=timeout)


# ---------------------------------------------------------------- (1) provisioning


CLAIM = """\
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 1Gi}}}}
"""


def provision(name: str) -> float:
    """Seconds from sending a claim to the lab's API to a watch seeing it Bound; then
    the claim deleted and its volume gone (untimed)."""
    api = client(LAB)
    t0 = time.perf_counter()
    api.apply(CLAIM.format(name=name))
    bound = float("nan")
    for event in api.watch(
        "persistentvolumeclaims", timeout=30, field_selector=f"metadata.name={name}"
    ):
        if ((event.get("object") or {}).get("status") or {}).get("phase") == "Bound":
            bound = time.perf_counter() - t0
            break
    if bound != bound:
        raise RuntimeError(f"claim {name} not Bound within 30 s")
    volume = api.get("persistentvolumeclaims", name)["spec"]["volumeName"]
    api.delete("persistentvolumeclaims", name, "default")
    wait_until(
        lambda: (
            not api.list("persistentvolumes", field_selector=f"metadata.name={volume}")["items"]
        ),
        20,
        f"volume {volume} deleted",
        step=0.05,
    )
    return bound


def by_hand(disks: DirectDisks) -> float:
    """The reference disk: `truncate -s 1G` + `mkfs.ext4 -q -F` (Debian's defaults)."""
    path = disks.root / "by-hand.img"
    t0 = time.perf_counter()
    sh("truncate", "-s", str(DISK_BYTES), str(path))
    sh(shutil.which("mkfs.ext4") or "/sbin/mkfs.ext4", "-q", "-F", str(path))
    seconds = time.perf_counter() - t0
    path.unlink()
    return seconds


# ---------------------------------------------------------------- (3) throughput


def pod_dd(directory: str, mib: int) -> float:
    """Seconds of busybox dd in the io pod's container writing to `directory`, less
    entering the container (`true` the same way); the file removed (untimed)."""
    pid = pid_of("io")
    target = f"{directory}/f"
    try:
        os.sync()  # nothing dirty left from the step before (untimed)
        spent = timed(lambda: sh(*enter_argv(pid), *dd_argv(Path(target), mib)))
        base = timed(lambda: sh(*enter_argv(pid), "true"))
        return max(spent - base, 1e-6)
    finally:
        in_pod("io", "rm", "-f", target)


# ---------------------------------------------------------------- (4) node failure


@dataclass
class FailRound:
    node: str
    landed: str
    running: float  # db-0 running on another node, seconds after the command started
    serving: float  # the client gets the old file back through the Service
    command: float  # the `netlab node fail` command itself
    count: str  # db-0's start counter after the move (one more than before)


def db_url() -> str:
    svc = client(LAB).get("services", "db-http")
    return f"http://{svc['spec']['clusterIP']}/"


def client_for(victim: str) -> str:
    """A client pod not on the node that fails (on the other rack when it can)."""
    return "client3" if victim in ("n1", "n2") else "client1"


def netns_of(name: str) -> str:
    return pod(name)["metadata"]["annotations"]["netlab.io/netns"]


_GET = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())"


def fetch(netns: str, url: str) -> str:
    """One GET from inside a pod's network namespace (the host's python3, as
    netlab.loadgen runs it; Debian 12's busybox wget crashes with -T)."""
    return sh("ip", "netns", "exec", netns, "python3", "-c", _GET, url, timeout=10)


def fail_round(index: int, url: str) -> FailRound:
    victim = wait_until_value(lambda: running_on("db-0"), 30, "db-0 running")
    token = f"round-{index}-{time.time_ns()}"
    in_pod("db-0", "sh", "-c", f"echo {token} > /data/marker && sync")
    count = in_pod("db-0", "cat", "/data/count").strip()
    probe = client_for(victim)
    netns = netns_of(probe)
    wait_until(lambda: fetch(netns, url + "marker").strip() == token, 10, "marker served")
    load = loadgen.Load(netns, url + "marker", seconds=40, interval=0.02)
    try:
        time.sleep(0.3)
        since = time.time()
        t0 = time.perf_counter()
        command = netlab("node", "fail", victim, "--lab", LAB)
        wait_until(
            lambda: (node := running_on("db-0")) is not None and node != victim,
            30,
            "db-0 running on another node",
        )
        moved = time.perf_counter() - t0
        landed = running_on("db-0")

        def good_again() -> bool:
            return fetch(netns, url + "marker").strip() == token

        wait_until(lambda: _quiet(good_again), 15, "the old marker served again", step=0.02)
        time.sleep(0.3)
    finally:
        answers = load.stop()
    answers = [
        loadgen.Answer(a.at, a.ok and a.body == token, a.body) for a in answers if a.at >= since
    ]
    if not any(not a.ok for a in answers):
        raise RuntimeError("no request failed: the failure was not seen")
    recovered = loadgen.recovered_after(answers, since)
    new_count = in_pod("db-0", "cat", "/data/count").strip()
    if new_count != str(int(count) + 1):
        raise RuntimeError(f"db-0's counter {new_count} after the move, expected {int(count) + 1}")
    netlab("node", "recover", victim, "--lab", LAB)
    wait_until(lambda: node_ready(victim), 30, f"{victim} Ready again", step=0.05)
    return FailRound(
        victim,
        landed or "?",
        moved,
        recovered if recovered is not None else float("nan"),
        command,
        new_count,
    )


def _quiet(predicate: Callable[[], bool]) -> bool:
    try:
        return predicate()
    except (RuntimeError, subprocess.TimeoutExpired):
        return False


def wait_until_value(call: Callable[[], str | None], timeout: float, what: str) -> str:
    """The first true value `call` returns within `timeout` s."""
    start = time.monotonic()
    while not (value := call()):
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)
    return value


def node_ready(name: str) -> bool:
    node = client(LAB).get("nodes", name)
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (node.get("status") or {}).get("conditions") or []
    )


# ---------------------------------------------------------------- the run


@dataclass
class Results:
    attach: dict[str, list[AttachRound]] = field(default_factory=dict)
    mkfs: dict[str, list[MkfsRound]] = field(default_factory=dict)
    mkfs_host: list[float] = field(default_factory=list)
    provision: list[float] = field(default_factory=list)
    by_hand: list[float] = field(default_factory=list)
    lab_up: float = float("nan")
    writes: dict[str, list[float]] = field(default_factory=dict)
    failover: list[FailRound] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    state_gone: float = float("nan")  # seconds the lab's state dir outlived `netlab down`


def measure_direct(args, res: Results, disks: DirectDisks) -> None:
    image, _ = disks.image("attach")
    copy = disks.root / "attach-copy.img"
    sh("cp", "--sparse=always", str(image), str(copy))
    # once each, untimed: the first mount of a fresh image starts its lazy init
    attach_round(disks, image, True)
    attach_round(disks, copy, False)
    res.attach = {"netlab": [], "ref": []}
    for _ in range(args.rounds * 2):
        res.attach["netlab"].append(attach_round(disks, image, True))
        res.attach["ref"].append(attach_round(disks, copy, False))
    image.unlink()
    copy.unlink()
    res.mkfs = {"lazy": [], "eager": []}
    # untimed: the run's first write lands on host blocks not written before, which this
    # machine's disk writes several times slower than blocks written again
    host_dd(disks.root / "host-f", args.mib)
    for index in range(args.rounds):
        # host first in even rounds, last in odd ones
        steps = [
            ("lazy", lambda: res.mkfs["lazy"].append(mkfs_round(disks, None, args.mib))),
            ("eager", lambda: res.mkfs["eager"].append(mkfs_round(disks, EAGER_MKFS, args.mib))),
        ]
        host = ("host", lambda: res.mkfs_host.append(host_dd(disks.root / "host-f", args.mib)))
        for _, step in [host, *steps] if index % 2 == 0 else [*steps, host]:
            step()
        lazy, eager = res.mkfs["lazy"][-1], res.mkfs["eager"][-1]
        say(
            f"  mkfs {index + 1}: host {fmt(mib_s(args.mib, res.mkfs_host[-1]), 0)} MiB/s; "
            + "; ".join(
                f"{n} {r.mkfs * 1e3:.0f} ms, 1st {fmt(mib_s(args.mib, r.first), 0)}, "
                f"2nd {fmt(mib_s(args.mib, r.second), 0)} MiB/s"
                for n, r in (("lazy", lazy), ("eager", eager))
            )
        )


def measure_lab(args, res: Results, disks: DirectDisks, lab_path: Path, deadline) -> None:
    res.lab_up = netlab("up", "-d", str(lab_path), timeout=180)
    say(f"  lab {LAB} up in {res.lab_up:.1f} s (`netlab up -d`)")
    wait_until(
        lambda: all(running_on(p) for p in ("db-0", "io", "client1", "client3")),
        60,
        "the lab's pods running",
        step=0.1,
    )
    for index in range(args.rounds):
        res.provision.append(provision(f"claim-{index}"))
        res.by_hand.append(by_hand(disks))
    say(
        f"  provision: API claim -> Bound {fmt(median(res.provision) * 1e3, 0)} ms, "
        f"by hand {fmt(median(res.by_hand) * 1e3, 0)} ms"
    )
    # the host side writes beside the lab's disks (its state dir), where the lab's
    # emptyDirs and images get their blocks too
    host_dir = paths.state_dir(LAB) / "bench-host"
    host_dir.mkdir(mode=0o700)
    # first writes, apart from the rounds: the pod's new emptyDir, its claim's fresh disk
    # (where lazy init may run) and a new host file (kept meanwhile)
    res.writes = {
        "emptyDir-first": [pod_dd("/scratch", args.mib)],
        "pvc-first": [pod_dd("/data", args.mib)],
        "host-first": [host_dd(host_dir / "first", args.mib, keep=True)],
        "emptyDir": [],
        "pvc": [],
        "host": [],
    }
    steps = [
        ("emptyDir", lambda: pod_dd("/scratch", args.mib)),
        ("pvc", lambda: pod_dd("/data", args.mib)),
        ("host", lambda: host_dd(host_dir / "f", args.mib)),
    ]
    for index in range(args.rounds):
        order = steps[index % 3 :] + steps[: index % 3]  # each goes first in turn
        for name, step in order:
            res.writes[name].append(step())
        say(
            f"  writes {index + 1}: "
            + ", ".join(f"{n} {fmt(mib_s(args.mib, res.writes[n][-1]), 0)}" for n, _ in order)
            + " MiB/s"
        )
    say(
        "  writes MiB/s: "
        + ", ".join(f"{k} {fmt(mib_s(args.mib, median(v)), 0)}" for k, v in res.writes.items())
    )
    shutil.rmtree(host_dir)
    url = db_url()
    for index in range(args.rounds):
        if deadline.left() < 30:
            say(f"  note: out of time budget, {index} failover rounds")
            break
        try:
            round_ = fail_round(index, url)
        except Exception as exc:
            res.failures.append(f"failover round {index + 1}: {exc}")
            say(f"  failover round {index + 1} FAILED: {exc}")
            break
        res.failover.append(round_)
        say(
            f"  failover {index + 1}: {round_.node} failed -> db-0 on {round_.landed}: "
            f"running {round_.running:.2f} s, old data served {round_.serving:.2f} s "
            f"(command {round_.command:.2f} s, start counter {round_.count})"
        )
        common.settle(0.5, 5)


# ---------------------------------------------------------------- report


def ms(values: list[float]) -> float:
    return median(values) * 1e3


def report(args, res: Results) -> list[str]:
    out = []
    a_net, a_ref = res.attach.get("netlab", []), res.attach.get("ref", [])
    attach_ms = ms([r.attach for r in a_net])
    rows = [
        [
            "attach + mount (1 GiB ext4)",
            fmt(attach_ms, 1),
            fmt(ms([r.attach for r in a_ref]), 1),
            fmt(paired_ratio([r.attach for r in a_ref], [r.attach for r in a_net]), 1),
            f"<= {GOAL_ATTACH_MS:g} ms: {goal(attach_ms, GOAL_ATTACH_MS)}",
        ],
        [
            "detach (unmount + detach)",
            fmt(ms([r.detach for r in a_net]), 1),
            fmt(ms([r.detach for r in a_ref]), 1),
            fmt(paired_ratio([r.detach for r in a_ref], [r.detach for r in a_net]), 1),
            "",
        ],
        [
            "  device still configured after",
            fmt(ms([r.lingered for r in a_net]), 1),
            fmt(ms([r.lingered for r in a_ref]), 1),
            "",
            "",
        ],
        [
            "PVC provision: API apply -> Bound (1 GiB)",
            fmt(ms(res.provision), 0),
            fmt(ms(res.by_hand), 0),
            fmt(paired_ratio(res.by_hand, res.provision), 2),
            "",
        ],
    ]
    out.append(
        f"(1) disks: netlab vs losetup + mount(8) / umount + losetup -d / truncate + mkfs.ext4"
        f" ({len(a_net)} pairs, {len(res.provision)} claims)"
    )
    out.append(table(["", "netlab ms", "reference ms", "ref / netlab", "goal"], rows))

    rows = []
    host = median(res.mkfs_host)
    for name, opts in (("lazy", "lazy_itable_init=1,lazy_journal_init=1 (the lab's)"),
                       ("eager", "lazy_itable_init=0,lazy_journal_init=0")):  # fmt: skip
        got = res.mkfs.get(name) or []
        rows.append(
            [
                opts,
                fmt(ms([r.mkfs for r in got]), 0),
                fmt(median([r.disk for r in got]) / MIB, 1),
                fmt(mib_s(args.mib, median([r.first for r in got])), 0),
                fmt(paired_ratio(res.mkfs_host, [r.first for r in got]), 2),
                fmt(mib_s(args.mib, median([r.second for r in got])), 0),
                fmt(paired_ratio(res.mkfs_host, [r.second for r in got]), 2),
            ]
        )
    out.append("")
    out.append(
        f"(2) mkfs.ext4 options: a fresh 1 GiB image, attached by netlab, {args.mib} MiB busybox"
        f" dd conv=fsync; host filesystem {fmt(mib_s(args.mib, host), 0)} MiB/s"
    )
    out.append(
        table(
            ["", "mkfs ms", "disk MiB", "1st MiB/s", "1st / host", "2nd MiB/s", "2nd / host"],
            rows,
        )
    )

    w = res.writes
    host_w = w.get("host", [])
    rows = []
    for name, label in (
        ("emptyDir", "emptyDir (node disk) in a pod"),
        ("pvc", "PVC (loop ext4, direct I/O) in a pod"),
        ("host", f"host filesystem ({paths.STATE_ROOT}/{LAB})"),
        ("emptyDir-first", "first write: emptyDir, new"),
        ("pvc-first", "first write: PVC, its fresh disk"),
        ("host-first", "first write: host, a new file"),
    ):
        values = w.get(name, [])
        first = name.endswith("-first")
        # rounds: per-round pairs; a first write: against the rounds' host median
        ratio = median(host_w) / median(values) if first else paired_ratio(host_w, values)
        rows.append(
            [
                label,
                str(len(values)),
                fmt(mib_s(args.mib, median(values)), 0),
                fmt(ratio, 2),
                f">= {GOAL_THROUGHPUT:g}x: {goal(ratio, GOAL_THROUGHPUT, at_least=True)}"
                if name == "pvc"
                else "",
            ]
        )
    out.append("")
    out.append(
        f"(3) write throughput: {BUSYBOX} dd {args.mib} MiB bs=1M conv=fsync, the same binary"
        f" in the pod and on the host ({len(host_w)} rounds; x host: per-round pairs)"
    )
    out.append(table(["", "n", "MiB/s", "x host", "goal"], rows))
    out.append(
        "first writes: a new emptyDir and a claim's sparse image get host blocks this run has"
        " not written; see bench/README.md for why those are slower here, with or without mkfs"
    )

    f = res.failover
    serving = median([r.serving for r in f])
    rows = [
        ["`netlab node fail` command returned", fmt(median([r.command for r in f]), 2), ""],
        ["db-0 running on another node", fmt(median([r.running for r in f]), 2), ""],
        [
            "db-0 serving its old data there (client GET)",
            fmt(serving, 2),
            f"<= {GOAL_FAILOVER_S:g} s: {goal(serving, GOAL_FAILOVER_S)}",
        ],
        ["  max over rounds", fmt(max([r.serving for r in f], default=float("nan")), 2), ""],
        ["node grace period (lab default)", "1", ""],
        [
            "Kubernetes (defaults, not measured): NotReady after",
            f"{K8S_NODE_MONITOR_GRACE_S}",
            "node-monitor-grace-period",
        ],
        [
            "  then the lost node's disk force-detached after",
            f"+{K8S_FORCE_DETACH_S}",
            "maxWaitForUnmountDuration",
        ],
    ]
    moves = ", ".join(f"{r.node}->{r.landed}" for r in f)
    out.append("")
    out.append(
        f"(4) node failure -> StatefulSet db-0 serving its old data elsewhere ({len(f)} rounds:"
        f" {moves}); seconds from the command's start"
    )
    out.append(table(["", "s", "goal / note"], rows))
    out.append(
        "Kubernetes also keeps a StatefulSet's pod on an unreachable node (Terminating) until"
        " it is deleted by hand or with its Node: no replacement before that"
    )
    if res.state_gone == res.state_gone and res.state_gone > 0.05:
        out.append(
            f"note: the lab's state dir (its disks) was removed {res.state_gone:.2f} s after"
            " `netlab down` returned"
        )
    return out


# ---------------------------------------------------------------- main


def leftovers() -> list[str]:
    """What of ours is still there: loop devices on our images, state and run dirs."""
    found = [
        f"{d.device} ({d.backing_file})"
        for d in loopdisks.loop_devices()
        if any(f"/{name}/" in d.backing_file for name in (LAB, WORK))
    ]
    found += [
        str(p)
        for p in (paths.state_dir(LAB), paths.state_dir(WORK), paths.RUN_ROOT / LAB)
        if p.exists()
    ]
    found += mounts.mounted_under(paths.state_dir(LAB)) + mounts.mounted_under(
        paths.state_dir(WORK)
    )
    return found


def exit_on_sigterm() -> None:
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds")
    parser.add_argument("--rounds", type=int, help="rounds (default 5; --quick 2)")
    parser.add_argument("--mib", type=int, default=256, help="MiB each dd writes (256)")
    parser.add_argument("--budget", type=float, default=BUDGET, help="seconds (default 300)")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 5)
    if os.geteuid() != 0:
        say("volumes: needs root (loop devices, mounts, a lab)")
        return 2
    missing = [t for t in ("losetup", "mount", "umount", "mkfs.ext4") if not shutil.which(t)]
    if missing or not os.access(BUSYBOX, os.X_OK):
        say(f"volumes: missing {', '.join(missing) or BUSYBOX}")
        return 2
    exit_on_sigterm()
    common.raise_fd_limit()
    deadline = common.Deadline(args.budget)
    say("volumes: netlab's disks vs losetup/mount and the host filesystem, interleaved, medians")
    say(f"  rounds: {args.rounds}, dd {args.mib} MiB, cores: {os.cpu_count()}")
    tmp = Path(tempfile.mkdtemp(prefix="netlab-bench-volumes-"))
    res = Results()
    disks = None
    try:
        end_lab(LAB)  # one left by a crashed run of ours
        disks = DirectDisks()
        measure_direct(args, res, disks)
        say(
            f"  attach + mount: netlab {fmt(ms([r.attach for r in res.attach['netlab']]), 1)} ms,"
            f" losetup + mount {fmt(ms([r.attach for r in res.attach['ref']]), 1)} ms"
        )
        measure_lab(args, res, disks, lab_file(tmp), deadline)
    except Exception:
        traceback.print_exc()
        res.failures.append("setup or measurement failed (traceback above)")
    finally:
        end_lab(LAB)
        # `netlab down` returns once the supervisor's run dir is gone; its disks (the
        # state dir) go a moment later
        with contextlib.suppress(RuntimeError):
            res.state_gone = wait_until(
                lambda: not paths.state_dir(LAB).exists(), 15, "the lab's state dir", 0.02
            )
        if disks is not None:
            disks.remove()
        shutil.rmtree(tmp, ignore_errors=True)
    left = leftovers()
    if left:
        res.failures.append(f"left behind: {', '.join(left)}")
    say("")
    try:
        for line in report(args, res):
            say(line)
    except Exception:
        traceback.print_exc()
    if res.failures:
        say(f"failures: {len(res.failures)}: " + "; ".join(res.failures[:5]))
    say(f"total {deadline.elapsed():.0f} s")
    return 1 if res.failures else 0


if __name__ == "__main__":
    sys.exit(main())
