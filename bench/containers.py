"""Containers: netlab's runc pods against plain Mininet and podman.

One run, interleaved rounds, medians:

  (a) the 128-pod lab as a user sees it: `netlab up -d FILE` as a command, from its
      start to its exit (= the lab is ready), then `netlab down`, for 4 racks x 4
      nodes x 8 pods, one Deployment of `sleep infinity`, every pod a container of
      the busybox image; the same lab with no image (the host-root default image);
      plain Mininet making the same 144 hosts and links (bench/bringup.py's, in a
      throwaway namespace, never `mn -c`);
  (b) one container start: netlab's path (the image resolved, the bundle written,
      the overlay root mounted, `runc run -d` with an output pipe, the host's copy
      of the root detached: netlab.node.containers and netlab.node.shim, run in a
      subreaper worker as the lab's runtime daemon runs them) against `podman run -d
      --network none` of the same busybox image (Debian's podman, with runc); and a
      bare Pod created through the running busybox lab's API until its container runs;
  (c) memory of an idle busybox pod of the 128-pod lab: PSS of its container's
      processes, what netlab keeps per pod, and the lab's runtime daemon per pod
      (a pod's sandbox is a thread of it; what a thread costs, the kernel's part
      too, is measured in the worker).

    python bench/containers.py            # 5 rounds, about 3 min
    python bench/containers.py --quick    # 2 rounds, about 1 min
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from types import MappingProxyType

import common
from bringup import MININET_NETNS, SIZES, host_count, mininet_once
from common import fmt, goal, median, paired_ratio, say, table

from netlab.client import LabClient
from netlab.node import cni as pods
from netlab.node import mounts, shim
from netlab.node.bundle import nofile
from netlab.node.cgroups import (
    CgroupError,
    CgroupLayout,
    cgroups_path,
    container_dirs,
    usage,
)
from netlab.node.containers import Bundles, container_pid, image_command
from netlab.node.images import ImageStore
from netlab.node.runc import Runc, become_subreaper
from netlab.node.sandbox import Holders, SandboxPaths, SandboxRequest, paths_of
from netlab.paths import RUN_ROOT, socket_path
from netlab.plan.model import PodPlan
from netlab.plan.names import lab_prefix, pod_netns
from netlab.realize import cleanup, netns
from netlab.realize.runtimed import PARALLEL_STARTS
from netlab.spec.model import ContainerSpec, PodTemplate

PODS = 128
RACKS, PER_RACK, PER_NODE = SIZES[PODS]
IMAGE = "busybox"
LABS = {"busybox": "benchbb", "host": "benchhr"}  # lab kind -> lab name
WARMUP_LAB = "benchbbw"
PODMAN_IMAGE = "localhost/netlab-bench-busybox:latest"
PODMAN_NPROC = 32768
DIRECT_LAB = "benchct"  # the worker's containers: netns, cgroups and runc ids nl-benchct...
GOAL_LAB = 1.0  # netlab up / mininet up
# issue 18: if runc's start cost makes GOAL_LAB impossible, show the floor and keep the
# rest within 1.1x of the process-only lab, whose `netlab up -d` it measured at 1.10x
# Mininet (before containers; not measured by this script)
PROCESS_LAB_RATIO, FALLBACK_SLACK = 1.10, 1.1
GOAL_START = 10.0  # podman run -d / netlab container start
GOAL_MEMORY_MB = 2.0  # what netlab adds to an idle busybox pod besides its app
UP_TIMEOUT = 180.0
BUDGET = 6 * 60
MB = 1024 * 1024


# ---------------------------------------------------------------- (a) labs as a command


def lab_file(directory: Path, name: str, image: str | None, racks: int, per_rack: int) -> Path:
    """A lab file as a user writes it: racks x nodes and one Deployment."""
    rack_lines = "".join(
        f"    - name: rack{r}\n      subnet: 192.168.{r}.0/24\n"
        f"      nodes: [{', '.join(f'n{r}{k}' for k in range(1, per_rack + 1))}]\n"
        for r in range(1, racks + 1)
    )
    image_line = f"\n          image: {image}" if image else ""
    text = textwrap.dedent(
        """\
        lab:
          name: {name}
          racks:
        {racks}---
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: pause
          labels:
            app: pause
        spec:
          replicas: {replicas}
          selector:
            matchLabels:
              app: pause
          template:
            metadata:
              labels:
                app: pause
            spec:
              containers:
                - name: pause{image}
                  command: [sleep, infinity]
        """
    ).format(
        name=name,
        racks=rack_lines,
        replicas=racks * per_rack * PER_NODE,
        image=image_line,
    )
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path


def netlab_argv(*args: str) -> list[str]:
    """The command a user runs: the venv's `netlab` script (this checkout's code
    through PYTHONPATH), else `python -m netlab.cli`."""
    script = Path(sys.executable).with_name("netlab")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "netlab.cli"]
    return [*base, *args]


def netlab_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{common.REPO}{':' + path if path else ''}"}


def netlab(*args: str, timeout: float = 60.0) -> float:
    """Run a netlab command to its exit; seconds it took (RuntimeError if it failed)."""
    t0 = time.perf_counter()
    done = subprocess.run(
        netlab_argv(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=netlab_env(),
        stdin=subprocess.DEVNULL,
        check=False,
    )
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"netlab {' '.join(args)}: exit {done.returncode}: {' | '.join(tail)}")
    return seconds


def lab_alive(name: str) -> bool:
    return cleanup.supervisor_pid(RUN_ROOT / name) is not None


def end_lab(name: str) -> None:
    """A lab of ours must not outlive the bench: `netlab down`, else `netlab clean
    --force` (which ends the supervisor our `netlab up -d` started, by its PID)."""
    if not (RUN_ROOT / name).exists():
        return
    if lab_alive(name):
        with contextlib.suppress(Exception):
            netlab("down", "--lab", name, timeout=90)
    if (RUN_ROOT / name).exists():
        with contextlib.suppress(Exception):
            netlab("clean", "--force", "--lab", name, timeout=90)
            say(f"    cleaned lab {name} with `netlab clean --force`")


def client(name: str) -> LabClient:
    return LabClient(str(socket_path(RUN_ROOT / name)))


def default_pods(name: str) -> list[dict]:
    return client(name).list("pods", "default")["items"]


def check_lab(name: str, image: str | None) -> None:
    """The lab has its 128 pods, every container running from the image, spread evenly."""
    items = default_pods(name)
    if len(items) != PODS:
        raise RuntimeError(f"lab {name} has {len(items)} pods, expected {PODS}")
    per_node: dict[str, int] = {}
    for pod in items:
        (status,) = pod["status"].get("containerStatuses") or [{}]
        if "running" not in (status.get("state") or {}):
            raise RuntimeError(f"{pod['metadata']['name']}: container not running: {status}")
        if not str(status.get("containerID", "")).startswith("runc://"):
            raise RuntimeError(f"{pod['metadata']['name']}: not a runc container: {status}")
        if image and image not in str(status.get("image", "")):
            raise RuntimeError(f"{pod['metadata']['name']}: image {status.get('image')!r}")
        node = pod["spec"].get("nodeName", "")
        per_node[node] = per_node.get(node, 0) + 1
    if len(set(per_node.values())) > 1 or len(per_node) != RACKS * PER_RACK:
        say(f"    note: pods not spread evenly: {sorted(per_node.items())}")


# ---------------------------------------------------------------- (c) memory


def proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, command line) of every process, read once."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        found[int(entry)] = (ppid, cmdline)
    return found


def with_descendants(pid: int, procs: dict[int, tuple[int, str]]) -> list[int]:
    children: dict[int, list[int]] = {}
    for child, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(child)
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def smaps(pid: int) -> dict[str, int]:
    """Pss, Rss, ... in bytes from /proc/PID/smaps_rollup ({} if the process is gone)."""
    out = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            words = rest.split()
            if len(words) == 2 and words[1] == "kB":
                out[key] = int(words[0]) * 1024
    return out


def pss(pids: list[int]) -> int:
    return sum(smaps(p).get("Pss", 0) for p in pids)


def rss(pids: list[int]) -> int:
    return sum(smaps(p).get("Rss", 0) for p in pids)


def tree_bytes(path: Path) -> int:
    """Bytes allocated to the files under `path` (not crossing into mounts)."""
    total = 0
    with contextlib.suppress(OSError):
        top = os.lstat(path)
        total += top.st_blocks * 512
        if not os.path.isdir(path):
            return total
        for root, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if not os.path.ismount(os.path.join(root, d))]
            for name in dirs + files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def lab_memory(name: str) -> dict[str, float]:
    """Memory of the idle busybox lab `name`, bytes (per pod where it says so)."""
    run_dir = RUN_ROOT / name
    procs = proc_table()
    items = default_pods(name)
    layout = CgroupLayout.detect()
    runtimed = [
        pid
        for pid, (_, cmd) in procs.items()
        if "netlab.realize.runtimed" in cmd and f"{run_dir}/runtime.sock" in cmd
    ]
    supervisor = cleanup.supervisor_pid(run_dir)
    app_pss, app_rss, files, charged, app_pids = [], [], [], [], set()
    for pod in items:
        (status,) = pod["status"]["containerStatuses"]
        cid = status["containerID"]
        pid = container_pid(run_dir, cid)
        if pid is None:
            raise RuntimeError(f"{pod['metadata']['name']}: no running container {cid}")
        mine = with_descendants(pid, procs)
        app_pids.update(mine)
        app_pss.append(pss(mine))
        app_rss.append(rss(mine))
        ident = cid.partition("://")[2]
        pod_netns_name = pod_netns(lab_prefix(name), "default", pod["metadata"]["name"])
        # what netlab keeps on the host for this pod's container and /etc files (its
        # sandbox is a thread of the runtime daemon: in the daemon's PSS)
        files.append(
            tree_bytes(run_dir / "containers" / ident)
            + tree_bytes(run_dir / "runc" / ident)
            + tree_bytes(pods.etc_dir(pod_netns_name))
        )
        if runtimed:
            with contextlib.suppress(CgroupError, OSError):
                path = cgroups_path(layout, lab_prefix(name), ident)
                found = usage(container_dirs(layout, path, runtimed[0]))
                if found is not None:
                    charged.append(found.memory_usage)
    if not runtimed:
        raise RuntimeError(f"lab {name}: no runtime daemon found")
    # the lab's own pods (its DNS server) are the lab's, not a pod's
    system = set()
    for pod in client(name).list("pods", "kube-system")["items"]:
        for status in pod["status"].get("containerStatuses") or []:
            pid = container_pid(run_dir, status.get("containerID", ""))
            if pid is not None:
                system.update(with_descendants(pid, procs))
    # every other process of the runtime daemon's tree (a zygote, if it runs)
    others = [
        p
        for p in with_descendants(runtimed[0], procs)
        if p not in app_pids and p not in system and p != runtimed[0]
    ]
    return {
        "app_pss": median(app_pss),
        "app_rss": median(app_rss),
        "files": median(files),
        "charged": median(charged),
        "runtimed": pss([runtimed[0]]),
        "runtimed_threads": len(os.listdir(f"/proc/{runtimed[0]}/task")),
        "runtime_others": pss(others),
        "dns": pss(sorted(system)),
        "supervisor": pss([supervisor]) if supervisor else float("nan"),
        "pods": len(items),
    }


# ---------------------------------------------------------------- (b) bare pods via the API


POD_MANIFEST = """\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  containers:
    - name: app
      image: {image}
      command: [sleep, infinity]
