"""One preloaded parent that forks the lab's sidecars (`python -m mesh.zygote`).

A sidecar started fresh costs a Python interpreter plus uvloop, httptools and
aiohttp: ~0.3 s of CPU and over 20 MB each. Forked from a parent that has
imported all of that and frozen its objects out of the garbage collector's
reach (`gc.freeze()`), a sidecar shares those pages copy-on-write and starts
in milliseconds. The lab talks to the zygote over a SOCK_SEQPACKET socket
(its descriptor is --control-fd):

- the lab sends `{"argv": [...], "env": {...}, "netns": PATH}` with one
  descriptor attached (the write end of the container's output pipe);
- the zygote forks; the child starts a session, enters the pod's network
  namespace (and, given a `sandbox`, the pod's UTS and IPC namespaces and a
  mount namespace of its own with the pod's /etc files bound in, as runc makes
  the pod's other containers), takes the pipe as stdout and stderr and runs
  `mesh` with argv;
- the zygote answers `{"pid": N}` (or `{"error": "..."}`), and later, when a
  child ends, `{"exit": N, "code": C}` (C negative: killed by signal -C).

The zygote never touches a child after the fork except to reap it; the lab
signals children by PID, like any other container. It exits when the lab
closes the control socket.
"""

from __future__ import annotations

import argparse
import array
import ctypes
import gc
import http.client
import json
import os
import selectors
import signal
import socket
import sys
import time

CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
MAX_MESSAGE = 1 << 16


def _libc_call(name: str, *args) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """setns(2) (os.setns is Python 3.12+); nstype 0: whatever namespace fd is."""
    _libc_call("setns", fd, nstype)


def enter_sandbox(sandbox: dict) -> None:
    """Join the pod's UTS and IPC namespaces, then a mount namespace of our own,
    private, with the pod's /etc files bound over the host's."""
    for kind in ("uts", "ipc"):
        fd = os.open(sandbox[kind], os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(fd, 0)
        finally:
            os.close(fd)
    _libc_call("unshare", CLONE_NEWNS)
    _libc_call("mount", b"none", b"/", None, MS_REC | MS_PRIVATE, None)
    # the copy of other pods' volumes this namespace got would pin them (a disk could
    # not be detached, a tmpfs not freed, while the sidecar lives): let go of them
    for root in sandbox.get("detach") or ():
        for point in _mounts_under(root):
            ctypes.CDLL(None, use_errno=True).umount2(point.encode(), MNT_DETACH)
    for target, source in (sandbox.get("etc") or {}).items():
        _libc_call("mount", source.encode(), target.encode(), None, MS_BIND, None)


def _mounts_under(root: str) -> list[str]:
    """Mount points at or below root in this namespace, deepest first."""
    base = root.rstrip("/")
    found = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == base or point.startswith(base + "/"):
                found.add(point)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def preload() -> None:
    """Import everything a sidecar runs, so children share it."""
    import encodings.idna  # noqa: F401  (aiohttp, on first use)

    import aiohttp.web  # noqa: F401
    import httptools  # noqa: F401
    import uvloop  # noqa: F401

    import mesh.__main__  # noqa: F401
    import mesh.sidecar  # noqa: F401


WARM_OBJECTS = {
    "items": [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "warm", "namespace": "default", "labels": {"app": "warm"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "app"}]},
            "status": {"podIP": "127.0.0.1", "phase": "Running"},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "warm", "namespace": "default"},
            "spec": {
                "clusterIP": "127.0.0.2",
                "selector": {"app": "warm"},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            },
        },
    ]
}


def warm_up(api_socket: str | None = None, snapshot: dict | None = None) -> None:
    """Run one sidecar's start and stop here, on loopback port 0, from a throwaway
    objects file or (at the first spawn) watching the lab's API: what is made
    lazily on first use (caches, compiled patterns, interned names, aiohttp's
    client and server machinery) is then made once, shared, instead of once per
    child."""
    import asyncio
    import tempfile

    import uvloop

    from mesh.sidecar import Settings, Sidecar

    loopback = ("127.0.0.1", 0)
    with tempfile.NamedTemporaryFile("w", suffix=".json") as objects:
        json.dump(WARM_OBJECTS, objects)
        objects.flush()
        settings = Settings(
            namespace="default",
            pod="warm",
            api_socket=api_socket,
            objects_file=None if api_socket else objects.name,
            snapshot=snapshot,
            mark=None,
            outbound=loopback,
            inbound=loopback,
            admin=loopback,
            drain=0.0,
        )

        async def once() -> None:
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(0.1, stop.set)
            await Sidecar(settings).run(stop)

        try:
            uvloop.run(once())
        except Exception as exc:  # a warm-up only: the children still work without it
            print(f"zygote: warm-up failed: {exc!r}", flush=True)


