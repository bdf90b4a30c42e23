"""A one-pod lab file to check a pod spec's fields at load, and its problems."""

from __future__ import annotations

import pytest

from netlab.errors import SpecError
from netlab.spec import parse_lab

LAB = """\
lab:
  name: t
  racks: [{name: rack1, subnet: 192.168.1.0/24, nodes: [n1]}]
---
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
"""


def pod(pod_fields: str = "", container_fields: str = "") -> str:
    """A lab with one pod: pod_fields and container_fields are YAML lines (unindented)."""
    lines = [f"  {line}" for line in pod_fields.splitlines()]
    lines += ["  containers:", "    - name: app", "      command: [sleep, infinity]"]
    lines += [f"      {line}" for line in container_fields.splitlines()]
    return LAB + "\n".join(lines) + "\n"


def problems(text: str) -> list[str]:
    """Each problem the lab file has, rendered (it must have some)."""
    with pytest.raises(SpecError) as info:
        parse_lab(text, "t.yaml")
    return [p.render() for p in info.value.problems]
