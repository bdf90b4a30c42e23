"""The resource types the lab API serves, as one table, and the selectors over them.

Adding a type (`services`, `endpoints`, `virtualservices.networking.istio.io`)
is one more `Resource` row in `RESOURCES`; the store, the HTTP routes and the
discovery documents are all generated from this table. Label and field selectors
follow Kubernetes' syntax (`apimachinery/pkg/labels`, `.../fields`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from netlab.errors import ApiError

READ_VERBS = ("get", "list", "watch")
WRITE_VERBS = (*READ_VERBS, "create", "delete", "patch", "update")  # kinds the lab applies again
# discovery entries of subresources that are not their parent's kind
SUBRESOURCES = {
    "scale": {
        "kind": "Scale",
        "group": "autoscaling",
        "version": "v1",
        "verbs": ["get", "patch", "update"],
    }
}
"""Every resource supports these; `delete` is added per row when the lab implements it."""

ALL = ("all",)  # the category kubectl get all expands, on the kinds Kubernetes puts in it
REVIEW_VERBS = ("create",)  # a review is posted and answered, never stored or listed

COMMON_FIELDS = ("metadata.name", "metadata.namespace")
"""Field selectors every resource supports."""


@dataclass(frozen=True)
class Resource:
    """One resource type: `pods` in the core group `v1`, `deployments` in `apps/v1`, ..."""

    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = READ_VERBS
    fields: tuple[str, ...] = ()  # extra field-selector paths, e.g. "spec.nodeName"
    subresources: tuple[str, ...] = ()  # e.g. "log" for pods
    categories: tuple[str, ...] = ()  # e.g. "all": what `kubectl get all` lists

    @property
    def api_version(self) -> str:
        """`v1` for the core group, `group/version` otherwise (`apps/v1`)."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def stored(self) -> bool:
        """False for the kinds that are answered and never kept (the reviews)."""
        return "get" in self.verbs

    @property
    def singular(self) -> str:
        """Lower-case kind: `pod`, `deployment`."""
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        """`PodList`, `DeploymentList`."""
        return f"{self.kind}List"

    @property
    def full_name(self) -> str:
        """Unique name across groups: `pods`, `deployments.apps`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def field_selectors(self) -> tuple[str, ...]:
        """Every field path a field selector may name for this resource."""
        return COMMON_FIELDS + self.fields

    @property
    def base_path(self) -> str:
        """`/api/v1` or `/apis/<group>/<version>`."""
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """URL path of the collection (all namespaces if `namespace` is None) or of one item."""
        parts = [self.base_path]
        if self.namespaced and namespace is not None:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name is not None:
            parts.append(name)
        return "/".join(parts)


RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "Namespace", "namespaces", False, ("ns",), WRITE_VERBS),
    # nodes: patched for spec.unschedulable alone (kubectl cordon, uncordon, drain)
    Resource("", "v1", "Node", "nodes", False, ("no",), (*READ_VERBS, "patch", "update")),
    Resource(
        "",
        "v1",
        "Pod",
        "pods",
        True,
        ("po",),
        verbs=WRITE_VERBS,
        fields=("spec.nodeName", "status.phase", "status.podIP"),
        subresources=("log",),
        categories=ALL,
    ),
    Resource(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        True,
        ("deploy",),
        WRITE_VERBS,
        subresources=("scale",),
        categories=ALL,
    ),
    Resource("apps", "v1", "ReplicaSet", "replicasets", True, ("rs",), categories=ALL),
    Resource(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        True,
        ("sts",),
        WRITE_VERBS,
        subresources=("scale",),
        categories=ALL,
    ),
    Resource("apps", "v1", "ControllerRevision", "controllerrevisions", True),
    Resource("batch", "v1", "Job", "jobs", True, (), WRITE_VERBS, categories=ALL),
    Resource("", "v1", "Service", "services", True, ("svc",), WRITE_VERBS, categories=ALL),
    Resource("", "v1", "Endpoints", "endpoints", True, ("ep",)),
    Resource("", "v1", "ConfigMap", "configmaps", True, ("cm",), WRITE_VERBS),
    Resource("", "v1", "Secret", "secrets", True, (), WRITE_VERBS),
    Resource("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True),
    Resource(
        "",
        "v1",
        "Event",
        "events",
        True,
        ("ev",),
        fields=(
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "reason",
            "type",
            "source.component",
        ),  # fmt: skip
    ),
    Resource("coordination.k8s.io", "v1", "Lease", "leases", True, ()),
    # mesh policy (Istio's shapes, and netlab's rate limit); the sidecars watch these
    Resource(
        "networking.istio.io",
        "v1",
        "VirtualService",
        "virtualservices",
        True,
        ("vs",),
        WRITE_VERBS,
    ),
    Resource(
        "networking.istio.io",
        "v1",
        "DestinationRule",
        "destinationrules",
        True,
        ("dr",),
        WRITE_VERBS,
    ),
    Resource(
        "netlab.io",
        "v1alpha1",
        "RateLimitPolicy",
        "ratelimitpolicies",
        True,
        ("rlp",),
        WRITE_VERBS,
    ),
    # storage: claims, the volumes bound to them, their classes; the attach/detach
    # controller's VolumeAttachments are read-only to users
    Resource("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True, ("pvc",),
             WRITE_VERBS),
    Resource("", "v1", "PersistentVolume", "persistentvolumes", False, ("pv",), WRITE_VERBS),
    Resource("storage.k8s.io", "v1", "StorageClass", "storageclasses", False, ("sc",),
             WRITE_VERBS),
    Resource("storage.k8s.io", "v1", "VolumeAttachment", "volumeattachments", False),
    # answered, never stored (apiserver/reviews.py): who am I, what may I do
    Resource("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", False,
             verbs=REVIEW_VERBS),
    Resource("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews",
             False, verbs=REVIEW_VERBS),
    Resource("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews",
             False, verbs=REVIEW_VERBS),
)  # fmt: skip
MESH_RESOURCES = ("virtualservices", "destinationrules", "ratelimitpolicies")


class ResourceTable:
    """Lookup over a set of resources by plural, singular, kind, short name or `plural.group`."""

    def __init__(self, resources: Iterable[Resource] = RESOURCES):
        self._all = tuple(resources)
        self._by_name: dict[str, Resource] = {}
        self._by_kind: dict[tuple[str, str], Resource] = {}
        for res in self._all:
            names = {res.plural, res.singular, res.full_name, *res.short_names}
            names.add(f"{res.singular}.{res.group}" if res.group else res.singular)
            for name in names:
                if self._by_name.setdefault(name.lower(), res) is not res:
                    raise ValueError(f"resource name {name!r} is used twice")
            self._by_kind[(res.api_version, res.kind)] = res

    def __iter__(self) -> Iterator[Resource]:
        return iter(self._all)

    def resolve(self, name: str | Resource) -> Resource:
        """The resource called `name` (`pods`, `pod`, `po`, `Pod`, `deployments.apps`); 404 if none."""
        if isinstance(name, Resource):
            return name
        res = self._by_name.get(name.lower())
        if res is None:
            raise ApiError(404, f'the server doesn\'t have a resource type "{name}"')
        return res

    def for_object(self, obj: dict) -> Resource:
        """The resource of an object, from its `apiVersion` and `kind` (`apiVersion` optional)."""
        kind = obj.get("kind")
        api_version = obj.get("apiVersion")
        if not isinstance(kind, str) or not kind:
            raise ApiError(400, "object has no kind")
        if api_version:
            res = self._by_kind.get((api_version, kind))
        else:
            res = next((r for (_, k), r in self._by_kind.items() if k == kind), None)
        if res is None:
            raise ApiError(400, f"no resource for apiVersion {api_version!r}, kind {kind!r}")
        return res

    def group_versions(self) -> dict[str, list[Resource]]:
        """Resources grouped by `apiVersion`, in table order: `{"v1": [...], "apps/v1": [...]}`."""
        out: dict[str, list[Resource]] = {}
        for res in self._all:
            out.setdefault(res.api_version, []).append(res)
        return out


DEFAULT_TABLE = ResourceTable(RESOURCES)
"""The lab's resource table (immutable)."""


