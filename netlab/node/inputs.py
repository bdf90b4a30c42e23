"""What a container takes from outside its own spec, handed to the pod workers as one
part (`podworkers.ContainerInputs`): its volumes, from kubelet's volume manager, and
its env from ConfigMaps, Secrets and the pod's own fields (read from the store)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from netlab.events import EventRecorder
from netlab.node.bundle import Bind
from netlab.node.envsources import SKIPPED_REASON, resolve_env
from netlab.node.volumes import VolumeManager
from netlab.plan import PodPlan
from netlab.spec.model import ContainerSpec


class PodInputs:
    def __init__(
        self,
        volumes: VolumeManager,
        store: Any,
        host_ip: Callable[[str], str],
        events: EventRecorder,
    ) -> None:
        self.volumes, self.store, self.host_ip, self.events = volumes, store, host_ip, events

    def binds(self, pod: PodPlan, container: ContainerSpec) -> tuple[Bind, ...]:
        if not pod.template.volumes:
            return ()
        return self.volumes.binds(pod, container)

    def env(
        self, pod: PodPlan, container: ContainerSpec
    ) -> tuple[Mapping[str, str], Mapping[str, str]]:
        if not (container.env_from or container.env_refs):
            return {}, {}
        resolved = resolve_env(
            self.store, pod, container, str(pod.address.ip), self.host_ip(pod.node)
        )
        for skipped in resolved.skipped:
            self.events.pod(
                pod.namespace, pod.name, SKIPPED_REASON, skipped.message, type_="Warning"
            )
        return resolved.env_from, resolved.refs
