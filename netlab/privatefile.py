"""Files that hold a secret (the lab's kubeconfig, with its admin key): written readable
by their owner alone, whatever the umask, and a redirected stdout tightened the same way."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import IO


def write_private(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` with mode 0600. A file made new under sudo belongs to the
    user who ran sudo (who asked for it there, as `sudo netlab kubeconfig > FILE` would
    make it theirs); an existing file keeps its owner. A symlink is refused: root does
    not write through a link someone else may have placed."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            new = True
        except FileExistsError:
            fd = os.open(path, flags)
            new = False
    except OSError as exc:
        if os.path.islink(path):
            raise OSError(f"{path} is a symbolic link; name the file itself") from None
        raise OSError(f"{path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(fd, 0o600)  # an existing file may have been readable: not any more
        os.ftruncate(fd, 0)  # only now: its old content was never readable with the new
        if new and os.geteuid() == 0 and "SUDO_UID" in os.environ:
            with contextlib.suppress(ValueError, OSError):
                os.fchown(fd, int(os.environ["SUDO_UID"]), int(os.environ.get("SUDO_GID", -1)))
        out.write(text)


def tighten_stdout(stream: IO[str]) -> str | None:
    """If `stream` is a regular file that group or others may read (`> FILE` under a
    umask of 022), make it 0600 before anything secret is written. A note on what was
    done (or could not be done) for stderr; None if there was nothing to do."""
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError, AttributeError):
        return None  # not a file (a test's capture, a closed stream)
    if not stat.S_ISREG(mode) or not mode & 0o077:
        return None
    try:
        name = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        name = "the output file"
    old = f"{stat.S_IMODE(mode):04o}"
    try:
        os.fchmod(fd, stat.S_IMODE(mode) & 0o700)
    except OSError as exc:
        return (
            f"warning: {name} is readable by other users (mode {old}) and could not be "
            f"tightened ({exc.strerror}); it holds the lab's admin key: "
            "`netlab kubeconfig -o FILE` writes it with mode 0600"
        )
    return (
        f"{name} was readable by other users (mode {old}); made it "
        f"{stat.S_IMODE(mode) & 0o700:04o}, as it holds the lab's admin key "
        "(`netlab kubeconfig -o FILE` writes it so)"
    )
