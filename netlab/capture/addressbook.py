"""The lab's address book: which pod, Service, node, VTEP or router an IP or
MAC belongs to, taken from the lab API at capture time and stored beside the
capture (`FILE.names.json`), so a capture can be read after its lab is gone.

Pure data: built from the API's objects (topology, pods, services,
endpoints), saved and loaded as JSON; no sockets, no kernel.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

from netlab.errors import NetlabError
from netlab.plan.names import ip_mac

FORMAT = "netlab.io/address-book/v1"
SUFFIX = ".names.json"
VXLAN_PORTS = (8472, 4789)  # Flannel's and IANA's: always decoded


@dataclass(frozen=True)
class Entry:
    """One address: kind is pod, service, node, vtep, cni or router."""

    kind: str
    name: str
    namespace: str | None = None
    node: str | None = None
    rack: str | None = None

    @property
    def label(self) -> str:
        """How captures name it: pods and Services by name (with their
        namespace unless `default`), nodes as node/NAME, VTEPs as NODE:flannel.1."""
        if self.kind == "pod":
            return (
                self.name
                if self.namespace in (None, "default")
                else f"{self.namespace}/{self.name}"
            )
        if self.kind == "service":
            if self.namespace in (None, "default"):
                return f"svc/{self.name}"
            return f"svc/{self.namespace}/{self.name}"
        if self.kind == "vtep":
            return f"{self.node}:flannel.1"
        if self.kind == "cni":
            return f"{self.node}:cni0"
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class ServicePorts:
    """A Service's VIP ports and where they lead, for naming flows."""

    label: str
    vip: str | None  # None: headless
    ports: tuple[int, ...]  # the Service's ports
    endpoints: tuple[tuple[str, int], ...]  # (pod IP, target port)


