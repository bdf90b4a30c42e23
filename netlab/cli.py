"""The `netlab` command: parse, call the API or the Lab, print. Only main() exits."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from netlab import __version__, draw, tables
from netlab import logs as lab_logs
from netlab.capture import command as capture_command
from netlab.client import LabClient
from netlab.errors import ApiError, LabNotFound, NetlabError
from netlab.inspect import command as inspect_command
from netlab.paths import RUN_ROOT, socket_path
from netlab.resources import DEFAULT_TABLE, Resource

if TYPE_CHECKING:
    from netlab.lab import Lab

TOPOLOGIES = Path(__file__).resolve().parent.parent / "topologies"
DEFAULT_LAB_FILE = TOPOLOGIES / "demo.yaml"


def _lab_file(path: str | None) -> Path:
    return Path(path) if path else DEFAULT_LAB_FILE


def _running_labs() -> list[str]:
    if not RUN_ROOT.is_dir():
        return []
    return sorted(p.name for p in RUN_ROOT.iterdir() if socket_path(p).exists())


def _unsupervised_labs() -> list[str]:
    """Labs whose runtime (and so their containers) runs on with nobody serving the API."""
    from netlab.realize.runtime import SOCKET_NAME as RUNTIME_SOCKET

    if not RUN_ROOT.is_dir():
        return []
    return sorted(p.name for p in RUN_ROOT.iterdir() if (p / RUNTIME_SOCKET).exists())


def _pick_lab(name: str | None) -> str:
    name = name or os.environ.get("NETLAB_LAB")
    if name:
        return name
    labs = _running_labs()
    if not labs:
        orphans = _unsupervised_labs()
        if orphans:
            raise LabNotFound(
                f"lab {', '.join(orphans)} runs without a supervisor (it ended or detached); "
                "`netlab up -d --adopt [FILE]` takes it over, `netlab clean` removes it"
            )
        raise LabNotFound("no lab is running; start one with `netlab up [FILE]`")
    if len(labs) > 1:
        raise LabNotFound(f"several labs are running ({', '.join(labs)}); pick one with --lab NAME")
    return labs[0]


def _client(args) -> LabClient:
    return LabClient(str(socket_path(RUN_ROOT / _pick_lab(args.lab))))


# -- up / down ------------------------------------------------------------


def _print_ready(lab: Lab) -> None:
    from netlab.nodeinfo import runtime_version

    tables.print_lab(lab)
    print(
        f"\nlab {lab.spec.name} is up; containers run under {runtime_version()}; "
        f"API on {socket_path(lab.run_dir)}. "
        f"Try `netlab get pods -o wide`, `netlab exec POD -- ping ...`; Ctrl-C or `netlab down` stops it."
    )
    sys.stdout.flush()


def cmd_up(args) -> int:
    # the heavy part (Mininet, aiohttp): imported only by the commands that build a lab
    from netlab.lab import Lab
    from netlab.spec.load import load_lab

    spec = load_lab(_lab_file(args.file))  # validated completely before anything is built
    if args.store:
        from netlab.spec.load import check_store_url

        problem = check_store_url(args.store)
        if problem:
            raise NetlabError(f"--store: {problem}; write embedded, etcd or etcd://127.0.0.1:2379")
        spec = dataclasses.replace(spec, store=args.store)
    if args.adopt:
        from netlab.lab_adopt import recorded_store

        if args.cli:
            raise NetlabError("--cli cannot take over a running lab; leave out --cli or --adopt")
        spec = dataclasses.replace(spec, store=recorded_store(RUN_ROOT / spec.name, spec.store))
    lab = Lab(spec)
    if args.detach:
        return _up_detached(lab, args.adopt)
    if args.cli:
        return _up_cli(lab)
    asyncio.run(_supervise(lab, _print_ready, adopt=args.adopt))
    return 0


async def _supervise(lab: Lab, on_ready, on_prepared=None, adopt: bool = False) -> None:
    from netlab.supervisor import run

    await run(lab, on_ready, on_prepared=on_prepared, adopt=adopt)


def _up_cli(lab: Lab) -> int:
    from netlab.mncli import run_cli

    with lab:
        tables.print_lab(lab)
        run_cli(lab)
    return 0


def _up_detached(lab: Lab, adopt: bool = False) -> int:
    """Fork a supervisor in its own session; report when it is ready or failed."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the supervisor
        os.close(read_fd)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)

        def prepared(lab: Lab) -> None:
            # its output goes to the run directory, which teardown removes
            log = os.open(
                lab.run_dir / "supervisor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
            )
            os.dup2(log, 1)
            os.dup2(log, 2)

        def ready(_lab: Lab) -> None:
            os.write(write_fd, b"ok\n")

        code = 0
        try:
            asyncio.run(_supervise(lab, ready, prepared, adopt))
        except BaseException as exc:  # reported to the waiting parent
            os.write(write_fd, f"error: {exc}\n".encode())
            code = 1
        os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        answer = pipe.readline().strip()
    if answer != "ok":
        raise NetlabError(answer.removeprefix("error: ") or "the supervisor died while starting")
    client = LabClient(str(socket_path(RUN_ROOT / lab.spec.name)))
    tables.print_lab_from_api(client, lab.spec.name)
    print(
        f"\nlab {lab.spec.name} runs in the background (supervisor pid {pid}); `netlab down --lab {lab.spec.name}` stops it."
    )
    return 0


