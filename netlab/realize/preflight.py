"""What the machine must have before anything is built: root, the tools
Mininet and netlab call, and netem when links ask for delay or loss."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess

from netlab.errors import PreflightError
from netlab.realize import netns
from netlab.spec.model import LabSpec

TOOLS = {
    "mnexec": "mininet",
    "ip": "iproute2",
    "ifconfig": "net-tools",
    "tc": "iproute2",
    "nsenter": "util-linux",
    "umoci": "umoci",
    "skopeo": "skopeo",
}


def check(spec: LabSpec) -> None:
    if os.geteuid() != 0:
        raise PreflightError("netlab builds namespaces and links and needs root: run it with sudo")
    missing = [
        f"{tool} (Debian package {pkg})" for tool, pkg in TOOLS.items() if not shutil.which(tool)
    ]
    if missing:
        raise PreflightError(
            "missing tools: "
            + ", ".join(missing)
            + "; run `make bootstrap` (or apt-get install them)"
        )
    check_runtime()
    if spec.links.delay or spec.links.loss_percent:
        if not netem_available():
            raise PreflightError(
                f"{spec.source or 'lab'}: lab.links: delay and loss need the kernel's netem qdisc "
                "(sch_netem), which this kernel does not have; remove links.delay/links.loss "
                "(bandwidth works without netem)"
            )


def check_runtime() -> None:
    """The OCI runtime is installed, and can run here (crun 1.8 refuses cgroup v1)."""
    from netlab.node.cgroups import CgroupLayout
    from netlab.node.runc import runtime_name

    name = runtime_name()
    if not shutil.which(name):
        raise PreflightError(
            f"the OCI runtime {name} is missing; run `make bootstrap` (or apt-get install {name})"
        )
    if name == "crun" and CgroupLayout.detect().mode != "v2":
        raise PreflightError(
            "crun needs a pure cgroup v2 host, and this one mounts cgroup v1 controllers; "
            "use runc (unset NETLAB_OCI_RUNTIME)"
        )


def netem_available() -> bool:
    """Try a netem qdisc on loopback in a throwaway namespace."""
    name = f"nl-probe:{os.getpid()}"
    netns.create(name)
    try:
        result = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                name,
                "tc",
                "qdisc",
                "add",
                "dev",
                "lo",
                "root",
                "netem",
                "delay",
                "1ms",
            ],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0
    finally:
        with contextlib.suppress(OSError):
            netns.remove(name)
