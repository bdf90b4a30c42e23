"""Apply nft scripts (from `netlab.plan.proxy`) inside a node's network namespace.

`nft` is started from a thread that has stepped into the namespace with
setns(2): the child inherits that thread's namespace, so there is no shell,
no `ip netns exec` and no `nsenter` exec, and no preexec_fn (unsafe with
threads). The host's own ruleset is never read or written: every call names
a namespace path, and every script stays inside the table `ip netlab`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from netlab.errors import RealizeError
from netlab.plan.proxy import FAMILY, TABLE
from netlab.realize import netns

NFT = "nft"
TIMEOUT = 30.0  # seconds; a script of thousands of Service ports takes well under one


class ApplyFailures(RealizeError):
    """nft refused a script in some namespaces. Each transaction is atomic, so
    those namespaces still hold their previous ruleset; the others are updated."""

    def __init__(self, failures: dict[str, str]):
        self.failures = dict(failures)
        lines = [f"  {path}: {error}" for path, error in sorted(self.failures.items())]
        super().__init__(f"nft failed in {len(lines)} namespace(s):\n" + "\n".join(lines))


def _run_nft(netns_path: str | os.PathLike, args: list[str], stdin: str | None) -> str:
    """Run `nft <args>` in the namespace; its stdout, or RealizeError with its stderr."""
    path = os.fspath(netns_path)
    if not os.path.exists(path):
        raise RealizeError(f"nft: no network namespace at {path}")
    try:
        with netns.entered(path):
            result = subprocess.run(
                [NFT, *args],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                check=False,
            )
    except FileNotFoundError as exc:
        raise RealizeError("nft is not installed: apt-get install nftables") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RealizeError(f"nft {' '.join(args)} in {path}: {exc}") from exc
    if result.returncode != 0:
        raise RealizeError(f"nft {' '.join(args)} in {path}: {result.stderr.strip()}")
    return result.stdout


def apply(netns_path: str | os.PathLike, script: str) -> None:
    """Apply one nft transaction (the whole script or nothing) in the namespace.
    An empty script starts nothing."""
    if script:
        _run_nft(netns_path, ["-f", "-"], script)


def listing(netns_path: str | os.PathLike) -> str:
    """`nft list table ip netlab` in the namespace ('' when there is no table)."""
    try:
        return _run_nft(netns_path, ["list", "table", FAMILY, TABLE], None)
    except RealizeError as exc:
        if "No such file or directory" in str(exc):
            return ""
        raise


def apply_each(scripts: dict[str, str], workers: int = 4) -> None:
    """Apply a script of its own in each namespace (path -> script), in parallel;
    RealizeError naming every namespace where nft refused."""
    failures: dict[str, str] = {}

    def one(item: tuple[str, str]) -> None:
        try:
            apply(*item)
        except RealizeError as exc:
            failures[item[0]] = str(exc)

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(scripts)))) as pool:
        list(pool.map(one, scripts.items()))
    if failures:
        raise ApplyFailures(failures)


def apply_many(paths: Iterable[str | os.PathLike], script: str, workers: int = 4) -> None:
    """Apply the same script in many namespaces, in parallel threads. Every
    namespace is tried; ApplyFailures names those where nft refused."""
    paths = [os.fspath(p) for p in paths]
    if not script or not paths:
        return
    failures: dict[str, str] = {}

    def one(path: str) -> None:
        try:
            apply(path, script)
        except RealizeError as exc:
            failures[path] = str(exc)

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(paths)))) as pool:
        list(pool.map(one, paths))
    if failures:
        raise ApplyFailures(failures)