"""


def running(pod: dict) -> bool:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all("running" in (s.get("state") or {}) for s in statuses)


def api_pod_start(lab: str, name: str) -> float:
    """Seconds from sending a bare Pod to the lab API to its container running, as a
    watch of that pod sees it."""
    api = client(lab)
    t0 = time.perf_counter()
    api.apply(POD_MANIFEST.format(name=name, image=IMAGE))
    for event in api.watch("pods", "default", timeout=30, field_selector=f"metadata.name={name}"):
        if running(event.get("object") or {}):
            return time.perf_counter() - t0
    raise RuntimeError(f"pod {name} did not run within 30 s")


def delete_pods(lab: str, names: list[str], timeout: float = 15.0) -> None:
    """Delete our bare pods and wait until they are gone (untimed)."""
    api = client(lab)
    for name in names:
        with contextlib.suppress(Exception):
            api.delete("pods", name, "default")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = {p["metadata"]["name"] for p in default_pods(lab)} & set(names)
        if not left:
            return
        time.sleep(0.05)
    say(f"    note: pods {sorted(left)} still listed after {timeout:.0f} s")


# ---------------------------------------------------------------- (b) netlab's path, a worker


def children_cpu() -> float:
    """CPU seconds of our ended children (runc, and the helpers it reaped)."""
    usage_ = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage_.ru_utime + usage_.ru_stime


def on_cpu(pid: int) -> float:
    """CPU seconds a running process has had (/proc/PID/schedstat): for a container's
    first process, what `runc init` spent in it before it became the app."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return float("nan")


