"""A sidecar's compiled view of the mesh: what the data path reads per request.

`mesh.compile.compile_table` turns the lab's objects (Services, Endpoints,
Pods, VirtualServices, DestinationRules, RateLimitPolicies) into one
immutable `RouteTable` for one pod; the sidecar swaps the whole table when a
watch brings a change, so a request in flight keeps the table it started
with. Everything here is plain frozen data plus the per-request matching; the
stateful parts (round-robin counters, token buckets) live outside the table
(`mesh.balance`, `mesh.ratelimit`) and survive a swap.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

HTTP, TCP = "http", "tcp"
ROUND_ROBIN, RANDOM, LEAST_REQUEST = "ROUND_ROBIN", "RANDOM", "LEAST_REQUEST"
RETRY_ON = ("connect-failure", "5xx", "reset", "gateway-error", "retriable-status-codes")
# Istio's retry policy for an HTTP route that sets none (and the conditions of one
# whose `retryOn` is not given): 2 retries on these, a status code is a word of its own
ISTIO_RETRY_ON = frozenset(
    (
        "connect-failure",
        "refused-stream",
        "unavailable",
        "cancelled",
        "retriable-status-codes",
        "503",
    )
)

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Workload:
    """Who a pod is, for metrics, spans and rate-limit scopes."""

    namespace: str
    pod: str
    ip: str
    node: str = ""
    rack: str = ""
    app: str = ""  # the pod's `app` label, else its owner's name, else the pod's name
    version: str = ""  # the pod's `version` label ("unknown" in metrics when empty)
    services: tuple[str, ...] = ()  # names of the Services (same namespace) that select it
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class Endpoint:
    ip: str
    port: int  # the resolved target port
    pod: str = ""  # "namespace/name"
    node: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)

    @property
    def address(self) -> tuple[str, int]:
        return (self.ip, self.port)


@dataclass(frozen=True, slots=True)
class Destination:
    """One weighted target of a route: a Service (optionally one subset of it) on one port."""

    namespace: str
    service: str
    port: int  # the Service port
    endpoints: tuple[Endpoint, ...]  # ready endpoints of the subset, stable order
    weight: int = 100
    subset: str | None = None
    lb: str = ROUND_ROBIN

    @property
    def host(self) -> str:
        """The short FQDN used in metrics and spans: `reviews.default.svc`."""
        return f"{self.service}.{self.namespace}.svc"

    @property
    def key(self) -> str:
        """Identity of this endpoint set for the balancer's state."""
        return f"{self.namespace}/{self.service}|{self.subset or ''}|{self.port}"


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    name: str  # lower case
    kind: str  # "exact" | "prefix" | "regex"
    value: str
    pattern: re.Pattern[str] | None = None  # compiled for "regex" (full match, as Envoy/RE2)

    def matches(self, headers: Mapping[str, str]) -> bool:
        got = headers.get(self.name)
        if got is None:
            return False
        if self.kind == "exact":
            return got == self.value
        if self.kind == "prefix":
            return got.startswith(self.value)
        return self.pattern is not None and self.pattern.fullmatch(got) is not None


@dataclass(frozen=True, slots=True)
class UriMatch:
    kind: str  # "exact" | "prefix" | "regex"
    value: str
    pattern: re.Pattern[str] | None = None

    def matches(self, path: str) -> bool:
        path = path.split("?", 1)[0]
        if self.kind == "exact":
            return path == self.value
        if self.kind == "prefix":
            return path.startswith(self.value)
        return self.pattern is not None and self.pattern.fullmatch(path) is not None


@dataclass(frozen=True, slots=True)
class Match:
    """One `http[].match[]` entry: every condition must hold (an empty Match holds always)."""

    uri: UriMatch | None = None
    headers: tuple[HeaderMatch, ...] = ()
    method: str | None = None  # exact method, upper case
    method_pattern: re.Pattern[str] | None = None  # a prefix or regex method match, full match

    def matches(self, method: str, path: str, headers: Mapping[str, str]) -> bool:
        if self.method is not None and method != self.method:
            return False
        if self.method_pattern is not None and self.method_pattern.fullmatch(method) is None:
            return False
        if self.uri is not None and not self.uri.matches(path):
            return False
        return all(h.matches(headers) for h in self.headers)


