"""The built-in images, made from Debian packages already on this machine, so that
nothing comes from outside:

- `busybox`: Debian's busybox-static with its applet links, a minimal /etc/passwd
  and /etc/group, /tmp (about 1 MB compressed);
- `netlab/python`: that busybox, plus Debian's python3 interpreter and standard
  library (the files `dpkg -L` lists, the shared libraries `ldd` reports), the
  `netlab.apps` sources, and the venv's aiohttp with what it needs (for
  `netlab.apps.bookinfo`), so `python3 -m netlab.apps.echo` runs inside.

A recipe fills a directory; `make_image` turns it into a one-layer image with umoci.
Each built image carries a label with a fingerprint of its inputs, so a store can
tell a built-in made from older sources (say, an edited app) and make it again.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import re
import shutil
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import netlab
from netlab.node.imagetools import ImageError, run_tool

RECIPE_VERSION = "1"  # change it when a recipe changes: built images are then made again
FINGERPRINT_LABEL = "io.netlab.image.recipe"
CONTENTS_LABEL = "io.netlab.image.contents"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX = "docker.io/library/busybox:latest"
PYTHON = "docker.io/netlab/python:latest"
# `netlab image build NAME`: the names a user may give
NAMES = {"busybox": BUSYBOX, "python": PYTHON, "netlab/python": PYTHON}
# Python packages from the environment netlab runs in, for the apps that need more
# than the standard library (bookinfo: aiohttp, multidict)
EXTRA_DISTRIBUTIONS = ("aiohttp",)
SOURCE_SUFFIXES = (".c", ".h", ".pyx", ".pxd")
SITE_DIR = "usr/lib/python3/dist-packages"  # on Debian's python3 sys.path
# what a container never needs from Debian's python packages
_SKIP = re.compile(
    r"^/usr/share/|/test/|/idlelib/|/turtledemo/|/pydoc_data/"
    r"|/lib-dynload/(?:_test|_xxtest|xxlimited|_ctypes_test|nis\.|_dbm\.)"
)
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


@dataclass(frozen=True)
class Recipe:
    """A built-in image: its name, its config, and how its root is filled."""

    name: str
    cmd: list[str]
    env: list[str] = field(default_factory=lambda: [PATH_ENV])
    working_dir: str = "/"


RECIPES = {
    BUSYBOX: Recipe(BUSYBOX, cmd=["sh"]),
    PYTHON: Recipe(
        PYTHON,
        cmd=["python3"],
        env=[PATH_ENV, "LANG=C.UTF-8", "PYTHONUNBUFFERED=1"],
    ),
}


def busybox_binary() -> Path:
    """Debian's static busybox (package busybox-static)."""
    listed = run_tool(["dpkg", "-L", "busybox-static"], what="busybox-static")
    for line in listed.splitlines():
        if line.endswith("/bin/busybox") and os.path.isfile(line):
            return Path(line)
    raise ImageError(
        "busybox-static lists no /bin/busybox; apt-get install --reinstall busybox-static"
    )


def host_python() -> str:
    """`python3.11`: the version of Debian's python3 on this machine."""
    name = os.path.basename(os.path.realpath("/usr/bin/python3"))
    if not re.fullmatch(r"python3\.\d+", name):
        raise ImageError("netlab/python is built from Debian's python3: apt-get install python3")
    return name


def python_packages(python: str) -> tuple[str, ...]:
    return (f"{python}-minimal", f"lib{python}-minimal", f"lib{python}-stdlib")


def fingerprint(name: str) -> str:
    """A digest of what a built-in image is made of, cheap enough to check at each use."""
    h = hashlib.sha256(f"{RECIPE_VERSION}\n{name}\n".encode())
    inputs = [Path("/bin/busybox")]
    if name == PYTHON:
        inputs.append(Path("/usr/bin") / host_python())
    for path in inputs:
        with_stat = os.stat(path) if path.exists() else None
        h.update(f"{path} {with_stat and (with_stat.st_size, with_stat.st_mtime_ns)}\n".encode())
    if name == PYTHON:
        for source in _app_sources():
            h.update(source.name.encode() + b"\0" + source.read_bytes())
        for dist, version in sorted(_distributions().items()):
            h.update(f"{dist}=={version}\n".encode())
    return h.hexdigest()


