"""Where running labs keep their state: light enough for every CLI command to import."""

from __future__ import annotations

import os
from pathlib import Path

RUN_ROOT = Path("/run/netlab")  # one directory per lab: API socket, logs, pids, captures
# what a lab keeps on disk (not in /run, a tmpfs on most machines): its nodes' disks
# (hostPath, emptyDir), its PersistentVolumes' images; removed with the lab
STATE_ROOT = Path(os.environ.get("NETLAB_STATE_ROOT", "/var/lib/netlab/labs"))
SOCKET_NAME = "api.sock"


def socket_path(run_dir: Path) -> Path:
    """The lab API's unix socket in a lab's run directory."""
    return run_dir / SOCKET_NAME


def state_dir(lab: str) -> Path:
    """A lab's directory on disk: `nodes/<node>/` (each node's own disk) and `disks/`
    (its PersistentVolumes' backing images, the lab's "cloud" disks)."""
    return STATE_ROOT / lab


def node_disk(lab: str, node: str) -> Path:
    """A node's own disk: hostPath volumes under `hostpath/`, disk-backed emptyDirs under
    `pods/<pod>/`, attached PersistentVolumes mounted under `plugins/pv/<pv>/globalmount`."""
    return state_dir(lab) / "nodes" / node


def disks_dir(lab: str) -> Path:
    """The lab's PersistentVolumes' images (`<pv>.img`), attached to one node at a time."""
    return state_dir(lab) / "disks"
