"""`netlab up`: the lab supervisor. It owns the Lab, serves the lab API on a
unix socket in the run directory, and tears everything down on SIGINT,
SIGTERM, SIGHUP or an API shutdown.

Kernel work runs on one worker thread (changes to the lab are serialized);
the API and its watches run on the asyncio loop.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from netlab.api import make_app, serve
from netlab.errors import ApiError, NetlabError, NotFound
from netlab.lab import Lab
from netlab.realize import cleanup

SOCKET_NAME = "api.sock"


def socket_path(run_dir: Path) -> Path:
    return run_dir / SOCKET_NAME


class LabActions:
    """What the API may ask of the lab (netlab.api.Actions)."""

    def __init__(self, lab: Lab, executor: ThreadPoolExecutor, stop: asyncio.Event):
        self.lab = lab
        self.executor = executor
        self.stop = stop

    async def _run(self, call: Callable, *args):
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor, call, *args)
        except NotFound as exc:
            raise ApiError(404, str(exc)) from exc
        except NetlabError as exc:
            raise ApiError(400, str(exc)) from exc

    async def delete_pod(self, namespace: str, name: str) -> dict:
        obj = self.lab.store.get("pods", namespace, name)
        await self._run(self.lab.delete_pod, name, namespace)
        return obj

    async def delete_deployment(self, namespace: str, name: str) -> dict:
        obj = self.lab.store.get("deployments", namespace, name)
        await self._run(self.lab.delete_deployment, name, namespace)
        return obj

    async def shutdown(self) -> None:
        self.stop.set()

    def log_path(self, namespace: str, pod: str, container: str | None) -> Path:
        runtime = self.lab.pods.get((namespace, pod))
        if runtime is None:
            raise ApiError(404, f'pods "{pod}" not found')
        names = [c.name for c in runtime.plan.template.containers]
        if container is None:
            if len(names) > 1:
                raise ApiError(
                    400,
                    f"a container name must be specified for pod {pod}, choose one of: {names}",
                )
            container = names[0]
        if container not in names:
            raise ApiError(400, f"container {container} is not valid for pod {pod}")
        return self.lab.log_path(runtime.plan, container)


async def run(
    lab: Lab,
    on_ready: Callable[[Lab], None],
    timeout: float = 60.0,
    on_prepared: Callable[[Lab], None] | None = None,
) -> None:
    """Bring the lab up, serve its API until told to stop, then tear it down.
    `on_prepared` runs once the run directory exists (a detached supervisor
    moves its output into it there)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lab")
    runner = None
    try:
        # a refusal (the lab runs already) must leave that lab alone: no teardown
        await loop.run_in_executor(executor, lab.prepare)
    except BaseException:
        executor.shutdown(wait=True)
        raise
    try:
        cleanup.write_supervisor(lab.run_dir)
        if on_prepared is not None:
            on_prepared(lab)
        await loop.run_in_executor(executor, lab.build, timeout)
        app = make_app(lab.store, LabActions(lab, executor, stop))
        runner = await serve(app, socket_path(lab.run_dir))
        on_ready(lab)
        await stop.wait()
    finally:
        if runner is not None:
            await runner.cleanup()
        await loop.run_in_executor(executor, lab.stop)
        executor.shutdown(wait=True)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
