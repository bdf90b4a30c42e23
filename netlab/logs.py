"""`netlab logs`: one pod's log as before, or the logs of many pods at once.

    netlab logs POD [-c CONTAINER] [-f] [--tail N]           one container, as written
    netlab logs -l app=reviews [--grep ID] [--since 5m]       every pod the selector picks
    netlab logs --all [-A] [-f]                               every pod of a namespace (or all)

With a selector or --all every line is prefixed `[pod/NAME/CONTAINER NODE] ` (with -A
`[NAMESPACE/pod/NAME/CONTAINER NODE] `) and the lines of all pods come out merged in the
order of their timestamps (the lab's logs are CRI records with a time on every line).
With -f every selected container is followed at once, one thread each, and pods that
start to match while following (a Deployment's replacement) are picked up: the pods are
listed again every second. Ctrl-C ends it (status 130). `--grep TEXT` keeps the lines
that contain TEXT (a plain substring, matched here, like `| grep -F`).

Unlike kubectl, a selector shows every container of each pod (sidecars included: a
request id is in both), and all lines unless --tail says otherwise.
"""

from __future__ import annotations

import argparse
import math
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from netlab import crilog
from netlab.client import LabClient, LogStream
from netlab.errors import ApiError, LabNotFound, NetlabError
from netlab.resources import LabelSelector

RELIST = 1.0  # seconds between listings of the selected pods while following
FETCH_WORKERS = 8  # concurrent requests when reading (not following) many logs
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def configure_parser(p: argparse.ArgumentParser) -> None:
    """The arguments of `netlab logs` (kubectl's names)."""
    p.add_argument("pod", nargs="?", help="one pod (or use -l / --all)")
    p.add_argument("-c", "--container", help="only this container")
    p.add_argument("-l", "--selector", help="pods whose labels match, e.g. app=web,tier!=db")
    p.add_argument("--all", action="store_true", help="every pod of the namespace")
    p.add_argument(
        "-A", "--all-namespaces", action="store_true", help="with -l or --all: every namespace"
    )
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument("--all-containers", action="store_true", help="every container of POD")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("--since", help="only lines newer than this, e.g. 30s, 5m, 1h")
    p.add_argument("--since-time", help="only lines from this RFC3339 time on")
    p.add_argument("--tail", type=int, help="the last N lines of each container")
    p.add_argument("--grep", help="only lines containing this text")
    p.add_argument(
        "--prefix",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="prefix lines with [pod/NAME/CONTAINER NODE] (default: with -l or --all)",
    )
    p.add_argument("--timestamps", action="store_true", help="prefix lines with their time")
    p.add_argument(
        "--max-log-requests",
        type=int,
        default=50,
        help="most containers followed at once (default 50)",
    )


# -- pure parts --------------------------------------------------------------------


def parse_duration(text: str) -> float:
    """Seconds in a Go duration (`30s`, `5m`, `1h30m`, `1.5h`, `250ms`); NetlabError if not one."""
    pos, total = 0, 0.0
    text = text.strip()
    while pos < len(text):
        m = _DURATION.match(text, pos)
        if m is None:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise NetlabError(f"invalid duration {text!r}: use a number and a unit, like 30s, 5m, 1h")
    return total


def since_seconds(text: str) -> int:
    """--since as the API's whole sinceSeconds (rounded up, as kubectl does)."""
    seconds = math.ceil(parse_duration(text))
    if seconds <= 0:
        raise NetlabError(f"--since {text} is not after anything: use a positive duration")
    return seconds


def check_selector(text: str) -> str:
    """The selector if it parses (kubectl's syntax); NetlabError with the syntax if not."""
    try:
        LabelSelector.parse(text)
    except ApiError as exc:
        raise NetlabError(
            f"{exc}; a selector is key=value, key!=value, key, !key or "
            "key in (a,b), joined by commas: -l app=web,tier!=db"
        ) from None
    return text


@dataclass(frozen=True)
class Source:
    """One container whose log is read."""

    namespace: str
    pod: str
    container: str
    node: str
    uid: str = ""

    def prefix(self, with_namespace: bool = False) -> bytes:
        where = f"{self.namespace}/" if with_namespace else ""
        return f"[{where}pod/{self.pod}/{self.container} {self.node or '-'}] ".encode()


