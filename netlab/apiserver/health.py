"""`/healthz`, `/livez` and `/readyz`, as kube-apiserver answers them.

Each endpoint runs its named checks: `ok` when all pass, the list with `?verbose`
(`[+]ping ok` ... `livez check passed`), and 500 with the list when one fails (its
reason withheld, as kube-apiserver does on these public endpoints). `?exclude=NAME`
skips a check; `/readyz/NAME` runs one. Live means the server answers; ready means it
is not shutting down and the lab has been built (if the lab can say: `Actions.ready`).
`netlab up` waits on `/healthz`, which stays up while the lab is being built.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from aiohttp import web

from netlab.apiserver.base import ACTIONS, CLOSING

Check = Callable[[web.Application], bool]


def _ping(_app: web.Application) -> bool:
    return True


def _not_shutting_down(app: web.Application) -> bool:
    return not app[CLOSING].is_set()


def _lab_ready(app: web.Application) -> bool:
    ready = getattr(app[ACTIONS], "ready", None)
    return True if ready is None else bool(ready())


LIVE: tuple[tuple[str, Check], ...] = (("ping", _ping),)
READY: tuple[tuple[str, Check], ...] = (
    *LIVE,
    ("shutdown", _not_shutting_down),
    ("poststarthook/netlab-lab-built", _lab_ready),
)
ENDPOINTS = {"healthz": LIVE, "livez": LIVE, "readyz": READY}


def report(
    name: str, results: list[tuple[str, bool]], excluded: set[str], verbose: bool
) -> tuple[int, str]:
    """The status and body of one health endpoint, from each check's (name, passed)."""
    lines = []
    for check, passed in results:
        if check in excluded:
            lines.append(f"[+]{check} excluded: ok")
        elif passed:
            lines.append(f"[+]{check} ok")
        else:
            lines.append(f"[-]{check} failed: reason withheld")
    unknown = excluded - {check for check, _ in results}
    if unknown:
        quoted = ", ".join(f'"{n}"' for n in sorted(unknown))
        lines.append(f"warn: some health checks cannot be excluded: no matches for {quoted}")
    if any(not passed and check not in excluded for check, passed in results):
        return 500, "\n".join(lines) + f"\n{name} check failed\n"
    if not verbose:
        return 200, "ok"
    return 200, "\n".join(lines) + f"\n{name} check passed\n"


async def _all(request: web.Request, name: str) -> web.Response:
    checks = ENDPOINTS[name]
    results = [(check, run(request.app)) for check, run in checks]
    excluded = set(request.query.getall("exclude", []))
    code, text = report(name, results, excluded, "verbose" in request.query)
    return web.Response(status=code, text=text)


async def _one(request: web.Request, check: str, run: Check) -> web.Response:
    if run(request.app):
        return web.Response(text="ok")
    return web.Response(status=500, text=f"internal server error: {check} check failed\n")


def add_routes(app: web.Application) -> None:
    for name, checks in ENDPOINTS.items():
        app.router.add_get(f"/{name}", functools.partial(_all, name=name))
        for check, run in checks:
            one = functools.partial(_one, check=check, run=run)
            app.router.add_get(f"/{name}/{check}", one)
