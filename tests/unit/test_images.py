"""The image store's pure parts without root: references as Docker reads them, sizes
and ages as `docker images` prints them, imagePullPolicy decisions, kubelet's error
messages for a missing image, archives recognized by content, the layout's lock."""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import tarfile
import threading
from pathlib import Path

import pytest

from netlab import cli
from netlab.imagecmd import created_seconds, created_text, table
from netlab.node import imagebuild
from netlab.node.imagearchive import archive_images
from netlab.node.imagepolicy import BUILD, NEVER, OFF, PULL, USE, check_policy, pull_action
from netlab.node.imageref import (
    ImageRefError,
    default_pull_policy,
    human_duration,
    human_size,
    normalize,
    parse,
)
from netlab.node.images import (
    HOST_IMAGE_ID,
    ImageError,
    ImageInfo,
    ImagePullError,
    ImageStore,
    is_host_image,
)
from netlab.node.imagetools import file_lock, tool_message

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("ref", "normalized", "familiar"),
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("busybox:latest", "docker.io/library/busybox:latest", "busybox:latest"),
        ("docker.io/library/busybox:latest", "docker.io/library/busybox:latest", "busybox:latest"),
        ("index.docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("library/busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("netlab/python", "docker.io/netlab/python:latest", "netlab/python:latest"),
        ("nginx:1.25", "docker.io/library/nginx:1.25", "nginx:1.25"),
        ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
        ("localhost:5000/team/app:v2", "localhost:5000/team/app:v2", "localhost:5000/team/app:v2"),
        ("quay.io/x/y:1.0-rc.1", "quay.io/x/y:1.0-rc.1", "quay.io/x/y:1.0-rc.1"),
        (f"nginx@{DIGEST}", f"docker.io/library/nginx@{DIGEST}", f"nginx@{DIGEST}"),
        (f"nginx:1.25@{DIGEST}", f"docker.io/library/nginx:1.25@{DIGEST}", f"nginx:1.25@{DIGEST}"),
        ("a_b-c__d/e---f.g", "docker.io/a_b-c__d/e---f.g:latest", "a_b-c__d/e---f.g:latest"),
        ("my.registry/app", "my.registry/app:latest", "my.registry/app:latest"),
    ],
)
def test_references_normalize_as_docker_reads_them(ref, normalized, familiar):
    assert normalize(ref) == normalized
    assert parse(ref).familiar() == familiar


@pytest.mark.parametrize(
    ("ref", "why"),
    [
        ("", "empty"),
        ("Busybox", "lowercase"),
        ("team/MyApp:1", "lowercase"),
        ("busybox:", "not a valid reference"),
        ("bad//name", "not a valid reference"),
        ("-busybox", "not a valid reference"),
        ("busybox:tag with space", "not a valid reference"),
        ("nginx@sha256:abc", "64 lowercase hex digits"),
        ("nginx@md5:" + "a" * 64, "64 lowercase hex digits"),
        ("ab" * 32, "image ID"),
        ("x" * 256, "longer than 255"),
    ],
)
def test_malformed_references_are_refused_naming_the_ref_and_the_form(ref, why):
    with pytest.raises(ImageRefError) as caught:
        parse(ref)
    text = str(caught.value)
    assert f'invalid image reference "{ref}"' in text
    assert why in text
    assert "[REGISTRY[:PORT]/]NAME[:TAG][@sha256:DIGEST]" in text
    assert isinstance(caught.value, ImageError)


def test_kubelet_id_shape():
    assert parse("busybox").with_digest(DIGEST) == f"docker.io/library/busybox@{DIGEST}"


@pytest.mark.parametrize(
    ("ref", "policy"),
    [
        ("busybox", "Always"),
        ("busybox:latest", "Always"),
        ("busybox:1.36", "IfNotPresent"),
        (f"busybox@{DIGEST}", "IfNotPresent"),
        (f"busybox:latest@{DIGEST}", "Always"),
    ],
)
def test_default_pull_policy_is_kubernetes(ref, policy):
    assert default_pull_policy(ref) == policy
    assert check_policy("", ref) == policy
    assert check_policy(None, ref) == policy


