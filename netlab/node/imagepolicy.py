"""imagePullPolicy as kubelet applies it, and the images that are the host's root."""

from __future__ import annotations

from netlab.node.imageref import default_pull_policy, parse
from netlab.node.imagetools import ImageError

PULL_ENV = "NETLAB_IMAGE_PULL"
POLICIES = ("Always", "IfNotPresent", "Never")
HOST_IMAGE_ID = "netlab/host"
# the host image by name: `host`, and netlab's own system workloads
HOST_IMAGES = frozenset(
    {"host", "netlab/labdns", "netlab/collector", "netlab/activator", "netlab/proxy"}
)

# what resolve does, from pull_action
USE, BUILD, PULL, NEVER, OFF = "use", "build", "pull", "never", "off"


def is_host_image(image: str | None) -> bool:
    """True for no image, `host`, and the system workloads' names: the host image."""
    if not image or not image.strip():
        return True
    try:
        ref = parse(image)
    except ImageError:
        return False
    return ref.familiar_repository in HOST_IMAGES and ref.tag == "latest" and not ref.digest


def check_policy(policy: str | None, ref: str) -> str:
    """The pull policy to use: as given, or Kubernetes' default for this reference."""
    if not policy:
        return default_pull_policy(ref)
    if policy not in POLICIES:
        raise ImageError(f'imagePullPolicy "{policy}" is not one of {", ".join(POLICIES)}')
    return policy


def pull_action(policy: str, present: bool, builtin: bool, pull_enabled: bool) -> str:
    """What resolve does for an image: USE the local copy, BUILD a built-in, PULL it,
    or fail: NEVER (ErrImageNeverPull) or OFF (ErrImagePull, pulling is off).

    Built-ins are made here, never pulled, whatever the policy. Under Always a local
    image is used when pulling is off (kubelet would ask the registry again)."""
    if builtin:
        return USE if present else BUILD
    if policy == "Never":
        return USE if present else NEVER
    if policy == "IfNotPresent" and present:
        return USE
    if pull_enabled:
        return PULL
    return USE if present else OFF


def pull_off_message(image: str) -> str:
    """kubelet's ErrImagePull message where pulling is off, naming the fixes."""
    return (
        f'Failed to pull image "{image}": this machine pulls no images (netlab reaches no '
        f"registry unless {PULL_ENV}=1); import it instead: where the image is, "
        f"`docker save {image} -o image.tar` (or `podman save`), then `netlab image import "
        f"image.tar` here"
    )
