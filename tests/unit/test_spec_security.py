"""securityContext, hostname and shareProcessNamespace at spec load: typed fields, the
raw mapping kept for the stored object, and each mistake named at its path."""

from __future__ import annotations

import pytest

from netlab.objects import container_manifest
from netlab.spec import parse_lab
from netlab.spec.security import ContainerSecurity, PodSecurity, SeccompProfile
from tests.unit.podspecs import LAB, pod, problems


def test_no_security_context() -> None:
    template = parse_lab(pod(), "t.yaml").pods[0].template
    assert template.security is None and template.containers[0].security is None
    assert template.hostname is None and template.share_process_namespace is False


def test_typed_fields_and_the_raw_mapping_kept() -> None:
    text = pod(
        "securityContext:\n"
        "  runAsUser: 1000\n"
        "  runAsGroup: 3000\n"
        "  runAsNonRoot: true\n"
        "  fsGroup: 2000\n"
        "  supplementalGroups: [4, 50]\n"
        "  sysctls: [{name: net.ipv4.ip_local_port_range, value: '32768 60999'}]\n"
        "  seccompProfile: {type: RuntimeDefault}\n"
        "  seLinuxOptions: {level: 's0:c123,c456'}\n"
        "hostname: db-0\n"
        "shareProcessNamespace: true",
        "securityContext:\n"
        "  runAsUser: 1001\n"
        "  allowPrivilegeEscalation: false\n"
        "  readOnlyRootFilesystem: true\n"
        "  capabilities: {add: [net_bind_service, CAP_NET_ADMIN], drop: [ALL]}\n"
        "  procMount: Default\n"
        "  seccompProfile: {type: Localhost, localhostProfile: profiles/audit.json}",
    )
    template = parse_lab(text, "t.yaml").pods[0].template
    assert template.security == PodSecurity(
        run_as_user=1000,
        run_as_group=3000,
        run_as_non_root=True,
        fs_group=2000,
        supplemental_groups=(4, 50),
        sysctls=(("net.ipv4.ip_local_port_range", "32768 60999"),),
        seccomp_profile=SeccompProfile("RuntimeDefault"),
    )
    assert template.hostname == "db-0" and template.share_process_namespace is True
    container = template.containers[0]
    assert container.security == ContainerSecurity(
        run_as_user=1001,
        read_only_root_filesystem=True,
        allow_privilege_escalation=False,
        capabilities_add=("CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN"),
        capabilities_drop=("ALL",),
        proc_mount="Default",
        seccomp_profile=SeccompProfile("Localhost", "profiles/audit.json"),
    )
    # the stored object keeps what was written
    assert template.recorded["securityContext"]["seLinuxOptions"] == {"level": "s0:c123,c456"}
    assert template.recorded["shareProcessNamespace"] is True
    assert template.recorded["hostname"] == "db-0"
    written = container_manifest(container)["securityContext"]
    assert written["capabilities"] == {
        "add": ["net_bind_service", "CAP_NET_ADMIN"],
        "drop": ["ALL"],
    }


def test_deployment_template_is_read_too() -> None:
    text = LAB.split("---")[0] + (
        "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n"
        "  selector: {matchLabels: {app: web}}\n  template:\n"
        "    metadata: {labels: {app: web}}\n    spec:\n"
        "      securityContext: {runAsNonRoot: true}\n"
        "      containers:\n        - name: app\n          command: [sleep, infinity]\n"
        "          securityContext: {privileged: true}\n"
    )
    template = parse_lab(text, "t.yaml").deployments[0].template
    assert template.security.run_as_non_root is True
    assert template.containers[0].security.privileged is True


C = "Pod/web: spec.containers[0].securityContext"
P = "Pod/web: spec.securityContext"

