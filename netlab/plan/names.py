"""Names of the lab's kernel objects. Every namespace starts with the lab's prefix."""

from __future__ import annotations

import hashlib

from netlab.spec.model import DEFAULT_NAMESPACE

PREFIX_ROOT = "nl-"


def lab_prefix(lab: str) -> str:
    """`nl-<lab>`: the lab's namespace, and the start of every namespace name it makes."""
    return f"{PREFIX_ROOT}{lab}"


def infra_netns(prefix: str, host: str) -> str:
    """A node's or router's namespace name: `nl-demo:n1` (':' is in no Kubernetes name)."""
    return f"{prefix}:{host}"


FILE_NAME_MAX = 200  # below NAME_MAX (255): room for the suffixes beside it


def bounded(name: str, limit: int = FILE_NAME_MAX) -> str:
    """A name that fits a file name: as it is if short enough, else cut and ended with
    `~` and 12 hex digits of its hash ('~' is in no Kubernetes name: no collisions)."""
    if len(name) <= limit:
        return name
    return name[: limit - 13] + "~" + hashlib.sha256(name.encode()).hexdigest()[:12]


def pod_netns(prefix: str, namespace: str, pod: str) -> str:
    """A pod's namespace name: `nl-demo.web-0`, or `nl-demo.<ns>_<pod>` outside `default`
    ('_' is in no Kubernetes name, so the two forms never collide); a long pod name
    (Kubernetes allows 253) is cut to fit a file name."""
    if namespace == DEFAULT_NAMESPACE:
        return bounded(f"{prefix}.{pod}")
    return bounded(f"{prefix}.{namespace}_{pod}")


def host_veth(netns: str) -> str:
    """The node-side veth of a pod, `veth` + 8 hex digits, as CNI plugins name them."""
    return "veth" + hashlib.sha256(netns.encode()).hexdigest()[:8]


def vtep_mac(lab: str, node: str) -> str:
    """A stable, locally administered unicast MAC for a node's flannel.1."""
    digest = hashlib.sha256(f"{lab}/{node}/vtep".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def router_ports(router: str, index: int) -> tuple[str, str]:
    """(name inside the router, name of the rack-bridge end)."""
    return f"eth{index}", f"{router}-eth{index}"


def node_port(node: str) -> str:
    """The rack-bridge end of a node's uplink."""
    return f"{node}-eth0"


def ip_mac(address) -> str:
    """`0a:58:` + the IPv4 address in hex, as the CNI bridge plugin names a
    pod's MAC: stable, unique where the address is, and readable in captures."""
    return "0a:58:" + ":".join(f"{b:02x}" for b in address.packed)
