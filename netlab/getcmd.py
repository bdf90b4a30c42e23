"""`netlab get`, as kubectl get: one kind or several (`get deploy,pods`, each its own
table, names as `deployment.apps/web`), by name or by selector (`-l app=web`,
`--field-selector spec.nodeName=n1`), printed as tables, json, yaml or names, or
watched (`-w`, one kind)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

import yaml

from netlab import tables
from netlab.client import LabClient
from netlab.errors import ApiError, NetlabError
from netlab.resources import DEFAULT_TABLE, Resource, ResourceTable


@dataclass(frozen=True)
class Found:
    """The objects of one kind that a `get` found."""

    resource: Resource
    objs: list[dict]
    revision: str | None = None  # the list's resourceVersion (a watch starts there)


def kind_name(res: Resource) -> str:
    """How kubectl names a kind before an object's name: `pod`, `deployment.apps`."""
    return f"{res.singular}.{res.group}" if res.group else res.singular


def resources_of(text: str, table: ResourceTable = DEFAULT_TABLE) -> list[Resource]:
    """`deploy,pods` as resources, in the order given, each once."""
    found: list[Resource] = []
    for name in text.split(","):
        if not name.strip():
            raise NetlabError(f"{text!r} names an empty resource type; write e.g. deploy,pods")
        try:
            res = table.resolve(name.strip())
        except ApiError:
            known = ", ".join(r.plural for r in table)
            raise NetlabError(f"unknown resource {name.strip()!r}; use one of {known}") from None
        if res not in found:
            found.append(res)
    return found


def check(args: argparse.Namespace, kinds: list[Resource]) -> None:
    """What kubectl refuses, refused the same way, before anything is asked."""
    if args.names and (args.selector or args.field_selector):
        raise NetlabError("name cannot be provided when a selector is specified")
    if args.watch and len(kinds) > 1:
        raise NetlabError("you may only specify a single resource type (to watch)")
    if args.watch and len(args.names) > 1:
        raise NetlabError("watch takes one name, or none")


def _namespace(args: argparse.Namespace, res: Resource) -> str | None:
    """The namespace to ask in; None: all of them (or a kind that has none)."""
    return None if args.all_namespaces or not res.namespaced else args.namespace


def _list(client: LabClient, res: Resource, args: argparse.Namespace, field: str | None) -> dict:
    namespace = _namespace(args, res)
    return client.list(
        res.plural,
        namespace=namespace,
        all_namespaces=namespace is None,
        label_selector=args.selector,
        field_selector=field,
    )


def fetch(
    args: argparse.Namespace, client: LabClient, kinds: list[Resource]
) -> tuple[list[Found], bool]:
    """Ask the lab: each kind's list, or the named objects of each kind. A name that
    one kind lacks is reported on stderr (as kubectl does) unless no kind has it; the
    second value says whether one was."""
    found, missing = [], []
    for res in kinds:
        namespace = _namespace(args, res)
        if args.names:
            objs = []
            for name in args.names:
                try:
                    objs.append(client.get(res.plural, name, namespace=namespace or args.namespace))
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                    missing.append(str(exc))
            found.append(Found(res, objs))
            continue
        listing = _list(client, res, args, args.field_selector)
        found.append(Found(res, listing["items"], listing["metadata"].get("resourceVersion")))
    if missing:
        if not any(f.objs for f in found):
            raise NetlabError("; ".join(missing))
        for text in missing:
            print(f"netlab: {text}", file=sys.stderr)
    return found, bool(missing)


def show_kinds(requested: list[Resource], found: list[Found], names: list[str]) -> bool:
    """kubectl prefixes names with their kind when several kinds were asked for a list,
    or when the objects found by name are of several kinds."""
    if names:
        return len([f for f in found if f.objs]) > 1
    return len(requested) > 1


