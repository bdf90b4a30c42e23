"""A topology script: three racks, two routers in a chain, run in-process.

    sudo .venv/bin/python topologies/leaf_spine.py

rack1 and rack2 hang off router r12, rack2 and rack3 off router r23, so
traffic from rack1 to rack3 crosses two routers; the pods still see one
flat network through the VXLAN overlay.
"""

from netlab.lab import Lab
from netlab.spec import LabBuilder


def build():
    b = LabBuilder("chain")
    for index in (1, 2, 3):
        b.add_rack(f"rack{index}", f"192.168.{index}.0/24")
        b.add_node(f"n{index}", rack=f"rack{index}")
    b.add_router("r12", racks=["rack1", "rack2"])
    b.add_router("r23", racks=["rack2", "rack3"])
    b.add_pod("a", command=["sleep", "infinity"], node_name="n1")
    b.add_pod("b", command=["sleep", "infinity"], node_name="n3")
    return b.build()


def main() -> None:
    with Lab(build()) as lab:
        a, b = lab.pod("a"), lab.pod("b")
        print(lab.node_exec("n1", ["ip", "route"]).stdout)
        print(lab.exec("a", ["ping", "-c", "2", str(b.address.ip)]).stdout)
        print(
            f"{a.name} {a.address.ip} on n1 reached {b.name} {b.address.ip} on n3 across two routers"
        )


if __name__ == "__main__":
    main()