def test_an_unknown_pull_policy_is_refused():
    with pytest.raises(ImageError, match='imagePullPolicy "Sometimes" is not one of Always'):
        check_policy("Sometimes", "busybox")


@pytest.mark.parametrize(
    ("policy", "present", "builtin", "pull_enabled", "action"),
    [
        # built-ins: made here, never pulled, whatever the policy
        ("Always", False, True, False, BUILD),
        ("Always", True, True, True, USE),
        ("Never", False, True, False, BUILD),
        ("IfNotPresent", True, True, False, USE),
        # Never: only what is here
        ("Never", True, False, True, USE),
        ("Never", False, False, True, NEVER),
        # IfNotPresent: pull only when missing, and only where pulling is on
        ("IfNotPresent", True, False, True, USE),
        ("IfNotPresent", False, False, True, PULL),
        ("IfNotPresent", False, False, False, OFF),
        # Always: pulls where it may; a local image still runs where pulling is off
        ("Always", True, False, True, PULL),
        ("Always", True, False, False, USE),
        ("Always", False, False, False, OFF),
        ("Always", False, False, True, PULL),
    ],
)
def test_pull_policy_decisions(policy, present, builtin, pull_enabled, action):
    assert pull_action(policy, present, builtin, pull_enabled) == action


@pytest.mark.parametrize(
    ("image", "host"),
    [
        (None, True),
        ("", True),
        ("host", True),
        ("host:latest", True),
        ("netlab/labdns", True),
        ("netlab/collector", True),
        ("netlab/activator", True),
        ("netlab/proxy", True),
        ("netlab/python", False),
        ("busybox", False),
        ("host:1.0", False),
        ("Not A Ref", False),
    ],
)
def test_host_images(image, host):
    assert is_host_image(image) is host


def test_the_host_image_is_the_hosts_root(tmp_path):
    store = ImageStore(tmp_path / "store")
    for image in (None, "", "host", "netlab/labdns"):
        resolved = store.resolve(image, "Always")
        assert resolved.rootfs == Path("/")
        assert resolved.image_id == HOST_IMAGE_ID
        assert resolved.is_host
        assert resolved.config.cmd == [] and resolved.config.env == []
    assert not (tmp_path / "store").exists()  # nothing written for it


def test_missing_image_with_pulls_off_is_err_image_pull_naming_the_fix(tmp_path):
    store = ImageStore(tmp_path / "store", pull=False)
    with pytest.raises(ImagePullError) as caught:
        store.resolve("nginx:1.25", "IfNotPresent")
    assert caught.value.reason == "ErrImagePull"
    message = caught.value.message
    assert message.startswith('Failed to pull image "nginx:1.25": ')
    assert "docker save nginx:1.25 -o image.tar" in message
    assert "netlab image import image.tar" in message
    assert "NETLAB_IMAGE_PULL=1" in message
    with pytest.raises(ImagePullError) as always:
        store.resolve("nginx", None)  # :latest: Always
    assert always.value.reason == "ErrImagePull"


def test_missing_image_with_policy_never_is_err_image_never_pull(tmp_path):
    store = ImageStore(tmp_path / "store", pull=True)  # Never pulls even where it may
    with pytest.raises(ImagePullError) as caught:
        store.resolve("nginx:1.25", "Never")
    assert caught.value.reason == "ErrImageNeverPull"
    assert caught.value.message == (
        'Container image "nginx:1.25" is not present with pull policy of Never'
    )


def test_pull_env(monkeypatch, tmp_path):
    monkeypatch.setenv("NETLAB_IMAGE_PULL", "1")
    monkeypatch.setenv("NETLAB_IMAGE_ROOT", str(tmp_path / "elsewhere"))
    store = ImageStore()
    assert store.pull_enabled and store.root == tmp_path / "elsewhere"
    monkeypatch.delenv("NETLAB_IMAGE_PULL")
    assert not ImageStore().pull_enabled
    assert not ImageStore(tmp_path, pull=False).pull_enabled


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_a_failed_pull_says_what_skopeo_met(tmp_path):
    """A real pull through skopeo, from a loopback port where nothing listens."""
    store = ImageStore(tmp_path / "store", pull=True)
    with pytest.raises(ImagePullError) as caught:
        store.resolve("127.0.0.1:1/x:1", "IfNotPresent")
    message = caught.value.message
    assert caught.value.reason == "ErrImagePull"
    assert message.startswith('Failed to pull image "127.0.0.1:1/x:1": ')
    assert "connection refused" in message
    assert "netlab image import image.tar" in message
    assert not list((tmp_path / "store" / "tmp").iterdir())  # the staging area went


