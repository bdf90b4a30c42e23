"""Logs across the lab, without root: the CRI record format, the container output
writer, the log API's since/timestamps, and `netlab logs` over a real API socket."""

from __future__ import annotations

import argparse
import http.client
import io
import subprocess
import sys
import threading
import time
from http.server import ThreadingHTTPServer

import pytest

from netlab import crilog
from netlab import logs as lab_logs
from netlab.apps import echo
from netlab.errors import ApiError, NetlabError
from netlab.realize.processes import OutputWriter
from tests.unit.test_api import Lab, in_thread

T0 = crilog.parse_time("2026-11-28T12:00:00Z")
SECOND = 1_000_000_000


# -- the record format ------------------------------------------------------------


@pytest.mark.parametrize(
    "text, ns",
    [
        ("2026-11-28T12:00:00Z", T0),
        ("2026-11-28T12:00:00.123456789Z", T0 + 123456789),
        ("2026-11-28T12:00:00.5Z", T0 + SECOND // 2),
        ("2026-11-28T12:00:00.1234567891234Z", T0 + 123456789),  # beyond ns: cut
        ("2026-11-28T13:00:00+01:00", T0),
        ("2026-11-28T11:30:00-00:30", T0),
        ("2026-11-28t12:00:00z", T0),
        ("1970-01-01T00:00:00Z", 0),
    ],
)
def test_parse_time(text, ns):
    assert crilog.parse_time(text) == ns
    assert crilog.parse_time(text.encode()) == ns


@pytest.mark.parametrize(
    "text", ["", "yesterday", "2026-11-28", "2026-11-28T12:00:00", "2026-13-01T00:00:00Z"]
)
def test_parse_time_refuses(text):
    with pytest.raises(ValueError):
        crilog.parse_time(text)


@pytest.mark.parametrize(
    "ns, text",
    [
        (T0, "2026-11-28T12:00:00.000000000Z"),
        (T0 + 1, "2026-11-28T12:00:00.000000001Z"),
        (T0 + 123456789, "2026-11-28T12:00:00.123456789Z"),
    ],
)
def test_format_time_is_fixed_width_rfc3339nano(ns, text):
    assert crilog.format_time(ns) == text
    assert crilog.parse_time(text) == ns


STAMP = b"2026-11-28T12:00:00.000000000Z"


@pytest.mark.parametrize(
    "pending, data, flush, records, rest",
    [
        (b"", b"a\nb\n", False, [b"F a", b"F b"], b""),
        (b"", b"a\nb", False, [b"F a"], b"b"),  # b waits for its newline
        (b"b", b"c\n", False, [b"F bc"], b""),
        (b"", b"a\nb", True, [b"F a", b"P b"], b""),  # end of file: b as it is
        (b"", b"\n", False, [b"F "], b""),
        (b"", b"x\ry\n", False, [b"F x\ry"], b""),
        (b"", b"x" * (crilog.MAX_LINE + 3), False, [b"P " + b"x" * crilog.MAX_LINE], b"xxx"),
    ],
)
def test_split_into_records(pending, data, flush, records, rest):
    out, left = crilog.split(T0, crilog.STDOUT, pending, data, flush)
    assert out.split(b"\n")[:-1] == [STAMP + b" stdout " + r for r in records]
    assert left == rest


def render(lines: bytes, **kwargs) -> bytes:
    reader = crilog.Reader(**kwargs)
    return b"".join(reader.render(line + b"\n") for line in lines.split(b"\n")[:-1])


LOG = (
    b"2026-11-28T12:00:00.000000000Z stdout F one\n"
    b"2026-11-28T12:00:01.000000000Z stdout P tw\n"
    b"2026-11-28T12:00:02.000000000Z stderr F o\n"
    b"2026-11-28T12:00:03.000000000Z stdout F three\n"
)


def test_reader_gives_the_output_as_written():
    assert render(LOG) == b"one\ntwo\nthree\n"
    assert render(b"not a record\n" + LOG.split(b"\n")[0] + b"\n") == b"not a record\none\n"


def test_reader_timestamps_each_line_once():
    assert render(LOG, timestamps=True) == (
        b"2026-11-28T12:00:00.000000000Z one\n"
        b"2026-11-28T12:00:01.000000000Z two\n"
        b"2026-11-28T12:00:03.000000000Z three\n"
    )


def test_reader_since_leaves_older_records_out():
    assert render(LOG, since=T0 + 2 * SECOND) == b"o\nthree\n"
    assert render(LOG, since=T0 + 10 * SECOND) == b""
    assert render(b"legacy\n", since=T0) == b"legacy\n"  # no time: kept


# -- the writer -----------------------------------------------------------------------


def test_output_writer_stamps_lines_and_appends_across_restarts(tmp_path):
    path = tmp_path / "c.log"
    clock = iter(range(T0, T0 + 1000 * SECOND, SECOND))
    writer = OutputWriter(clock=lambda: next(clock), hold=0.2)
    try:
        for word in ("first", "second"):  # the same container, started twice
            proc = subprocess.Popen(
                ["sh", "-c", f"echo {word}; printf 'no newline'; sleep 0.5; echo ' end' >&2"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            writer.add(proc.stdout, path)
            proc.wait(5)
        deadline = time.monotonic() + 5
        while path.read_bytes().count(b" end") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        writer.close()
    records = [crilog.parse_record(line) for line in path.read_bytes().splitlines()]
    assert [(r.partial, r.content) for r in records] == [
        (False, b"first"),
        (True, b"no newline"),  # held 0.2 s, then written as it is
        (False, b" end"),
        (False, b"second"),
        (True, b"no newline"),
        (False, b" end"),
    ]
    times = [r.time for r in records]
    assert times == sorted(times) and times[0] >= T0
    assert render(path.read_bytes()) == b"first\nno newline end\nsecond\nno newline end\n"


# -- the API --------------------------------------------------------------------------


def pod(name: str, node: str, labels: dict | None = None, containers=("main",)) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels or {}},
        "spec": {"nodeName": node, "containers": [{"name": c} for c in containers]},
    }


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    yield lab
    lab.server.stop()


def records(*entries: tuple[float, str]) -> bytes:
    """CRI lines at T0 + seconds."""
    return b"".join(
        crilog.encode(T0 + int(at * SECOND), crilog.STDOUT, text.encode()) for at, text in entries
    )


def write_log(lab: Lab, name: str, data: bytes) -> None:
    (lab.actions.log_dir / f"default_{name}_main.log").write_bytes(data)


def test_api_timestamps_since_time_and_seconds(lab):
    lab.store.create(pod("a", "n1"))
    now = time.time_ns()
    old = crilog.encode(now - 3600 * SECOND, crilog.STDOUT, b"an hour ago")
    write_log(lab, "a", records((0, "one"), (1, "two")) + old + b"plain\n")
    client = lab.client
    assert b"".join(client.logs("default", "a")) == b"one\ntwo\nan hour ago\nplain\n"
    stamped = b"".join(client.logs("default", "a", timestamps=True, tail=3)).splitlines()
    assert stamped[0] == b"2026-11-28T12:00:01.000000000Z two"
    assert stamped[2] == b"plain"  # a line without a time gets no prefix
    since = b"".join(client.logs("default", "a", since_time="2026-11-28T12:00:01Z"))
    assert since.startswith(b"two\n")
    write_log(lab, "a", old + crilog.encode(now - SECOND, crilog.STDOUT, b"just now"))
    assert b"".join(client.logs("default", "a", since_seconds=60)) == b"just now\n"
    with pytest.raises(ApiError) as err:
        list(client.logs("default", "a", since_seconds=5, since_time="2026-11-28T12:00:00Z"))
    assert err.value.status == 400
    with pytest.raises(ApiError) as err:
        list(client.logs("default", "a", since_time="noon"))
    assert err.value.status == 400 and "RFC3339" in str(err.value)


def test_api_follow_waits_for_whole_records(lab):
    lab.store.create(pod("a", "n1"))
    path = lab.actions.log_dir / "default_a_main.log"
    path.write_bytes(records((0, "one")))
    thread, out = in_thread(
        lambda: b"".join(lab.client.logs("default", "a", follow=True, timestamps=True))
    )
    time.sleep(0.3)
    line = records((1, "two"))
    with path.open("ab") as f:
        f.write(line[:20])  # half a record: not sent yet
        f.flush()
        time.sleep(0.4)
        f.write(line[20:])
    time.sleep(0.4)
    lab.store.delete("pods", "default", "a")
    thread.join(5)
    assert out == [b"2026-11-28T12:00:00.000000000Z one\n2026-11-28T12:00:01.000000000Z two\n"]


# -- netlab logs ------------------------------------------------------------------------


def args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    lab_logs.configure_parser(p)
    return p.parse_args(argv)


def run(lab: Lab, *argv: str) -> str:
    out = io.BytesIO()
    assert lab_logs.run(args(*argv), lab.client, out=out) == 0
    return out.getvalue().decode()


@pytest.mark.parametrize(
    "text, seconds",
    [("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("1.5h", 5400), ("250ms", 1)],
)
def test_since_durations(text, seconds):
    assert lab_logs.since_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "m", "5 m", "5d", "-5s", "0s"])
def test_since_refuses(text):
    with pytest.raises(NetlabError):
        lab_logs.since_seconds(text)


@pytest.mark.parametrize("selector", ["app=web", "app!=web,tier", "!canary", "app in (a,b)"])
def test_selectors_kubectl_syntax(selector):
    assert lab_logs.check_selector(selector) == selector


def test_bad_selector_names_the_syntax():
    with pytest.raises(NetlabError, match="key=value"):
        lab_logs.check_selector("app=web,=x")


def test_prefix_names_pod_container_and_node():
    source = lab_logs.Source("kube-system", "web-abc", "web", "n1")
    assert source.prefix() == b"[pod/web-abc/web n1] "
    assert source.prefix(with_namespace=True) == b"[kube-system/pod/web-abc/web n1] "
    assert lab_logs.Source("default", "p", "c", "").prefix() == b"[pod/p/c -] "


def test_merge_orders_by_time_and_keeps_ties_stable():
    a = lab_logs.parse_lines(
        [b"2026-11-28T12:00:02Z a2", b"no time", b"2026-11-28T12:00:05Z a5"], 0
    )
    b = lab_logs.parse_lines([b"2026-11-28T12:00:01Z b1", b"2026-11-28T12:00:02Z b2"], 1)
    merged = [line.text for line in lab_logs.merge([a, b])]
    assert merged == [b"b1", b"a2", b"no time", b"b2", b"a5"]


def test_single_pod_output_is_unchanged(lab):
    lab.store.create(pod("a", "n1"))
    write_log(lab, "a", records((0, "one"), (1, "two")))
    assert run(lab, "a") == "one\ntwo\n"
    assert run(lab, "a", "--tail", "1") == "two\n"
    assert run(lab, "a", "--prefix") == "[pod/a/main n1] one\n[pod/a/main n1] two\n"
    assert run(lab, "a", "--grep", "tw") == "two\n"
    assert run(lab, "a", "--timestamps").startswith("2026-11-28T12:00:00.000000000Z one\n")


def test_selector_merges_pods_in_time_order(lab):
    lab.store.create(pod("web-1", "n1", {"app": "web"}))
    lab.store.create(pod("web-2", "n3", {"app": "web"}))
    lab.store.create(pod("client", "n2", {"app": "client"}))
    write_log(lab, "web-1", records((0, "w1 first"), (2, "w1 id=42")))
    write_log(lab, "web-2", records((1, "w2 id=42"), (3, "w2 last")))
    write_log(lab, "client", records((0.5, "client id=42")))
    assert run(lab, "-l", "app=web") == (
        "[pod/web-1/main n1] w1 first\n"
        "[pod/web-2/main n3] w2 id=42\n"
        "[pod/web-1/main n1] w1 id=42\n"
        "[pod/web-2/main n3] w2 last\n"
    )
    assert run(lab, "--all", "--grep", "id=42", "--no-prefix") == (
        "client id=42\nw2 id=42\nw1 id=42\n"
    )
    assert run(lab, "-l", "app!=web", "--timestamps") == (
        "[pod/client/main n2] 2026-11-28T12:00:00.500000000Z client id=42\n"
    )
    assert run(lab, "-l", "app=web", "--since-time", "2026-11-28T12:00:02Z").count("\n") == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["nope"], 'no pod "nope" in namespace default: `netlab get pods'),
        (["-l", "app=nothing"], "no pods in namespace default match app=nothing"),
        (["--all", "-n", "empty"], "no pods in namespace empty"),
        ([], "which logs?"),
        (["a", "-l", "app=web"], "not both"),
        (["a", "--since", "5m", "--since-time", "2026-11-28T12:00:00Z"], "exclude each other"),
        (["-l", "app=web", "-c", "sidecar"], "leave -c out"),
    ],
)
def test_errors_name_the_fix(lab, argv, message):
    lab.store.create(pod("a", "n1", {"app": "web"}))
    with pytest.raises(NetlabError) as err:
        lab_logs.run(args(*argv), lab.client, out=io.BytesIO())
    assert message in str(err.value)


