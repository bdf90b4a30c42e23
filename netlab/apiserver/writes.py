"""The lab API's writes, as Kubernetes clients send them: POST to create, PUT to
replace, PATCH (JSON merge, JSON patch, strategic merge, server-side apply), the scale
subresource, and DELETE.

Every write passes one gate (`_checked`): the object as it would be stored is validated
by the lab (`Actions.validate`) as creating it would be, and a write that would break
the lab is refused with a 422 Status and changes nothing. A dry run (`dryRun=All`,
kubectl's --dry-run=server and diff) passes the same gate, then answers with the
object as it would be stored (`Store.preview`), storing nothing."""

from __future__ import annotations

import json
import secrets

import yaml
from aiohttp import web

from netlab import objects
from netlab.apiserver import fieldvalidation
from netlab.apiserver import protobuf as kube_protobuf
from netlab.apiserver import schema as kube_schema
from netlab.apiserver.base import ACTIONS, STORE, dry_run
from netlab.apiserver.patch import apply_patch
from netlab.apiserver.strategic import apply_merge
from netlab.errors import ApiError
from netlab.resources import Resource
from netlab.store import stale

MAX_PATCH_BYTES = 3 << 20  # kube-apiserver's MaxRequestBodyBytes: room for a 1 MiB ConfigMap


async def _body(request: web.Request, protobuf: bool = False) -> bytes:
    """The request's body; protobuf only where the caller reads it (`protobuf`)."""
    if request.content_type == kube_protobuf.MEDIA_TYPE and not protobuf:
        raise ApiError(
            415,
            f"the lab API reads {kube_protobuf.MEDIA_TYPE} only for creating objects: "
            "send application/json",
            "UnsupportedMediaType",
        )
    body = bytearray()  # read() gives what has arrived, up to its limit: read on to the end
    while len(body) <= MAX_PATCH_BYTES:
        chunk = await request.content.read(MAX_PATCH_BYTES + 1 - len(body))
        if not chunk:
            break
        body += chunk
    if len(body) > MAX_PATCH_BYTES:
        raise ApiError(413, f"request body larger than {MAX_PATCH_BYTES} bytes")
    return bytes(body)


async def _update(request: web.Request, res: Resource, obj: dict) -> dict:
    """Hand a changed object to the lab, which writes it (409 if the stored object
    changed meanwhile: its resourceVersion is the base of the change). Kinds without
    an update of their own are applied again, as `netlab apply` would."""
    action = getattr(request.app[ACTIONS], f"update_{res.singular}", None)
    if action is not None:
        return await action(obj)
    meta = obj["metadata"]
    await _apply_manifest(request, objects.applyable(obj))
    return request.app[STORE].get(res, meta.get("namespace"), meta["name"])


async def _apply_manifest(request: web.Request, manifest: dict) -> list[dict]:
    action = getattr(request.app[ACTIONS], "apply", None)
    if action is None:
        raise ApiError(405, "this lab does not take manifests")
    return await action(json.dumps(manifest))


async def _checked(request: web.Request, res: Resource, obj: dict) -> bool:
    """The one gate every write passes: the object as it would be stored, validated
    against the lab as creating it would be (422 `Invalid` naming each field); True if
    the request is a dry run (then the caller stores nothing)."""
    validate = getattr(request.app[ACTIONS], "validate", None)
    if validate is not None:
        await validate(res, obj)
    return dry_run(request)


def _identify(obj: object, res: Resource, request: web.Request, what: str) -> dict:
    """The body as an object of this resource: `kind` and `apiVersion` taken from the URL
    when left out (as kube-apiserver does; typed clients often leave them unset), the
    namespace from the URL; 400 if the body names another kind or namespace."""
    if not isinstance(obj, dict) or not isinstance(obj.get("metadata", {}), dict):
        raise ApiError(400, f"{what} must be a {res.kind} object", "BadRequest")
    kind, api_version = obj.get("kind") or res.kind, obj.get("apiVersion") or res.api_version
    if kind != res.kind or api_version != res.api_version:
        raise ApiError(
            400,
            f"{what} is a {api_version} {kind}, not a {res.api_version} {res.kind}; "
            "send it to its own collection",
            "BadRequest",
        )
    obj["kind"], obj["apiVersion"] = kind, api_version
    meta = obj.setdefault("metadata", {})
    namespace = request.match_info.get("namespace")
    if res.namespaced:
        if meta.get("namespace") not in (None, "", namespace):
            raise ApiError(
                400, f"the namespace of the object ({meta['namespace']}) does not match the "
                f"namespace on the request ({namespace})", "BadRequest"
            )  # fmt: skip
        meta["namespace"] = namespace
    return obj


async def _object_body(request: web.Request, empty: bytes = b"null") -> object:
    """The body as an object: protobuf (client-go's typed clients, kubectl's generators)
    or JSON."""
    body = await _body(request, protobuf=True)
    if request.content_type == kube_protobuf.MEDIA_TYPE:
        return kube_protobuf.to_object(body)
    return _json_body(body or empty)


