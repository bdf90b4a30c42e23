"""kubelet's volume manager: a pod's volumes are made ready on its node before any of
its containers starts (the pod waits in ContainerCreating until they are), bound into
each container at its volumeMounts, refreshed while the pod runs (a changed ConfigMap
reaches its files), held to their sizeLimit, and taken down with the pod.

The manager drives one plugin per kind of volume (`netlab.node.volumeplugin`); it
knows nothing of what a kind is made of.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from netlab.events import EventRecorder
from netlab.node import mounts
from netlab.node.bundle import Bind
from netlab.node.claimvolumes import ClaimVolumes
from netlab.node.configvolumes import ConfigVolumes
from netlab.node.localvolumes import EmptyDirPlugin, HostPathPlugin
from netlab.node.volumeplugin import VolumeContext, VolumeNotReady, VolumePlugin
from netlab.paths import node_disk
from netlab.plan import PodPlan
from netlab.spec.model import ContainerSpec
from netlab.spec.quantity import format_memory
from netlab.spec.volumes import EmptyDirSource, VolumeSpec

log = logging.getLogger(__name__)

RESYNC_INTERVAL = 1.0  # seconds between two refreshes of running pods' volumes


@dataclass
class PodVolumes:
    """One pod's volumes on its node: the host path of each that is set up."""

    pod: PodPlan
    ctx: VolumeContext
    paths: dict[str, Path] = field(default_factory=dict)


class VolumeManager:
    """The volumes of the pods on the lab's nodes. `evict(pod, message)` is called when a
    pod's emptyDir grows past its sizeLimit (kubelet's eviction manager)."""

    def __init__(
        self,
        lab: str,
        run_dir: Path,
        plugins: Iterable[VolumePlugin],
        evict: Callable[[PodPlan, str], None] | None = None,
        interval: float = RESYNC_INTERVAL,
        failed: Callable[[PodPlan, VolumeNotReady], None] | None = None,
    ) -> None:
        self.lab, self.run_dir = lab, run_dir
        self.plugins: dict[str, VolumePlugin] = {}
        for plugin in plugins:
            for kind in plugin.kinds:
                self.plugins[kind] = plugin
        self.evict = evict
        self.failed = failed  # a refresh failed (kubelet's FailedMount; once per message)
        self._failing: dict[tuple[tuple[str, str], str], str] = {}
        self.interval = interval
        self._pods: dict[tuple[str, str], PodVolumes] = {}
        self._lock = threading.Lock()
        # a pod's volumes are refreshed or taken down, never both at once (a refresh
        # after the teardown would write its files again)
        self._taking_down = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- paths --------------------------------------------------------------

    def pods_root(self) -> Path:
        """kubelet's /var/lib/kubelet/pods, memory side: the pods' configMap, secret and
        memory-medium volumes."""
        return self.run_dir / "pods"

    def context(self, pod: PodPlan) -> VolumeContext:
        return VolumeContext(
            self.lab,
            pod,
            self.pods_root() / pod.netns / "volumes",
            node_disk(self.lab, pod.node),
        )

    # -- setting up ---------------------------------------------------------

    def set_up(self, pod: PodPlan) -> dict[str, Path]:
        """Every volume of the pod, ready on its node (idempotent): the host path of each.
        VolumeNotReady naming the volumes that are not, as kubelet's event does."""
        with self._lock:
            state = self._pods.get(pod.key)
            if state is None or state.pod is not pod:
                state = self._pods[pod.key] = PodVolumes(pod, self.context(pod))
        waiting: list[tuple[VolumeSpec, VolumeNotReady]] = []
        for volume in pod.template.volumes:
            if volume.name in state.paths:
                continue
            plugin = self.plugins.get(volume.kind)
            if plugin is None:  # refused when the manifest was read; never reached
                raise VolumeNotReady(f"no volume plugin for {volume.kind} volume {volume.name}")
            try:
                state.paths[volume.name] = plugin.setup(state.ctx, volume)
            except VolumeNotReady as exc:
                waiting.append((volume, exc))
            except OSError as exc:
                waiting.append(
                    (
                        volume,
                        VolumeNotReady(
                            f'MountVolume.SetUp failed for volume "{volume.name}" : {exc}'
                        ),
                    )
                )
        if waiting:
            first = waiting[0][1]
            if len(waiting) > 1:
                names = ", ".join(v.name for v, _ in waiting)
                raise VolumeNotReady(
                    f"{first.message} (and {len(waiting) - 1} more: unmounted volumes=[{names}])",
                    first.event,
                    min(exc.retry for _, exc in waiting),
                )
            raise first
        return dict(state.paths)

    def binds(self, pod: PodPlan, container: ContainerSpec) -> tuple[Bind, ...]:
        """The container's volumeMounts as bind mounts, every volume of the pod set up
        first. A subPath is resolved now, to the file or directory it names at this
        moment (kubelet's rule: a subPath mount never sees later updates of a ConfigMap);
        a missing subPath is made as a directory, as kubelet makes it."""
        paths = self.set_up(pod)
        volumes = {v.name: v for v in pod.template.volumes}
        out = []
        for mount in container.volume_mounts:
            root = paths[mount.name]
            source = root
            if mount.sub_path:
                source = _sub_path(root, mount.sub_path, mount.name)
            read_only = mount.read_only or _read_only(volumes[mount.name])
            out.append(Bind(source, mount.mount_path, readonly=read_only))
        return tuple(out)

    # -- running ------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="volume-manager", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.resync()
            except Exception:  # one bad pass must not end the loop
                log.exception("volume resync failed")

    def resync(self) -> None:
        """Refresh every set-up volume of the running pods; evict a pod whose emptyDir
        is past its sizeLimit."""
        with self._lock:
            states = list(self._pods.values())
        for state in states:
            with self._taking_down:  # not while the pod's volumes are being taken down
                if self._pods.get(state.pod.key) is not state:
                    continue  # gone meanwhile: its files are not written again
                message = self._resync_pod(state)
            if message is not None and self.evict is not None:  # outside: it takes the lab
                self.evict(state.pod, message)

    def _resync_pod(self, state: PodVolumes) -> str | None:
        """Refresh one pod's volumes; the eviction message if one is past its sizeLimit."""
        for volume in state.pod.template.volumes:
            if volume.name not in state.paths:
                continue
            plugin = self.plugins[volume.kind]
            key = (state.pod.key, volume.name)
            try:
                plugin.resync(state.ctx, volume)
                self._failing.pop(key, None)
            except VolumeNotReady as exc:  # the files stay as they were
                if self._failing.get(key) != exc.message and self.failed is not None:
                    self.failed(state.pod, exc)
                self._failing[key] = exc.message
            except Exception as exc:
                log.warning("resync of %s/%s volume %s: %s", *state.pod.key, volume.name, exc)
            message = self._over_limit(state, volume, plugin)
            if message is not None:
                return message
        return None

    @staticmethod
    def _over_limit(state: PodVolumes, volume: VolumeSpec, plugin: VolumePlugin) -> str | None:
        source = volume.source
        if not isinstance(source, EmptyDirSource) or source.size_limit is None:
            return None
        if source.medium == "Memory" or not isinstance(plugin, EmptyDirPlugin):
            return None  # a tmpfs of sizeLimit bytes cannot grow past it
        used = plugin.usage(state.ctx, volume)
        if used <= source.size_limit:
            return None
        return (
            f'Usage of EmptyDir volume "{volume.name}" exceeds the limit '
            f'"{format_memory(source.size_limit)}". '
        )

    # -- taking down --------------------------------------------------------

    def forget(self, pod: PodPlan) -> None:
        """Stop refreshing the pod's volumes (it is being deleted)."""
        with self._lock:
            self._pods.pop(pod.key, None)
            for volume in pod.template.volumes:
                self._failing.pop((pod.key, volume.name), None)

    def tear_down(self, pod: PodPlan) -> None:
        """The pod's containers have ended: remove its volumes (each plugin its own),
        then its directories."""
        with self._taking_down:
            self.forget(pod)
            ctx = self.context(pod)
            for volume in reversed(pod.template.volumes):
                plugin = self.plugins.get(volume.kind)
                if plugin is None:
                    continue
                try:
                    plugin.teardown(ctx, volume)
                except Exception as exc:  # the rest still go; cleanup sweeps what is left
                    log.warning("teardown of %s/%s volume %s: %s", *pod.key, volume.name, exc)
            for root in (ctx.pod_dir.parent, ctx.node_disk / "pods" / pod.netns):
                if root.exists():
                    mounts.unmount_under(root)
                    mounts.remove_tree(root)

    def adopt(self, pods: Sequence[PodPlan]) -> None:
        """Pods that were running when the supervisor started: their volumes are set up
        (the mounts outlived the old supervisor); refreshed from now on."""
        for pod in pods:
            if pod.template.volumes:
                try:
                    self.set_up(pod)
                except VolumeNotReady as exc:
                    log.warning("adopted pod %s/%s: %s", *pod.key, exc.message)


