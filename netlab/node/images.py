"""The machine's image store: an OCI image layout (`oci-layout`, `index.json`,
`blobs/sha256/`) under /var/lib/netlab/images, written by skopeo and umoci only.

Beside the layout the store keeps each image's root filesystem, unpacked once per
manifest digest (`rootfs/<digest>/`, by `umoci raw unpack`), which containers
share read-only as the lower layer of their overlays.

`resolve` is the kubelet's image step: with `imagePullPolicy` semantics it finds
the image, builds a built-in one (`busybox`, `netlab/python`) when missing, pulls
through skopeo only where pulling is on (NETLAB_IMAGE_PULL=1: these machines reach
no registry), or fails as kubelet does (ErrImagePull, ErrImageNeverPull) naming
the fix. A pod without an image runs in the host image: a read-only view of `/`.

Writes to the layout hold one file lock (`.lock`, flock), readers share it, so a
lab's supervisor and a CLI in another shell never see a half-written index.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netlab.node import imagebuild
from netlab.node.imagearchive import REF_NAME, archive_images, compressed, decompress
from netlab.node.imagepolicy import (
    HOST_IMAGE_ID,
    NEVER,
    OFF,
    PULL,
    PULL_ENV,
    check_policy,
    is_host_image,
    pull_action,
    pull_off_message,
)
from netlab.node.imageref import ImageRef, parse
from netlab.node.imagetools import (
    ImageError,
    ImageNotFound,
    ImagePullError,
    file_lock,
    remove_leftovers,
    rootfs_in_use,
    run_tool,
)

__all__ = [
    "DEFAULT_ROOT",
    "HOST_IMAGE_ID",
    "ImageConfig",
    "ImageError",
    "ImageInfo",
    "ImageNotFound",
    "ImagePullError",
    "ImageStore",
    "ResolvedImage",
    "is_host_image",
]

DEFAULT_ROOT = Path("/var/lib/netlab/images")
ROOT_ENV = "NETLAB_IMAGE_ROOT"
PULL_TIMEOUT = 300  # seconds for one pull, all of it
INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


@dataclass(frozen=True)
class ImageConfig:
    """What an image's config says about running it (the OCI config's `config`)."""

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)  # "NAME=value", as in the image
    working_dir: str = ""
    user: str = ""

    @classmethod
    def from_oci(cls, config: dict[str, Any]) -> ImageConfig:
        c = config.get("config") or {}
        return cls(
            entrypoint=list(c.get("Entrypoint") or []),
            cmd=list(c.get("Cmd") or []),
            env=list(c.get("Env") or []),
            working_dir=c.get("WorkingDir") or "",
            user=c.get("User") or "",
        )


@dataclass(frozen=True)
class ResolvedImage:
    """An image ready for a container: its unpacked root (shared, read-only) and config."""

    ref: str  # normalized: docker.io/library/busybox:latest ("host" for the host image)
    image: str  # as the manifest wrote it
    image_id: str  # as kubelet reports imageID: docker.io/library/busybox@sha256:...
    rootfs: Path
    config: ImageConfig

    @property
    def is_host(self) -> bool:
        return self.image_id == HOST_IMAGE_ID


@dataclass(frozen=True)
class ImageInfo:
    """One name in the store, as `netlab image ls` lists it."""

    ref: str  # docker.io/library/busybox:latest
    name: str  # busybox
    tag: str  # latest ("<none>" for a name by digest)
    id: str  # sha256:<manifest digest>
    size: int  # bytes: the layers' and the config's blobs
    created: str  # the config's time, RFC 3339

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]


def host_image(image: str | None) -> ResolvedImage:
    return ResolvedImage(
        ref=(image or "host").strip() or "host",
        image=image or "",
        image_id=HOST_IMAGE_ID,
        rootfs=Path("/"),
        config=ImageConfig(),
    )


class ImageStore:
    """The machine's images: list, inspect, import, build, remove, and resolve for a
    container. `root` defaults to $NETLAB_IMAGE_ROOT or /var/lib/netlab/images; pulling
    is on when `pull` is True (default: $NETLAB_IMAGE_PULL=1)."""

    def __init__(self, root: Path | None = None, pull: bool | None = None) -> None:
        if root is None:
            root = Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)
        self.root = Path(root).absolute()
        if ":" in str(self.root):
            raise ImageError(f"the image store's path may not contain ':' ({self.root})")
        self.pull_enabled = os.environ.get(PULL_ENV) == "1" if pull is None else pull
        self.rootfs_dir = self.root / "rootfs"
        self.tmp_dir = self.root / "tmp"

    # -- the layout -----------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, shared: bool = False) -> Iterator[None]:
        """The layout's lock (made with the layout, for a writer; a reader of a store
        not made yet has nothing to wait for)."""
        if not shared:
            self._init_layout()
        elif not self.root.is_dir():
            yield
            return
        with file_lock(self.root / ".lock", shared=shared):
            yield

    def _init_layout(self) -> None:
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        for name, content in (
            ("oci-layout", {"imageLayoutVersion": "1.0.0"}),
            ("index.json", {"schemaVersion": 2, "manifests": []}),
        ):
            path = self.root / name
            if not path.exists():  # written whole, or not at all
                fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=self.root)
                with os.fdopen(fd, "w") as f:
                    f.write(json.dumps(content))
                os.chmod(tmp, 0o644)
                if not path.exists():
                    os.replace(tmp, path)
                else:
                    os.unlink(tmp)

    def _index(self) -> list[dict[str, Any]]:
        try:
            index = json.loads((self.root / "index.json").read_text())
        except FileNotFoundError:
            return []
        return list(index.get("manifests") or [])

    def _names(self) -> dict[str, dict[str, Any]]:
        """Stored name -> its descriptor in index.json."""
        return {
            d["annotations"][REF_NAME]: d
            for d in self._index()
            if (d.get("annotations") or {}).get(REF_NAME)
        }

    def _blob(self, digest: str) -> dict[str, Any]:
        algorithm, _, hexpart = digest.partition(":")
        return json.loads((self.root / "blobs" / algorithm / hexpart).read_text())

    def _manifest(self, descriptor: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The image manifest a descriptor names (for an index: this platform's)."""
        digest = descriptor["digest"]
        manifest = self._blob(digest)
        if descriptor.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
            arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, "")
            for entry in manifest.get("manifests") or []:
                platform = entry.get("platform") or {}
                if platform.get("architecture") in (arch, None) and os.path.exists(
                    self.root / "blobs" / entry["digest"].replace(":", "/")
                ):
                    return self._manifest(entry)
            raise ImageError(f"the image index {digest} holds no image for linux/{arch}")
        return digest, manifest

    def _find(self, ref: ImageRef) -> tuple[str, dict[str, Any]] | None:
        """The stored name and descriptor for a reference (by name, or by digest)."""
        names = self._names()
        normalized: dict[str, tuple[str, dict[str, Any]]] = {}
        for name, descriptor in names.items():
            try:
                normalized.setdefault(str(parse(name)), (name, descriptor))
            except ImageError:
                continue  # a name written by someone else that is no reference
        if not ref.digest:
            return normalized.get(str(ref))
        with_digest = [
            (key, item) for key, item in normalized.items() if item[1]["digest"] == ref.digest
        ]
        same_repo = [item for key, item in with_digest if parse(key).repository == ref.repository]
        found = same_repo or [item for _, item in with_digest]
        return found[0] if found else None

    def _lookup(self, ref: str) -> list[tuple[str, dict[str, Any]]]:
        """The stored names `ref` means: a reference, or an image ID (a prefix of the
        manifest digest, 4 hex digits at least) that may have several names."""
        try:
            found = self._find(parse(ref))
        except ImageError:
            found = None
        if found:
            return [found]
        prefix = ref.strip().removeprefix("sha256:")
        if len(prefix) >= 4 and all(c in "0123456789abcdef" for c in prefix):
            matches = [
                (name, d)
                for name, d in self._names().items()
                if d["digest"].removeprefix("sha256:").startswith(prefix)
            ]
            if len({d["digest"] for _, d in matches}) > 1:
                raise ImageError(f'image ID "{ref}" is ambiguous: give more of its digits')
            if matches:
                return matches
        raise ImageNotFound(
            f'no image "{ref}" in the store ({self.root}); `netlab image ls` lists them, '
            "`netlab image import FILE` adds one"
        )

    def _info(self, name: str, descriptor: dict[str, Any]) -> ImageInfo:
        _, manifest = self._manifest(descriptor)
        config = self._blob(manifest["config"]["digest"])
        size = manifest["config"].get("size", 0) + sum(
            layer.get("size", 0) for layer in manifest.get("layers") or []
        )
        try:
            ref = parse(name)
            shown, tag = ref.familiar_repository, ref.tag or "<none>"
        except ImageError:
            shown, tag = name, "<none>"
        return ImageInfo(
            ref=name,
            name=shown,
            tag=tag,
            id=descriptor["digest"],
            size=size,
            created=config.get("created", ""),
        )

    # -- reading ------------------------------------------------------------------

    def list(self) -> list[ImageInfo]:
        """Every name in the store, sorted by name and tag."""
        if not (self.root / "index.json").exists():
            return []
        with self._locked(shared=True):
            infos = [self._info(name, d) for name, d in self._names().items()]
        return sorted(infos, key=lambda i: (i.name, i.tag))

    def inspect(self, ref: str) -> dict[str, Any]:
        """An image by name or ID: its ID, names, size, manifest and config."""
        with self._locked(shared=True):
            found = self._lookup(ref)
            digest = found[0][1]["digest"]
            infos = [
                self._info(name, d) for name, d in self._names().items() if d["digest"] == digest
            ]
            _, manifest = self._manifest(found[0][1])
            config = self._blob(manifest["config"]["digest"])
        repo_digests = sorted({_repo_digest(i.ref, digest) for i in infos} - {""})
        rootfs = self.rootfs_dir / digest.removeprefix("sha256:")
        return {
            "id": digest,
            "repoTags": sorted(i.ref for i in infos if "@" not in i.ref),
            "repoDigests": repo_digests,
            "size": infos[0].size,
            "created": infos[0].created,
            "rootfs": str(rootfs) if rootfs.is_dir() else None,  # unpacked once used
            "manifest": manifest,
            "config": config,
        }

    # -- writing --------------------------------------------------------------------

    def _staging(self, what: str) -> Path:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{what}-{os.getpid()}-", dir=self.tmp_dir))

    def _store_copy(self, source: str, name: str, what: str) -> None:
        """skopeo copy SOURCE into the layout as `name`, under the lock."""
        with self._locked():
            run_tool(
                ["skopeo", "--insecure-policy", "copy", "-q", source, f"oci:{self.root}:{name}"],
                what=what,
            )

    def collect_garbage(self) -> None:
        """Remove blobs no name uses (`umoci gc`), unpacked roots no image has and no
        container uses, and what crashed builds and unpacks left."""
        with self._locked():
            self._drop_nameless()
            run_tool(["umoci", "gc", "--layout", str(self.root)], what="umoci gc")
            digests = {d["digest"].removeprefix("sha256:") for d in self._index()}
        remove_leftovers(self.tmp_dir)
        remove_leftovers(self.rootfs_dir)
        if not self.rootfs_dir.is_dir():
            return
        unused = [
            p
            for p in self.rootfs_dir.iterdir()
            if p.is_dir() and not p.name.startswith(".") and p.name not in digests
        ]
        busy = rootfs_in_use(unused)
        for path in unused:
            if path not in busy:
                shutil.rmtree(path, ignore_errors=True)

    def _drop_nameless(self) -> None:
        """Drop the index's entries that have no name (under the lock): skopeo, copying
        an image to a name another had, takes the name off the old entry but keeps it."""
        path = self.root / "index.json"
        index = json.loads(path.read_text())
        kept = [
            d for d in index.get("manifests") or [] if (d.get("annotations") or {}).get(REF_NAME)
        ]
        if len(kept) == len(index.get("manifests") or []):
            return
        index["manifests"] = kept
        fd, tmp = tempfile.mkstemp(prefix=".index.json.", dir=self.root)
        with os.fdopen(fd, "w") as f:
            json.dump(index, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)

    def remove(self, ref: str, force: bool = False) -> list[str]:
        """Remove a name (or every name of an image ID), then whatever no other name
        uses. An image that running containers use is kept unless `force`: its name
        goes, its files stay until they end."""
        with self._locked(shared=True):
            found = self._lookup(ref)
            digests = {d["digest"] for _, d in found}
            others = {
                d["digest"]
                for name, d in self._names().items()
                if name not in {n for n, _ in found}
            }
        gone = [self.rootfs_dir / d.removeprefix("sha256:") for d in digests - others]
        busy = rootfs_in_use(gone)
        if busy and not force:
            pids = sorted({pid for pids in busy.values() for pid in pids})
            raise ImageError(
                f'image "{ref}" is in use by running containers (processes '
                f"{', '.join(map(str, pids[:10]))}); stop them first, or `netlab image rm "
                "--force` (its name goes, its files stay until they end)"
            )
        names = [name for name, _ in found]
        with self._locked():
            for name in names:
                run_tool(["umoci", "rm", "--image", f"{self.root}:{name}"], what=f"removing {name}")
        self.collect_garbage()
        return names

    def import_archive(self, path: Path | str, name: str | None = None) -> list[ImageInfo]:
        """Import a `docker save`/`podman save` archive or an OCI archive (or an OCI
        layout directory), recognized by its content: the images it holds, under their
        own names, or under `name` (an archive of one image)."""
        path = Path(path)
        kind, images = archive_images(path)
        if name is not None:
            if len(images) != 1:
                raise ImageError(
                    f"{path} holds {len(images)} images; --name names one: import it without "
                    "--name (each keeps its own names)"
                )
            images = [(images[0][0], [str(parse(name))])]
        for _, names in images:
            if not names:
                raise ImageError(
                    f"{path}: the {kind} does not name its image; give it one: "
                    f"netlab image import {path} --name NAME[:TAG]"
                )
        imported: list[str] = []
        stage = self._staging("import")
        try:
            archive = path
            if kind == "docker-archive" and compressed(path):
                archive = decompress(path, stage / "archive.tar")  # skopeo reads plain tar only
            for source, names in images:
                for target in names:
                    self._store_copy(f"{kind}:{archive}{source}", target, f"importing {path}")
                    imported.append(target)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        self.collect_garbage()  # an image a new one replaced under its name
        return self._infos(imported)

    def _infos(self, names: list[str]) -> list[ImageInfo]:
        with self._locked(shared=True):
            stored = self._names()
            return [self._info(n, stored[n]) for n in names if n in stored]

    def build(self, name: str) -> ImageInfo:
        """Build a built-in image (`busybox`, `python` or `netlab/python`) from this
        machine's Debian packages, replacing the stored one."""
        target = imagebuild.NAMES.get(name) or _builtin(name)
        if target is None:
            raise ImageError(
                f'no built-in image "{name}"; netlab builds {", ".join(sorted(imagebuild.NAMES))}'
            )
        self._init_layout()
        with file_lock(self.root / ".build.lock"):
            self._build(target)
        self.collect_garbage()
        return self._infos([target])[0]

    def _build(self, target: str) -> None:
        recipe = imagebuild.RECIPES[target]
        stage = self._staging("build")
        try:
            rootfs = stage / "rootfs"
            rootfs.mkdir()
            contents = imagebuild.populate(target, rootfs)
            labels = {
                imagebuild.FINGERPRINT_LABEL: imagebuild.fingerprint(target),
                imagebuild.CONTENTS_LABEL: contents,
            }
            imagebuild.make_image(stage / "layout", "image", rootfs, recipe, labels)
            self._store_copy(f"oci:{stage / 'layout'}:image", target, f"building {target}")
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    def _ensure_builtin(self, target: str) -> None:
        """Build a built-in when it is missing, or was built from other inputs (one
        builder at a time: who waited for another's build finds it made)."""
        if self._builtin_fresh(target):
            return
        self._init_layout()
        with file_lock(self.root / ".build.lock"):
            if self._builtin_fresh(target):
                return
            self._build(target)
        self.collect_garbage()

    def _builtin_fresh(self, target: str) -> bool:
        if not (self.root / "index.json").exists():
            return False
        with self._locked(shared=True):
            found = self._names().get(target)
            return found is not None and self._built_fresh(target, found)

    def _built_fresh(self, target: str, descriptor: dict[str, Any]) -> bool:
        """A stored built-in is fresh unless we built it from other inputs (an image
        imported under that name is never replaced)."""
        _, manifest = self._manifest(descriptor)
        labels = (self._blob(manifest["config"]["digest"]).get("config") or {}).get("Labels") or {}
        made = labels.get(imagebuild.FINGERPRINT_LABEL)
        return made is None or made == imagebuild.fingerprint(target)

    def pull(self, image: str) -> str:
        """Pull through skopeo (only where pulling is on): the stored name."""
        ref = parse(image)
        if not self.pull_enabled:
            raise ImagePullError("ErrImagePull", pull_off_message(image))
        source = f"{ref.repository}@{ref.digest}" if ref.digest else str(ref)
        stage = self._staging("pull")
        policy = [] if Path("/etc/containers/policy.json").exists() else ["--insecure-policy"]
        try:
            run_tool(
                [
                    "skopeo",
                    *policy,
                    "--command-timeout",
                    f"{PULL_TIMEOUT}s",
                    "copy",
                    "-q",
                    "--retry-times",
                    "0",
                    f"docker://{source}",
                    f"oci:{stage}:{ref}",
                ],
                timeout=PULL_TIMEOUT + 10,
            )
            self._store_copy(f"oci:{stage}:{ref}", str(ref), f"storing {ref}")
        except ImageError as exc:
            reason = str(exc).removeprefix("skopeo: ")
            raise ImagePullError(
                "ErrImagePull",
                f'Failed to pull image "{image}": {reason}; if no registry can be reached, '
                f"import the image: `docker save {image} -o image.tar` where it is, then "
                "`netlab image import image.tar` here",
            ) from None
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        self.collect_garbage()
        return str(ref)

    # -- resolving for a container -------------------------------------------------

    def resolve(self, image: str | None, pull_policy: str | None = None) -> ResolvedImage:
        """The image a container runs: found, built or pulled as `pull_policy` says
        (Always, IfNotPresent, Never; empty: Kubernetes' default for the reference),
        its root unpacked. Raises ImagePullError with kubelet's reason and message."""
        if is_host_image(image):
            return host_image(image)
        assert image is not None
        ref = parse(image)
        policy = check_policy(pull_policy, image)
        builtin = _builtin(str(ref))
        with self._locked(shared=True):
            found = self._find(ref)
        action = pull_action(policy, found is not None, builtin is not None, self.pull_enabled)
        if action == NEVER:
            raise ImagePullError(
                "ErrImageNeverPull",
                f'Container image "{image}" is not present with pull policy of Never',
            )
        if action == OFF:
            raise ImagePullError("ErrImagePull", pull_off_message(image))
        if builtin is not None:
            self._ensure_builtin(builtin)
        elif action == PULL:
            self.pull(image)
        for _ in range(3):  # the name may move to a new image meanwhile: look again
            with self._locked(shared=True):
                found = self._find(ref)
                if found is None:
                    raise ImagePullError(
                        "ErrImagePull", f'Failed to pull image "{image}": it left the store'
                    )
                name, descriptor = found
                _, manifest = self._manifest(descriptor)
                config = ImageConfig.from_oci(self._blob(manifest["config"]["digest"]))
            rootfs = self._unpacked(name, descriptor["digest"])
            if rootfs is not None:
                return ResolvedImage(
                    ref=str(ref),
                    image=image,
                    image_id=ref.with_digest(descriptor["digest"]),
                    rootfs=rootfs,
                    config=config,
                )
        raise ImageError(f"{image}: its name kept moving to other images while it was unpacked")

    def _unpacked(self, name: str, digest: str) -> Path | None:
        """The image's root filesystem, unpacked once per manifest digest: made in a
        temporary directory and renamed into place, one maker at a time (a lock per
        digest). None when `name` no longer names that digest."""
        target = self.rootfs_dir / digest.removeprefix("sha256:")
        if target.is_dir():
            return target
        self.rootfs_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.rootfs_dir / f".{target.name}.lock"):
            if target.is_dir():
                return target
            work = Path(tempfile.mkdtemp(prefix=f".unpack-{os.getpid()}-", dir=self.rootfs_dir))
            try:
                with self._locked(shared=True):
                    current = self._names().get(name)
                    if current is None or current["digest"] != digest:
                        return None
                    run_tool(
                        [
                            "umoci",
                            "raw",
                            "unpack",
                            "--image",
                            f"{self.root}:{name}",
                            str(work / "rootfs"),
                        ],
                        what=f"unpacking {name}",
                    )
                os.chmod(work / "rootfs", 0o755)
                os.rename(work / "rootfs", target)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return target


def _builtin(name: str) -> str | None:
    """The built-in image a (normalized) name is, if any."""
    try:
        normalized = str(parse(name))
    except ImageError:
        return None
    return normalized if normalized in imagebuild.RECIPES else None


def _repo_digest(name: str, digest: str) -> str:
    try:
        return parse(name).with_digest(digest)
    except ImageError:
        return ""