class TimedRunc(Runc):
    """netlab's Runc, timing each `runc run -d`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.last_run = float("nan")

    def run(self, container_id: str, bundle: Path, output_fd: int) -> int:
        t0 = time.perf_counter()
        try:
            return super().run(container_id, bundle, output_fd)
        finally:
            self.last_run = time.perf_counter() - t0


class HeldSandboxes:
    """Pod sandboxes held by threads of this process (netlab.node.sandbox.Holders, as
    the runtime daemon holds the lab's), found by Bundles through `paths`."""

    def __init__(self) -> None:
        self.holders = Holders()
        self.tids: dict[str, int] = {}

    def create(self, names: list[str]) -> None:
        for answer in self.holders.create([SandboxRequest(n, "pod").message() for n in names]):
            if "error" in answer:
                raise RuntimeError(f"sandbox {answer['name']}: {answer['error']}")
            self.tids[answer["name"]] = answer["tid"]

    def remove(self, names: list[str]) -> None:
        self.holders.remove(names)
        for name in names:
            self.tids.pop(name, None)

    def paths(self, name: str) -> SandboxPaths:
        return paths_of(os.getpid(), self.tids[name])


def kernel_bytes() -> int:
    """The kernel's stacks and slab (/proc/meminfo, system-wide), bytes."""
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return sum(int(fields[key].split()[0]) * 1024 for key in ("KernelStack", "Slab"))


class DirectContainers:
    """One pod sandbox (netns, UTS, IPC, /etc files) whose containers are started one
    by one as the lab starts a pod's container: resolve the image, write the bundle
    (netlab.node.containers.Bundles), then netlab.node.shim.start. Runs in a worker
    process that is a child subreaper, as the lab's runtime daemon is."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.prefix = lab_prefix(DIRECT_LAB)
        self.netns = pod_netns(self.prefix, "default", "pod")
        self.store = ImageStore()
        self.sandboxes = HeldSandboxes()
        self.bundles = Bundles(run_dir, self.prefix, self.sandboxes)
        self.runc = TimedRunc(run_dir / "runc")
        self.running: list[shim.DetachedContainer] = []
        self.count = 0
        netns.create(self.netns)
        self.sandboxes.create([self.netns])
        pods.write_etc(self.plan(()))

    def plan(self, containers: tuple[ContainerSpec, ...]) -> PodPlan:
        template = PodTemplate(labels=MappingProxyType({}), containers=containers)
        return PodPlan(
            name="pod",
            namespace="default",
            node="n1",
            netns=self.netns,
            address=IPv4Interface("10.244.0.2/24"),
            gateway=IPv4Address("10.244.0.1"),
            host_ifname="-",
            labels=MappingProxyType({}),
            template=template,
        )

    def prepare(self):
        """(the bundle ready to run, seconds resolving the image, seconds writing it)."""
        self.count += 1
        container = ContainerSpec(name=f"c{self.count}", command=("sleep", "infinity"), image=IMAGE)
        t0 = time.perf_counter()
        image = self.store.resolve(container.image)
        t1 = time.perf_counter()
        argv, env = image_command(container, image.config, {})
        prepared = self.bundles.prepare(
            self.plan((container,)),
            container,
            argv,
            env,
            lower=str(image.rootfs),
            image_user=image.config.user or None,
            cwd=image.config.working_dir or "/",
        )
        return prepared, t1 - t0, time.perf_counter() - t1

    def run(self, prepared) -> float:
        """shim.start of a prepared bundle; seconds."""
        log = self.run_dir / "logs" / f"{prepared.runc_id}.log"
        t0 = time.perf_counter()
        proc = shim.start(self.runc, prepared.runc_id, prepared.bundle, prepared.lower, log)
        seconds = time.perf_counter() - t0
        self.running.append(proc)
        return seconds

    def start(self) -> dict:
        cpu0 = children_cpu()
        t0 = time.perf_counter()
        prepared, resolve, write = self.prepare()
        run = self.run(prepared)
        total = time.perf_counter() - t0
        return {
            "total": total,
            "resolve": resolve,
            "write": write,
            "shim": run,
            "runc": self.runc.last_run,
            "cpu": children_cpu() - cpu0 + on_cpu(self.running[-1].pid),
        }

    def parallel(self, count: int, workers: int) -> dict:
        """`count` prepared bundles started `workers` at a time, as the runtime daemon
        does (its PARALLEL_STARTS): wall seconds for all, CPU seconds for all."""
        prepared = [self.prepare()[0] for _ in range(count)]
        first = len(self.running)
        cpu0 = children_cpu()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(self.run, prepared))
        wall = time.perf_counter() - t0
        cpu = children_cpu() - cpu0 + sum(on_cpu(p.pid) for p in self.running[first:])
        return {"wall": wall, "cpu": cpu, "count": count}

    def sandbox_cost(self, count: int) -> dict:
        """Bytes per sandbox that `count` more sandboxes cost: this process's PSS (a
        thread's stack and state), and the kernel's (its stack, task and namespaces),
        which no PSS shows. Asked first: later threads would reuse cached stacks."""
        names = [f"cost-{i}" for i in range(count)]
        pss0, kernel0 = pss([os.getpid()]), kernel_bytes()
        self.sandboxes.create(names)
        time.sleep(0.2)  # every thread has sethostname'd and waits
        pss1, kernel1 = pss([os.getpid()]), kernel_bytes()
        self.sandboxes.remove(names)
        return {"pss": (pss1 - pss0) / count, "kernel": (kernel1 - kernel0) / count}

    def stop(self) -> dict:
        """End every container we started (SIGKILL by PID, reaped: we are their
        subreaper), then remove what shim.remove removes and the bundle."""
        stopped = 0
        for proc in self.running:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            proc.stdout.close()
            bundle = self.bundles.root / proc.runc_id
            shim.remove(self.runc, proc.runc_id, bundle)
            mounts.remove_tree(bundle)
            stopped += 1
        self.running = []
        return {"stopped": stopped}


def direct_cleanup(run_dir: Path) -> None:
    """Remove everything of the worker's, as `netlab clean` removes a lab's (idempotent;
    also from the parent, if the worker died): the processes in its netns (its
    containers), mounts, files, netns, /etc/netns files and cgroups."""
    cleanup.clean_lab(DIRECT_LAB, run_dir.parent)


def exit_on_sigterm() -> None:
    """SIGTERM (a `timeout`, a kill by PID) ends us through our `finally` blocks, so
    nothing of ours is left behind."""

    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def serve_direct(run_dir: Path) -> int:
    """The worker: JSON requests on stdin, one JSON answer per line on stdout."""
    exit_on_sigterm()
    become_subreaper()
    threading.stack_size(512 * 1024)  # as the runtime daemon's: a thread per sandbox
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing else may write to the answer channel
    direct = None
    try:
        direct = DirectContainers(run_dir)
        out.write(json.dumps({"ready": True}) + "\n")
        out.flush()
        for line in sys.stdin:
            request = json.loads(line)
            op = request["op"]
            try:
                if op == "start":
                    answer = direct.start()
                elif op == "parallel":
                    answer = direct.parallel(request["count"], request["workers"])
                elif op == "sandbox_cost":
                    answer = direct.sandbox_cost(request["count"])
                elif op == "stop":
                    answer = direct.stop()
                else:
                    answer = {"error": f"unknown op {op!r}"}
            except Exception as exc:
                traceback.print_exc()
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            out.write(json.dumps(answer) + "\n")
            out.flush()
    finally:
        if direct is not None:
            with contextlib.suppress(Exception):
                direct.stop()
        direct_cleanup(run_dir)
    return 0


class DirectWorker:
    """The parent's side of the worker process (started and ended by its PID)."""

    def __init__(self) -> None:
        self.run_dir = Path(tempfile.mkdtemp(prefix="nl-benchct-", dir="/run")) / DIRECT_LAB
        self.run_dir.mkdir()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-direct", str(self.run_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=netlab_env(),
        )
        hello = self._read(60)
        if not hello.get("ready"):
            raise RuntimeError(f"direct worker did not start: {hello}")

    def _read(self, timeout: float) -> dict:
        assert self.proc.stdout is not None
        import select

        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError("the direct worker gave no answer (see its output above)")
        return json.loads(line)

    def ask(self, timeout: float = 60.0, **request) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = self._read(timeout)
        if "error" in answer:
            raise RuntimeError(f"direct worker: {answer['error']}")
        return answer

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        common.end_process(self.proc, wait=20)
        direct_cleanup(self.run_dir)  # nothing left if the worker did its part
        with contextlib.suppress(OSError):
            self.run_dir.parent.rmdir()


