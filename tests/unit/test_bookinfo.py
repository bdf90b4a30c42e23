"""netlab.apps.bookinfo: productpage -> reviews -> ratings as real aiohttp servers
on 127.0.0.1 (ephemeral ports, one event loop), pointed at each other with the
hidden --reviews-url/--ratings-url options; and the module as a process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from netlab.apps import bookinfo

REPO = Path(__file__).resolve().parents[2]
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(autouse=True)
def pod_env(monkeypatch):
    monkeypatch.setenv("POD_NAME", "reviews-v2-abc12")
    monkeypatch.setenv("NODE_NAME", "n3")


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1, an ephemeral port; yield its base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def closed_port_url() -> str:
    """A loopback URL nobody listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def recording(seen: list[dict]) -> Callable:
    """A middleware keeping each request's headers and client address."""

    @web.middleware
    async def record(request: web.Request, handler):
        peer = request.transport.get_extra_info("peername") if request.transport else None
        seen.append({"headers": dict(request.headers), "peer": peer, "path": request.path})
        return await handler(request)

    return record


def stand_in(status: int) -> web.Application:
    """A ratings that answers `status` to everything, as a rate-limiting sidecar does."""

    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=status, text="local_rate_limited\n")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict]:
    async with (
        ClientSession(trust_env=False) as session,
        session.get(url, headers=headers or {}) as r,
    ):
        return r.status, r.headers.get("Content-Type", ""), await r.text()


async def get_json(url: str, headers: dict[str, str] | None = None) -> dict:
    status, _kind, body = await get(url, headers)
    assert status == 200, body
    return json.loads(body)


def run(coro: Awaitable):
    return asyncio.run(coro)


# -- the chain --------------------------------------------------------------------


@pytest.mark.parametrize("version, stars", [("v2", "black"), ("v3", "red")])
def test_the_chain_answers_with_ratings_in_the_versions_colour(version, stars):
    async def main():
        async with serving(bookinfo.build_app("ratings")) as ratings:
            reviews_app = bookinfo.build_app("reviews", version, ratings_url=ratings)
            async with serving(reviews_app) as reviews:
                async with serving(bookinfo.build_app("productpage", reviews_url=reviews)) as page:
                    return await get_json(f"{page}/productpage"), await get_json(f"{page}/")

    page, root = run(main())
    assert page == root
    me = {"service": "productpage", "version": "v1", "pod": "reviews-v2-abc12", "node": "n3"}
    assert {k: page[k] for k in me} == me
    assert page["productpage"] == me
    review = page["reviews"]
    assert (review["service"], review["version"], review["id"]) == ("reviews", version, 0)
    assert (review["pod"], review["node"]) == ("reviews-v2-abc12", "n3")
    assert review["stars"] == stars
    assert review["ratings"] == {
        "service": "ratings",
        "version": "v1",
        "pod": "reviews-v2-abc12",
        "node": "n3",
        "id": 0,
        "ratings": {"Reviewer1": 5, "Reviewer2": 4},
    }


def test_reviews_v1_shows_no_ratings_and_does_not_call_them():
    async def main():
        async with serving(bookinfo.build_app("reviews", "v1", ratings_url=closed_port_url())) as r:
            return await get_json(f"{r}/reviews/3")

    review = run(main())
    assert review["version"] == "v1" and review["id"] == 3
    assert "ratings" not in review and "stars" not in review
    assert [x["reviewer"] for x in review["reviews"]] == ["Reviewer1", "Reviewer2"]


def test_ratings_answers_for_the_id_asked():
    async def main():
        async with serving(bookinfo.build_app("ratings", "v2")) as ratings:
            return await get_json(f"{ratings}/ratings/42")

    assert run(main()) == {
        "service": "ratings",
        "version": "v2",
        "pod": "reviews-v2-abc12",
        "node": "n3",
        "id": 42,
        "ratings": {"Reviewer1": 5, "Reviewer2": 4},
    }


def test_pod_and_node_fall_back_to_the_hostname(monkeypatch):
    monkeypatch.delenv("POD_NAME")
    monkeypatch.delenv("NODE_NAME")
    monkeypatch.setenv("HOSTNAME", "from-hostname")
    assert bookinfo.identity("ratings", "v1")["pod"] == "from-hostname"
    assert bookinfo.identity("ratings", "v1")["node"] == socket.gethostname()
    monkeypatch.delenv("HOSTNAME")
    assert bookinfo.identity("ratings", "v1")["pod"] == socket.gethostname()