def _receive(control: socket.socket) -> tuple[dict | None, list[int]]:
    fds = array.array("i")
    data, ancdata, _flags, _addr = control.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(4 * 4))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    if not data:
        return None, list(fds)
    return json.loads(data), list(fds)


SNAPSHOT_MAX_AGE = 0.5  # seconds a snapshot of the lab's lists serves new sidecars


class Snapshots:
    """The lab's lists, fetched once for a burst of spawns: each child starts with
    them in (copy-on-write) memory and only watches, from their versions, instead
    of every sidecar listing every Pod of the lab again."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, dict]] = {}

    def get(self, argv: list) -> dict | None:
        socket_path = _option(argv, "--api-socket")
        if socket_path is None:
            return None
        now = time.monotonic()
        cached = self._cache.get(socket_path)
        if cached is not None and now - cached[0] < SNAPSHOT_MAX_AGE:
            return cached[1]
        from labwatch import SourceError, fetch_lists
        from mesh.sidecar import PATHS

        try:
            snapshot = fetch_lists(socket_path, PATHS)
        except (OSError, SourceError, http.client.HTTPException) as exc:
            print(f"zygote: no snapshot ({exc}); the sidecar lists by itself", flush=True)
            return None
        gc.freeze()  # shared with the children: keep the collector off these pages too
        self._cache = {socket_path: (now, snapshot)}
        return snapshot


def _option(argv: list, name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return str(argv[i + 1])
        if isinstance(arg, str) and arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _child(
    request: dict, output: int, control: socket.socket, snapshot: dict | None = None
) -> None:
    """In the forked child: become the sidecar. Never returns."""
    code = 1
    try:
        control.close()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        gc.enable()  # the child's own objects are collected as usual
        os.setsid()
        target = os.open(request["netns"], os.O_RDONLY | os.O_CLOEXEC)
        setns(target)
        os.close(target)
        if request.get("sandbox"):
            enter_sandbox(request["sandbox"])
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.close(output)
        os.chdir("/")
        os.environ.clear()
        os.environ.update(request.get("env", {}))
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        # the preloaded objects stay frozen: unfreezing would make the next full
        # collection walk (and dirty the pages of) everything shared with the zygote;
        # the child's own objects are collected as usual
        from mesh.__main__ import main

        code = main(list(request["argv"]), snapshot=snapshot)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # report, then exit: never fall back into the zygote's loop
        try:
            os.write(2, f"netlab-proxy: {exc!r}\n".encode())
        except OSError:
            pass
    finally:
        os._exit(code)


def _send(control: socket.socket, message: dict) -> None:
    try:
        control.send(json.dumps(message).encode())
    except OSError:
        pass  # the lab went away; the loop notices on its next read


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(control, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def serve(control: socket.socket) -> int:
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ, "control")
    selector.register(wake_r, selectors.EVENT_READ, "signal")
    snapshots = Snapshots()
    warmed_api = False
    while True:
        for key, _ in selector.select():
            if key.data == "signal":
                os.read(wake_r, 4096)
                _reap(control)
                continue
            try:
                request, fds = _receive(control)
            except (OSError, ValueError) as exc:
                _send(control, {"error": f"bad request: {exc}"})
                continue
            if request is None:
                return 0  # the lab closed its end
            if len(fds) != 1 or not isinstance(request.get("argv"), list):
                for fd in fds:
                    os.close(fd)
                _send(control, {"error": "want {argv, env, netns} and one descriptor"})
                continue
            snapshot = snapshots.get(request["argv"])
            if not warmed_api and snapshot is not None:
                warmed_api = True
                warm_up(_option(request["argv"], "--api-socket"), snapshot)
                gc.freeze()
            pid = os.fork()
            if pid == 0:
                _child(request, fds[0], control, snapshot)
            os.close(fds[0])
            _send(control, {"pid": pid})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mesh.zygote")
    p.add_argument("--control-fd", type=int, required=True)
    args = p.parse_args(argv)
    control = socket.socket(fileno=args.control_fd)
    # as the gc docs advise for fork servers: no collection in the parent (it would
    # leave holes in shared pages that every child's allocations then dirty), and
    # what is loaded frozen, out of the collector's page-dirtying reach
    gc.disable()
    preload()
    warm_up()
    gc.freeze()  # what is loaded now stays out of the collector's (page-dirtying) reach
    return serve(control)


if __name__ == "__main__":
    sys.exit(main())
