"""The lab's long-running parts as one ordered group, as controller-runtime's manager
runs its runnables: started in order, stopped in reverse order, each stop waited for,
and a part that failed to stop does not keep the others running."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Parts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: list[tuple[str, Callable[[], None]]] = []

    def start(self, name: str, start: Callable[[], None], stop: Callable[[], None]) -> None:
        """Start one part now; it is stopped before every part started earlier."""
        start()
        with self.lock:
            self.started.append((name, stop))

    def running(self, name: str, stop: Callable[[], None]) -> None:
        """A part that is already running (adopted, or started by its maker)."""
        with self.lock:
            self.started.append((name, stop))

    def names(self) -> list[str]:
        with self.lock:
            return [name for name, _ in self.started]

    def stop(self) -> None:
        """Stop every started part, the last started first; each stop returns once
        its part has ended."""
        while True:
            with self.lock:
                if not self.started:
                    return
                name, stop = self.started.pop()
            try:
                stop()
            except Exception:
                log.exception("stopping %s failed", name)
