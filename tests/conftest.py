"""Shared test setup.

Root-only tests carry the `root` mark. In CI (NETLAB_REQUIRE_ROOT_TESTS=1) a
root test may not be skipped: not being root is an error, and a skip inside a
root test is reported as a failure, so a green CI means the kernel tests ran.
A root test whose skip is legitimate on this kernel (e.g. netem is missing)
says so with the `may_skip` mark.
"""

import os
import sys
import threading
import traceback

import pytest


def _require_root() -> bool:
    return os.environ.get("NETLAB_REQUIRE_ROOT_TESTS") == "1"


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    root_items = [item for item in items if "root" in item.keywords]
    if root_items and _require_root():
        raise pytest.UsageError("NETLAB_REQUIRE_ROOT_TESTS=1 but not root: run the tests as root")
    for item in root_items:
        item.add_marker(pytest.mark.skip(reason="needs root (run `sudo make test`)"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (
        _require_root()
        and report.skipped
        and "root" in item.keywords
        and "may_skip" not in item.keywords
    ):
        report.outcome = "failed"
        report.longrepr = f"root test skipped while NETLAB_REQUIRE_ROOT_TESTS=1: {report.longrepr}"
    if report.when == "call" and report.failed and "root" in item.keywords:
        # a root test's lab runs in this process (its API, controllers, prober): what each
        # of its threads is doing when the test fails (a stalled API loop shows here)
        report.sections.append(("threads when it failed", _thread_stacks()))


def _thread_stacks() -> str:
    names = {t.ident: t.name for t in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        stack = "".join(traceback.format_stack(frame)[-8:])
        parts.append(f"--- {names.get(ident, ident)}\n{stack}")
    return "\n".join(parts)


def pytest_sessionfinish(session, exitstatus):
    """A parallel run's controller, once every worker is done: nothing of any test lab
    is left on the host (a serial run checks in tests/root/conftest.py)."""
    config = session.config
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return
    if os.geteuid() != 0:
        return
    from tests.root.leftovers import all_leftovers

    left = all_leftovers()
    if left:
        print(f"\ntest labs left these behind: {left[:10]}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
