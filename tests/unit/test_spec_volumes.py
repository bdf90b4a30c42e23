"""Pods' volumes, volumeMounts, env valueFrom and envFrom at spec load: typed fields,
the object as the API shows it, and every mistake refused at its path with a fix."""

from __future__ import annotations

import pytest

from netlab.objects import container_manifest
from netlab.spec import parse_lab
from netlab.spec.volumes import (
    ClaimSource,
    EmptyDirSource,
    EnvFromSource,
    EnvRef,
    FieldRef,
    HostPathSource,
    KeyRef,
    KeyToPath,
    ObjectSource,
    VolumeMount,
    VolumeSpec,
    volume_manifest,
)
from tests.unit.podspecs import pod, problems

VOLUMES = """\
volumes:
- name: scratch
  emptyDir: {}
- name: cache
  emptyDir: {medium: Memory, sizeLimit: 64Mi}
- name: logs
  hostPath: {path: /var/log/app, type: DirectoryOrCreate}
- name: config
  configMap:
    name: app-config
    items: [{key: app.conf, path: conf/app.conf, mode: 0600}]
    defaultMode: 0640
- name: creds
  secret: {secretName: db, optional: true}
- name: data
  persistentVolumeClaim: {claimName: data-db-0, readOnly: true}"""

MOUNTS = """\
volumeMounts:
- {name: scratch, mountPath: /scratch}
- {name: config, mountPath: /etc/app/app.conf, subPath: conf/app.conf}
- {name: data, mountPath: /data/, readOnly: true}"""


def test_every_kind_of_volume_read_typed() -> None:
    template = parse_lab(pod(VOLUMES, MOUNTS), "t.yaml").pods[0].template
    assert template.volumes == (
        VolumeSpec("scratch", EmptyDirSource()),
        VolumeSpec("cache", EmptyDirSource("Memory", 64 << 20)),
        VolumeSpec("logs", HostPathSource("/var/log/app", "DirectoryOrCreate")),
        VolumeSpec(
            "config",
            ObjectSource(
                "configMap", "app-config", (KeyToPath("app.conf", "conf/app.conf", 0o600),), 0o640
            ),
        ),
        VolumeSpec("creds", ObjectSource("secret", "db", (), 0o644, True)),
        VolumeSpec("data", ClaimSource("data-db-0", True)),
    )
    assert [v.kind for v in template.volumes] == [
        "emptyDir", "emptyDir", "hostPath", "configMap", "secret", "persistentVolumeClaim"
    ]  # fmt: skip
    assert template.containers[0].volume_mounts == (
        VolumeMount("scratch", "/scratch"),
        VolumeMount("config", "/etc/app/app.conf", "conf/app.conf"),
        VolumeMount("data", "/data", read_only=True),
    )


def test_the_pod_object_shows_them_as_written() -> None:
    template = parse_lab(pod(VOLUMES, MOUNTS), "t.yaml").pods[0].template
    assert volume_manifest(template.volumes[1]) == {
        "name": "cache",
        "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"},
    }
    assert volume_manifest(template.volumes[4]) == {
        "name": "creds",
        "secret": {"secretName": "db", "defaultMode": 0o644, "optional": True},
    }
    shown = container_manifest(template.containers[0])
    assert shown["volumeMounts"][1] == {
        "name": "config", "mountPath": "/etc/app/app.conf", "subPath": "conf/app.conf"
    }  # fmt: skip


def test_env_from_objects_and_fields() -> None:
    container = """\
env:
- {name: MODE, value: fast}
- name: LEVEL
  valueFrom: {configMapKeyRef: {name: app-config, key: level}}
- name: PASSWORD
  valueFrom: {secretKeyRef: {name: db, key: password, optional: true}}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: TIER
  valueFrom: {fieldRef: {fieldPath: "metadata.labels['tier']"}}
envFrom:
- configMapRef: {name: app-config}
- {secretRef: {name: db}, prefix: DB_}"""
    spec = parse_lab(pod("", container), "t.yaml").pods[0].template.containers[0]
    assert spec.env == (("MODE", "fast"),)
    assert spec.env_refs == (
        EnvRef("LEVEL", KeyRef("configMap", "app-config", "level")),
        EnvRef("PASSWORD", KeyRef("secret", "db", "password", True)),
        EnvRef("POD_NAME", FieldRef("metadata.name")),
        EnvRef("TIER", FieldRef("metadata.labels['tier']")),
    )
    assert spec.env_from == (
        EnvFromSource("configMap", "app-config"),
        EnvFromSource("secret", "db", "DB_"),
    )
    shown = container_manifest(spec)
    assert shown["env"][1] == {
        "name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "level"}}
    }  # fmt: skip
    assert shown["envFrom"][1] == {"secretRef": {"name": "db"}, "prefix": "DB_"}