def test_follow_picks_up_new_lines_and_new_pods(lab, monkeypatch):
    monkeypatch.setattr(lab_logs, "RELIST", 0.2)
    lab.store.create(pod("web-1", "n1", {"app": "web"}))
    write_log(lab, "web-1", records((0, "old line")))
    out = io.BytesIO()
    interrupt = threading.Event()
    real_take = lab_logs.Follower.take

    def take(self, timeout):
        if interrupt.is_set():
            raise KeyboardInterrupt  # what Ctrl-C does to the printing thread
        return real_take(self, timeout)

    monkeypatch.setattr(lab_logs.Follower, "take", take)
    thread, status = in_thread(lab_logs.run, args("-l", "app=web", "-f"), lab.client, out)
    time.sleep(0.4)
    with (lab.actions.log_dir / "default_web-1_main.log").open("ab") as f:
        f.write(records((5, "new line")))
    lab.store.create(pod("web-2", "n3", {"app": "web"}))
    write_log(lab, "web-2", records((6, "from a new pod")))
    deadline = time.monotonic() + 5
    while b"from a new pod" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.05)
    interrupt.set()
    thread.join(5)
    assert status == [130]
    assert out.getvalue().decode().splitlines() == [
        "[pod/web-1/main n1] old line",
        "[pod/web-1/main n1] new line",
        "[pod/web-2/main n3] from a new pod",
    ]


