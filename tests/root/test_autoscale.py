"""The autoscaler on a real meshed lab: bounded load raises replicas, no load brings
them back to minScale, and a Deployment at zero is woken by a request the activator
holds."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from netlab.lab import Lab
from netlab.spec.load import parse_lab
from tests.root.conftest import wait_for

pytestmark = pytest.mark.root

SLOW = (
    "import http.server, os, time\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        time.sleep(0.25)\n"
    "        body = os.environ['HOSTNAME'].encode() + b'\\n'\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    "http.server.ThreadingHTTPServer(('', 8080), H).serve_forever()\n"
)


def deployment(name: str, annotations: dict[str, str], replicas: int = 1) -> str:
    return textwrap.dedent(
        f"""
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: {name}
          annotations: {json.dumps(annotations)}
        spec:
          replicas: {replicas}
          selector: {{matchLabels: {{app: {name}}}}}
          template:
            metadata: {{labels: {{app: {name}, netlab.io/inject: "true"}}}}
            spec:
              containers:
                - name: {name}
                  command: {json.dumps([sys.executable, "-c", SLOW])}
                  ports: [{{name: http, containerPort: 8080}}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {{name: {name}}}
        spec:
          selector: {{app: {name}}}
          ports: [{{name: http, port: 80, targetPort: http}}]
        """
    )


LAB = textwrap.dedent(
    """
    lab:
      name: tauto
      racks:
        - {name: rack1, subnet: 192.168.1.0/24, nodes: [n1, n2]}
        - {name: rack2, subnet: 192.168.2.0/24, nodes: [n3, n4]}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: client}
    spec:
      nodeName: n1
      containers: [{name: client, command: [sleep, infinity]}]
    """
)
K = "autoscaling.knative.dev/"
LOAD = textwrap.dedent(
    """
    import sys, threading, time, urllib.request
    url, threads, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    end = time.monotonic() + seconds
    def worker():
        while time.monotonic() < end:
            try:
                urllib.request.urlopen(url, timeout=5).read()
            except Exception:
                pass
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    [t.start() for t in pool]; [t.join() for t in pool]
    """
)


@pytest.fixture(scope="module")
def alab():
    text = LAB + deployment(
        "busy", {K + "minScale": "1", K + "maxScale": "4", K + "target": "1", K + "window": "2s"}
    )
    text += deployment("sleepy", {K + "minScale": "0", K + "maxScale": "2", K + "window": "2s"})
    with Lab(parse_lab(text)) as lab:
        lab.settle()
        yield lab


def replicas(lab: Lab, name: str) -> int:
    return lab.store.get("deployments", "default", name)["spec"]["replicas"]


def test_bounded_load_raises_replicas_and_quiet_brings_them_back(alab):
    vip = alab.service_vip("busy")
    load = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            alab.pod("client").netns,
            "python3",
            "-c",
            LOAD,
            f"http://{vip}/",
            "8",
            "5",
        ]
    )
    try:
        assert wait_for(lambda: replicas(alab, "busy") >= 3, 6.0, 0.1), replicas(alab, "busy")
        assert wait_for(lambda: len(alab.ready_pods("busy")) >= 3, 10.0, 0.1)
        assert replicas(alab, "busy") <= 4  # maxScale
    finally:
        load.wait(15)
    assert wait_for(lambda: replicas(alab, "busy") == 1, 12.0, 0.1), replicas(alab, "busy")
    assert wait_for(lambda: len(alab.ready_pods("busy")) == 1, 10.0, 0.1)


def test_no_load_scales_to_zero_and_a_request_wakes_it(alab):
    assert wait_for(
        lambda: replicas(alab, "sleepy") == 0 and len(alab.ready_pods("sleepy")) == 0, 15.0, 0.1
    )
    endpoints = alab.store.get("endpoints", "default", "sleepy")
    assert endpoints["subsets"][0]["addresses"][0]["targetRef"]["name"].startswith(
        "netlab-activator-"
    )
    started = time.monotonic()
    answer = alab.exec(
        "client", ["curl", "-s", "--max-time", "20", f"http://{alab.service_vip('sleepy')}/"]
    )
    cold = time.monotonic() - started
    print(f"\ncold start through the activator: {cold:.2f} s")
    assert answer.returncode == 0 and answer.stdout.startswith("sleepy-"), answer
    assert replicas(alab, "sleepy") == 1
    assert wait_for(
        lambda: (
            not alab.store.get("endpoints", "default", "sleepy")["subsets"][0]["addresses"][0][
                "targetRef"
            ]["name"].startswith("netlab-activator-")
        ),
        5.0,
    )


def test_autoscaling_annotations_are_checked(alab):
    bad = deployment("odd", {K + "minScale": "3", K + "maxScale": "2"})
    with pytest.raises(Exception, match="below minScale"):
        alab.apply_text(bad)
    unmeshed = deployment("plain", {K + "minScale": "1"}).replace(
        'netlab.io/inject: "true"', "x: y"
    )
    with pytest.raises(Exception, match="mesh it"):
        alab.apply_text(unmeshed)
