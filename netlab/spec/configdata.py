"""ConfigMaps and Secrets (core v1), read and checked as kube-apiserver validates them.

A ConfigMap holds `data` (strings) and `binaryData` (base64); a Secret holds `data`
(base64) and `stringData` (strings, merged into `data` when the Secret is stored, as
kube-apiserver does), and a `type` whose well-known values need well-known keys. Keys
are config keys (`[-._a-zA-Z0-9]+`, at most 253, not `.`/`..`/`..x`); the values of
one object total at most 1 MiB. `immutable: true` forbids later changes of the data
(`immutable_problems`, checked by whoever writes the store).

The reader turns a manifest into a `ConfigDataSpec` whose `manifest` is the object as
the store keeps it; `decoded` gives the bytes of every key, as kubelet writes them.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from netlab.spec.validate import Checker, describe, join

MAX_SIZE = 1024 * 1024  # core.MaxSecretSize: a ConfigMap's or Secret's values in all
KEY_MAX = 253
KEY_CHARS = frozenset("-._abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
KEY_RULE = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' "
    "(e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is "
    "'[-._a-zA-Z0-9]+')"
)
CONFIG_MAP_FIELDS = ("data", "binaryData", "immutable")
SECRET_FIELDS = ("data", "stringData", "type", "immutable")
OPAQUE = "Opaque"
IMMUTABLE = "field is immutable when `immutable` is set"
# well-known Secret types -> the keys kube-apiserver requires (ValidateSecret)
TLS = "kubernetes.io/tls"
DOCKER_CONFIG_JSON = "kubernetes.io/dockerconfigjson"
DOCKER_CFG = "kubernetes.io/dockercfg"
BASIC_AUTH = "kubernetes.io/basic-auth"
SSH_AUTH = "kubernetes.io/ssh-auth"
SERVICE_ACCOUNT_TOKEN = "kubernetes.io/service-account-token"
SERVICE_ACCOUNT_NAME = "kubernetes.io/service-account.name"


@dataclass(frozen=True)
class ConfigDataSpec:
    """A ConfigMap or Secret as the store keeps it (a Secret's stringData merged into
    its base64 data, its type defaulted to Opaque)."""

    kind: str  # "ConfigMap" | "Secret"
    name: str
    namespace: str
    manifest: dict[str, Any]

    @property
    def plural(self) -> str:
        return "configmaps" if self.kind == "ConfigMap" else "secrets"


def key_problems(key: str) -> list[str]:
    """What is wrong with a config key, in kube-apiserver's words (IsConfigMapKey)."""
    problems = []
    if len(key) > KEY_MAX:
        problems.append(f"must be no more than {KEY_MAX} characters")
    if not key or not set(key) <= KEY_CHARS:
        problems.append(KEY_RULE)
    if key == ".":
        problems.append("must not be '.'")
    elif key == "..":
        problems.append("must not be '..'")
    elif key.startswith(".."):
        problems.append("must not start with '..'")
    return problems


def b64decode(text: str) -> bytes:
    """Base64 as Go's encoding/json reads []byte (standard alphabet, padded; line
    breaks ignored); binascii.Error if it is not."""
    return base64.b64decode(text.replace("\r", "").replace("\n", ""), validate=True)


def _strings(obj: dict, field: str, path: str, checker: Checker, fix: str) -> dict[str, str] | None:
    """A map of config keys to strings (data, stringData); None if absent or wrong."""
    value = checker.take(obj, field, path, "mapping")
    if value is None:
        return None
    here, good = join(path, field), True
    for key, text in value.items():
        where = f"{here}[{key}]"
        if not isinstance(key, str):
            checker.add(where, f"key {key!r} is not a string", f"quote it: '{key}'")
            good = False
            continue
        for problem in key_problems(key):
            checker.add(where, f"Invalid value: {key!r}: {problem}", "rename the key")
            good = False
        if not isinstance(text, str):
            quote = f"quote it: '{text}'; " if isinstance(text, int | float | bool) else ""
            checker.add(where, f"expected a string, got {describe(text)}", quote + fix)
            good = False
    return dict(value) if good else None


def _base64(
    obj: dict, field: str, path: str, checker: Checker, fix: str
) -> dict[str, bytes] | None:
    """A map of config keys to base64 text (binaryData, a Secret's data), decoded."""
    value = _strings(obj, field, path, checker, fix)
    if value is None:
        return None
    out, good = {}, True
    for key, text in value.items():
        try:
            out[key] = b64decode(text)
        except (binascii.Error, ValueError):
            where = f"{join(path, field)}[{key}]"
            checker.add(where, f"the value of {key!r} is not base64 (illegal base64 data)", fix)
            good = False
    return out if good else None


def _size(path: str, field: str, total: int, checker: Checker, fix: str) -> None:
    if total > MAX_SIZE:
        checker.add(
            join(path, field),
            f"Too long: must have at most {MAX_SIZE} bytes (its values hold {total})",
            fix,
        )


def _immutable(obj: dict, path: str, checker: Checker) -> None:
    checker.take(obj, "immutable", path, "boolean")


def _base_manifest(body: dict, fields: tuple[str, ...]) -> dict[str, Any]:
    manifest = {k: body[k] for k in ("apiVersion", "kind", "metadata") if k in body}
    manifest.update({k: body[k] for k in fields if body.get(k) is not None})
    return manifest


