"""The lab API for Kubernetes clients: the same application as on the unix socket,
also served over TLS on a loopback port of the lab's own (kubectl cannot dial a
unix socket), with a kubeconfig that points kubectl and the `kubernetes` Python
client at it.

Only root gets in, as only root may read the run directory: a client proves it
is the lab's admin with the client certificate the lab's CA signed (in the
kubeconfig), or with the bearer token in `<run dir>/token`. Anything else gets
401 Unauthorized, as from kube-apiserver; a certificate from another CA fails the
TLS handshake itself. The port is chosen once per lab and kept in the run
directory, so a supervisor that takes the lab over serves the same kubeconfig.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import secrets
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from netlab.pki import ADMIN_USER, LabPki, load_or_make

HOST = "127.0.0.1"
PORT_FILE = "api.port"
TOKEN_FILE = "token"
KUBECONFIG_FILE = "kubeconfig"


@dataclass(frozen=True)
class KubeEndpoint:
    """Where and how Kubernetes clients reach one lab's API."""

    lab: str
    run_dir: Path
    port: int
    pki: LabPki
    token: str

    @property
    def server(self) -> str:
        return f"https://{HOST}:{self.port}"

    @property
    def kubeconfig_path(self) -> Path:
        return self.run_dir / KUBECONFIG_FILE

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.pki.ca_cert)
        context.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        context.verify_mode = ssl.CERT_OPTIONAL  # a token is the other way in
        return context

    def kubeconfig(self) -> str:
        """A kubeconfig with everything inline (it can be copied anywhere root reads)."""

        def data(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        name = f"netlab-{self.lab}"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": name,
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": data(self.pki.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": f"{ADMIN_USER}@{self.lab}",
                    "user": {
                        "client-certificate-data": data(self.pki.client_cert),
                        "client-key-data": data(self.pki.client_key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": name,
                    "context": {"cluster": name, "user": f"{ADMIN_USER}@{self.lab}"},
                }
            ],
            "current-context": name,
            "preferences": {},
        }
        return json.dumps(config, indent=2) + "\n"

    def write_kubeconfig(self) -> Path:
        fd = os.open(self.kubeconfig_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.kubeconfig())
        return self.kubeconfig_path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def endpoint_for(lab: str, run_dir: Path) -> KubeEndpoint:
    """The lab's endpoint: its port, CA and token as an earlier supervisor left them
    in the run directory, or new ones."""
    port_file, token_file = run_dir / PORT_FILE, run_dir / TOKEN_FILE
    try:
        port = int(port_file.read_text())
    except (OSError, ValueError):
        port = free_port()
        port_file.write_text(f"{port}\n")
    try:
        token = token_file.read_text().strip()
    except OSError:
        token = ""
    if not token:
        token = secrets.token_hex(24)
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    return KubeEndpoint(lab, run_dir, port, load_or_make(run_dir / "pki", lab), token)


def auth_middleware(token: str) -> Callable:
    """Requests over TLS must come with the lab's client certificate or token; the
    unix socket (root's alone) needs neither."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def authenticate(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        transport = request.transport
        if transport is None or transport.get_extra_info("sslcontext") is None:
            return await handler(request)
        if transport.get_extra_info("peercert"):  # verified against the lab's CA
            return await handler(request)
        given = request.headers.get("Authorization", "").encode()
        if given and hmac.compare_digest(given, expected):
            return await handler(request)
        from netlab.apiserver.base import status

        return web.json_response(status(401, "Unauthorized", "Unauthorized"), status=401)

    return authenticate


SIGNED_IN = "system:authenticated"  # the group kube-apiserver adds to every authenticated user


def user_of(request: web.Request) -> dict:
    """Who made a request (`authentication.k8s.io/v1` UserInfo), as the authentication
    middleware let it in: the subject of its client certificate (CN the user, each O
    a group), the lab's admin for the token, root for the unix socket."""
    transport = request.transport
    if transport is None or transport.get_extra_info("sslcontext") is None:
        return {"username": "root", "groups": ["system:masters", SIGNED_IN]}
    cert = transport.get_extra_info("peercert")
    if not cert:  # in through the token, which stands for the lab's admin
        return {"username": ADMIN_USER, "groups": ["system:masters", SIGNED_IN]}
    names: dict[str, list[str]] = {}
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            names.setdefault(key, []).append(value)
    groups = [*names.get("organizationName", []), SIGNED_IN]
    return {"username": (names.get("commonName") or [""])[0], "groups": groups}
