"""Istio's bookinfo, small: `python3 -m netlab.apps.bookinfo ROLE --port 9080 [--version v1]`.

    productpage  GET / and /productpage -> GET http://reviews:9080/reviews/0
    reviews      GET /reviews/{id}      -> v1: no ratings; v2 (black stars) and
                                           v3 (red stars): GET http://ratings:9080/ratings/{id}
    ratings      GET /ratings/{id}

Every answer is JSON naming who gave it (`service`, `version`, `pod`, `node`,
from the container's environment as the lab sets it), so a client sees which
replica and version each hop reached. Every role answers `GET /health` with
`ok`; other paths answer 404 JSON.

As Istio asks of its apps, the trace context and request id (and `end-user`,
which the demo's VirtualService routes on) are copied from the incoming
request to every outgoing call; the sidecars do the rest. A failed upstream
call (an error status such as 429 or 503, a refused connection, no answer
within `--upstream-timeout`) never fails the page: the caller still answers
200 and says what went wrong in the upstream's place, `{"error": 503}` or
`{"error": "timeout after 3 s"}` (bookinfo's "Ratings service is currently
unavailable").
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web
from multidict import CIMultiDict

ROLES = ("productpage", "reviews", "ratings")
UPSTREAM_TIMEOUT = 3.0  # seconds for one upstream call, connect included
REVIEWS_URL = "http://reviews:9080"
RATINGS_URL = "http://ratings:9080"
STARS = {"v2": "black", "v3": "red"}  # reviews versions that show ratings, and in which color
# Istio's documented list for apps to propagate (request id, W3C trace context,
# B3 multi and single header, Lightstep), plus the demo's routing header.
PROPAGATED = (
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "x-ot-span-context",
    "end-user",
)
ACCESS_LOG = '%a "%r" %s %b %Tfs x-request-id=%{x-request-id}i'

SESSION = web.AppKey("session", ClientSession)
CONFIG = web.AppKey("config", dict)
log = logging.getLogger("bookinfo")


def identity(role: str, version: str) -> dict[str, str]:
    """Who answers: the role, its version, and the pod and node from the environment."""
    host = socket.gethostname()
    return {
        "service": role,
        "version": version,
        "pod": os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or host,
        "node": os.environ.get("NODE_NAME") or host,
    }


def forward_headers(request: web.Request) -> CIMultiDict[str]:
    """The incoming request's headers that every outgoing call carries on."""
    out: CIMultiDict[str] = CIMultiDict()
    for name in PROPAGATED:
        for value in request.headers.getall(name, ()):
            out.add(name, value)
    return out


async def call(request: web.Request, url: str) -> dict[str, Any]:
    """GET `url` with the propagated headers: its JSON object, or {"error": status or reason}."""
    app = request.app
    timeout = app[CONFIG]["upstream_timeout"]
    try:
        async with app[SESSION].get(
            url, headers=forward_headers(request), timeout=ClientTimeout(total=timeout)
        ) as response:
            if not 200 <= response.status < 300:
                await response.read()  # so the connection can be kept
                log.warning("GET %s answered %d", url, response.status)
                return {"error": response.status}
            body = await response.json(content_type=None)
    except TimeoutError:
        log.warning("GET %s: no answer within %g s", url, timeout)
        return {"error": f"timeout after {timeout:g} s"}
    except (ClientError, OSError) as exc:
        log.warning("GET %s failed: %s", url, exc)
        return {"error": str(exc) or type(exc).__name__}
    except ValueError as exc:  # not JSON (json.JSONDecodeError is one)
        log.warning("GET %s: not JSON: %s", url, exc)
        return {"error": "the answer is not JSON"}
    if not isinstance(body, dict):
        return {"error": "the answer is not a JSON object"}
    return body


def _me(request: web.Request) -> dict[str, Any]:
    config = request.app[CONFIG]
    return identity(config["role"], config["version"])


async def productpage(request: web.Request) -> web.Response:
    me = _me(request)
    reviews = await call(request, f"{request.app[CONFIG]['reviews_url']}/reviews/0")
    return web.json_response({**me, "productpage": me, "reviews": reviews})


async def reviews(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    review_id = int(request.match_info["id"])
    answer: dict[str, Any] = {
        **_me(request),
        "id": review_id,
        "reviews": [
            {"reviewer": "Reviewer1", "text": "An extremely entertaining play by Shakespeare."},
            {"reviewer": "Reviewer2", "text": "Absolutely fun and entertaining."},
        ],
    }
    color = STARS.get(config["version"])
    if color is not None:
        answer["stars"] = color
        answer["ratings"] = await call(request, f"{config['ratings_url']}/ratings/{review_id}")
    return web.json_response(answer)


async def ratings(request: web.Request) -> web.Response:
    return web.json_response(
        {
            **_me(request),
            "id": int(request.match_info["id"]),
            "ratings": {"Reviewer1": 5, "Reviewer2": 4},
        }
    )


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


@web.middleware
async def json_errors(request: web.Request, handler):
    """aiohttp's own error answers (404, 405) as JSON too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        body = {"error": exc.status, "reason": exc.reason, "path": request.path}
        return web.Response(
            status=exc.status,
            headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
            text=json.dumps(body),
            content_type="application/json",
        )


async def _session(app: web.Application):
    """One client session per app: kept-alive connections, no proxy settings from
    the environment (the sidecar intercepts the app's traffic on its own)."""
    async with ClientSession(connector=TCPConnector(limit=100), trust_env=False) as session:
        app[SESSION] = session
        yield


def build_app(
    role: str,
    version: str = "v1",
    upstream_timeout: float = UPSTREAM_TIMEOUT,
    reviews_url: str = REVIEWS_URL,
    ratings_url: str = RATINGS_URL,
) -> web.Application:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    app = web.Application(middlewares=[json_errors])
    app[CONFIG] = {
        "role": role,
        "version": version,
        "upstream_timeout": upstream_timeout,
        "reviews_url": reviews_url.rstrip("/"),
        "ratings_url": ratings_url.rstrip("/"),
    }
    app.cleanup_ctx.append(_session)
    app.router.add_get("/health", health)
    if role == "productpage":
        app.router.add_get("/", productpage)
        app.router.add_get("/productpage", productpage)
    elif role == "reviews":
        app.router.add_get(r"/reviews/{id:\d{1,9}}", reviews)
    else:
        app.router.add_get(r"/ratings/{id:\d{1,9}}", ratings)
    return app


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python3 -m netlab.apps.bookinfo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("role", choices=ROLES)
    p.add_argument("--port", type=int, default=9080)
    p.add_argument("--version", default="v1", help="the version this replica says it is")
    p.add_argument(
        "--upstream-timeout",
        type=float,
        default=UPSTREAM_TIMEOUT,
        help="seconds for one call to the next service (default %(default)g)",
    )
    # for tests: where the next services are, and where to listen
    p.add_argument("--host", default="0.0.0.0", help=argparse.SUPPRESS)
    p.add_argument("--reviews-url", default=REVIEWS_URL, help=argparse.SUPPRESS)
    p.add_argument("--ratings-url", default=RATINGS_URL, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.upstream_timeout <= 0:
        p.error("--upstream-timeout must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    app = build_app(
        args.role, args.version, args.upstream_timeout, args.reviews_url, args.ratings_url
    )
    log.info("%s %s listening on %s:%d", args.role, args.version, args.host, args.port)
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        access_log_format=ACCESS_LOG,
        print=None,
        shutdown_timeout=1.0,
        handle_signals=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
