"""Where the Services, Endpoints and Pods come from: a JSON file, or the lab API.

Both are `labwatch` sources (list+watch with relist on 410, like client-go's
reflector) over the three resources the records are made of; every batch of
events read calls `on_change()` once and the caller coalesces rebuilds.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from labdns.records import split_objects
from labwatch import ApiSource, FileSource, Gone, SourceError
from labwatch import Objects as _Objects

__all__ = ["ApiSource", "FileSource", "Gone", "Objects", "SourceError", "make_source"]

RESOURCES = {"services": "Service", "endpoints": "Endpoints", "pods": "Pod"}
PATHS = {resource: f"/api/v1/{resource}" for resource in RESOURCES}


class Objects(_Objects):
    """The current Services, Endpoints and Pods."""

    def __init__(self) -> None:
        super().__init__(RESOURCES)

    def lists(self) -> tuple[list[dict], list[dict], list[dict]]:
        """(services, endpoints, pods)."""
        return tuple(self.list(r) for r in RESOURCES)  # type: ignore[return-value]


def _split(items: list) -> dict[str, list]:
    return dict(zip(RESOURCES, split_objects(items), strict=True))


def make_source(
    objects: Objects,
    on_change: Callable[[], None],
    api_socket: str | None = None,
    records: str | None = None,
) -> FileSource | ApiSource:
    """The source the CLI asked for (exactly one of the two)."""
    if (api_socket is None) == (records is None):
        raise SourceError("give exactly one of --api-socket and --records")
    if api_socket is not None:
        return ApiSource(os.fspath(api_socket), objects, on_change, PATHS)
    return FileSource(os.fspath(records), objects, on_change, _split)
