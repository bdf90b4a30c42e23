"""What a lab may leave on the host beyond its network namespaces: mounts (a
container root caught between its mount and runc's start, volumes), its state
directory (nodes' disks, PersistentVolume images), loop devices, cgroups
and the OCI runtime's state. The root tests' host snapshot checks that none of it outlives a lab."""

from __future__ import annotations

import subprocess
from pathlib import Path

from netlab.node.cgroups import CgroupLayout, lab_dirs
from netlab.node.mounts import mounted_under
from netlab.paths import RUN_ROOT, STATE_ROOT, state_dir


def leftovers(lab: str) -> list[str]:
    """Everything of lab `lab` still on the host (empty: it left nothing)."""
    prefix = f"nl-{lab}"
    found = [f"mount {p}" for p in mounted_under(RUN_ROOT / lab)]
    found += [f"mount {p}" for p in mounted_under(state_dir(lab))]
    if state_dir(lab).exists():
        found.append(f"state directory {state_dir(lab)}")
    found += [f"cgroup {p}" for p in lab_dirs(CgroupLayout.detect(), prefix)]
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    found += [f"loop {line}" for line in loops.splitlines() if f"/{lab}/" in line]
    state = RUN_ROOT / lab / "runc"
    if state.exists():
        found += [f"runc state {p}" for p in state.iterdir()]
    host_state = Path("/run/runc")  # runc's default root: a lab never uses it
    if host_state.is_dir():
        found += [f"runc state {p}" for p in host_state.iterdir() if p.name.startswith(prefix)]
    return found


def all_leftovers() -> list[str]:
    """Everything of any test lab (`nl-t*`) still on the host: its run and state
    directories, mounts, cgroups, loop devices (their images are under the state root)."""
    labs = {p.name for p in RUN_ROOT.iterdir()} if RUN_ROOT.is_dir() else set()
    found = [f"run directory {RUN_ROOT / lab}" for lab in sorted(labs) if lab.startswith("t")]
    found += [f"mount {p}" for p in mounted_under(RUN_ROOT)]
    found += [f"mount {p}" for p in mounted_under(STATE_ROOT)]
    states = {p.name for p in STATE_ROOT.iterdir()} if STATE_ROOT.is_dir() else set()
    found += [
        f"state directory {STATE_ROOT / lab}" for lab in sorted(states) if lab.startswith("t")
    ]
    cgroups = subprocess.run(
        ["find", "/sys/fs/cgroup", "-maxdepth", "7", "-type", "d", "-name", "nl-t*"],
        capture_output=True,
        text=True,
    ).stdout.split()
    found += [f"cgroup {p}" for p in cgroups]
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    found += [f"loop {line}" for line in loops.splitlines() if "netlab" in line]
    return found
