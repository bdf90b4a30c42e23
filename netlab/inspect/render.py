"""Text output of `netlab inspect`: aligned columns, streamed in batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from netlab.inspect.flows import Flow

if TYPE_CHECKING:  # packets.py imports scapy: not for the flows view
    from netlab.inspect.packets import PacketInfo

BATCH = 200  # packet rows aligned together; widths only grow from batch to batch


def _endpoint(name: str | None, addr: str | None, port: int | None) -> str:
    text = name or addr or "?"
    return f"{text}:{port}" if port is not None and port != 0 else text


def human_bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


class Columns:
    """Rows of cells in aligned columns (right-aligned: numbers); the last
    column is not padded."""

    def __init__(
        self, out: TextIO, headers: Sequence[str], right: Sequence[int] = (), batch: int = BATCH
    ):
        self.out = out
        self.batch = batch
        self.headers = list(headers)
        self.right = set(right)
        self.widths = [len(h) for h in headers]
        self.rows: list[list[str]] = []
        self.started = False

    def add(self, row: list[str]) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.batch:
            self.flush()

    def _line(self, cells: Sequence[str]) -> str:
        parts = []
        last = len(cells) - 1
        for i, (cell, width) in enumerate(zip(cells, self.widths, strict=False)):
            if i == last:
                parts.append(cell)
            else:
                parts.append(cell.rjust(width) if i in self.right else cell.ljust(width))
        return "  ".join(parts).rstrip()

    def flush(self) -> None:
        for row in self.rows:
            self.widths = [max(w, len(c)) for w, c in zip(self.widths, row, strict=False)]
        if not self.started:
            self.out.write(self._line(self.headers) + "\n")
            self.started = True
        for row in self.rows:
            self.out.write(self._line(row) + "\n")
        self.rows.clear()
        self.out.flush()


class PacketTable:
    """The default view: one line per packet."""

    def __init__(self, out: TextIO, show_file: bool = False, batch: int = BATCH):
        """batch: rows aligned together before they are written (1 for a
        live capture on stdin: each packet as it comes)."""
        headers = ["NO.", "TIME", *(["FILE"] if show_file else []), "INTERFACE", "UNDERLAY"]
        headers += ["SOURCE", "", "DESTINATION", "PROTO", "SUMMARY"]
        self.show_file = show_file
        self.columns = Columns(out, headers, right=(0, 1), batch=batch)

    def add(self, info: PacketInfo, start_ns: int) -> None:
        row = [str(info.number), f"{(info.ts_ns - start_ns) / 1e9:.6f}"]
        if self.show_file:
            row.append(info.file)
        row.append(info.interface)
        row.append(underlay(info))
        src = _endpoint(info.src_name, info.src, info.sport)
        dst = _endpoint(info.dst_name, info.dst, info.dport)
        if info.service and info.service not in (info.src_name, info.dst_name):
            dst += f" [{info.service}]"
        row += [src, "->", dst] if info.src or info.dst else ["", "", ""]
        row += [info.protocol.upper(), info.summary]
        self.columns.add(row)

    def close(self) -> None:
        self.columns.flush()


def underlay(info: PacketInfo) -> str:
    if info.outer is None:
        return "-"
    o = info.outer
    text = f"{o.src_name} > {o.dst_name}"
    return f"{text} VNI {o.vni}" if o.encapsulation == "vxlan" else f"{text} ({o.encapsulation})"


def flow_path(flow: Flow) -> str:
    if flow.encapsulation is None:
        return "direct"
    hops = ", ".join(f"{a} > {b}" for a, b in flow.underlay)
    text = f"VXLAN VNI {flow.vni}" if flow.overlay else flow.encapsulation
    text += f" {hops}"
    if flow.cross_rack is not None:
        text += " (cross-rack)" if flow.cross_rack else " (same rack)"
    return text


def flow_table(out: TextIO, flows: list[Flow]) -> None:
    columns = Columns(
        out,
        ["PROTO", "CLIENT", "SERVER", "SERVICE", "PACKETS", "BYTES", "SECONDS", "PATH"],
        right=(4, 5, 6),
    )
    for f in flows:
        columns.add(
            [
                f.protocol.upper(),
                _endpoint(f.client_name, f.client, f.client_port),
                _endpoint(f.server_name, f.server, f.server_port),
                f.service or "-",
                f"{f.packets:,}",
                human_bytes(f.bytes),
                f"{(f.last_ns - f.first_ns) / 1e9:.3f}",
                flow_path(f),
            ]
        )
    columns.flush()
