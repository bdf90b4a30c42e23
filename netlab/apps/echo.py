"""An HTTP server that says which pod answered: `python3 -m netlab.apps.echo [PORT] [--upstream URL]`.

GET any path -> `200 <pod> <pod IP> <node> <path>` (one line), so a client
sees where a Service sent it. The request's `x-request-id` is logged with
the request line, so one request can be found in every pod's log.

With an upstream (`--upstream http://web/`, or the environment variable
`UPSTREAM=http://web/`; the option wins) the server is one hop of a chain, as
an app in a mesh is: for every request it GETs the upstream URL, passing on
the request's `x-request-id` and trace headers (W3C `traceparent`/`tracestate`,
Zipkin B3, as Istio asks of its apps, since only the app can tie an incoming
request to the outgoing one), logs the call with the id, and answers its own
line followed by the upstream's answer, so the client sees the whole chain.
The upstream gets 2 s in all (name lookup included); if it fails or answers an
error the server answers 502 with the reason, and logs it.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

UPSTREAM_TIMEOUT = 2.0  # seconds for the whole upstream call
# what Istio's docs list for apps to propagate (request id, W3C trace context, B3, ...)
PROPAGATED = (
    "x-request-id",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-ot-span-context",
)


class UpstreamError(Exception):
    """The upstream did not answer 2xx in time; the message says why."""


def call_upstream(url: str, headers: dict[str, str], timeout: float = UPSTREAM_TIMEOUT) -> bytes:
    """GET `url` with `headers`; its body, or UpstreamError. The whole call, name
    lookup included, runs in a helper thread given `timeout` seconds in all."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise UpstreamError(f"{url} is not an http:// URL")
    result: dict[str, object] = {}

    def get() -> None:
        # the socket's own timeout a little later than the join's: the join decides,
        # so a silent upstream is always "did not answer within", however loaded the host
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout + 1)
        try:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            result["status"], result["body"] = response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            result["error"] = str(exc) or type(exc).__name__
        finally:
            conn.close()

    worker = threading.Thread(target=get, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise UpstreamError(f"{url} did not answer within {timeout:g} s")
    if "error" in result:
        raise UpstreamError(f"{url}: {result['error']}")
    body = result["body"]
    if not 200 <= result["status"] < 300:
        first = body.decode("utf-8", "replace").strip().splitlines()[:1]
        raise UpstreamError(
            f"{url} answered {result['status']}" + (f": {first[0]}" if first else "")
        )
    return body


class Echo(BaseHTTPRequestHandler):
    server_version = "netlab-echo/1"
    protocol_version = "HTTP/1.1"
    upstream: str | None = None

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        pod = os.environ.get("POD_NAME", "?")
        body = (
            f"{pod} {os.environ.get('POD_IP', '?')} {os.environ.get('NODE_NAME', '?')} "
            f"{self.path}\n"
        ).encode()
        code = 200
        if self.upstream:
            forward = {h: self.headers[h] for h in PROPAGATED if self.headers.get(h)}
            try:
                answer = call_upstream(self.upstream, forward)
                self._log(f"upstream {self.upstream} ok")
                body += answer if answer.endswith(b"\n") or not answer else answer + b"\n"
            except UpstreamError as exc:
                self._log(f"upstream failed: {exc}")
                code, body = 502, body + f"upstream failed: {exc}\n".encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _log(self, text: str) -> None:
        request_id = self.headers.get("x-request-id", "-") if self.headers else "-"
        sys.stderr.write(f"{self.client_address[0]} {text} x-request-id={request_id}\n")
        sys.stderr.flush()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        self._log(format % args)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m netlab.apps.echo")
    p.add_argument("port", nargs="?", type=int, default=8080)
    p.add_argument("--upstream", default=os.environ.get("UPSTREAM") or None)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    class Handler(Echo):
        upstream = args.upstream

    server = ThreadingHTTPServer(("0.0.0.0", args.port), Handler)
    server.daemon_threads = True
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