@dataclass
class AddressBook:
    lab: str = ""
    captured_at: str = ""
    overlay_port: int = 8472
    vni: int = 1
    addresses: dict[str, Entry] = field(default_factory=dict)
    macs: dict[str, Entry] = field(default_factory=dict)
    services: list[ServicePorts] = field(default_factory=list)

    # -- lookups ---------------------------------------------------------------

    def lookup(self, ip: str) -> Entry | None:
        return self.addresses.get(ip)

    def lookup_mac(self, mac: str) -> Entry | None:
        return self.macs.get(mac.lower())

    def label(self, ip: str) -> str:
        entry = self.addresses.get(ip)
        return entry.label if entry else ip

    def mac_label(self, mac: str) -> str:
        entry = self.macs.get(mac.lower())
        return entry.label if entry else mac

    def rack_of(self, ip: str) -> str | None:
        entry = self.addresses.get(ip)
        return entry.rack if entry else None

    @property
    def overlay_ports(self) -> set[int]:
        return {self.overlay_port, *VXLAN_PORTS}

    def service_for(self, ip: str, port: int) -> str | None:
        """The Service a connection to ip:port belongs to: its VIP and port,
        or one of its endpoints on a target port (after the node's DNAT)."""
        for service in self.services:
            if service.vip == ip and port in service.ports:
                return service.label
        for service in self.services:
            if (ip, port) in service.endpoints:
                return service.label
        return None

    def is_empty(self) -> bool:
        return not self.addresses

    # -- building -------------------------------------------------------------

    @classmethod
    def empty(cls) -> AddressBook:
        return cls()

    @classmethod
    def from_objects(
        cls,
        topology: dict[str, Any],
        pods: list[dict[str, Any]],
        services: list[dict[str, Any]],
        endpoints: list[dict[str, Any]],
    ) -> AddressBook:
        """From the lab API's objects: GET /netlab/v1/topology and the lists of
        pods, services and endpoints (all namespaces)."""
        overlay = topology.get("overlay", {})
        book = cls(
            lab=topology["metadata"]["name"],
            captured_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            overlay_port=int(overlay.get("port", 8472)),
            vni=int(overlay.get("vni", 1)),
        )
        racks_of_nodes: dict[str, str] = {}
        for node in topology.get("nodes", []):
            name, rack = node["name"], node["rack"]
            racks_of_nodes[name] = rack
            book._add(_ip(node["address"]), Entry("node", name, rack=rack))
            book._add(
                node["vtepIP"], Entry("vtep", name, node=name, rack=rack), node.get("vtepMAC")
            )
            book._add(
                _ip(node["cniAddress"]),
                Entry("cni", name, node=name, rack=rack),
                node.get("cniMAC"),
            )
        for router in topology.get("routers", []):
            for port in router.get("ports", []):
                book._add(_ip(port["address"]), Entry("router", router["name"], rack=port["rack"]))
        for pod in pods:
            ip = pod.get("status", {}).get("podIP")
            if not ip:
                continue
            meta = pod["metadata"]
            node = pod.get("spec", {}).get("nodeName")
            entry = Entry(
                "pod", meta["name"], meta.get("namespace"), node, racks_of_nodes.get(node)
            )
            # pods' MACs are fixed (0a:58 + IP), as the CNI bridge plugin makes them
            book._add(ip, entry, ip_mac(IPv4Address(ip)))
        by_key = {(e["metadata"].get("namespace"), e["metadata"]["name"]): e for e in endpoints}
        for svc in services:
            meta, spec = svc["metadata"], svc.get("spec", {})
            entry = Entry("service", meta["name"], meta.get("namespace"))
            vip = spec.get("clusterIP")
            vip = None if vip in (None, "", "None") else vip
            if vip:
                book._add(vip, entry)
            ep = by_key.get((meta.get("namespace"), meta["name"]), {})
            pairs = [
                (address["ip"], port["port"])
                for subset in ep.get("subsets") or []
                for address in subset.get("addresses") or []
                for port in subset.get("ports") or []
            ]
            book.services.append(
                ServicePorts(
                    entry.label,
                    vip,
                    tuple(p["port"] for p in spec.get("ports", [])),
                    tuple(sorted(pairs)),
                )
            )
        return book

    def _add(self, ip: str, entry: Entry, mac: str | None = None) -> None:
        self.addresses[ip] = entry
        if mac:
            self.macs[mac.lower()] = entry

    # -- files ----------------------------------------------------------------

    @staticmethod
    def beside(capture: str | Path) -> Path:
        return Path(f"{capture}{SUFFIX}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "lab": self.lab,
            "capturedAt": self.captured_at,
            "overlay": {"port": self.overlay_port, "vni": self.vni},
            "addresses": {ip: _compact(e) for ip, e in sorted(self.addresses.items())},
            "macs": {mac: _compact(e) for mac, e in sorted(self.macs.items())},
            "services": [
                {
                    "label": s.label,
                    "vip": s.vip,
                    "ports": list(s.ports),
                    "endpoints": [list(p) for p in s.endpoints],
                }
                for s in self.services
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AddressBook:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a netlab address book (format {data.get('format')!r})")
        overlay = data.get("overlay", {})
        return cls(
            lab=data.get("lab", ""),
            captured_at=data.get("capturedAt", ""),
            overlay_port=int(overlay.get("port", 8472)),
            vni=int(overlay.get("vni", 1)),
            addresses={ip: Entry(**e) for ip, e in data.get("addresses", {}).items()},
            macs={mac: Entry(**e) for mac, e in data.get("macs", {}).items()},
            services=[
                ServicePorts(
                    s["label"],
                    s.get("vip"),
                    tuple(s.get("ports", [])),
                    tuple((ip, int(port)) for ip, port in s.get("endpoints", [])),
                )
                for s in data.get("services", [])
            ],
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> AddressBook:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except OSError as exc:
            raise NetlabError(f"{path}: cannot read the address book ({exc.strerror})") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise NetlabError(
                f"{path}: not a netlab address book ({exc}); it is written beside a capture "
                f"by `netlab capture -w FILE` as FILE{SUFFIX}"
            ) from exc


def _ip(interface: str) -> str:
    return str(IPv4Interface(interface).ip)


def _compact(entry: Entry) -> dict[str, str]:
    return {k: v for k, v in asdict(entry).items() if v is not None}
