"""`netlab capture` on a real lab: packet sockets in the lab's namespaces,
pcapng that tshark reads, bounded by count, ended by SIGINT, streamed to a
pipe; and `netlab inspect` on those captures, checked against tshark."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time

import pytest

from netlab.capture.addressbook import AddressBook
from netlab.lab import Lab
from tests.root.conftest import lab_namespaces, two_rack_builder

pytestmark = pytest.mark.root

NAME = "tcap"
ECHO = [sys.executable, "-m", "netlab.apps.echo", "8080"]


@pytest.fixture(scope="module")
def clab():
    b = two_rack_builder(NAME)
    b.add_pod("web", command=ECHO, node_name="n3", ports=[8080], labels={"app": "web"})
    b.add_service("web", ports=[{"port": 80, "targetPort": 8080}], selector={"app": "web"})
    with Lab(b.build()) as running:
        running.wait_endpoints("default", "web", count=1)
        yield running
    assert not [n for n in lab_namespaces() if n.startswith(f"nl-{NAME}")]


def netlab(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "netlab.cli", "--lab", NAME, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


class Background:
    """`netlab capture ...` running in the background until it says it listens."""

    def __init__(self, *args: str, stdout=subprocess.DEVNULL):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "netlab.cli", "--lab", NAME, "capture", *args],
            stdout=stdout,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        line = self.proc.stderr.readline().decode()
        assert line.startswith("capturing on"), line + self.proc.stderr.read().decode()
        self.listening = line

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10) -> str:
        """End it by its PID; its remaining stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout)
        rest = self.proc.stderr.read().decode()
        self.proc.stderr.close()
        assert self.proc.returncode == 0, rest
        return rest