def test_tool_message_takes_skopeos_reason():
    stderr = (
        'time="2026-12-06T22:27:06Z" level=fatal msg="initializing source docker://x: '
        'Get \\"https://x/v2/\\": dial tcp: connect: connection refused"\n'
    )
    assert tool_message(stderr) == (
        'initializing source docker://x: Get "https://x/v2/": dial tcp: connect: connection refused'
    )
    assert tool_message("   ⨯ open /x/index.json: no such file or directory\n") == (
        "open /x/index.json: no such file or directory"
    )


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0B"),
        (999, "999B"),
        (1000, "1kB"),
        (12345, "12.3kB"),
        (1_089_036, "1.09MB"),
        (999_999, "1MB"),
        (21_900_000, "21.9MB"),
        (77_800_000, "77.8MB"),
        (123_456_789, "123MB"),
        (1_500_000_000, "1.5GB"),
    ],
)
def test_sizes_as_docker_images_prints_them(size, text):
    assert human_size(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.5, "Less than a second"),
        (1, "1 second"),
        (59, "59 seconds"),
        (60, "About a minute"),
        (150, "2 minutes"),
        (3600, "About an hour"),
        (5 * 3600, "5 hours"),
        (3 * 86400, "3 days"),
        (15 * 86400, "2 weeks"),
        (90 * 86400, "3 months"),
        (800 * 86400, "2 years"),
    ],
)
def test_ages_as_docker_images_prints_them(seconds, text):
    assert human_duration(seconds) == text


def test_ls_table():
    info = ImageInfo(
        ref="docker.io/library/busybox:latest",
        name="busybox",
        tag="latest",
        id="sha256:" + "0123456789ab" + "c" * 52,
        size=1_089_036,
        created="2026-12-06T22:29:37.673808093Z",
    )
    now = created_seconds(info.created) + 180
    lines = table([info], now)
    assert lines[0].split() == ["IMAGE", "TAG", "IMAGE", "ID", "SIZE", "CREATED"]
    assert lines[1].split() == [
        "busybox",
        "latest",
        "0123456789ab",
        "1.09MB",
        "3",
        "minutes",
        "ago",
    ]
    assert created_text("not a time", now) == "N/A"


def test_created_text_counts_from_rfc3339_with_nanoseconds():
    base = created_seconds("2026-12-06T22:29:37Z")
    assert created_seconds("2026-12-06T22:29:37.673808093Z") == pytest.approx(base + 0.673808)
    assert created_seconds("2026-12-06T23:29:37+01:00") == base
    assert created_text("2026-12-06T22:29:37Z", base + 180) == "3 minutes ago"


