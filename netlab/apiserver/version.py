"""The Kubernetes version the lab API says it serves (`/version`), in one place.

kubectl compares it with its own and warns (`kubectl version`) when the minor versions
are more than one apart, so it follows the kubectl the lab is tested with (1.35): the
shapes the lab serves are Kubernetes 1.35's. `+netlab` is semver build metadata: it
names the server without making the version a pre-release, which would sort before
v1.35.0. kubectl before 1.28 does not compare versions; the Python client does not
read them.
"""

from __future__ import annotations

from netlab import __version__

MAJOR, MINOR, PATCH = 1, 35, 0
GIT_VERSION = f"v{MAJOR}.{MINOR}.{PATCH}+netlab"


def version_info() -> dict:
    """The `version.Info` of `/version`."""
    return {
        "major": str(MAJOR),
        "minor": str(MINOR),
        "emulationMajor": str(MAJOR),
        "emulationMinor": str(MINOR),
        "minCompatibilityMajor": str(MAJOR),
        "minCompatibilityMinor": str(MINOR - 1),
        "gitVersion": GIT_VERSION,
        "gitCommit": __version__,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "python3",
        "compiler": "cpython",
        "platform": "linux/amd64",
    }
