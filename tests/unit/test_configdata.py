"""ConfigMaps and Secrets: the readers and their refusals (as kube-apiserver words
them), the store's side (stringData merged, immutable refusals), the protobuf bodies
of kubectl create configmap|secret, and kubectl's table columns."""

from __future__ import annotations

import base64
import json

import pytest

from netlab import configobjects, objects, tables
from netlab.errors import ApiError, SpecError
from netlab.spec.configdata import MAX_SIZE, immutable_problems, key_problems
from netlab.spec.load import parse_lab
from netlab.store import Store

LAB = """\
lab:
  name: t
  racks: [{name: r1, subnet: 192.168.1.0/24, nodes: [{name: n1}]}]
"""


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def lab_with(*docs: str):
    return parse_lab(LAB + "".join(f"---\n{doc}" for doc in docs))


def problems(*docs: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        lab_with(*docs)
    return [p.render() for p in info.value.problems]


def test_a_lab_file_holds_config_maps_and_secrets_as_the_store_keeps_them():
    spec = lab_with(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, labels: {app: web}}\n"
        "data: {app.conf: 'port = 80', LEVEL: debug}\nbinaryData: {blob: AAEC}\n",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: creds, namespace: shop}\n"
        f"data: {{user: {b64('admin')}}}\nstringData: {{password: s3cret, user: root}}\n",
    )
    (cm,) = spec.configmaps
    assert cm.manifest["data"] == {"app.conf": "port = 80", "LEVEL": "debug"}
    assert cm.manifest["binaryData"] == {"blob": "AAEC"}
    assert cm.manifest["metadata"]["labels"] == {"app": "web"}
    (secret,) = spec.secrets
    assert secret.namespace == "shop"
    # stringData is merged into data (base64), winning over data's own key; type defaulted
    assert secret.manifest["type"] == "Opaque"
    assert secret.manifest["data"] == {"user": b64("root"), "password": b64("s3cret")}
    assert "stringData" not in secret.manifest


@pytest.mark.parametrize(
    "doc, path, message, fix",
    [
        (
            "kind: Secret\nmetadata: {name: s}\ndata: {token: not base64!}\n",
            "Secret/s: data[token]",
            "the value of 'token' is not base64",
            "base64-encode it (e.g. `echo -n VALUE | base64`), or put it under stringData",
        ),
        (
            "kind: ConfigMap\nmetadata: {name: c}\ndata: {port: 8080}\n",
            "ConfigMap/c: data[port]",
            "expected a string, got the number 8080",
            "quote it: '8080'",
        ),
        (
            "kind: ConfigMap\nmetadata: {name: c}\ndata: {conf/app: x}\n",
            "ConfigMap/c: data[conf/app]",
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            "rename the key",
        ),
        (
            "kind: ConfigMap\nmetadata: {name: c}\ndata: {..x: y}\n",
            "ConfigMap/c: data[..x]",
            "must not start with '..'",
            "rename the key",
        ),
        (
            "kind: ConfigMap\nmetadata: {name: c}\ndata: {a: x}\nbinaryData: {a: AAEC}\n",
            "ConfigMap/c: data[a]",
            "duplicate of key present in binaryData",
            "keep each key in one of data and binaryData",
        ),
        (
            "kind: ConfigMap\nmetadata: {name: c}\nbinaryData: {a: '%%%'}\n",
            "ConfigMap/c: binaryData[a]",
            "is not base64",
            "base64-encode it",
        ),
        (
            "kind: ConfigMap\nmetadata: {name: c}\nspec: {a: b}\n",
            "ConfigMap/c: spec",
            "unknown field 'spec'",
            "known fields: apiVersion, kind, metadata, data, binaryData, immutable",
        ),
        (
            "kind: ConfigMap\nmetadata: {name: c}\nimmutable: 'yes'\n",
            "ConfigMap/c: immutable",
            "expected a boolean",
            "write true or false",
        ),
        (
            "kind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/tls\n"
            "stringData: {tls.crt: CERT}\n",
            "Secret/s: data[tls.key]",
            "Required value: a kubernetes.io/tls Secret holds tls.crt and tls.key",
            "add tls.key under data (base64) or stringData",
        ),
        (
            "kind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/dockerconfigjson\n"
            "stringData: {.dockerconfigjson: '[1'}\n",
            "Secret/s: data[.dockerconfigjson]",
            "Invalid value: <secret contents redacted>",
            "give it a Docker config as a JSON object",
        ),
        (
            "kind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/basic-auth\n",
            "Secret/s: data[username]",
            "Required value",
            "add username under data",
        ),
        (
            "kind: Secret\nmetadata: {name: S}\n",
            "Secret/S: metadata.name",
            "Secret name 'S' is not a valid name",
            "use lowercase letters",
        ),
    ],
)
def test_bad_config_data_is_refused_naming_the_field_and_the_fix(doc, path, message, fix):
    found = problems("apiVersion: v1\n" + doc)
    assert any(p.startswith(path) and message in p and fix in p for p in found), found


