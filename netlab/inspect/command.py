"""`netlab inspect FILE...`: read captures, VXLAN decoded, addresses named.

    netlab inspect lab.pcapng                       # one line per packet
    netlab inspect lab.pcapng --flows               # who talked to whom
    netlab inspect lab.pcapng --filter pod=web-0 --filter http
    netlab inspect a.pcapng b.pcapng --follow-trace 4bf92f3577b34da6a3ce929d0e0e4736
    netlab inspect lab.pcapng --flows -o json       # for scripts

Names come from --names BOOK.json, else the book written beside each
capture (FILE.names.json), else none (addresses are shown). With --flows,
`-o json` is one object: {"files", "packets", "undecoded", "flows",
"ip_conversations" (all IPv4 pairs, counted as tshark's conv,ip counts them,
unfiltered), "problems"}; the packet view's is a list of packets.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import stat
import sys
from pathlib import Path
from typing import TextIO

from netlab.capture.addressbook import AddressBook
from netlab.errors import NetlabError
from netlab.inspect import filters as filtering
from netlab.inspect import flows as flowing
from netlab.inspect import render


def configure_parser(p: argparse.ArgumentParser) -> None:
    """The options of `netlab inspect` (the CLI adds this subparser)."""
    p.description = p.description or __doc__.split("\n\n")[0].split(": ", 1)[1]
    p.epilog = p.epilog or "examples:\n" + __doc__.split("\n\n")[1]
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("files", nargs="+", metavar="FILE", help="pcap or pcapng files ('-': stdin)")
    p.add_argument(
        "--flows", action="store_true", help="a summary of conversations instead of packets"
    )
    p.add_argument(
        "--filter",
        dest="filters",
        action="append",
        metavar="EXPR",
        help="repeatable, ANDed: " + ", ".join(filtering.VALID),
    )
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")
    p.add_argument(
        "--follow-trace",
        metavar="ID",
        help="every packet of the connections carrying this trace id or x-request-id,"
        " across all FILEs in time order",
    )
    p.add_argument("--names", metavar="BOOK.json", help="the address book to name addresses by")
    p.add_argument("-n", "--count", type=int, metavar="N", help="show at most N packets or flows")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """The command; NetlabError for what the user must fix."""
    out, err = out or sys.stdout, err or sys.stderr
    if args.count is not None and args.count < 0:
        raise NetlabError("--count must be 0 or more")
    if args.follow_trace and args.flows:
        raise NetlabError("--follow-trace shows packets; drop --flows")
    books = _books(args, err)
    try:
        if args.flows:
            return _flows(args, books, out, err)
        return _packets(args, books, out, err)
    except BrokenPipeError:  # `| head`: stop quietly, and let Python's exit flush nothing
        if out is sys.stdout:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _source(name: str):
    return sys.stdin.buffer if name == "-" else name


def _books(args: argparse.Namespace, err: TextIO) -> dict[str, AddressBook]:
    """The address book of each file; one note on stderr when names are missing."""
    if args.names:
        book = AddressBook.load(args.names)
        return {f: book for f in args.files}
    books, missing = {}, []
    for name in args.files:
        beside = AddressBook.beside(name)
        if name != "-" and beside.exists():
            books[name] = AddressBook.load(beside)
        else:
            books[name] = AddressBook.empty()
            missing.append(name)
    if missing:
        where = ", ".join(
            "stdin" if m == "-" else f"{m} (no {Path(m).name}.names.json beside it)"
            for m in missing
        )
        err.write(
            f"netlab: note: no address book for {where}: names are unavailable, addresses"
            " are shown; `netlab capture -w FILE` writes FILE.names.json beside the capture,"
            " or pass --names BOOK.json\n"
        )
    return books


def _warn(problems: list[str], err: TextIO) -> None:
    for problem in problems:
        err.write(f"netlab: warning: {problem}\n")


# ---------------------------------------------------------------- flows


def _flows(args, books: dict[str, AddressBook], out: TextIO, err: TextIO) -> int:
    tallies, named = [], []
    for name in args.files:
        book = books[name]
        selected = filtering.parse(args.filters, book)
        tally, found = flowing.summarize(_source(name), book)
        if len(args.files) > 1:
            for flow in found:
                flow.interfaces = [f"{name}:{i}" for i in flow.interfaces]
        named += [f for f in found if all(s.keep_flow(f) for s in selected)]
        tallies.append(tally)
        _warn(tally.problems, err)
    tally = flowing.merge(tallies)
    named.sort(key=lambda f: (-f.bytes, f.first_ns))
    shown = named if args.count is None else named[: args.count]
    if args.output == "json":
        document = json.dumps(
            {
                "files": list(args.files),
                "packets": tally.packets,
                "undecoded": tally.undecoded,
                "flows": [f.to_dict() for f in shown],
                "ip_conversations": [c.to_dict() for c in flowing.ip_conversations(tally)],
                "problems": tally.problems,
            },
            indent=1,
        )
        out.write(document + "\n")
    else:
        render.flow_table(out, shown)
        more = f" ({len(shown)} shown)" if len(shown) < len(named) else ""
        out.write(
            f"\n{len(named):,} flows{more}, {tally.packets:,} packets in"
            f" {len(args.files)} file{'s' if len(args.files) > 1 else ''}\n"
        )
    return _status(tally.packets, tally.problems)


def _status(packets: int, problems: list[str]) -> int:
    return 1 if problems and not packets else 0


# ---------------------------------------------------------------- packets


def _packets(args, books: dict[str, AddressBook], out: TextIO, err: TextIO) -> int:
    from netlab.inspect.packets import PacketReader  # scapy: only for this view

    expressions = list(args.filters or [])
    if args.follow_trace:
        expressions.append(f"trace={args.follow_trace}")
    if "-" in args.files and any(e.startswith("trace=") for e in expressions):
        raise NetlabError("following a trace reads each file twice: save stdin to a file first")
    readers = []
    for name in args.files:
        book = books[name]
        overlay = book.overlay_ports
        selected = [f.for_file(_source(name), overlay) for f in filtering.parse(expressions, book)]
        readers.append(PacketReader(_source(name), book, selected, name=name))
    merged = bool(args.follow_trace) and len(readers) > 1
    if merged:
        stream = heapq.merge(*readers, key=lambda p: p.ts_ns)
    else:
        stream = (p for r in readers for p in r)
    live = "-" in args.files and not stat.S_ISREG(os.fstat(sys.stdin.fileno()).st_mode)
    table = render.PacketTable(out, show_file=len(readers) > 1, batch=1 if live else render.BATCH)
    shown = 0
    first = "["
    try:
        for info in stream:
            if args.count is not None and shown >= args.count:
                break
            start = _start(readers, info, merged)
            if args.output == "json":
                out.write(first + "\n" + json.dumps(info.to_dict(start)))
                first = ","
            else:
                table.add(info, start)
            shown += 1
    finally:
        if args.output == "json":
            out.write("[]\n" if first == "[" else "\n]\n")
        else:
            table.close()
    problems = [p for r in readers for p in r.problems]
    _warn(problems, err)
    if args.output == "text" and not shown and args.count != 0:
        err.write("netlab: no packets matched\n" if expressions else "netlab: no packets\n")
    return _status(sum(r.packets for r in readers), problems)


def _start(readers, info, merged: bool) -> int:
    """Times are relative to the first packet of the file (of all files
    when merged)."""
    if merged:
        return min(r.start_ns for r in readers if r.start_ns is not None)
    for r in readers:
        if r.name == info.file and r.start_ns is not None:
            return r.start_ns
    return info.ts_ns