# ---------------------------------------------------------------- (b) podman


class Podman:
    """`podman run -d` of our busybox image; every container we start is removed by its
    ID (by its name if its start failed before podman printed one)."""

    def __init__(self) -> None:
        self.started: list[str] = []  # IDs, or names where no ID came back
        self.count = 0
        # podman's defaults for root (1048576) are above this host's hard limits, which
        # runc's init cannot raise: the container gets netlab's NOFILE, and an NPROC
        # within what podman leaves its conmon (32768 here)
        nproc = min(PODMAN_NPROC, resource.getrlimit(resource.RLIMIT_NPROC)[1])
        self.ulimits = ["--ulimit", f"nofile={nofile()}:{nofile()}"]
        self.ulimits += ["--ulimit", f"nproc={nproc}:{nproc}"]

    @staticmethod
    def load_image() -> str:
        """Copy our busybox image from netlab's OCI store into podman's storage."""
        store = ImageStore()
        resolved = store.resolve(IMAGE)  # builds it on first use
        common.run(
            [
                "skopeo",
                "copy",
                "-q",
                f"oci:{store.root}:{resolved.ref}",
                f"containers-storage:{PODMAN_IMAGE}",
            ],
            timeout=120,
        )
        return resolved.ref

    def start(self) -> float:
        self.count += 1
        name = f"netlab-bench-{os.getpid()}-{self.count}"
        self.started.append(name)
        argv = [
            "podman",
            "--runtime",
            "runc",
            "run",
            "-d",
            "--pull",
            "never",  # the image is ours, in podman's storage: never a registry
            "--name",
            name,
            "--network",
            "none",
            *self.ulimits,
            PODMAN_IMAGE,
            "sleep",
            "infinity",
        ]
        t0 = time.perf_counter()
        done = common.run(argv, timeout=60, check=False)
        seconds = time.perf_counter() - t0
        cid = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        if cid:
            self.started[-1] = cid
        if done.returncode != 0 or not cid:
            raise RuntimeError(f"podman run: exit {done.returncode}: {done.stderr.strip()[-300:]}")
        return seconds

    def memory(self, cid: str) -> tuple[int, int]:
        """(PSS of the container's processes, PSS of its conmon), bytes."""
        out = common.run(
            ["podman", "inspect", "--format", "{{.State.Pid}} {{.State.ConmonPid}}", cid], 30
        ).stdout.split()
        pid, conmon = int(out[0]), int(out[1])
        procs = proc_table()
        return pss(with_descendants(pid, procs)), pss([conmon])

    def remove_all(self) -> None:
        if not self.started:
            return
        done = common.run(["podman", "rm", "-f", "-t", "0", *self.started], 120, check=False)
        if done.returncode != 0:
            say(f"    note: podman rm: {done.stderr.strip()[-300:]}")
        self.started = []


