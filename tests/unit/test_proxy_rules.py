"""Service VIP rules, without root: rendering and the transactions between states."""

from __future__ import annotations

import re
from ipaddress import IPv4Address

import pytest

from netlab.plan import proxy
from netlab.plan.proxy import Endpoint, Ruleset, ServiceRule, render, teardown, transaction

T = "ip netlab"


def rule(name="web", eps=(), *, vip="10.96.0.10", proto="TCP", port=80, aff=None, port_name="http"):
    endpoints = tuple(Endpoint(IPv4Address(ip), 8080) for ip in eps)
    return ServiceRule("default", name, port_name, IPv4Address(vip), proto, port, endpoints, aff)


THREE = ("10.244.1.2", "10.244.2.2", "10.244.3.2")


def chains(rs: Ruleset) -> dict[str, tuple[str, ...]]:
    return {c.name: c.rules for c in rs.chains}


def lines(script: str, verb: str) -> list[str]:
    """The object names of the script's lines that start with `verb` (e.g. 'flush chain')."""
    prefix = f"{verb} {T} "
    return [
        line[len(prefix) :].split()[0] for line in script.splitlines() if line.startswith(prefix)
    ]


@pytest.mark.parametrize(
    "eps,expected_chains,service_ips,no_endpoints",
    [
        ((), 0, 0, 1),
        (THREE[:1], 2, 1, 0),
        (THREE, 4, 1, 0),
    ],
)
def test_render_counts(eps, expected_chains, service_ips, no_endpoints):
    rs = render([rule(eps=eps)])
    assert len(rs.chains) == expected_chains
    assert len(rs.service_ips) == service_ips
    assert len(rs.no_endpoints) == no_endpoints
    assert rs.sets == ()


def test_no_endpoints_rejects_and_has_no_chain():
    rs = render([rule(eps=())])
    assert rs.no_endpoints == ("10.96.0.10 . tcp . 80 : goto reject-chain",)
    assert "meta l4proto tcp reject with tcp reset" in proxy.BASE
    assert "reject with icmp type port-unreachable" in proxy.BASE


def test_one_endpoint_goes_straight_to_it():
    r = rule(eps=THREE[:1])
    rs = render([r])
    ep = proxy.endpoint_chain(r, r.endpoints[0])
    svc = proxy.service_chain(r)
    assert chains(rs)[svc] == (f"goto {ep}",)
    assert chains(rs)[ep] == (
        "ip saddr 10.244.1.2 meta mark set meta mark | 0x4000",
        "meta l4proto tcp dnat to 10.244.1.2:8080",
    )
    assert rs.service_ips == (f"10.96.0.10 . tcp . 80 : goto {svc}",)


def test_three_endpoints_strict_round_robin_in_endpoint_order():
    r = rule(eps=reversed(THREE))  # render sorts by (ip, port)
    rs = render([r])
    eps = [proxy.endpoint_chain(r, Endpoint(IPv4Address(ip), 8080)) for ip in THREE]
    arms = ", ".join(f"{i} : goto {ep}" for i, ep in enumerate(eps))
    assert chains(rs)[proxy.service_chain(r)] == (f"numgen inc mod 3 vmap {{ {arms} }}",)
    assert "random" not in str(rs)


def test_affinity_sets_and_lookups_before_the_rotation():
    r = rule(eps=THREE, aff=10800)
    rs = render([r])
    assert len(rs.sets) == 3 and {s.timeout for s in rs.sets} == {10800}
    svc = chains(rs)[proxy.service_chain(r)]
    for ep in r.endpoints:
        aff = proxy.affinity_set(r, ep, 10800)
        epc = proxy.endpoint_chain(r, ep)
        assert f"ip saddr @{aff} goto {epc}" in svc
        assert chains(rs)[epc][1] == f"update @{aff} {{ ip saddr }}"
    assert svc[-1].startswith("numgen inc mod 3 vmap")
    script = transaction(None, rs)
    assert script.count("flags dynamic,timeout; timeout 10800s;") == 3


def test_udp():
    r = rule("dns", eps=THREE[:2], proto="UDP", port=53)
    rs = render([r])
    assert rs.service_ips == (f"10.96.0.10 . udp . 53 : goto {proxy.service_chain(r)}",)
    assert chains(rs)[proxy.endpoint_chain(r, r.endpoints[0])][-1] == (
        "meta l4proto udp dnat to 10.244.1.2:8080"
    )
    assert render([rule("dns", proto="UDP", port=53)]).no_endpoints == (
        "10.96.0.10 . udp . 53 : goto reject-chain",
    )


@pytest.mark.parametrize(
    "bad",
    [
        [rule(proto="SCTP")],
        [rule(), rule("other")],  # one VIP:port twice
        [rule(eps=THREE, aff=0)],
    ],
)
def test_render_refuses(bad):
    with pytest.raises(ValueError):
        render(bad)


