"""What the lab built, as its node agents know it: the plan of every node and pod
sandbox (namespace, veth, address, template), saved in the run directory when it
is made and removed with it. Kubelet keeps such checkpoints, and the container
runtime its sandboxes' metadata, so that a restarted kubelet finds its pods
without re-planning them; a restarted supervisor reads these the same way.

The plans are plain dataclasses, pickled (the run directory is root's alone,
mode 0700, and nothing but the lab writes there). Each file is replaced
atomically, so a crash leaves the old one or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
from pathlib import Path
from types import MappingProxyType
from typing import Any

from netlab.plan.names import bounded


def frozen(items: dict) -> MappingProxyType:
    return MappingProxyType(items)


class _Pickler(pickle.Pickler):
    """Pickles the spec's frozen maps (MappingProxyType) as what they wrap."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is MappingProxyType:
            return frozen, (dict(obj),)
        return NotImplemented


class Checkpoints:
    """Plans by kind ("nodes", "pods") and key, one file each under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.pickle"

    def save(self, kind: str, key: str, plan: object) -> None:
        path = self._path(kind, key)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        buffer = io.BytesIO()
        _Pickler(buffer).dump(plan)
        partial = path.with_suffix(".partial")
        partial.write_bytes(buffer.getvalue())
        os.replace(partial, path)

    def remove(self, kind: str, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(kind, key).unlink()

    def load(self, kind: str) -> list[Any]:
        """Every plan of this kind, in the order of their keys."""
        folder = self.root / kind
        if not folder.is_dir():
            return []
        plans = []
        for path in sorted(folder.glob("*.pickle")):
            with path.open("rb") as f:
                plans.append(pickle.load(f))  # noqa: S301 (the lab's own files, root's only)
        return plans


def pod_key(namespace: str, name: str) -> str:
    """The file name of a pod's checkpoint (cut to fit, for Kubernetes' 253-long names)."""
    return bounded(f"{namespace}_{name}")
