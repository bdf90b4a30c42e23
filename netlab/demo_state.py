"""`make demo`'s part "state that survives": two containers sharing an emptyDir, a
ConfigMap edited and the file changing in the pod, a StatefulSet's db-0 keeping a
counter on its disk through a node failure (it comes back on the other rack with the
counter intact), and the Multi-Attach refusal of a disk attached to another node."""

from __future__ import annotations

import time

from netlab.demo import _netlab, _wait, console, show, step
from netlab.lab import Lab

NOTES = """
apiVersion: v1
kind: ConfigMap
metadata: {name: greeting}
data: {message: hello}
---
apiVersion: v1
kind: Pod
metadata: {name: notes}
spec:
  volumes:
  - {name: shared, emptyDir: {}}
  - {name: greeting, configMap: {name: greeting}}
  containers:
  - name: writer
    image: busybox
    command: [sh, -c, "while true; do date +%T >> /shared/log; sleep 1; done"]
    volumeMounts: [{name: shared, mountPath: /shared}]
  - name: reader
    image: busybox
    command: [sleep, "3600"]
    volumeMounts:
    - {name: shared, mountPath: /from-writer, readOnly: true}
    - {name: greeting, mountPath: /etc/greeting}
"""

# each start of db-0 adds one to the counter on its disk
DB = """
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {clusterIP: None, selector: {app: db}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 1
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - name: db
        image: busybox
        command: [sh, -c, "n=$(cat /data/count 2>/dev/null || echo 0); echo $((n+1)) > /data/count; sync; exec sleep 3600"]
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 64Mi}}}
"""


def _running_on(lab: Lab, pod: str) -> str | None:
    found = lab.store.list("pods", "default", field_selector=f"metadata.name={pod}")[0]
    if not found or found[0]["metadata"].get("deletionTimestamp"):
        return None
    states = found[0]["status"].get("containerStatuses") or []
    if states and all("running" in s["state"] for s in states):
        return found[0]["spec"]["nodeName"]
    return None


def show_state(lab: Lab) -> None:
    rack_of = {n.name: n.rack for n in lab.node_list()}
    step("state that survives: two containers of one pod share an emptyDir")
    lab.apply_text(NOTES)
    _wait(lambda: _running_on(lab, "notes") is not None, 20)
    _wait(lambda: lab.exec("notes", ["test", "-s", "/from-writer/log"], "default", "reader")
          .returncode == 0, 5)  # fmt: skip
    console.print("the writer appends the time to /shared/log; the reader sees it at /from-writer:")
    show(lab.exec("notes", ["tail", "-n", "2", "/from-writer/log"], container="reader"))

    step("a ConfigMap edited: kubelet's sync changes the file in the running pod")
    show(lab.exec("notes", ["cat", "/etc/greeting/message"], container="reader"))
    cm = lab.store.get("configmaps", "default", "greeting")
    cm["data"]["message"] = "hello again"
    lab.store.update(cm)
    took = _wait(
        lambda: (
            lab.exec("notes", ["cat", "/etc/greeting/message"], container="reader").stdout
            == "hello again"
        ),
        10,
    )
    show(lab.exec("notes", ["cat", "/etc/greeting/message"], container="reader"))
    console.print(f"(changed in the pod {took:.2f} s after the edit; no restart)")
    lab.delete_pod("notes")

    step("a StatefulSet: db-0 keeps a counter on its own disk (a PersistentVolumeClaim)")
    lab.apply_text(DB)
    _wait(lambda: _running_on(lab, "db-0") is not None, 20)
    node = _running_on(lab, "db-0")
    if node is None:
        console.print("db-0 did not start; skipping the rest of this part")
        return
    show(_netlab(lab.spec.name, "get", "pvc,pv"))
    console.print(f"db-0 runs on {node} ({rack_of[node]}); its counter:")
    _wait(lambda: lab.exec("db-0", ["cat", "/data/count"]).stdout.strip() != "", 5)
    show(lab.exec("db-0", ["cat", "/data/count"]))

    others = [n.name for n in lab.node_list() if n.name != node]
    other = next((n for n in others if rack_of[n] != rack_of[node]), others[0])
    step(f"the disk is attached to {node}: a pod on {other} using the same claim must wait")
    lab.apply_text(
        f"""
apiVersion: v1
kind: Pod
metadata: {{name: intruder}}
spec:
  nodeName: {other}
  volumes: [{{name: data, persistentVolumeClaim: {{claimName: data-db-0}}}}]
  containers:
  - {{name: app, image: busybox, command: [sleep, "3600"], volumeMounts: [{{name: data, mountPath: /data}}]}}
"""
    )

    def refused() -> list[dict]:
        return [
            e
            for e in lab.store.list("events", "default")[0]
            if e["involvedObject"]["name"] == "intruder" and e["reason"] == "FailedAttachVolume"
        ]

    _wait(lambda: bool(refused()), 10)
    for event in refused()[:1]:
        console.print(f"Warning FailedAttachVolume (attachdetach-controller): {event['message']}")
    lab.delete_pod("intruder")

    siblings = [n for n in others if rack_of[n] == rack_of[node]]
    for sibling in siblings:  # so db-0 must move to the other rack
        lab.cordon(sibling)
    grace = lab.spec.control_plane.node_grace
    step(
        f"`netlab node fail {node}`: after the grace period ({grace:g} s) db-0 moves, its disk with it"
    )
    failed = time.monotonic()
    lab.fail_node(node)
    try:
        _wait(lambda: _running_on(lab, "db-0") not in (None, node), 30)
        landed = _running_on(lab, "db-0")
        _wait(lambda: lab.exec("db-0", ["cat", "/data/count"]).stdout.strip() not in ("", "1"), 5)
        took = time.monotonic() - failed
        if landed is None:
            console.print("db-0 has not come back yet")
        else:
            console.print(
                f"db-0 runs on {landed} ({rack_of[landed]}) {took:.2f} s after the failure; "
                "its counter (one more start, nothing lost):"
            )
            show(lab.exec("db-0", ["cat", "/data/count"]))
            show(_netlab(lab.spec.name, "get", "volumeattachments"))
            console.print(
                "Kubernetes would wait 40 s for NotReady, then 6 minutes before it "
                "force-detaches a disk from a node it cannot reach"
            )
    finally:
        lab.recover_node(node)
        for sibling in siblings:
            lab.cordon(sibling, False)
    lab.store.delete("statefulsets", "default", "db")
    _wait(lambda: _running_on(lab, "db-0") is None, 20)