def remove_podman_image() -> None:
    common.run(["podman", "rmi", PODMAN_IMAGE], 60, check=False)


# ---------------------------------------------------------------- driver


def pause() -> None:
    common.settle(0.3, 2.0 + host_count(PODS) / 200)


class Results:
    def __init__(self) -> None:
        self.up: dict[str, list[float]] = {k: [] for k in ("busybox", "host", "mininet")}
        self.down: dict[str, list[float]] = {k: [] for k in ("busybox", "host", "mininet")}
        keys = ("total", "resolve", "write", "shim", "runc", "cpu")
        self.direct: dict[str, list[float]] = {k: [] for k in keys}  # netlab's path
        self.parallel: list[float] = []  # seconds per container, PARALLEL_STARTS at a time
        self.parallel_cpu: list[float] = []  # CPU seconds per container, the same
        self.podman: list[float] = []
        self.pairs: list[tuple[float, float]] = []  # (podman, netlab) back to back
        self.api: list[float] = []
        self.memory: list[dict[str, float]] = []
        self.sandbox_cost: dict[str, float] = {}  # bytes per sandbox: "pss", "kernel"
        self.podman_memory: list[tuple[int, int]] = []
        self.failures: list[str] = []


def lab_round(kind: str, files: dict[str, Path], res: Results, first: bool, api_pods: int) -> None:
    name = LABS[kind]
    try:
        up = netlab("up", "-d", str(files[kind]), timeout=UP_TIMEOUT)
        if first:
            check_lab(name, IMAGE if kind == "busybox" else None)
        if kind == "busybox":
            time.sleep(0.5)  # idle pods: their start's pages are written and done
            res.memory.append(lab_memory(name))
            names = [f"bench-api-{len(res.api) + i + 1}" for i in range(api_pods)]
            try:
                for pod_name in names:
                    res.api.append(api_pod_start(name, pod_name))
            finally:
                delete_pods(name, names)
        down = netlab("down", "--lab", name, timeout=90)
    except Exception as exc:
        res.failures.append(f"{kind}: {exc}")
        say(f"    {kind} lab FAILED: {exc}")
        up = down = float("nan")
    finally:
        end_lab(name)
    res.up[kind].append(up)
    res.down[kind].append(down)


