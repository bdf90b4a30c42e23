"""Shared helpers for the benchmarks in bench/: statistics, interleaving,
tables, iperf3 and ping output parsing, and a few process/namespace chores.

Importing this module puts the repository root on sys.path, so
`python bench/bringup.py` finds the `netlab` package without installing it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# ---------------------------------------------------------------- statistics


def median(values: Iterable[float]) -> float:
    """Median, NaN for no values (a failed measurement shows as 'n/a')."""
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def paired_ratio(nums: Sequence[float], dens: Sequence[float]) -> float:
    """Median of per-pair ratios nums[i]/dens[i]: each pair ran back to back,
    so slow drift of the machine cancels out (better than a ratio of medians)."""
    ratios = [n / d for n, d in zip(nums, dens, strict=False) if d and n == n and d == d]
    return median(ratios)


def interleave(rounds: int, steps: Sequence[tuple[str, Callable[[], float]]]) -> dict[str, list]:
    """Run every step once per round, in order, for `rounds` rounds
    (A, B, C, A, B, C, ...); returns {name: [result per round]}."""
    results: dict[str, list] = {name: [] for name, _ in steps}
    for _ in range(rounds):
        for name, step in steps:
            results[name].append(step())
    return results


class Deadline:
    """A time budget for the whole benchmark."""

    def __init__(self, seconds: float):
        self.start = time.monotonic()
        self.seconds = seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()


# ---------------------------------------------------------------- tables


def fmt(value: float | str | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if value != value:
        return "n/a"
    return f"{value:.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table, columns right-aligned, separated by two spaces."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=False)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=False))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=False)) for row in rows]
    return "\n".join(lines)


def goal(value: float, limit: float, at_least: bool = False) -> str:
    """'ok' or 'MISS' against a goal (n/a when the value is missing)."""
    if value != value:
        return "n/a"
    met = value >= limit if at_least else value <= limit
    return "ok" if met else "MISS"


def say(*args) -> None:
    print(*args, flush=True)


# ---------------------------------------------------------------- parsing


def iperf3_gbits(output: str) -> float:
    """Receiver-side throughput in Gbit/s from `iperf3 -J` output."""
    data = json.loads(output)
    if "error" in data:
        raise RuntimeError(f"iperf3: {data['error']}")
    end = data["end"]
    summary = end.get("sum_received") or end.get("sum")
    return summary["bits_per_second"] / 1e9


def iperf3_retransmits(output: str) -> int | None:
    try:
        return json.loads(output)["end"]["sum_sent"].get("retransmits")
    except (KeyError, ValueError):
        return None


PING_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")


def ping_avg_ms(output: str) -> float:
    """The avg of ping's 'rtt min/avg/max/mdev = a/b/c/d ms' line."""
    match = PING_RTT.search(output)
    if not match:
        raise RuntimeError(f"no rtt line in ping output: {output.strip()[-200:]!r}")
    return float(match.group(2))


# ---------------------------------------------------------------- processes


@dataclass
class Server:
    """A background process we started (e.g. `iperf3 -s -1`), ended by PID."""

    proc: subprocess.Popen

    def stop(self, wait: float = 2.0) -> None:
        end_process(self.proc, wait)


def end_process(proc: subprocess.Popen, wait: float = 2.0) -> None:
    """Let a process we started exit on its own for `wait` s, then SIGTERM,
    then SIGKILL, all by its PID."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=wait)
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1.0)
            return


def run(
    argv: Sequence[str], timeout: float = 30.0, check: bool = True
) -> subprocess.CompletedProcess:
    """Run a command, bounded in time, capturing text output."""
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()}")
    return result


def wait_listening(netns_name: str, port: int, timeout: float = 3.0) -> None:
    """Wait until a TCP listener on `port` exists inside the namespace."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = run(["ip", "netns", "exec", netns_name, "ss", "-Hltn", f"sport = :{port}"], 5, False)
        if out.stdout.strip():
            return
        time.sleep(0.02)
    raise RuntimeError(f"no listener on port {port} in {netns_name} after {timeout} s")


def raise_fd_limit() -> None:
    """Mininet keeps a pty and pipes per node: lift this process's soft
    RLIMIT_NOFILE to its hard limit (process-local; no host-wide sysctl)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def children_matching(text: str) -> list[int]:
    """PIDs of this process's direct children whose command line contains text."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != me:
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def kill_pids(pids: Iterable[int], settle: float = 1.0) -> list[int]:
    """SIGKILL each PID (they are ours), reap them; returns those signalled."""
    killed = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    deadline = time.monotonic() + settle
    for pid in killed:
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            time.sleep(0.01)
    return killed


def cpu_idle_fraction(window: float = 0.25) -> float:
    """Fraction of CPU time idle over a short window (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return idle, sum(fields)

    idle1, total1 = sample()
    time.sleep(window)
    idle2, total2 = sample()
    return (idle2 - idle1) / max(1, total2 - total1)


def settle(minimum: float, maximum: float, idle: float = 0.7) -> float:
    """Pause between measurements: at least `minimum` s, then until the CPUs
    are mostly idle (the kernel tears namespaces down asynchronously) or
    `maximum` s; returns the seconds waited. Not part of any measurement."""
    start = time.monotonic()
    time.sleep(minimum)
    while time.monotonic() - start < maximum:
        if cpu_idle_fraction() >= idle:
            break
    return time.monotonic() - start