def test_values_over_one_mebibyte_in_all_are_refused():
    half = "x" * (MAX_SIZE // 2)
    doc = f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\ndata: {{a: {half}, b: {half}y}}\n"
    (found,) = problems(doc)
    assert found.startswith("ConfigMap/big: data: Too long: must have at most 1048576 bytes")
    lab_with(doc.replace("y}", "}"))  # exactly 1 MiB is fine


@pytest.mark.parametrize(
    "key, ok", [("a", True), ("A-b_c.d", True), (".", False), ("..", False), ("a b", False),
                ("", False), ("x" * 253, True), ("x" * 254, False), (".hidden", True)],
)  # fmt: skip
def test_config_keys_follow_kube_apiservers_rule(key, ok):
    assert (key_problems(key) == []) is ok


def _cm(data: dict, immutable: bool | None = None) -> dict:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"},
           "data": data}  # fmt: skip
    if immutable is not None:
        obj["immutable"] = immutable
    return obj


def test_an_immutable_object_keeps_its_data_and_a_secret_its_type():
    frozen = _cm({"a": "1"}, immutable=True)
    assert immutable_problems(frozen, _cm({"a": "1"}, immutable=True)) == []
    changed = immutable_problems(frozen, _cm({"a": "2"}, immutable=True))
    assert changed == [("data", "Forbidden: field is immutable when `immutable` is set")]
    thawed = immutable_problems(frozen, _cm({"a": "1"}))
    assert thawed == [("immutable", "Forbidden: field is immutable when `immutable` is set")]
    assert immutable_problems(_cm({"a": "1"}), _cm({"a": "2"}, immutable=True)) == []
    secret = {"kind": "Secret", "type": "Opaque", "metadata": {"name": "s"}}
    retyped = immutable_problems(secret, dict(secret, type="kubernetes.io/basic-auth"))
    assert retyped == [("type", 'Invalid value: "kubernetes.io/basic-auth": field is immutable')]


def test_the_store_takes_them_created_configured_unchanged_and_refuses_an_immutable_change():
    store = Store()
    spec = lab_with(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: team}\n"
        "data: {a: '1'}\nimmutable: true\n"
    )
    (result,) = configobjects.apply_all(store, spec.configmaps)
    assert result["action"] == "created"
    stored = store.get("configmaps", "team", "c")
    assert stored["data"] == {"a": "1"} and "status" not in stored
    assert store.get("namespaces", None, "team")  # made for it
    assert configobjects.apply_all(store, spec.configmaps)[0]["action"] == "unchanged"
    labelled = lab_with(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: team, labels: {x: y}}\n"
        "data: {a: '1'}\nimmutable: true\n"
    )  # metadata may change
    assert configobjects.apply_all(store, labelled.configmaps)[0]["action"] == "configured"
    edited = lab_with(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: team}\n"
        "data: {a: '2'}\nimmutable: true\n"
    )
    with pytest.raises(ApiError) as refused:
        configobjects.apply_all(store, edited.configmaps)
    assert refused.value.status == 422
    assert str(refused.value).startswith(
        'ConfigMap "c" is invalid: data: Forbidden: field is immutable when `immutable` is set'
    )
    assert store.get("configmaps", "team", "c")["data"] == {"a": "1"}


def test_a_stored_object_is_taken_again_as_written():
    """What a PATCH hands to the lab (objects.applyable) reads back as the same object."""
    store = Store()
    spec = lab_with(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/basic-auth\n"
        "stringData: {username: u}\nimmutable: false\n"
    )
    configobjects.apply_all(store, spec.secrets)
    stored = store.get("secrets", "default", "s")
    again = lab_with(json.dumps(objects.applyable(stored)))
    assert again.secrets[0].manifest == spec.secrets[0].manifest
    assert objects.manifest_of(stored)["data"] == {"username": b64("u")}


def _pb(number: int, payload: bytes) -> bytes:
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


def _entry(key: str, value: bytes) -> bytes:
    return _pb(1, key.encode()) + _pb(2, value)


def test_protobuf_bodies_of_kubectl_create_configmap_and_secret_are_read():
    from netlab.apiserver.protobuf import MAGIC, to_object

    def envelope(kind: str, raw: bytes) -> bytes:
        return MAGIC + _pb(1, _pb(1, b"v1") + _pb(2, kind.encode())) + _pb(2, raw)

    meta = _pb(1, _pb(1, b"cfg") + _pb(3, b"default"))
    cm = to_object(
        envelope("ConfigMap", meta + _pb(2, _entry("a", b"1")) + _pb(3, _entry("b", b"\x00\x01")))
    )
    assert cm == {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": "cfg", "namespace": "default"},
                  "data": {"a": "1"}, "binaryData": {"b": "AAE="}}  # fmt: skip
    secret = to_object(
        envelope(
            "Secret", meta + _pb(2, _entry("k", b"v")) + _pb(3, b"Opaque") + bytes([5 << 3, 1])
        )
    )
    assert secret["data"] == {"k": b64("v")} and secret["type"] == "Opaque"
    assert secret["immutable"] is True


def test_kubectl_get_prints_data_counts_and_secret_types():
    cm = dict(_cm({"a": "1", "b": "2"}), binaryData={"c": "AA=="})
    cm["metadata"]["creationTimestamp"] = None
    secret = {"kind": "Secret", "type": "kubernetes.io/tls", "metadata": {"name": "tls"},
              "data": {"tls.crt": "", "tls.key": ""}}  # fmt: skip
    assert tables.render("configmaps", [cm]).split("\n")[1].split()[:2] == ["c", "3"]
    lines = tables.render("secrets", [secret]).split("\n")
    assert lines[0].split() == ["NAME", "TYPE", "DATA", "AGE"]
    assert lines[1].split()[:3] == ["tls", "kubernetes.io/tls", "2"]
