"""Which of a namespace's TCP connections hold a draining pod (node/drain.py)."""

from __future__ import annotations

import ipaddress
import socket
import time

from netlab.node import drain

HEAD = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
HEAD6 = "  sl  local_address                         remote_address                        st\n"


def row(local: str, remote: str, state: str) -> str:
    return f"   0: {local} {remote} {state} 00000000:00000000 00:00000000 00000000     0\n"


POD = "0502F40A"  # 10.244.2.5 in the kernel's order
CLIENT = "0201F40A"  # 10.244.1.2
LISTENING = row("00000000:1F90", "00000000:0000", "0A")  # *:8080


def test_connections_from_outside_to_a_listening_port_count():
    table = HEAD + LISTENING + row(f"{POD}:1F90", f"{CLIENT}:C350", "01")
    assert drain.accepted_connections([table]) == 1
    assert drain.accepted_connections([HEAD + row(f"{POD}:1F90", f"{CLIENT}:C350", "03")]) == 0
    half_open = HEAD + LISTENING + row(f"{POD}:1F90", f"{CLIENT}:C350", "03")
    assert drain.accepted_connections([half_open]) == 1


def test_closing_outbound_and_in_pod_connections_do_not_count():
    table = (
        HEAD
        + LISTENING
        + row(f"{POD}:1F90", f"{CLIENT}:C350", "06")  # TIME_WAIT: answered
        + row(f"{POD}:C351", f"{CLIENT}:0050", "01")  # the pod is the client
        + row("0100007F:1F90", "0100007F:C352", "01")  # its sidecar to its app
        + row(f"{POD}:1F90", f"{POD}:C353", "01")  # the same through its own address
    )
    assert drain.accepted_connections([table]) == 0


def test_ipv6_and_mapped_addresses():
    listening6 = row("00000000000000000000000000000000:1F90", "0" * 32 + ":0000", "0A")
    mapped_pod = "0000000000000000FFFF00000502F40A"
    mapped_client = "0000000000000000FFFF00000201F40A"
    loop6 = "00000000000000000000000001000000"
    table = (
        HEAD6
        + listening6
        + row(f"{mapped_pod}:1F90", f"{mapped_client}:C350", "01")
        + row(f"{loop6}:1F90", f"{loop6}:C351", "01")
    )
    assert drain.accepted_connections([table]) == 1


def test_garbage_lines_are_skipped():
    assert drain.accepted_connections([HEAD + "junk\n" + row("zz:1", "yy:2", "01"), ""]) == 0


def test_addresses_as_this_kernel_writes_them():
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    port = server.getsockname()[1]
    try:
        with open("/proc/self/net/tcp") as f:
            rows = [line.split() for line in f.read().splitlines()[1:]]
        fields = {drain._address(r[1]) for r in rows} | {drain._address(r[2]) for r in rows}
        assert (ipaddress.ip_address("127.0.0.1"), port) in fields
        assert (ipaddress.ip_address("127.0.0.1"), client.getsockname()[1]) in fields
    finally:
        client.close()
        server.close()


def test_wait_drained_returns_after_the_minimum_when_nothing_is_open():
    start = time.monotonic()
    waited = drain.wait_drained([], 0.05, 1.0)
    assert 0.05 <= waited < 0.5 and time.monotonic() - start < 0.5
