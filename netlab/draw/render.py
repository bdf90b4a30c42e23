"""Turning DOT text into a file: graphviz's `dot` run as a subprocess, written atomically."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from netlab.errors import NetlabError

FORMATS = {".svg": "svg", ".png": "png", ".dot": "dot", ".gv": "dot"}
DOT_TIMEOUT = 120.0  # seconds; a 512-pod lab lays out in a few


def output_target(output: str) -> tuple[str, Path | None]:
    """(format, path) for `-o`: the format from the suffix; `-` is SVG on stdout (no path)."""
    if output == "-":
        return "svg", None
    path = Path(output)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise NetlabError(
            f"cannot tell the picture's format from {output!r}: "
            "name the file .svg, .png or .dot (or -o - for SVG on stdout)"
        )
    return fmt, path


def render(dot_text: str, fmt: str, dot: str = "dot") -> bytes:
    """The picture in `fmt` ("svg", "png" or "dot"); "dot" needs no graphviz."""
    if fmt == "dot":
        return dot_text.encode()
    binary = shutil.which(dot)
    if binary is None:
        raise NetlabError(
            f"graphviz's `{dot}` command is not installed: `apt-get install graphviz` "
            "(or `sudo make bootstrap`); `-o FILE.dot` writes the DOT text without it"
        )
    try:
        done = subprocess.run(
            [binary, f"-T{fmt}"],
            input=dot_text.encode(),
            capture_output=True,
            timeout=DOT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise NetlabError(f"`dot -T{fmt}` took longer than {DOT_TIMEOUT:.0f} s") from None
    if done.returncode != 0 or not done.stdout:
        detail = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
        raise NetlabError(f"`dot -T{fmt}` failed: {detail}")
    return done.stdout


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename: all or nothing.

    Run through sudo, the file is handed to the user who ran sudo (SUDO_UID), as a
    file they asked for in their own directory should be.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise NetlabError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        _give_to_sudo_user(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise NetlabError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise


def _give_to_sudo_user(path: str) -> None:
    uid, gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
    if os.geteuid() != 0 or not uid or not uid.isdigit():
        return
    try:
        os.chown(path, int(uid), int(gid) if gid and gid.isdigit() else -1)
    except OSError:
        pass