@pytest.mark.parametrize(
    ("pod_fields", "container_fields", "expected"),
    [
        (
            "volumes: [{name: data, emptyDir: {}}]",
            "volumeMounts: [{name: date, mountPath: /data}]",
            'spec.containers[0].volumeMounts[0].name: Not found: "date"',
        ),
        (
            "",
            "volumeMounts: [{name: data, mountPath: /data}]",
            "declare a volume named 'data' in the pod's spec.volumes",
        ),
        (
            "volumes: [{name: a, emptyDir: {}}, {name: b, emptyDir: {}}]",
            "volumeMounts: [{name: a, mountPath: /data}, {name: b, mountPath: /data/}]",
            'volumeMounts[1].mountPath: Invalid value: "/data": must be unique',
        ),
        (
            "volumes: [{name: a, emptyDir: {}}, {name: a, hostPath: {path: /x}}]",
            "",
            'spec.volumes[1].name: Duplicate value: "a"',
        ),
        (
            "volumes: [{name: a, emptyDir: {}, hostPath: {path: /x}}]",
            "",
            "spec.volumes[0]: must specify exactly one volume type",
        ),
        ("volumes: [{name: a}]", "", "spec.volumes[0]: must specify a volume type"),
        (
            "volumes: [{name: a, nfs: {server: x, path: /}}]",
            "",
            "spec.volumes[0].nfs: nfs volumes are not supported by netlab",
        ),
        (
            "volumes: [{name: a, emptyDir: {medium: Disk}}]",
            "",
            'spec.volumes[0].emptyDir.medium: Unsupported value: "Disk"',
        ),
        (
            "volumes: [{name: a, emptyDir: {sizeLimit: 64MB}}]",
            "",
            "spec.volumes[0].emptyDir.sizeLimit: Invalid value: '64MB'",
        ),
        (
            "volumes: [{name: a, hostPath: {path: data}}]",
            "",
            "spec.volumes[0].hostPath.path: 'data' must be an absolute path",
        ),
        (
            "volumes: [{name: a, hostPath: {path: /x, type: Dir}}]",
            "",
            'spec.volumes[0].hostPath.type: Unsupported value: "Dir"',
        ),
        (
            "volumes: [{name: a, configMap: {name: c, items: [{key: k, path: ../k}]}}]",
            "",
            "spec.volumes[0].configMap.items[0].path: path '../k' must not contain '..'",
        ),
        (
            "volumes: [{name: a, secret: {secretName: s, defaultMode: 01777}}]",
            "",
            "spec.volumes[0].secret.defaultMode: Invalid value: 1023",
        ),
        (
            "volumes: [{name: a, persistentVolumeClaim: {}}]",
            "",
            "spec.volumes[0].persistentVolumeClaim.claimName: required field is missing",
        ),
        (
            "volumes: [{name: a, emptyDir: {}}]",
            "volumeMounts: [{name: a, mountPath: /d, subPath: /abs}]",
            "volumeMounts[0].subPath: subPath '/abs' must be a relative path",
        ),
        (
            "volumes: [{name: a, emptyDir: {}}]",
            "volumeMounts: [{name: a, mountPath: relative}]",
            "volumeMounts[0].mountPath: 'relative' must be an absolute path",
        ),
        (
            "",
            "env: [{name: X, value: a, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]",
            "env[0].valueFrom: may not be specified when `value` is not empty",
        ),
        (
            "",
            "env: [{name: X, valueFrom: {fieldRef: {fieldPath: status.phase}}}]",
            'env[0].valueFrom.fieldRef.fieldPath: Unsupported value: "status.phase"',
        ),
        (
            "",
            "env: [{name: X, valueFrom: {configMapKeyRef: {name: c}}}]",
            "env[0].valueFrom.configMapKeyRef.key: required field is missing",
        ),
        (
            "",
            "envFrom: [{configMapRef: {name: c}, secretRef: {name: s}}]",
            "envFrom[0]: may not have more than one field specified at a time",
        ),
    ],
)
def test_mistakes_named_at_their_path(
    pod_fields: str, container_fields: str, expected: str
) -> None:
    found = problems(pod(pod_fields, container_fields))
    assert any(expected in p for p in found), found
