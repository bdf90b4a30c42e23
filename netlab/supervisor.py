"""`netlab up`: the lab supervisor. It owns the Lab (which serves the lab
API on a unix socket in the run directory) and tears everything down on
SIGINT, SIGTERM, SIGHUP or an API shutdown.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from netlab.lab import Lab
from netlab.lab_actions import LabActions
from netlab.paths import SOCKET_NAME, socket_path
from netlab.realize import cleanup

__all__ = ["SOCKET_NAME", "LabActions", "run", "socket_path"]


async def run(
    lab: Lab,
    on_ready: Callable[[Lab], None],
    timeout: float = 60.0,
    on_prepared: Callable[[Lab], None] | None = None,
    adopt: bool = False,
) -> None:
    """Bring the lab up (`adopt`: take over the running one), keep it until told to
    stop, then tear it down, or leave it running if asked to (`netlab detach`).
    `on_prepared` runs once the run directory exists (a detached supervisor
    moves its output into it there)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    lab.on_shutdown = lambda: loop.call_soon_threadsafe(stop.set)
    try:
        if adopt:  # a failure leaves the lab as it was found: no teardown
            await asyncio.to_thread(lab.check_adoptable)
            cleanup.write_supervisor(lab.run_dir)
            if on_prepared is not None:
                on_prepared(lab)
            await asyncio.to_thread(lab.adopt, timeout)
        else:
            # a refusal (the lab runs already) must leave that lab alone: no teardown
            await asyncio.to_thread(lab.prepare)
        try:
            if not adopt:
                cleanup.write_supervisor(lab.run_dir)
                if on_prepared is not None:
                    on_prepared(lab)
                await asyncio.to_thread(lab.build, timeout)
            on_ready(lab)
            await stop.wait()
        finally:
            await asyncio.to_thread(lab.leave if lab.leaving else lab.stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