def populate(name: str, root: Path) -> str:
    """Fill `root` with the built-in image `name`'s files: a description of what it holds."""
    if name not in RECIPES:
        raise ImageError(f"no built-in image {name}; the built-ins are {', '.join(NAMES)}")
    bb = busybox_binary()
    _populate_busybox(root, bb)
    contents = _populate_python(root) if name == PYTHON else f"busybox-static ({bb})"
    _readable(root)
    return contents


def _readable(root: Path) -> None:
    """Every file readable and every directory searchable by any user (a container may
    run as one), whatever the umask was: /root and /tmp keep their own modes."""
    keep = {root / "root", root / "tmp"}
    for directory, dirs, files in os.walk(root):
        for name in dirs:
            path = Path(directory) / name
            if path not in keep and not path.is_symlink():
                os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) | 0o755)
        for name in files:
            path = Path(directory) / name
            if not path.is_symlink():
                os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) | 0o444)


def _populate_busybox(root: Path, bb: Path) -> None:
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "home", "var"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "root").mkdir(mode=0o700, exist_ok=True)
    (root / "tmp").mkdir(exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root, 0o755)
    shutil.copy2(bb, root / "bin/busybox")
    os.chmod(root / "bin/busybox", 0o755)
    for applet in run_tool([str(bb), "--list-full"], what="busybox --list-full").split():
        link = root / applet
        if applet in ("bin/busybox", "linuxrc") or os.path.lexists(link):
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)


def _populate_python(root: Path) -> str:
    python = host_python()
    packages = python_packages(python)
    listed: list[str] = []
    for package in packages:
        try:
            listed += run_tool(["dpkg", "-L", package], what=package).splitlines()
        except ImageError as exc:
            raise ImageError(
                f"netlab/python is built from Debian's {python}: "
                f"apt-get install {' '.join(packages)} ({exc})"
            ) from None
    files = [p for p in listed if p.startswith("/") and _wanted(p)]
    for path in files:
        copy_in(path, root)
        cached = _cached(path)
        if cached:
            copy_in(cached, root)
    (root / "usr/bin/python3").symlink_to(python)
    site = root / SITE_DIR
    _copy_apps(site)
    dists = _copy_distributions(site, python)
    elves = [Path("/usr/bin") / python, *(Path(p) for p in files if ".so" in p)]
    elves += [p for p in site.rglob("*.so*") if p.is_file()]
    for library in shared_libraries(elves):
        copy_in(library, root)
    for extra in ("/lib/x86_64-linux-gnu/libgcc_s.so.1",):  # glibc dlopens it (thread exit)
        if os.path.exists(extra):
            copy_in(extra, root)
    (root / "etc/nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files dns\n")
    run_tool(
        [f"/usr/bin/{python}", "-m", "compileall", "-q", str(site / "netlab")],
        what="compiling netlab.apps",
    )
    versions = run_tool(
        ["dpkg-query", "-W", "-f", "${Package}=${Version} ", *packages], what="dpkg-query"
    )
    extra = " ".join(f"{d}=={v}" for d, v in sorted(dists.items()))
    return f"{versions.strip()}; netlab.apps; {extra or 'no aiohttp (netlab.apps.bookinfo will not run)'}"


def _wanted(path: str) -> bool:
    return not _SKIP.search(path) and (os.path.islink(path) or os.path.isfile(path))


def _cached(source: str) -> str | None:
    """The byte code Debian compiled for a .py file at install time, if any."""
    if not source.endswith(".py"):
        return None
    p = PurePosixPath(source)
    tag = sys.implementation.cache_tag
    candidate = p.parent / "__pycache__" / f"{p.stem}.{tag}.pyc"
    return str(candidate) if os.path.isfile(candidate) else None


def _app_sources() -> list[Path]:
    package = Path(netlab.__file__).resolve().parent
    return [package / "__init__.py", *sorted((package / "apps").glob("*.py"))]


def _copy_apps(site: Path) -> None:
    package = Path(netlab.__file__).resolve().parent
    for source in _app_sources():
        target = site / "netlab" / source.relative_to(package)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


@functools.cache
def _distributions() -> dict[str, str]:
    """The extra distributions and what they require, as installed where netlab runs:
    name -> version (requirements for other Pythons or for extras left out). Found
    once per process (importlib.metadata takes some 25 ms)."""
    found: dict[str, str] = {}
    todo = list(EXTRA_DISTRIBUTIONS)
    while todo:
        name = todo.pop()
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # a requirement for another Python, say
        key = dist.metadata["Name"].lower().replace("-", "_")
        if key in found:
            continue
        found[key] = dist.version
        for requirement in dist.requires or []:
            spec, _, marker = requirement.partition(";")
            if "extra" in marker:
                continue
            todo.append(re.split(r"[\s<>=!~\[(]", spec.strip(), maxsplit=1)[0])
    return found


