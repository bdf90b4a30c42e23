"""`netlab up --cli`: Mininet's CLI on the running lab, where nodes, routers
and pods are all addressable by name (`client ping web-...`, `n1 ip route`).
A pod's shell is started the first time the CLI uses the pod."""

from __future__ import annotations

import contextlib

from mininet.cli import CLI
from mininet.log import error
from mininet.node import Host


class PodShell(Host):
    """A Mininet node whose shell runs in a pod's named namespace."""

    def __init__(self, name: str, netns_name: str, **params):
        self.netns_name = netns_name
        super().__init__(name, inNamespace=False, **params)

    def _popen(self, cmd, **params):
        return super()._popen(["ip", "netns", "exec", self.netns_name, *cmd], **params)


class LabNet:
    """The Mininet network, plus the lab's pods, as the CLI sees it."""

    def __init__(self, lab):
        self.lab = lab
        self.net = lab.fabric.net
        self.shells: dict[str, PodShell] = {}

    def __getattr__(self, name):
        return getattr(self.net, name)

    def _pod(self, name: str):
        return next((p for p in self.lab.pod_list() if p.name == name), None)

    def __iter__(self):
        return iter([*self.net, *(p.name for p in self.lab.pod_list())])

    def __len__(self) -> int:
        return len(list(iter(self)))

    def __contains__(self, name) -> bool:
        return name in self.net.nameToNode or self._pod(name) is not None

    def __getitem__(self, name):
        if name in self.net.nameToNode:
            return self.net.nameToNode[name]
        if name not in self.shells:
            pod = self._pod(name)
            if pod is None:
                raise KeyError(name)
            self.shells[name] = PodShell(name, pod.netns)
        return self.shells[name]

    def ip_of(self, name: str) -> str:
        pod = self._pod(name)
        if pod is not None:
            return str(pod.address.ip)
        node = next((n for n in self.lab.node_list() if n.name == name), None)
        if node is not None:
            return str(node.address.ip)
        router = next((r for r in self.lab.plan.routers if r.name == name), None)
        return str(router.ports[0].address.ip) if router else name

    def close(self) -> None:
        for shell in self.shells.values():
            with contextlib.suppress(OSError):
                shell.terminate()


class LabCLI(CLI):
    prompt = "netlab> "

    def default(self, line: str) -> None:
        first, args, line = self.parseline(line)
        if first not in self.mn:
            error(f"*** Unknown command: {line}\n")
            return
        if not args:
            error(f"*** Please enter a command for node: {first} <cmd>\n")
            return
        node = self.mn[first]
        rest = " ".join(self.mn.ip_of(arg) if arg in self.mn else arg for arg in args.split(" "))
        node.sendCmd(rest)
        self.waitForNode(node)


def run_cli(lab) -> None:
    net = LabNet(lab)
    try:
        LabCLI(net)
    finally:
        net.close()
