"""The image store on the real machine (root, for umoci's unpack; no lab): built-in
images made from Debian packages and run from their unpacked roots with chroot,
real docker-archive and OCI archives made with skopeo imported back, removal,
kubelet's errors for a missing image, a refused garbage file."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from netlab import cli
from netlab.node import imagebuild
from netlab.node.images import ImageError, ImagePullError, ImageStore

pytestmark = pytest.mark.root

BUSYBOX = "docker.io/library/busybox:latest"
PYTHON = "docker.io/netlab/python:latest"


def chroot(rootfs: Path, *argv: str) -> str:
    done = subprocess.run(
        ["chroot", str(rootfs), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ImageStore:
    """One store for the module, with busybox built (every test may add to it)."""
    s = ImageStore(tmp_path_factory.mktemp("images") / "store", pull=False)
    s.build("busybox")
    return s


def names(store: ImageStore) -> list[str]:
    return [i.ref for i in store.list()]


def test_busybox_is_small_and_runs_from_its_unpacked_root(store):
    (info,) = [i for i in store.list() if i.ref == BUSYBOX]
    assert 1_000_000 <= info.size <= 2_000_000  # as `netlab image ls` shows it: ~1.1MB
    resolved = store.resolve("busybox", None)
    assert resolved.ref == BUSYBOX
    assert resolved.image == "busybox"
    assert resolved.image_id == f"docker.io/library/busybox@{info.id}"
    assert resolved.rootfs == store.root / "rootfs" / info.id.removeprefix("sha256:")
    assert resolved.config.cmd == ["sh"]
    assert any(e.startswith("PATH=") for e in resolved.config.env)
    assert chroot(resolved.rootfs, "/bin/sh", "-c", "echo hi; id -un; ls -d /tmp") == (
        "hi\nroot\n/tmp\n"
    )
    assert os.stat(resolved.rootfs / "tmp").st_mode & 0o1777 == 0o1777
    assert store.resolve("docker.io/library/busybox:latest", "Never").rootfs == resolved.rootfs


def test_netlab_python_runs_the_stdlib_and_the_apps(store):
    info = store.build("netlab/python")
    assert info.ref == PYTHON
    resolved = store.resolve("netlab/python", "IfNotPresent")
    assert resolved.config.cmd == ["python3"]
    out = chroot(
        resolved.rootfs,
        "/usr/bin/python3",
        "-c",
        "import json, asyncio, ssl, sqlite3, hashlib, zlib, ctypes, decimal, socket; print('ok')",
    )
    assert out == "ok\n"
    out = chroot(
        resolved.rootfs,
        "/bin/sh",
        "-c",
        "python3 -c 'import netlab.apps.echo, netlab.apps.bookinfo, aiohttp; print(1)' "
        "&& python3 -m netlab.apps.echo --help",
    )
    assert out.startswith("1\nusage: python3 -m netlab.apps.echo")
    # the busybox beside it, for exec and probes
    assert chroot(resolved.rootfs, "/bin/sh", "-c", "echo $((6 * 7))") == "42\n"
    busybox = next(i for i in store.list() if i.ref == BUSYBOX)
    assert info.size > 5 * busybox.size


def test_a_built_in_is_built_on_first_use_once_when_two_resolve_at_once(tmp_path):
    store = ImageStore(tmp_path / "fresh")
    results: list[Path] = []
    errors: list[BaseException] = []

    def resolve() -> None:
        try:
            results.append(store.resolve("busybox", "Never").rootfs)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=resolve) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 1 and len(results) == 3
    assert names(store) == [BUSYBOX]
    assert [p.name for p in (tmp_path / "fresh/rootfs").iterdir() if p.is_dir()] == [
        results[0].name
    ]
    assert list((tmp_path / "fresh/tmp").iterdir()) == []


def test_a_built_in_made_from_other_inputs_is_made_again(tmp_path, monkeypatch):
    store = ImageStore(tmp_path / "s")
    first = store.resolve("busybox", "IfNotPresent")
    monkeypatch.setattr(imagebuild, "RECIPE_VERSION", "test-changed")
    second = store.resolve("busybox", "IfNotPresent")
    assert second.image_id != first.image_id
    assert not first.rootfs.exists()  # no container used it: collected
    assert store.resolve("busybox", "IfNotPresent").rootfs == second.rootfs


def test_docker_archive_and_oci_archive_made_by_skopeo_import(store, tmp_path):
    source = f"oci:{store.root}:{BUSYBOX}"
    docker = tmp_path / "saved.tar"
    oci = tmp_path / "oci.tar"
    for destination in (f"docker-archive:{docker}:x/y:1", f"oci-archive:{oci}:x/z:2"):
        subprocess.run(
            ["skopeo", "--insecure-policy", "copy", "-q", source, destination], check=True
        )
    (imported,) = store.import_archive(docker)
    assert (imported.ref, imported.name, imported.tag) == ("docker.io/x/y:1", "x/y", "1")
    (from_oci,) = store.import_archive(oci)
    assert from_oci.ref == "docker.io/x/z:2"
    (renamed,) = store.import_archive(oci, name="lab/renamed:v1")
    assert renamed.ref == "docker.io/lab/renamed:v1"
    gzipped = tmp_path / "saved.tar.gz"  # docker save IMAGE | gzip > saved.tar.gz
    with open(docker, "rb") as plain, gzip.open(gzipped, "wb") as out:
        shutil.copyfileobj(plain, out)
    (from_gzip,) = store.import_archive(gzipped, name="x/gz:1")
    assert (from_gzip.ref, from_gzip.id) == ("docker.io/x/gz:1", imported.id)
    assert {"docker.io/x/y:1", "docker.io/x/z:2", "docker.io/lab/renamed:v1"} <= set(names(store))
    for ref in ("x/y:1", "x/z:2", "lab/renamed:v1"):
        resolved = store.resolve(ref, "Never")
        assert chroot(resolved.rootfs, "/bin/sh", "-c", "echo from $0") == "from /bin/sh\n"
    inspected = store.inspect("x/y:1")
    assert inspected["id"] == imported.id
    assert inspected["repoTags"] == ["docker.io/x/gz:1", "docker.io/x/y:1"]  # one image
    assert inspected["config"]["config"]["Cmd"] == ["sh"]
    assert inspected["size"] == imported.size


@pytest.fixture
def own_store(tmp_path) -> ImageStore:
    """A store of this test's own, with busybox: the module's store has other names for
    the same digests (a docker-archive round trip of busybox is the same image)."""
    s = ImageStore(tmp_path / "own")
    s.build("busybox")
    return s


def test_rm_removes_the_name_and_what_only_it_used(own_store, tmp_path):
    store = own_store
    docker = tmp_path / "saved.tar"
    subprocess.run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "-q",
            f"oci:{store.root}:{BUSYBOX}",
            f"docker-archive:{docker}:gone/soon:1",
        ],
        check=True,
    )
    (info,) = store.import_archive(docker)
    rootfs = store.resolve("gone/soon:1", "Never").rootfs
    blobs_before = set((store.root / "blobs/sha256").iterdir())
    assert store.remove("gone/soon:1") == ["docker.io/gone/soon:1"]
    assert "docker.io/gone/soon:1" not in names(store)
    assert not rootfs.exists()
    blobs_after = set((store.root / "blobs/sha256").iterdir())
    assert store.root / "blobs/sha256" / info.id.removeprefix("sha256:") in blobs_before
    assert store.root / "blobs/sha256" / info.id.removeprefix("sha256:") not in blobs_after
    assert BUSYBOX in names(store)  # and what others use stays
    assert store.resolve("busybox", "Never").rootfs.is_dir()
    with pytest.raises(ImageError, match='no image "gone/soon:1" in the store'):
        store.remove("gone/soon:1")


def test_rm_keeps_an_image_a_container_uses(own_store, tmp_path):
    store = own_store
    subprocess.run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "-q",
            f"oci:{store.root}:{BUSYBOX}",
            f"docker-archive:{tmp_path / 'x.tar'}:in/use:1",
        ],
        check=True,
    )
    store.import_archive(tmp_path / "x.tar")
    lower = store.resolve("in/use:1", "Never").rootfs
    assert lower != store.resolve("busybox", "Never").rootfs  # a docker-archive's own digest
    merged, upper, work = (tmp_path / d for d in ("merged", "upper", "work"))
    for d in (merged, upper, work):
        d.mkdir()
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)],
        check=True,
    )  # fmt: skip
    try:
        with pytest.raises(ImageError, match="in use by running containers"):
            store.remove("in/use:1")
        assert "docker.io/in/use:1" in names(store)
        assert store.remove("in/use:1", force=True) == ["docker.io/in/use:1"]
        assert lower.is_dir()  # its files stay while it is mounted
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    store.collect_garbage()
    assert not lower.exists()


def test_missing_images_fail_as_kubelet_reports_them(store):
    with pytest.raises(ImagePullError) as pull:
        store.resolve("nginx:1.25", None)
    assert pull.value.reason == "ErrImagePull"
    assert pull.value.message.startswith('Failed to pull image "nginx:1.25": ')
    assert "netlab image import" in pull.value.message
    with pytest.raises(ImagePullError) as never:
        store.resolve("nginx:1.25", "Never")
    assert never.value.reason == "ErrImageNeverPull"
    assert never.value.message == (
        'Container image "nginx:1.25" is not present with pull policy of Never'
    )


def test_the_cli_lists_builds_imports_and_refuses_garbage(store, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NETLAB_IMAGE_ROOT", str(store.root))
    assert cli.main(["image", "build", "busybox"]) == 0
    assert capsys.readouterr().out.startswith("Built busybox:latest (")
    assert cli.main(["image", "ls"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["IMAGE", "TAG", "IMAGE", "ID", "SIZE", "CREATED"]
    (busybox,) = [r for r in rows if r[0] == "busybox"]
    assert busybox[1] == "latest" and len(busybox[2]) == 12 and busybox[3].endswith("MB")
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(os.urandom(4096))
    assert cli.main(["image", "import", str(garbage)]) == 1
    err = capsys.readouterr().err
    assert f"{garbage} is not an image archive" in err and "docker-archive" in err
    archive = tmp_path / "cli.tar"
    subprocess.run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "-q",
            f"oci:{store.root}:{BUSYBOX}",
            f"docker-archive:{archive}:cli/img:7",
        ],
        check=True,
    )
    assert cli.main(["image", "import", str(archive)]) == 0
    assert capsys.readouterr().out.startswith("Loaded image: cli/img:7 (")
    assert cli.main(["image", "inspect", "cli/img:7"]) == 0
    assert '"docker.io/cli/img:7"' in capsys.readouterr().out
    assert cli.main(["image", "rm", "cli/img:7"]) == 0
    assert capsys.readouterr().out == "Untagged: docker.io/cli/img:7\n"