def discovery_documents(table: ResourceTable) -> dict[str, dict]:
    """The API discovery documents by URL path: `/api`, `/apis`, `/api/v1`, `/apis/apps/v1`, ..."""
    docs: dict[str, dict] = {}
    groups: dict[str, dict] = {}
    for group_version, resources in table.group_versions().items():
        entries = []
        for res in resources:
            entries.append(
                {
                    "name": res.plural,
                    "singularName": res.singular,
                    "namespaced": res.namespaced,
                    "kind": res.kind,
                    "verbs": list(res.verbs),
                    "shortNames": list(res.short_names),
                    **({"categories": list(res.categories)} if res.categories else {}),
                }
            )
            entries += [
                {"name": f"{res.plural}/{sub}", "singularName": "", "namespaced": res.namespaced,
                 **SUBRESOURCES.get(sub, {"kind": res.kind, "verbs": ["get"]})}
                for sub in res.subresources
            ]  # fmt: skip
        docs[resources[0].base_path] = {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": entries,
        }
        if group := resources[0].group:
            entry = {"groupVersion": group_version, "version": resources[0].version}
            doc = {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": []}
            doc = groups.setdefault(group, dict(doc, preferredVersion=entry))
            doc["versions"].append(entry)
    for group, doc in groups.items():
        docs[f"/apis/{group}"] = doc
    listed = [
        {k: v for k, v in g.items() if k not in ("kind", "apiVersion")} for g in groups.values()
    ]
    docs["/apis"] = {"kind": "APIGroupList", "apiVersion": "v1", "groups": listed}
    docs["/api"] = {
        "kind": "APIVersions",
        "versions": sorted({r.version for r in table if not r.group}),
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "localhost"}],
    }
    return docs


# -- selectors -----------------------------------------------------------------

