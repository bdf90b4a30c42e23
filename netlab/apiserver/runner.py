"""Putting the finished application on its sites, as aiohttp's AppRunner and Sites do:
the unix socket in the lab's run directory (root's alone), and TLS on a loopback port
for kubectl (`KubeEndpoint`); `ApiServer` runs them on an event loop in a thread of its
own, so a lab that is a topology script's `with Lab(...)` serves its API too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import ssl
import threading
from concurrent.futures import Future
from pathlib import Path

from aiohttp import web

from netlab.apiserver.auth import HOST, KubeEndpoint
from netlab.errors import ApiError


async def serve(
    app: web.Application,
    socket_path: str | os.PathLike,
    tls: tuple[str, int, ssl.SSLContext] | None = None,
) -> web.AppRunner:
    """Serve `app` on a unix socket (mode 0600; parent made 0700; a stale socket replaced),
    and with `tls` (host, port, context) also on that TCP port.

    Returns the started runner; stop with `await runner.cleanup()`. ApiError 409 if another
    server is live on the socket or the path is not a socket.
    """
    path = Path(socket_path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if not path.is_socket():
            raise ApiError(409, f"{path} exists and is not a socket; not replacing it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:  # nobody listening: a stale socket from an earlier run
            path.unlink()
        else:
            raise ApiError(409, f"a lab API is already serving on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
    except OSError:
        sock.close()
        raise
    app.on_cleanup.append(functools.partial(_remove_socket, path=path))
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        if tls is not None:
            host, port, context = tls
            try:
                await web.TCPSite(
                    runner, host, port, ssl_context=context, reuse_address=True
                ).start()
            except OSError as exc:
                raise ApiError(
                    409,
                    f"cannot serve the lab API on {host}:{port} ({exc.strerror}); "
                    f"remove {Path(socket_path).parent / 'api.port'} to have another port chosen",
                ) from exc
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def _remove_socket(_app: web.Application, path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_socket():
            path.unlink()


class ApiServer:
    """aiohttp's runner on a unix socket, in a thread of its own."""

    def __init__(self, app: web.Application, path: Path, kube: KubeEndpoint | None = None):
        self.app = app
        self.path = path
        self.kube = kube  # also over TLS on loopback, for kubectl
        self.loop = asyncio.new_event_loop()
        self.runner: web.AppRunner | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, name="lab-api", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self.thread.start()
        tls = (HOST, self.kube.port, self.kube.ssl_context()) if self.kube else None
        future: Future = asyncio.run_coroutine_threadsafe(
            serve(self.app, self.path, tls), self.loop
        )
        try:
            self.runner = future.result(timeout)
        except BaseException:
            self.stop()
            raise
        if self.kube is not None:
            self.kube.write_kubeconfig()

    def stop(self, timeout: float = 10.0) -> None:
        """End every watch and log stream, remove the socket, end the thread."""
        if self.runner is not None and self.thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop)
            try:
                future.result(timeout)
            except Exception:  # the socket is removed by the lab's cleanup anyway
                pass
            self.runner = None
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout)
        if not self.thread.is_alive() and not self.loop.is_closed():
            self.loop.close()