def tshark(*args: str, stdin=None) -> str:
    result = subprocess.run(
        ["tshark", "-n", *args], capture_output=True, text=True, timeout=60, stdin=stdin
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def curl(lab: Lab, url: str, *headers: str) -> str:
    argv = ["curl", "-s", "--max-time", "5"]
    for header in headers:
        argv += ["-H", header]
    result = lab.exec("a", [*argv, url], timeout=20)
    assert result.returncode == 0, result.stderr
    return result.stdout


def web_ip(lab: Lab) -> str:
    return str(lab.pod("web").address.ip)


@contextlib.contextmanager
def pinging(lab: Lab):
    """Pod a pings the web pod every 50 ms (bounded: 60 pings) while the body runs."""
    pinger = subprocess.Popen(
        ["ip", "netns", "exec", lab.pod("a").netns, "ping", "-i", "0.05", "-c", "60", web_ip(lab)],
        stdout=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        pinger.kill()
        pinger.wait()


def test_count_stops_by_itself_with_exactly_that_many_packets(clab, tmp_path):
    out = tmp_path / "ten.pcapng"
    with pinging(clab):
        result = netlab("capture", "pod/a", "-c", "10", "-q", "-w", str(out), "--duration", "20")
    assert "stopped by count" in result.stderr
    frames = tshark("-r", str(out), "-T", "fields", "-e", "frame.interface_name").split()
    assert frames == ["pod/a:eth0"] * 10
    book = AddressBook.load(AddressBook.beside(out))
    assert book.label(web_ip(clab)) == "web" and book.lookup("192.168.1.1").kind == "router"


def test_sigint_leaves_a_valid_file(clab, tmp_path):
    out = tmp_path / "int.pcapng"
    capture = Background("node/n1", "-i", "eth0,flannel.1", "-q", "-w", str(out))
    curl(clab, f"http://{web_ip(clab)}:8080/one")
    time.sleep(0.2)
    rest = capture.stop(signal.SIGINT)
    assert "stopped by signal" in rest
    names = set(tshark("-r", str(out), "-T", "fields", "-e", "frame.interface_name").split())
    assert names == {"node/n1:eth0", "node/n1:flannel.1"}


def test_all_streams_pcapng_that_tshark_decodes_while_capturing(clab):
    capture = Background("all", "-q", "-w", "-", "-f", "udp port 8472", stdout=subprocess.PIPE)
    reader = subprocess.Popen(
        [
            "tshark",
            "-n",
            "-l",
            "-r",
            "-",
            "-d",
            "udp.port==8472,vxlan",
            "-T",
            "fields",
            "-e",
            "frame.interface_name",
            "-e",
            "ip.src",
        ],  # fmt: skip
        stdin=capture.proc.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    capture.proc.stdout.close()  # the reader owns the pipe now
    try:
        for i in range(5):
            curl(clab, f"http://{web_ip(clab)}:8080/stream{i}")
        time.sleep(0.3)
    finally:
        capture.stop(signal.SIGINT)
    out, err = reader.communicate(timeout=30)
    assert reader.returncode == 0, err
    seen = {line.split("\t")[0] for line in out.splitlines() if line}
    # a cross-rack request crosses n1's uplink, both router ports and n3's uplink
    assert {"node/n1:eth0", "node/n3:eth0", "router/spine:eth0", "router/spine:eth1"} <= seen, seen


def test_bad_targets_fail_before_anything_is_written(clab, tmp_path):
    out = tmp_path / "never.pcapng"
    for args, message in (
        (["pod/nope"], 'pod "nope" not found'),
        (["node/n1", "-i", "bogus0"], "no interface bogus0"),
        (["router/spine", "-i", "eth9"], "has no port eth9"),
        (["gizmo/x"], "unknown kind"),
        (["pod/a", "-f", "udp prt 53"], "capture filter"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "netlab.cli", "--lab", NAME, "capture", *args, "-w", str(out)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert not out.exists() and not AddressBook.beside(out).exists()


def test_list_and_stop_by_pid(clab, tmp_path):
    out = tmp_path / "listed.pcapng"
    capture = Background("rack/rack1", "-q", "-w", str(out))
    listing = netlab("capture", "--list").stdout
    assert str(capture.proc.pid) in listing and "rack/rack1:rack1" in listing
    netlab("capture", "--stop", str(capture.proc.pid))
    capture.proc.wait(10)
    capture.stop()
    assert "no captures running" in netlab("capture", "--list").stdout
    tshark("-r", str(out))  # valid


def test_rack_capture_sees_forwarded_frames_and_leaves_no_promiscuity(clab, tmp_path):
    out = tmp_path / "rack.pcapng"
    capture = Background("rack/rack2", "-q", "-w", str(out), "-f", "udp port 8472")
    curl(clab, f"http://{web_ip(clab)}:8080/rack")
    time.sleep(0.2)
    capture.stop()
    assert len(tshark("-r", str(out)).splitlines()) >= 2
    flags = clab_link_flags(clab, "rack2")
    assert "PROMISC" not in flags, flags


def clab_link_flags(lab: Lab, ifname: str) -> str:
    return subprocess.run(
        ["ip", "-n", lab.plan.netns, "link", "show", ifname], capture_output=True, text=True
    ).stdout.split(">")[0]


def test_a_capture_ends_by_itself_when_its_lab_goes_down(tmp_path):
    from netlab.spec import LabBuilder

    b = LabBuilder("tcapgo")
    b.add_rack("rack1", "192.168.1.0/24")
    b.add_node("n1", rack="rack1")
    b.add_pod("p", command=["sleep", "infinity"], node_name="n1")
    out = tmp_path / "gone.pcapng"
    with Lab(b.build()):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "netlab.cli",
                "--lab",
                "tcapgo",
                "capture",
                "pod/p",
                "rack/rack1",
                "-q",
                "-w",
                str(out),
            ],  # fmt: skip
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr.readline().startswith("capturing on")
    rest = proc.stderr.read()
    assert proc.wait(10) == 0 and "stopped by the lab going down" in rest, rest
    tshark("-r", str(out))
    assert not [n for n in lab_namespaces() if n.startswith("nl-tcapgo")]


TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def inspect(*args: str) -> subprocess.CompletedProcess:
    return netlab("inspect", *args)


def test_cross_rack_http_on_the_router_is_named_and_agrees_with_tshark(clab, tmp_path):
    out = tmp_path / "router.pcapng"
    capture = Background("router/spine", "-i", "eth0", "-q", "-f", "udp port 8472", "-w", str(out))
    body = curl(
        clab,
        f"http://{web_ip(clab)}:8080/traced",
        f"traceparent: 00-{TRACE}-00f067aa0ba902b7-01",
    )
    assert body.startswith("web ")
    time.sleep(0.2)
    capture.stop()
    text = inspect(str(out)).stdout
    request = next(line for line in text.splitlines() if "GET /traced" in line)
    for part in ("router/spine:eth0", "node/n1", "node/n3", "VNI 1", "a:", "web:8080", TRACE):
        assert part in request, request
    assert any("200" in line and "HTTP" in line for line in text.splitlines()), text
    packets = json.loads(inspect(str(out), "-o", "json").stdout)
    ours = [(p["src"], p["dst"]) for p in packets]
    fields = tshark(
        "-r", str(out), "-d", "udp.port==8472,vxlan", "-T", "fields", "-e", "ip.src", "-e", "ip.dst"
    )
    theirs = [tuple(col.split(",")[-1] for col in line.split("\t")) for line in fields.splitlines()]
    assert ours == theirs and len(ours) >= 6  # handshake, request, response, close
    assert {p["outer"]["vni"] for p in packets} == {1}
    assert {p["src_name"] for p in packets} == {"a", "web"}


def test_a_dns_lookup_on_a_pod_shows_the_question_and_named_answers(clab, tmp_path):
    out = tmp_path / "dns.pcapng"
    capture = Background("pod/a", "-q", "-f", "udp port 53", "-w", str(out))
    result = clab.exec("a", ["getent", "hosts", "web"], timeout=20)
    assert result.returncode == 0, result.stderr
    time.sleep(0.2)
    capture.stop()
    vip = str(clab.service_vip("web"))
    text = inspect(str(out), "--filter", "dns").stdout
    answer = next(line for line in text.splitlines() if vip in line)
    assert "web.default.svc.cluster.local" in answer and "svc/web" in answer, text
    assert "svc/kube-system/kube-dns" in text and "a:" in text, text
    packets = json.loads(inspect(str(out), "--filter", "dns", "-o", "json").stdout)
    assert any(p["dns"] and p["dns"].get("answers") for p in packets)


def test_a_truncated_capture_is_reported_and_the_rest_read(clab, tmp_path):
    out = tmp_path / "cut.pcapng"
    capture = Background("pod/a", "-q", "-w", str(out))
    curl(clab, f"http://{web_ip(clab)}:8080/cut")
    time.sleep(0.2)
    capture.stop()
    whole = len(json.loads(inspect(str(out), "-o", "json").stdout))
    data = out.read_bytes()
    out.write_bytes(data[: len(data) - 30])  # the last packet's block is cut short
    result = inspect(str(out), "-o", "json")
    assert "truncated" in result.stderr and "warning" in result.stderr, result.stderr
    assert len(json.loads(result.stdout)) == whole - 1


def test_follow_trace_lines_up_one_request_captured_on_two_racks(clab, tmp_path):
    first, second = tmp_path / "n1.pcapng", tmp_path / "n3.pcapng"
    one = Background("node/n1", "-q", "-w", str(first))
    two = Background("node/n3", "-q", "-w", str(second))
    curl(clab, f"http://{web_ip(clab)}:8080/other")
    curl(
        clab,
        f"http://{web_ip(clab)}:8080/followed",
        f"traceparent: 00-{TRACE}-00f067aa0ba902b7-01",
    )
    time.sleep(0.2)
    one.stop()
    two.stop()
    text = inspect("--follow-trace", TRACE, str(first), str(second)).stdout
    assert "node/n1:eth0" in text and "node/n3:eth0" in text, text
    assert "/followed" in text and "/other" not in text
    stamps = [p["ts"] for p in json.loads(
        inspect("--follow-trace", TRACE, str(first), str(second), "-o", "json").stdout
    )]  # fmt: skip
    assert stamps == sorted(stamps) and len(stamps) >= 12  # each packet seen on both nodes


def test_live_lines_name_what_they_show(clab):
    with pinging(clab):
        result = netlab("capture", "pod/a", "-c", "4", "-f", "icmp", "--duration", "20")
    lines = result.stdout.splitlines()
    assert len(lines) == 5 and "INTERFACE" in lines[0], result.stdout  # a header, 4 packets
    for line in lines[1:]:
        assert "pod/a:eth0" in line and "ICMP" in line and "echo" in line, line
        ends = line.split()[4:7]  # SOURCE -> DESTINATION
        assert ends in (["a", "->", "web"], ["web", "->", "a"]), line
