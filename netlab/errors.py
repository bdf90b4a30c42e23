"""The exceptions library code raises; only `netlab.cli.main()` turns them into exit codes."""

from __future__ import annotations

from dataclasses import dataclass


class NetlabError(Exception):
    """Base of every error netlab reports to a user."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a lab file: where, what, and how to fix it."""

    path: str  # e.g. "lab.racks[1].subnet" or "Deployment/web: spec.replicas"
    message: str
    fix: str = ""

    def render(self, source: str | None = None) -> str:
        where = f"{source}: {self.path}" if source else self.path
        text = f"{where}: {self.message}"
        return f"{text}; {self.fix}" if self.fix else text


class SpecError(NetlabError):
    """The lab file (or a spec built in Python) is invalid. Nothing was built."""

    def __init__(self, problems: list[Problem], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        super().__init__(self._text())

    def _text(self) -> str:
        lines = [p.render(self.source) for p in self.problems]
        if len(lines) == 1:
            return lines[0]
        return f"{len(lines)} problems:\n" + "\n".join(f"  {line}" for line in lines)


class RealizeError(NetlabError):
    """Building a kernel object failed; whatever was built is torn down."""


class PreflightError(NetlabError):
    """The machine lacks something the lab needs (a tool, a kernel feature, root)."""


class NotFound(NetlabError):
    """A pod, node or Deployment the caller named does not exist in the lab."""


class LabNotFound(NetlabError):
    """No running lab of that name (or none at all)."""


class ApiError(NetlabError):
    """The lab API answered with an error."""

    def __init__(self, status: int, message: str, reason: str | None = None):
        self.status = status
        if reason is not None:  # the Status's reason (else one from the code)
            self.reason = reason
        super().__init__(message)