def test_names_stable_distinct_and_short():
    a = rule(eps=THREE)
    moved = rule(eps=THREE[:1], vip="10.96.5.5", port=8000)  # same Service port elsewhere
    assert proxy.service_chain(a) == proxy.service_chain(moved)
    assert proxy.endpoint_chain(a, a.endpoints[0]) == proxy.endpoint_chain(moved, a.endpoints[0])
    others = [rule(port_name="metrics"), rule(proto="UDP"), rule("api"), rule(port_name=None)]
    names = {proxy.service_chain(r) for r in [a, *others]}
    assert len(names) == 5
    rs = render([a, rule("api", THREE, vip="10.96.0.11", aff=60)])
    for name in [c.name for c in rs.chains] + [s.name for s in rs.sets]:
        assert re.fullmatch(r"(svc|ep|aff)-[0-9a-f]{16}", name)
        assert len(name) <= proxy.NAME_LIMIT
    assert all(len(c.comment) <= proxy.COMMENT_LIMIT and '"' not in c.comment for c in rs.chains)


def test_first_transaction_makes_the_table_from_scratch():
    script = transaction(None, render([rule(eps=THREE)]))
    assert script.startswith(f"add table {T}\ndelete table {T}\ntable {T} {{")
    assert "type nat hook prerouting priority dstnat" in script
    assert "type filter hook prerouting priority dstnat - 10" in script
    assert "masquerade" in script
    assert transaction(None, Ruleset()).startswith(f"add table {T}")


def test_unchanged_state_is_an_empty_transaction():
    rs = render([rule(eps=THREE, aff=60), rule("dns", proto="UDP", vip="10.96.0.12")])
    again = render([rule(eps=THREE, aff=60), rule("dns", proto="UDP", vip="10.96.0.12")])
    assert transaction(rs, again) == ""
    assert transaction(Ruleset(), Ruleset()) == ""


def test_changed_endpoints_flush_only_that_service():
    web, api = rule(eps=THREE), rule("api", THREE, vip="10.96.0.11")
    before = render([web, api])
    web2 = rule(eps=THREE[:2])
    script = transaction(before, render([web2, api]))
    gone = proxy.endpoint_chain(web, web.endpoints[2])
    assert lines(script, "flush chain") == [proxy.service_chain(web), gone]
    assert lines(script, "add chain") == []
    assert lines(script, "delete chain") == [gone]
    assert proxy.service_chain(api) not in script
    # the rules of the flushed service chain come back after the flush, before the delete
    text = script.splitlines()
    add_svc = text.index(
        f"add rule {T} {proxy.service_chain(web)} "
        + chains(render([web2]))[proxy.service_chain(web)][0]
    )
    assert text.index(f"flush chain {T} {proxy.service_chain(web)}") < add_svc
    assert add_svc < text.index(f"delete chain {T} {gone}")
    # the map did not change: same VIP, same service chain
    assert "service-ips" not in script


def test_removed_service_deleted_after_the_map_refill():
    web, api = rule(eps=THREE, aff=60), rule("api", THREE[:1], vip="10.96.0.11")
    before = render([web, api])
    script = transaction(before, render([api]))
    text = script.splitlines()
    refill = text.index(f"flush map {T} service-ips")
    assert text[refill + 1] == (
        f"add element {T} service-ips {{ 10.96.0.11 . tcp . 80 : goto {proxy.service_chain(api)} }}"
    )
    deleted = lines(script, "delete chain")
    svc = proxy.service_chain(web)
    assert deleted[0] == svc and len(deleted) == 4
    first_delete = text.index(f"delete chain {T} {svc}")
    assert refill < first_delete
    assert all(text.index(f"flush chain {T} {n}") < refill for n in deleted)
    assert len(lines(script, "delete set")) == 3
    assert all(text.index(line) > first_delete for line in text if line.startswith("delete set"))


def test_last_service_removed_empties_the_map():
    script = transaction(render([rule(eps=THREE)]), render([]))
    assert f"flush map {T} service-ips" in script
    assert "add element" not in script


def test_endpoints_appear_moves_from_reject_to_service():
    script = transaction(render([rule()]), render([rule(eps=THREE[:1])]))
    assert f"flush map {T} no-endpoint-services" in script
    assert "add element ip netlab no-endpoint-services" not in script
    assert f"add element {T} service-ips" in script
    assert len(lines(script, "add chain")) == 2


def test_affinity_sets_survive_while_their_endpoint_exists():
    before = render([rule(eps=THREE, aff=60)])
    after = render([rule(eps=THREE[:2], aff=60)])
    script = transaction(before, after)
    assert len(lines(script, "delete set")) == 1
    assert "add set" not in script
    # a new timeout is a new set: the kernel cannot change a set's timeout
    script = transaction(after, render([rule(eps=THREE[:2], aff=30)]))
    assert len(lines(script, "add set")) == 2 and len(lines(script, "delete set")) == 2


def test_new_objects_exist_before_rules_use_them():
    script = transaction(render([]), render([rule(eps=THREE, aff=60)]))
    text = script.splitlines()
    first_rule = next(i for i, line in enumerate(text) if line.startswith("add rule"))
    assert all(
        i < first_rule for i, line in enumerate(text) if line.startswith(("add set", "add chain"))
    )
    rules = [line.split()[4] for line in text if line.startswith("add rule")]
    assert rules.index(next(r for r in rules if r.startswith("svc-"))) > max(
        i for i, r in enumerate(rules) if r.startswith("ep-")
    )


def test_teardown_is_idempotent():
    assert teardown() == f"add table {T}\ndelete table {T}\n"