def _sub_path(root: Path, sub: str, volume: str) -> Path:
    """`root/sub`, resolved (symlinks followed) and inside the volume; made as a
    directory if it does not exist."""
    target = root / sub
    if not os.path.lexists(target):
        target.mkdir(parents=True, exist_ok=True)
        os.chmod(target, 0o777)
    real = Path(os.path.realpath(target))
    base = Path(os.path.realpath(root))
    if real != base and base not in real.parents:
        raise VolumeNotReady(
            f'failed to prepare subPath for volumeMount of volume "{volume}": subpath '
            f"{sub!r} leaves the volume",
            retry=5.0,
        )
    return real


def _read_only(volume: VolumeSpec) -> bool:
    """configMap and secret volumes are read-only in the container, as kubelet makes
    them; a claim may be mounted readOnly."""
    if volume.kind in ("configMap", "secret"):
        return True
    return bool(getattr(volume.source, "read_only", False))


def kubelet_volumes(
    lab: str,
    run_dir: Path,
    store: object,
    events: EventRecorder,
    evict: Callable[[PodPlan, str], None],
) -> VolumeManager:
    """The lab's volume manager with every kind of volume it mounts: emptyDir, hostPath,
    configMap and secret (read from `store`), persistentVolumeClaim (attached by the
    attach/detach controller); a refresh that fails is kubelet's Warning event."""
    plugins = [EmptyDirPlugin(), HostPathPlugin(), ConfigVolumes(store), ClaimVolumes(store)]

    def failed(pod: PodPlan, exc: VolumeNotReady) -> None:
        reason, message = exc.warning
        events.pod(pod.namespace, pod.name, reason, message, type_="Warning")

    return VolumeManager(lab, run_dir, plugins, evict, failed=failed)
