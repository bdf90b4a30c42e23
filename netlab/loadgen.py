"""A bounded, steady HTTP client inside a pod, for watching the lab heal (the demo, the
failover bench, the control-plane tests): one GET every `interval` seconds, each
answer recorded; it stops by itself after `seconds`."""

from __future__ import annotations

import subprocess
import textwrap
from dataclasses import dataclass

_CLIENT = textwrap.dedent(
    """
    import sys, time, urllib.request
    url, seconds, interval = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.time()
        try:
            with urllib.request.urlopen(url, timeout=1.0) as r:
                print(f"{t:.3f} ok {r.read().decode().strip()}", flush=True)
        except Exception as e:
            why = getattr(e, "reason", None)  # a URLError's cause: refused, timed out, ...
            name = type(e).__name__ + (f":{type(why).__name__}:{why}" if why else "")
            print(f"{t:.3f} err {name}", flush=True)
        time.sleep(interval)
    """
)


@dataclass(frozen=True)
class Answer:
    at: float  # wall-clock time the request was sent
    ok: bool
    body: str  # the answer's text, or the error's name


class Load:
    """GET `url` from inside network namespace `netns` until `stop()` or `seconds` pass."""

    def __init__(self, netns: str, url: str, seconds: float = 30.0, interval: float = 0.05):
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                netns,
                "python3",
                "-c",
                _CLIENT,
                url,
                str(seconds),
                str(interval),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )

    def stop(self) -> list[Answer]:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        answers = []
        for line in out.splitlines():
            stamp, status, *rest = line.split(" ", 2)
            answers.append(Answer(float(stamp), status == "ok", rest[0] if rest else ""))
        return answers


def error_window(answers: list[Answer], after: float = 0.0) -> float:
    """The longest time from a failed request (sent at or after `after`) to the next
    success; 0 if none failed."""
    worst, start = 0.0, None
    for answer in answers:
        if answer.at < after:
            continue
        if not answer.ok and start is None:
            start = answer.at
        elif answer.ok and start is not None:
            worst, start = max(worst, answer.at - start), None
    if start is not None and answers:
        worst = max(worst, answers[-1].at - start)
    return worst


def recovered_after(answers: list[Answer], since: float) -> float | None:
    """Seconds from `since` until the last failure before the answers stayed good, i.e.
    when all requests succeed again; 0 if none failed; None if it never recovered."""
    later = [a for a in answers if a.at >= since]
    if not later or not later[-1].ok:
        return None
    failures = [a.at for a in later if not a.ok]
    if not failures:
        return 0.0
    after_last = next(a.at for a in later if a.ok and a.at > failures[-1])
    return after_last - since
