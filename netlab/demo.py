"""`make demo`: the guided tour of the embedded lab."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from netlab import crilog, tables
from netlab.lab import Lab
from netlab.spec.load import load_lab

console = Console(width=120)


def step(text: str) -> None:
    console.print(f"\n[bold cyan]==> {text}[/]")


def show(result) -> None:
    out = (result.stdout or "") + (result.stderr or "")
    console.print(out.rstrip(), markup=False, highlight=False)


def _netlab(lab: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "netlab.cli", "--lab", lab, *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def _start_capture(lab: str, args: list[str]) -> subprocess.Popen:
    """`netlab capture ...` in the background, once its sockets are open."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "netlab.cli", "--lab", lab, "capture", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stderr.readline()  # "capturing on ..."
    return proc


def _pick_pods(lab: Lab):
    """A client and a web pod on different racks."""
    pods = lab.pod_list()
    rack_of = {n.name: n.rack for n in lab.node_list()}
    clients = [p for p in pods if p.name == "client"] or pods[:1]
    client = clients[0]
    others = [p for p in pods if p is not client and rack_of[p.node] != rack_of[client.node]]
    webs = [p for p in others if p.owner == "web"] or others
    if not webs:
        return client, None
    return client, webs[0]


def show_services(lab: Lab, client: str) -> None:
    """The Service part: a name resolved by the lab's DNS, the rotation of a
    headless answer, and connections spread over the endpoints."""
    lab.wait_endpoints("default", "web", count=1)
    step("Services: `web` resolved through the pod's search path by the lab's DNS pod")
    show(lab.exec(client, ["cat", "/etc/resolv.conf"]))
    show(lab.exec(client, ["getent", "hosts", "web"]))
    show(lab.exec(client, ["dig", "+noall", "+answer", "web.default.svc.cluster.local"]))
    if lab.services.specs.get(("default", "web-pods")) is not None:
        step("a headless Service: one A record per ready pod, the order rotated on every query")
        for _ in range(3):
            show(lab.exec(client, ["dig", "+short", "web-pods.default.svc.cluster.local"]))
            console.print("")
    step("9 new connections to http://web/ : nftables on the client's node DNATs them round-robin")
    result = lab.exec(
        client, ["sh", "-c", "for i in $(seq 9); do curl -s --max-time 5 http://web/; done"]
    )
    show(result)
    counts: dict[str, int] = {}
    for line in (result.stdout or "").splitlines():
        if line.strip():
            counts[line.split()[0]] = counts.get(line.split()[0], 0) + 1
    console.print(
        "  connections per pod: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    )
    if lab.services.vip("default", "frontend") is not None:
        show_chain(lab, client)
    step("`netlab get services` and `netlab get endpoints`, as the lab API serves them")
    for resource in ("services", "endpoints"):
        items, _ = lab.store.list(resource, "default")
        console.print(tables.render(resource, items), markup=False, highlight=False)


def show_chain(lab: Lab, client: str) -> None:
    """One request through two tiers, found again in both pods' logs by its id."""
    lab.wait_endpoints("default", "frontend", count=1)
    step("client -> frontend -> web: the frontend passes the x-request-id on, both pods log it")
    curl = ["curl", "-s", "--max-time", "5", "-H", "x-request-id: demo-1", "http://frontend/"]
    show(lab.exec(client, curl))
    time.sleep(0.3)  # the lines reach the log files
    for pod in lab.pod_list():
        for container in pod.template.containers:
            path = lab.log_path(pod, container.name)
            if not path.exists():
                continue
            reader = crilog.Reader()
            for line in path.read_bytes().splitlines(keepends=True):
                text = reader.render(line).decode(errors="replace").rstrip("\n")
                if "demo-1" in text:
                    console.print(f"  [pod/{pod.name} {pod.node}] {text}", markup=False)
    console.print("  (`netlab logs --all --grep ID` finds them in a running lab)")


HOG = """
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  containers:
  - name: hog
    image: netlab/python
    command: [python3, -c, "import time; b = bytearray(96 << 20); time.sleep(600)"]
    resources: {limits: {memory: 48Mi}}
"""


def show_containers(lab: Lab, client: str, neighbour: str) -> None:
    """What a container is: its own hostname, processes and files; images; a memory
    limit the kernel enforces; usage read from the cgroups."""
    step(f"what a container is: {client}'s own hostname and processes (PID 1 is its app)")
    show(lab.exec(client, ["hostname"]))
    show(lab.exec(client, ["ps", "-eo", "pid,args"]))
    lab.cri.images.resolve("netlab/python", "IfNotPresent")  # built on first use
    step("images, built here from Debian packages: `netlab image ls`")
    show(_netlab(lab.spec.name, "image", "ls"))
    step(f"a file {client} writes stays in its own writable layer")
    show(lab.exec(client, ["sh", "-c", "echo mine > /tmp/only-here && cat /tmp/only-here"]))
    console.print(f"on the host: {Path('/tmp/only-here').exists() and 'there' or 'not there'}")
    seen = lab.exec(neighbour, ["cat", "/tmp/only-here"])
    console.print(f"in {neighbour}: {seen.stdout.strip() or seen.stderr.strip()}")
    step("a pod over its memory limit (48Mi) is OOM-killed by the kernel, and restarted")
    lab.apply_text(HOG)
    try:

        def restarted() -> bool:
            state = lab.store.get("pods", "default", "hog")["status"]["containerStatuses"][0]
            return state["restartCount"] >= 1

        _wait(restarted, 20)
        show(_netlab(lab.spec.name, "get", "pod", "hog"))
        state = lab.store.get("pods", "default", "hog")["status"]["containerStatuses"][0]
        ended = state.get("lastState", {}).get("terminated", {})
        console.print(
            f"lastState.terminated: reason {ended.get('reason')}, exit code {ended.get('exitCode')}"
        )
    finally:
        lab.delete_pod("hog")
    step("`netlab top pods`: CPU and memory from the containers' cgroups")
    _wait(lambda: bool(lab.metrics.pod_metrics()), 10)
    show(_netlab(lab.spec.name, "top", "pods"))


def _wait(predicate, timeout: float = 20.0) -> float:
    started = time.monotonic()
    while not predicate() and time.monotonic() - started < timeout:
        time.sleep(0.01)
    return time.monotonic() - started


def show_healing(lab: Lab, client) -> None:
    """Break it and watch it heal: a pod deleted, a node failed, a Deployment scaled,
    each under a steady client load on the Service's VIP."""
    from netlab import loadgen

    url = f"http://{lab.service_vip('web')}/"
    want = len(lab.ready_pods("web"))
    if want == 0:
        return
    step(f"break it: delete a web pod while {client.name} asks {url} every 50 ms")
    load = loadgen.Load(client.netns, url, seconds=20)
    time.sleep(0.3)
    victim = sorted(lab.ready_pods("web"), key=lambda p: p.name)[0]
    since = time.time()
    lab.delete_pod(victim.name)
    took = _wait(
        lambda: (
            len(lab.ready_pods("web")) == want
            and victim.name not in {p.name for p in lab.ready_pods("web")}
        )
    )
    answers = load.stop()
    console.print(
        f"{victim.name} deleted; its Deployment's replacement serves after {took:.2f} s; "
        f"the client's longest run of errors: {loadgen.error_window(answers, since):.2f} s"
    )
    nodes = [p.node for p in lab.ready_pods("web") if p.node != client.node]
    if nodes:
        node = nodes[0]
        grace = lab.spec.control_plane.node_grace
        step(
            f"`netlab node fail {node}`: no carrier, frozen processes, no heartbeats (grace period {grace:g} s)"
        )
        load = loadgen.Load(client.netns, url, seconds=30)
        time.sleep(0.3)
        since = time.time()
        lab.fail_node(node)
        took = _wait(
            lambda: (
                len(lab.ready_pods("web")) == want
                and all(p.node != node for p in lab.ready_pods("web"))
            )
        )
        time.sleep(0.3)
        answers = load.stop()
        back = loadgen.recovered_after(answers, since)
        show(_netlab(lab.spec.name, "get", "nodes"))
        console.print(
            f"{node} NotReady; its pods run elsewhere after {took:.2f} s; every request succeeds "
            f"again {back if back is not None else float('nan'):.2f} s after the failure"
        )
        lab.recover_node(node)
        _wait(lambda: "NotReady" not in _netlab(lab.spec.name, "get", "nodes").stdout, 5)
        console.print(
            f"`netlab node recover {node}`: Ready again, its overlay lease back on every node"
        )
    step("`netlab scale deployment/web --replicas 5`, then back")
    lab.scale("web", want + 2)
    took = _wait(lambda: len(lab.ready_pods("web")) == want + 2)
    show(_netlab(lab.spec.name, "get", "deployments"))
    console.print(f"{want + 2} ready after {took:.2f} s")
    lab.scale("web", want)
    _wait(lambda: len(lab.ready_pods("web")) == want)


def run_demo(lab_file: Path) -> int:
    spec = load_lab(lab_file)
    step(f"bringing up lab {spec.name} from {lab_file}")
    started = time.monotonic()
    with Lab(spec) as lab:
        console.print(
            f"ready in {time.monotonic() - started:.2f} s (every link up, every pod reachable)"
        )
        tables.print_lab(lab)
        client, web = _pick_pods(lab)
        if web is None:
            console.print("this lab has no two pods on different racks; nothing more to show")
            return 0
        rack_of = {n.name: n.rack for n in lab.node_list()}
        step(
            f"ping across racks: {client.name} ({client.address.ip}, {client.node}/{rack_of[client.node]}) "
            f"-> {web.name} ({web.address.ip}, {web.node}/{rack_of[web.node]})"
        )
        show(lab.exec(client.name, ["ping", "-c", "3", "-i", "0.2", str(web.address.ip)]))
        show_containers(lab, client.name, web.name)

        router = lab.plan.routers[0]
        port = next(p for p in router.ports if p.rack == rack_of[client.node])
        kept = Path.cwd() / "demo-vxlan.pcapng"
        capture_args = [
            f"router/{router.name}", "-i", port.ifname, "-f", f"udp port {spec.overlay.port}",
            "-c", "12", "--duration", "10", "-q", "-w", str(kept),
        ]  # fmt: skip
        step(
            f"HTTP across racks, captured on router {router.name}'s port to {port.rack}: "
            f"netlab capture {' '.join(capture_args[:-2])} -w {kept.name}"
        )
        capture = _start_capture(spec.name, capture_args)
        url = f"http://{web.address.ip}:80/"
        for _ in range(50):  # the web server may still be starting
            result = lab.exec(
                client.name,
                [
                    "curl",
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-w",
                    "HTTP %{http_code} from %{remote_ip} in %{time_total}s\n",
                    url,
                ],
            )
            if result.returncode == 0:
                break
            time.sleep(0.1)
        show(result)
        lab.exec(client.name, ["ping", "-c", "2", "-i", "0.2", str(web.address.ip)])
        capture.wait(15)
        capture.stderr.close()
        step(
            f"`netlab inspect {kept.name}`: the underlay hop as node names with the VNI, "
            "the inner packets as pod names"
        )
        result = _netlab(spec.name, "inspect", str(kept))
        sys.stdout.write(result.stdout + result.stderr)  # a wide table: not wrapped
        sys.stdout.flush()
        console.print(
            f"saved as {kept} (+ {kept.name}.names.json, the lab's address book): "
            "Wireshark opens it; `netlab inspect --flows` summarizes it"
        )
        if lab.services.vip("default", "web") is not None:
            show_services(lab, client.name)
            show_healing(lab, client)
        from netlab.demo_state import show_state  # noqa: PLC0415 (it imports this module)

        show_state(lab)
        step("tearing the lab down")
        started = time.monotonic()
    console.print(
        f"down in {time.monotonic() - started:.2f} s; nothing of the lab is left in the kernel"
    )
    return 0
