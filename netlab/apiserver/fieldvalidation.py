"""Unknown fields in what a client writes, reported as kube-apiserver reports them.

The request's `fieldValidation` says what happens to a field the kind's schema (as
Kubernetes defines it) does not have: `Strict` (kubectl's default) refuses the write
with 400 and kube-apiserver's wording, `Warn` (the default for other clients) drops
the field and says so in a `Warning` header, `Ignore` drops it silently. Fields that
Kubernetes defines but the lab does not support are the lab's validation's business,
after this. Kinds Kubernetes does not define (the mesh kinds) are not checked here.
"""

from __future__ import annotations

from aiohttp import web

from netlab.apiserver import schema
from netlab.errors import ApiError
from netlab.resources import Resource

WARNINGS = web.RequestKey("warnings", list)
"""The warnings to send back (`Warning: 299 - "..."` headers)."""

DIRECTIVES = ("Ignore", "Strict", "Warn")


def directive(request: web.Request) -> str:
    value = request.query.get("fieldValidation") or "Warn"
    if value not in DIRECTIVES:
        raise ApiError(
            400,
            f'fieldValidation: Unsupported value: "{value}": supported values: '
            + ", ".join(f'"{d}"' for d in DIRECTIVES),
            "BadRequest",
        )
    return value


def check(
    request: web.Request, res: Resource, obj: dict, verb: str, before: dict | None = None
) -> dict:
    """`obj` as the lab should take it: 400 under Strict if it has fields Kubernetes does
    not define for the kind, else without them (with warnings under Warn). `verb` is
    `create`, `update` or `patch` (their messages differ, as in kube-apiserver); for a
    patch, `before` is the stored object, whose own fields are not the client's doing."""
    kind_schema = schema.for_kind(res.group, res.version, res.kind)
    mode = directive(request)
    if not kind_schema.known:
        return obj
    unknown, old = schema.unknown_fields(obj, kind_schema), set()
    if unknown and before is not None:  # the stored object's own are not the client's doing
        old = set(schema.unknown_fields(before, kind_schema))
        unknown = [p for p in unknown if p not in old]
    if not unknown:
        return obj
    errors = [f'unknown field "{path}"' for path in unknown]
    if mode == "Strict":
        message = "strict decoding error: " + ", ".join(errors)
        if verb != "patch":
            message = (
                f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: '
                + message
            )
        raise ApiError(400, message, "BadRequest")
    if mode == "Warn":
        request.setdefault(WARNINGS, []).extend(errors)
    return schema.prune_unknown(obj, kind_schema, keep=old)[0]


def check_apply(res: Resource, intent: dict, namespace: str | None, name: str) -> None:
    """Server-side apply: a field the schema does not have fails the apply whatever
    fieldValidation says, in structured-merge-diff's words (kube-apiserver answers 500
    for it, a known bug; the lab answers 400)."""
    kind_schema = schema.for_kind(res.group, res.version, res.kind)
    if not kind_schema.known:
        return
    unknown = schema.unknown_fields(intent, kind_schema, apply_paths=True)
    if unknown:
        where = f"{namespace}/{name}" if namespace else f"/{name}"
        group = f"{res.group}/{res.version}" if res.group else f"/{res.version}"
        raise ApiError(
            400,
            f"failed to create typed patch object ({where}; {group}, Kind={res.kind}): "
            f"{unknown[0]}: field not declared in schema",
            "BadRequest",
        )


async def add_warnings(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: the request's warnings as `Warning` headers."""
    for text in request.get(WARNINGS, ()):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        response.headers.add("Warning", f'299 - "{escaped}"')
