"""The lab's container runtime: one process per lab that starts its containers,
keeps their logs and learns how they end, and outlives the lab supervisor
(`python -m netlab.realize.runtimed --socket PATH`).

It does for the lab what containerd and its shims do for a kubelet: a kubelet
that restarts finds its containers still running, their output still logged,
and the exits it missed waiting for it. Containers are this process's
children (sidecars are forked by the zygote, its child), so only it can wait
for them; their output pipes end here, where `OutputWriter` turns them into
CRI log records. The supervisor talks to it over a SOCK_SEQPACKET socket in
the run directory, one JSON message each way:

- `{"seq": N, "op": "start", "items": [{"id", "argv", "env", "netns", "log",
  "fork", "bundle", "runc_id", "lower", "cgroups_path"}...]}` starts containers: with a
  `bundle`, runc runs it (its root an overlay on `lower`); with `fork`, the
  zygote forks a sidecar into the namespaces; it answers `{"seq": N, "started": [{"id", "pid", "started"} | {"id", "error"}]}`;
- `{"seq": N, "op": "sandboxes", "items": [{"name", "hostname"}...]}` makes pod
  sandboxes (a thread each holds the pod's UTS and IPC namespaces, see
  netlab.node.sandbox) and answers `{"seq": N, "sandboxes": [{"name", "tid"}...]}`;
  `{"op": "remove_sandboxes", "names": [...]}` lets them go;
- `{"seq": N, "op": "list"}` answers `{"seq": N, "running": [...], "exited": [...],
  "sandboxes": {name: tid}}`, with the exits no supervisor was connected to hear;
- `{"seq": N, "op": "shutdown"}` ends the zygote and this process (the lab has
  stopped the containers by PID before);
- unasked, `{"exit": PID, "id": ID, "code": C}` when a container ends (with
  `"oom": true` when the kernel's OOM killer ended it).

This process is a child subreaper: a container runc started detached is its
child once runc exits, so its exit status is ours to reap (as a containerd
shim's is). Nothing else is handed to it: the other processes of a container
are in its PID namespace, whose first process reaps them (the kernel kills
and reaps what is left when it ends). Once a runc container has ended, its state, cgroup and writable
layer are removed (in a worker, not holding up the other exits).

A newer connection replaces an older one (the supervisor that restarted).
Requests run in a thread each: a burst of sidecar forks does not hold up the
apps' starts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from netlab.node import shim
from netlab.node.cgroups import CgroupError, CgroupLayout, container_dirs, usage
from netlab.node.runc import Runc, become_subreaper, runtime_name
from netlab.node.sandbox import Holders
from netlab.realize.processes import ExitMonitor, PidRecord, start_time
from netlab.realize.zygote import Zygote

log = logging.getLogger("netlab.runtimed")
MAX_MESSAGE = 1 << 20
PARALLEL_STARTS = int(os.environ.get("NETLAB_PARALLEL_STARTS", "4"))  # runc processes at a time


@dataclass
class Entry:
    id: str
    proc: object  # a subprocess.Popen or a zygote's ForkedProcess
    started: int | None


class Runtimed:
    def __init__(
        self, socket_path: Path, zygote_log: Path, pids: PidRecord, state_root: Path
    ) -> None:
        self.socket_path = socket_path
        self.runc = Runc(state_root, runtime_name())
        self.workers = ThreadPoolExecutor(PARALLEL_STARTS, thread_name_prefix="runc")
        self.bundles: dict[str, Path] = {}  # runc id -> bundle, of the running containers
        self.holders = Holders()  # the pod sandboxes' UTS and IPC namespaces
        self.cgroup_paths: dict[str, str] = {}  # runc id -> its OCI cgroupsPath
        try:
            self.cgroups: CgroupLayout | None = CgroupLayout.detect()
        except CgroupError:
            self.cgroups = None
        self.monitor = ExitMonitor()
        # the zygote and its children are on the lab's record from the moment they exist
        self.zygote = Zygote(
            zygote_log,
            lambda pid: pids.add(pid, "zygote", "mesh.zygote"),
            lambda pid: pids.add(pid, "container", "netlab-proxy (forked)"),
        )
        self.lock = threading.Lock()
        self.running: dict[int, Entry] = {}
        self.exited: list[dict] = []  # heard while no supervisor was connected
        self.client: socket.socket | None = None
        self.done = threading.Event()

    # -- the connection ---------------------------------------------------

    def serve(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        old = os.umask(0o077)  # only root may start processes through it
        try:
            listener.bind(str(self.socket_path))
        finally:
            os.umask(old)
        listener.listen(4)
        listener.settimeout(0.5)
        print(f"runtimed: serving {self.socket_path}", flush=True)
        while not self.done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            with self.lock:
                previous, self.client = self.client, conn
            if previous is not None:
                with contextlib.suppress(OSError):
                    previous.shutdown(socket.SHUT_RDWR)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def _read(self, conn: socket.socket) -> None:
        while True:
            try:
                data = conn.recv(MAX_MESSAGE)
            except OSError:
                data = b""
            if not data:
                break
            try:
                request = json.loads(data)
                seq, op = request["seq"], request["op"]
            except (ValueError, KeyError, TypeError):
                print(f"runtimed: malformed request {data[:80]!r}", flush=True)
                continue
            threading.Thread(
                target=self._answer, args=(conn, seq, op, request), daemon=True
            ).start()
        with self.lock:
            if self.client is conn:
                self.client = None
        conn.close()

    def _answer(self, conn: socket.socket, seq: int, op: str, request: dict) -> None:
        try:
            if op == "start":
                reply = {"started": self.start(request.get("items") or [])}
            elif op == "sandboxes":
                reply = {"sandboxes": self.holders.create(request.get("items") or [])}
            elif op == "remove_sandboxes":
                self.holders.remove(request.get("names") or [])
                reply = {"ok": True}
            elif op == "list":
                reply = self.listing()
            elif op == "shutdown":
                reply = {"ok": True}
            else:
                reply = {"error": f"unknown op {op!r}"}
        except Exception as exc:  # an answer always goes back: the supervisor waits for it
            log.exception("request %s failed", op)
            reply = {"error": str(exc)}
        self._send(conn, {"seq": seq, **reply})
        if op == "shutdown":
            self.done.set()

    def _send(self, conn: socket.socket | None, message: dict) -> bool:
        if conn is None:
            return False
        try:
            conn.sendall(json.dumps(message).encode())
            return True
        except OSError:
            return False

    # -- containers -------------------------------------------------------

    def start(self, items: list[dict]) -> list[dict]:
        forks = [i for i in items if i.get("fork")]
        answers: dict[int, dict] = {}
        if forks:
            requests = [(i["netns"], i["argv"], i.get("env") or {}, Path(i["log"])) for i in forks]
            try:
                procs = self.zygote.spawn_many(
                    requests, sandboxes=[i.get("sandbox") for i in forks]
                )
            except Exception as exc:
                procs = []
                for item in forks:
                    answers[id(item)] = {"id": item["id"], "error": str(exc)}
            for item, proc in zip(forks, procs, strict=False):
                answers[id(item)] = self._watch(item["id"], proc)
        runs = {
            id(item): self.workers.submit(self._run, item)
            for item in items
            if item.get("bundle") and not item.get("fork")
        }
        for item in items:
            if item.get("fork"):
                continue
            try:
                if id(item) not in runs:
                    raise ValueError("neither a bundle to run nor a sidecar to fork")
                proc = runs[id(item)].result()
            except Exception as exc:
                answers[id(item)] = {"id": item["id"], "error": str(exc)}
                continue
            answers[id(item)] = self._watch(item["id"], proc)
        return [answers[id(item)] for item in items]

    def _run(self, item: dict) -> shim.DetachedContainer:
        bundle = Path(item["bundle"])
        proc = shim.start(self.runc, item["runc_id"], bundle, item["lower"], Path(item["log"]))
        with self.lock:
            self.bundles[item["runc_id"]] = bundle
            self.cgroup_paths[item["runc_id"]] = item.get("cgroups_path", "")
        return proc

    def _cgroup_dirs(self, path: str) -> dict[str, Path]:
        """The directories of a container's cgroup (one per hierarchy)."""
        if not path or self.cgroups is None:
            return {}
        try:
            return container_dirs(self.cgroups, path, os.getpid())
        except (CgroupError, OSError):
            return {}

    def _watch(self, ident: str, proc) -> dict:
        entry = Entry(ident, proc, start_time(proc.pid))
        with self.lock:
            self.running[proc.pid] = entry
        self.monitor.watch(proc, self._exited)
        return {"id": ident, "pid": proc.pid, "started": entry.started}

    def _exited(self, proc) -> None:
        code = proc.returncode if proc.returncode is not None else -1
        oom = False
        if isinstance(proc, shim.DetachedContainer):
            with self.lock:
                bundle = self.bundles.pop(proc.runc_id, None)
                path = self.cgroup_paths.pop(proc.runc_id, "")
            dirs = self._cgroup_dirs(path)  # /proc read: not under the lock
            # the OOM killer's count, read before the cgroup goes (each run has its own)
            used = usage(dirs) if dirs else None
            oom = bool(used and used.oom_kills)
            if bundle is not None and not self.done.is_set():
                self.workers.submit(shim.remove, self.runc, proc.runc_id, bundle, dirs.values())
        with self.lock:
            entry = self.running.pop(proc.pid, None)
            message = {"exit": proc.pid, "id": entry.id if entry else "", "code": code}
            if oom:
                message["oom"] = True
            delivered = self._send(self.client, message)
            if not delivered:
                self.exited.append(message)

    def listing(self) -> dict:
        with self.lock:
            running = [
                {"id": e.id, "pid": pid, "started": e.started} for pid, e in self.running.items()
            ]
            exited, self.exited = self.exited, []
        return {"running": running, "exited": exited, "sandboxes": self.holders.listing()}

    def close(self) -> None:
        self.monitor.close()
        self.zygote.close()
        self.workers.shutdown(wait=True, cancel_futures=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m netlab.realize.runtimed")
    p.add_argument("--socket", type=Path, required=True)
    p.add_argument("--zygote-log", type=Path, required=True)
    p.add_argument("--pids", type=Path, required=True, help="the lab's record of its processes")
    p.add_argument("--state-root", type=Path, required=True, help="the OCI runtime's state")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="runtimed: %(message)s")
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closing terminal is not our end
    become_subreaper()
    threading.stack_size(512 * 1024)  # a thread per pod sandbox: small stacks
    daemon = Runtimed(args.socket, args.zygote_log, PidRecord(args.pids), args.state_root)
    try:
        daemon.serve()
    finally:
        daemon.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
