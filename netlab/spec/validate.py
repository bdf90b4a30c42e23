"""Field checking: a problem collector, typed field readers, and the `lab:` section.

Everything here reads untrusted data (parsed YAML, or the builder's dicts) and
never raises: each finding becomes a `Problem(path, message, fix)` on a
`Checker`, so one run reports everything that is wrong. Manifests (Pods,
Deployments) are checked in `netlab.spec.manifests` with the same `Checker`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any

from netlab.errors import Problem
from netlab.spec.model import (
    DEFAULT_ROUTER,
    HOSTNAME_LABEL,
    ZONE_LABEL,
    NodeSpec,
    ResourceList,
    RouterSpec,
    frozen_map,
)

IFNAME_MAX = 15  # Linux interface names: IFNAMSIZ - 1
LAB_NAME_MAX = 12  # the lab name prefixes every kernel object the lab makes
DNS_LABEL_MAX = 63

DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
NAME_RE = re.compile(r"^[a-z][a-z0-9-]*[a-z0-9]$|^[a-z]$")  # racks, nodes, routers
LABEL_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
IANA_SVC_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
DNS_1035_LABEL_RE = NAME_RE  # a letter first: Service names
DNS_NAME_MAX = 253
IANA_SVC_NAME_MAX = 15
IANA_SVC_NAME_RULE = "use at most 15 lowercase letters, digits and '-', with at least one letter"

# kind word -> (accepted Python types, article form, how to write one)
_KINDS: dict[str, tuple[tuple[type, ...], str, str]] = {
    "string": ((str,), "a string", "quote it"),
    "integer": ((int,), "an integer", "write a whole number, e.g. 3"),
    "number": ((int, float), "a number", "write a number, e.g. 1.5"),
    "boolean": ((bool,), "a boolean", "write true or false"),
    "list": ((list,), "a list", "write it as a YAML list: [a, b] or lines starting with '- '"),
    "mapping": ((dict,), "a mapping", "write it as 'key: value' lines"),
}


def join(path: str, key: object) -> str:
    """`path` + `.key` (or just `key` after a `Kind/name: ` prefix or at the top)."""
    if not path or path.endswith(": "):
        return f"{path}{key}"
    return f"{path}.{key}"


def item(path: str, index: int) -> str:
    """`path[index]`."""
    return f"{path}[{index}]"


def describe(value: Any) -> str:
    """How a value of the wrong type is shown in a message."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else f"the boolean {str(value).lower()}"
    if isinstance(value, str | int | float):
        return f"the {'string' if isinstance(value, str) else 'number'} {value!r}"
    return {list: "a list", dict: "a mapping"}.get(type(value), f"a {type(value).__name__}")


def is_kind(value: Any, kind: str) -> bool:
    """True if value has the type named by kind (booleans are not numbers)."""
    types = _KINDS[kind][0]
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def suggest(word: object, known: Sequence[str]) -> str | None:
    """The closest known name to word (case-insensitive), or None."""
    if not isinstance(word, str) or not known:
        return None
    lowered = {name.lower(): name for name in known}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def did_you_mean(word: object, known: Sequence[str], what: str = "known fields") -> str:
    """A fix text: "did you mean 'x'?" or the list of known names."""
    close = suggest(word, known)
    if close is not None:
        return f"did you mean {close!r}?"
    return f"{what}: {', '.join(known)}" if known else ""


def is_iana_svc_name(value: str) -> bool:
    """IANA_SVC_NAME: <= 15 lowercase alnum or '-', a letter, no '--' or '-' at an end."""
    return (
        len(value) <= IANA_SVC_NAME_MAX
        and bool(IANA_SVC_NAME_RE.fullmatch(value))
        and "--" not in value
        and any(c.isalpha() for c in value)
    )


def is_dns_name(value: str) -> bool:
    """A DNS name of lowercase labels (RFC 1123), each <= 63, <= 253 in all, no final dot."""
    return (
        len(value) <= DNS_NAME_MAX
        and bool(DNS_SUBDOMAIN_RE.fullmatch(value))
        and all(len(label) <= DNS_LABEL_MAX for label in value.split("."))
    )


