"""/livez, /readyz, /healthz as kube-apiserver answers them; the reviews `kubectl auth`
posts (whoami, can-i), answered from the caller's identity and never stored."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from netlab.apiserver import protobuf
from netlab.apiserver.app import make_app
from netlab.apiserver.health import report
from netlab.apiserver.reviews import answer
from netlab.errors import ApiError
from netlab.resources import DEFAULT_TABLE
from netlab.store import Store


@pytest.mark.parametrize(
    ("results", "excluded", "verbose", "expected"),
    [
        ([("ping", True)], set(), False, (200, "ok")),
        ([("ping", True)], set(), True, (200, "[+]ping ok\nlivez check passed\n")),
        (
            [("ping", True), ("shutdown", False)],
            set(),
            False,  # a failure is always told in full
            (500, "[+]ping ok\n[-]shutdown failed: reason withheld\nlivez check failed\n"),
        ),
        (
            [("ping", True), ("shutdown", False)],
            {"shutdown"},
            True,
            (200, "[+]ping ok\n[+]shutdown excluded: ok\nlivez check passed\n"),
        ),
        (
            [("ping", True)],
            {"nosuch"},
            True,
            (
                200,
                "[+]ping ok\nwarn: some health checks cannot be excluded: no matches for "
                '"nosuch"\nlivez check passed\n',
            ),
        ),
    ],
)
def test_health_report(results, excluded, verbose, expected) -> None:
    assert report("livez", results, excluded, verbose) == expected


class Lab:
    def __init__(self) -> None:
        self.built = False

    def ready(self) -> bool:
        return self.built

    async def shutdown(self, leave: bool = False) -> None:
        pass


async def _health() -> dict[str, tuple[int, str]]:
    lab = Lab()
    seen: dict[str, tuple[int, str]] = {}
    async with TestClient(TestServer(make_app(Store(), lab))) as client:

        async def get(path: str, key: str) -> None:
            response = await client.get(path)
            seen[key] = (response.status, await response.text())

        await get("/readyz", "building")
        await get("/healthz", "healthz building")
        await get("/livez?verbose", "livez building")
        await get("/readyz/poststarthook/netlab-lab-built", "one check building")
        lab.built = True
        await get("/readyz?verbose", "built")
        await get("/readyz/poststarthook/netlab-lab-built", "one check built")
    return seen


def test_readyz_fails_until_the_lab_is_built_while_livez_passes() -> None:
    seen = asyncio.run(_health())
    assert seen["building"] == (
        500,
        "[+]ping ok\n[+]shutdown ok\n[-]poststarthook/netlab-lab-built failed: reason withheld\n"
        "readyz check failed\n",
    )
    assert seen["healthz building"] == (200, "ok")  # netlab up waits on it
    assert seen["livez building"] == (200, "[+]ping ok\nlivez check passed\n")
    assert seen["one check building"][0] == 500
    assert seen["built"] == (
        200,
        "[+]ping ok\n[+]shutdown ok\n[+]poststarthook/netlab-lab-built ok\nreadyz check passed\n",
    )
    assert seen["one check built"] == (200, "ok")


ADMIN = {"username": "netlab-admin", "groups": ["system:masters", "system:authenticated"]}
STRANGER = {"username": "someone", "groups": ["system:authenticated"]}
SSAR = DEFAULT_TABLE.resolve("selfsubjectaccessreviews")
SSRR = DEFAULT_TABLE.resolve("selfsubjectrulesreviews")
SSR = DEFAULT_TABLE.resolve("selfsubjectreviews")
CAN_I = {
    "spec": {"resourceAttributes": {"namespace": "default", "verb": "get", "resource": "pods"}}
}


@pytest.mark.parametrize(("user", "allowed"), [(ADMIN, True), (STRANGER, False)])
def test_access_follows_the_callers_groups(user, allowed) -> None:
    review = answer(SSAR, CAN_I, user)
    assert review["kind"] == "SelfSubjectAccessReview"
    assert review["apiVersion"] == "authorization.k8s.io/v1"
    assert review["spec"] == CAN_I["spec"]
    assert review["status"]["allowed"] is allowed
    rules = answer(SSRR, {"spec": {"namespace": "default"}}, user)["status"]
    assert bool(rules["resourceRules"]) is allowed


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, 'spec.resourceAttributes: Invalid value: "null": exactly one of'),
        (
            {"resourceAttributes": {"verb": "get"}, "nonResourceAttributes": {"path": "/"}},
            "spec.nonResourceAttributes: Invalid value",
        ),
        ("text", "spec: Invalid value"),
    ],
)
def test_an_access_review_asks_exactly_one_thing(spec, message) -> None:
    with pytest.raises(ApiError) as refused:
        answer(SSAR, {"spec": spec}, ADMIN)
    assert refused.value.status == 422 and message in str(refused.value)
    assert str(refused.value).startswith(
        'SelfSubjectAccessReview.authorization.k8s.io "" is invalid'
    )


def test_whoami_is_the_caller() -> None:
    review = answer(SSR, {}, ADMIN)
    assert review["status"] == {"userInfo": ADMIN}
    assert review["metadata"]["creationTimestamp"]


def _protobuf_review(kind: str, api_version: str, raw: bytes) -> bytes:
    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2, len(payload)]) + payload

    type_meta = field(1, api_version.encode()) + field(2, kind.encode())
    return protobuf.MAGIC + field(1, type_meta) + field(2, raw)


async def _post_reviews() -> list[tuple[int, dict]]:
    out = []
    async with TestClient(TestServer(make_app(Store(), Lab()))) as client:
        posts = [
            ("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "application/json",
             json.dumps({"kind": "SelfSubjectAccessReview", **CAN_I}).encode()),
            # as kubectl 1.35 sends it: protobuf, spec.resourceAttributes{verb: get, resource:
            # pods}, status{allowed: false}
            ("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", protobuf.MEDIA_TYPE,
             _protobuf_review("SelfSubjectAccessReview", "authorization.k8s.io/v1",
                              b"\x12\x0d\x0a\x0b\x12\x03get\x2a\x04pods\x1a\x02\x08\x00")),
            ("/apis/authentication.k8s.io/v1/selfsubjectreviews", protobuf.MEDIA_TYPE,
             _protobuf_review("SelfSubjectReview", "authentication.k8s.io/v1",
                              b"\x12\x06\x0a\x04\x0a\x00\x12\x00")),
            ("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "application/json", b"{}"),
        ]  # fmt: skip
        for path, content_type, body in posts:
            response = await client.post(path, data=body, headers={"Content-Type": content_type})
            out.append((response.status, await response.json()))
        listed = await client.get("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
        out.append((listed.status, {}))
    return out


def test_reviews_are_answered_over_http_in_json_and_protobuf() -> None:
    (json_ok, proto_ok, whoami, empty, listed) = asyncio.run(_post_reviews())
    assert json_ok[0] == 201 and json_ok[1]["status"]["allowed"] is True
    assert proto_ok[0] == 201 and proto_ok[1]["status"]["allowed"] is True
    assert proto_ok[1]["spec"] == {"resourceAttributes": {"verb": "get", "resource": "pods"}}
    # the test app has no TLS: the caller came in over the unix socket, as root
    assert whoami[0] == 201 and whoami[1]["status"]["userInfo"]["username"] == "root"
    assert empty[0] == 422 and empty[1]["reason"] == "Invalid"
    assert listed[0] == 405  # answered, never stored: nothing to list
