"""Where running labs keep their state: light enough for every CLI command to import."""

from __future__ import annotations

from pathlib import Path

RUN_ROOT = Path("/run/netlab")  # one directory per lab: API socket, logs, pids, captures
SOCKET_NAME = "api.sock"


def socket_path(run_dir: Path) -> Path:
    """The lab API's unix socket in a lab's run directory."""
    return run_dir / SOCKET_NAME