class Checker:
    """Collects problems while reading untrusted data; never raises."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, path: str, message: str, fix: str = "") -> None:
        """Record one problem at path."""
        self.problems.append(Problem(path.rstrip(": ") or "(top)", message, fix))

    def check_type(self, value: Any, path: str, kind: str) -> bool:
        """True if value is of kind; otherwise record 'expected <kind>, got ...'."""
        if is_kind(value, kind):
            return True
        _, article, how = _KINDS[kind]
        fix = how
        if kind == "string" and isinstance(value, bool):
            fix = "quote it (YAML reads yes/no/on/off/true/false as booleans)"
        elif kind == "string" and isinstance(value, int | float):
            fix = f"quote it: '{value}'"
        elif kind == "string":
            fix = "write a single string"
        elif kind in ("integer", "number") and isinstance(value, str):
            if re.fullmatch(r"-?\d+(\.\d+)?", value.strip()):
                fix = f"write it without quotes: {value.strip()}"
        self.add(path, f"expected {article}, got {describe(value)}", fix)
        return False

    def mapping(
        self, value: Any, path: str, known: Sequence[str], required: Sequence[str] = ()
    ) -> dict | None:
        """Check a mapping: its type, unknown keys (with suggestions), required keys."""
        if not self.check_type(value, path, "mapping"):
            return None
        for key in value:
            if key not in known:
                self.add(join(path, key), f"unknown field {key!r}", did_you_mean(key, known))
        for key in required:
            if value.get(key) is None:
                self.add(join(path, key), "required field is missing", f"add '{key}:'")
        return value

    def take(self, obj: dict, key: str, path: str, kind: str, default: Any = None) -> Any:
        """obj[key] checked against kind; default if absent or null; None if of the wrong type."""
        value = obj.get(key)
        if value is None:
            return default
        return value if self.check_type(value, join(path, key), kind) else None

    def choice(
        self,
        obj: dict,
        key: str,
        path: str,
        allowed: Sequence[str],
        default: str | None = None,
        what: str = "use one of",
        fix: str | None = None,
    ) -> str | None:
        """obj[key], a string among `allowed` (default if absent); None, with
        kube-apiserver's `Unsupported value` recorded, if it is not. The fix: `fix`, or
        the closest allowed value, or the list of them after `what`."""
        value = self.take(obj, key, path, "string", default=default)
        if value is not None and value not in allowed:
            self.add(
                join(path, key),
                f'Unsupported value: "{value}": supported values: '
                + ", ".join(f'"{v}"' for v in allowed),
                fix if fix is not None else did_you_mean(value, allowed, what),
            )
            return None
        return value

    def int_in(
        self, obj: dict, key: str, path: str, low: int, high: int, default: Any = None
    ) -> Any:
        """An integer field within [low, high]; default if absent, None if invalid."""
        if obj.get(key) is None:
            return default
        value = self.take(obj, key, path, "integer")
        if value is not None and not low <= value <= high:
            self.add(join(path, key), f"{value} is out of range", f"use {low}..{high}")
            return None
        return value

    def number_in(
        self, obj: dict, key: str, path: str, low: float, high: float, default: Any = None
    ) -> Any:
        """A number field (integer or not) within [low, high] as a float; default if absent."""
        if obj.get(key) is None:
            return default
        value = self.take(obj, key, path, "number")
        if value is not None and not low <= value <= high:
            self.add(join(path, key), f"{value} is out of range", f"use {low:g}..{high:g}")
            return None
        return None if value is None else float(value)

    def port_ref(self, obj: dict, key: str, path: str, default: Any = None) -> Any:
        """A port given as a number (1..65535) or a port name (IANA_SVC_NAME); None if invalid."""
        value = obj.get(key)
        if value is None:
            return default
        here = join(path, key)
        if isinstance(value, str):
            if value.strip().isdigit():
                self.add(
                    here,
                    f"{value!r} is a string, so it would name a port, and names need a letter",
                    f"write the number without quotes: {value.strip()}",
                )
                return None
            if not is_iana_svc_name(value):
                self.add(here, f"port name {value!r} is not a valid name", IANA_SVC_NAME_RULE)
                return None
            return value
        if not is_kind(value, "integer"):
            self.add(
                here,
                f"expected a port number or name, got {describe(value)}",
                "write a number, e.g. 8080, or a container port name, e.g. http",
            )
            return None
        return self.int_in(obj, key, path, 1, 65535)

    def str_list(self, obj: dict, key: str, path: str) -> list[str] | None:
        """A list of strings (an absent field is an empty list)."""
        value = self.take(obj, key, path, "list", default=[])
        if value is None:
            return None
        good = True
        for i, entry in enumerate(value):
            good = self.check_type(entry, item(join(path, key), i), "string") and good
        return list(value) if good else None

    def name(
        self, value: Any, path: str, what: str, max_len: int | None, pattern: re.Pattern[str]
    ) -> bool:
        """A name matching pattern and (unless max_len is None) at most max_len characters."""
        if not self.check_type(value, path, "string"):
            return False
        ok = True
        if not pattern.fullmatch(value):
            first = "a letter" if pattern is NAME_RE else "a letter or digit"
            dots = ", '-' and '.'" if pattern is DNS_SUBDOMAIN_RE else " and '-'"
            rule = f"use lowercase letters, digits{dots}, starting with {first}, not ending in '-'"
            self.add(path, f"{what} {value!r} is not a valid name", rule)
            ok = False
        if max_len is not None and len(value) > max_len:
            self.add(
                path,
                f"{what} {value!r} is {len(value)} characters; at most {max_len} allowed",
                "use a shorter name",
            )
            ok = False
        return ok

    def labels(self, obj: dict, key: str, path: str) -> dict | None:
        """A Kubernetes label map (or selector): valid keys and string values."""
        value = self.take(obj, key, path, "mapping", default={})
        if value is None:
            return None
        good = True
        for label, text in value.items():
            here = join(join(path, key), label)
            good = self.label_key(label, here) and good
            if not self.check_type(text, here, "string"):
                good = False
            elif len(text) > DNS_LABEL_MAX or (text and not LABEL_NAME_RE.fullmatch(text)):
                self.add(
                    here,
                    f"label value {text!r} is not valid",
                    "use at most 63 letters, digits, '-', '_' or '.', starting and ending "
                    "with a letter or digit (or an empty string)",
                )
                good = False
        return dict(value) if good else None

    def label_key(self, key: Any, path: str) -> bool:
        """A label key: an optional DNS-subdomain prefix and '/', then a name of <= 63."""
        if not isinstance(key, str):
            self.add(path, f"label key {key!r} is not a string", f"quote it: '{key}'")
            return False
        prefix, _, name = key.rpartition("/")
        if (prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN_RE.fullmatch(prefix))) or (
            len(name) > DNS_LABEL_MAX or not LABEL_NAME_RE.fullmatch(name)
        ):
            self.add(
                path,
                f"label key {key!r} is not valid",
                "use [prefix/]name: prefix a DNS subdomain, name at most 63 letters, digits, "
                "'-', '_' or '.', starting and ending with a letter or digit",
            )
            return False
        return True


# ---------------------------------------------------------------- the lab: section

LAB_FIELDS = (
    "name",
    "racks",
    "routers",
    "overlay",
    "links",
    "serviceNetwork",
    "dns",
    "mesh",
    "controlPlane",
    "store",
)
RACK_FIELDS = ("name", "subnet", "nodes")
NODE_FIELDS = ("name", "labels", "maxPods", "allocatable")
ROUTER_FIELDS = ("name", "racks")
MAX_RACK_PREFIX = 29
RESERVED_LABELS = (HOSTNAME_LABEL, ZONE_LABEL)


@dataclass
class DraftRack:
    """A rack as read; invalid parts are None (their problems are already recorded)."""

    path: str  # "lab.racks[1]"
    name: str | None
    subnet: IPv4Network | None
    node_count: int  # entries in its nodes list, valid or not
    nodes: list[NodeSpec]


@dataclass
class LabDraft:
    """The fabric part of `lab:` as read, for the whole-lab checks in `netlab.spec.load`."""

    lab: dict  # the section itself (overlay and links are read in `netlab.spec.load`)
    name: Any
    racks: list[DraftRack]
    routers: list[RouterSpec]


class _Names:
    """Racks, nodes and routers share one namespace: they are all Mininet nodes."""

    def __init__(self, checker: Checker) -> None:
        self.checker = checker
        self.seen: dict[str, tuple[str, str]] = {}

    def claim(self, name: Any, path: str, kind: str) -> None:
        if not isinstance(name, str):
            return
        if name not in self.seen:
            self.seen[name] = (kind, path)
            return
        first_kind, first_path = self.seen[name]
        self.checker.add(
            path,
            f"name {name!r} is already used by the {first_kind} at {first_path} "
            "(racks, nodes and routers share one namespace)",
            f"rename this {kind} or that {first_kind}",
        )


def _fabric_name(
    checker: Checker, value: Any, path: str, kind: str, limit: int, iface: str
) -> bool:
    """A rack/node/router name: NAME_RE, short enough for the interface named after it."""
    ok = checker.name(value, path, f"{kind} name", None, NAME_RE)
    if isinstance(value, str) and len(value) > limit:
        checker.add(
            path,
            f"{kind} name {value!r} is {len(value)} characters; a {kind} name can be at most "
            f"{limit}, since its interface {iface.format(value)!r} must fit Linux's "
            f"{IFNAME_MAX}-character interface-name limit",
            f"shorten it to {limit} characters or fewer",
        )
        ok = False
    return ok


def parse_network(checker: Checker, value: Any, path: str) -> IPv4Network | None:
    """An IPv4 CIDR string with no host bits set, outside loopback/multicast/reserved space."""
    if not checker.check_type(value, path, "string"):
        return None
    try:
        net = IPv4Network(value)
    except ValueError:
        try:
            loose = IPv4Network(value, strict=False)
        except ValueError:
            checker.add(path, f"{value!r} is not an IPv4 CIDR", "write it as e.g. 192.168.1.0/24")
            return None
        checker.add(path, f"{value} has host bits set", f"use the network address {loose}")
        return None
    if net.is_loopback or net.is_multicast or net.is_reserved or net.overlaps(_THIS_NET):
        checker.add(path, f"{net} is a special-purpose range", "use a private range (RFC 1918)")
        return None
    return net


_THIS_NET = IPv4Network("0.0.0.0/8")


def _racks(value: Any, checker: Checker, names: _Names) -> list[DraftRack]:
    if not checker.check_type(value, "lab.racks", "list"):
        return []
    if not value:
        checker.add(
            "lab.racks", "a lab needs at least one rack", "add a rack with name, subnet, nodes"
        )
    racks = []
    for i, entry in enumerate(value):
        path = item("lab.racks", i)
        rack = checker.mapping(entry, path, RACK_FIELDS, required=RACK_FIELDS)
        if rack is None:
            continue
        name = rack.get("name")
        if name is not None:
            _fabric_name(checker, name, join(path, "name"), "rack", IFNAME_MAX, "{}")
            names.claim(name, join(path, "name"), "rack")
        subnet = None
        if rack.get("subnet") is not None:
            subnet = parse_network(checker, rack["subnet"], join(path, "subnet"))
        if subnet is not None and subnet.prefixlen > MAX_RACK_PREFIX:
            checker.add(
                join(path, "subnet"),
                f"{subnet} is too small for a rack (at most /{MAX_RACK_PREFIX})",
                f"use a /{MAX_RACK_PREFIX} or larger subnet",
            )
            subnet = None
        rack_name = name if isinstance(name, str) else None
        nodes = _nodes(rack.get("nodes"), join(path, "nodes"), rack_name, checker, names)
        count = len(rack["nodes"]) if isinstance(rack.get("nodes"), list) else 0
        racks.append(DraftRack(path, rack_name, subnet, count, nodes))
    return racks


def _nodes(
    value: Any, path: str, rack: str | None, checker: Checker, names: _Names
) -> list[NodeSpec]:
    if value is None or not checker.check_type(value, path, "list"):
        return []
    if not value:
        checker.add(path, "a rack needs at least one node", "list its nodes, e.g. nodes: [n1, n2]")
    nodes = []
    for i, entry in enumerate(value):
        here, labels, max_pods, allocatable = item(path, i), {}, None, ResourceList()
        if isinstance(entry, dict):
            node = checker.mapping(entry, here, NODE_FIELDS, required=("name",))
            name, here = node.get("name"), join(here, "name")
            labels = checker.labels(node, "labels", item(path, i))
            max_pods = checker.int_in(node, "maxPods", item(path, i), 1, 65536)
            if node.get("allocatable") is not None:
                allocatable, max_pods = _allocatable(node, item(path, i), max_pods, checker)
            for key in RESERVED_LABELS:
                if key in (labels or {}):
                    checker.add(
                        join(join(item(path, i), "labels"), key), "set by netlab", "remove it"
                    )
            if name is None:
                continue
        else:
            name = entry
        if _fabric_name(checker, name, here, "node", IFNAME_MAX - len("-eth0"), "{}-eth0"):
            if rack is not None and labels is not None:
                nodes.append(NodeSpec(name, rack, frozen_map(labels), max_pods, allocatable))
        names.claim(name, here, "node")
    return nodes


def _allocatable(
    node: dict, path: str, max_pods: int | None, checker: Checker
) -> tuple[ResourceList, int | None]:
    """A node's `allocatable` (cpu, memory, pods) and its pods, which maxPods may give
    instead (not both)."""
    from netlab.spec.compute import read_allocatable  # it reads quantities with a Checker

    allocatable, pods = read_allocatable(node["allocatable"], join(path, "allocatable"), checker)
    if pods is not None and node.get("maxPods") is not None:
        checker.add(
            join(path, "maxPods"),
            "both maxPods and allocatable.pods are given",
            "keep allocatable.pods (maxPods is its older spelling)",
        )
    return allocatable, pods if pods is not None else max_pods


def _routers(
    value: Any, racks: list[DraftRack], checker: Checker, names: _Names
) -> list[RouterSpec]:
    known = [rack.name for rack in racks if rack.name is not None]
    if value is None:
        if DEFAULT_ROUTER in names.seen:
            kind, path = names.seen[DEFAULT_ROUTER]
            names.checker.add(
                path,
                f"name {DEFAULT_ROUTER!r} is taken by the default router (lab.routers is not given)",
                f"rename this {kind}, or list lab.routers yourself",
            )
        return [RouterSpec(DEFAULT_ROUTER, tuple(known))]
    if not checker.check_type(value, "lab.routers", "list"):
        return []
    least = 2 if len(racks) > 1 else 1
    routers = []
    for i, entry in enumerate(value):
        path = item("lab.routers", i)
        router = checker.mapping(entry, path, ROUTER_FIELDS, required=ROUTER_FIELDS)
        if router is None:
            continue
        listed = checker.str_list(router, "racks", path) if "racks" in router else []
        listed = listed or []
        name = router.get("name")
        if name is not None:
            last = f"-eth{max(len(listed), 1) - 1}"
            limit = IFNAME_MAX - len(last)
            _fabric_name(checker, name, join(path, "name"), "router", limit, "{}" + last)
            names.claim(name, join(path, "name"), "router")
        good: list[str] = []
        for j, rack in enumerate(listed):
            here = item(join(path, "racks"), j)
            if rack in good:
                checker.add(here, f"rack {rack!r} is listed twice", "list each rack once")
            elif rack not in known:
                checker.add(
                    here, f"rack {rack!r} does not exist", did_you_mean(rack, known, "racks")
                )
            else:
                good.append(rack)
        if router.get("racks") is not None and len(listed) < least:
            checker.add(
                join(path, "racks"),
                f"a router joins at least {least} rack(s); this one lists {len(listed)}",
                "add racks to it or remove the router",
            )
        routers.append(RouterSpec(name if isinstance(name, str) else "", tuple(good)))
    return routers


def validate_lab(value: Any, checker: Checker) -> LabDraft | None:
    """Check the `lab:` keys, its name, racks, nodes and routers; None if it is no mapping."""
    lab = checker.mapping(value, "lab", LAB_FIELDS, required=("name", "racks"))
    if lab is None:
        return None
    name = lab.get("name")
    if name is not None:
        checker.name(name, "lab.name", "lab name", LAB_NAME_MAX, DNS_LABEL_RE)
    names = _Names(checker)
    racks = _racks(lab["racks"], checker, names) if lab.get("racks") is not None else []
    routers = _routers(lab.get("routers"), racks, checker, names)
    return LabDraft(lab, name, racks, routers)
