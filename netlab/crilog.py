"""Container log files in the CRI format, the one the kubelet reads from containerd and CRI-O.

Each line of a log file is one record::

    2026-11-28T12:00:00.123456789Z stdout F GET / HTTP/1.1 200

the time the runtime read the output (RFC3339Nano, UTC), the stream, a tag (`F`: the
record ends a line; `P`: a partial line that the next record of the stream continues)
and the bytes the process wrote, without their newline. Reading the records back
(`Reader`) gives the output exactly as written, or prefixed with each line's time
(`kubectl logs --timestamps`), and filters by time (`--since`). Lines that are not
records (a file written by something else) pass through untouched, without a time.

Pure functions and stdlib only: the writer (realize.processes), the lab API and the
CLI share them.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

STDOUT = b"stdout"
STDERR = b"stderr"
FULL = b"F"
PARTIAL = b"P"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_LINE = 16 * 1024  # longer lines are split into P records (containerd's limit)

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9})\d*)?([Zz]|[+-]\d{2}:\d{2})"
)


def format_time(ns: int) -> str:
    """RFC3339 with nanoseconds, fixed width, in UTC (the kubelet's output format)."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def parse_time(text: str | bytes) -> int:
    """Nanoseconds since the epoch of an RFC3339 time (`2026-11-28T12:00:00Z`,
    `...00.5+01:00`, up to nanoseconds); ValueError if it is not one."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    match = _RFC3339.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not an RFC3339 time (like 2026-11-28T12:00:00Z)")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zone = match.group(7) or "", match.group(8)
    try:  # datetime checks the calendar; a leap second (:60) counts as :59
        when = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{text!r} is not a valid time") from None
    seconds = (when - EPOCH) // timedelta(seconds=1)
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds * 1_000_000_000 + int(fraction.ljust(9, "0") or 0)


def encode(ns: int, stream: bytes, content: bytes, partial: bool = False) -> bytes:
    """One record: `content` (no newline in it) read at time `ns`."""
    tag = PARTIAL if partial else FULL
    return b"%s %s %s %s\n" % (format_time(ns).encode(), stream, tag, content)


def split(
    ns: int, stream: bytes, pending: bytes, data: bytes, flush: bool = False
) -> tuple[bytes, bytes]:
    """The records for `data` read at time `ns`, after the unfinished line `pending`;
    returns (records, what is still pending). A line waits for its newline, as in
    containerd, unless it grows to MAX_LINE bytes or `flush` (end of file, or a
    piece left waiting too long) asks for it now: then it goes out as `P` records."""
    lines = (pending + data).split(b"\n")
    rest = lines.pop()  # after the last newline: b"" when the data ends a line
    out = [encode(ns, stream, line) for line in lines]
    while len(rest) >= MAX_LINE:
        out.append(encode(ns, stream, rest[:MAX_LINE], partial=True))
        rest = rest[MAX_LINE:]
    if flush and rest:
        out.append(encode(ns, stream, rest, partial=True))
        rest = b""
    return b"".join(out), rest


@dataclass(frozen=True)
class Record:
    """One line of a log file. `stamp` is b"" for a line that is not a CRI record."""

    stamp: bytes
    stream: bytes
    partial: bool
    content: bytes

    @property
    def time(self) -> int | None:
        """Nanoseconds since the epoch, or None without a (valid) stamp."""
        if not self.stamp:
            return None
        try:
            return parse_time(self.stamp)
        except ValueError:
            return None


def parse_record(line: bytes) -> Record:
    """A line of a log file (with or without its newline) as a Record."""
    body = line[:-1] if line.endswith(b"\n") else line
    parts = body.split(b" ", 3)
    if (
        len(parts) >= 3
        and parts[1] in (STDOUT, STDERR)
        and _RFC3339.fullmatch(parts[0].decode("ascii", "replace"))
    ):
        tag = parts[2].split(b":", 1)[0]
        if tag in (FULL, PARTIAL):
            content = parts[3] if len(parts) == 4 else b""
            return Record(parts[0], parts[1], tag == PARTIAL, content)
    # not a record: the line as it was written (its newline, if any, ends it)
    return Record(b"", STDOUT, not line.endswith(b"\n"), body)


def is_line_end(line: bytes) -> bool:
    """Does this line of a log file end a line of output (a full record)?"""
    return not parse_record(line).partial


class Reader:
    """Turns log-file lines back into output: exact bytes, or each output line
    prefixed with its time and a space; records older than `since` (ns) are left out."""

    def __init__(self, timestamps: bool = False, since: int | None = None):
        self.timestamps = timestamps
        self.since = since
        self.at_line_start = True

    def render(self, line: bytes) -> bytes:
        record = parse_record(line)
        if self.since is not None and record.stamp:
            when = record.time
            if when is not None and when < self.since:
                return b""
        out = record.content if record.partial else record.content + b"\n"
        if self.timestamps and self.at_line_start and record.stamp:
            out = record.stamp + b" " + out
        self.at_line_start = not record.partial
        return out