def start_round(worker: DirectWorker, podman: Podman, res: Results, starts: int) -> None:
    """`starts` single starts each of netlab's path and podman, alternating; then all
    are removed. Then netlab's path PARALLEL_STARTS at a time."""
    try:
        for i in range(starts):
            d = worker.ask(op="start")
            for key in res.direct:
                res.direct[key].append(d[key])
            p = podman.start()
            res.podman.append(p)
            res.pairs.append((p, d["total"]))
            if i < 2:
                res.podman_memory.append(podman.memory(podman.started[-1]))
    finally:
        podman.remove_all()
        worker.ask(op="stop")
    try:
        par = worker.ask(op="parallel", count=4 * starts, workers=PARALLEL_STARTS)
        res.parallel.append(par["wall"] / par["count"])
        res.parallel_cpu.append(par["cpu"] / par["count"])
    finally:
        worker.ask(op="stop")


def measure(args, files: dict[str, Path], deadline: common.Deadline) -> Results:
    res = Results()
    worker = DirectWorker()
    podman = Podman()
    try:
        # first, while no thread of the worker has ended (their stacks would be reused)
        res.sandbox_cost = worker.ask(op="sandbox_cost", count=PODS)
        # warm-up (not recorded): imports, page cache, first runc and podman starts
        say("  warm-up: an 8-pod busybox lab, 2 container starts each way")
        netlab("up", "-d", str(files["warmup"]), timeout=UP_TIMEOUT)
        netlab("down", "--lab", WARMUP_LAB, timeout=90)
        end_lab(WARMUP_LAB)
        warm = Results()
        start_round(worker, podman, warm, 2)
        pause()
        per_round = None
        for i in range(args.rounds):
            if i and per_round is not None and deadline.left() < per_round * 1.1:
                say(f"  stopping after {i} round(s) to stay within the time budget")
                break
            started = time.monotonic()
            lab_round("busybox", files, res, first=(i == 0), api_pods=args.api_pods)
            pause()
            lab_round("host", files, res, first=(i == 0), api_pods=0)
            pause()
            try:
                mup, mdown = mininet_once(PODS)
            except Exception as exc:
                traceback.print_exc()
                res.failures.append(f"mininet: {exc}")
                mup = mdown = float("nan")
            res.up["mininet"].append(mup)
            res.down["mininet"].append(mdown)
            pause()
            start_round(worker, podman, res, args.starts)
            pause()
            per_round = time.monotonic() - started
            n = args.starts
            say(
                f"  round {i + 1}/{args.rounds}: up busybox {fmt(res.up['busybox'][-1])} s"
                f" host {fmt(res.up['host'][-1])} s mininet {fmt(mup)} s"
                f" | start netlab {fmt(median(res.direct['total'][-n:]) * 1e3, 1)} ms"
                f" podman {fmt(median(res.podman[-n:]) * 1e3, 1)} ms"
                f" | pod via API {fmt(median(res.api[-args.api_pods :]) * 1e3, 1)} ms"
                f" ({per_round:.0f} s)"
            )
    finally:
        podman.remove_all()
        worker.close()
    return res


