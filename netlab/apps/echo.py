"""An HTTP server that says which pod answered: `python3 -m netlab.apps.echo [PORT]`.

GET any path -> `200 <pod> <pod IP> <node> <path>` (one line), so a client
sees where a Service sent it. The request's `x-request-id` is logged with
the request line, so one request can be found in every pod's log.
"""

from __future__ import annotations

import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    server_version = "netlab-echo/1"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        pod = os.environ.get("POD_NAME", "?")
        body = (
            f"{pod} {os.environ.get('POD_IP', '?')} {os.environ.get('NODE_NAME', '?')} "
            f"{self.path}\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        request_id = self.headers.get("x-request-id", "-") if self.headers else "-"
        sys.stderr.write(f"{self.client_address[0]} {format % args} x-request-id={request_id}\n")
        sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    port = int(args[0]) if args else 8080
    server = ThreadingHTTPServer(("0.0.0.0", port), Echo)
    server.daemon_threads = True
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
