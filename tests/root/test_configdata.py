"""ConfigMaps and Secrets through real clients against a running lab: the lab file's
own, kubectl 1.35 (create configmap|secret, get -o yaml, describe, apply, patch, edit,
replace, delete, the immutable and not-base64 refusals), `netlab get`, and the
`kubernetes` Python client's typed calls."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from netlab.lab import Lab
from netlab.spec.load import parse_lab

pytestmark = pytest.mark.root
NAME = "t-cfgdata"
KUBECTL = Path(__file__).resolve().parents[2] / ".tools" / "kubectl-1.35" / "kubectl"

LAB = textwrap.dedent(
    f"""\
    lab:
      name: {NAME}
      racks: [{{name: rack1, subnet: 192.168.1.0/24, nodes: [n1]}}]
    ---
    apiVersion: v1
    kind: ConfigMap
    metadata: {{name: from-file, labels: {{app: web}}}}
    data:
      app.conf: |
        port = 8080
      LEVEL: info
    ---
    apiVersion: v1
    kind: Secret
    metadata: {{name: from-file}}
    type: kubernetes.io/basic-auth
    stringData: {{username: admin, password: s3cret}}
    """
)


@pytest.fixture(scope="module")
def clab():
    with Lab(parse_lab(LAB, "configdata.yaml")) as lab:
        yield lab


def kubectl(lab: Lab, *args: str, check: bool = True, stdin: str = "", env: dict | None = None):
    assert KUBECTL.exists(), f"{KUBECTL} is missing: scripts/kubectl.sh fetches it"
    result = subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(lab.run_dir / "kubeconfig"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def decoded(data: dict) -> dict:
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def test_the_lab_files_objects_are_served_with_kubectls_columns(clab):
    table = kubectl(clab, "get", "configmaps").stdout.splitlines()
    assert table[0].split() == ["NAME", "DATA", "AGE"]
    assert next(line for line in table if line.startswith("from-file ")).split()[1] == "2"
    secrets = kubectl(clab, "get", "secret", "from-file").stdout.splitlines()
    assert secrets[0].split() == ["NAME", "TYPE", "DATA", "AGE"]
    assert secrets[1].split()[:3] == ["from-file", "kubernetes.io/basic-auth", "2"]
    stored = yaml.safe_load(kubectl(clab, "get", "secret", "from-file", "-o", "yaml").stdout)
    assert decoded(stored["data"]) == {"username": "admin", "password": "s3cret"}
    assert "stringData" not in stored and "status" not in stored
    described = kubectl(clab, "describe", "cm", "from-file").stdout
    assert "port = 8080" in described and "LEVEL" in described
    listed = subprocess.run(
        [sys.executable, "-m", "netlab.cli", "--lab", NAME, "get", "cm"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split() == ["NAME", "DATA", "AGE"]


def test_kubectl_create_get_apply_patch_edit_replace_delete(clab, tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text("worker_processes 2;\n")
    out = kubectl(
        clab, "create", "configmap", "made", "--from-literal=color=blue", f"--from-file={conf}"
    ).stdout
    assert "configmap/made created" in out
    made = json.loads(kubectl(clab, "get", "cm", "made", "-o", "json").stdout)
    assert made["data"] == {"color": "blue", "nginx.conf": "worker_processes 2;\n"}
    assert clab.store.get("configmaps", "default", "made")["data"] == made["data"]
    out = kubectl(
        clab, "create", "secret", "generic", "token", "--from-literal=token=abc123"
    ).stdout
    assert "secret/token created" in out
    token = yaml.safe_load(kubectl(clab, "get", "secret", "token", "-o", "yaml").stdout)
    assert token["type"] == "Opaque" and decoded(token["data"]) == {"token": "abc123"}
    jsonpath = kubectl(clab, "get", "secret", "token", "-o", "jsonpath={.data.token}").stdout
    assert base64.b64decode(jsonpath) == b"abc123"

    kubectl(clab, "patch", "cm", "made", "--type", "merge", "-p", '{"data":{"color":"red"}}')
    assert clab.store.get("configmaps", "default", "made")["data"]["color"] == "red"
    kubectl(clab, "patch", "cm", "made", "-p", '{"data":{"size":"L"}}')  # strategic merge
    assert clab.store.get("configmaps", "default", "made")["data"] == {
        "color": "red", "size": "L", "nginx.conf": "worker_processes 2;\n"
    }  # fmt: skip
    kubectl(
        clab, "edit", "cm", "made", env={"KUBE_EDITOR": "sed -i s/color:\\ red/color:\\ green/"}
    )
    assert clab.store.get("configmaps", "default", "made")["data"]["color"] == "green"
    kubectl(clab, "label", "cm", "made", "tier=front")
    assert clab.store.get("configmaps", "default", "made")["metadata"]["labels"] == {
        "tier": "front"
    }

    manifest = tmp_path / "settings.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: a}\n"
    )
    assert "configmap/settings created" in kubectl(clab, "apply", "-f", str(manifest)).stdout
    manifest.write_text(manifest.read_text().replace("mode: a", "mode: b, extra: x"))
    assert "configmap/settings configured" in kubectl(clab, "apply", "-f", str(manifest)).stdout
    assert clab.store.get("configmaps", "default", "settings")["data"] == {
        "mode": "b",
        "extra": "x",
    }
    manifest.write_text(manifest.read_text().replace(", extra: x", ""))
    kubectl(clab, "apply", "-f", str(manifest))  # apply removes what it no longer says
    assert clab.store.get("configmaps", "default", "settings")["data"] == {"mode": "b"}
    current = json.loads(kubectl(clab, "get", "cm", "settings", "-o", "json").stdout)
    current["data"] = {"mode": "replaced"}
    kubectl(clab, "replace", "-f", "-", stdin=json.dumps(current))
    assert clab.store.get("configmaps", "default", "settings")["data"] == {"mode": "replaced"}

    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (1024 * 1024 - 100))  # with its key's value, just under 1 MiB
    kubectl(clab, "create", "configmap", "big", f"--from-file={big}", "--from-literal=k=v")
    assert len(clab.store.get("configmaps", "default", "big")["data"]["big.bin"]) == len(
        big.read_bytes()
    )
    big.write_bytes(b"x" * (1024 * 1024 + 1))
    refused = kubectl(clab, "create", "configmap", "bigger", f"--from-file={big}", check=False)
    assert refused.returncode != 0
    assert "Too long: must have at most 1048576 bytes" in refused.stderr

    out = kubectl(
        clab, "create", "secret", "docker-registry", "registry", "--docker-server=registry.lab",
        "--docker-username=u", "--docker-password=p",
    ).stdout  # fmt: skip
    assert "secret/registry created" in out
    registry = clab.store.get("secrets", "default", "registry")
    assert registry["type"] == "kubernetes.io/dockerconfigjson"
    auths = json.loads(decoded(registry["data"])[".dockerconfigjson"])["auths"]
    assert auths["registry.lab"]["username"] == "u"
    described = kubectl(clab, "describe", "secret", "token").stdout
    assert "token:" in described and "6 bytes" in described and "abc123" not in described
    server_side = tmp_path / "ssa.yaml"
    server_side.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {a: '1'}\n"
    )
    kubectl(clab, "apply", "--server-side", "-f", str(server_side))
    assert clab.store.get("configmaps", "default", "ssa")["data"] == {"a": "1"}

    for kind, name in (("cm", "made"), ("secret", "token"), ("cm", "settings"), ("cm", "big"),
                       ("secret", "registry"), ("cm", "ssa")):  # fmt: skip
        assert "deleted" in kubectl(clab, "delete", kind, name).stdout
    gone = kubectl(clab, "get", "cm", "made", check=False)
    assert gone.returncode != 0 and 'configmaps "made" not found' in gone.stderr


def test_an_immutable_config_map_refuses_changes_and_bad_base64_is_refused(clab, tmp_path):
    manifest = tmp_path / "frozen.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: frozen}\ndata: {a: '1'}\nimmutable: true\n"
    )
    kubectl(clab, "apply", "-f", str(manifest))
    manifest.write_text(manifest.read_text().replace("'1'", "'2'"))
    refused = kubectl(clab, "apply", "-f", str(manifest), check=False)
    assert refused.returncode != 0
    assert 'ConfigMap "frozen" is invalid' in refused.stderr
    assert "data: Forbidden: field is immutable when `immutable` is set" in refused.stderr
    patched = kubectl(clab, "patch", "cm", "frozen", "-p", '{"data":{"a":"3"}}', check=False)
    assert patched.returncode != 0 and "field is immutable" in patched.stderr
    assert clab.store.get("configmaps", "default", "frozen")["data"] == {"a": "1"}
    kubectl(clab, "label", "cm", "frozen", "still=labelled")  # metadata may change
    kubectl(clab, "delete", "cm", "frozen")

    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: bad}\ndata: {pw: plain text}\n")
    refused = kubectl(clab, "apply", "-f", str(bad), check=False)
    assert refused.returncode != 0
    assert "data[pw]" in refused.stderr and "not base64" in refused.stderr
    assert "put it under stringData" in refused.stderr
    assert not clab.store.list("secrets", field_selector="metadata.name=bad")[0]


def test_the_python_clients_typed_config_map_and_secret_calls(clab):
    from kubernetes import client, config

    core = client.CoreV1Api(config.new_client_from_config(str(clab.run_dir / "kubeconfig")))
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="typed"), data={"k": "v"})
    made = core.create_namespaced_config_map("default", body)
    assert made.metadata.uid and made.data == {"k": "v"}
    assert core.read_namespaced_config_map("typed", "default").data == {"k": "v"}
    core.patch_namespaced_config_map("typed", "default", {"data": {"k2": "v2"}})
    assert core.read_namespaced_config_map("typed", "default").data == {"k": "v", "k2": "v2"}
    current = core.read_namespaced_config_map("typed", "default")
    current.data = {"only": "this"}
    assert core.replace_namespaced_config_map("typed", "default", current).data == {"only": "this"}
    names = {cm.metadata.name for cm in core.list_namespaced_config_map("default").items}
    assert {"typed", "from-file"} <= names
    assert core.list_config_map_for_all_namespaces(label_selector="app=web").items
    core.delete_namespaced_config_map("typed", "default")
    assert "typed" not in {
        cm.metadata.name for cm in core.list_namespaced_config_map("default").items
    }

    secret = client.V1Secret(
        metadata=client.V1ObjectMeta(name="typed"), string_data={"password": "pw"}
    )
    assert core.create_namespaced_secret("default", secret).type == "Opaque"
    read = core.read_namespaced_secret("typed", "default")
    assert decoded(read.data) == {"password": "pw"} and read.string_data is None
    core.patch_namespaced_secret("typed", "default", {"stringData": {"user": "u"}})
    assert decoded(core.read_namespaced_secret("typed", "default").data) == {
        "password": "pw", "user": "u"
    }  # fmt: skip
    core.delete_namespaced_secret("typed", "default")
    with pytest.raises(client.ApiException) as missing:
        core.read_namespaced_secret("typed", "default")
    assert missing.value.status == 404
