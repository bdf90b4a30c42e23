"""Knative's autoscaling annotations on a Deployment, checked (the spec layer's part)."""

from __future__ import annotations

from dataclasses import dataclass

from mesh.compile import parse_duration

PREFIX = "autoscaling.knative.dev/"
TICK = 0.5  # seconds between the autoscaler's samples
KEYS = ("minScale", "maxScale", "target", "window", "min-scale", "max-scale")


@dataclass(frozen=True)
class Settings:
    min_scale: int = 1
    max_scale: int = 10
    target: float = 10.0  # concurrent requests per pod
    window: float = 6.0  # seconds (Knative's default stable window is 60 s)

    @property
    def panic_window(self) -> float:
        return max(TICK, self.window / 10)


def settings_of(annotations: dict[str, str]) -> Settings | None:
    """The Deployment's autoscaling settings; None if it is not marked for autoscaling.
    ValueError names a bad annotation."""
    mine = {k[len(PREFIX) :]: v for k, v in annotations.items() if k.startswith(PREFIX)}
    if not mine:
        return None
    unknown = sorted(set(mine) - set(KEYS))
    if unknown:
        raise ValueError(
            f"unknown annotation {PREFIX}{unknown[0]}; use one of {', '.join(KEYS[:4])}"
        )
    default = Settings()

    def number(key: str, fallback: float, low: float) -> float:
        raw = mine.get(key, mine.get(key.replace("Scale", "-scale")))
        if raw is None:
            return fallback
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{PREFIX}{key}: {raw!r} is not a number") from None
        if value < low:
            raise ValueError(f"{PREFIX}{key}: {raw} is below {low:g}")
        return value

    low = int(number("minScale", default.min_scale, 0))
    high = int(number("maxScale", max(default.max_scale, low), 1))
    if high < low:
        raise ValueError(f"{PREFIX}maxScale ({high}) is below minScale ({low})")
    window = default.window
    if "window" in mine:
        parsed = parse_duration(mine["window"])
        if parsed is None or not 1 <= parsed <= 3600:
            raise ValueError(f"{PREFIX}window: {mine['window']!r} is not a duration of 1s to 1h")
        window = parsed
    return Settings(low, high, number("target", default.target, 0.01), window)
