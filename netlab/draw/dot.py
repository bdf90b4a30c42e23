"""Writing DOT text safely: escaping for HTML-like labels, attribute lists, statements.

Names from the lab (pods, nodes, racks, Services) only ever reach the DOT text through
`esc()` inside an `Html` label; other attribute values are quoted by `attrs()`. Graph
IDs are chosen by the caller, never taken from names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# characters XML 1.0 forbids (graphviz would write them into the SVG as they are)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


class Html(str):
    """The body of an HTML-like label, already escaped: written as `<body>`."""


def esc(value: object) -> str:
    """Text for an HTML-like label: XML-escaped, a newline becomes a line break,
    characters XML cannot carry become U+FFFD.

    A backslash is doubled: graphviz expands `\\N`, `\\G`, ... and `\\\\` in HTML-like
    labels too, after decoding entities (so `&#92;` would not help)."""
    text = _CONTROL.sub("\ufffd", str(value)).replace("\\", "\\\\")
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = text.replace('"', "&quot;").replace("'", "&#39;")
    return text.replace("\t", " ").replace("\r", "").replace("\n", "<br/>")


def html_lines(first: str, *rest: str) -> Html:
    """An HTML-like label of already-escaped lines, the first in bold."""
    return Html("<br/>".join([f"<b>{first}</b>", *rest]))


def quote(value: str) -> str:
    """A DOT double-quoted string (escString: a backslash stays a backslash)."""
    text = _CONTROL.sub("\ufffd", value).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\n", "\\n") + '"'


def attrs(**values: str | None) -> str:
    """`[key=value, ...]` of the values that are not None; `Html` values as `<...>`."""
    parts = [
        f"{key}=<{value}>" if isinstance(value, Html) else f"{key}={quote(value)}"
        for key, value in values.items()
        if value is not None
    ]
    return "[" + ", ".join(parts) + "]" if parts else ""


@dataclass
class DotWriter:
    """DOT statements of one digraph, collected in order and indented."""

    name: str = "netlab"
    out: list[str] = field(default_factory=list)
    depth: int = 1

    def add(self, statement: str) -> None:
        self.out.append("  " * self.depth + statement)

    def stmt(self, head: str, **values: str | None) -> None:
        """`head [attributes]`: head is `graph`, `node`, `edge`, a node ID or `a -> b`."""
        self.add(f"{head} {attrs(**values)}".rstrip())

    def open(self, header: str) -> None:
        self.add(header + " {")
        self.depth += 1

    def close(self) -> None:
        self.depth -= 1
        self.add("}")

    def text(self) -> str:
        return "\n".join([f"digraph {self.name} {{", *self.out, "}"]) + "\n"