@dataclass(frozen=True, slots=True)
class Retry:
    attempts: int  # retries after the first try (Istio's `attempts`)
    per_try_timeout: float | None = None  # seconds
    retry_on: frozenset[str] = ISTIO_RETRY_ON  # Envoy's conditions; digits are status codes


DEFAULT_RETRY = Retry(2)  # Istio's, on every HTTP route whose VirtualService sets no retries


@dataclass(frozen=True, slots=True)
class Fault:
    delay: float | None = None  # seconds
    delay_fraction: float = 0.0  # 0..1
    abort_status: int | None = None
    abort_fraction: float = 0.0  # 0..1


@dataclass(frozen=True, slots=True)
class Route:
    """One `http[]` entry (or the default route of a Service without a VirtualService)."""

    name: str  # http[].name, else "<vs>-<index>", or "default"
    destinations: tuple[Destination, ...]  # weights sum to 100 (or one destination)
    matches: tuple[Match, ...] = ()  # any of them; empty = every request
    timeout: float | None = None  # seconds; None = no timeout (Istio's default)
    retries: Retry | None = None  # None = no retries (compile fills in DEFAULT_RETRY as Istio)
    fault: Fault | None = None
    virtual_service: str | None = None  # "namespace/name" it came from

    def matches_request(self, method: str, path: str, headers: Mapping[str, str]) -> bool:
        return not self.matches or any(m.matches(method, path, headers) for m in self.matches)


@dataclass(frozen=True, slots=True)
class ServicePort:
    """A Service port as a client's sidecar sees it: how to route what is sent to it."""

    namespace: str
    service: str
    port: int
    protocol: str  # HTTP or TCP (from the port's name/appProtocol: http*, tcp*; else HTTP)
    routes: tuple[Route, ...]  # first match wins; the last is a catch-all when no VS covers all

    @property
    def host(self) -> str:
        return f"{self.service}.{self.namespace}.svc"

    def route(self, method: str, path: str, headers: Mapping[str, str]) -> Route | None:
        for route in self.routes:
            if route.matches_request(method, path, headers):
                return route
        return None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A RateLimitPolicy as one token bucket per sidecar (Envoy's local rate limit)."""

    name: str  # "namespace/name" of the policy
    max_tokens: int
    tokens_per_fill: int
    fill_interval: float  # seconds
    route: str | None = None  # only requests matching this route name of the destination's VS
    source: str | None = None  # only requests from pods of this Service ("namespace/name")

    @property
    def key(self) -> tuple:
        """A bucket keeps its tokens across table swaps while this stays the same."""
        return (self.name, self.max_tokens, self.tokens_per_fill, self.fill_interval)


@dataclass(frozen=True, slots=True)
class InboundPort:
    """A port of this pod's app that Services send traffic to."""

    port: int  # the container port (target port)
    protocol: str  # HTTP or TCP
    service: str | None = None  # "namespace/name" of the (first) Service it serves
    rate_limits: tuple[RateLimit, ...] = ()
    routes: tuple[Route, ...] = ()  # the Service's VirtualService routes, to name a request's route


@dataclass(frozen=True)
class RouteTable:
    """Everything one sidecar needs, at one store revision."""

    revision: int
    me: Workload
    by_address: Mapping[tuple[str, int], ServicePort] = field(default_factory=dict)
    """(ClusterIP, port) and (endpoint pod IP, target port) -> the Service port."""
    inbound: Mapping[int, InboundPort] = field(default_factory=dict)
    workloads: Mapping[str, Workload] = field(default_factory=dict)  # pod IP -> Workload
    collector: tuple[tuple[str, int], ...] = ()  # trace collector endpoints (ip, port)
    sampling: float = 1.0  # fraction of new traces sampled (0..1)

    def outbound(self, ip: str, port: int) -> ServicePort | None:
        return self.by_address.get((ip, port))

    def workload(self, ip: str) -> Workload | None:
        return self.workloads.get(ip)

    def endpoint_addresses(self) -> set[tuple[str, int]]:
        """Every (pod IP, port) a request may be sent to."""
        return {
            ep.address
            for port in self.by_address.values()
            for route in port.routes
            for dest in route.destinations
            for ep in dest.endpoints
        }


def lower_headers(pairs: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """Header pairs as a dict of lower-case names (the first value of repeated ones)."""
    out: dict[str, str] = {}
    for name, value in pairs:
        key = name.decode("latin-1").lower()
        if key not in out:
            out[key] = value.decode("latin-1")
    return out