def _json_body(body: bytes) -> object:
    try:
        return json.loads(body or b"null")
    except ValueError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", "BadRequest") from None


GENERATED_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's, as in pod names


def _generated_name(base: str) -> str:
    """`generateName`: the prefix (cut to leave room) and five random characters."""
    return base[: 253 - 5] + "".join(secrets.choice(GENERATED_CHARS) for _ in range(5))


async def create_item(request: web.Request, res: Resource) -> web.Response:
    """POST to a collection (kubectl create, and apply of a new object)."""
    obj = _identify(await _object_body(request), res, request, "request body")
    obj = fieldvalidation.check(request, res, obj, "create")
    meta, namespace = obj["metadata"], request.match_info.get("namespace")
    if not meta.get("name") and isinstance(meta.get("generateName"), str):
        meta["name"] = _generated_name(meta.pop("generateName"))
    if not meta.get("name"):
        raise ApiError(422, f"{res.kind}: metadata.name: Required value", "Invalid")
    try:
        request.app[STORE].get(res, namespace, meta["name"])
    except ApiError:
        pass
    else:
        raise ApiError(409, f'{res.full_name} "{meta["name"]}" already exists', "AlreadyExists")
    if await _checked(request, res, obj):
        return web.json_response(request.app[STORE].preview(obj), status=201)
    await _apply_manifest(request, objects.applyable(obj))
    return web.json_response(request.app[STORE].get(res, namespace, meta["name"]), status=201)


async def replace_item(request: web.Request, res: Resource) -> web.Response:
    """PUT to an object (kubectl replace): the body is the whole new object. A
    resourceVersion in it must be the stored one (409 if not); none replaces whatever
    is stored, as kube-apiserver allows."""
    name, namespace = request.match_info["name"], request.match_info.get("namespace")
    obj = _identify(_json_body(await _body(request)), res, request, "request body")
    meta = obj["metadata"]
    if meta.setdefault("name", name) != name:
        raise ApiError(
            400, f"the name of the object ({meta['name']}) does not match the name on the URL "
            f"({name})", "BadRequest"
        )  # fmt: skip
    current = request.app[STORE].get(res, namespace, name)
    obj = fieldvalidation.check(request, res, obj, "update", before=current)
    meta = obj["metadata"]
    if meta.get("resourceVersion") in (None, ""):
        meta["resourceVersion"] = current["metadata"]["resourceVersion"]
    if meta["resourceVersion"] != current["metadata"]["resourceVersion"]:
        raise stale(res.full_name, name)
    if await _checked(request, res, obj):
        return web.json_response(request.app[STORE].preview(obj))
    return web.json_response(await _update(request, res, obj))


PATCH_ATTEMPTS = 5  # a patch is applied to the newest object; a write in between retries it


APPLY_PATCH = "application/apply-patch+yaml"


async def _server_side_apply(
    request: web.Request, res: Resource, namespace: str | None, name: str, body: bytes
) -> web.Response:
    """`kubectl apply --server-side`: the body is the whole intent (YAML; JSON is YAML
    too), applied as `netlab apply` applies a manifest, creating the object if it is
    new. Field ownership between managers (managedFields, conflicts) is not tracked."""
    try:
        manifest = yaml.safe_load(body.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ApiError(400, f"the apply patch is not valid YAML: {exc}", "BadRequest") from None
    manifest = _identify(manifest, res, request, "the apply patch")
    fieldvalidation.check_apply(res, manifest, namespace, name)
    meta = manifest["metadata"]
    if meta.setdefault("name", name) != name:
        raise ApiError(
            400, f"metadata.name {meta['name']!r} does not match the URL's {name!r}", "BadRequest"
        )
    store = request.app[STORE]
    try:
        current = store.get(res, namespace, name)
    except ApiError:
        current = None
    pod_change = current is not None and res.plural == "pods"
    intent = apply_merge(current, manifest, _schema(res)) if pod_change else manifest
    if await _checked(request, res, intent):
        return web.json_response(store.preview(intent), status=200 if current else 201)
    if pod_change:  # a pod takes few changes: checked
        return web.json_response(await _update(request, res, intent))
    await _apply_manifest(request, manifest)
    return web.json_response(store.get(res, namespace, name), status=200 if current else 201)


async def patch_item(request: web.Request, res: Resource) -> web.Response:
    name, namespace = request.match_info["name"], request.match_info.get("namespace")
    body = await _body(request)
    if request.content_type == APPLY_PATCH:
        return await _server_side_apply(request, res, namespace, name, body)
    for attempt in range(PATCH_ATTEMPTS):
        current = request.app[STORE].get(res, namespace, name)
        patched = apply_patch(current, body, request.content_type, _schema(res))
        patched = fieldvalidation.check(request, res, patched, "patch", before=current)
        pinned = _same_identity(current, patched)
        _identify(patched, res, request, "the patched object")
        if await _checked(request, res, patched):
            return web.json_response(request.app[STORE].preview(patched))
        try:
            return web.json_response(await _update(request, res, patched))
        except ApiError as exc:  # a controller wrote meanwhile: patch the newer object
            if exc.status != 409 or pinned or attempt == PATCH_ATTEMPTS - 1:
                raise
    raise AssertionError("not reached")


def _same_identity(current: dict, changed: dict) -> bool:
    """Name and namespace unchanged (422 if not); True if the change names the
    resourceVersion it was made against (then a conflict is the client's to resolve)."""
    meta = changed.get("metadata")
    if not isinstance(meta, dict):
        raise ApiError(422, "metadata: Required value", "Invalid")
    for field in ("name", "namespace"):
        if meta.get(field, current["metadata"].get(field)) != current["metadata"].get(field):
            raise ApiError(422, f"metadata.{field}: Invalid value: field is immutable", "Invalid")
    pinned = meta.get("resourceVersion") not in (None, current["metadata"]["resourceVersion"])
    meta.setdefault("resourceVersion", current["metadata"]["resourceVersion"])
    return pinned


def _schema(res: Resource) -> kube_schema.Schema:
    """The kind's schema, as Kubernetes defines it (open for the mesh kinds)."""
    return kube_schema.for_kind(res.group, res.version, res.kind)


SCALE_SCHEMA = kube_schema.Schema(
    {"$ref": kube_schema.REF_PREFIX + "io.k8s.api.autoscaling.v1.Scale"}
)


def scale_object(obj: dict) -> dict:
    """The `autoscaling/v1` Scale of a Deployment."""
    meta = obj["metadata"]
    labels = (obj.get("spec") or {}).get("selector", {}).get("matchLabels", {})
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        },
    }