# (id, pod fields, container fields, path, message, fix fragment)
ERRORS = [
    (
        "unknown-capability",
        "",
        "securityContext: {capabilities: {add: [CAP_FLY]}}",
        f"{C}.capabilities.add[0]",
        'Unsupported value: "CAP_FLY"',
        "Linux capabilities are: CHOWN, DAC_OVERRIDE,",
    ),
    (
        "misspelt-prefixed-capability",
        "",
        "securityContext: {capabilities: {add: [CAP_NET_ADMN]}}",
        f"{C}.capabilities.add[0]",
        'Unsupported value: "CAP_NET_ADMN"',
        "did you mean 'NET_ADMIN'?",
    ),
    (
        "misspelt-capability",
        "",
        "securityContext: {capabilities: {drop: [KILL, NET_ADMN]}}",
        f"{C}.capabilities.drop[1]",
        'Unsupported value: "NET_ADMN"',
        "did you mean 'NET_ADMIN'?",
    ),
    (
        "negative-run-as-user",
        "",
        "securityContext: {runAsUser: -1}",
        f"{C}.runAsUser",
        "Invalid value: -1: must be between 0 and 2147483647, inclusive",
        "use a uid",
    ),
    (
        "pod-run-as-group-too-big",
        "securityContext: {runAsGroup: 2147483648}",
        "",
        f"{P}.runAsGroup",
        "Invalid value: 2147483648: must be between 0 and 2147483647, inclusive",
        "use a gid",
    ),
    (
        "negative-supplemental-group",
        "securityContext: {supplementalGroups: [5, -5]}",
        "",
        f"{P}.supplementalGroups[1]",
        "Invalid value: -5: must be between 0 and 2147483647, inclusive",
        "",
    ),
    (
        "privileged-without-escalation",
        "",
        "securityContext: {privileged: true, allowPrivilegeEscalation: false}",
        C,
        "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
        "remove allowPrivilegeEscalation: false",
    ),
    (
        "sys-admin-without-escalation",
        "",
        "securityContext: {capabilities: {add: [SYS_ADMIN]}, allowPrivilegeEscalation: false}",
        C,
        "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN",
        "",
    ),
    (
        "unknown-field",
        "",
        "securityContext: {runAsUsr: 1000}",
        f"{C}.runAsUsr",
        "unknown field 'runAsUsr'",
        "did you mean 'runAsUser'?",
    ),
    (
        "capabilities-at-pod-level",
        "securityContext: {capabilities: {drop: [ALL]}}",
        "",
        f"{P}.capabilities",
        "unknown field 'capabilities': it belongs in a container's securityContext",
        "move it to containers[*].securityContext",
    ),
    (
        "fs-group-in-a-container",
        "",
        "securityContext: {fsGroup: 2000}",
        f"{C}.fsGroup",
        "unknown field 'fsGroup': it belongs in the pod's securityContext",
        "move it to the pod's securityContext (beside containers:)",
    ),
    (
        "run-as-user-a-string",
        "",
        "securityContext: {runAsUser: '1000'}",
        f"{C}.runAsUser",
        "expected an integer, got the string '1000'",
        "write it without quotes: 1000",
    ),
    (
        "privileged-a-string",
        "",
        "securityContext: {privileged: 'yes'}",
        f"{C}.privileged",
        "expected a boolean",
        "true or false",
    ),
    (
        "security-context-a-list",
        "",
        "securityContext: [runAsUser]",
        f"{C}",
        "expected a mapping, got a list",
        "",
    ),
    (
        "capabilities-add-a-string",
        "",
        "securityContext: {capabilities: {add: NET_ADMIN}}",
        f"{C}.capabilities.add",
        "expected a list",
        "",
    ),
    (
        "seccomp-type",
        "securityContext: {seccompProfile: {type: Default}}",
        "",
        f"{P}.seccompProfile.type",
        'Unsupported value: "Default": supported values: "Localhost", "RuntimeDefault", '
        '"Unconfined"',
        "",
    ),
    (
        "seccomp-localhost-without-profile",
        "",
        "securityContext: {seccompProfile: {type: Localhost}}",
        f"{C}.seccompProfile.localhostProfile",
        "Required value: must be set when seccomp type is Localhost",
        "",
    ),
    (
        "proc-mount-unmasked",
        "",
        "securityContext: {procMount: Unmasked}",
        f"{C}.procMount",
        "`hostUsers` must be false to use `Unmasked`",
        "",
    ),
    (
        "bad-sysctl-name",
        "securityContext: {sysctls: [{name: 'Net.Bad!', value: '1'}]}",
        "",
        f"{P}.sysctls[0].name",
        'Invalid value: "Net.Bad!": must have at most 253 characters and match regex',
        "",
    ),
    (
        "share-process-namespace-a-string",
        "shareProcessNamespace: 'true'",
        "",
        "Pod/web: spec.shareProcessNamespace",
        "expected a boolean",
        "",
    ),
    (
        "hostname-not-a-label",
        "hostname: Db_0",
        "",
        "Pod/web: spec.hostname",
        "hostname 'Db_0' is not a valid name",
        "lowercase letters",
    ),
]


@pytest.mark.parametrize(
    ("pod_fields", "container_fields", "path", "message", "fix"),
    [case[1:] for case in ERRORS],
    ids=[case[0] for case in ERRORS],
)
def test_error_names_path_and_fix(
    pod_fields: str, container_fields: str, path: str, message: str, fix: str
) -> None:
    found = problems(pod(pod_fields, container_fields))
    matching = [line for line in found if line.startswith(f"{path}: ")]
    assert matching, f"no problem at {path!r} in {found}"
    assert any(message in line and fix in line for line in matching), found


def test_each_mistake_reported_once() -> None:
    found = problems(pod("", "securityContext: {runAsUser: '1000', capabilities: {add: [FLY]}}"))
    assert len(found) == 2, found


def test_all_and_case_are_accepted() -> None:
    text = pod("", "securityContext: {capabilities: {add: [all], drop: [Cap_Kill, chown]}}")
    security = parse_lab(text, "t.yaml").pods[0].template.containers[0].security
    assert security.capabilities_add == ("ALL",)
    assert security.capabilities_drop == ("CAP_KILL", "CAP_CHOWN")
