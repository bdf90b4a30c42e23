"""`netlab inspect` end to end: filters, views, JSON, follow-trace, warnings."""

from __future__ import annotations

import argparse
import io
import json

import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether

from netlab.capture.addressbook import AddressBook
from netlab.errors import NetlabError
from netlab.inspect import command, filters
from tests.unit.test_inspect_fixtures import (
    CLIENT,
    T0,
    TRACE_1,
    TRACE_2,
    WEB,
    book,
    connection,
    lab_packets,
    write,
)


def inspect(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    command.configure_parser(parser)
    args = parser.parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    status = command.run(args, out, err)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def lab(tmp_path):
    return write(tmp_path / "lab.pcapng", lab_packets())


def test_text_view(lab):
    status, out, err = inspect(str(lab.path))
    lines = out.splitlines()
    assert status == 0 and err == ""
    assert lines[0].split() == [
        "NO.",
        "TIME",
        "INTERFACE",
        "UNDERLAY",
        "SOURCE",
        "DESTINATION",
        "PROTO",
        "SUMMARY",
    ]
    assert len(lines) == 1 + len(lab.frames)
    assert "node/n1 > node/n3 VNI 1" in lines[3] and "client-0:40000" in lines[3]
    assert lines[3].index("client-0") == lines[4].index("web-7f9c-abcde")  # aligned columns
    assert lines[6].endswith(f"GET /hello host=web trace={TRACE_1} request-id=req-1")


def test_json_view(lab):
    status, out, _ = inspect(str(lab.path), "-o", "json", "-n", "3")
    packets = json.loads(out)
    assert status == 0 and len(packets) == 3
    assert packets[0]["protocol"] == "dns" and packets[0]["outer"]["dst_name"] == "node/n2"
    assert packets[2]["tcp_flags"] == "S" and packets[2]["time"] == pytest.approx(2e-6)
    assert set(packets[0]) >= {
        "file",
        "number",
        "ts",
        "interface",
        "src_name",
        "dst_name",
        "summary",
    }


def test_flows_views(lab):
    status, out, _ = inspect(str(lab.path), "--flows", "-o", "json")
    doc = json.loads(out)
    assert status == 0 and doc["packets"] == len(lab.frames)
    assert {"flows", "ip_conversations", "problems", "files"} <= set(doc)
    web = next(f for f in doc["flows"] if f["client_port"] == 40000)
    assert (web["server_name"], web["service"], web["overlay"], web["cross_rack"]) == (
        "web-7f9c-abcde",
        "svc/web",
        True,
        True,
    )
    status, out, _ = inspect(str(lab.path), "--flows", "--filter", "proto=tcp")
    assert "svc/web" in out and "DNS" not in out and "2 flows" in out
    assert "VXLAN VNI 1 node/n1 > node/n3 (cross-rack)" in out


def test_missing_book_said_once(lab):
    AddressBook.beside(lab.path).unlink()
    status, out, err = inspect(str(lab.path), str(lab.path), "-n", "1")
    assert status == 0 and err.count("names are unavailable") == 1
    assert "--names" in err and CLIENT in out
    status, out, err = inspect(str(lab.path), "--names", str(_book_file(lab.path)), "-n", "3")
    assert err == "" and "client-0" in out


def _book_file(capture):
    path = capture.parent / "book.json"
    book().save(path)
    return path


def test_truncated_file_warns_and_succeeds(lab):
    data = lab.path.read_bytes()
    lab.path.write_bytes(data[: len(data) - 30])
    status, out, err = inspect(str(lab.path))
    assert status == 0
    assert err.startswith(
        f"netlab: warning: {lab.path}: truncated after packet {len(lab.frames) - 1} at byte "
    )
    assert len(out.splitlines()) == len(lab.frames)  # header + all but the cut one


def test_nothing_readable_fails(tmp_path, lab):
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(lab.path.read_bytes()[:100])
    status, _, err = inspect(str(cut), "--flows")
    assert status == 1 and "netlab: warning:" in err


@pytest.mark.parametrize(
    "expr, wanted",
    [
        ("pod=client-0", 16),
        ("pod=default/web-7f9c-abcde", 14),
        (f"pod={WEB}", 14),
        ("service=web", 12),
        ("service=kube-system/kube-dns", 2),
        ("node=n2", 4),  # the DNS exchange to its pod, the ARP to its address
        ("node=n3", 14),
        ("dns", 2),
        ("http", 4),
        ("proto=icmp", 2),
        ("proto=arp", 2),
        ("port=53", 2),
        (f"trace={TRACE_1}", 6),
        ("trace=req-2", 6),
        ("trace=nope", 0),
    ],
)
def test_filters(lab, expr, wanted):
    status, out, _ = inspect(str(lab.path), "--filter", expr, "-o", "json")
    assert status == 0 and len(json.loads(out)) == wanted


def test_filters_are_anded(lab):
    _, out, _ = inspect(str(lab.path), "--filter", "pod=client-0", "--filter", "http", "-o", "json")
    assert [p["summary"][:3] for p in json.loads(out)] == ["GET", "200", "GET", "200"]


@pytest.mark.parametrize("expr", ["colour=red", "pod", "port=http", "proto=sctp", "dnsx"])
def test_unknown_filter(expr):
    with pytest.raises(NetlabError) as caught:
        filters.parse([expr], book())
    assert "valid filters: pod=NAME, service=NAME, node=NAME, trace=ID, dns, http" in str(
        caught.value
    )


def test_unknown_name_lists_known():
    with pytest.raises(NetlabError, match="no pod 'db-0' in the address book .known: client-0"):
        filters.parse(["pod=db-0"], book())
    with pytest.raises(NetlabError, match="names are unavailable"):
        filters.parse(["service=web"], AddressBook.empty())


def test_follow_trace_across_files(tmp_path):
    """One connection seen on n1's eth0 (VXLAN) and inside the server pod
    (plain), plus another trace in each: merged by time, tagged by file."""
    a = write(tmp_path / "n1.pcapng", lab_packets())
    pod_side = [
        ("pod/web-7f9c-abcde:eth0", Ether() / p) for p in connection(40000, TRACE_1, "req-1")
    ]
    pod_side += [
        ("pod/web-7f9c-abcde:eth0", Ether() / p) for p in connection(40001, TRACE_2, "req-2")
    ]
    b = write(tmp_path / "web.pcapng", pod_side, start=T0 + 2500, step=1000)
    status, out, _ = inspect("--follow-trace", TRACE_1, str(a.path), str(b.path), "-o", "json")
    packets = json.loads(out)
    assert status == 0 and len(packets) == 12
    assert [p["ts_ns"] for p in packets] == sorted(p["ts_ns"] for p in packets)
    assert {p["file"] for p in packets} == {str(a.path), str(b.path)}
    assert {p["sport"] for p in packets} | {p["dport"] for p in packets} == {40000, 8080}
    status, out, _ = inspect("--follow-trace", TRACE_1, str(a.path), str(b.path))
    lines = out.splitlines()
    assert "FILE" in lines[0] and len(lines) == 13
    assert "pod/web-7f9c-abcde:eth0" in out and "node/n1:eth0" in out


def test_follow_trace_needs_packets_view(lab):
    with pytest.raises(NetlabError, match="drop --flows"):
        inspect("--follow-trace", TRACE_1, "--flows", str(lab.path))


def test_not_a_capture(tmp_path):
    junk = tmp_path / "junk.txt"
    junk.write_text("hello")
    with pytest.raises(NetlabError, match="not a pcap or pcapng file"):
        inspect(str(junk))


def test_ip_only_book_entry_kinds(lab):
    # a VIP in the book names a packet sent to it (before any DNAT)
    write_vip = [("e", Ether() / IP(src=CLIENT, dst="10.96.0.20") / b"x")]
    capture = write(lab.path.parent / "vip.pcapng", write_vip)
    _, out, _ = inspect(str(capture.path))
    assert "svc/web" in out
