"""`netlab capture TARGET... [-i IFACE] [-f BPF] [-c N] [--duration S] [-w FILE|-] [-q]`.

Everything is checked (targets, interfaces, filter, output) before the
first packet; the capture's PID is recorded under the lab's run directory
(`captures/PID.json`) while it runs, so `netlab capture --list` shows it and
`netlab capture --stop PID` ends it by that PID only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import BinaryIO

from netlab.capture import bpf, targets
from netlab.capture.addressbook import AddressBook
from netlab.capture.session import CaptureSession, stop_on_signals
from netlab.client import LabClient
from netlab.errors import NetlabError
from netlab.realize import netns


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("targets", nargs="*", metavar="TARGET", help=targets.USAGE)
    p.add_argument(
        "-i",
        "--interface",
        action="append",
        default=[],
        help="interface(s) of a node or router: eth0 (default), flannel.1, cni0; comma lists allowed",
    )
    p.add_argument("-f", "--filter", help="a tcpdump filter, e.g. 'udp port 8472'")
    p.add_argument("-c", "--count", type=int, help="stop after this many packets")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("-w", "--write", help="pcapng file to write; - streams pcapng to stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-packet lines")
    p.add_argument("-n", "--namespace", default="default", help="of pod/ and service/ targets")
    p.add_argument("--list", action="store_true", help="captures running on this lab")
    p.add_argument("--stop", metavar="PID", help="end a running capture of this lab (or all)")


def run(args: argparse.Namespace, client: LabClient, run_dir: Path) -> int:
    captures = run_dir / "captures"
    if args.list:
        return _list(captures)
    if args.stop:
        return _stop(captures, args.stop)
    if not args.targets:
        raise NetlabError(f"what to capture? `netlab capture TARGET`; {targets.USAGE}")
    if args.count is not None and args.count <= 0:
        raise NetlabError(f"-c {args.count}: the packet count must be at least 1")
    if args.duration is not None and args.duration <= 0:
        raise NetlabError(f"--duration {args.duration}: give a positive number of seconds")
    program = bpf.compile_filter(args.filter) if args.filter else None
    lab = client.view(all_namespaces=True)
    interfaces = targets.resolve(
        args.targets, args.interface, lab.topology, lab.pods, lab.endpoints, args.namespace
    )
    book = AddressBook.from_objects(lab.topology, lab.pods, lab.services, lab.endpoints)
    names = [(ip, entry.label) for ip, entry in book.addresses.items()]
    to_stdout = args.write == "-"
    session = CaptureSession(
        interfaces,
        program=program,
        names=names,
        count=args.count,
        duration=args.duration,
        on_packet=None if args.quiet else _printer(book, sys.stderr if to_stdout else sys.stdout),
        lab_alive=lambda: all(netns.netns_path(i.netns).exists() for i in interfaces),
    )
    session.open()  # a missing interface fails here, before any file exists
    try:
        with _output(args.write, book) as output:
            labels = ", ".join(i.label for i in interfaces)
            print(
                f"capturing on {len(interfaces)} interface(s): {labels}"
                + (f" (filter: {args.filter})" if args.filter else "")
                + "; Ctrl-C stops",
                file=sys.stderr,
                flush=True,
            )
            restore = stop_on_signals(session)
            record = _record(captures, args, interfaces)
            try:
                result = session.run(output)
            finally:
                restore()
                record.unlink(missing_ok=True)
    finally:
        session.close()
    where = (
        ""
        if args.write in (None, "-")
        else f" into {args.write} (names: {AddressBook.beside(args.write)})"
    )
    print(
        f"{result.packets} packet(s) captured{where}; stopped by {result.reason}",
        file=sys.stderr,
        flush=True,
    )
    return 0


@contextlib.contextmanager
def _output(write: str | None, book: AddressBook):
    if write is None:
        yield _null()
        return
    if write == "-":
        yield sys.stdout.buffer
        return
    path = Path(write)
    if path.parent and not path.parent.is_dir():
        raise NetlabError(f"-w {write}: directory {path.parent} does not exist")
    try:
        stream = path.open("wb")
    except OSError as exc:
        raise NetlabError(f"-w {write}: cannot write it ({exc.strerror})") from exc
    try:
        book.save(AddressBook.beside(path))
        yield stream
    finally:
        stream.close()


class _Null:
    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass


def _null() -> BinaryIO:
    return _Null()  # type: ignore[return-value]


def _printer(book: AddressBook, stream):
    """One line per packet, in `netlab inspect`'s columns, as it is written."""
    from netlab.inspect.packets import PacketInfo, bind_vxlan, describe  # scapy: only if shown
    from netlab.inspect.render import PacketTable

    bind_vxlan(book.overlay_ports)
    table = PacketTable(stream, batch=1)
    first: dict[str, int] = {}  # the first packet's time: lines show time since it

    def show(index: int, label: str, ts_ns: int, frame: bytes) -> None:
        start = first.setdefault("ts", ts_ns)
        info = PacketInfo("", index, ts_ns, label, len(frame), len(frame))
        describe(info, frame, 1, book, book.overlay_ports)  # never raises for bad packets
        with contextlib.suppress(BrokenPipeError):
            table.add(info, start)

    return show


def _record(captures: Path, args: argparse.Namespace, interfaces) -> Path:
    captures.mkdir(parents=True, exist_ok=True)
    path = captures / f"{os.getpid()}.json"
    path.write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "started": time.time(),
                "targets": args.targets,
                "interfaces": [i.label for i in interfaces],
                "file": args.write,
            }
        )
    )
    return path


def _running(captures: Path) -> list[dict]:
    found = []
    for path in sorted(captures.glob("*.json")) if captures.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(path.read_text())
            if _alive(info["pid"]):
                found.append(info)
            else:
                path.unlink(missing_ok=True)  # its process ended without cleaning up
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _list(captures: Path) -> int:
    running = _running(captures)
    if not running:
        print("no captures running")
        return 0
    print(f"{'PID':<8} {'AGE':>6}  {'FILE':<24} INTERFACES")
    for info in running:
        age = f"{time.time() - info['started']:.0f}s"
        print(
            f"{info['pid']:<8} {age:>6}  {info['file'] or '-':<24} {', '.join(info['interfaces'])}"
        )
    return 0


def _stop(captures: Path, which: str) -> int:
    running = _running(captures)
    if which != "all":
        try:
            pid = int(which)
        except ValueError as exc:
            raise NetlabError(
                f"--stop {which}: give a PID from `netlab capture --list`, or all"
            ) from exc
        running = [info for info in running if info["pid"] == pid]
        if not running:
            raise NetlabError(f"no capture of this lab runs as PID {pid} (`netlab capture --list`)")
    for info in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(info["pid"], signal.SIGINT)  # it ends cleanly, the file stays valid
        print(f"stopped capture {info['pid']}")
    return 0