# ---------------------------------------------------------------- report


def ms(values: list[float]) -> str:
    return fmt(median(values) * 1e3, 1)


def spread_ms(values: list[float]) -> str:
    values = [v for v in values if v == v]
    return f"{min(values) * 1e3:.0f}-{max(values) * 1e3:.0f}" if values else "n/a"


def mb(value: float) -> str:
    return fmt(value / MB, 2)


def report_labs(res: Results) -> list[str]:
    up, down, cores = res.up, res.down, os.cpu_count() or 1
    rows = []
    for kind, label in (
        ("busybox", "netlab up -d, busybox image"),
        ("host", "netlab up -d, host image"),
        ("mininet", "plain Mininet"),
    ):
        ratio = paired_ratio(up[kind], up["mininet"])
        check = f"<= {GOAL_LAB:g}: {goal(ratio, GOAL_LAB)}" if kind == "busybox" else "-"
        rows.append(
            [
                label,
                str(sum(1 for v in up[kind] if v == v)),
                fmt(median(up[kind])),
                fmt(ratio),
                fmt(median(down[kind])),
                fmt(paired_ratio(down[kind], down["mininet"])),
                check,
            ]
        )
    headers = ["", "runs", "up s", "up / mininet", "down s", "down / mininet", "goal up"]
    out = [f"(a) {PODS} pods (4 racks x 4 nodes x 8), {host_count(PODS)} hosts, as a command"]
    out.append(table(headers, rows))
    out.append(f"busybox / host image, up: {fmt(paired_ratio(up['busybox'], up['host']))}")
    runc_wall, runc_cpu = median(res.direct["runc"]), median(res.direct["cpu"])
    floor = PODS * runc_wall / cores
    out.append(
        f"floor: {PODS} containers x {fmt(runc_wall * 1e3, 1)} ms (median Runc.run, one"
        f" `runc run -d`)"
        f" / {cores} cores = {fmt(floor)} s; by CPU ({fmt(runc_cpu * 1e3, 1)} ms of CPU"
        f" each, runc and its init): {fmt(PODS * runc_cpu / cores)} s"
    )
    if goal(paired_ratio(up["busybox"], up["mininet"]), GOAL_LAB) != "ok":
        less = [u - floor for u in up["busybox"]]
        ratio = paired_ratio(less, up["mininet"])
        fallback = FALLBACK_SLACK * PROCESS_LAB_RATIO
        out.append(
            f"goal missed: busybox lab up minus the floor = {fmt(median(less))} s,"
            f" / mininet = {fmt(ratio)}: {goal(ratio, GOAL_LAB)} against {GOAL_LAB:g};"
            f" against the issue's fallback (the rest within {FALLBACK_SLACK:g}x of the"
            f" process-only lab's {PROCESS_LAB_RATIO:g}x = {fallback:.2f}): {goal(ratio, fallback)}"
        )
    return out


def report_starts(res: Results) -> list[str]:
    direct = res.direct
    ratio = paired_ratio([p for p, _ in res.pairs], [d for _, d in res.pairs])
    api_ratio = median(res.podman) / median(res.api) if res.api else float("nan")

    def row(label: str, values: list[float], spread: bool = True, podman: str = "") -> list[str]:
        count = str(len(values)) if spread else ""
        return [label, count, ms(values), spread_ms(values) if spread else "", podman, ""]

    rows = [
        row("netlab: container start, all of it", direct["total"], podman=fmt(ratio, 1)),
        row("  image resolved (ImageStore.resolve)", direct["resolve"], False),
        row("  bundle written (Bundles.prepare)", direct["write"], False),
        row("  shim.start: overlay, runc run -d, detach", direct["shim"], False),
        row("    of which Runc.run (runc run -d)", direct["runc"]),
        row("  CPU of runc run -d and its init", direct["cpu"]),
        row(f"netlab: shim.start {PARALLEL_STARTS} at a time, per container", res.parallel),
        row("  CPU per container", res.parallel_cpu),
        row("netlab: bare Pod via the lab API -> running", res.api, podman=fmt(api_ratio, 1)),
        row("podman run -d --network none (runc)", res.podman, podman="1.0"),
    ]
    rows[0][-1] = f">= {GOAL_START:g}x: {goal(ratio, GOAL_START, at_least=True)}"
    out = ["(b) one container of the busybox image started, one at a time"]
    out.append(table(["", "n", "median ms", "min-max ms", "podman / this", "goal"], rows))
    out.append(
        "podman / netlab: median of per-pair ratios (each pair back to back);"
        " the API row's ratio is of medians"
    )
    return out


