"""Logs across a real lab: the demo's client -> frontend -> web chain, one request id
found in the logs of pods on different racks by `netlab logs --all --grep`, --since,
-l app=web, and -f picking up new lines and a replacement pod."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from netlab import cli
from netlab.client import LabClient
from netlab.lab import Lab
from netlab.objects import RACK_ANNOTATION
from netlab.spec import parse_lab
from tests.root.conftest import lab_namespaces, wait_for

pytestmark = pytest.mark.root

NAME = "tlogs"
DEMO = Path(__file__).resolve().parents[2] / "topologies" / "demo.yaml"
PREFIX = re.compile(r"^\[pod/(?P<pod>[^/]+)/(?P<container>\S+) (?P<node>\S+)\] ")


@pytest.fixture(scope="module")
def lab():
    text = DEMO.read_text().replace("name: demo", f"name: {NAME}", 1)
    with Lab(parse_lab(text, f"{NAME}.yaml")) as running:
        running.wait_endpoints("default", "web", count=3)
        running.wait_endpoints("default", "frontend", count=1)
        yield running
    assert not [n for n in lab_namespaces() if n.startswith(f"nl-{NAME}")]


def request(lab: Lab, request_id: str) -> list[list[str]]:
    """curl http://frontend/ from the client pod: the answer's lines, split
    (`<pod> <pod IP> <node> <path>`: the frontend's, then the web pod's)."""
    result = lab.exec(
        "client",
        ["curl", "-sS", "--max-time", "5", "-H", f"x-request-id: {request_id}", "http://frontend/"],
    )
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert len(lines) == 2 and all(len(line) == 4 for line in lines), result.stdout
    return lines


def netlab_logs(capsys, *args: str) -> list[str]:
    capsys.readouterr()
    assert cli.main(["--lab", NAME, "logs", *args]) == 0
    return capsys.readouterr().out.splitlines()


def test_one_request_id_in_the_logs_of_pods_on_two_racks(lab, capsys):
    client = LabClient(lab.run_dir / "api.sock")
    rack_of = {
        n["metadata"]["name"]: n["metadata"]["annotations"][RACK_ANNOTATION]
        for n in client.list("nodes")["items"]
    }
    for _ in range(12):  # round-robin over 3 web pods: soon one on another rack
        request_id = str(uuid.uuid4())
        front, web = request(lab, request_id)
        if rack_of[front[2]] != rack_of[web[2]]:
            break
    else:
        pytest.fail("no web pod on a rack other than the frontend's answered")
    expected = {(front[0], "frontend", front[2]), (web[0], "web", web[2])}

    def found() -> set:
        lines = netlab_logs(capsys, "--all", "--grep", request_id)
        assert all(request_id in line for line in lines)
        return {
            (m["pod"], m["container"], m["node"]) for line in lines if (m := PREFIX.match(line))
        }

    assert wait_for(lambda: expected <= found(), 5.0, interval=0.2), found()
    lines = netlab_logs(capsys, "--all", "--grep", request_id)
    frontend_lines = [line for line in lines if line.startswith(f"[pod/{front[0]}/")]
    assert any("upstream http://web/ ok" in line for line in frontend_lines), lines
    assert any('"GET / HTTP/1.1" 200' in line for line in frontend_lines), lines


def test_since_leaves_older_lines_out(lab, capsys):
    old, new = str(uuid.uuid4()), str(uuid.uuid4())
    request(lab, old)
    assert wait_for(lambda: any(old in x for x in netlab_logs(capsys, "--all")), 5.0, 0.2)
    time.sleep(3.0)
    request(lab, new)
    assert wait_for(lambda: any(new in x for x in netlab_logs(capsys, "--all")), 5.0, 0.2)
    recent = "\n".join(netlab_logs(capsys, "--all", "--since", "2s"))
    assert new in recent and old not in recent
    everything = "\n".join(netlab_logs(capsys, "--all", "--since", "1h"))
    assert new in everything and old in everything


def test_selector_picks_only_web_pods_in_time_order(lab, capsys):
    request(lab, str(uuid.uuid4()))
    lines = netlab_logs(capsys, "-l", "app=web", "--timestamps")
    assert lines
    matches = [PREFIX.match(line) for line in lines]
    assert all(m and m["pod"].startswith("web-") and m["container"] == "web" for m in matches)
    stamps = [line[matches[i].end() :].split(" ", 1)[0] for i, line in enumerate(lines)]
    assert stamps == sorted(stamps)  # fixed-width RFC3339Nano sorts as text
    one = sorted(p.name for p in lab.pod_list() if p.owner == "web")[0]
    assert not PREFIX.match(netlab_logs(capsys, one)[0])  # one pod: as before, no prefix


def test_follow_picks_up_new_lines_and_a_replacement_pod(lab):
    proc = subprocess.Popen(
        [sys.executable, "-m", "netlab.cli", "--lab", NAME, "logs", "-l", "app=web", "-f"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},  # SIGABRT: every thread's stack
    )
    lines: list[str] = []

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        time.sleep(1.0)  # following; the backlog printed
        request_id = str(uuid.uuid4())
        request(lab, request_id)
        assert wait_for(lambda: any(request_id in x for x in lines), 5.0, 0.1), lines[-5:]
        before = {p.name for p in lab.pod_list() if p.owner == "web"}
        lab.delete_pod(sorted(before)[0])
        lab.wait_endpoints("default", "web", count=3)
        new_pods = {p.name for p in lab.pod_list() if p.owner == "web"} - before
        assert len(new_pods) == 1

        def from_a_new_pod() -> bool:
            request(lab, str(uuid.uuid4()))
            return any((m := PREFIX.match(x)) and m["pod"] in new_pods for x in lines)

        # any line of the replacement (it logs every request it answers)
        assert wait_for(from_a_new_pod, 10.0, 0.3), lines[-5:]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:  # say where it hangs
            proc.send_signal(signal.SIGABRT)
            proc.wait(5)
            raise AssertionError(f"no exit after SIGINT: {proc.stderr.read()[-4000:]}") from None
        finally:
            if proc.poll() is None:
                proc.kill()
    reader.join(5)
    stderr = proc.stderr.read()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