def cmd_down(args) -> int:
    from netlab.realize import cleanup

    name = _pick_lab(args.lab)
    run_dir = RUN_ROOT / name
    pid = cleanup.supervisor_pid(run_dir)
    LabClient(str(socket_path(run_dir))).shutdown()
    deadline = time.monotonic() + args.timeout
    while (
        pid is not None and cleanup.supervisor_pid(run_dir) == pid and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    if pid is not None and cleanup.supervisor_pid(run_dir) == pid:
        raise NetlabError(
            f"lab {name} did not stop within {args.timeout:.0f} s; `netlab clean --force --lab {name}` removes it"
        )
    print(f"lab {name} is down")
    return 0


def cmd_kubeconfig(args) -> int:
    """Print the running lab's kubeconfig (kubectl and the kubernetes client over TLS),
    or write it to -o FILE; either way readable by its owner alone (it holds the key)."""
    from netlab.apiserver.auth import KUBECONFIG_FILE
    from netlab.privatefile import tighten_stdout, write_private

    name = _pick_lab(args.lab)
    path = RUN_ROOT / name / KUBECONFIG_FILE
    try:
        text = path.read_text()
    except PermissionError as exc:
        raise NetlabError(f"{path} is root's alone: run `sudo netlab kubeconfig`") from exc
    except FileNotFoundError as exc:
        raise LabNotFound(
            f"lab {name} has no kubeconfig (is it running?); `netlab up` writes one"
        ) from exc
    if args.output:
        try:
            write_private(args.output, text)
        except OSError as exc:
            raise NetlabError(f"cannot write the kubeconfig: {exc}") from None
        print(f"wrote {args.output} (mode 0600); export KUBECONFIG={Path(args.output).resolve()}")
        return 0
    note = tighten_stdout(sys.stdout)
    if note:
        print(f"netlab: {note}", file=sys.stderr)
    sys.stdout.write(text)
    return 0


def cmd_detach(args) -> int:
    """End the supervisor only: the lab runs on until `netlab up --adopt` takes it over."""
    from netlab.realize import cleanup

    name = _pick_lab(args.lab)
    run_dir = RUN_ROOT / name
    pid = cleanup.supervisor_pid(run_dir)
    LabClient(str(socket_path(run_dir))).shutdown(leave=True)
    deadline = time.monotonic() + args.timeout
    while pid is not None and cleanup.supervisor_pid(run_dir) == pid:
        if time.monotonic() > deadline:
            raise NetlabError(
                f"the supervisor of lab {name} did not end within {args.timeout:.0f} s"
            )
        time.sleep(0.05)
    print(
        f"lab {name} runs on without its supervisor; `netlab up -d --adopt [FILE]` takes it "
        "over again (the API and the controllers are away until then)"
    )
    return 0


def cmd_clean(args) -> int:
    from netlab.realize import cleanup

    labs = cleanup.known_labs(RUN_ROOT) if args.all or not args.lab else [args.lab]
    if not labs:
        print("nothing of netlab's to clean")
        return 0
    for name in labs:
        pid = cleanup.supervisor_pid(RUN_ROOT / name)
        if pid is not None:
            if not args.force:
                print(
                    f"lab {name} is running (supervisor pid {pid}): left alone; `netlab down --lab {name}`, or clean --force"
                )
                continue
            os.kill(pid, signal.SIGKILL)
        report = cleanup.clean_lab(name, RUN_ROOT)
        print(
            f"lab {name}: ended {len(report.processes)} processes, removed "
            f"{len(report.namespaces)} namespaces and {len(report.files)} files/directories"
        )
    return 0


# -- reading --------------------------------------------------------------


def _resource(name: str) -> Resource:
    """The resource a user named (`pods`, `pod`, `po`, ...), from the API's own table."""
    try:
        return DEFAULT_TABLE.resolve(name)
    except ApiError:
        known = ", ".join(r.plural for r in DEFAULT_TABLE)
        raise NetlabError(f"unknown resource {name!r}; use one of {known}") from None


def cmd_get(args) -> int:
    from netlab import getcmd

    return getcmd.run(args, _client(args))


def cmd_scale(args) -> int:
    from netlab import rollouts

    print(rollouts.scale(_client(args), args.target, args.replicas, args.namespace))
    return 0


def cmd_rollout(args) -> int:
    from netlab import rollouts

    name = rollouts.split_target(args.target, args.name)
    client = _client(args)
    if args.verb == "status":
        return rollouts.status(client, name, args.namespace, args.timeout, watch=args.watch)
    if args.verb == "history":
        print(rollouts.history(client, name, args.namespace))
        return 0
    print(rollouts.undo(client, name, args.namespace, args.to_revision))
    return 0


def cmd_node(args) -> int:
    """`netlab node fail|recover NAME`, `netlab cordon|uncordon|drain NAME`."""
    verb = getattr(args, "node_verb", None) or args.command_name
    result = _client(args).node_action(args.node, verb, getattr(args, "force", False))
    past = {
        "fail": "failed",
        "recover": "recovered",
        "cordon": "cordoned",
        "uncordon": "uncordoned",
        "drain": "drained",
    }
    for pod in result.get("evicted", []):
        print(f"pod/{pod} evicted")
    print(f"node/{args.node} {past[verb]}")
    return 0


def cmd_etcd(args) -> int:
    from netlab import etcdview

    if args.etcd_verb in ("kill", "start") and not args.member:
        raise NetlabError(
            f"which member? `netlab etcd {args.etcd_verb} --member "
            f"{'leader' if args.etcd_verb == 'kill' else 'etcd-n1'}` (or a name from status)"
        )
    return etcdview.run(args, RUN_ROOT / _pick_lab(args.lab))


def cmd_logs(args) -> int:
    return lab_logs.run(args, _client(args))


def cmd_exec(args) -> int:
    from netlab.node.cgroups import CgroupLayout
    from netlab.node.containers import (
        container_pid,
        enter_argv,
        process_cgroup_procs,
        read_environ,
    )

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise NetlabError("no command given: `netlab exec POD -- CMD [ARGS...]`")
    pod = _client(args).get("pods", args.pod, namespace=args.namespace)
    netns_name = pod["metadata"].get("annotations", {}).get("netlab.io/netns")
    containers = pod["spec"]["containers"]
    names = [c["name"] for c in containers]
    apps = [n for n in names if n != "netlab-proxy"] or names  # the app, not its sidecar
    chosen = args.container or apps[0]
    if chosen not in names:
        raise NetlabError(
            f"container {chosen} is not in pod {args.pod}; it has: {', '.join(names)}"
        )
    env = [
        f"{e['name']}={e.get('value', '')}"
        for c in containers
        if c["name"] == chosen
        for e in c.get("env", [])
    ]
    status = next(
        (c for c in pod.get("status", {}).get("containerStatuses") or () if c["name"] == chosen),
        {},
    )
    pid = container_pid(RUN_ROOT / _pick_lab(args.lab), status.get("containerID", ""))
    if pid is not None:  # into the container: its namespaces, cgroups and environment
        started = read_environ(pid)
        procs = process_cgroup_procs(CgroupLayout.detect(), pid)
        sys.stdout.flush()
        if started:  # as it was started (ConfigMaps' and Secrets' values too)
            argv = [*enter_argv(pid, procs), *command]
            os.execve(argv[0], argv, started)
        argv = [*enter_argv(pid, procs), "env", f"HOSTNAME={args.pod}", *env, *command]
    elif status.get("containerID", "").startswith("runc://"):
        raise NetlabError(
            f"container {chosen} of pod {args.pod} is not running; "
            f"`netlab logs {args.pod} -c {chosen}` shows why"
        )
    else:  # a forked sidecar: its pod's network namespace
        argv = ["ip", "netns", "exec", netns_name, "env", f"HOSTNAME={args.pod}", *env, *command]
    sys.stdout.flush()
    os.execvp(argv[0], argv)
    return 127  # not reached


def cmd_apply(args) -> int:
    """Validate the file's manifests here (same checks as `up`), then send them."""
    filename = args.filename or args.file
    if not filename:
        raise NetlabError("which manifests? `netlab apply FILE` (or -f FILE; - reads stdin)")
    text = _read_manifests(filename)
    results = _client(args).apply(text)
    for item in results:
        kind = item["kind"].lower()
        print(f"{kind}/{item['name']} {item['action']}")
    return 0


def _read_manifests(filename: str) -> str:
    if filename == "-":
        return sys.stdin.read()
    try:
        return Path(filename).read_text(encoding="utf-8")
    except OSError as exc:
        raise NetlabError(f"{filename}: cannot read it ({exc.strerror}); check the path") from exc


def cmd_delete(args) -> int:
    resource = _resource(args.resource)
    if "delete" not in resource.verbs:
        raise NetlabError(
            "netlab deletes pods, deployments, services and mesh policies "
            "(virtualservices, destinationrules, ratelimitpolicies): `netlab delete pod NAME`"
        )
    client = _client(args)
    for name in args.names:
        client.delete(resource.plural, name, args.namespace)
        print(f'{resource.singular} "{name}" deleted')
    return 0


def cmd_trace(args) -> int:
    from netlab import meshview

    return meshview.run_trace(args, _client(args))


def cmd_top(args) -> int:
    from netlab import meshview, topcmd

    topcmd.check(args)
    if args.what:  # netlab top pods|nodes: the metrics API, as kubectl top
        return topcmd.run(args, _client(args))
    return meshview.run_top(args, _client(args))


def cmd_capture(args) -> int:
    lab = _pick_lab(args.lab)
    return capture_command.run(args, LabClient(str(socket_path(RUN_ROOT / lab))), RUN_ROOT / lab)


def cmd_inspect(args) -> int:
    return inspect_command.run(args)


def cmd_draw(args) -> int:
    return draw.run(args, _client(args))


def cmd_version(args) -> int:
    print(f"netlab {__version__} (netlab-k8s: Kubernetes networking emulator)")
    return 0


def cmd_demo(args) -> int:
    from netlab.demo import run_demo
    from netlab.demo_mesh import run_mesh_demo

    if args.file is None:  # the embedded tour: the lab, then the mesh
        code = run_demo(_lab_file(None))
        return code or run_mesh_demo(TOPOLOGIES / "mesh-demo.yaml")
    path = _lab_file(args.file)
    if "netlab.io/inject" in path.read_text(encoding="utf-8", errors="replace"):
        return run_mesh_demo(path)
    return run_demo(path)


# -- parsing ----------------------------------------------------------------


def configure_trace(p: argparse.ArgumentParser) -> None:
    from netlab import meshview

    meshview.configure_trace(p)


def configure_top(p: argparse.ArgumentParser) -> None:
    from netlab import meshview, topcmd

    meshview.configure_top(p)
    topcmd.configure(p)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="netlab", description="Kubernetes networking on real kernel objects."
    )
    p.add_argument("--lab", help="which running lab (default: the only one, or $NETLAB_LAB)")
    # --lab is accepted after the command too (`netlab down --lab demo`), as kubectl's flags are
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--lab", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    _add = sub.add_parser

    def add_parser(name, **kwargs):
        return _add(name, parents=[common], **kwargs)

    sub.add_parser = add_parser

    up = sub.add_parser(
        "up", help="bring a lab up and supervise it (default: the embedded demo lab)"
    )
    up.add_argument("file", nargs="?", help="lab file (YAML); default: topologies/demo.yaml")
    up.add_argument(
        "--store",
        help="where the lab's objects live: embedded, etcd (a cluster in the lab) or "
        "etcd://127.0.0.1:2379 (overrides the lab file's store)",
    )
    up.add_argument(
        "-d", "--detach", action="store_true", help="run the supervisor in the background"
    )
    up.add_argument(
        "--cli", action="store_true", help="open Mininet's CLI (nodes and pods by name)"
    )
    up.add_argument(
        "--adopt",
        action="store_true",
        help="take over the running lab of this lab file whose supervisor ended "
        "(a crash, `netlab detach`): nothing is rebuilt, no pod restarts",
    )
    up.set_defaults(func=cmd_up)

    kubeconfig = sub.add_parser(
        "kubeconfig",
        help="print the lab's kubeconfig: KUBECONFIG=FILE kubectl get pods (TLS on loopback)",
    )
    kubeconfig.add_argument(
        "-o", "--output", metavar="FILE", help="write it to FILE, readable by you alone (0600)"
    )
    kubeconfig.set_defaults(func=cmd_kubeconfig)

    detach = sub.add_parser(
        "detach", help="end the lab's supervisor but leave the lab running (for up --adopt)"
    )
    detach.add_argument("--timeout", type=float, default=30.0)
    detach.set_defaults(func=cmd_detach)

    down = sub.add_parser("down", help="stop a running lab and remove everything it made")
    down.add_argument("--timeout", type=float, default=60.0)
    down.set_defaults(func=cmd_down)

    clean = sub.add_parser(
        "clean", help="remove leftovers of crashed labs (never Mininet's cleanup)"
    )
    clean.add_argument(
        "--all", action="store_true", help="every lab of ours (the default without --lab)"
    )
    clean.add_argument(
        "--force", action="store_true", help="also kill a live supervisor of that lab"
    )
    clean.add_argument("lab_name", nargs="?", help=argparse.SUPPRESS)
    clean.set_defaults(func=cmd_clean)

    apply = sub.add_parser(
        "apply", help="add or change Services, Deployments and Pods on a running lab"
    )
    apply.add_argument("file", nargs="?", help="manifests (YAML); - for stdin")
    apply.add_argument("-f", "--filename", help="the same, kubectl's way")
    apply.set_defaults(func=cmd_apply)

    get = sub.add_parser(
        "get",
        help="list nodes, pods, deployments, services, endpoints, namespaces, "
        "virtualservices, destinationrules, ratelimitpolicies",
    )
    from netlab import getcmd

    getcmd.configure(get)
    get.set_defaults(func=cmd_get)

    scale = sub.add_parser(
        "scale",
        help="set a Deployment's or StatefulSet's replicas: netlab scale deployment/web "
        "--replicas 5, netlab scale sts/db --replicas 3",
    )
    scale.add_argument("target", help="deployment/NAME or statefulset/NAME (sts/NAME)")
    scale.add_argument("--replicas", type=int, required=True)
    scale.add_argument("-n", "--namespace", default="default")
    scale.set_defaults(func=cmd_scale)

    node = sub.add_parser("node", help="fail or recover a node: netlab node fail n1")
    node.add_argument("node_verb", choices=["fail", "recover"])
    node.add_argument("node")
    node.set_defaults(func=cmd_node, command_name="node")
    for verb, text in (
        ("cordon", "mark a node unschedulable (its pods stay)"),
        ("uncordon", "mark a node schedulable again"),
        ("drain", "cordon a node and evict its pods (their Deployments start them elsewhere)"),
    ):
        node_cmd = sub.add_parser(verb, help=text)
        node_cmd.add_argument("node")
        if verb == "drain":
            node_cmd.add_argument(
                "--force", action="store_true", help="also delete pods no Deployment owns"
            )
        node_cmd.set_defaults(func=cmd_node, command_name=verb)

    etcd_cmd = sub.add_parser(
        "etcd",
        help="the lab's own etcd (store: etcd): status, get [--serializable], "
        "kill [--keep-down], start",
    )
    from netlab import etcdview

    etcdview.configure(etcd_cmd)
    etcd_cmd.set_defaults(func=cmd_etcd)

    rollout = sub.add_parser("rollout", help="a Deployment's rollout: status, history, undo")
    rollout.add_argument("verb", choices=["status", "history", "undo"])
    rollout.add_argument("target", help="deployment/NAME (or: deployment NAME)")
    rollout.add_argument("name", nargs="?")
    rollout.add_argument("-n", "--namespace", default="default")
    rollout.add_argument("--to-revision", type=int, help="undo: go back to this revision")
    rollout.add_argument(
        "--timeout", type=float, default=300.0, help="status: give up after this many seconds"
    )
    rollout.add_argument(
        "-w",
        "--watch",
        default=True,
        action=argparse.BooleanOptionalAction,
        help="status: wait until done",
    )
    rollout.set_defaults(func=cmd_rollout)

    logs = sub.add_parser(
        "logs", help="a container's output, or many pods' (-l app=web, --all) merged in time"
    )
    lab_logs.configure_parser(logs)
    logs.set_defaults(func=cmd_logs)

    ex = sub.add_parser("exec", help="run a command in a pod: netlab exec POD -- CMD...")
    ex.add_argument("pod")
    ex.add_argument("-c", "--container")
    ex.add_argument("-n", "--namespace", default="default")
    ex.add_argument(
        "-i",
        "--stdin",
        action="store_true",
        help="accepted for kubectl habits; stdin is always passed",
    )
    ex.add_argument("-t", "--tty", action="store_true", help="accepted for kubectl habits")
    ex.add_argument("command", nargs=argparse.REMAINDER)
    ex.set_defaults(func=cmd_exec)

    delete = sub.add_parser(
        "delete", help="delete pods (their Deployment replaces them) or deployments"
    )
    delete.add_argument("resource")
    delete.add_argument("names", nargs="+")
    delete.add_argument("-n", "--namespace", default="default")
    delete.set_defaults(func=cmd_delete)

    trace = sub.add_parser(
        "trace",
        help="recent traces from the mesh; `netlab trace ID` draws one as a waterfall; "
        "--export zipkin|otlp FILE",
    )
    configure_trace(trace)
    trace.set_defaults(func=cmd_trace)

    top = sub.add_parser(
        "top",
        help="requests, success rate, RPS and latency per service pair (the sidecars' metrics); "
        "`netlab top pods|nodes`: CPU and memory, as kubectl top",
    )
    configure_top(top)
    top.set_defaults(func=cmd_top)

    capture = sub.add_parser(
        "capture",
        help="capture packets anywhere in the lab into pcapng: pod/NAME, node/NAME, rack/NAME, "
        "router/NAME, service/NAME, all",
    )
    capture_command.configure_parser(capture)
    capture.set_defaults(func=cmd_capture)

    inspect = sub.add_parser(
        "inspect", help="read captures: VXLAN decoded, addresses named, DNS/HTTP/traces shown"
    )
    inspect_command.configure_parser(inspect)
    inspect.set_defaults(func=cmd_inspect)

    draw_parser = sub.add_parser(
        "draw", help="a picture of the running lab (graphviz): -o lab.svg|png"
    )
    draw.configure_parser(draw_parser)
    draw_parser.set_defaults(func=cmd_draw)

    from netlab import imagecmd

    imagecmd.add_parser(sub)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=cmd_version)

    demo = sub.add_parser(
        "demo",
        help="the guided demo: up, ping and HTTP across racks, VXLAN on the wire, Services, "
        "then the mesh (split, header route, rate limit, a trace)",
    )
    demo.add_argument("file", nargs="?")
    demo.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _take_back_sigint()
    if getattr(args, "lab_name", None):
        args.lab = args.lab_name
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, where a closed pipe can still be caught
        return code
    except NetlabError as exc:
        print(f"netlab: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # not our reader gone: a socket, say
        return _quiet_after_broken_pipe()


def _take_back_sigint() -> None:
    """Ctrl-C (SIGINT) ends a command (`logs -f`, `get -w`: exit 130) even when it was
    started with SIGINT ignored, as a shell's background job is: Python keeps an inherited
    ignore, Go's signal.Notify (kubectl's) does not. The supervisor and a capture install
    handlers of their own."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _stdout_closed() -> bool:
    """The reader of stdout went away (`netlab get pods | head`)."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (OSError, ValueError):
        return False


def _quiet_after_broken_pipe() -> int:
    """End quietly as Python's documentation recommends for SIGPIPE: what is left in
    stdout's buffer goes to /dev/null (or the flush at exit fails again). 141 = 128 +
    SIGPIPE, the status of a command the signal ended (kubectl's, in a shell)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141


if __name__ == "__main__":
    sys.exit(main())
