"""`netlab image ls|inspect|import|build|rm`: the machine's image store, as `docker
images`/`crictl images` show one. It needs no running lab: the store is machine-wide
(/var/lib/netlab/images, or $NETLAB_IMAGE_ROOT)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import datetime

from netlab.errors import NetlabError
from netlab.node.imageref import human_duration, human_size
from netlab.tables import columns

BUILT_INS = ("busybox", "python")


def add_parser(sub) -> None:
    """Add `image` and its verbs to the CLI's subcommands."""
    image = sub.add_parser(
        "image",
        help="the machine's container images: ls, inspect, import (docker save / OCI "
        "archives), build busybox|python, rm",
    )
    verbs = image.add_subparsers(dest="image_verb", required=True, metavar="VERB")
    ls = verbs.add_parser("ls", aliases=["list"], help="list images (IMAGE, TAG, ID, SIZE)")
    ls.add_argument("-q", "--quiet", action="store_true", help="only the image IDs")
    ls.set_defaults(func=cmd_ls)
    inspect = verbs.add_parser("inspect", help="an image's manifest and config, as JSON")
    inspect.add_argument("refs", nargs="+", metavar="IMAGE", help="a name or an image ID")
    inspect.set_defaults(func=cmd_inspect)
    load = verbs.add_parser(
        "import",
        help="add images from a `docker save`/`podman save` archive or an OCI archive",
    )
    load.add_argument("file", help="the archive (docker-archive or oci-archive, maybe gzipped)")
    load.add_argument("--name", metavar="REF", help="store the image under this name")
    load.set_defaults(func=cmd_import)
    build = verbs.add_parser(
        "build", help="build a built-in image from this machine's Debian packages"
    )
    build.add_argument("name", choices=[*BUILT_INS, "netlab/python"])
    build.set_defaults(func=cmd_build)
    rm = verbs.add_parser("rm", aliases=["rmi"], help="remove images and what only they use")
    rm.add_argument("refs", nargs="+", metavar="IMAGE", help="a name or an image ID")
    rm.add_argument(
        "-f",
        "--force",
        action="store_true",
        help="remove the name even while containers use the image (its files stay until they end)",
    )
    rm.set_defaults(func=cmd_rm)


def _store():
    from netlab.node.images import ImageStore

    return ImageStore()


def _permission(exc: PermissionError) -> NetlabError:
    return NetlabError(f"the image store needs root: run it with sudo ({exc})")


def created_seconds(created: str) -> float | None:
    """An RFC 3339 time (nanoseconds allowed) as seconds since the epoch."""
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", created)
    if not match:
        return None
    fraction = (match.group(2) or "")[:7]  # microseconds at most
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    return datetime.fromisoformat(f"{match.group(1)}{fraction}{zone}").timestamp()


def created_text(created: str, now: float) -> str:
    seconds = created_seconds(created)
    if seconds is None:
        return "N/A"
    return f"{human_duration(max(0.0, now - seconds))} ago"


def table(infos, now: float) -> list[str]:
    rows = [["IMAGE", "TAG", "IMAGE ID", "SIZE", "CREATED"]]
    for info in infos:
        rows.append(
            [
                info.name,
                info.tag,
                info.short_id,
                human_size(info.size),
                created_text(info.created, now),
            ]
        )
    return columns(rows)


def cmd_ls(args: argparse.Namespace) -> int:
    try:
        infos = _store().list()
    except PermissionError as exc:
        raise _permission(exc) from None
    if args.quiet:
        for short in dict.fromkeys(i.short_id for i in infos):
            print(short)
        return 0
    print("\n".join(table(infos, time.time())))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    store = _store()
    found, code = [], 0
    for ref in args.refs:
        try:
            found.append(store.inspect(ref))
        except NetlabError as exc:
            print(f"netlab: {exc}", file=sys.stderr)
            code = 1
        except PermissionError as exc:
            raise _permission(exc) from None
    print(json.dumps(found, indent=2))
    return code


def cmd_import(args: argparse.Namespace) -> int:
    try:
        infos = _store().import_archive(args.file, name=args.name)
    except PermissionError as exc:
        raise _permission(exc) from None
    for info in infos:
        print(f"Loaded image: {info.name}:{info.tag} ({info.short_id}, {human_size(info.size)})")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        info = _store().build(args.name)
    except PermissionError as exc:
        raise _permission(exc) from None
    print(
        f"Built {info.name}:{info.tag} ({info.short_id}, {human_size(info.size)}) "
        f"in {time.monotonic() - started:.1f} s"
    )
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    store = _store()
    code = 0
    for ref in args.refs:
        try:
            for name in store.remove(ref, force=args.force):
                print(f"Untagged: {name}")
        except NetlabError as exc:
            print(f"netlab: {exc}", file=sys.stderr)
            code = 1
        except PermissionError as exc:
            raise _permission(exc) from None
    return code