# -- the echo app's upstream -------------------------------------------------------------


def serve(upstream: str | None = None, seen: list | None = None) -> ThreadingHTTPServer:
    class Handler(echo.Echo):
        def do_GET(self):  # noqa: N802
            if seen is not None:
                seen.append(dict(self.headers))
            super().do_GET()

        def log_message(self, format, *args):  # noqa: A002
            pass

    Handler.upstream = upstream
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_echo_calls_its_upstream_with_the_request_id_and_trace_headers(monkeypatch):
    monkeypatch.setenv("POD_NAME", "pod")
    seen: list[dict] = []
    web = serve(seen=seen)
    front = serve(f"http://127.0.0.1:{web.server_port}/")
    try:
        headers = {"x-request-id": "r-1", "traceparent": "00-ab-cd-01", "x-b3-traceid": "ab"}
        body = echo.call_upstream(f"http://127.0.0.1:{front.server_port}/path", headers)
        lines = body.decode().splitlines()
        assert lines[0].startswith("pod ") and lines[0].endswith(" /path")
        assert lines[1].startswith("pod ") and lines[1].endswith(" /")
        got = {k.lower(): v for k, v in seen[0].items()}
        assert (got["x-request-id"], got["traceparent"], got["x-b3-traceid"]) == (
            "r-1",
            "00-ab-cd-01",
            "ab",
        )
    finally:
        front.shutdown()
        web.shutdown()