def render(found: list[Found], output: str | None, all_namespaces: bool, with_kind: bool) -> str:
    """Everything found, as `-o` asks: tables (one per kind, with a blank line between),
    a json or yaml List, or `kind/name` lines."""
    objs = [obj for f in found for obj in f.objs]
    if output in ("json", "yaml"):
        document = {"apiVersion": "v1", "kind": "List", "items": objs}
        if len(found) == 1 and len(objs) == 1 and found[0].revision is None:
            document = objs[0]  # one object by name: the object itself
        if output == "json":
            return json.dumps(document, indent=2)
        return yaml.safe_dump(document, sort_keys=False).rstrip("\n")
    if output == "name":
        return "\n".join(
            f"{kind_name(f.resource)}/{obj['metadata']['name']}" for f in found for obj in f.objs
        )
    shown = [
        tables.render(
            f.resource.plural,
            f.objs,
            wide=output == "wide",
            all_namespaces=all_namespaces,
            name_prefix=f"{kind_name(f.resource)}/" if with_kind else "",
        )
        for f in found
        if f.objs
    ]
    return "\n\n".join(shown) or "No resources found."


def run(args: argparse.Namespace, client: LabClient) -> int:
    kinds = resources_of(args.resource)
    check(args, kinds)
    found, missing = fetch(args, client, kinds)
    if args.watch:
        try:
            return watch(args, client, found[0])
        except KeyboardInterrupt:
            return 0
    text = render(found, args.output, args.all_namespaces, show_kinds(kinds, found, args.names))
    if text:
        print(text)
    return 1 if missing else 0


def watch(args: argparse.Namespace, client: LabClient, found: Found) -> int:
    """`get -w`: the table, then a row per change until interrupted (kubectl's way)."""
    res = found.resource
    namespace = _namespace(args, res)
    wide = args.output == "wide"
    shown = tables.render(res.plural, found.objs, wide=wide, all_namespaces=args.all_namespaces)
    header = shown.splitlines()[0] if found.objs else None  # none yet: the first change prints it
    print(shown, flush=True)
    if args.names:
        revision = found.objs[0]["metadata"]["resourceVersion"]
        field = f"metadata.name={args.names[0]}"
    else:
        revision, field = found.revision, args.field_selector
    while True:
        try:
            for event in client.watch(
                res.plural,
                namespace,
                revision,
                timeout=300,
                label_selector=args.selector,
                field_selector=field,
            ):
                obj = event["object"]
                revision = obj["metadata"].get("resourceVersion", revision)
                if event["type"] == "BOOKMARK":
                    continue
                if args.output in ("json", "yaml", "name"):
                    print(_event_text(args.output, event, res), flush=True)
                    continue
                rows = tables.render(
                    res.plural, [obj], wide=wide, all_namespaces=args.all_namespaces
                ).splitlines()
                suffix = "   (deleted)" if event["type"] == "DELETED" else ""
                if header is None:
                    header = rows[0]
                    print(header, flush=True)
                for row in rows[1:]:
                    print(row + suffix, flush=True)
        except ApiError as exc:
            if exc.status != 410:
                raise
            revision = _list(client, res, args, field)["metadata"]["resourceVersion"]


def _event_text(output: str, event: dict, res: Resource) -> str:
    if output == "name":
        return f"{kind_name(res)}/{event['object']['metadata']['name']}"
    document = {"type": event["type"], "object": event["object"]}
    if output == "json":
        return json.dumps(document)
    return "---\n" + yaml.safe_dump(document, sort_keys=False).rstrip("\n")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("resource", help="a kind (pods, deploy, svc, ...) or several: deploy,pods")
    p.add_argument("names", nargs="*", metavar="name")
    p.add_argument("-o", "--output", choices=["wide", "json", "yaml", "name"])
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument(
        "-l", "--selector", help="a label selector: app=web, tier in (a,b), !canary, ..."
    )
    p.add_argument(
        "--field-selector",
        help="fields: metadata.name=x, metadata.namespace, spec.nodeName=n1, status.phase!=Running",
    )
    p.add_argument(
        "-w", "--watch", action="store_true", help="then print each change as it happens"
    )