async def get_scale(request: web.Request, res: Resource) -> web.Response:
    name, namespace = request.match_info["name"], request.match_info.get("namespace")
    return web.json_response(scale_object(request.app[STORE].get(res, namespace, name)))


async def write_scale(request: web.Request, res: Resource) -> web.Response:
    """PATCH or PUT .../scale: only spec.replicas changes."""
    name, namespace = request.match_info["name"], request.match_info.get("namespace")
    body = await _body(request)
    for attempt in range(PATCH_ATTEMPTS):
        try:
            return await _scale_once(request, res, namespace, name, body)
        except ApiError as exc:
            if exc.status != 409 or request.method == "PUT" or attempt == PATCH_ATTEMPTS - 1:
                raise
    raise AssertionError("not reached")


async def _scale_once(request, res, namespace, name, body) -> web.Response:
    current = request.app[STORE].get(res, namespace, name)
    base = scale_object(current)
    if request.method == "PUT":
        scale = _json_body(body)
        if not isinstance(scale, dict):
            raise ApiError(400, "request body must be a Scale object")
    else:
        scale = apply_patch(base, body, request.content_type, SCALE_SCHEMA)
    replicas = (scale.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        must = (
            "must be an integer"
            if not isinstance(replicas, int) or isinstance(replicas, bool)
            else "must be greater than or equal to 0"
        )
        raise ApiError(
            422,
            f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
            f"{json.dumps(replicas)}: {must}",
            "Invalid",
        )
    wanted = (scale.get("metadata") or {}).get("resourceVersion")
    changed = dict(current, spec=dict(current.get("spec") or {}, replicas=replicas))
    changed["metadata"] = dict(
        current["metadata"], resourceVersion=wanted or current["metadata"]["resourceVersion"]
    )
    if await _checked(request, res, changed):
        return web.json_response(scale_object(request.app[STORE].preview(changed)))
    return web.json_response(scale_object(await _update(request, res, changed)))


async def delete_item(request: web.Request, res: Resource) -> web.StreamResponse:
    action = getattr(request.app[ACTIONS], f"delete_{res.singular}", None)
    if "delete" not in res.verbs or action is None:
        raise ApiError(405, f"{res.full_name} cannot be deleted through the lab API")
    options: dict = {}
    if request.can_read_body:  # DeleteOptions (kubectl sends one), JSON or protobuf
        options = await _object_body(request, empty=b"{}")
        if not isinstance(options, dict) or options.get("kind", "DeleteOptions") != "DeleteOptions":
            raise ApiError(400, "request body must be a DeleteOptions object")
    name = request.match_info["name"]
    namespace = request.match_info.get("namespace")
    current = request.app[STORE].get(res, namespace, name)  # 404 before asking the lab
    if dry_run(request, options):  # what would be deleted, still there
        return web.json_response(current)
    return web.json_response(await action(namespace, name))


async def write_status(request: web.Request, res: Resource) -> web.Response:
    """PUT/PATCH .../status: in a lab, status is what its kubelets and controllers
    observe; a client's write would be overwritten at once, so it is refused."""
    raise ApiError(
        405,
        f"the status of {res.full_name} is written by the lab's own node agents and "
        "controllers; change the spec instead",
        "MethodNotAllowed",
    )
