"""What the lab API's modules share: the application's keys, the lab's side of the
API (`Actions`), the Status object and the query helpers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Protocol

from aiohttp import web

from netlab.errors import ApiError, Problem
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


def status(code: int, message: str, reason: str | None = None, details: dict | None = None) -> dict:
    """A Kubernetes `Status` object (`details`: the object and, for 422, each cause)."""
    obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, "Unknown"),
        "code": code,
    }
    if details:
        obj["details"] = details
    elif code == 404:  # as kube-apiserver sends it: kubectl debug reads details.name
        obj["details"] = {}
    return obj


class Actions(Protocol):
    """What the lab does for API calls that are more than a store write."""

    async def delete_pod(self, namespace: str, name: str) -> dict:
        """Delete a pod (stop its processes, remove it from the store); return the object."""
        ...

    async def delete_deployment(self, namespace: str, name: str) -> dict:
        """Delete a deployment and its pods; return the object."""
        ...

    async def shutdown(self, leave: bool = False) -> None:
        """Tear the lab down, or (`leave`) end only the supervisor (runs as a task after
        the API has answered 202)."""
        ...

    def log_path(self, namespace: str, pod: str, container: str | None) -> Path:
        """The log file of a container; ApiError 404 (no such container) or 400 (ambiguous)."""
        ...

    def topology(self) -> dict:
        """Racks, routers, nodes and their namespaces (objects.topology_object)."""
        ...

    def pod_metrics(self) -> list[dict]:
        """PodMetrics (metrics.k8s.io/v1beta1) of every pod that has them, without
        labels (apiserver.podmetrics adds the pod's); [] before there are any."""
        ...

    def node_metrics(self) -> list[dict]:
        """NodeMetrics of every node that has them; [] before there are any.
        (Either may be async; a lab without them serves empty lists: apiserver.podmetrics.)"""
        ...

    # Optional (looked up by name; a lab without one answers 405 or does without):
    # - `validate(res, obj)`: the write gate; 422 naming each field (writes.py)
    # - `update_<kind>(obj)`, `delete_<kind>(namespace, name)`: a kind's own update/delete
    # - `apply(text)`: manifests, as `netlab apply` takes them
    # - `exec_entry(...)`, `port_dialer(namespace, pod)`: exec and port-forward streams
    # - `node_action(name, verb, force)`: fail, recover, cordon, uncordon, drain
    # - `ready() -> bool`: the lab is built and not stopping (/readyz); a lab without it
    #   is ready whenever its API answers


FALSE = ("", "0", "f", "F", "false", "False", "FALSE")
TRUE = ("1", "t", "T", "true", "True", "TRUE")  # Go's strconv.ParseBool, as Kubernetes reads


def flag(request: web.Request, name: str) -> bool:
    """A boolean query parameter as Kubernetes parses it; 400 if it is neither."""
    value = request.query.get(name, "")
    if value in FALSE:
        return False
    if value in TRUE:
        return True
    raise ApiError(400, f"invalid {name}={value!r}: must be true or false")


def int_query(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise ApiError(400, f"invalid {name}={value!r}: must be a non-negative integer")
    return number


def gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


def invalid(kind: str, name: str, problems: list[Problem]) -> ApiError:
    """A 422 `Invalid` as kube-apiserver words it: `Deployment.apps "web" is invalid:
    spec.replicas: Invalid value: -1: must be greater than or equal to 0` (several
    problems in brackets), each with the lab's fix after it."""
    causes = [_cause(p) for p in problems]
    texts = [f"{c['field']}: {c['message']}" for c in causes]
    text = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    error = ApiError(422, f'{kind} "{name}" is invalid: {text}', "Invalid")
    kind_name, _, group = kind.partition(".")
    # kubectl prints `The Deployment "web" is invalid: ...` from these, as from kube-apiserver
    error.details = {"name": name, "group": group, "kind": kind_name, "causes": causes}  # type: ignore[attr-defined]
    return error


def _cause(problem: Problem) -> dict:
    field = problem.path.split(": ", 1)[-1]  # "Deployment/web: spec.replicas" -> the field
    message = f"{problem.message} ({problem.fix})" if problem.fix else problem.message
    reason = "FieldValueNotSupported" if "unknown field" in message else "FieldValueInvalid"
    return {"reason": reason, "message": message, "field": field}


def dry_run(request: web.Request, options: dict | None = None) -> bool:
    """`dryRun=All` on the query (or in a DeleteOptions body): validate and answer with
    the result, change nothing. Any other value is refused, as kube-apiserver does."""
    values = list(request.query.getall("dryRun", []))
    if options and isinstance(options.get("dryRun"), list):
        values += options["dryRun"]
    for value in values:
        if value != "All":
            raise ApiError(
                400, f'dryRun: Unsupported value: "{value}": supported values: "All"', "BadRequest"
            )
    return bool(values)