def test_image_ls_works_on_an_empty_store(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NETLAB_IMAGE_ROOT", str(tmp_path / "none-yet"))
    assert cli.main(["image", "ls"]) == 0
    assert capsys.readouterr().out.split() == ["IMAGE", "TAG", "IMAGE", "ID", "SIZE", "CREATED"]
    assert cli.main(["image", "rm", "busybox"]) == 1
    assert 'no image "busybox" in the store' in capsys.readouterr().err


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_archives_are_recognized_by_content(tmp_path):
    docker = _tar(
        tmp_path / "saved.tar",
        {
            "manifest.json": json.dumps(
                [
                    {"Config": "c.json", "RepoTags": ["nginx:1.25", "web:1"], "Layers": []},
                    {"Config": "d.json", "RepoTags": None, "Layers": []},
                ]
            ).encode(),
            "c.json": b"{}",
        },
    )
    assert archive_images(docker) == (
        "docker-archive",
        [(":@0", ["docker.io/library/nginx:1.25", "docker.io/library/web:1"]), (":@1", [])],
    )
    index = {
        "schemaVersion": 2,
        "manifests": [
            {"digest": DIGEST, "annotations": {"org.opencontainers.image.ref.name": "x/z:2"}},
            {"digest": DIGEST, "annotations": {"org.opencontainers.image.ref.name": "latest"}},
            {
                "digest": DIGEST,
                "annotations": {
                    "org.opencontainers.image.ref.name": "1.0",
                    "io.containerd.image.name": "quay.io/a/b:1.0",
                },
            },
        ],
    }
    oci = _tar(
        tmp_path / "oci.tar",
        {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": json.dumps(index).encode()},
    )
    assert archive_images(oci) == (
        "oci-archive",
        [(":x/z:2", ["docker.io/x/z:2"]), (":latest", []), (":1.0", ["quay.io/a/b:1.0"])],
    )


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (b"not an archive at all" * 40, "is not an image archive: it is no tar file"),
        (None, "is a tar archive but no image archive"),
    ],
)
def test_other_files_are_refused_saying_what_is_accepted(tmp_path, content, complaint):
    path = tmp_path / "thing.tar"
    if content is None:
        _tar(path, {"hello.txt": b"hi"})
    else:
        path.write_bytes(content)
    with pytest.raises(ImageError) as caught:
        ImageStore(tmp_path / "store").import_archive(path)
    text = str(caught.value)
    assert str(path) in text and complaint in text
    assert "`docker save` / `podman save` archives (docker-archive" in text
    assert "OCI archives (oci-archive" in text


def test_an_unnamed_image_needs_a_name(tmp_path):
    path = _tar(
        tmp_path / "anon.tar",
        {"manifest.json": json.dumps([{"Config": "c.json", "Layers": []}]).encode()},
    )
    with pytest.raises(ImageError, match=r"does not name its image.*--name NAME\[:TAG\]"):
        ImageStore(tmp_path / "store").import_archive(path)


def test_build_names(tmp_path):
    with pytest.raises(ImageError, match='no built-in image "alpine"; netlab builds busybox'):
        ImageStore(tmp_path / "store").build("alpine")
    assert imagebuild.NAMES["python"] == imagebuild.NAMES["netlab/python"] == imagebuild.PYTHON
    assert normalize("busybox") == imagebuild.BUSYBOX


def test_the_lock_excludes_other_descriptors_and_threads(tmp_path):
    path = tmp_path / "lock"
    blocked: list[bool] = []

    def try_lock() -> None:
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            blocked.append(False)
        except BlockingIOError:
            blocked.append(True)
        finally:
            os.close(fd)

    with file_lock(path, shared=True):
        with file_lock(path, shared=True):  # readers share it
            thread = threading.Thread(target=try_lock)
            thread.start()
            thread.join()
    with file_lock(path):
        try_lock()
    try_lock()
    assert blocked == [True, True, False]


def test_copy_in_recreates_symlinks_on_the_way(tmp_path):
    src = tmp_path / "host"
    (src / "usr/lib").mkdir(parents=True)
    (src / "usr/lib/libz.so.1.2.13").write_bytes(b"ELF")
    (src / "usr/lib/libz.so.1").symlink_to("libz.so.1.2.13")
    (src / "lib").symlink_to("usr/lib")
    root = tmp_path / "rootfs"
    root.mkdir()
    imagebuild.copy_in(str(src / "lib/libz.so.1"), root)
    mirror = root / str(src).lstrip("/")
    assert os.readlink(mirror / "lib") == "usr/lib"
    assert os.readlink(mirror / "usr/lib/libz.so.1") == "libz.so.1.2.13"
    assert (mirror / "usr/lib/libz.so.1.2.13").read_bytes() == b"ELF"
    assert (mirror / "lib/libz.so.1").read_bytes() == b"ELF"


def test_shared_libraries_come_from_ldd():
    python = Path("/usr/bin") / imagebuild.host_python()
    libraries = imagebuild.shared_libraries([python])
    assert any(lib.endswith("/libc.so.6") for lib in libraries)
    assert any("ld-linux" in lib for lib in libraries)
