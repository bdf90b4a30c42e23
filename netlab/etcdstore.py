"""The lab's objects in a real etcd (v3, through its JSON gateway), served from a watch
cache as kube-apiserver serves them.

Every write is an etcd transaction that compares the key's mod_revision with the one
the cache holds (so a second writer, or a stale cache, gets a 409, never a lost
update); its commit revision becomes the object's resourceVersion, and the store's
revision is etcd's. Reads and watches are answered from the in-memory cache (the
base Store), which is filled from etcd at start: a lab can be picked up again from
etcd. Objects are stored as JSON without their resourceVersion (etcd's mod_revision
is it), under /netlab/<lab>/<resource>/<namespace>/<name>.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import threading
import time
from collections.abc import Sequence

from netlab.errors import NetlabError
from netlab.realize import etcd
from netlab.resources import DEFAULT_TABLE, Resource, ResourceTable
from netlab.store import Store, conflict

log = logging.getLogger(__name__)


class EtcdError(NetlabError):
    """etcd could not be reached or refused a request."""


def _b64(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def prefix_end(prefix: str) -> str:
    """The range end that selects every key starting with `prefix` (etcd's convention)."""
    data = bytearray(prefix.encode())
    data[-1] += 1
    return bytes(data).decode()


class EtcdClient:
    """A small etcd v3 client over the gRPC gateway's JSON (etcd 3.4: /v3/...). Tries
    each endpoint in turn, so a cluster that lost its leader (or a member) still answers."""

    def __init__(self, endpoints: Sequence[str], timeout: float = 2.0):
        if not endpoints:
            raise EtcdError("no etcd endpoint given; write --store etcd://127.0.0.1:2379")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._local = threading.local()
        self.closed = False
        self.last_trouble: float | None = None  # when a member last failed to answer

    def call(self, path: str, body: dict, serializable: bool = False) -> dict:
        """POST `body` to /v3/`path` on the first endpoint that answers."""
        if serializable:
            body = dict(body, serializable=True)
        payload = json.dumps(body).encode()
        errors = []
        for _ in range(2):  # every endpoint, twice: a leader election takes a moment
            for endpoint in list(self.endpoints):
                if self.closed:
                    raise EtcdError("the lab is stopping: its etcd client is closed")
                try:
                    return self._post(endpoint, path, payload)
                except (OSError, http.client.HTTPException) as exc:
                    self._drop(endpoint)
                    self._demote(endpoint)
                    errors.append(f"{endpoint}: {exc}")
                except EtcdError as exc:
                    if "leader" not in str(exc) and "timed out" not in str(exc):
                        raise
                    self._demote(endpoint)
                    errors.append(f"{endpoint}: {exc}")
            time.sleep(0.2)
        raise EtcdError(f"etcd did not answer /v3/{path}: {'; '.join(errors[-3:])}")

    def _demote(self, endpoint: str) -> None:
        """A member that failed is tried last from now on (a dead or frozen member must
        not cost a timeout on every request)."""
        self.last_trouble = time.time()
        endpoints = self.endpoints
        if endpoint in endpoints and endpoints[-1] != endpoint:
            endpoints.remove(endpoint)
            endpoints.append(endpoint)

    def _conn(self, endpoint: str) -> http.client.HTTPConnection:
        conns = self._local.__dict__.setdefault("conns", {})
        conn = conns.get(endpoint)
        if conn is None:
            conn = conns[endpoint] = etcd.connection(endpoint, self.timeout)
        return conn

    def _drop(self, endpoint: str) -> None:
        conn = self._local.__dict__.get("conns", {}).pop(endpoint, None)
        if conn is not None:
            conn.close()

    def _post(self, endpoint: str, path: str, payload: bytes) -> dict:
        conn = self._conn(endpoint)
        conn.request("POST", f"/v3/{path}", payload, {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        try:
            answer = json.loads(data or b"{}")
        except ValueError:
            raise EtcdError(f"etcd sent a malformed answer to /v3/{path}") from None
        if response.status != 200 or "error" in answer:
            raise EtcdError(
                f"etcd refused /v3/{path}: {answer.get('error') or answer.get('message') or response.status}"
            )
        return answer

    # -- the calls the store makes ------------------------------------------------------

    def range_prefix(self, prefix: str, serializable: bool = False) -> tuple[list[dict], int]:
        answer = self.call(
            "kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}, serializable
        )
        return answer.get("kvs", []), int(answer["header"]["revision"])

    def get(self, key: str, serializable: bool = False) -> dict | None:
        kvs = self.call("kv/range", {"key": _b64(key)}, serializable).get("kvs", [])
        return kvs[0] if kvs else None

    def put_if(self, key: str, value: bytes, mod_revision: int) -> int | None:
        """Put `value` if the key's mod_revision is `mod_revision` (0: the key must not
        exist); the commit revision, or None if the comparison failed."""
        return self._txn_if(
            key, mod_revision, {"request_put": {"key": _b64(key), "value": _b64(value)}}
        )

    def delete_if(self, key: str, mod_revision: int) -> int | None:
        """Delete the key if its mod_revision is `mod_revision`, as put_if."""
        return self._txn_if(key, mod_revision, {"request_delete_range": {"key": _b64(key)}})

    def _txn_if(self, key: str, mod_revision: int, request: dict) -> int | None:
        compare = {
            "key": _b64(key),
            "target": "MOD",
            "result": "EQUAL",
            "mod_revision": str(mod_revision),
        }
        answer = self.call("kv/txn", {"compare": [compare], "success": [request]})
        return int(answer["header"]["revision"]) if answer.get("succeeded") else None

    def close(self) -> None:
        """Refuse further calls (from any thread) and close this thread's connections."""
        self.closed = True
        for conn in self._local.__dict__.get("conns", {}).values():
            conn.close()


def endpoints_of(url: str) -> list[str]:
    """`etcd://h1:2379,h2:2379` (or http://...) as a list of http:// endpoints."""
    rest = url.split("://", 1)[1] if "://" in url else url
    hosts = [h.strip() for h in rest.strip("/").split(",") if h.strip()]
    if not hosts:
        raise EtcdError(f"{url!r} names no etcd host; write etcd://127.0.0.1:2379")
    return [f"http://{h}" for h in hosts]


class EtcdStore(Store):
    """The Store, with etcd as the record and the base class's memory as the watch cache."""

    def __init__(
        self,
        lab: str,
        client: EtcdClient | None = None,
        resources: ResourceTable = DEFAULT_TABLE,
        history: int = 10_000,
    ):
        super().__init__(resources, history)
        self.client: EtcdClient | None = None
        self.prefix = f"/netlab/{lab}/"
        self._mod: dict[str, int] = {}  # etcd key -> mod_revision the cache holds
        if client is not None:
            self.connect(client)

    def connect(self, client: EtcdClient, fresh: bool = False) -> int:
        """Use this etcd from now on (a lab's etcd may start after its store is made):
        `fresh` removes what an earlier lab of this name left; then load the rest."""
        self.client = client
        if fresh:
            self.clear()
        return self.load()

    def close(self, forget: bool = False) -> None:
        if self.client is None or self.client.closed:
            return
        if forget:
            try:
                self.clear()
            except EtcdError:
                pass  # etcd is gone: nothing of ours can be left in it to take out
        self.client.close()

    def clear(self) -> None:
        """Remove every object of this lab from etcd (a new lab, or `netlab down`)."""
        if self.client is not None:
            self.client.call(
                "kv/deleterange",
                {"key": _b64(self.prefix), "range_end": _b64(prefix_end(self.prefix))},
            )

    def _etcd_key(self, res: Resource, key: tuple[str, str]) -> str:
        return f"{self.prefix}{res.full_name}/{key[0] or '-'}/{key[1]}"

    def load(self) -> int:
        """Fill the cache from etcd (a lab picked up again); the revision it is at."""
        kvs, revision = self.client.range_prefix(self.prefix)
        by_name = {r.full_name: r for r in self.resources}
        with self._write_lock, self._lock:
            for kv in kvs:
                path = _unb64(kv["key"]).decode()[len(self.prefix) :]
                full_name, namespace, name = path.split("/", 2)
                res = by_name.get(full_name)
                if res is None:
                    continue
                obj = json.loads(_unb64(kv["value"]))
                obj["metadata"]["resourceVersion"] = kv["mod_revision"]
                key = ("" if namespace == "-" else namespace, name)
                self._objects[res.full_name][key] = obj
                self._mod[self._etcd_key(res, key)] = int(kv["mod_revision"])
            self._revision = max(self._revision, revision)
        return revision

    def _next_revision(self, res: Resource, key: tuple[str, str], new: dict | None) -> int:
        """Write to etcd first (compare-and-swap on the cached mod_revision)."""
        if self.client is None:
            raise EtcdError("the lab's etcd is not connected yet")
        etcd_key = self._etcd_key(res, key)
        seen = self._mod.get(etcd_key, 0)
        try:
            revision = self._write(etcd_key, seen, new)
        finally:  # a member that failed on the way counts, even if another answered:
            # the write (a heartbeat, say) was held up by the control plane
            self.last_write_failure = self.client.last_trouble
        if revision is None:  # someone else wrote it: take theirs, and let the caller retry
            self.load()
            raise conflict(
                f'{res.full_name} "{key[1]}" was changed in etcd by another writer; retry',
                "Conflict",
            )
        if new is None:
            self._mod.pop(etcd_key, None)
        else:
            self._mod[etcd_key] = revision
        return revision

    def _write(self, etcd_key: str, seen: int, new: dict | None) -> int | None:
        assert self.client is not None
        if new is None:
            return self.client.delete_if(etcd_key, seen)
        meta = {k: v for k, v in new["metadata"].items() if k != "resourceVersion"}
        body = json.dumps(dict(new, metadata=meta), separators=(",", ":")).encode()
        return self.client.put_if(etcd_key, body, seen)
