"""A big lab: 8 racks x 8 nodes x 8 pods comes up, every pod reachable."""

import pytest

from netlab.lab import Lab
from netlab.spec import load_lab

pytestmark = pytest.mark.root


def test_512_pods_come_up_and_answer():
    with Lab(load_lab("topologies/eight-racks.yaml")) as lab:
        pods = [p for p in lab.pod_list() if p.namespace == "default"]
        assert len(pods) == 512  # and the lab's DNS pod in kube-system
        first, last = pods[0], pods[-1]
        result = lab.exec(first.name, ["ping", "-c", "1", "-W", "2", str(last.address.ip)])
        assert result.returncode == 0, result.stdout
