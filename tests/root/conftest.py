"""Fixtures for the root tests: real labs on the real kernel.

Every root test also checks that the host's own interfaces and routes are
the same after it as before it, and that nothing of a test lab is left.
"""

from __future__ import annotations

import hashlib
import subprocess
import time

import pytest

from netlab.lab import Lab
from netlab.spec import LabBuilder
from tests.root.leftovers import all_leftovers, leftovers

pytestmark = pytest.mark.root


def host_network() -> tuple[str, str]:
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    # counters and operstate of the host's own links may change; names and flags must not
    names = sorted(line.split(":")[1].strip() for line in links.splitlines())
    routes = subprocess.run(
        ["ip", "route", "show", "table", "all"], capture_output=True, text=True
    ).stdout
    return "\n".join(names), routes


def lab_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith("nl-t")]


def wait_for(predicate, timeout: float, interval: float = 0.02) -> bool:
    """Poll until predicate() is true or timeout passes; the last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@pytest.fixture(autouse=True)
def host_unchanged():
    before = host_network()
    yield
    assert host_network() == before, "a test changed the host's interfaces or routes"


@pytest.fixture(autouse=True, scope="session")
def nothing_left_behind(request):
    """After the whole run: no test lab's run directory, mount, cgroup or loop device.
    In a parallel run, each worker's labs are others' to see: the controller checks
    once every worker is done (tests/conftest.py, pytest_sessionfinish)."""
    yield
    if hasattr(request.config, "workerinput"):
        return
    left = all_leftovers()
    assert not left, f"test labs left these behind: {left[:10]}"


def two_rack_builder(name: str, **overlay) -> LabBuilder:
    """2 racks x 2 nodes; pods pinned so tests know where they are."""
    b = LabBuilder(name, **overlay)
    b.add_rack("rack1", "192.168.1.0/24")
    b.add_rack("rack2", "192.168.2.0/24")
    for node, rack in (("n1", "rack1"), ("n2", "rack1"), ("n3", "rack2"), ("n4", "rack2")):
        b.add_node(node, rack=rack)
    b.add_pod("a", command=["sleep", "infinity"], node_name="n1")
    b.add_pod("b", command=["sleep", "infinity"], node_name="n3")
    b.add_pod("c", command=["sleep", "infinity"], node_name="n2")
    return b


def module_lab_name(request, stem: str = "tlab") -> str:
    """A lab name of this test module's own (`tlab-1a2b`): modules sharing a fixture
    may run at once, in parallel workers."""
    digest = hashlib.sha256(request.module.__name__.encode()).hexdigest()[:4]
    return f"{stem}-{digest}"


@pytest.fixture(scope="module")
def lab(request):
    name = module_lab_name(request)
    b = two_rack_builder(name)
    b.add_deployment(
        "web", replicas=3, command=["python3", "-m", "http.server", "8080"], ports=[8080]
    )
    with Lab(b.build()) as running:
        yield running
    assert not [n for n in lab_namespaces() if n == f"nl-{name}" or n.startswith(f"nl-{name}.")]
    assert not leftovers(name)
