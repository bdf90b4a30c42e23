"""Image references as Docker reads them: `busybox` is `busybox:latest` is
`docker.io/library/busybox:latest`; a reference may carry a tag, a digest or both.

The grammar is distribution/reference's (the one docker, containerd and kubelet
use), so a name that works with `docker pull` means the same image here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from netlab.node.imagetools import ImageError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_MAX = 255

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_REFERENCE = re.compile(rf"^({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?$")
_HEX64 = re.compile(r"^[a-f0-9]{64}$")
_DIGEST_SHA256 = re.compile(r"^sha256:[a-f0-9]{64}$")

FORMAT_HINT = (
    "write it as [REGISTRY[:PORT]/]NAME[:TAG][@sha256:DIGEST] with a lowercase NAME, "
    "e.g. busybox, busybox:1.36, nginx@sha256:<64 hex digits> or registry.example:5000/team/app:v2"
)


class ImageRefError(ImageError):
    """An image reference that is not one."""

    def __init__(self, ref: str, why: str):
        self.ref = ref
        super().__init__(f'invalid image reference "{ref}": {why}; {FORMAT_HINT}')


@dataclass(frozen=True)
class ImageRef:
    """A normalized reference: domain, repository path, tag and digest (either may be
    empty, not both: a reference with neither is given the tag `latest`)."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def repository(self) -> str:
        """`docker.io/library/busybox`: the name without tag or digest."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_repository(self) -> str:
        """The repository as `docker images` shows it: `busybox`, `netlab/python`."""
        if self.domain != DEFAULT_DOMAIN:
            return self.repository
        return self.path.removeprefix(OFFICIAL_PREFIX)

    def __str__(self) -> str:
        return self.repository + self._version()

    def familiar(self) -> str:
        """`busybox:latest`, `netlab/python:latest`, `quay.io/x/y@sha256:...`."""
        return self.familiar_repository + self._version()

    def _version(self) -> str:
        """`:tag`, `@digest`, both or neither."""
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def with_digest(self, digest: str) -> str:
        """kubelet's imageID shape: `docker.io/library/busybox@sha256:...`."""
        return f"{self.repository}@{digest}"


def _split_domain(name: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    if not slash or (
        not any(c in first for c in ".:") and first != "localhost" and first.lower() == first
    ):
        domain, path = DEFAULT_DOMAIN, name
    else:
        domain, path = first, rest
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    return domain, path


def parse(ref: str) -> ImageRef:
    """Parse and normalize an image reference, as `docker pull` reads it."""
    text = ref.strip()
    if not text:
        raise ImageRefError(ref, "it is empty")
    if _HEX64.match(text):
        raise ImageRefError(ref, "a 64-digit hexadecimal string is an image ID, not a name")
    _, at, digest = text.partition("@")
    if at and not _DIGEST_SHA256.match(digest):
        raise ImageRefError(ref, "a digest is sha256: followed by 64 lowercase hex digits")
    match = _REFERENCE.match(text)
    if match is None:
        name = _name_part(text)
        if name != name.lower() and _REFERENCE.match(name.lower() + text[len(name) :]):
            raise ImageRefError(ref, "the repository name must be lowercase")
        raise ImageRefError(ref, "it is not a valid reference")
    name, tag, digest = match.group(1), match.group(2) or "", match.group(3) or ""
    if len(name) > NAME_MAX:
        raise ImageRefError(ref, f"the repository name is longer than {NAME_MAX} characters")
    domain, path = _split_domain(name)
    if not tag and not digest:
        tag = DEFAULT_TAG
    return ImageRef(domain, path, tag, digest)


def _name_part(text: str) -> str:
    """The part of a reference before its tag or digest."""
    name = text.split("@", 1)[0]
    head, slash, last = name.rpartition("/")
    return f"{head}{slash}{last.split(':', 1)[0]}"


def normalize(ref: str) -> str:
    """`busybox` -> `docker.io/library/busybox:latest`."""
    return str(parse(ref))


def default_pull_policy(ref: str) -> str:
    """Kubernetes' default imagePullPolicy: Always for `:latest` or no tag (and no
    digest), else IfNotPresent."""
    parsed = parse(ref)
    return "Always" if parsed.tag == DEFAULT_TAG else "IfNotPresent"


_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def human_size(size: float) -> str:
    """Sizes as `docker images` prints them: decimal units, 3 significant digits
    (`1.09MB`, `512kB`, `77.8MB`)."""
    value = float(size)
    unit = 0
    while value >= 1000 and unit < len(_UNITS) - 1:
        value /= 1000
        unit += 1
    text = f"{value:.3g}"
    if "e" in text:  # 999.9x rounds to 1e+03: the next unit up
        return human_size(round(value) * 1000**unit)
    return f"{text}{_UNITS[unit]}"


def human_duration(seconds: float) -> str:
    """How long ago, as `docker images` says it (go-units' HumanDuration)."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"
