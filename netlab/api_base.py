"""What the lab API's modules share: the application's keys and the Status object."""

from __future__ import annotations

import asyncio

from aiohttp import web

from netlab.store import Store

STORE = web.AppKey("store", Store)
ACTIONS = web.AppKey("actions", object)
STREAMS = web.AppKey("streams", set)  # close() of each open watch and log stream
CLOSING = web.AppKey("closing", asyncio.Event)
TASKS = web.AppKey("tasks", set)

_REASONS = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    409: "AlreadyExists",
    410: "Expired",
    422: "Invalid",
    500: "InternalError",
    503: "ServiceUnavailable",
}


def status(code: int, message: str, reason: str | None = None) -> dict:
    """A Kubernetes `Status` object."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, "Unknown"),
        "code": code,
    }