# -- header propagation ----------------------------------------------------------


def test_trace_headers_and_end_user_reach_ratings_and_nothing_else_does():
    sent = {
        "traceparent": TRACEPARENT,
        "tracestate": "vendor=abc",
        "x-request-id": "7d1c5b2e-0000-4000-8000-000000000001",
        "x-b3-traceid": "4bf92f3577b34da6a3ce929d0e0e4736",
        "x-b3-spanid": "00f067aa0ba902b7",
        "x-b3-sampled": "1",
        "b3": "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        "end-user": "jason",
    }
    not_sent = {"cookie": "session=secret", "x-private": "no", "authorization": "Bearer x"}
    at_reviews: list[dict] = []
    at_ratings: list[dict] = []

    async def main():
        ratings_app = bookinfo.build_app("ratings")
        ratings_app.middlewares.append(recording(at_ratings))
        async with serving(ratings_app) as ratings:
            reviews_app = bookinfo.build_app("reviews", "v3", ratings_url=ratings)
            reviews_app.middlewares.append(recording(at_reviews))
            async with serving(reviews_app) as reviews:
                async with serving(bookinfo.build_app("productpage", reviews_url=reviews)) as page:
                    first = await get_json(f"{page}/productpage", {**sent, **not_sent})
                    second = await get_json(f"{page}/productpage", {"end-user": "alice"})
                    return first, second

    first, second = run(main())
    assert first["reviews"]["ratings"]["service"] == "ratings"
    assert second["reviews"]["ratings"]["service"] == "ratings"
    for hop in (at_reviews, at_ratings):
        headers = {k.lower(): v for k, v in hop[0]["headers"].items()}
        assert {k: headers.get(k) for k in sent} == sent
        assert not set(not_sent) & set(headers)
        later = {k.lower(): v for k, v in hop[1]["headers"].items()}
        assert later.get("end-user") == "alice" and "traceparent" not in later
    # one client session per process, connections kept alive between requests
    assert at_reviews[0]["peer"] == at_reviews[1]["peer"]
    assert at_ratings[0]["peer"] == at_ratings[1]["peer"]


def test_the_propagated_list_is_istios_plus_end_user():
    assert "end-user" in bookinfo.PROPAGATED and "cookie" not in bookinfo.PROPAGATED
    assert len(set(bookinfo.PROPAGATED)) == len(bookinfo.PROPAGATED)
    assert all(name == name.lower() for name in bookinfo.PROPAGATED)


# -- upstream errors ---------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 503])
def test_an_error_status_from_ratings_is_reported_and_the_page_still_answers(status):
    async def main():
        async with serving(stand_in(status)) as ratings:
            reviews_app = bookinfo.build_app("reviews", "v2", ratings_url=ratings)
            async with serving(reviews_app) as reviews:
                async with serving(bookinfo.build_app("productpage", reviews_url=reviews)) as page:
                    return await get_json(f"{reviews}/reviews/0"), await get_json(f"{page}/")

    review, page = run(main())
    assert review["ratings"] == {"error": status}
    assert review["stars"] == "black" and review["service"] == "reviews"
    assert page["reviews"]["ratings"] == {"error": status}


def test_ratings_down_or_too_slow_is_reported_as_a_message():
    release = None

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"late": True})

    async def main():
        nonlocal release
        release = asyncio.Event()
        slow_app = web.Application()
        slow_app.router.add_get("/ratings/{id}", slow)
        async with serving(slow_app) as slow_url:
            down = bookinfo.build_app("reviews", "v2", ratings_url=closed_port_url())
            late = bookinfo.build_app("reviews", "v3", 0.2, ratings_url=slow_url)
            async with serving(down) as down_url, serving(late) as late_url:
                started = time.monotonic()
                got_late = await get_json(f"{late_url}/reviews/1")
                took = time.monotonic() - started
                got_down = await get_json(f"{down_url}/reviews/1")
                release.set()
                return got_down, got_late, took

    got_down, got_late, took = run(main())
    assert isinstance(got_down["ratings"]["error"], str) and got_down["ratings"]["error"]
    assert got_late["ratings"] == {"error": "timeout after 0.2 s"}
    assert took < 2.0


