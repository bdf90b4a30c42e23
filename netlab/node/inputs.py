"""What a container takes from outside its own spec, handed to the pod workers as one
part (`podworkers.ContainerInputs`): its volumes, from kubelet's volume manager, and
its env from ConfigMaps, Secrets and the pod's own fields."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from netlab.node.bundle import Bind
from netlab.node.volumes import VolumeManager
from netlab.plan import PodPlan
from netlab.spec.model import ContainerSpec

EnvResolver = Callable[[PodPlan, ContainerSpec], tuple[Mapping[str, str], Mapping[str, str]]]


class PodInputs:
    def __init__(self, volumes: VolumeManager, env: EnvResolver | None = None) -> None:
        self.volumes = volumes
        self._env = env

    def binds(self, pod: PodPlan, container: ContainerSpec) -> tuple[Bind, ...]:
        if not pod.template.volumes:
            return ()
        return self.volumes.binds(pod, container)

    def env(
        self, pod: PodPlan, container: ContainerSpec
    ) -> tuple[Mapping[str, str], Mapping[str, str]]:
        if self._env is None or not (container.env_from or container.env_refs):
            return {}, {}
        return self._env(pod, container)