def test_echo_answers_502_when_its_upstream_fails():
    front = serve("http://127.0.0.1:1/")  # nothing listens on port 1 of loopback
    try:
        conn = http.client.HTTPConnection("127.0.0.1", front.server_port, timeout=5)
        conn.request("GET", "/")
        response = conn.getresponse()
        body = response.read().decode()
        conn.close()
        assert response.status == 502
        assert "upstream failed: http://127.0.0.1:1/" in body.splitlines()[1]
        with pytest.raises(echo.UpstreamError, match="answered 502"):
            echo.call_upstream(f"http://127.0.0.1:{front.server_port}/", {})
    finally:
        front.shutdown()


def test_upstream_time_is_bounded():
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the connection, never answers
    try:  # the bound is the call's own: it gives up, not the socket
        with pytest.raises(echo.UpstreamError, match="did not answer within 0.5 s"):
            echo.call_upstream(f"http://127.0.0.1:{silent.getsockname()[1]}/", {}, timeout=0.5)
    finally:
        silent.close()


def test_echo_main_takes_upstream_from_env(monkeypatch):
    monkeypatch.setenv("UPSTREAM", "http://web/")
    captured = {}

    class Stop(Exception):
        pass

    def fake_server(address, handler):
        captured["upstream"] = handler.upstream
        raise Stop

    monkeypatch.setattr(echo, "ThreadingHTTPServer", fake_server)
    with pytest.raises(Stop):
        echo.main(["8081"])
    assert captured["upstream"] == "http://web/"
    with pytest.raises(Stop):
        echo.main(["--upstream", "http://other/"])
    assert captured["upstream"] == "http://other/"
    assert sys.modules["netlab.apps.echo"] is echo