def test_productpage_reports_reviews_down_or_failing():
    async def main():
        down = bookinfo.build_app("productpage", reviews_url=closed_port_url())
        async with serving(down) as page, serving(stand_in(503)) as failing:
            failing_page = bookinfo.build_app("productpage", reviews_url=failing)
            async with serving(failing_page) as page2:
                return await get_json(f"{page}/"), await get_json(f"{page2}/productpage")

    down, failing = run(main())
    assert down["service"] == "productpage"
    assert isinstance(down["reviews"]["error"], str) and down["reviews"]["error"]
    assert failing["reviews"] == {"error": 503}


def test_an_answer_that_is_not_a_json_object_is_an_error():
    async def text(request: web.Request) -> web.Response:
        return web.Response(text="[1, 2]" if request.path.endswith("/1") else "<html>")

    async def main():
        weird = web.Application()
        weird.router.add_get("/ratings/{id}", text)
        async with serving(weird) as ratings:
            app = bookinfo.build_app("reviews", "v2", ratings_url=ratings)
            async with serving(app) as reviews:
                array = await get_json(f"{reviews}/reviews/1")
                return array, await get_json(f"{reviews}/reviews/2")

    array, html = run(main())
    assert array["ratings"] == {"error": "the answer is not a JSON object"}
    assert html["ratings"] == {"error": "the answer is not JSON"}


# -- health, unknown paths -------------------------------------------------------------


@pytest.mark.parametrize("role", bookinfo.ROLES)
def test_every_role_has_health_and_answers_json_404_and_405(role):
    async def main():
        async with serving(bookinfo.build_app(role)) as url:
            health = await get(f"{url}/health")
            missing = await get(f"{url}/nope/1")
            bad_id = await get(f"{url}/{'reviews' if role != 'ratings' else 'ratings'}/x")
            async with ClientSession(trust_env=False) as session:
                async with session.post(f"{url}/health") as r:
                    posted = (r.status, r.headers.get("Allow"), await r.json())
            return health, missing, bad_id, posted

    health, missing, bad_id, posted = run(main())
    assert health[0] == 200 and health[2] == "ok"
    for status, kind, body in (missing, bad_id):
        assert status == 404 and kind.startswith("application/json")
        assert json.loads(body)["error"] == 404
    assert json.loads(missing[2])["path"] == "/nope/1"
    assert posted[0] == 405 and "GET" in posted[1] and posted[2]["error"] == 405


def test_build_app_refuses_an_unknown_role():
    with pytest.raises(ValueError, match="unknown role"):
        bookinfo.build_app("details")


# -- the command line ------------------------------------------------------------------


def test_options_and_their_defaults():
    args = bookinfo.parse_args(["reviews"])
    assert (args.port, args.version, args.upstream_timeout) == (9080, "v1", 3.0)
    assert (args.reviews_url, args.ratings_url) == ("http://reviews:9080", "http://ratings:9080")
    args = bookinfo.parse_args(["reviews", "--port", "9081", "--version", "v3"])
    assert (args.port, args.version) == (9081, "v3")
    for bad in (["details"], ["ratings", "--upstream-timeout", "0"], []):
        with pytest.raises(SystemExit):
            bookinfo.parse_args(bad)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_module_runs_as_a_container_command_and_stops_on_sigterm():
    port = free_port()
    env = {**os.environ, "POD_NAME": "ratings-7f9c", "NODE_NAME": "n4"}
    cmd = [sys.executable, "-m", "netlab.apps.bookinfo", "ratings", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--host", "127.0.0.1", "--version", "v1"],
        cwd="/",  # as the lab starts containers: the package comes from the installed venv
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                assert time.monotonic() < deadline, "not listening in time"
                time.sleep(0.05)
        answer = run(get_json(f"http://127.0.0.1:{port}/ratings/7"))
        assert (answer["pod"], answer["node"], answer["id"]) == ("ratings-7f9c", "n4", 7)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        output = proc.stdout.read().decode()
        assert "GET /ratings/7" in output and "x-request-id=-" in output, output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