def read_config_map(manifest: Any, _spec: Any, checker: Checker) -> ConfigDataSpec | None:
    """A ConfigMap: string data and base64 binaryData, keys in neither twice, <= 1 MiB."""
    body, path = manifest.body, manifest.prefix
    before = len(checker.problems)
    data = _strings(
        body, "data", path, checker,
        "data values are strings; put bytes base64-encoded under binaryData",
    )  # fmt: skip
    binary = _base64(
        body, "binaryData", path, checker,
        "base64-encode it (e.g. `base64 -w0 FILE`), or put text under data",
    )  # fmt: skip
    for key in sorted(set(data or {}) & set(binary or {})):
        checker.add(
            f"{join(path, 'data')}[{key}]",
            f"Invalid value: {key!r}: duplicate of key present in binaryData",
            "keep each key in one of data and binaryData",
        )
    total = sum(len(v.encode()) for v in (data or {}).values())
    total += sum(len(v) for v in (binary or {}).values())
    _size(path, "data", total, checker, "keep a ConfigMap under 1 MiB: mount big files otherwise")
    _immutable(body, path, checker)
    if len(checker.problems) > before:
        return None
    return ConfigDataSpec(
        "ConfigMap",
        manifest.name,
        manifest.namespace,
        _base_manifest(body, CONFIG_MAP_FIELDS),
    )


def read_secret(manifest: Any, _spec: Any, checker: Checker) -> ConfigDataSpec | None:
    """A Secret: base64 data, stringData merged into it, its type's required keys."""
    body, path = manifest.body, manifest.prefix
    before = len(checker.problems)
    data = _base64(
        body, "data", path, checker,
        "base64-encode it (e.g. `echo -n VALUE | base64`), or put it under stringData",
    )  # fmt: skip
    strings = _strings(
        body, "stringData", path, checker, "quote it (stringData values are strings)"
    )
    kind = checker.take(body, "type", path, "string", default=OPAQUE)
    _immutable(body, path, checker)
    if len(checker.problems) > before:
        return None
    merged = dict(data or {})
    merged.update({k: v.encode() for k, v in (strings or {}).items()})
    _size(
        path, "data", sum(map(len, merged.values())), checker,
        "keep a Secret under 1 MiB",
    )  # fmt: skip
    _check_type(kind or OPAQUE, merged, body, path, checker)
    if len(checker.problems) > before:
        return None
    stored = _base_manifest(body, ("immutable",))
    stored["type"] = kind or OPAQUE
    if merged:
        stored["data"] = {k: base64.b64encode(v).decode() for k, v in merged.items()}
    return ConfigDataSpec("Secret", manifest.name, manifest.namespace, stored)


def _check_type(kind: str, data: dict[str, bytes], body: dict, path: str, checker: Checker) -> None:
    """The keys a well-known Secret type must hold (kube-apiserver's ValidateSecret)."""
    here = join(path, "data")

    def required(key: str, what: str) -> None:
        checker.add(f"{here}[{key}]", f"Required value: a {kind} Secret holds {what}",
                    f"add {key} under data (base64) or stringData")  # fmt: skip

    if kind == TLS:
        for key in ("tls.crt", "tls.key"):
            if key not in data:
                required(key, "tls.crt and tls.key (`kubectl create secret tls` makes one)")
    elif kind in (DOCKER_CONFIG_JSON, DOCKER_CFG):
        key = ".dockerconfigjson" if kind == DOCKER_CONFIG_JSON else ".dockercfg"
        if key not in data:
            required(key, f"{key} (`kubectl create secret docker-registry` makes one)")
        else:
            try:
                if not isinstance(json.loads(data[key]), dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                checker.add(
                    f"{here}[{key}]",
                    f"Invalid value: <secret contents redacted>: {exc}",
                    "give it a Docker config as a JSON object",
                )
    elif kind == BASIC_AUTH:
        if "username" not in data and "password" not in data:
            required("username", "username or password (or both)")
            required("password", "username or password (or both)")
    elif kind == SSH_AUTH:
        if not data.get("ssh-privatekey"):
            required("ssh-privatekey", "ssh-privatekey")
    elif kind == SERVICE_ACCOUNT_TOKEN:
        notes = (body.get("metadata") or {}).get("annotations") or {}
        if not notes.get(SERVICE_ACCOUNT_NAME):
            checker.add(
                f"{join(path, 'metadata.annotations')}[{SERVICE_ACCOUNT_NAME}]",
                "Required value",
                f"annotate it with {SERVICE_ACCOUNT_NAME}: <the ServiceAccount's name>",
            )


def immutable_problems(old: dict, new: dict) -> list[tuple[str, str]]:
    """(field, message) for each change kube-apiserver refuses on an update of a
    ConfigMap or Secret: its data once `immutable: true`, and a Secret's type."""
    problems = []
    if old.get("kind") == "Secret" and (old.get("type") or OPAQUE) != (new.get("type") or OPAQUE):
        problems.append(
            ("type", f"Invalid value: {json.dumps(new.get('type'))}: field is immutable")
        )
    if old.get("immutable") is True:
        if new.get("immutable") is not True:
            problems.append(("immutable", f"Forbidden: {IMMUTABLE}"))
        fields = ("data", "binaryData") if old.get("kind") == "ConfigMap" else ("data",)
        for field in fields:
            if (old.get(field) or {}) != (new.get(field) or {}):
                problems.append((field, f"Forbidden: {IMMUTABLE}"))
    return problems


def decoded(obj: dict) -> dict[str, bytes]:
    """Every key of a stored ConfigMap or Secret and its bytes, as kubelet writes them
    to files: a ConfigMap's data (UTF-8) and binaryData, a Secret's data, decoded."""
    if obj.get("kind") == "Secret":
        return {k: b64decode(v) for k, v in (obj.get("data") or {}).items()}
    out = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    out.update({k: b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return out