def split_stamp(line: bytes) -> tuple[int | None, bytes, bytes]:
    """A line the API sent with timestamps=true: (time in ns, its stamp, the text)."""
    stamp, sep, text = line.partition(b" ")
    if sep:
        try:
            return crilog.parse_time(stamp), stamp, text
        except ValueError:
            pass
    return None, b"", line


class LineSplitter:
    """Byte chunks in, complete lines (without newline) out."""

    def __init__(self) -> None:
        self.pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        lines = (self.pending + chunk).split(b"\n")
        self.pending = lines.pop()
        return lines

    def end(self) -> list[bytes]:
        rest, self.pending = self.pending, b""
        return [rest] if rest else []


@dataclass(frozen=True)
class Line:
    time: int | None
    stamp: bytes
    text: bytes
    source: int  # index of its Source, for a stable order


def parse_lines(raw: Iterable[bytes], source: int) -> list[Line]:
    """The lines of one log (sent with timestamps); a line without a time gets
    the time of the line before it, so that it stays in place when merged."""
    lines, last = [], None
    for line in raw:
        when, stamp, text = split_stamp(line)
        last = when if when is not None else last
        lines.append(Line(last, stamp, text, source))
    return lines


def merge(logs: Iterable[list[Line]]) -> list[Line]:
    """All lines in time order; equal times keep their source's order, then the file's."""
    keyed = [
        ((line.time if line.time is not None else -1), line.source, seq, line)
        for lines in logs
        for seq, line in enumerate(lines)
    ]
    keyed.sort(key=lambda k: k[:3])
    return [k[3] for k in keyed]


@dataclass(frozen=True)
class Format:
    """How a line is printed: prefix, timestamp, grep."""

    prefix: bool
    timestamps: bool
    grep: bytes | None
    with_namespace: bool = False

    def render(self, line: Line, source: Source) -> bytes | None:
        if self.grep is not None and self.grep not in line.text:
            return None
        out = line.text + b"\n"
        if self.timestamps and line.stamp:
            out = line.stamp + b" " + out
        if self.prefix:
            out = source.prefix(self.with_namespace) + out
        return out


# -- talking to the lab --------------------------------------------------------------


@dataclass
class Request:
    """What to ask of each log."""

    tail: int | None
    since_seconds: int | None
    since_time: str | None


def _pod_sources(pod: dict, container: str | None) -> list[Source]:
    meta, spec = pod["metadata"], pod.get("spec", {})
    names = [c["name"] for c in spec.get("containers", [])]
    if container is not None:
        names = [n for n in names if n == container]
    node = spec.get("nodeName", "")
    return [Source(meta["namespace"], meta["name"], n, node, meta.get("uid", "")) for n in names]


def select(client: LabClient, args) -> list[Source]:
    """The containers to read, from one pod or the pods the selector (or --all) picks."""
    namespace = args.namespace or "default"
    if args.pod:
        try:
            pod = client.get("pods", args.pod, namespace=namespace)
        except ApiError as exc:
            if exc.status == 404:
                raise NetlabError(
                    f'no pod "{args.pod}" in namespace {namespace}: `netlab get pods -n '
                    f"{namespace}` lists them (or -A for every namespace's)"
                ) from None
            raise
        sources = _pod_sources(pod, args.container)
        if not sources:
            names = ", ".join(c["name"] for c in pod["spec"]["containers"])
            raise NetlabError(
                f"pod {args.pod} has no container {args.container}; -c one of: {names}"
            )
        return sources
    return _list_sources(client, args, namespace)


def _list_sources(client: LabClient, args, namespace: str) -> list[Source]:
    pods = _list_pods(client, args, namespace)
    where = "any namespace" if args.all_namespaces else f"namespace {namespace}"
    if not pods:
        if args.selector:
            raise NetlabError(
                f"no pods in {where} match {args.selector}: check their labels "
                "(`netlab get pods -o yaml`), the namespace (-n, -A), or use --all"
            )
        raise NetlabError(f"no pods in {where}: `netlab get pods -A` shows where pods are")
    sources = [s for pod in pods for s in _pod_sources(pod, args.container)]
    if not sources:
        raise NetlabError(
            f"none of the {len(pods)} selected pods has a container {args.container}: "
            "leave -c out to read every container"
        )
    return sources


