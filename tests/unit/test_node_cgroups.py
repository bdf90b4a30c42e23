"""cgroup layouts read from mountinfo, containers' cgroup paths and directories, a
lab's directories found and removed, and usage read from fake v1 and v2 trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from netlab.node.cgroups import (
    CgroupError,
    CgroupLayout,
    Usage,
    cgroups_path,
    container_dirs,
    lab_dirs,
    remove_lab,
    usage,
)

# this CI machine: v1 controllers, each its own hierarchy, and an empty cgroup2
HYBRID = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
# Debian 12: one cgroup2 at /sys/fs/cgroup
V2 = """\
22 27 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""
# older systemd hosts: cpu and cpuacct co-mounted, no cgroup2
V1 = """\
25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:7 - cgroup cgroup rw,cpu,cpuacct
26 24 0:23 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:8 - cgroup cgroup rw,memory
27 24 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,xattr,name=systemd
"""


@pytest.mark.parametrize(
    ("text", "mode", "mounts"),
    [
        (
            HYBRID,
            "hybrid",
            {
                "cpu": "/sys/fs/cgroup/cpu",
                "cpuacct": "/sys/fs/cgroup/cpuacct",
                "memory": "/sys/fs/cgroup/memory",
                "devices": "/sys/fs/cgroup/devices",
                "name=systemd": "/sys/fs/cgroup/systemd",
                "unified": "/sys/fs/cgroup/unified",
            },
        ),
        (V2, "v2", {"unified": "/sys/fs/cgroup"}),
        (
            V1,
            "v1",
            {
                "cpu": "/sys/fs/cgroup/cpu,cpuacct",
                "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
                "memory": "/sys/fs/cgroup/memory",
                "name=systemd": "/sys/fs/cgroup/systemd",
            },
        ),
        # a v2 host that still mounts systemd's named v1 hierarchy: v2
        (
            V2 + "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n",
            "v2",
            {"unified": "/sys/fs/cgroup", "name=systemd": "/sys/fs/cgroup/systemd"},
        ),
        # a space in a mount point is written \040
        ("1 2 0:1 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n", "v2", {"unified": "/mnt/my cg"}),
    ],
)
def test_layout_from_mountinfo(text, mode, mounts) -> None:
    layout = CgroupLayout.parse(text)
    assert layout.mode == mode
    assert layout.mounts == {k: Path(v) for k, v in mounts.items()}


def test_no_cgroups_mounted_is_an_error(tmp_path) -> None:
    with pytest.raises(CgroupError, match="no cgroup hierarchy"):
        CgroupLayout.parse("22 27 0:21 / /proc rw,relatime - proc proc rw\n")
    with pytest.raises(CgroupError, match="cannot read"):
        CgroupLayout.detect(tmp_path / "missing")


def test_detect_reads_this_host() -> None:
    layout = CgroupLayout.detect()
    assert layout.mode in ("v1", "hybrid", "v2")


@pytest.mark.parametrize(
    ("text", "expected"),
    [(HYBRID, "nl-tlab/c1"), (V1, "nl-tlab/c1"), (V2, "/nl-tlab/c1")],
)
def test_cgroups_path_relative_on_v1_absolute_on_v2(text, expected) -> None:
    assert cgroups_path(CgroupLayout.parse(text), "nl-tlab", "c1") == expected


@pytest.mark.parametrize("bad", ["", "a/b", "..", "."])
def test_cgroups_path_refuses_what_is_not_one_directory(bad) -> None:
    with pytest.raises(ValueError):
        cgroups_path(CgroupLayout.parse(V2), "nl-tlab", bad)


def _layout(tmp_path: Path, text: str) -> CgroupLayout:
    """`text`'s layout with its mount points moved under tmp_path."""
    return CgroupLayout.parse(text.replace(" /sys/fs/cgroup", f" {tmp_path}/cg"))


def _proc(tmp_path: Path, pid: int, text: str) -> Path:
    proc = tmp_path / "proc"
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "cgroup").write_text(text)
    return proc


def test_container_dirs_nest_a_relative_path_under_the_runtimes_cgroup(tmp_path) -> None:
    layout = _layout(tmp_path, HYBRID)
    proc = _proc(
        tmp_path,
        42,
        "9:name=systemd:/\n5:devices:/\n4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n",
    )
    dirs = container_dirs(layout, "nl-tlab/c1", 42, proc)
    cg = tmp_path / "cg"
    assert dirs == {
        "cpu": cg / "cpu/nl-tlab/c1",
        "cpuacct": cg / "cpuacct/nl-tlab/c1",
        "memory": cg / "memory/process_api/abc/nl-tlab/c1",
        "devices": cg / "devices/nl-tlab/c1",
        "name=systemd": cg / "systemd/nl-tlab/c1",
    }  # hybrid's cgroup2 is not runc's (cgroupfs driver)


def test_container_dirs_comounted_and_v2(tmp_path) -> None:
    v1 = _layout(tmp_path, V1)
    proc = _proc(tmp_path, 7, "3:cpu,cpuacct:/lab\n2:memory:/lab\n1:name=systemd:/x\n")
    dirs = container_dirs(v1, "nl-tlab/c1", 7, proc)
    both = tmp_path / "cg/cpu,cpuacct/lab/nl-tlab/c1"
    assert dirs["cpu"] == dirs["cpuacct"] == both
    assert dirs["memory"] == tmp_path / "cg/memory/lab/nl-tlab/c1"
    v2 = _layout(tmp_path, V2)
    # an absolute path: the runtime's own cgroup does not matter (not even read)
    assert container_dirs(v2, "/nl-tlab/c1", 99999999, tmp_path / "noproc") == {
        "unified": tmp_path / "cg/nl-tlab/c1"
    }


