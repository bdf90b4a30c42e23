"""`netlab draw`: a picture of the running lab, laid out by graphviz's `dot`.

    netlab draw [-o lab.svg|lab.png|lab.dot|-] [--no-pods] [-n NS | -A]

`picture` builds the DOT text from what the lab API serves (pure), `dot` writes DOT
syntax safely, `render` runs `dot` and writes the file atomically.
"""

from __future__ import annotations

import argparse
import sys
from typing import IO, TYPE_CHECKING

from netlab.draw import render
from netlab.draw.picture import build_dot

if TYPE_CHECKING:
    from netlab.client import LabClient

__all__ = ["build_dot", "configure_parser", "run"]


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Add `netlab draw`'s options to its subparser."""
    p.add_argument(
        "-o",
        "--output",
        default="lab.svg",
        help="where to write: FILE.svg, FILE.png or FILE.dot (default lab.svg); - for SVG on stdout",
    )
    p.add_argument("--no-pods", action="store_true", help="leave the pods out (counts per node)")
    p.add_argument("-n", "--namespace", default=None, help="pods and Services of this namespace")
    p.add_argument(
        "-A", "--all-namespaces", action="store_true", help="pods and Services of every namespace"
    )


def run(args: argparse.Namespace, client: LabClient, stdout: IO[bytes] | None = None) -> int:
    """`netlab draw`: fetch the lab's state through `client`, draw it, write the file
    (or SVG to `stdout` for `-o -`); the exit status."""
    fmt, path = render.output_target(args.output)
    view = client.view(args.namespace or "default", all_namespaces=bool(args.all_namespaces))
    text = build_dot(
        view.topology,
        view.pods,
        view.services,
        view.endpoints,
        show_pods=not args.no_pods,
        show_namespace=bool(args.all_namespaces),
    )
    data = render.render(text, fmt)
    if path is None:
        out = stdout if stdout is not None else sys.stdout.buffer
        out.write(data)
        out.flush()
        return 0
    render.write_atomic(path, data)
    nodes = len(view.topology.get("nodes") or [])
    print(f"wrote {path} ({len(view.pods)} pods, {nodes} nodes)")
    return 0
