"""The control-plane verbs through the real `netlab` command against a supervised lab."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.root.conftest import lab_namespaces, wait_for
from tests.root.test_cli import LAB, netlab

pytestmark = pytest.mark.root
NAME = "tcctl"


def rows(*args: str) -> dict[str, list[str]]:
    out = netlab("--lab", NAME, *args).stdout.splitlines()[1:]
    return {line.split()[0]: line.split() for line in out}


def test_scale_rollout_watch_nodes_through_the_cli(tmp_path):
    path = tmp_path / f"{NAME}.yaml"
    path.write_text(LAB.format(name=NAME))
    netlab("up", "-d", str(path))
    try:
        assert (
            "scaled" in netlab("--lab", NAME, "scale", "deployment/web", "--replicas", "3").stdout
        )
        status = netlab("--lab", NAME, "rollout", "status", "deployment/web", "--timeout", "20")
        assert 'deployment "web" successfully rolled out' in status.stdout
        assert "1 " in netlab("--lab", NAME, "rollout", "history", "deployment/web").stdout
        undo = netlab("--lab", NAME, "rollout", "undo", "deployment/web", check=False)
        assert undo.returncode != 0 and "no previous revision" in undo.stderr
        # get -w: the table, then a line per change
        watch = subprocess.Popen(
            [sys.executable, "-m", "netlab.cli", "--lab", NAME, "get", "pods", "-w"],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)
        victim = next(n for n in rows("get", "pods") if n.startswith("web-"))
        netlab("--lab", NAME, "delete", "pod", victim)
        assert wait_for(
            lambda: len([n for n in rows("get", "pods") if n.startswith("web-")]) == 3, 10
        )
        time.sleep(0.5)
        watch.terminate()
        seen = watch.communicate(timeout=5)[0]
        assert seen.splitlines()[0].split()[:3] == ["NAME", "READY", "STATUS"]
        assert f"{victim}" in seen and "(deleted)" in seen
        # nodes: cordon, then fail and recover one, then drain another
        netlab("--lab", NAME, "cordon", "n1")
        assert rows("get", "nodes")["n1"][1] == "Ready,SchedulingDisabled"
        netlab("--lab", NAME, "uncordon", "n1")
        assert rows("get", "nodes")["n1"][1] == "Ready"
        netlab("--lab", NAME, "node", "fail", "n3")
        assert wait_for(lambda: rows("get", "nodes")["n3"][1] == "NotReady", 5, 0.2)
        netlab("--lab", NAME, "node", "recover", "n3")
        assert wait_for(lambda: rows("get", "nodes")["n3"][1] == "Ready", 5, 0.2)
        drained = netlab("--lab", NAME, "drain", "n2").stdout
        assert "node/n2 drained" in drained
        wide = netlab("--lab", NAME, "get", "pods", "-o", "wide").stdout
        assert wait_for(
            lambda: all(
                line.split()[6] != "n2"
                for line in netlab("--lab", NAME, "get", "pods", "-o", "wide").stdout.splitlines()[
                    1:
                ]
                if line.startswith("web-")
            ),
            10,
        ), wide
        bad = netlab("--lab", NAME, "node", "fail", "n9", check=False)
        assert bad.returncode != 0 and "n9" in bad.stderr
    finally:
        netlab("down", "--lab", NAME)
    assert not [n for n in lab_namespaces() if n.startswith(f"nl-{NAME}")]
