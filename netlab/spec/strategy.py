"""A Deployment's `spec.strategy`, checked the way the apiserver checks it."""

from __future__ import annotations

from typing import Any

ROLLING, RECREATE = "RollingUpdate", "Recreate"
DEFAULT_SURGE = "25%"


def check_strategy(value: Any) -> list[tuple[str, str, str]]:
    """Problems with a `spec.strategy` as (field, message, fix); [] if it is fine."""
    if value is None:
        return []
    if not isinstance(value, dict):
        return [("strategy", "must be a mapping", "write type: RollingUpdate or Recreate")]
    problems = []
    unknown = sorted(set(value) - {"type", "rollingUpdate"})
    for key in unknown:
        problems.append(
            (f"strategy.{key}", "unknown field", "strategy takes type and rollingUpdate")
        )
    kind = value.get("type", ROLLING)
    if kind not in (ROLLING, RECREATE):
        problems.append(
            ("strategy.type", f"unknown strategy {kind!r}", f"use {ROLLING} or {RECREATE}")
        )
    rolling = value.get("rollingUpdate")
    if rolling is None:
        return problems
    if kind == RECREATE:
        problems.append(
            (
                "strategy.rollingUpdate",
                "may not be set when strategy type is Recreate",
                "remove rollingUpdate or use type: RollingUpdate",
            )
        )
    if not isinstance(rolling, dict):
        return [
            *problems,
            ("strategy.rollingUpdate", "must be a mapping", "set maxSurge and maxUnavailable"),
        ]
    for key in sorted(set(rolling) - {"maxSurge", "maxUnavailable"}):
        problems.append(
            (f"strategy.rollingUpdate.{key}", "unknown field", "use maxSurge and maxUnavailable")
        )
    values = {}
    for key in ("maxSurge", "maxUnavailable"):
        raw = rolling.get(key, DEFAULT_SURGE)
        ok = (isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0) or (
            isinstance(raw, str) and raw.endswith("%") and raw[:-1].isdigit()
        )
        if not ok:
            problems.append(
                (
                    f"strategy.rollingUpdate.{key}",
                    f"must be a count or a percentage, got {raw!r}",
                    'write a number such as 1, or a percentage such as "25%"',
                )
            )
        values[key] = raw if ok else 1
    if values.get("maxSurge") in (0, "0%") and values.get("maxUnavailable") in (0, "0%"):
        problems.append(
            (
                "strategy.rollingUpdate",
                "maxSurge and maxUnavailable may not both be 0: the rollout could never move",
                "allow at least one extra pod (maxSurge: 1) or one unavailable (maxUnavailable: 1)",
            )
        )
    return problems
