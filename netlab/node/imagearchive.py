"""What an image archive is, found from its content: a `docker save`/`podman save`
archive (docker-archive: `manifest.json` at its top), an OCI archive (`index.json`
and `oci-layout`), or an OCI layout directory, and the names of the images it holds.
Only the archive's small index files are read here; skopeo copies the images."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import shutil
import tarfile
from pathlib import Path
from typing import Any

from netlab.node.imageref import parse
from netlab.node.imagetools import ImageError

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
ACCEPTED = (
    "netlab image import takes `docker save` / `podman save` archives (docker-archive, "
    "also gzipped) and OCI archives (oci-archive: `podman save --format oci-archive`, "
    "`skopeo copy ... oci-archive:FILE`), or an OCI layout directory"
)


def archive_images(path: Path) -> tuple[str, list[tuple[str, list[str]]]]:
    """What an archive is ("docker-archive", "oci-archive" or "oci" for a layout
    directory) and its images: (skopeo's source suffix, their normalized names)."""
    if path.is_dir():
        if (path / "index.json").exists() and (path / "oci-layout").exists():
            return "oci", _oci_images(json.loads((path / "index.json").read_text()), path)
        raise ImageError(f"{path} is a directory but not an OCI image layout; {ACCEPTED}")
    if not path.exists():
        raise ImageError(f"{path}: no such file; {ACCEPTED}")
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {}
            for member in tar:
                top = member.name.removeprefix("./")
                if top in ("manifest.json", "index.json", "oci-layout") and member.isfile():
                    members[top] = tar.extractfile(member).read()  # type: ignore[union-attr]
    except tarfile.ReadError:
        raise ImageError(
            f"{path} is not an image archive: it is no tar file (plain, or compressed with "
            f"gzip, bzip2 or xz); {ACCEPTED}"
        ) from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ImageError(f"{path}: cannot read it as a tar archive ({exc}); {ACCEPTED}") from None
    try:
        if "manifest.json" in members:
            return "docker-archive", _docker_images(json.loads(members["manifest.json"]))
        if "index.json" in members and "oci-layout" in members:
            return "oci-archive", _oci_images(json.loads(members["index.json"]), path)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ImageError(f"{path}: its image list is damaged ({exc}); {ACCEPTED}") from None
    raise ImageError(
        f"{path} is a tar archive but no image archive (it has neither manifest.json nor "
        f"index.json and oci-layout at its top); {ACCEPTED}"
    )


def _docker_images(manifest: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    if not isinstance(manifest, list) or not manifest:
        raise ValueError("manifest.json lists no image")
    return [
        (f":@{i}", [str(parse(tag)) for tag in entry.get("RepoTags") or []])
        for i, entry in enumerate(manifest)
    ]


def _oci_images(index: dict[str, Any], path: Path) -> list[tuple[str, list[str]]]:
    entries = index.get("manifests") or []
    if not entries:
        raise ValueError("index.json lists no image")
    images = []
    for entry in entries:
        annotations = entry.get("annotations") or {}
        ref_name = annotations.get(REF_NAME, "")
        full = annotations.get(CONTAINERD_NAME) or ref_name
        if ref_name and any(c in full for c in "/:@"):
            images.append((f":{ref_name}", [str(parse(full))]))
        elif ref_name:  # only a tag: no repository to put it under
            images.append((f":{ref_name}", []))
        elif len(entries) == 1:
            images.append(("", []))
        else:
            raise ValueError(f"{path}: an image without a name among {len(entries)}")
    return images


_OPENERS = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}


def compressed(path: Path) -> bool:
    """Whether a file is gzip, bzip2 or xz data (`docker save | gzip`)."""
    with open(path, "rb") as f:
        head = f.read(6)
    return any(head.startswith(magic) for magic in _OPENERS)


def decompress(path: Path, target: Path) -> Path:
    """The plain tar inside a compressed archive, written to `target`."""
    with open(path, "rb") as f:
        head = f.read(6)
    opener = next(o for magic, o in _OPENERS.items() if head.startswith(magic))
    with opener(path, "rb") as source, open(target, "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
    return target
