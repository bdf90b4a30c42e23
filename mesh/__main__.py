"""CLI: python -m mesh (--api-socket PATH | --objects FILE) [--pod NS/NAME] ...

The lab runs this as the `netlab-proxy` container of every meshed pod; the
pod comes from POD_NAMESPACE/POD_NAME (the container's environment) unless
--pod names it. With --objects (a JSON {"items": [...]} of Services,
Endpoints, Pods, mesh policies) it runs without a lab, e.g. for benchmarks.
SIGTERM/SIGINT: stop listening, let requests in flight finish (--drain), exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from labwatch import SourceError


def _address(text: str, host: str = "0.0.0.0") -> tuple[str, int]:
    host_part, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port or HOST:PORT")
    return (host_part or host, int(port))


def _mark(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a mark (e.g. 0x4e4c) or none") from None
    if not 0 < value < 2**32:
        raise argparse.ArgumentTypeError("a mark is 1..2^32-1")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mesh", description="A netlab sidecar proxy.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--api-socket", help="the lab API's unix socket (list + watch)")
    src.add_argument("--objects", help='a JSON file {"items": [objects...]}')
    p.add_argument("--pod", help="NAMESPACE/NAME of the pod (default: $POD_NAMESPACE/$POD_NAME)")
    p.add_argument("--zone", default="cluster.local")
    p.add_argument("--sampling", type=float, default=100.0, help="percent of new traces sampled")
    p.add_argument("--mark", type=_mark, default=0x4E4C, help="SO_MARK of own sockets, or none")
    p.add_argument("--outbound-port", type=_address, default=("0.0.0.0", 15001))
    p.add_argument("--inbound-port", type=_address, default=("0.0.0.0", 15006))
    p.add_argument("--admin-port", type=_address, default=("0.0.0.0", 15000))
    p.add_argument("--drain", type=float, default=2.0, help="seconds for requests in flight")
    p.add_argument("--ready-file", help="written once the first table is in place")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    args = p.parse_args(argv)
    pod = args.pod or (
        f"{os.environ.get('POD_NAMESPACE', '')}/{os.environ.get('POD_NAME', '')}"
        if os.environ.get("POD_NAME")
        else None
    )
    if not pod or pod.count("/") != 1 or not all(pod.split("/")):
        p.error("name the pod: --pod NAMESPACE/NAME (or set POD_NAMESPACE and POD_NAME)")
    args.namespace, args.name = pod.split("/")
    if not 0 <= args.sampling <= 100:
        p.error("--sampling is a percentage, 0..100")
    return args


def main(argv: list[str] | None = None, snapshot: dict | None = None) -> int:
    """`snapshot`: the lab's lists, when a fork server fetched them (mesh.zygote)."""
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=args.log_level.upper(), format="netlab-proxy: %(message)s"
    )
    return run(args, snapshot)


def run(args: argparse.Namespace, snapshot: dict | None = None) -> int:
    import uvloop  # the proxied path runs on libuv

    from mesh.sidecar import Settings, Sidecar

    settings = Settings(
        namespace=args.namespace,
        pod=args.name,
        api_socket=args.api_socket,
        objects_file=args.objects,
        zone=args.zone,
        sampling=args.sampling / 100.0,
        mark=args.mark,
        outbound=args.outbound_port,
        inbound=args.inbound_port,
        admin=args.admin_port,
        drain=args.drain,
        ready_file=args.ready_file,
        snapshot=snapshot,
    )

    async def go() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await Sidecar(settings).run(stop)

    try:
        return uvloop.run(go())
    except SourceError as exc:
        logging.getLogger("mesh").error("%s", exc)
        return 2
    except OSError as exc:  # cannot bind
        logging.getLogger("mesh").error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