_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_KEY = rf"(?:[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?/)?{_NAME}"
_VALUE_RE = re.compile(rf"(?:{_NAME})?")
_REQUIREMENT = re.compile(
    rf"""\s*(?:
        !\s*(?P<absent>{_KEY})
      | (?P<setkey>{_KEY})\s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\)
      | (?P<eqkey>{_KEY})\s*(?P<eqop>==|=|!=)\s*(?P<value>{_VALUE_RE.pattern})
      | (?P<present>{_KEY})
    )\s*(?:,|$)""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class LabelSelector:
    """A parsed label selector: `a=b,c!=d`, `a==b`, `a`, `!a`, `a in (x,y)`, `a notin (x)`."""

    requirements: tuple[tuple[str, str, frozenset[str]], ...] = ()  # (key, op, values)

    @classmethod
    def parse(cls, text: str | LabelSelector | None) -> LabelSelector:
        """Parse Kubernetes label-selector syntax; ApiError 400 naming the bad part."""
        if isinstance(text, LabelSelector):
            return text
        if text is None or not text.strip():
            return cls()
        reqs, pos = [], 0
        while pos < len(text):
            m = _REQUIREMENT.match(text, pos)
            if m is None or m.end() == pos:
                raise ApiError(400, f"unable to parse labelSelector {text!r} at {text[pos:]!r}")
            pos = m.end()
            if m["absent"]:
                reqs.append((m["absent"], "!", frozenset()))
            elif m["present"]:
                reqs.append((m["present"], "exists", frozenset()))
            elif m["eqkey"]:
                op = "!=" if m["eqop"] == "!=" else "="
                reqs.append((m["eqkey"], op, frozenset([m["value"]])))
            else:
                values = [v.strip() for v in m["values"].split(",")]
                bad = [v for v in values if not _VALUE_RE.fullmatch(v)]
                if bad:
                    raise ApiError(400, f"invalid label value {bad[0]!r} in labelSelector {text!r}")
                reqs.append((m["setkey"], m["setop"], frozenset(values)))
        return cls(tuple(reqs))

    def matches(self, labels: dict[str, str]) -> bool:
        """True if every requirement holds for `labels`."""
        for key, op, values in self.requirements:
            has = key in labels
            if op == "exists" and not has:
                return False
            if op == "!" and has:
                return False
            if op in ("=", "in") and (not has or labels[key] not in values):
                return False
            if op in ("!=", "notin") and has and labels[key] in values:
                return False
        return True


@dataclass(frozen=True)
class FieldSelector:
    """A parsed field selector: `metadata.name=web-1,spec.nodeName!=n1` (equality only)."""

    requirements: tuple[tuple[str, str, str], ...] = ()  # (path, "=" | "!=", value)

    @classmethod
    def parse(cls, text: str | FieldSelector | None, allowed: Iterable[str]) -> FieldSelector:
        """Parse `path=value` terms; ApiError 400 for bad syntax or a field not in `allowed`."""
        if isinstance(text, FieldSelector):
            return text
        if text is None or not text.strip():
            return cls()
        allowed = tuple(allowed)
        reqs = []
        for term in text.split(","):
            m = re.fullmatch(r"\s*([A-Za-z0-9_.]+)\s*(==|!=|=)(.*)", term)
            if m is None:
                raise ApiError(400, f"invalid fieldSelector {text!r}: bad term {term!r}")
            path, op, value = m[1], "!=" if m[2] == "!=" else "=", m[3].strip()
            if path not in allowed:
                raise ApiError(
                    400, f'field label not supported: "{path}" (supported: {", ".join(allowed)})'
                )
            reqs.append((path, op, value))
        return cls(tuple(reqs))

    def matches(self, obj: dict) -> bool:
        """True if every term holds; a missing field counts as the empty string."""
        for path, op, value in self.requirements:
            node: object = obj
            for part in path.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            actual = "" if node is None else str(node)
            if (actual == value) != (op == "="):
                return False
        return True


class Selection:
    """What a list or watch asks for: one resource, maybe one namespace, label and field selectors."""

    def __init__(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | LabelSelector | None = None,
        field_selector: str | FieldSelector | None = None,
    ):
        self.resource = resource
        self.namespace = namespace if resource.namespaced else None
        self.labels = LabelSelector.parse(label_selector)
        self.fields = FieldSelector.parse(field_selector, resource.field_selectors)

    def __call__(self, obj: dict) -> bool:
        """True if `obj` (of this resource) is selected."""
        meta = obj["metadata"]
        if self.namespace and meta.get("namespace") != self.namespace:
            return False
        return self.labels.matches(meta.get("labels") or {}) and self.fields.matches(obj)

    def seen_as(self, event_type: str, obj: dict, old: dict | None) -> str | None:
        """The event type a selected watch reports for a write, or None if it sees nothing.

        Like the Kubernetes API: an object modified into the selection is ADDED, one
        modified out of it is DELETED.
        """
        now = self(obj)
        if event_type != "MODIFIED":
            return event_type if now else None
        before = old is not None and self(old)
        if now and before:
            return "MODIFIED"
        if now or before:
            return "ADDED" if now else "DELETED"
        return None