def report_memory(res: Results) -> list[str]:
    mem = res.memory
    if not mem:
        return ["(c) no memory measured (the busybox lab did not come up)"]

    def per_lab(key: str) -> float:
        return median([m[key] for m in mem])

    pods_n = per_lab("pods")
    runtimed, others, files = per_lab("runtimed"), per_lab("runtime_others"), per_lab("files")
    thread_pss = res.sandbox_cost.get("pss", float("nan"))
    thread_kernel = res.sandbox_cost.get("kernel", float("nan"))
    added = (runtimed + others) / pods_n + files + thread_kernel
    rows = [
        ["the app's processes (sleep): PSS", mb(per_lab("app_pss")), ""],
        ["the app's processes (sleep): RSS", mb(per_lab("app_rss")), ""],
        ["netlab's processes per pod (no shim)", "0.00", ""],
        [f"runtime daemon: PSS {mb(runtimed)} MB / {pods_n:.0f} pods", mb(runtimed / pods_n), ""],
        [
            f"  in it, a pod's sandbox thread ({thread_pss / 1024:.0f} KiB; it has"
            f" {per_lab('runtimed_threads'):.0f} threads)",
            mb(thread_pss),
            "",
        ],
        [f"its other children: PSS {mb(others)} MB / pods", mb(others / pods_n), ""],
        ["the pod's files: bundle, runc state, /etc", mb(files), ""],
        [
            f"the kernel's for a sandbox thread ({thread_kernel / 1024:.0f} KiB; in no PSS)",
            mb(thread_kernel),
            "",
        ],
        [
            "netlab's per pod, besides the app",
            mb(added),
            f"<= {GOAL_MEMORY_MB:g} MB: {goal(added / MB, GOAL_MEMORY_MB)}",
        ],
        ["context: the container cgroup's memory usage", mb(per_lab("charged")), ""],
        [f"context: supervisor PSS {mb(per_lab('supervisor'))} MB / pods", "", ""],
        [f"context: the lab's DNS pod PSS {mb(per_lab('dns'))} MB / pods", "", ""],
    ]
    rows[-2][1] = mb(per_lab("supervisor") / pods_n)
    rows[-1][1] = mb(per_lab("dns") / pods_n)
    if res.podman_memory:
        app = median([a for a, _ in res.podman_memory])
        conmon = median([c for _, c in res.podman_memory])
        rows.append(["podman: the app's processes (sleep): PSS", mb(app), ""])
        rows.append(["podman: its conmon (one per container): PSS", mb(conmon), ""])
    out = [f"(c) an idle busybox pod of the {PODS}-pod lab ({len(mem)} runs; median over pods)"]
    out.append(table(["", "MB per pod", "goal"], rows))
    return out


def report(res: Results) -> list[str]:
    return [*report_labs(res), "", *report_starts(res), "", *report_memory(res)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, 4 starts each")
    parser.add_argument("--rounds", type=int, help="rounds (default 5; --quick 2)")
    parser.add_argument(
        "--starts", type=int, help="container starts per round (default 8; --quick 4)"
    )
    parser.add_argument("--api-pods", type=int, default=3, help="bare pods per round via the API")
    parser.add_argument("--budget", type=float, default=BUDGET, help="seconds (default 360)")
    parser.add_argument("--serve-direct", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_direct:
        return serve_direct(args.serve_direct)
    exit_on_sigterm()
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.starts = args.starts or (4 if args.quick else 8)

    if os.geteuid() != 0:
        say("containers: needs root (it builds namespaces and runs runc and podman)")
        return 2
    missing = [t for t in ("runc", "podman", "skopeo") if not shutil.which(t)]
    if missing:
        say(
            f"containers: missing {', '.join(missing)} (Debian: apt-get install {' '.join(missing)})"
        )
        return 2
    common.raise_fd_limit()
    deadline = common.Deadline(args.budget)
    say("containers: netlab's runc pods vs plain Mininet and podman, interleaved, medians")
    say(
        f"  rounds: {args.rounds}, container starts per round: {args.starts}, cores: {os.cpu_count()}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="netlab-bench-containers-"))
    files = {
        "busybox": lab_file(tmp, LABS["busybox"], IMAGE, RACKS, PER_RACK),
        "host": lab_file(tmp, LABS["host"], None, RACKS, PER_RACK),
        "warmup": lab_file(tmp, WARMUP_LAB, IMAGE, 2, 2),
    }
    try:
        ref = Podman.load_image()
        say(f"  image: {ref} from netlab's store, copied into podman's as {PODMAN_IMAGE}")
        res = measure(args, files, deadline)
    except Exception:
        traceback.print_exc()
        say("containers: FAILED (see the traceback above)")
        return 1
    finally:
        for name in (*LABS.values(), WARMUP_LAB):
            end_lab(name)
        with contextlib.suppress(OSError):
            if Path(netns.netns_path(MININET_NETNS)).exists():
                netns.remove(MININET_NETNS)
        remove_podman_image()
        for path in tmp.iterdir():
            path.unlink()
        tmp.rmdir()
    say("")
    for line in report(res):
        say(line)
    if res.failures:
        say(f"failures: {len(res.failures)}: " + "; ".join(res.failures[:5]))
    say(f"total {deadline.elapsed():.0f} s")
    return 1 if res.failures else 0


if __name__ == "__main__":
    sys.exit(main())
