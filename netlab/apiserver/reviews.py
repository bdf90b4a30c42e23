"""The reviews a client posts to learn about itself, answered and never stored:
`SelfSubjectReview` (`kubectl auth whoami`), `SelfSubjectAccessReview` (`kubectl auth
can-i VERB RESOURCE`) and `SelfSubjectRulesReview` (`kubectl auth can-i --list`).

The lab has one user who may do everything: its admin, in the group `system:masters`
(whose members kube-apiserver allows everything, before RBAC is asked). Whoever got in
is that admin (apiserver.auth), so every access review is allowed; the answer still
follows from the caller's groups, as kube-apiserver's would.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from netlab import objects
from netlab.apiserver import protobuf
from netlab.apiserver.auth import user_of
from netlab.errors import ApiError
from netlab.resources import Resource

MAX_BODY = 64 << 10
MASTERS = "system:masters"
ALLOWED_REASON = f'the lab\'s admin (group "{MASTERS}") may do everything'


def _invalid(res: Resource, path: str, value: object, detail: str) -> ApiError:
    shown = json.dumps(value) if not isinstance(value, str) else value
    return ApiError(
        422,
        f'{res.kind}.{res.group} "" is invalid: {path}: Invalid value: "{shown}": {detail}',
        "Invalid",
    )


def access_status(user: dict) -> dict:
    """SubjectAccessReviewStatus for `user` (its question already validated): the lab's
    admins (system:masters) may do everything."""
    if MASTERS in user.get("groups", ()):
        return {"allowed": True, "reason": ALLOWED_REASON}
    return {"allowed": False, "reason": "only the lab's admin may use the lab API"}


def rules_status(user: dict) -> dict:
    """SubjectRulesReviewStatus: everything for the admin, as for kube-apiserver's masters."""
    if MASTERS not in user.get("groups", ()):
        return {"resourceRules": [], "nonResourceRules": [], "incomplete": False}
    return {
        "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
        "incomplete": False,
    }


def answer(res: Resource, review: dict, user: dict) -> dict:
    """The review as the server returns it: what was asked, and its `status`."""
    spec = review.get("spec")
    if spec is not None and not isinstance(spec, dict):
        raise _invalid(res, "spec", spec, "must be an object")
    spec = spec or {}
    out = {
        "kind": res.kind,
        "apiVersion": res.api_version,
        "metadata": {"creationTimestamp": objects.now()},
    }
    if res.kind == "SelfSubjectReview":
        return {**out, "status": {"userInfo": user}}
    if res.kind == "SelfSubjectAccessReview":
        resource, other = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
        if resource is not None and other is not None:
            raise _invalid(
                res,
                "spec.nonResourceAttributes",
                other,
                "cannot be specified in combination with resourceAttributes",
            )
        if resource is None and other is None:
            raise _invalid(
                res,
                "spec.resourceAttributes",
                "null",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            )
        return {**out, "spec": spec, "status": access_status(user)}
    if res.kind == "SelfSubjectRulesReview":
        return {**out, "spec": spec, "status": rules_status(user)}
    raise ApiError(404, f"{res.full_name} is not a review the lab answers")


async def _read(request: web.Request, res: Resource) -> dict:
    body = await request.content.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise ApiError(413, f"request body larger than {MAX_BODY} bytes")
    if request.content_type == protobuf.MEDIA_TYPE:
        return protobuf.to_object(body)
    try:
        review = json.loads(body or b"{}")
    except ValueError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(review, dict):
        raise ApiError(400, f"request body must be a {res.kind} object")
    return review


async def post_review(request: web.Request, res: Resource) -> web.Response:
    """POST of a review: 201 with its answer, as kube-apiserver answers a create."""
    review = await _read(request, res)
    if review.get("kind") not in (None, res.kind):
        raise ApiError(400, f"the body is a {review['kind']!r}, not a {res.kind}")
    return web.json_response(answer(res, review, user_of(request)), status=201)


def add_routes(app: web.Application, resources: list[Resource]) -> None:
    """POST routes for the reviews among `resources` (those not stored)."""
    for res in resources:
        if not res.stored and "create" in res.verbs:
            handler: Callable[[web.Request], Awaitable[web.Response]] = functools.partial(
                post_review, res=res
            )
            app.router.add_post(f"{res.base_path}/{res.plural}", handler)