def _list_pods(client: LabClient, args, namespace: str) -> list[dict]:
    listing = client.list(
        "pods",
        namespace=namespace,
        label_selector=args.selector or None,
        all_namespaces=args.all_namespaces,
    )
    pods = listing.get("items", [])
    return sorted(pods, key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"]))


def _fetch(client: LabClient, source: Source, request: Request, index: int) -> list[Line]:
    """One container's log (not followed); empty if the pod went away meanwhile."""
    try:
        raw = b"".join(
            client.logs(
                source.namespace,
                source.pod,
                container=source.container,
                tail=request.tail,
                since_seconds=request.since_seconds,
                since_time=request.since_time,
                timestamps=True,
            )
        )
    except ApiError as exc:
        if exc.status == 404:
            return []
        raise
    splitter = LineSplitter()
    return parse_lines([*splitter.feed(raw), *splitter.end()], index)


def read_all(
    client: LabClient, sources: list[Source], request: Request, fmt: Format, out: BinaryIO
) -> None:
    """Every container's log, merged in time order."""
    with ThreadPoolExecutor(max_workers=FETCH_WORKERS) as pool:
        logs = list(pool.map(lambda i: _fetch(client, sources[i], request, i), range(len(sources))))
    for line in merge(logs):
        rendered = fmt.render(line, sources[line.source])
        if rendered is not None:
            out.write(rendered)
    out.flush()


class Follower:
    """Follows many containers at once: a thread per container puts lines on one
    queue; the caller's thread prints them, so Ctrl-C lands there."""

    def __init__(self, client: LabClient, request: Request, max_streams: int):
        self.client, self.request, self.max_streams = client, request, max_streams
        self.lines: queue.Queue = queue.Queue()
        self.sources: list[Source] = []
        self.streams: dict[int, LogStream | None] = {}  # index -> stream, while it runs
        self.known: set[Source] = set()
        self.lock = threading.Lock()

    def add(self, source: Source, tail: int | None) -> bool:
        """Follow `source` (once); False if --max-log-requests streams run already."""
        with self.lock:
            if source in self.known:
                return True
            if len(self.streams) >= self.max_streams:
                return False
            index = len(self.sources)
            self.sources.append(source)
            self.known.add(source)
            self.streams[index] = None
        threading.Thread(
            target=self._run, args=(index, source, tail), name=f"logs {source.pod}", daemon=True
        ).start()
        return True

    def running(self) -> int:
        with self.lock:
            return len(self.streams)

    def _run(self, index: int, source: Source, tail: int | None) -> None:
        splitter = LineSplitter()
        try:
            stream = self.client.logs(
                source.namespace,
                source.pod,
                container=source.container,
                follow=True,
                tail=tail,
                since_seconds=self.request.since_seconds,
                since_time=self.request.since_time,
                timestamps=True,
            )
            with self.lock:
                if index not in self.streams:  # closed meanwhile
                    stream.close()
                    return
                self.streams[index] = stream
            for chunk in stream:
                self._put(index, splitter.feed(chunk))
            self._put(index, splitter.end())
        except NetlabError:
            pass  # the pod is gone, or the lab: its stream just ends
        finally:
            with self.lock:
                self.streams.pop(index, None)
            self.lines.put(None)  # wakes the printer to see what still runs

    def _put(self, index: int, raw: list[bytes]) -> None:
        for line in raw:
            when, stamp, text = split_stamp(line)
            self.lines.put(Line(when, stamp, text, index))

    def take(self, timeout: float) -> list[Line]:
        """The lines that arrived (waiting up to `timeout` for the first), in time order."""
        batch = []
        try:
            item = self.lines.get(timeout=timeout)
            while True:
                if item is not None:
                    batch.append(item)
                item = self.lines.get_nowait()
        except queue.Empty:
            pass
        return merge([batch])

    def close(self) -> None:
        with self.lock:
            streams = [s for s in self.streams.values() if s is not None]
            self.streams.clear()
        for stream in streams:
            stream.close()


def follow(
    client: LabClient,
    sources: list[Source],
    request: Request,
    fmt: Format,
    out: BinaryIO,
    relist: Callable[[], list[Source]] | None,
    max_streams: int,
) -> int:
    """Print the containers' new lines as they come until every stream ends (one pod)
    or, with `relist` (a selector), until Ctrl-C; new matches are followed too."""
    if len(sources) > max_streams:
        raise NetlabError(
            f"following {len(sources)} containers is more than --max-log-requests="
            f"{max_streams}: narrow the selector (-l, -c) or raise --max-log-requests"
        )
    follower = Follower(client, request, max_streams)
    for source in sources:
        follower.add(source, request.tail)
    next_list, warned = time.monotonic() + RELIST, False
    try:
        while True:
            for line in follower.take(timeout=0.2):
                rendered = fmt.render(line, follower.sources[line.source])
                if rendered is not None:
                    out.write(rendered)
            out.flush()
            if relist is None:
                if follower.running() == 0 and follower.lines.empty():
                    return 0
            elif time.monotonic() >= next_list:
                next_list = time.monotonic() + RELIST
                try:
                    current = relist()
                except LabNotFound:
                    return 0  # the lab stopped: nothing more will be written
                except NetlabError:
                    current = []  # none match right now: keep waiting for some
                left_out = [s for s in current if not follower.add(s, None)]  # from line 1
                if left_out and not warned:
                    warned = True
                    print(
                        f"netlab: not following {len(left_out)} more containers "
                        f"(--max-log-requests={max_streams})",
                        file=sys.stderr,
                    )
    except KeyboardInterrupt:
        return 130
    finally:
        follower.close()


def run(args, client: LabClient, out: BinaryIO | None = None) -> int:
    """`netlab logs`: the exit status (130 after Ctrl-C while following)."""
    out = out if out is not None else sys.stdout.buffer
    many = bool(args.selector or args.all or (args.all_namespaces and not args.pod))
    if args.pod and many:
        raise NetlabError("give a pod name or a selector (-l, --all), not both")
    if not args.pod and not many:
        raise NetlabError("which logs? `netlab logs POD`, `netlab logs -l app=web` or --all")
    if args.since and args.since_time:
        raise NetlabError("--since and --since-time exclude each other: use one")
    if args.tail is not None and args.tail < 0:
        args.tail = None  # kubectl's --tail=-1: everything
    if args.selector:
        check_selector(args.selector)
    since_time = args.since_time
    if since_time:
        try:
            crilog.parse_time(since_time)
        except ValueError as exc:
            raise NetlabError(f"--since-time: {exc}") from None
    request = Request(args.tail, since_seconds(args.since) if args.since else None, since_time)
    if args.pod and not args.all_containers and args.prefix is not True and not args.grep:
        return _one_container(client, args, request, out)
    sources = select(client, args)
    fmt = Format(
        prefix=args.prefix if args.prefix is not None else many or len(sources) > 1,
        timestamps=args.timestamps,
        grep=args.grep.encode() if args.grep else None,
        with_namespace=args.all_namespaces,
    )
    if not args.follow:
        read_all(client, sources, request, fmt, out)
        return 0
    relist = None
    if many:
        namespace = args.namespace or "default"

        def relist() -> list[Source]:
            return _list_sources(client, args, namespace)

    return follow(client, sources, request, fmt, out, relist, args.max_log_requests)


def _one_container(client: LabClient, args, request: Request, out: BinaryIO) -> int:
    """One pod's log as the process wrote it, streamed through (the old `netlab logs`)."""
    namespace = args.namespace or "default"
    try:
        stream = client.logs(
            namespace,
            args.pod,
            container=args.container,
            follow=args.follow,
            tail=request.tail,
            since_seconds=request.since_seconds,
            since_time=request.since_time,
            timestamps=args.timestamps,
        )
    except ApiError as exc:
        if exc.status == 404 and "not found" in str(exc):
            select(client, args)  # names the fix if the pod is what is missing
        if exc.status == 400 and "container name must be specified" in str(exc):
            raise NetlabError(f"{exc}: add -c NAME, or --all-containers") from None
        raise
    try:
        for chunk in stream:
            out.write(chunk)
            out.flush()
    except KeyboardInterrupt:
        return 130
    finally:
        stream.close()
    return 0