def test_container_dirs_of_a_gone_runtime_is_an_error(tmp_path) -> None:
    with pytest.raises(CgroupError, match="gone"):
        container_dirs(_layout(tmp_path, V1), "nl-tlab/c1", 5, tmp_path / "proc")


def test_a_mount_of_part_of_a_hierarchy(tmp_path) -> None:
    # inside a cgroup namespace or a container: the mount shows /lab of the hierarchy
    layout = CgroupLayout.parse(f"1 2 0:1 /lab {tmp_path}/cg rw - cgroup2 cgroup2 rw\n")
    proc = _proc(tmp_path, 3, "0::/lab/runtime\n")
    assert container_dirs(layout, "nl-t/c", 3, proc) == {"unified": tmp_path / "cg/runtime/nl-t/c"}
    assert container_dirs(layout, "/elsewhere/c", 3, proc) == {}


def _tree(root: Path, *dirs: str) -> None:
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)


def test_lab_dirs_and_remove_lab(tmp_path) -> None:
    layout = _layout(tmp_path, HYBRID)
    cg = tmp_path / "cg"
    _tree(
        cg,
        "cpu/nl-tlab/c1",
        "cpu/nl-tlab/c2/inner",
        "memory/process_api/abc/nl-tlab/c1",
        "memory/process_api/def/nl-other/nl-tlab/c9",  # inside another lab's: not ours
        "memory/nl-tlab2/c1",  # another lab whose name starts like ours
        "devices/a/b/c/d/e/f/nl-tlab",  # deeper than the walk goes
        "unified/nl-tlab",
    )
    busy = cg / "cpu/nl-tlab/c2/inner/cgroup.procs"  # a fake tree's file stands for a process
    busy.write_text("123\n")
    found = lab_dirs(layout, "nl-tlab")
    assert sorted(found) == sorted(
        [cg / "cpu/nl-tlab", cg / "memory/process_api/abc/nl-tlab", cg / "unified/nl-tlab"]
    )
    removed = remove_lab(layout, "nl-tlab")
    assert set(removed) == {
        cg / "cpu/nl-tlab/c1",
        cg / "memory/process_api/abc/nl-tlab/c1",
        cg / "memory/process_api/abc/nl-tlab",
        cg / "unified/nl-tlab",
    }
    assert removed.index(cg / "memory/process_api/abc/nl-tlab/c1") < removed.index(
        cg / "memory/process_api/abc/nl-tlab"
    )
    assert lab_dirs(layout, "nl-tlab") == [cg / "cpu/nl-tlab"]  # the busy one stays
    assert (cg / "memory/process_api/def/nl-other/nl-tlab/c9").is_dir()
    assert (cg / "memory/nl-tlab2/c1").is_dir()
    assert (cg / "devices/a/b/c/d/e/f/nl-tlab").is_dir()
    busy.unlink()
    assert set(remove_lab(layout, "nl-tlab")) == {
        cg / "cpu/nl-tlab/c2/inner",
        cg / "cpu/nl-tlab/c2",
        cg / "cpu/nl-tlab",
    }
    assert lab_dirs(layout, "nl-tlab") == []
    assert remove_lab(layout, "nl-tlab") == []


def _files(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)


def test_usage_v1(tmp_path) -> None:
    cpu, acct, mem = tmp_path / "cpu", tmp_path / "cpuacct", tmp_path / "memory"
    _files(cpu, {"cpu.stat": "nr_periods 20\nnr_throttled 7\nthrottled_time 350000000\n"})
    _files(acct, {"cpuacct.usage": "1234567890\n"})
    _files(
        mem,
        {
            "memory.usage_in_bytes": "10485760\n",
            "memory.stat": "cache 4096\ninactive_file 1\ntotal_inactive_file 2097152\n",
            "memory.limit_in_bytes": "16777216\n",
            "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        },
    )
    got = usage({"cpu": cpu, "cpuacct": acct, "memory": mem})
    assert got == Usage(
        cpu_ns=1234567890,
        memory_usage=10485760,
        memory_working_set=10485760 - 2097152,
        memory_limit=16777216,
        nr_periods=20,
        nr_throttled=7,
        throttled_ns=350000000,
        oom_kills=1,
    )
    (mem / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert usage({"cpu": cpu, "cpuacct": acct, "memory": mem}).memory_limit is None


def test_usage_v2(tmp_path) -> None:
    d = tmp_path / "c1"
    _files(
        d,
        {
            "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 4\n"
            "nr_throttled 2\nthrottled_usec 30\n",
            "memory.current": "8192000\n",
            "memory.stat": "anon 4096\nfile 8192\ninactive_file 192000\nactive_file 0\n",
            "memory.max": "max\n",
            "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
        },
    )
    assert usage({"unified": d}) == Usage(
        cpu_ns=1_500_000,
        memory_usage=8192000,
        memory_working_set=8000000,
        memory_limit=None,
        nr_periods=4,
        nr_throttled=2,
        throttled_ns=30_000,
        oom_kills=1,
    )
    (d / "memory.max").write_text("33554432\n")
    assert usage({"unified": d}).memory_limit == 33554432


def test_usage_of_a_vanished_cgroup_is_none(tmp_path) -> None:
    gone = tmp_path / "gone"
    assert usage({"cpu": gone, "cpuacct": gone, "memory": gone}) is None
    assert usage({"unified": gone}) is None
    # only a CPU hierarchy left: what it has, zeros for the rest
    _files(tmp_path / "acct", {"cpuacct.usage": "5\n"})
    only = usage({"cpuacct": tmp_path / "acct", "memory": gone})
    assert only is not None and only.cpu_ns == 5 and only.memory_working_set == 0