def _copy_distributions(site: Path, python: str) -> dict[str, str]:
    """Copy the extra distributions' files into `site` when netlab's Python is the
    image's (their compiled parts are built for it): name -> version copied."""
    if f"python{sys.version_info.major}.{sys.version_info.minor}" != python:
        return {}
    copied = _distributions()
    for name in copied:
        dist = importlib.metadata.distribution(name)
        for entry in dist.files or []:
            if ".." in entry.parts or entry.suffix in SOURCE_SUFFIXES:
                continue  # scripts installed beside the interpreter; C and Cython sources
            source = Path(str(dist.locate_file(entry)))
            if not source.is_file():
                continue
            target = site / str(entry)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            cached = _cached(str(source))
            if cached:
                (target.parent / "__pycache__").mkdir(exist_ok=True)
                shutil.copy2(cached, target.parent / "__pycache__" / Path(cached).name)
    return copied


def shared_libraries(files: Iterable[Path]) -> list[str]:
    """The shared libraries `ldd` says these ELF files load, the loader included."""
    found: set[str] = set()
    missing: set[str] = set()
    files = [str(f) for f in files]
    for start in range(0, len(files), 200):
        out = run_tool(["ldd", *files[start : start + 200]], what="ldd")
        for line in out.splitlines():
            if not line.startswith("\t"):
                continue
            text = line.strip()
            if "=> not found" in text:
                missing.add(text.split()[0])
            elif "=>" in text:
                target = text.split("=>", 1)[1].split("(")[0].strip()
                if target.startswith("/"):
                    found.add(target)
            elif text.startswith("/"):
                found.add(text.split()[0])
    if missing:
        raise ImageError(
            f"shared libraries not found on this machine: {', '.join(sorted(missing))}"
        )
    return sorted(found)


def copy_in(source: str, root: Path, _depth: int = 0) -> None:
    """Copy host path `source` to the same path under `root`, re-creating each symlink
    met on the way (`/lib -> usr/lib`, `libz.so.1 -> libz.so.1.2.13`) and copying
    what it points to. What is already there is kept."""
    if _depth > 40:
        raise ImageError(f"too many symbolic links resolving {source}")
    parts = PurePosixPath(source).parts[1:]
    host = "/"
    for i, part in enumerate(parts):
        host = os.path.join(host, part)
        target = root / host.lstrip("/")
        if os.path.islink(host):
            link = os.readlink(host)
            if not os.path.lexists(target):
                os.symlink(link, target)
            resolved = link if link.startswith("/") else os.path.join(os.path.dirname(host), link)
            copy_in(os.path.normpath(os.path.join(resolved, *parts[i + 1 :])), root, _depth + 1)
            return
        if os.path.lexists(target):
            continue
        if i < len(parts) - 1 or os.path.isdir(host):
            target.mkdir()
            os.chmod(target, stat.S_IMODE(os.stat(host).st_mode))
        else:
            shutil.copy2(host, target)


def make_image(
    layout: Path, tag: str, rootfs: Path, recipe: Recipe, labels: dict[str, str]
) -> None:
    """A new OCI layout at `layout` holding one image `tag`: `rootfs` as its one layer
    and the recipe's config, made with umoci."""
    image = f"{layout}:{tag}"
    run_tool(["umoci", "init", "--layout", str(layout)], what="umoci init")
    run_tool(["umoci", "new", "--image", image], what="umoci new")
    run_tool(
        [
            "umoci",
            "insert",
            "--image",
            image,
            "--history.created_by",
            f"netlab image build {recipe.name}",
            str(rootfs),
            "/",
        ],
        what="umoci insert",
    )
    config = ["umoci", "config", "--image", image, "--author", "netlab", "--no-history"]
    for arg in recipe.cmd:
        config += ["--config.cmd", arg]
    for env in recipe.env:
        config += ["--config.env", env]
    config += ["--config.workingdir", recipe.working_dir]
    for key, value in labels.items():
        config += ["--config.label", f"{key}={value}"]
    run_tool(config, what="umoci config")
