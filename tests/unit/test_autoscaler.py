"""The autoscaler's decision (Knative's KPA arithmetic) and its annotations."""

from __future__ import annotations

import pytest

from netlab.controllers.autoscaler import Samples, decide
from netlab.spec.autoscale import PREFIX, Settings, settings_of


def run(settings: Settings, load: list[float], current: int, ready: int | None = None):
    """Feed one sample per 0.5 s; the replica count decided after each."""
    samples, out = Samples(), []
    for i, value in enumerate(load):
        now = i * 0.5
        samples.add(now, value, settings.window)
        current = decide(settings, current, current if ready is None else ready, samples, now)
        out.append(current)
    return out


def test_steady_load_needs_load_over_target_pods():
    s = Settings(min_scale=1, max_scale=10, target=2, window=2.0)
    assert run(s, [6.0] * 8, current=3)[-1] == 3
    assert run(s, [8.0] * 8, current=4)[-1] == 4


def test_a_burst_panics_up_at_once_and_holds():
    s = Settings(min_scale=1, max_scale=10, target=2, window=4.0)
    decided = run(s, [0.0] * 4 + [12.0] + [0.0] * 4, current=1)
    assert decided[4] == 6  # 12 in flight, 2 per pod: up at the first sample
    assert decided[-1] == 6  # and no scale-down within the stable window after the panic


def test_no_load_returns_to_min_scale_after_the_window():
    s = Settings(min_scale=2, max_scale=10, target=2, window=2.0)
    decided = run(s, [0.0] * 10, current=5)
    assert decided[-1] == 2


def test_max_scale_caps():
    s = Settings(min_scale=1, max_scale=3, target=1, window=2.0)
    assert max(run(s, [50.0] * 6, current=1)) == 3


def test_to_zero_only_after_a_whole_quiet_window():
    s = Settings(min_scale=0, max_scale=3, target=1, window=2.0)
    decided = run(s, [1.0] + [0.0] * 8, current=1)
    assert decided[:4] == [1, 1, 1, 1] and decided[-1] == 0


def test_from_zero_on_demand():
    s = Settings(min_scale=0, max_scale=3, target=10, window=2.0)
    assert run(s, [1.0], current=0, ready=0) == [1]


@pytest.mark.parametrize(
    "annotations,expected",
    [
        ({}, None),
        ({"other": "x"}, None),
        ({PREFIX + "minScale": "0"}, Settings(0, 10, 10.0, 6.0)),
        (
            {
                PREFIX + "minScale": "1",
                PREFIX + "maxScale": "4",
                PREFIX + "target": "2",
                PREFIX + "window": "3s",
            },
            Settings(1, 4, 2.0, 3.0),
        ),
    ],
)
def test_settings(annotations, expected):
    assert settings_of(annotations) == expected


@pytest.mark.parametrize(
    "annotations,problem",
    [
        ({PREFIX + "minScale": "two"}, "not a number"),
        ({PREFIX + "minScale": "3", PREFIX + "maxScale": "2"}, "below minScale"),
        ({PREFIX + "target": "0"}, "below"),
        ({PREFIX + "window": "forever"}, "not a duration"),
        ({PREFIX + "class": "hpa"}, "unknown annotation"),
    ],
)
def test_bad_settings(annotations, problem):
    with pytest.raises(ValueError, match=problem):
        settings_of(annotations)
