"""The lab's parts start in order and stop in reverse, each stop waited for."""

from __future__ import annotations

from netlab.node.parts import Parts


def test_parts_stop_in_the_reverse_order_they_started_in():
    seen: list[str] = []
    parts = Parts()
    for name in ("api", "prober", "metrics"):
        parts.start(
            name, lambda n=name: seen.append(f"start {n}"), lambda n=name: seen.append(f"stop {n}")
        )
    parts.running("controllers", lambda: seen.append("stop controllers"))
    assert parts.names() == ["api", "prober", "metrics", "controllers"]
    parts.stop()
    assert seen == [
        "start api",
        "start prober",
        "start metrics",
        "stop controllers",
        "stop metrics",
        "stop prober",
        "stop api",
    ]
    parts.stop()  # nothing left: stopping again does nothing
    assert seen[-1] == "stop api"


def test_a_part_that_fails_to_stop_does_not_keep_the_others_running():
    seen: list[str] = []
    parts = Parts()
    parts.running("first", lambda: seen.append("first"))

    def broken() -> None:
        raise RuntimeError("stuck")

    parts.running("broken", broken)
    parts.stop()
    assert seen == ["first"] and parts.names() == []


def test_a_part_that_fails_to_start_is_not_stopped():
    parts = Parts()

    def fail() -> None:
        raise OSError("no")

    try:
        parts.start("bad", fail, lambda: None)
    except OSError:
        pass
    assert parts.names() == []
